"""UTC times as btperp passes them around: int64 milliseconds since 1970, shown to the minute. Pure core."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd


def to_utc(when: Any) -> pd.Timestamp:
    """A date, string or Timestamp as a UTC Timestamp (naive input is taken as UTC)."""
    ts = pd.Timestamp(when)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def to_ms(when: Any) -> int:
    """Milliseconds since 1970 (UTC) of a date, string or Timestamp."""
    return int(to_utc(when).value // 1_000_000)          # Timestamp.value is in nanoseconds


def utc_minute(ms: int) -> str:
    """``2024-01-01 00:00`` for a time in milliseconds."""
    return np.datetime64(int(ms), "ms").astype(str)[:16].replace("T", " ")


__all__ = ["to_utc", "to_ms", "utc_minute"]
