"""The datasets layout: one Parquet file per series, validated on the way in and on the way out.

::

    datasets/<exchange>/<SYMBOL>/ohlcv-<timeframe>.parquet   time, open, high, low, close, volume
    datasets/<exchange>/<SYMBOL>/mark-<timeframe>.parquet    time, open, high, low, close
    datasets/<exchange>/<SYMBOL>/funding.parquet             time, rate
    datasets/<exchange>/tier_history.json                    see btperp.io.tierfile

``SYMBOL`` is the exchange spelling (``BTCUSDT``; coin-margined ``BTCUSD``). ``time`` is
``timestamp[ms, UTC]``, the bar's open time (funding: the event time floored to the second); prices
in the quote currency (USDT; USD for coin-margined contracts), volume in base units (the coin),
rate a fraction per funding event. Files are zstd-compressed and written atomically; the Parquet
metadata key ``btperp`` holds the series' exchange, symbol, kind, timeframe and source, and for
fetched series the ``contract`` (:func:`contract_meta`).

Coin-margined (inverse) exchanges (:data:`COIN_MARGINED`) name their symbols ``BTC/USD:BTC``
(quoted in USD, settled in the coin); :func:`dataset_symbol` reads a user's spelling for the
exchange it is asked of.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import DataError, DataWarning, InputError
from ..symbols import to_exchange, to_inverse, to_unified
from ..times import to_utc  # noqa: F401  (re-exported: io.market.to_utc)
from .atomic import atomic_path
from .paths import datasets_dir

PRICE_COLUMNS = ("open", "high", "low", "close")
COLUMNS = {"ohlcv": PRICE_COLUMNS + ("volume",), "mark": PRICE_COLUMNS, "funding": ("rate",)}
SCHEMAS = {
    kind: pa.schema([pa.field("time", pa.timestamp("ms", tz="UTC"), nullable=False)]
                    + [pa.field(c, pa.float64(), nullable=False) for c in cols])
    for kind, cols in COLUMNS.items()
}
ZSTD_LEVEL = 9

#: btperp's coin-margined (inverse) exchanges, whose datasets hold ``BASE/USD:BASE`` symbols, and
#: the linear exchange of the same venue.
COIN_MARGINED = {"binance-coinm": "binance-usdm", "bybit-inverse": "bybit", "okx-inverse": "okx"}


def is_coin_margined(exchange: str) -> bool:
    return exchange in COIN_MARGINED


def dataset_symbol(symbol: str, exchange: str) -> str:
    """``symbol`` in ccxt's unified form for ``exchange``'s datasets: ``BTC/USD:BTC`` on a
    coin-margined exchange (``BTCUSD``, ``BTCUSD_PERP``, ``BTC-USD-SWAP`` read so; a linear
    symbol there is an :class:`~btperp.errors.InputError` naming ``symbol``), else ``BTC/USDT:USDT``."""
    if is_coin_margined(exchange):
        try:
            return to_inverse(symbol, field="symbol")
        except InputError:
            raise InputError(f"{symbol!r} is not a coin-margined symbol; {exchange} has coin-margined "
                             f"perpetuals (quoted in USD, settled in the coin: BTCUSD, BTC/USD:BTC), "
                             f"linear ones are on {COIN_MARGINED[exchange]}", field="symbol") from None
    return to_unified(symbol)


def contract_meta(market: dict) -> dict:
    """What a dataset records of its contract, from a ccxt market: ``type`` (linear or inverse),
    ``size`` and ``size_unit`` (ccxt's ``contractSize``: USD a contract for inverse contracts,
    base units for linear ones), ``settle`` (the margin currency) and the exchange's ``id``."""
    inverse = bool(market.get("inverse"))
    size = market.get("contractSize")
    return {"type": "inverse" if inverse else "linear",
            "size": None if size is None else float(size),
            "size_unit": market.get("quote") if inverse else market.get("base"),
            "settle": market.get("settle"), "id": market.get("id")}


_TIMEFRAME = re.compile(r"^(\d+)([mhdw])$")
_UNITS = {"m": "min", "h": "h", "d": "D", "w": "W"}


def parse_timeframe(timeframe: str) -> pd.Timedelta:
    """``1m``, ``15m``, ``1h``, ``4h``, ``1d``, ``1w`` → a Timedelta (ccxt's spelling)."""
    match = _TIMEFRAME.match(str(timeframe).strip())
    if not match or int(match[1]) == 0:
        raise DataError(f"unknown timeframe {timeframe!r}; use e.g. 1m, 5m, 1h, 4h, 1d")
    return pd.Timedelta(int(match[1]), unit=_UNITS[match[2]])


def timeframe_name(delta: pd.Timedelta) -> str:
    """The inverse of :func:`parse_timeframe`: 3600 s → ``1h``."""
    seconds = int(delta.total_seconds())
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    raise DataError(f"timeframe of {seconds} s is not a whole number of minutes")


def series_path(exchange: str, symbol: str, kind: str, timeframe: str | None = None,
                root: "str | os.PathLike[str] | None" = None) -> Path:
    folder = datasets_dir(root) / exchange / to_exchange(symbol)
    return folder / ("funding.parquet" if kind == "funding" else f"{kind}-{timeframe}.parquet")


# --- validation -------------------------------------------------------------------------------------

def _first(mask: np.ndarray, times: pd.Series | pd.DatetimeIndex) -> Any:
    return pd.Timestamp(np.asarray(times)[np.argmax(mask)]) if mask.any() else None


def _raise(message: str, where: str, mask: np.ndarray, times, column: str | None = None) -> None:
    raise DataError(message, path=where, column=column, count=int(mask.sum()), timestamp=_first(mask, times))


@dataclass(frozen=True)
class Gaps:
    """Missing bars on a series' timeframe grid."""

    count: int
    """Number of gaps (runs of missing bars)."""
    missing_bars: int
    first: pd.Timestamp | None
    """Time of the first missing bar."""

    def describe(self) -> str:
        if not self.count:
            return "no gaps"
        return f"{self.count} gaps ({self.missing_bars} missing bars, first at {self.first})"


def find_gaps(times: pd.DatetimeIndex | pd.Series, step: pd.Timedelta) -> Gaps:
    t = pd.DatetimeIndex(times).as_unit("ns")
    if len(t) < 2:
        return Gaps(0, 0, None)
    diffs = np.diff(t.asi8)
    unit = step.value                                   # nanoseconds, like asi8 after as_unit("ns")
    gap = diffs > unit
    if not gap.any():
        return Gaps(0, 0, None)
    missing = int(((diffs[gap] // unit) - 1).sum())
    first = t[np.argmax(gap)] + step
    return Gaps(int(gap.sum()), missing, first)


def validate_series(df: pd.DataFrame, kind: str, *, where: str, timeframe: str | None = None,
                    warn_gaps: bool = True) -> pd.DataFrame:
    """Check a series frame (a ``time`` column plus the kind's columns); return it normalized.

    Errors (:class:`DataError`, with the file, column, count and first offending time): a missing
    column, naive or unparseable timestamps, unsorted or duplicated times, NaN values, non-positive
    prices, ``high < low`` or open/close outside the bar, times off the timeframe grid. Gaps are not
    an error: a :class:`DataWarning` with their count and the first missing bar (nothing is filled).
    """
    needed = ("time",) + COLUMNS[kind]
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise DataError(f"missing column(s) {', '.join(missing)}; found {', '.join(map(str, df.columns))}",
                        path=where, column=missing[0])
    times = df["time"]
    if not isinstance(times.dtype, pd.DatetimeTZDtype):
        if pd.api.types.is_datetime64_dtype(times.dtype):
            raise DataError("naive timestamps (no time zone); store UTC times", path=where, column="time")
        raise DataError(f"timestamps expected, found {times.dtype}", path=where, column="time")
    out = df.loc[:, list(needed)].copy()
    out["time"] = times.dt.tz_convert("UTC").astype("datetime64[ms, UTC]")
    t = out["time"]
    nat = t.isna().to_numpy()
    if nat.any():
        raise DataError("missing timestamps", path=where, column="time", count=int(nat.sum()))
    ns = pd.DatetimeIndex(t).as_unit("ms").asi8                   # milliseconds since the epoch
    back = np.r_[False, np.diff(ns) < 0]
    if back.any():
        _raise("timestamps not sorted", where, back, t, "time")
    dup = np.r_[False, np.diff(ns) == 0]
    if dup.any():
        _raise("duplicated timestamps", where, dup, t, "time")
    for col in COLUMNS[kind]:
        values = pd.to_numeric(out[col], errors="coerce").astype(float)
        bad = ~np.isfinite(values.to_numpy())
        if bad.any():
            _raise("NaN or non-numeric values", where, bad, t, col)
        out[col] = values
        if col in PRICE_COLUMNS:
            nonpos = values.to_numpy() <= 0
            if nonpos.any():
                _raise("non-positive prices", where, nonpos, t, col)
    if kind != "funding":
        hi, lo = out["high"].to_numpy(), out["low"].to_numpy()
        inverted = hi < lo
        if inverted.any():
            _raise("high below low", where, inverted, t, "high")
        outside = (out["open"].to_numpy() > hi) | (out["open"].to_numpy() < lo) | \
                  (out["close"].to_numpy() > hi) | (out["close"].to_numpy() < lo)
        if outside.any():
            _raise("open or close outside the bar's high-low range", where, outside, t)
        if kind == "ohlcv":
            negative = out["volume"].to_numpy() < 0
            if negative.any():
                _raise("negative volume", where, negative, t, "volume")
        if timeframe:
            step = parse_timeframe(timeframe)
            off = (ns % (step.value // 1_000_000)) != 0 if step < pd.Timedelta(days=7) else np.zeros(len(ns), bool)
            if off.any():
                _raise(f"times off the {timeframe} grid (misaligned bars)", where, off, t, "time")
            if warn_gaps:
                gaps = find_gaps(t, step)
                if gaps.count:
                    warnings.warn(f"{where}: {gaps.describe()}; not filled", DataWarning, stacklevel=3)
    return out.reset_index(drop=True)


def floor_funding_times(df: pd.DataFrame) -> pd.DataFrame:
    """Exchange funding times can be a few ms after the hour: floor them to the second."""
    out = df.copy()
    out["time"] = out["time"].dt.floor("s")
    return out


# --- reading and writing -----------------------------------------------------------------------------

def write_series(df: pd.DataFrame, path: "str | os.PathLike[str]", kind: str, *, meta: dict) -> Path:
    """Validate and write one series atomically (zstd Parquet, ``btperp`` metadata)."""
    clean = validate_series(df, kind, where=str(path), timeframe=meta.get("timeframe"), warn_gaps=False)
    table = pa.Table.from_pandas(clean, schema=SCHEMAS[kind], preserve_index=False)
    table = table.replace_schema_metadata({"btperp": json.dumps({"kind": kind, **meta}, sort_keys=True)})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd", compression_level=ZSTD_LEVEL)
    return Path(path)


def read_series(path: "str | os.PathLike[str]", kind: str, *, timeframe: str | None = None,
                start: Any = None, end: Any = None, warn_gaps: bool = True) -> pd.DataFrame:
    """Read and validate one series file, optionally only ``start <= time <= end``."""
    if not Path(path).is_file():
        raise DataError("no such file", path=str(path))
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"not a readable Parquet file: {exc}", path=str(path)) from None
    df = table.to_pandas()
    if start is not None or end is not None:
        if "time" in df.columns and isinstance(df["time"].dtype, pd.DatetimeTZDtype):
            lo = to_utc(start) if start is not None else None
            hi = to_utc(end) if end is not None else None
            keep = np.ones(len(df), bool)
            if lo is not None:
                keep &= (df["time"] >= lo).to_numpy()
            if hi is not None:
                keep &= (df["time"] <= hi).to_numpy()
            df = df.loc[keep]
    return validate_series(df, kind, where=str(path), timeframe=timeframe, warn_gaps=warn_gaps)


def read_meta(path: "str | os.PathLike[str]") -> dict:
    meta = pq.read_schema(path).metadata or {}
    raw = meta.get(b"btperp")
    return json.loads(raw) if raw else {}


def inclusive_end(end: Any) -> Any:
    """An end given as a date (``2024-12-31``) includes that whole day, as pandas' ``.loc`` does."""
    if isinstance(end, str) and len(end.strip()) == 10:
        return end.strip() + " 23:59:59.999"
    return end


def list_series(exchange: str, symbol: str, root: "str | os.PathLike[str] | None" = None) -> dict[str, list[str]]:
    """Which series a symbol has: ``{"ohlcv": ["1h"], "mark": ["1h"], "funding": [""]}``."""
    folder = datasets_dir(root) / exchange / to_exchange(symbol)
    found: dict[str, list[str]] = {"ohlcv": [], "mark": [], "funding": []}
    if not folder.is_dir():
        return found
    for f in sorted(folder.glob("*.parquet")):
        if f.name == "funding.parquet":
            found["funding"].append("")
            continue
        kind, _, tf = f.stem.partition("-")
        if kind in ("ohlcv", "mark") and _TIMEFRAME.match(tf):
            found[kind].append(tf)
    for kind in ("ohlcv", "mark"):
        found[kind].sort(key=lambda tf: parse_timeframe(tf))
    return found
