"""UTC times as btperp passes them around: int64 milliseconds since 1970, shown to the minute. Pure core."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from .errors import InputError

#: What a date or time argument may look like (said in every error about one).
TIME_FORMATS = "a UTC date or time such as 2024-01-31, '2024-01-31 08:00' or 2024-01-31T08:00:00Z"


def to_utc(when: Any, field: str | None = None) -> pd.Timestamp:
    """A date, string or Timestamp as a UTC Timestamp (naive input is taken as UTC).

    The one place btperp parses times: anything that is not a real date (``notadate``,
    ``2024-02-30``, ``2024-13-01``, an empty string, a year pandas cannot hold) is an
    :class:`InputError` naming ``field`` and what was expected.
    """
    try:
        ts = pd.Timestamp(when.strip() if isinstance(when, str) else when)
    except (ValueError, TypeError, OverflowError) as exc:
        detail = str(exc).split("\n")[0].split(":")[0].strip() or type(exc).__name__
        raise InputError(f"{when!r} is not a date ({detail}); expected {TIME_FORMATS}",
                         field=field) from None
    if ts is pd.NaT or pd.isna(ts):
        raise InputError(f"{when!r} is not a date; expected {TIME_FORMATS}", field=field)
    if not 1970 <= ts.year <= 2261:
        raise InputError(f"{when!r} is outside the years 1970 to 2261 btperp handles", field=field)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def to_ms(when: Any, field: str | None = None) -> int:
    """Milliseconds since 1970 (UTC) of a date, string or Timestamp."""
    return int(to_utc(when, field).as_unit("ns").value // 1_000_000)          # Timestamp.value is in nanoseconds


def utc_minute(ms: int) -> str:
    """``2024-01-01 00:00`` for a time in milliseconds."""
    return np.datetime64(int(ms), "ms").astype(str)[:16].replace("T", " ")


__all__ = ["to_utc", "to_ms", "utc_minute"]
