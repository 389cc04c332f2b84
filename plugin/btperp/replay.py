"""Vectorized replay: when do the exchange's rules liquidate a position held over a price history?

Pure core (numpy; no backtrader, no I/O). It answers, for one position or half a million at once,
the question the broker answers bar by bar, with the same rules and the same order of events
within a bar (:mod:`btperp.intrabar`, which the broker uses too):

1. funding events at the bar's open are paid by a position held at that open;
2. a position whose trigger price (mark, or last) *opens* beyond its liquidation price is
   liquidated at the open;
3. funding events later in the bar are paid, and the position is checked against the bar's
   adverse extreme (low for a long, high for a short).

A position entered inside its first bar, at bar time ``entry_t`` (0 < t ≤ 1 on the bar's path,
:mod:`btperp.intrabar`), is checked in that bar only against the path after ``entry_t``: from
the trigger price there (beyond its liquidation price: liquidated at it) to its adverse extreme
over ``[entry_t, 1]``. The path's order of extremes is the ``intrabar`` model's, for a book that
was flat at the bar's open.

The equation
    Per unit of size, a position with margin ``m`` (USDT per unit), entry ``e`` and side ``σ`` has
    equity ``m + σ (P − e)`` at price P, and in a tier the maintenance margin per unit is
    ``A + b P`` (the rulebook's :meth:`~btperp.rules.base.Rulebook.maintenance_terms` divided by
    the size; Binance: ``A = −cum / size``, ``b = MMR``). Funding moves the margin:
    ``m_t = m₀ − σ (F_t − B)`` with ``F`` the cumulative funding per unit (Σ rate × mark at each
    event, :func:`btperp.funding.funding_payment`) and ``B`` its value when the position started.
    The position is liquidated at bar t when, for the tier binding at its liquidation price,

        σ [P_t (1 − σ b) − F_t]  ≤  A − m₀ + σ (e − B)

    The left side is a series of the bar alone (for each tier rate ``b``), the right side a
    constant of the position: finding the liquidation bar is finding the first bar at which a
    series falls to a threshold. A sparse table of running minimums answers that for every
    position in O(log n) (binary lifting); one position is a plain scan.

Tiers
    Maintenance margin is continuous across tiers and its rates rise with the notional
    (:mod:`btperp.tiers` validates both), so MM(P) is the highest of the tiers' lines; a position
    is liquidated exactly when the line of the tier holding its liquidation price is breached, and
    breaching any line means being liquidated. Each tier table in force (:class:`TierHistory
    <btperp.tiers.TierHistory>`) covers an epoch of bars; within an epoch only the tiers its
    liquidation price can reach (given the range funding moves its margin over) are checked.

The liquidation price, bankruptcy price, tier and maintenance margin at the trigger come from
:func:`btperp.margin.solve_price_array`, :func:`btperp.margin.maintenance_margin_array` and
:func:`btperp.liquidation.bankruptcy_fill`: the formulas the broker uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import math

import numpy as np

from .errors import DataError
from .intrabar import Intrabar, extreme_after_array, low_first, value_at_array
from .liquidation import FillPolicy, LiquidationMode, bankruptcy_fill, partial_rule, partial_step, settle
from .margin import (Position, Side, maintenance_margin, maintenance_margin_array, solve_price_array,
                     tier_of)
from .rules import Rulebook
from .tiers import TierTable
from .times import utc_minute as _iso

#: Below this many sub-queries a plain scan is faster than building sparse tables.
_SCAN_MAX = 16


@dataclass(frozen=True)
class Epoch:
    """Bars ``[start, stop)`` during which one tier table was in force."""

    start: int
    stop: int
    table: TierTable
    assumed: bool = False
    """True when the bars predate the first known table (the earliest was used)."""


class Market:
    """The price history a replay runs over: bar open times, mark and last OHLC, funding, tiers.

    ``funding_per_unit`` is what one unit of a long pays over each bar (NaN or 0: no event) and
    ``funding_open_per_unit`` the part paid at the bar's open (events at its open time), as
    :func:`btperp.load` gives them. ``epochs`` partition the bars by the tier table in force.
    """

    def __init__(self, times_ms: np.ndarray, *, mark: Sequence[np.ndarray], last: Sequence[np.ndarray],
                 funding_per_unit: np.ndarray, funding_open_per_unit: np.ndarray,
                 epochs: Sequence[Epoch], step_ms: int, symbol: str = ""):
        self.times = np.asarray(times_ms, dtype=np.int64)
        n = len(self.times)
        if n == 0:
            raise DataError(f"{symbol}: no bars to replay")
        self.symbol = symbol
        self.step_ms = int(step_ms)
        self.mark = tuple(np.asarray(a, dtype=float) for a in mark)       # open, high, low, close
        self.last = tuple(np.asarray(a, dtype=float) for a in last)
        for name, arrays in (("mark", self.mark), ("last", self.last)):
            for label, a in zip(("open", "high", "low", "close"), arrays):
                if len(a) != n:
                    raise DataError(f"{symbol}: {name}_{label} has {len(a)} values for {n} bars")
                bad = ~np.isfinite(a) | (a <= 0)
                if bad.any():
                    i = int(np.argmax(bad))
                    raise DataError(f"{symbol}: {name} {label} price {a[i]} at bar {i} "
                                    f"({_iso(self.times[i])}); the replay needs a price in every bar",
                                    timestamp=_iso(self.times[i]))
        total = np.nan_to_num(np.asarray(funding_per_unit, dtype=float), nan=0.0)
        opening = np.nan_to_num(np.asarray(funding_open_per_unit, dtype=float), nan=0.0)
        after = np.cumsum(total)
        #: cumulative funding per unit after each bar (F after) and through its open (F at open)
        self.f_after = after
        self.f_open = after - total + opening
        self.epochs = tuple(epochs)
        if (not self.epochs or self.epochs[0].start != 0 or self.epochs[-1].stop != n
                or any(a.stop != b.start for a, b in zip(self.epochs, self.epochs[1:]))):
            raise ValueError("epochs must partition the bars [0, n)")
        self.epoch_of = np.empty(n, dtype=np.int64)
        for j, ep in enumerate(self.epochs):
            self.epoch_of[ep.start:ep.stop] = j
        self._series: dict = {}

    def __len__(self) -> int:
        return len(self.times)

    def prices(self, trigger: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(open, high, low) of the series that triggers: ``mark`` or ``last``."""
        if trigger not in ("mark", "last"):
            raise ValueError(f"trigger must be 'mark' or 'last', got {trigger!r}")
        o, h, low, _ = self.mark if trigger == "mark" else self.last
        return o, h, low

    def baseline(self, start: np.ndarray, opened: np.ndarray) -> np.ndarray:
        """Cumulative funding a position starting at bar ``start`` has already settled: through
        the bar's open when it opened there (it does not pay those events), else through the bar
        before (it pays the bar's open events)."""
        before = np.where(start > 0, self.f_after[np.maximum(start - 1, 0)], 0.0)
        return np.where(opened, self.f_open[start], before)

    def index_of(self, times_ms) -> np.ndarray:
        """Bar holding each time: the last bar opening at or before it (−1 before the first)."""
        return np.searchsorted(self.times, np.asarray(times_ms, dtype=np.int64), side="right") - 1

    def _gseries(self, trigger: str, side: int, b: float):
        """Left side of the module's inequality per bar: (with the open checked, extreme only)."""
        key = (trigger, side, b)
        if key not in self._series:
            o, h, low = self.prices(trigger)
            extreme = low if side > 0 else h
            k = 1.0 - side * b
            at_extreme = side * (extreme * k - self.f_after)
            at_open = side * (o * k - self.f_open)
            self._series[key] = [np.minimum(at_extreme, at_open), at_extreme, None]
        return self._series[key]


@dataclass(frozen=True)
class Positions:
    """Positions to replay, as arrays (one row per position).

    ``margin`` is the equity (USDT) that backs the position before its PnL: the isolated margin,
    or the cross wallet of an account holding only it. ``start`` is the first bar checked and
    ``opened`` whether the position opened in that bar (an entry), at bar time ``entry_t`` (0: the
    open; see :mod:`btperp.intrabar`); ``stop`` the bar after the last one checked.
    """

    side: np.ndarray
    size: np.ndarray
    entry_price: np.ndarray
    margin: np.ndarray
    leverage: np.ndarray
    start: np.ndarray
    stop: np.ndarray
    opened: np.ndarray
    entry_t: np.ndarray | None = None

    @classmethod
    def of(cls, side, size, entry_price, margin, leverage, start, stop, opened=True,
           entry_t=0.0) -> "Positions":
        side, size, entry_price, margin, leverage = (np.atleast_1d(np.asarray(x, dtype=float))
                                                     for x in (side, size, entry_price, margin, leverage))
        n = max(len(side), len(size), len(entry_price), len(margin), len(leverage),
                np.size(start), np.size(stop))
        b = lambda x, t: np.broadcast_to(np.asarray(x, dtype=t), (n,)).copy()   # noqa: E731
        return cls(b(side, float), b(size, float), b(entry_price, float), b(margin, float),
                   b(leverage, float), b(start, np.int64), b(stop, np.int64), b(opened, bool),
                   b(entry_t, float))

    def __len__(self) -> int:
        return len(self.side)


@dataclass(frozen=True)
class Outcome:
    """What the rules did to each position (arrays; NaN / −1 where not liquidated)."""

    liquidated: np.ndarray
    bar: np.ndarray
    """Bar index of the liquidation, −1 if none."""
    liquidation_price: np.ndarray
    """Liquidation price in force when it triggered."""
    trigger_price: np.ndarray
    """Price it triggered at: the liquidation price, or the bar's open when it opened beyond."""
    bankruptcy_price: np.ndarray
    gap: np.ndarray
    """True when the trigger series opened beyond the liquidation price."""
    tier: np.ndarray
    """1-based tier at the trigger price."""
    maintenance_rate: np.ndarray
    maintenance_margin: np.ndarray
    """Maintenance margin at the trigger price."""
    equity: np.ndarray
    """Margin balance at the trigger price (margin after funding + unrealized PnL there)."""
    margin_left: np.ndarray
    """Margin after funding when it triggered (or at the end)."""
    funding_paid: np.ndarray
    """Funding paid until the liquidation (through its bar) or the end (negative: received)."""
    last_bar: np.ndarray
    """Last bar the position was held in (the liquidation bar, or ``stop − 1``)."""
    before_later_funding: np.ndarray | None = None
    """True when it was liquidated at the open on the margin after the open's funding events only,
    before the bar's later events (which the broker then charges to what is left)."""


def replay(market: Market, rulebook: Rulebook, positions: Positions, *, trigger: str = "mark",
           taker_fee: float | None = None, intrabar: "Intrabar | str" = Intrabar.PATH) -> Outcome:
    """Replay ``positions`` over ``market`` under ``rulebook`` (module docstring)."""
    fee = rulebook.taker_fee if taker_fee is None else float(taker_fee)
    p = positions
    inside = _entered_inside(market, p, trigger, intrabar)
    n = len(market)
    if len(p) and (p.start.min() < 0 or p.stop.max() > n or (p.start >= p.stop).any()):
        raise ValueError("each position needs 0 <= start < stop <= number of bars")
    if len(p) and not ((p.size > 0).all() and np.isin(p.side, (-1.0, 1.0)).all()):
        raise ValueError("sizes must be positive and sides +1 or -1")
    base = market.baseline(p.start, p.opened)
    m0 = p.margin / p.size                        # margin per unit of size
    hit = np.full(len(p), n, dtype=np.int64)      # first liquidation bar (n: none yet)
    f_values = (market.f_after, market.f_open)
    for ep in market.epochs:
        rows = np.flatnonzero((p.start < ep.stop) & (p.stop > ep.start) & (hit == n))
        if not len(rows):
            continue
        lo_bar = np.maximum(p.start[rows], ep.start)
        hi_bar = np.minimum(p.stop[rows], ep.stop)
        # the range funding moves the margin over within the epoch, and the tiers it can reach
        f_min = min(float(f[ep.start:ep.stop].min()) for f in f_values)
        f_max = max(float(f[ep.start:ep.stop].max()) for f in f_values)
        side, size, entry = p.side[rows], p.size[rows], p.entry_price[rows]
        lev, b0, mu = p.leverage[rows], base[rows], m0[rows]
        k_lo, k_hi = _tier_range(rulebook, ep.table, side, size, entry, lev, fee,
                                 [mu - side * (f - b0) for f in (f_min, f_max)])
        first = p.opened[rows] & (p.start[rows] == lo_bar)     # entry bar: extreme only
        for k in range(len(ep.table.tiers)):
            sel = np.flatnonzero((k_lo <= k) & (k <= k_hi))
            if not len(sel):
                continue
            fixed, per_price = rulebook.maintenance_terms(side[sel], size[sel], entry[sel], lev[sel],
                                                          ep.table.tiers[k], fee)
            a = np.broadcast_to(np.asarray(fixed, dtype=float), sel.shape) / size[sel]
            b_all = np.broadcast_to(np.asarray(per_price, dtype=float), sel.shape) / size[sel]
            # equity = maintenance margin per unit (Binance "How to Calculate Liquidation Price of
            # USDⓈ-M Futures Contracts", with funding moving the margin): the module's inequality
            c = a - mu[sel] + side[sel] * (entry[sel] - b0[sel])
            for sgn in (1.0, -1.0):
                for b in np.unique(np.round(b_all[side[sel] == sgn], 15)):
                    sub = sel[(side[sel] == sgn) & (np.round(b_all, 15) == b)]
                    found = _first_hits(market, trigger, sgn, float(b), lo_bar[sub], hi_bar[sub],
                                        c[np.searchsorted(sel, sub)], first[sub],
                                        inside[0][rows[sub]])
                    r = rows[sub]
                    hit[r] = np.minimum(hit[r], found)
    return _outcome(market, rulebook, p, hit, base, m0, fee, trigger, inside[1])


def _entered_inside(market: Market, p: Positions, trigger: str, intrabar) -> tuple[np.ndarray, np.ndarray]:
    """For positions entered inside their first bar (``entry_t`` > 0): the trigger path's adverse
    extreme after the entry and its price at the entry (btperp.intrabar); NaN for the others."""
    n = len(p)
    extreme, at_entry = np.full(n, np.nan), np.full(n, np.nan)
    t = p.entry_t if p.entry_t is not None else np.zeros(n)
    rows = np.flatnonzero(p.opened & (t > 0))
    if len(rows):
        o, h, lo = (x[p.start[rows]] for x in market.prices(trigger))
        c = (market.mark if trigger == "mark" else market.last)[3][p.start[rows]]
        first_low = low_first(o, h, lo, intrabar, 0)        # the book was flat at the bar's open
        side = p.side[rows]
        for sgn in (1.0, -1.0):
            r = side == sgn
            extreme[rows[r]] = extreme_after_array(o[r], h[r], lo[r], c[r], first_low[r], t[rows[r]],
                                                   lowest=sgn > 0)
        at_entry[rows] = value_at_array(o, h, lo, c, first_low, t[rows])
    return extreme, at_entry


def _tier_range(rulebook: Rulebook, table: TierTable, side, size, entry, lev, fee, margins):
    """0-based tier indices the liquidation price can take while the margin per unit ranges over
    ``margins`` (two arrays): LP moves monotonically with the margin, so its tier does too."""
    picks = []
    for m in margins:
        price, _ = solve_price_array(rulebook, table, side, size, entry, lev, m * size, fee)
        # no positive root (a long that cannot be liquidated): the lowest tier bounds it
        price = np.where(np.isfinite(price), price, 0.0)
        picks.append(table.lookup_index(rulebook.tier_notional(size, entry, price)))
    return np.minimum(*picks), np.maximum(*picks)


def _first_hits(market: Market, trigger: str, side: float, b: float, lo: np.ndarray,
                hi: np.ndarray, c: np.ndarray, first: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """First bar in [lo, hi) where the series is at or below ``c`` (len(market) if none). At an
    entry bar (``first``) only the extreme counts: the position was opened at that open, or at
    its entry time inside the bar (``inside``: the adverse extreme after it, else NaN)."""
    n = len(market)
    series = market._gseries(trigger, int(side), b)
    out = np.full(len(lo), n, dtype=np.int64)
    if first.any():
        at_extreme = series[1][lo]
        custom = first & ~np.isnan(inside)
        if custom.any():
            at_extreme = np.where(custom, side * (inside * (1.0 - side * b) - market.f_after[lo]),
                                  at_extreme)
        entry_hit = first & (at_extreme <= c)
        out[entry_hit] = lo[entry_hit]
    todo = np.flatnonzero((out == n) & (lo + first < hi))
    if not len(todo):
        return out
    start = lo[todo] + first[todo]
    stop, cc = hi[todo], c[todo]
    g = series[0]
    if len(todo) <= _SCAN_MAX:
        for i, s, e, ci in zip(todo, start, stop, cc):
            below = np.flatnonzero(g[s:e] <= ci)
            if len(below):
                out[i] = s + below[0]
        return out
    if series[2] is None:
        series[2] = _SparseMin(g)
    out[todo] = series[2].first_at_or_below(start, stop, cc, missing=n)
    return out


class _SparseMin:
    """Running minimums over power-of-two windows: range minimum in O(1), first index at or below a
    threshold in O(log n), for arrays of queries at once."""

    def __init__(self, values: np.ndarray):
        self.levels = [np.asarray(values, dtype=float)]
        width = 1
        while 2 * width <= len(values):
            prev = self.levels[-1]
            self.levels.append(np.minimum(prev[:-width], prev[width:]))
            width *= 2

    def first_at_or_below(self, start: np.ndarray, stop: np.ndarray, threshold: np.ndarray,
                          missing: int) -> np.ndarray:
        out = np.full(len(start), missing, dtype=np.int64)
        length = stop - start
        k = np.floor(np.log2(length)).astype(np.int64)
        low = np.empty(len(start))
        for level in np.unique(k):
            r = k == level
            mins = self.levels[level]
            low[r] = np.minimum(mins[start[r]], mins[stop[r] - (1 << int(level))])
        found = np.flatnonzero(low <= threshold)
        pos, end, c = start[found], stop[found], threshold[found]
        for level in range(int(k.max()) if len(k) else -1, -1, -1):
            width = 1 << level
            can = np.flatnonzero(pos + width <= end)
            if not len(can):
                continue
            skip = self.levels[level][pos[can]] > c[can]
            pos[can[skip]] += width
        out[found] = pos
        return out


def _outcome(market: Market, rulebook: Rulebook, p: Positions, hit, base, m0, fee: float,
             trigger: str, at_entry: np.ndarray) -> Outcome:
    n = len(market)
    count = len(p)
    liquidated = hit < n
    last_bar = np.where(liquidated, hit, p.stop - 1)
    o, _, _ = market.prices(trigger)
    f_end = market.f_after[last_bar]
    lp = np.full(count, np.nan)
    trig = np.full(count, np.nan)
    gap = np.zeros(count, bool)
    early = np.zeros(count, bool)
    tier = np.full(count, -1, dtype=np.int64)
    rate = np.full(count, np.nan)
    mm = np.full(count, np.nan)
    margin_left = (m0 - p.side * (f_end - base)) * p.size
    rows = np.flatnonzero(liquidated)
    if len(rows):
        t = hit[rows]
        side, size, entry, lev = p.side[rows], p.size[rows], p.entry_price[rows], p.leverage[rows]
        entry_bar = p.opened[rows] & (t == p.start[rows])
        m_open = (m0[rows] - side * (market.f_open[t] - base[rows])) * size
        m_after = (m0[rows] - side * (market.f_after[t] - base[rows])) * size
        lp_open = np.full(len(rows), np.nan)
        lp_after = np.full(len(rows), np.nan)
        for j in np.unique(market.epoch_of[t]):
            r = market.epoch_of[t] == j
            table = market.epochs[j].table
            lp_open[r], _ = solve_price_array(rulebook, table, side[r], size[r], entry[r], lev[r],
                                              m_open[r], fee)
            lp_after[r], _ = solve_price_array(rulebook, table, side[r], size[r], entry[r], lev[r],
                                               m_after[r], fee)
        # the trigger price at the open, or where a position entered inside the bar started
        opening = np.where(entry_bar & ~np.isnan(at_entry[rows]), at_entry[rows], o[t])
        # step 2 of the bar: the open beyond the liquidation price (not at an entry's own open)
        at_open = ~entry_bar & (side * (opening - lp_open) <= 0)
        price = np.where(at_open, lp_open, lp_after)
        # step 3: the extreme reached it; the broker fills at the open if that is already beyond
        beyond = at_open | (side * (opening - lp_after) <= 0)
        trigger_price = np.where(beyond, opening, price)
        margin = np.where(at_open, m_open, m_after)
        lp[rows], trig[rows], gap[rows], early[rows] = price, trigger_price, beyond, at_open
        margin_left[rows] = margin
        f_end[rows] = np.where(at_open, market.f_open[t], market.f_after[t])
        for j in np.unique(market.epoch_of[t]):
            r = market.epoch_of[t] == j
            table = market.epochs[j].table
            idx, mm[rows[r]] = maintenance_margin_array(rulebook, table, side[r], size[r], entry[r],
                                                        trigger_price[r], lev[r], fee)
            tier[rows[r]] = idx + 1
            rate[rows[r]] = np.array([x.maintenance_margin_rate for x in table.tiers])[idx]
    reserve = np.asarray(rulebook.bankruptcy_reserve(p.side, p.size, p.entry_price, p.leverage, fee),
                         dtype=float)
    bankrupt = np.where(liquidated, bankruptcy_fill(p.side, p.size, p.entry_price, margin_left,
                                                    reserve), np.nan)
    equity = np.where(liquidated, margin_left + p.side * p.size * (trig - p.entry_price), np.nan)
    return Outcome(liquidated, np.where(liquidated, hit, -1), lp, trig, bankrupt, gap, tier, rate, mm,
                   equity, margin_left, p.side * p.size * (f_end - base), last_bar, early)


def liquidation_path(market: Market, rulebook: Rulebook, side: float, size: float, entry_price: float,
                     margin: float, leverage: float, start: int, stop: int, opened: bool = True,
                     taker_fee: float | None = None) -> np.ndarray:
    """The liquidation price in force at each bar of ``[start, stop)`` for one position (after
    the bar's funding): what its liquidation line looks like on a chart."""
    fee = rulebook.taker_fee if taker_fee is None else float(taker_fee)
    base = float(market.baseline(np.array([start]), np.array([opened]))[0])
    bars = np.arange(start, stop)
    m = margin - side * size * (market.f_after[bars] - base)
    out = np.full(len(bars), np.nan)
    epochs = market.epoch_of[bars]
    for j in np.unique(epochs):
        r = epochs == j
        out[r], _ = solve_price_array(rulebook, market.epochs[j].table, side, size, entry_price,
                                      leverage, m[r], fee)
    return out





# --- partial liquidation: every event of one position ------------------------------------------

@dataclass(frozen=True)
class Event:
    """One liquidation event of a replayed position: a partial step (``partial``) or the close."""

    bar: int
    partial: bool
    trigger_price: float
    fill_price: float
    liquidation_price: float
    """Liquidation price in force when it triggered."""
    bankruptcy_price: float
    """Bankruptcy price of the position as it stood before the event."""
    gap: bool
    size: float
    """Size closed."""
    remaining: float
    """Size left open after it (0 for the close)."""
    pnl: float
    fee: float
    insurance_flow: float
    equity: float
    """Margin balance at the trigger price before the event."""
    maintenance_margin: float
    """Maintenance margin at the trigger price before the event."""
    tier: int
    """1-based tier at the trigger price before the event."""
    margin_ratio: float
    """After a partial step: the remainder's margin ratio at the trigger price; NaN for the close."""

    @property
    def loss(self) -> float:
        return -(self.pnl - self.fee)


@dataclass(frozen=True)
class Events:
    """What the rules did to one position, event by event (:func:`liquidation_events`)."""

    events: tuple[Event, ...]
    closed: bool
    """True when a liquidation closed the position (the last event is the close)."""
    funding_paid: float
    """Funding paid until the close (through its bar) or the end (negative: received)."""
    margin_left: float
    """What backed the position when it was closed (or at the end)."""
    size_left: float
    """Size open at the end (0 when closed)."""
    last_bar: int


def liquidation_events(market: Market, rulebook: Rulebook, side: float, size: float,
                       entry_price: float, margin: float, leverage: float, start: int, stop: int,
                       opened: bool = True, entry_t: float = 0.0, *, trigger: str = "mark",
                       taker_fee: float | None = None, intrabar: "Intrabar | str" = Intrabar.PATH,
                       liquidation: "str | LiquidationMode" = LiquidationMode.PARTIAL,
                       fee_rate: float | None = None, policy: "str | FillPolicy" = FillPolicy.BANKRUPTCY,
                       lot_size: float | None = None) -> Events:
    """Every liquidation event of one position held over ``[start, stop)``: the partial steps
    the exchange's rule takes (:func:`btperp.liquidation.partial_step`, the broker's function),
    then the close (:func:`btperp.liquidation.settle`), as the broker applies them.

    Each trigger is found by :func:`replay`. After a step the remainder (same entry, the balance
    the step left) is checked on the rest of that bar's path: on a bar path the adverse extreme
    after the first touch of the liquidation price is the bar's own (:mod:`btperp.intrabar`: the
    touch lies on the leg that falls to the low, or rises to the high); a step at the open then
    pays the bar's later funding events first, as the broker's remainder does. From the next bar
    on the remainder is replayed like any position held at the open. ``fee_rate``: the
    liquidation fee (default the rulebook's); ``liquidation="full"`` gives the single close.
    """
    fee = rulebook.taker_fee if taker_fee is None else float(taker_fee)
    fee_rate = rulebook.liquidation_fee_rate if fee_rate is None else float(fee_rate)
    rule = partial_rule(rulebook, liquidation)
    side, size, entry_price, margin, leverage = (float(x) for x in (side, size, entry_price, margin,
                                                                    leverage))
    sgn = Side.LONG if side > 0 else Side.SHORT
    o, h, low = market.prices(trigger)
    adverse = low if side > 0 else h
    events: list[Event] = []
    paid = 0.0
    step_bar = -1
    while True:
        out = replay(market, rulebook, Positions.of(side, size, entry_price, margin, leverage, start,
                                                    stop, opened, entry_t),
                     trigger=trigger, taker_fee=fee, intrabar=intrabar)
        paid += float(out.funding_paid[0])
        if not out.liquidated[0]:
            return Events(tuple(events), False, paid, float(out.margin_left[0]), size,
                          int(out.last_bar[0]))
        t = int(out.bar[0])
        price, lp, gap = float(out.trigger_price[0]), float(out.liquidation_price[0]), bool(out.gap[0])
        # liquidated at the open before the bar's later funding events: what a step leaves pays them
        # (an open beyond a liquidation price that only those events moved has paid them already)
        later_unpaid = bool(out.before_later_funding[0])
        balance = float(out.margin_left[0])
        table = market.epochs[int(market.epoch_of[t])].table
        whole = False
        while True:                     # the events of bar t
            pos = Position("", sgn, size, entry_price, price, leverage, table)
            reserve = float(rulebook.bankruptcy_reserve(sgn, size, entry_price, leverage, fee))
            bankrupt = float(bankruptcy_fill(side, size, entry_price, balance, reserve))
            before_mm = maintenance_margin(rulebook, pos, price, fee)
            tier = tier_of(rulebook, pos, price).tier
            step = None
            if rule is not None and not whole and not (rule.cooldown and step_bar == t):
                step = partial_step(rulebook, pos, price, balance, rule=rule, fee_rate=fee_rate,
                                    taker_fee=fee, lot_size=lot_size)
            if step is None:
                s = settle(side, size, entry_price, price, balance, policy=policy, fee_rate=fee_rate,
                           reserve=reserve)
                events.append(Event(t, False, price, s.fill_price, lp, bankrupt, gap, size, 0.0,
                                    s.realized_pnl, s.fee, s.insurance_flow, s.equity_at_trigger,
                                    float(before_mm), tier, math.nan))
                return Events(tuple(events), True, paid, balance, 0.0, t)
            events.append(Event(t, True, price, price, lp, bankrupt, gap, step.closed, step.remaining,
                                step.realized_pnl, step.fee, step.insurance_flow, step.equity,
                                float(before_mm), tier, step.margin_ratio))
            step_bar = t
            size, balance = step.remaining, step.balance_after
            if not step.compliant:      # the rest, at the same trigger: closed whole
                whole = True
                continue
            if later_unpaid:            # a step at the open: the remainder pays the later events
                later = side * size * (market.f_after[t] - market.f_open[t])
                balance -= later
                paid += later
                later_unpaid = False
            lp2, _ = solve_price_array(rulebook, table, side, size, entry_price, leverage, balance, fee)
            lp2 = float(lp2)
            if not (math.isfinite(lp2) and side * (adverse[t] - lp2) <= 0):
                break
            beyond = side * (price - lp2) <= 0      # (funding moved it past the step's price)
            price, lp, gap = (price if beyond else lp2), lp2, gap and beyond
        if t + 1 >= stop:
            return Events(tuple(events), False, paid, balance, size, t)
        start, margin, opened, entry_t = t + 1, balance, False, 0.0


__all__ = ["Market", "Epoch", "Positions", "Outcome", "replay", "liquidation_path", "Event", "Events",
           "liquidation_events"]
