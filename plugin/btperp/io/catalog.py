"""What the datasets hold: ``btperp data list`` and ``btperp data info``."""

from __future__ import annotations

import os
from collections import Counter

import pandas as pd
import pyarrow.parquet as pq

from ..errors import DataError
from ..symbols import to_exchange
from .loader import available_exchanges, available_symbols, contract_info
from .market import dataset_symbol, find_gaps, list_series, parse_timeframe, read_series, series_path
from .paths import datasets_dir
from .tierfile import TierHistoryFile


def list_datasets(root: "str | os.PathLike[str] | None" = None) -> list[dict]:
    """One row per exchange and symbol: its series and row counts (from Parquet metadata only)."""
    base = datasets_dir(root)
    rows = []
    for exchange in available_exchanges(base):
        for symbol in available_symbols(exchange, base):
            series = list_series(exchange, symbol, base)
            counts = {}
            for kind in ("ohlcv", "mark"):
                for tf in series[kind]:
                    counts[f"{kind}-{tf}"] = pq.ParquetFile(series_path(exchange, symbol, kind, tf, base)).metadata.num_rows
            if series["funding"]:
                counts["funding"] = pq.ParquetFile(series_path(exchange, symbol, "funding", root=base)).metadata.num_rows
            rows.append({"exchange": exchange, "symbol": symbol, "series": counts})
    return rows


def _describe(df: pd.DataFrame, timeframe: str | None) -> dict:
    t = df["time"]
    out = {"rows": len(df), "first": str(t.iloc[0]) if len(df) else None,
           "last": str(t.iloc[-1]) if len(df) else None}
    if timeframe and len(df):
        gaps = find_gaps(t, parse_timeframe(timeframe))
        out.update({"gaps": gaps.count, "missing_bars": gaps.missing_bars,
                    "first_missing": None if gaps.first is None else str(gaps.first)})
    return out


def dataset_info(symbol: str, exchange: str = "binance-usdm",
                 root: "str | os.PathLike[str] | None" = None) -> dict:
    """Rows, range and gaps of every series, funding intervals, mark coverage and tier versions."""
    base = datasets_dir(root)
    unified = dataset_symbol(symbol, exchange)
    series = list_series(exchange, unified, base)
    if not any(series.values()):
        raise DataError(f"no data for symbol {symbol!r} on {exchange}; available: "
                        f"{', '.join(available_symbols(exchange, base)) or 'none'}",
                        path=str(base / exchange))
    info: dict = {"exchange": exchange, "symbol": unified, "folder": str(base / exchange / to_exchange(unified)),
                  "series": {}}
    frames = {}
    for kind in ("ohlcv", "mark"):
        for tf in series[kind]:
            df = read_series(series_path(exchange, unified, kind, tf, base), kind, timeframe=tf, warn_gaps=False)
            frames[(kind, tf)] = df
            info["series"][f"{kind}-{tf}"] = _describe(df, tf)
    for tf in series["ohlcv"]:
        if ("mark", tf) in frames:
            bars = pd.DatetimeIndex(frames[("ohlcv", tf)]["time"])
            marks = pd.DatetimeIndex(frames[("mark", tf)]["time"])
            info["series"][f"ohlcv-{tf}"]["mark_coverage"] = float(bars.isin(marks).mean()) if len(bars) else 0.0
    if series["funding"]:
        funding = read_series(series_path(exchange, unified, "funding", root=base), "funding")
        intervals = Counter(pd.DatetimeIndex(funding["time"]).to_series().diff().dropna()
                            .dt.total_seconds().div(3600).round(3))
        info["funding"] = {**_describe(funding, None),
                           "interval_hours": {f"{h:g}": n for h, n in sorted(intervals.items())},
                           "rate_min": float(funding["rate"].min()), "rate_max": float(funding["rate"].max())}
    tiers = TierHistoryFile.bundled(exchange, base)
    history = tiers.history(unified) if tiers else None
    info["tier_versions"] = [d.strftime("%Y-%m-%d") for d in history.change_times()] if history else []
    info["contract"] = contract_info(unified, exchange, datadir=base)
    return info
