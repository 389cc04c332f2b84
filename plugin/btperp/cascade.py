"""Liquidation cascades estimated from bars, and when a position ranks high for auto-deleveraging.

Pure core: numpy arrays in, arrays out; no I/O, no backtrader. An *indicator*, not a simulation:
btperp has no market-wide liquidation volumes (Binance stopped serving its public force-order
history in 2021; ccxt's ``fetch_liquidations`` is not available for Binance, Bybit or OKX), and no
other traders to rank a position against. What the bars do have:

- the **sweep**: forced market orders take liquidity faster than the index (and so the mark price,
  which follows the index) moves, so in a cascade the last price wicks beyond the mark price. On
  2021-05-19 13:00 UTC Binance's ETHUSDT last price fell to 1400.73 while its mark price bottomed at
  1764.26: a sweep of 20.6 % of the mark. A sweep *below* the mark low is longs being liquidated
  (their liquidation orders sell); *above* the mark high, shorts being liquidated (they buy).
  Within a bar the mark low and the last low need not be at the same minute, so a bar's sweep is a
  lower bound of the largest gap inside it.
- the **volume**: liquidations add volume; a bar's volume against the median of the bars before
  it.

Auto-deleveraging (ADL) closes the bankrupt position against the *opposing* winners: a cascade of
long liquidations exposes profitable shorts, one of short liquidations exposes profitable longs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .errors import InputError

SWEEP = 0.01
"""Default: a last-price extreme beyond the mark extreme by at least 1 % of the mark is a cascade
bar on its own (the 99.9th percentile of the bundled BTCUSDT and ETHUSDT 1h bars is about 0.8 %
and 1.1 % below the mark, 0.6 % and 0.7 % above it)."""
VOLUME_MULTIPLE = 5.0
"""Default: a bar's volume at least 5 times the median of the bars before it ..."""
VOLUME_SWEEP = 0.003
"""... with a sweep of at least 0.3 % of the mark on that side (near the bundled bars' 99th
percentile, 0.2 to 0.3 %) is a cascade bar too."""
VOLUME_WINDOW = 168
"""Default: the volume median is over the 168 bars before the bar (a week of 1h bars)."""
MAX_WINDOW = 100_000
"""The longest volume window accepted, in bars."""
QUANTILE = 0.8
"""Default: a position ranks high at or above the 0.8 quantile of its run's profitable scores (the
top fifth, as the top light of Binance's five-light ADL indicator)."""


@dataclass(frozen=True)
class Cascades:
    """Per bar: the sweeps, the volume ratio and the cascade bars of each side (arrays of one length)."""

    sweep_below: np.ndarray
    """(mark low − last low) / mark low: how far the last price swept below the mark (fraction; negative
    when it stayed above)."""
    sweep_above: np.ndarray
    """(last high − mark high) / mark high: how far the last price swept above the mark (fraction)."""
    volume_ratio: np.ndarray
    """Volume / median volume of the ``window`` bars before (NaN until ``window // 4`` bars are known,
    or without volumes)."""
    longs: np.ndarray
    """Cascade of long liquidations (sell side): exposes profitable shorts to ADL."""
    shorts: np.ndarray
    """Cascade of short liquidations (buy side): exposes profitable longs to ADL."""

    def exposes(self, side, bars) -> np.ndarray:
        """Whether bar ``bars[i]`` is a cascade of the side opposite to ``side[i]`` (+1 long, −1
        short): the one whose bankrupt positions ADL would close against that position."""
        side, bars = np.sign(np.asarray(side, float)), np.asarray(bars, dtype=np.int64)
        return np.where(side > 0, self.shorts[bars], np.where(side < 0, self.longs[bars], False))

    def sweep_against(self, side, bars) -> np.ndarray:
        """The sweep of that opposite side at bar ``bars[i]``: above the mark for a long, below it
        for a short."""
        side, bars = np.sign(np.asarray(side, float)), np.asarray(bars, dtype=np.int64)
        return np.where(side > 0, self.sweep_above[bars], np.where(side < 0, self.sweep_below[bars], np.nan))


def _check(name: str, value: float, *, low: float = 0.0, high: float = np.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not (
            np.isfinite(value) and low <= value <= high):
        raise InputError(f"must be a number in [{low:g}, {high:g}], got {value!r}", field=name)
    return float(value)


def trailing_median_ratio(volume, window: int = VOLUME_WINDOW, min_periods: int | None = None) -> np.ndarray:
    """``volume`` over the median of the ``window`` values before it (the bar itself excluded, so a
    spike does not dilute its own baseline); NaN until ``min_periods`` (default ``window // 4``, at
    least 1) are known, and where the median is 0."""
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or not 1 <= window <= MAX_WINDOW:
        raise InputError(f"must be a whole number of bars from 1 to {MAX_WINDOW:,}, got {window!r}",
                         field="volume_window")
    volume = np.asarray(volume, dtype=float)
    need = max(1, window // 4) if min_periods is None else int(min_periods)
    # the running median of the bars before (pandas' rolling median: O(n log window))
    median = pd.Series(volume).shift(1).rolling(int(window), min_periods=need).median().to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(median > 0, volume / median, np.nan)


def cascades(high, low, mark_high, mark_low, volume=None, *, sweep: float = SWEEP,
             volume_multiple: float = VOLUME_MULTIPLE, volume_sweep: float = VOLUME_SWEEP,
             volume_window: int = VOLUME_WINDOW) -> Cascades:
    """The cascade bars of each side from a bar series' last and mark extremes and volume.

    A bar is a cascade of long liquidations when

    - the last low is below the mark low by at least ``sweep`` of the mark (the book swept by forced
      sells: a large wave of liquidations alone can do that), or
    - the volume is at least ``volume_multiple`` times its trailing median (``volume_window`` bars
      before) and the last low is below the mark low by at least ``volume_sweep`` (a cascade spread
      over the bar: much forced volume, each order moving the price a little; the sweep says which
      side was liquidated, as volume alone does not);

    of short liquidations symmetrically, with the last high above the mark high. ``volume=None``:
    the sweep rule alone. Every measure is a fraction of the mark (0.01 = 1 %).
    """
    sweep = _check("sweep", sweep)
    volume_multiple = _check("volume_multiple", volume_multiple)
    volume_sweep = _check("volume_sweep", volume_sweep)
    high, low, mark_high, mark_low = (np.asarray(x, dtype=float) for x in (high, low, mark_high, mark_low))
    n = len(high)
    if not (len(low) == len(mark_high) == len(mark_low) == n):
        raise InputError("high, low, mark_high and mark_low must have one length", field="mark_low")
    # the last price swept beyond the mark: forced market orders outrunning the index
    below = (mark_low - low) / mark_low
    above = (high - mark_high) / mark_high
    if volume is None:
        ratio = np.full(n, np.nan)
    else:
        volume = np.asarray(volume, dtype=float)
        if len(volume) != n:
            raise InputError("volume must have the length of the prices", field="volume")
        ratio = trailing_median_ratio(volume, volume_window)
    # heavy volume (a multiple of the usual): liquidation orders added to the ordinary flow
    heavy = np.nan_to_num(ratio, nan=0.0) >= volume_multiple
    with np.errstate(invalid="ignore"):
        longs = (below >= sweep) | (heavy & (below >= volume_sweep))
        shorts = (above >= sweep) | (heavy & (above >= volume_sweep))
    return Cascades(below, above, ratio, longs, shorts)


def ranked_high(score, unrealized_pnl, groups=None, *, quantile: float = QUANTILE,
                min_score: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Whether a position ranks high for auto-deleveraging at each row, and the row's rank.

    ADL only closes winners: a row counts only in profit (``unrealized_pnl`` > 0) with a positive,
    finite ``score`` (the exchange's: ``adl_score``; NaN where it publishes none). The exchange ranks
    a position against all its traders, whom a backtest does not have; the rank here is against the
    run's own profitable rows (``groups``: one label per row, e.g. run and symbol; None: one group):
    the fraction of that group's profitable scores at or below the row's (1 = the highest). Ranked
    high: rank ≥ ``quantile``; with ``min_score`` (in the exchange's units), score ≥ min_score instead.

    Returns (ranked_high, rank), rank NaN outside profit.
    """
    quantile = _check("quantile", quantile, high=1.0)
    if min_score is not None:
        min_score = _check("min_score", min_score)
    score = np.asarray(score, dtype=float)
    pnl = np.asarray(unrealized_pnl, dtype=float)
    if pnl.shape != score.shape:
        raise InputError("unrealized_pnl must have the length of score", field="unrealized_pnl")
    winning = np.isfinite(score) & (score > 0) & (pnl > 0)
    if groups is None:
        codes = np.zeros(len(score), dtype=np.int64)
    else:
        _, codes = np.unique(np.asarray(groups), return_inverse=True)
        codes = codes.reshape(-1)
    rank = np.full(len(score), np.nan)
    for g in np.unique(codes[winning]):
        rows = np.flatnonzero(winning & (codes == g))
        values = np.sort(score[rows])
        rank[rows] = np.searchsorted(values, score[rows], side="right") / len(values)
    if min_score is not None:
        high = winning & (score >= min_score)
    else:
        with np.errstate(invalid="ignore"):
            high = winning & (rank >= quantile)
    return high, rank


__all__ = ["Cascades", "cascades", "ranked_high", "trailing_median_ratio", "SWEEP", "VOLUME_MULTIPLE",
           "VOLUME_SWEEP", "VOLUME_WINDOW", "QUANTILE"]
