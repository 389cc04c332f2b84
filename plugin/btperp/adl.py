"""ADL exposure of a backtest: the bars where a liquidation cascade hit the other side while the
position ranked high for auto-deleveraging (the Python API behind ``btperp audit adl``)::

    from btperp.audit import adl_exposure
    flagged = adl_exposure("out/run")          # one row per flagged bar and position
    flagged.attrs["notes"]                     # what could not be checked, and why

An indicator, not a simulation: no counterparties are simulated and nothing is deleveraged. The
cascade bars are estimated from the run's own market data (:mod:`btperp.cascade`: the last price
sweeping beyond the mark price, heavy volume), the rank from the history's ``adl_score`` against
the run's own profitable bars (:func:`btperp.cascade.ranked_high`). A flagged bar is where a real
account could have been auto-deleveraged, not where it was.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from .cascade import (QUANTILE, SWEEP, VOLUME_MULTIPLE, VOLUME_SWEEP, VOLUME_WINDOW, cascades, ranked_high,
                      trailing_median_ratio)
from .errors import BtperpWarning, DataError, InputError

COLUMNS = ["time", "run_id", "symbol", "trade_id", "side", "size", "entry_price", "mark_close",
           "unrealized_pnl", "adl_score", "adl_rank", "liquidated_side", "sweep", "last_extreme",
           "mark_extreme", "volume", "volume_ratio", "rule"]
"""The columns of :func:`adl_exposure`'s frame: ``adl_rank`` the fraction of the run's profitable
scores (of that symbol) at or below the bar's; ``liquidated_side`` the side whose liquidations the
bar shows (``short`` for a long position); ``sweep`` how far the last price went beyond the mark on
that side (fraction of the mark); ``last_extreme``/``mark_extreme`` the last and mark high (a long
position) or low (a short); ``volume_ratio`` the bar's volume over its trailing median; ``rule``
``sweep``, ``volume`` or ``sweep+volume`` (which rule of :func:`btperp.cascade.cascades` fired)."""


def adl_exposure(root: "str | os.PathLike[str]", *, datadir=None, sweep: float = SWEEP,
                 volume_multiple: float = VOLUME_MULTIPLE, volume_sweep: float = VOLUME_SWEEP,
                 volume_window: int = VOLUME_WINDOW, quantile: float = QUANTILE,
                 min_score: float | None = None) -> pd.DataFrame:
    """The bars of a run's (or a sweep's) margin history where a position in profit ranked high for
    auto-deleveraging while a liquidation cascade of the *other* side happened (module docstring).

    A long is exposed to cascades of short liquidations (the last high swept above the mark high),
    a short to cascades of long liquidations (the last low below the mark low): ADL closes the
    bankrupt position against opposing winners. ``sweep``, ``volume_multiple``, ``volume_sweep``,
    ``volume_window``: the cascade rule (:func:`btperp.cascade.cascades`); ``quantile``,
    ``min_score``: the rank rule (:func:`btperp.cascade.ranked_high`). Market data comes from
    ``datadir`` (default: the run's, else btperp's datasets), at the run's timeframe; only the bars
    the history recorded are checked (all of them by default, ``history_every="bar"``).

    Returns one row per flagged bar and position (:data:`COLUMNS`), sorted by time;
    ``attrs["notes"]`` says what could not be checked (no market data, no published score) and
    ``attrs["rule"]`` holds the parameters used.
    """
    from .audit import _run_metadata
    from .io.history import read
    from .io.market import parse_timeframe
    # the parameters are checked before any file is read
    cascades([1.0], [1.0], [1.0], [1.0], None, sweep=sweep, volume_multiple=volume_multiple,
             volume_sweep=volume_sweep)
    ranked_high([], [], quantile=quantile, min_score=min_score)
    trailing_median_ratio([], volume_window)
    root = Path(root)
    history = read(root, "history")
    metas = _run_metadata(root)
    run = history["run_id"].astype(str).to_numpy()
    symbol = history["symbol"].astype(str).to_numpy()
    high, rank = ranked_high(history["adl_score"].to_numpy(float), history["unrealized_pnl"].to_numpy(float),
                             np.char.add(np.char.add(run.astype(str), "\x00"), symbol.astype(str)),
                             quantile=quantile, min_score=min_score)
    notes: list[str] = []
    parts = []
    side = np.where(history["side"].astype(str).to_numpy() == "long", 1, -1)
    times = history["time"].dt.as_unit("ms").astype("int64").to_numpy()
    for (r, s), rows in pd.Series(np.arange(len(history))).groupby([run, symbol]):
        rows = rows.to_numpy()
        settings = metas.get(r, {}).get("settings", {})
        exchange = settings.get("instruments", {}).get(s, {}).get("exchange", "binance-usdm")
        if not np.isfinite(history["adl_score"].to_numpy(float)[rows]).any():
            notes.append(f"{r} {s}: {exchange} publishes no ADL ranking formula (adl_score is NaN): "
                         f"not ranked")
            continue
        if not high[rows].any():
            continue
        timeframe = settings.get("data", {}).get(s, {}).get("timeframe")
        frame = _frame(s, exchange, timeframe, times[rows], volume_window, datadir or settings.get("datadir"),
                       parse_timeframe)
        if isinstance(frame, str):
            notes.append(f"{r} {s}: {frame}")
            continue
        c = cascades(frame["high"], frame["low"], frame["mark_high"], frame["mark_low"],
                     frame["volume"] if "volume" in frame else None, sweep=sweep,
                     volume_multiple=volume_multiple, volume_sweep=volume_sweep,
                     volume_window=volume_window)
        bar_times = frame.index.as_unit("ms").asi8
        at = np.searchsorted(bar_times, times[rows])
        found = (at < len(bar_times)) & (bar_times[np.minimum(at, len(bar_times) - 1)] == times[rows])
        if not found.all():
            notes.append(f"{r} {s}: {int((~found).sum())} recorded bars are not in the market data "
                         f"({timeframe or 'timeframe unknown'}): not checked")
        rows, at = rows[found], at[found]
        sgn = side[rows]
        # a long is exposed to short liquidations (and a short to long ones), in profit, ranked high
        flagged = high[rows] & c.exposes(sgn, at)
        if not flagged.any():
            continue
        rows, at, sgn = rows[flagged], at[flagged], sgn[flagged]
        h = history.iloc[rows]
        swept = c.sweep_against(sgn, at)
        by_sweep = swept >= sweep
        ratio = c.volume_ratio[at]
        by_volume = (np.nan_to_num(ratio, nan=0.0) >= volume_multiple) & (swept >= volume_sweep)
        parts.append(pd.DataFrame({
            "time": h["time"].to_numpy(), "run_id": r, "symbol": s,
            "trade_id": h["trade_id"].to_numpy(), "side": h["side"].astype(str).to_numpy(),
            "size": h["size"].to_numpy(float), "entry_price": h["entry_price"].to_numpy(float),
            "mark_close": h["mark_close"].to_numpy(float),
            "unrealized_pnl": h["unrealized_pnl"].to_numpy(float),
            "adl_score": h["adl_score"].to_numpy(float), "adl_rank": rank[rows],
            "liquidated_side": np.where(sgn > 0, "short", "long"),
            "sweep": swept,
            "last_extreme": np.where(sgn > 0, frame["high"].to_numpy(float)[at],
                                     frame["low"].to_numpy(float)[at]),
            "mark_extreme": np.where(sgn > 0, frame["mark_high"].to_numpy(float)[at],
                                     frame["mark_low"].to_numpy(float)[at]),
            "volume": frame["volume"].to_numpy(float)[at] if "volume" in frame else np.nan,
            "volume_ratio": ratio,
            "rule": np.where(by_sweep & by_volume, "sweep+volume", np.where(by_sweep, "sweep", "volume")),
        }))
    out = (pd.concat(parts, ignore_index=True).sort_values(["time", "run_id", "symbol"], kind="stable")
           .reset_index(drop=True) if parts else _empty())
    out.attrs["notes"] = notes
    out.attrs["rule"] = {"sweep": sweep, "volume_multiple": volume_multiple, "volume_sweep": volume_sweep,
                         "volume_window": int(volume_window), "quantile": quantile, "min_score": min_score}
    return out


def records(flagged: pd.DataFrame) -> list[dict]:
    """:func:`adl_exposure`'s rows as JSON-ready dicts (times ``YYYY-MM-DD HH:MM`` UTC, NaN as None)."""
    from .audit import _jsonable
    rows = flagged.assign(time=[t.strftime("%Y-%m-%d %H:%M") for t in flagged["time"]])
    return _jsonable(rows.to_dict(orient="records"))


def _frame(symbol: str, exchange: str, timeframe: str | None, times: np.ndarray, window: int, datadir,
           parse_timeframe):
    """The market bars of the rows' span (and ``window`` bars before, for the volume median), or why
    there are none."""
    from .io.loader import load
    if not timeframe:
        return "the history does not say the run's timeframe: no market data to check"
    step = parse_timeframe(timeframe)
    start = pd.Timestamp(int(times.min()), unit="ms", tz="UTC") - window * step
    end = pd.Timestamp(int(times.max()), unit="ms", tz="UTC")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", BtperpWarning)
            return load(symbol, exchange, timeframe, start=start, end=end, datadir=datadir)
    except (DataError, InputError) as exc:
        return f"no market data ({exc}): not checked"


def _empty() -> pd.DataFrame:
    out = pd.DataFrame({c: pd.Series(dtype=float) for c in COLUMNS})
    out["time"] = pd.Series(dtype="datetime64[ms, UTC]")
    for c in ("run_id", "symbol", "side", "liquidated_side", "rule"):
        out[c] = pd.Series(dtype=object)
    out["trade_id"] = pd.Series(dtype="int32")
    return out


__all__ = ["adl_exposure", "records", "COLUMNS"]
