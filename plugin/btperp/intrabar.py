"""The order of events inside a bar: one model of a bar's price path. Pure core (no backtrader).

A bar gives four prices per series (open, high, low, close), not the path between them; yet
whether a stop fills before the mark reaches a liquidation price, or whether a position opened
inside the bar ever saw the bar's low, depends on that path. btperp takes the path to be straight
legs between vertices at known bar times ``t`` (0 = the bar's open, 1 = its end):

    t = 0 open  →  t = 1/3 first extreme  →  t = 2/3 other extreme  →  t = 1 close

Which extreme comes first (:class:`Intrabar`):

``path`` (default)
    the extreme nearer the open (the low on a tie), decided on the series that triggers
    liquidation (the mark by default); the last price follows the same order, so the two series
    move together.
``adverse``
    each position's adverse extreme first (the low for a long, the high for a short, decided by
    the position held at the bar's open; a flat book follows ``path``): the cautious bound.

Detail data (finer bars inside a coarse bar, :func:`detail_path`) give the path more vertices: each
detail bar ``j`` of ``m`` is such a four-vertex path over ``[j/m, (j+1)/m]``, and the path jumps
from one detail bar's close to the next one's open at their common time (a jump is a gap: what
first touches a price on a jump does so at the price after it).

Every event of the bar gets a time on that path, and they happen in time order:

* funding events at the bar's open are paid at ``t = 0`` by the position held then; a position
  whose trigger series opens beyond its liquidation price is liquidated there (a gap);
* an order fills when the last-price path first reaches its price (:func:`order_time`: market
  orders at 0, close orders at 1, limits and stops where the path first touches their price,
  or at 0 when the open is already through it — backtrader's fill prices are kept);
* a position is liquidated when the trigger path first reaches its liquidation price *after* the
  position took its current state (:func:`window_extreme`, :func:`first_touch`): a position
  opened or enlarged by a fill at ``t`` is never liquidated by prices the path passed before
  ``t``, and an order whose time comes after the liquidation never fills (the liquidation cancels
  it, as exchanges do); on a tie the liquidation comes first.

The broker (:mod:`btperp.bt.broker`) and the replay (:mod:`btperp.replay`) both take their
times and window extremes from here.
"""

from __future__ import annotations

import math

import numpy as np

from .choice import Choice

#: Bar time of the close.
END = 1.0
#: Bar times of a four-vertex bar path.
BAR_TIMES = (0.0, 1.0 / 3.0, 2.0 / 3.0, 1.0)


class Intrabar(Choice):
    """Which extreme of a bar comes first (module docstring)."""

    PATH = "path"
    ADVERSE = "adverse"


def low_first(open_, high, low, model: "Intrabar | str" = Intrabar.PATH, side=0):
    """Whether the path visits the low before the high.

    ``path``: the extreme nearer the open comes first, the low on a tie. ``adverse``: the low for
    a long (``side`` > 0), the high for a short (``side`` < 0), ``path``'s rule when flat (0).
    Scalars or numpy arrays.
    """
    nearer_low = np.less_equal(np.subtract(open_, low), np.subtract(high, open_))
    if Intrabar.parse(model) is Intrabar.PATH:
        return nearer_low
    side = np.sign(side)
    return np.where(side > 0, True, np.where(side < 0, False, nearer_low))


class Path:
    """A piecewise-linear price path over bar times ``times`` (rising from 0 to 1)."""

    __slots__ = ("times", "prices")

    def __init__(self, times, prices):
        self.times = tuple(float(t) for t in times)
        self.prices = tuple(float(p) for p in prices)

    def __eq__(self, other) -> bool:
        return isinstance(other, Path) and (self.times, self.prices) == (other.times, other.prices)

    def __repr__(self) -> str:
        return f"Path({list(zip(self.times, self.prices))})"

    def _leg(self, t: float) -> int:
        """Index of the last vertex at or before ``t`` (the leg that holds it starts there)."""
        times = self.times
        k = 0
        while k + 1 < len(times) and times[k + 1] <= t:
            k += 1
        return k

    def value_at(self, t: float) -> float:
        """The price at bar time ``t`` (after any jump at ``t``)."""
        k = self._leg(t)
        if k + 1 >= len(self.times):
            return self.prices[-1]
        ta, tb = self.times[k], self.times[k + 1]
        a = self.prices[k]
        return a + (t - ta) / (tb - ta) * (self.prices[k + 1] - a)


def vertices(open_: float, high: float, low: float, close: float, low_first_: bool) -> Path:
    """A bar's path: open, first extreme, other extreme, close at t = 0, 1/3, 2/3, 1."""
    return Path(BAR_TIMES, (open_, low, high, close) if low_first_ else (open_, high, low, close))


def detail_path(opens, highs, lows, closes, low_firsts, starts=None) -> Path:
    """The path through detail bars (arrays, in time order): each bar's four vertices over its
    share of the coarse bar (``starts``: each bar's start as a fraction of the coarse bar; default
    equal shares), a jump from each close to the next open."""
    m = len(opens)
    starts = np.arange(m) / m if starts is None else np.asarray(starts, dtype=float)
    ends = np.r_[starts[1:], 1.0]
    times, prices = [], []
    for j in range(m):
        s, e = starts[j], ends[j]
        lf = bool(low_firsts[j])
        first, second = (lows[j], highs[j]) if lf else (highs[j], lows[j])
        times += [s, s + (e - s) / 3, s + 2 * (e - s) / 3, e]
        prices += [opens[j], first, second, closes[j]]
    return Path(times, prices)


def value_at(path: Path, t: float) -> float:
    """The path's price at bar time ``t`` (0 ≤ t ≤ 1)."""
    return path.value_at(t)


def first_touch(path: Path, price: float, falling: bool, t0: float = 0.0) -> tuple[float, float]:
    """First bar time ``t ≥ t0`` at which the path is at or below ``price`` (``falling``) or at or
    above it, and the price it is touched at: ``price`` on a leg, the price after a jump (or the
    start) when it is already through it there. ``(inf, nan)`` if never."""
    sign = 1.0 if falling else -1.0         # compare sign·value ≤ sign·price
    start = path.value_at(t0)
    if sign * start <= sign * price:
        return t0, start
    times, prices = path.times, path.prices
    a, ta = start, t0
    for j in range(path._leg(t0) + 1, len(times)):
        b, tb = prices[j], times[j]
        if sign * b <= sign * price:
            if tb == ta:                    # a jump (a detail bar opening beyond it): a gap
                return tb, b
            return ta + (tb - ta) * (a - price) / (a - b), price
        a, ta = b, tb
    return math.inf, math.nan


def first_reach(path: Path, price: float, falling: bool, t0: float = 0.0) -> float:
    """First bar time ``t ≥ t0`` at which the path is at or below ``price`` (``falling``) or at
    or above it; ``math.inf`` if it never is."""
    return first_touch(path, price, falling, t0)[0]


def window_extreme(path: Path, t0: float, t1: float, lowest: bool) -> float:
    """The path's lowest (``lowest``) or highest price over ``[t0, t1]``."""
    pick = min if lowest else max
    out = pick(path.value_at(t0), path.value_at(t1))
    for t, p in zip(path.times, path.prices):
        if t0 < t < t1 or (t == t1 and t1 > t0):
            out = pick(out, p)
    return out


def _vertex_array(open_, high, low, close, low_first_) -> np.ndarray:
    o, h, lo, c = (np.asarray(x, dtype=float) for x in (open_, high, low, close))
    lf = np.asarray(low_first_, dtype=bool)
    return np.stack([o, np.where(lf, lo, h), np.where(lf, h, lo), c], axis=-1)


def value_at_array(open_, high, low, close, low_first_, t) -> np.ndarray:
    """:func:`value_at` of four-vertex bar paths, for arrays of bars each at its own time ``t``."""
    v = _vertex_array(open_, high, low, close, low_first_)
    x = np.clip(np.asarray(t, dtype=float), 0.0, END) * 3.0      # in legs
    k = np.minimum(np.floor(x).astype(np.int64), 2)
    rows = np.arange(len(v))
    a = v[rows, k]
    return a + (x - k) * (v[rows, k + 1] - a)


def extreme_after_array(open_, high, low, close, low_first_, t0, lowest: bool) -> np.ndarray:
    """:func:`window_extreme` over ``[t0, 1]`` of four-vertex bar paths (the replay's entry bars)."""
    v = _vertex_array(open_, high, low, close, low_first_)
    t0 = np.asarray(t0, dtype=float)
    pick = np.minimum if lowest else np.maximum
    out = pick(value_at_array(open_, high, low, close, low_first_, t0), v[:, 3])
    for j in (1, 2):
        out = np.where(BAR_TIMES[j] > t0, pick(out, v[:, j]), out)
    return out


class OrderKind(Choice):
    """How an order meets the last-price path (backtrader's execution types, without backtrader)."""

    MARKET = "market"
    CLOSE = "close"
    LIMIT = "limit"
    STOP = "stop"
    STOP_LIMIT = "stop_limit"


def order_time(kind: "OrderKind | str", is_buy: bool, path: Path, price: float | None = None,
               limit: float | None = None) -> float:
    """Bar time at which an order fills on the last-price ``path`` (``math.inf``: never).

    Market: at the open (0). Close: at the close (1). Limit (``price``): when the path first
    reaches the limit from the favourable side (0 if the open already is through it). Stop
    (``price``): when the path first reaches the stop from below (buy) or above (sell). Stop-limit:
    the stop's time, or the first time after it that the path reaches ``limit``.
    """
    kind = OrderKind.parse(kind)
    if kind is OrderKind.MARKET:
        return 0.0
    if kind is OrderKind.CLOSE:
        return END
    if kind is OrderKind.LIMIT:
        return first_reach(path, price, falling=is_buy)
    t = first_reach(path, price, falling=not is_buy)
    if kind is OrderKind.STOP or t == math.inf or limit is None:
        return t
    return first_reach(path, limit, falling=is_buy, t0=t)


__all__ = ["Intrabar", "OrderKind", "Path", "END", "BAR_TIMES", "low_first", "vertices",
           "detail_path", "value_at", "first_touch", "first_reach", "window_extreme",
           "value_at_array", "extreme_after_array", "order_time"]
