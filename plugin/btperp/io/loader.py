"""``btperp.load``: last price, mark price and funding of one symbol in one DataFrame.

Columns, indexed by the bar's open time (``time``, UTC):

=====================  =====================================================================
open high low close    last-traded price (quote currency, USDT)
volume                 base units
mark_open ... close    mark price of the same bar (NaN where the exchange has none: warned)
funding_rate           sum of the rates of the funding events inside the bar; NaN if none
funding_time           time of the (last) funding event inside the bar; NaT if none
funding_events         number of funding events inside the bar
funding_per_unit       what one unit of base held long pays over those events (USDT):
                       Σ rate × mark price at the event (the mark open of the finest bar that
                       holds it; exact when events fall on bar opens, as Binance's do on 1h bars)
funding_open_per_unit  the part of ``funding_per_unit`` from events at the bar's open time (NaN if
                       none): paid by the position held before the bar's orders fill, the rest
                       by the position after them (daily bars hold events at 00:00, 08:00, 16:00)
=====================  =====================================================================

A position of signed size ``q`` pays ``q × funding_per_unit`` in the bar (btperp.funding).
The frame covers the range where both last and mark prices exist; ``frame.attrs`` records the
symbol, exchange, timeframes, gaps and mark coverage, and the contract (:func:`contract_info`:
``contract_type``, ``contract_size``, ``contract_size_unit``, ``settle``); :func:`summary` prints
it in one line.

**Coin-margined (inverse) datasets** (``binance-coinm``, ``bybit-inverse``, ``okx-inverse``;
symbols ``BTC/USD:BTC``, ``BTCUSD``, ``BTCUSD_PERP``, ``BTC-USD-SWAP``) have the same columns:
prices in USD per coin, volume in the coin, funding rates as fractions. ``contract_size`` is USD
per contract (Binance BTCUSD_PERP 100, other COIN-M 10; Bybit 1; OKX BTC-USD-SWAP 100). The
``funding_per_unit`` columns keep their linear reading (Σ rate × mark, USD per coin held); what an
inverse position pays is in the coin: contracts × contract size × rate / mark
(:func:`btperp.inverse.inverse_funding_payment`, on ``funding_rate`` and the mark).
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np
import pandas as pd

from ..errors import DataError, DataWarning
from ..funding import FUNDING_RATE_BOUND, funding_payment
from ..symbols import to_exchange
from .market import (dataset_symbol, find_gaps, is_coin_margined, list_series, parse_timeframe,
                     read_meta, read_series, series_path, timeframe_name, to_utc)
from .paths import datasets_dir

MARK_COLUMNS = ("mark_open", "mark_high", "mark_low", "mark_close")
FUNDING_COLUMNS = ("funding_rate", "funding_time", "funding_events", "funding_per_unit",
                   "funding_open_per_unit")
FRAME_COLUMNS = ("open", "high", "low", "close", "volume") + MARK_COLUMNS + FUNDING_COLUMNS


def _source_timeframe(available: list[str], wanted: str, where: str) -> str:
    step = parse_timeframe(wanted)
    if wanted in available:
        return wanted
    usable = [tf for tf in available if step % parse_timeframe(tf) == pd.Timedelta(0)]
    if not usable:
        raise DataError(f"no {wanted} data and none finer to resample from; available: "
                        f"{', '.join(available) or 'none'}", path=where)
    return max(usable, key=parse_timeframe)


def available_symbols(exchange: str, root: "str | os.PathLike[str] | None" = None) -> list[str]:
    folder = datasets_dir(root) / exchange
    return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


def available_exchanges(root: "str | os.PathLike[str] | None" = None) -> list[str]:
    base = datasets_dir(root)
    return sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else []


def contract_info(symbol: str, exchange: str = "binance-usdm", *,
                  datadir: "str | os.PathLike[str] | None" = None, timeframe: str | None = None) -> dict:
    """The contract a stored dataset is of, from its files' metadata (what ``btperp fetch`` records):
    ``contract_type`` (``linear`` or ``inverse``), ``contract_size`` and ``contract_size_unit``
    (inverse: USD a contract; linear: base units a contract, ccxt's ``contractSize``), ``settle``
    (the margin coin). A dataset without that record (imported, bundled) gets the exchange's margin
    type and settle currency and a ``contract_size`` of None."""
    root = datasets_dir(datadir)
    unified = dataset_symbol(symbol, exchange)
    series = list_series(exchange, unified, root)
    candidates = [series_path(exchange, unified, kind, tf, root)
                  for kind in ("ohlcv", "mark") for tf in ([timeframe] if timeframe else []) + series[kind]]
    candidates.append(series_path(exchange, unified, "funding", root=root))
    recorded = {}
    for path in candidates:
        if path.is_file():
            recorded = read_meta(path).get("contract") or {}
            if recorded:
                break
    inverse = is_coin_margined(exchange)
    return {"contract_type": recorded.get("type") or ("inverse" if inverse else "linear"),
            "contract_size": recorded.get("size"),
            "contract_size_unit": recorded.get("size_unit") or (
                unified.split("/")[1].split(":")[0] if inverse else unified.split("/")[0]),
            "settle": recorded.get("settle") or unified.rsplit(":", 1)[-1]}


def load(symbol: str, exchange: str = "binance-usdm", timeframe: str = "1h", start: Any = None,
         end: Any = None, *, datadir: "str | os.PathLike[str] | None" = None) -> pd.DataFrame:
    """Last price, mark price and funding of ``symbol`` (``BTCUSDT`` or ``BTC/USDT:USDT``; on a
    coin-margined exchange ``BTC/USD:BTC``, ``BTCUSD_PERP``, ..., see the module docstring).

    ``start``/``end`` (dates or times, UTC) bound the bar open times, both inclusive. A
    ``timeframe`` coarser than the stored one is resampled from it (mark extremes and every
    funding event kept). Errors name the file and the first bad row; gaps and bars without a mark
    price are warned about with their count and first time, never filled.
    """
    root = datasets_dir(datadir)
    if exchange not in available_exchanges(root):
        raise DataError(f"no datasets for exchange {exchange!r} in {root}; available: "
                        f"{', '.join(available_exchanges(root)) or 'none'}")
    unified = dataset_symbol(symbol, exchange)
    series = list_series(exchange, unified, root)
    folder = root / exchange / to_exchange(unified)
    if not series["ohlcv"]:
        raise DataError(f"no data for symbol {symbol!r} on {exchange}; available: "
                        f"{', '.join(available_symbols(exchange, root)) or 'none'}", path=str(folder))
    source_tf = _source_timeframe(series["ohlcv"], timeframe, str(folder))
    if source_tf not in series["mark"]:
        raise DataError(f"no {source_tf} mark prices beside the {source_tf} candles; mark files: "
                        f"{', '.join(series['mark']) or 'none'}", path=str(folder))
    step = parse_timeframe(source_tf)
    lo = to_utc(start).floor(parse_timeframe(timeframe)) if start is not None else None
    hi = to_utc(end) if end is not None else None

    ohlcv = read_series(series_path(exchange, unified, "ohlcv", source_tf, root), "ohlcv",
                        timeframe=source_tf, start=lo, end=hi)
    mark = read_series(series_path(exchange, unified, "mark", source_tf, root), "mark",
                       timeframe=source_tf, start=lo, end=hi)
    if ohlcv.empty:
        raise DataError(f"no bars between {start} and {end}", path=str(folder))
    if mark.empty:
        raise DataError(f"no mark prices between {start} and {end}", path=str(folder))
    frame = _join_mark(ohlcv, mark, where=str(folder))
    funding_file = series_path(exchange, unified, "funding", root=root)
    if funding_file.is_file():
        funding = read_series(funding_file, "funding")
        if funding.empty:
            warnings.warn(f"{funding_file}: no rows; the frame has no funding events and no funding is "
                          f"paid (fetch it with `btperp fetch --what funding`)", DataWarning, stacklevel=2)
    else:
        warnings.warn(f"{folder}: no funding.parquet; the frame has no funding events", DataWarning,
                      stacklevel=2)
        funding = pd.DataFrame({"time": pd.Series([], dtype="datetime64[ms, UTC]"), "rate": []})
    frame = attach_funding(frame, funding, step, where=str(funding_file), window=(lo, hi))
    frame.attrs.update({"symbol": unified, "exchange": exchange, "timeframe": source_tf,
                        "source_timeframe": source_tf, "path": str(folder),
                        **contract_info(unified, exchange, datadir=root, timeframe=source_tf)})
    if timeframe != source_tf:
        frame = resample(frame, timeframe)
    _record_coverage(frame)
    return frame


def load_detail(symbol: str, exchange: str = "binance-usdm", timeframe: str = "1m", start: Any = None,
                end: Any = None, *, datadir: "str | os.PathLike[str] | None" = None) -> pd.DataFrame:
    """Finer bars to replay coarse ones on (sub-bar detail): the stored ``mark-<timeframe>`` and/or
    ``ohlcv-<timeframe>`` of ``symbol`` between ``start`` and ``end`` (inclusive bar open times).

    Columns ``mark_open`` ... ``mark_close`` where mark detail is stored, ``open`` ... ``close`` where
    last-price detail is (NaN where a series has no bar); ``attrs``: symbol, exchange, timeframe,
    ``mark`` and ``last`` (which series exist). Either alone is enough: mark detail refines
    liquidations, last-price detail refines fills.
    """
    root = datasets_dir(datadir)
    unified = dataset_symbol(symbol, exchange)
    folder = root / exchange / to_exchange(unified)
    parse_timeframe(timeframe)
    series = list_series(exchange, unified, root)
    lo = to_utc(start) if start is not None else None
    hi = to_utc(end) if end is not None else None
    parts = {}
    for kind, names in (("mark", MARK_COLUMNS), ("ohlcv", ("open", "high", "low", "close"))):
        if timeframe in series[kind]:
            df = read_series(series_path(exchange, unified, kind, timeframe, root), kind,
                             timeframe=timeframe, start=lo, end=hi, warn_gaps=False)
            parts[kind] = df.set_index("time")[["open", "high", "low", "close"]].set_axis(list(names), axis=1)
    if not parts:
        raise DataError(f"no {timeframe} detail (mark-{timeframe}.parquet or ohlcv-{timeframe}.parquet) "
                        f"for {unified}; import it with `btperp data import-klines` or download it with "
                        f"`btperp fetch --timeframe {timeframe}`", path=str(folder))
    frame = pd.concat(list(parts.values()), axis=1).sort_index()
    frame.index.name = "time"
    frame.attrs.update({"symbol": unified, "exchange": exchange, "timeframe": timeframe,
                        "mark": "mark" in parts, "last": "ohlcv" in parts, "path": str(folder)})
    return frame


def _join_mark(ohlcv: pd.DataFrame, mark: pd.DataFrame, *, where: str) -> pd.DataFrame:
    first = max(ohlcv["time"].iloc[0], mark["time"].iloc[0])
    last = min(ohlcv["time"].iloc[-1], mark["time"].iloc[-1])
    if first > last:
        raise DataError(f"last prices ({ohlcv['time'].iloc[0]} to {ohlcv['time'].iloc[-1]}) and mark "
                        f"prices ({mark['time'].iloc[0]} to {mark['time'].iloc[-1]}) do not overlap",
                        path=where)
    bars = ohlcv.loc[(ohlcv["time"] >= first) & (ohlcv["time"] <= last)].set_index("time")
    marks = mark.loc[(mark["time"] >= first) & (mark["time"] <= last)].set_index("time")
    marks.columns = list(MARK_COLUMNS)
    orphan = ~marks.index.isin(bars.index)
    if orphan.any():
        warnings.warn(f"{where}: {int(orphan.sum())} mark bars have no last-price bar (first at "
                      f"{marks.index[orphan][0]}); dropped", DataWarning, stacklevel=3)
    frame = bars.join(marks, how="left")
    frame.index.name = "time"
    missing = frame["mark_close"].isna().to_numpy()
    if missing.any():
        warnings.warn(f"{where}: {int(missing.sum())} bars have no mark price (first at "
                      f"{frame.index[missing][0]}); left NaN", DataWarning, stacklevel=3)
    return frame


def attach_funding(frame: pd.DataFrame, funding: pd.DataFrame, step: pd.Timedelta, *,
                   where: str, window: tuple[Any, Any] | None = None) -> pd.DataFrame:
    """Put each funding event on the bar whose ``[open, open + step)`` holds it (see module doc).

    Warned about (:class:`DataWarning`, count and first time), never silently dropped: events after
    the last bar (up to the window's end, if one is given) and before the first bar (from the
    window's start, only when one is given: data simply starting later is not news), and rates
    above :data:`btperp.funding.FUNDING_RATE_BOUND` in absolute value.
    """
    out = frame.copy()
    times = out.index
    ev_t = pd.DatetimeIndex(funding["time"])
    rates = funding["rate"].to_numpy(float)
    lo, hi = window if window is not None else (None, None)
    end = times[-1] + step
    after = ev_t >= end
    if hi is not None:
        after &= ev_t <= hi
    if after.any():
        warnings.warn(f"{where}: {int(after.sum())} funding events after the last bar "
                      f"({times[-1]}; first at {ev_t[after][0]}) are not attached: the price data ends "
                      f"before the funding data", DataWarning, stacklevel=3)
    if lo is not None:
        before = (ev_t < times[0]) & (ev_t >= lo)
        if before.any():
            warnings.warn(f"{where}: {int(before.sum())} funding events before the first bar "
                          f"({times[0]}; first at {ev_t[before][0]}) are not attached: the price data "
                          f"(last and mark) starts later", DataWarning, stacklevel=3)
    inside = (ev_t >= times[0]) & (ev_t < end)
    ev_t, rates = ev_t[inside], rates[inside]
    absurd = np.abs(rates) > FUNDING_RATE_BOUND
    if absurd.any():
        k = int(np.argmax(absurd))
        warnings.warn(f"{where}: {int(absurd.sum())} funding rates above {FUNDING_RATE_BOUND:.0%} a "
                      f"funding event in absolute value (first at {ev_t[k]}: {rates[k]:g} = "
                      f"{rates[k]:.0%}), beyond any exchange's cap; rates are fractions (0.0001 = "
                      f"0.01 %): check the file's units", DataWarning, stacklevel=3)
    pos = times.searchsorted(ev_t, side="right") - 1
    covered = (pos >= 0) & (ev_t < times[np.clip(pos, 0, None)] + step)
    if (~covered).any():
        warnings.warn(f"{where}: {int((~covered).sum())} funding events fall in gaps of the price "
                      f"data (first at {ev_t[~covered][0]}); not attached", DataWarning, stacklevel=3)
    ev_t, rates, pos = ev_t[covered], rates[covered], pos[covered]
    marks = out["mark_open"].to_numpy(float)[pos]
    per_unit = funding_payment(1.0, marks, rates)
    n = len(out)
    count = np.bincount(pos, minlength=n)
    has = count > 0
    out["funding_rate"] = np.where(has, np.bincount(pos, weights=rates, minlength=n), np.nan)
    last = pd.Series(ev_t, dtype="datetime64[ms, UTC]").groupby(pos).max()   # the bar's last event
    funding_time = pd.Series(pd.NaT, index=range(n), dtype="datetime64[ms, UTC]")
    funding_time.iloc[last.index.to_numpy()] = last.to_numpy()
    out["funding_time"] = funding_time.to_numpy()
    out["funding_events"] = count.astype(np.int64)
    # bincount would turn a NaN mark into a 0 payment: sum with NaN kept, then blank the empty bars
    summed = pd.Series(per_unit).groupby(pos).sum(min_count=1)
    out["funding_per_unit"] = np.nan
    out.iloc[summed.index.to_numpy(), out.columns.get_loc("funding_per_unit")] = summed.to_numpy()
    at_open = np.asarray(ev_t == times[pos])
    opening = pd.Series(per_unit[at_open]).groupby(pos[at_open]).sum(min_count=1)
    out["funding_open_per_unit"] = np.nan
    out.iloc[opening.index.to_numpy(), out.columns.get_loc("funding_open_per_unit")] = opening.to_numpy()
    return out


def resample(frame: pd.DataFrame, timeframe: str) -> pd.DataFrame:
    """The same frame on a coarser timeframe: OHLC and mark extremes kept, every funding event kept.

    Bins are aligned to UTC midnight; bins without any source bar are dropped (not filled).
    """
    step = parse_timeframe(timeframe)
    source = parse_timeframe(frame.attrs.get("timeframe") or timeframe_name(
        pd.Timedelta(frame.index[1] - frame.index[0])))
    if step % source != pd.Timedelta(0) or step < source:
        raise DataError(f"cannot resample {timeframe_name(source)} bars to {timeframe}: the target must "
                        f"be a multiple of the source")
    rule = {"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum",
            "mark_open": "first", "mark_high": "max", "mark_low": "min", "mark_close": "last",
            "funding_time": "max", "funding_events": "sum"}
    groups = frame.resample(step, label="left", closed="left", origin="epoch")
    out = groups.agg(rule)
    out["funding_rate"] = groups["funding_rate"].sum(min_count=1)
    out["funding_per_unit"] = groups["funding_per_unit"].sum(min_count=1)
    # events at the coarse bar's open: those at the open of its first source bar, if that bar
    # starts the coarse bar (a gap at the start leaves none)
    first_time = frame.index.to_series().resample(step, label="left", closed="left", origin="epoch").first()
    first_open = groups["funding_open_per_unit"].first()
    out["funding_open_per_unit"] = first_open.where(first_time == first_time.index)
    counts = groups["close"].count()
    out = out.loc[counts.to_numpy() > 0, list(FRAME_COLUMNS)]
    out["funding_events"] = out["funding_events"].astype(np.int64)
    out.index.name = "time"
    out.attrs = {**frame.attrs, "timeframe": timeframe}
    return out


def _record_coverage(frame: pd.DataFrame) -> None:
    step = parse_timeframe(frame.attrs["timeframe"])
    gaps = find_gaps(frame.index, step)
    frame.attrs.update({
        "gaps": gaps.count, "missing_bars": gaps.missing_bars,
        "first_gap": None if gaps.first is None else str(gaps.first),
        "mark_coverage": float(frame["mark_close"].notna().mean()) if len(frame) else 0.0,
        "funding_events": int(frame["funding_events"].sum()),
    })


def summary(frame: pd.DataFrame) -> str:
    """One line: symbol, timeframe, bars, range, gaps, mark coverage, funding events."""
    a = frame.attrs
    gaps = "no gaps" if not a.get("gaps") else f"{a['gaps']} gaps ({a['missing_bars']} missing bars, first at {a['first_gap']})"
    return (f"{a.get('symbol')} {a.get('exchange')} {a.get('timeframe')}: {len(frame):,} bars "
            f"{frame.index[0]:%Y-%m-%d %H:%M} → {frame.index[-1]:%Y-%m-%d %H:%M} UTC, {gaps}, "
            f"mark {a.get('mark_coverage', 0) * 100:.1f} %, {a.get('funding_events', 0):,} funding events")
