"""Import kline CSV files (Binance's public kline exports) into the datasets layout.

Binance publishes monthly and daily kline files for USDⓈ-M futures, last price (``klines``) and mark
price (``markPriceKlines``), as CSV: ``open_time, open, high, low, close, volume, close_time, ...``
(open time in milliseconds since the epoch, UTC), with a header line in recent files and without
one in older files. Only the open time and the prices (and the volume for last-price klines) are
kept. Rows already stored for the same series are kept where the file has none, replaced where it
has them; the merged series is validated and written atomically.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from ..errors import DataError
from ..symbols import to_unified
from .market import parse_timeframe, read_series, series_path, write_series
from .paths import datasets_dir

#: Positional columns of a headerless Binance kline file.
_BINANCE = ("open_time", "open", "high", "low", "close", "volume")
_TIME_NAMES = ("open_time", "open_time_ms", "time", "timestamp")


def read_klines(path: "str | os.PathLike[str]", kind: str) -> pd.DataFrame:
    """A kline CSV as a series frame of ``kind`` (``ohlcv`` or ``mark``): time plus prices."""
    path = Path(path)
    if kind not in ("ohlcv", "mark"):
        raise DataError(f"kind must be 'ohlcv' or 'mark', got {kind!r}", path=str(path))
    try:
        first = path.open(encoding="utf-8").readline()
        header = not first.split(",")[0].strip().lstrip("-").isdigit()
        raw = pd.read_csv(path, header=0 if header else None)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"not a readable kline CSV: {exc}", path=str(path)) from None
    if not header:
        raw = raw.iloc[:, :len(_BINANCE)]
        raw.columns = list(_BINANCE[:raw.shape[1]])
    time_col = next((c for c in _TIME_NAMES if c in raw.columns), None)
    if time_col is None:
        raise DataError(f"no open-time column ({', '.join(_TIME_NAMES)}); found "
                        f"{', '.join(map(str, raw.columns))}", path=str(path), column="open_time")
    ms = pd.to_numeric(raw[time_col], errors="coerce")
    if ms.isna().any():
        row = int(ms.isna().to_numpy().argmax())
        raise DataError(f"open time is not a number of milliseconds at row {row + 1}",
                        path=str(path), column=time_col)
    df = raw.drop(columns=[time_col]).assign(time=pd.to_datetime(ms.astype("int64"), unit="ms", utc=True))
    if kind == "ohlcv" and "volume" not in df.columns:
        raise DataError("last-price klines need a volume column", path=str(path), column="volume")
    return df


def import_klines(path: "str | os.PathLike[str]", *, symbol: str, kind: str, timeframe: str,
                  exchange: str = "binance-usdm", datadir: "str | os.PathLike[str] | None" = None) -> dict:
    """Convert one kline CSV into ``DATADIR/EXCHANGE/SYMBOL/<kind>-<timeframe>.parquet``, merged
    with the rows already stored there; returns a summary row."""
    parse_timeframe(timeframe)
    unified = to_unified(symbol)
    new = read_klines(path, kind)
    dst = series_path(exchange, unified, kind, timeframe, datasets_dir(datadir))
    if dst.is_file():
        old = read_series(dst, kind, timeframe=timeframe, warn_gaps=False)
        merged = pd.concat([old[~old["time"].isin(new["time"])], new], ignore_index=True)
        new = merged.sort_values("time", kind="stable").reset_index(drop=True)
    meta = {"exchange": exchange, "symbol": unified, "timeframe": timeframe,
            "source": f"kline CSV {Path(path).name}"}
    write_series(new, dst, kind, meta=meta)
    return {"symbol": unified, "kind": kind, "timeframe": timeframe, "rows": len(new),
            "first": str(new["time"].iloc[0]), "last": str(new["time"].iloc[-1]), "path": str(dst)}


__all__ = ["read_klines", "import_klines"]
