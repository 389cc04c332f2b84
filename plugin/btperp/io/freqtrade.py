"""Import freqtrade's futures data (feather files) into the datasets layout.

freqtrade names them ``<BASE>_<QUOTE>_<SETTLE>-<timeframe>-<candle type>.feather`` with the
candle types ``futures`` (last price), ``mark`` and ``funding_rate`` (the rate in ``open``; the
timeframe in the name is the downloader's, the rows are the funding events).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd

from ..errors import DataError
from .market import floor_funding_times, series_path, validate_series, write_series
from .paths import datasets_dir

_NAME = re.compile(r"^(?P<base>[A-Z0-9]+)_(?P<quote>[A-Z0-9]+)_(?P<settle>[A-Z0-9]+)-(?P<tf>\d+[mhdw])-"
                   r"(?P<kind>futures|mark|funding_rate)\.feather$")
KINDS = {"futures": "ohlcv", "mark": "mark", "funding_rate": "funding"}


def scan(folder: "str | os.PathLike[str]") -> dict[str, dict[str, Path]]:
    """``{"BTC/USDT:USDT": {"futures-1h": path, "mark-1h": path, "funding_rate": path}}``."""
    found: dict[str, dict[str, Path]] = {}
    for path in sorted(Path(folder).rglob("*.feather")):
        m = _NAME.match(path.name)
        if not m:
            continue
        symbol = f"{m['base']}/{m['quote']}:{m['settle']}"
        key = "funding_rate" if m["kind"] == "funding_rate" else f"{m['kind']}-{m['tf']}"
        found.setdefault(symbol, {})[key] = path
    return found


def _read(path: Path, kind: str, timeframe: str | None) -> pd.DataFrame:
    try:
        raw = pd.read_feather(path)
    except Exception as exc:                       # pyarrow raises several types for a bad file
        raise DataError(f"not a readable feather file: {exc}", path=str(path)) from None
    if "date" not in raw.columns:
        raise DataError("missing column 'date'", path=str(path), column="date")
    df = raw.rename(columns={"date": "time"})
    if kind == "funding":
        if "open" not in df.columns:
            raise DataError("missing column 'open' (freqtrade stores the funding rate there)",
                            path=str(path), column="open")
        df = floor_funding_times(df.rename(columns={"open": "rate"}))
    return validate_series(df, kind, where=str(path), timeframe=timeframe)


def import_freqtrade(folder: "str | os.PathLike[str]", *, exchange: str = "binance-usdm",
                     datadir: "str | os.PathLike[str] | None" = None, symbols: list[str] | None = None,
                     progress=None) -> list[dict]:
    """Convert every freqtrade futures file in ``folder``; returns one summary row per file written.

    All inputs are read and validated before anything is written, and each file is written
    atomically: a failing conversion leaves no partial file.
    """
    root = datasets_dir(datadir)
    found = scan(folder)
    if symbols:
        found = {s: v for s, v in found.items() if s in symbols}
    if not found:
        raise DataError("no freqtrade futures files (<BASE>_<QUOTE>_<SETTLE>-<tf>-futures|mark|"
                        "funding_rate.feather) found", path=str(folder))
    jobs = []
    for symbol, files in sorted(found.items()):
        for key, path in sorted(files.items()):
            candle, _, tf = key.partition("-")
            kind = KINDS[candle]
            jobs.append((symbol, kind, tf or None, path))
    frames = []
    for symbol, kind, tf, path in (progress(jobs) if progress else jobs):
        frames.append((symbol, kind, tf, path, _read(path, kind, tf)))
    written = []
    for symbol, kind, tf, path, df in frames:
        dst = series_path(exchange, symbol, kind, tf, root)
        meta = {"exchange": exchange, "symbol": symbol, "timeframe": tf,
                "source": f"freqtrade {path.name}"}
        write_series(df, dst, kind, meta=meta)
        written.append({"symbol": symbol, "kind": kind, "timeframe": tf, "rows": len(df),
                        "first": str(df["time"].iloc[0]) if len(df) else None,
                        "last": str(df["time"].iloc[-1]) if len(df) else None, "path": str(dst)})
    return written
