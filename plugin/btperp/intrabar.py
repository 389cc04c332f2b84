"""The order of events inside a bar: one model of a bar's price path. Pure core (no backtrader).

A bar gives four prices per series (open, high, low, close), not the path between them; yet
whether a stop fills before the mark reaches a liquidation price, or whether a position opened
inside the bar ever saw the bar's low, depends on that path. btperp takes the path to be four
straight legs in a bar time ``t`` from 0 to 3::

    t = 0 open  →  t = 1 first extreme  →  t = 2 other extreme  →  t = 3 close

Which extreme comes first (:class:`Intrabar`):

``path`` (default)
    the extreme nearer the open (the low on a tie), decided on the series that triggers
    liquidation (the mark by default); the last price follows the same order, so the two series
    move together.
``adverse``
    each position's adverse extreme first (the low for a long, the high for a short, decided by
    the position held at the bar's open; a flat book follows ``path``): the cautious bound.

Every event of the bar gets a time on that path, and they happen in time order:

* funding events at the bar's open are paid at ``t = 0`` by the position held then; a position
  whose trigger series opens beyond its liquidation price is liquidated there (a gap);
* an order fills when the last-price path first reaches its price (:func:`order_time`: market
  orders at 0, close orders at 3, limits and stops where the path first touches their price,
  or at 0 when the open is already through it — backtrader's fill prices are kept);
* a position is liquidated when the trigger path first reaches its liquidation price *after* the
  position took its current state (:func:`window_extreme`): a position opened or enlarged by a
  fill at ``t`` is never liquidated by prices the path passed before ``t``, and an order whose
  time comes after the liquidation never fills (the liquidation cancels it, as exchanges do);
  on a tie the liquidation comes first.

The broker (:mod:`btperp.bt.broker`) and the replay (:mod:`btperp.replay`) both take their
times and window extremes from here.
"""

from __future__ import annotations

import math

import numpy as np

from .choice import Choice

#: Bar time of the close: the path has three legs.
CLOSE_T = 3.0


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


def vertices(open_: float, high: float, low: float, close: float, low_first_: bool) -> tuple:
    """The path's prices at t = 0, 1, 2, 3."""
    return (open_, low, high, close) if low_first_ else (open_, high, low, close)


def value_at(path: tuple, t: float) -> float:
    """The path's price at bar time ``t`` (0 ≤ t ≤ 3)."""
    if t >= CLOSE_T:
        return path[3]
    k = int(t)
    a = path[k]
    return a + (t - k) * (path[k + 1] - a)


def first_reach(path: tuple, price: float, falling: bool, t0: float = 0.0) -> float:
    """First bar time ``t ≥ t0`` at which the path is at or below ``price`` (``falling``) or at
    or above it; ``math.inf`` if it never is."""
    sign = 1.0 if falling else -1.0         # compare sign·value ≤ sign·price
    start = value_at(path, t0)
    if sign * start <= sign * price:
        return t0
    k = int(t0) if t0 < CLOSE_T else 3
    a, ta = start, t0
    for j in range(k + 1, 4):
        b = path[j]
        if sign * b <= sign * price:
            # the leg from (ta, a) to (j, b) crosses the price: linear in time
            return ta + (j - ta) * (a - price) / (a - b)
        a, ta = b, float(j)
    return math.inf


def window_extreme(path: tuple, t0: float, t1: float, lowest: bool) -> float:
    """The path's lowest (``lowest``) or highest price over ``[t0, t1]``."""
    pick = min if lowest else max
    out = pick(value_at(path, t0), value_at(path, t1))
    for j in range(int(t0) + 1, 4):
        if j >= t1:
            break
        out = pick(out, path[j])
    return out


def _vertex_array(open_, high, low, close, low_first_) -> np.ndarray:
    o, h, lo, c = (np.asarray(x, dtype=float) for x in (open_, high, low, close))
    lf = np.asarray(low_first_, dtype=bool)
    return np.stack([o, np.where(lf, lo, h), np.where(lf, h, lo), c], axis=-1)


def value_at_array(open_, high, low, close, low_first_, t) -> np.ndarray:
    """:func:`value_at` for arrays of bars, each at its own time ``t``."""
    v = _vertex_array(open_, high, low, close, low_first_)
    t = np.clip(np.asarray(t, dtype=float), 0.0, CLOSE_T)
    k = np.minimum(np.floor(t).astype(np.int64), 2)
    rows = np.arange(len(v))
    a = v[rows, k]
    return a + (t - k) * (v[rows, k + 1] - a)


def extreme_after_array(open_, high, low, close, low_first_, t0, lowest: bool) -> np.ndarray:
    """:func:`window_extreme` over ``[t0, 3]`` for arrays of bars (the replay's entry bars)."""
    v = _vertex_array(open_, high, low, close, low_first_)
    t0 = np.asarray(t0, dtype=float)
    pick = np.minimum if lowest else np.maximum
    out = pick(value_at_array(open_, high, low, close, low_first_, t0), v[:, 3])
    for j in (1, 2):
        out = np.where(j > t0, pick(out, v[:, j]), out)
    return out


class OrderKind(Choice):
    """How an order meets the last-price path (backtrader's execution types, without backtrader)."""

    MARKET = "market"
    CLOSE = "close"
    LIMIT = "limit"
    STOP = "stop"
    STOP_LIMIT = "stop_limit"


def order_time(kind: "OrderKind | str", is_buy: bool, path: tuple, price: float | None = None,
               limit: float | None = None) -> float:
    """Bar time at which an order fills on the last-price ``path`` (``math.inf``: never).

    Market: at the open (0). Close: at the close (3). Limit (``price``): when the path first
    reaches the limit from the favourable side (0 if the open already is through it). Stop
    (``price``): when the path first reaches the stop from below (buy) or above (sell). Stop-limit:
    the stop's time, or the first time after it that the path reaches ``limit``.
    """
    kind = OrderKind.parse(kind)
    if kind is OrderKind.MARKET:
        return 0.0
    if kind is OrderKind.CLOSE:
        return CLOSE_T
    if kind is OrderKind.LIMIT:
        return first_reach(path, price, falling=is_buy)
    t = first_reach(path, price, falling=not is_buy)
    if kind is OrderKind.STOP or t == math.inf or limit is None:
        return t
    return first_reach(path, limit, falling=is_buy, t0=t)


__all__ = ["Intrabar", "OrderKind", "CLOSE_T", "low_first", "vertices", "value_at", "first_reach",
           "window_extreme", "value_at_array", "extreme_after_array", "order_time"]
