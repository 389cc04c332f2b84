"""Argument types of the command line: each checks one kind of value where it is typed, so a bad
value is refused by argparse with the argument's name, what was expected, and exit status 2.

Paths are checked for what the command will do with them (read a file, read a folder, write a
file, write into a folder); dates go through the one date parser (:func:`btperp.times.to_utc`).
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

from ..errors import InputError

#: The highest taker (or maker) fee rate btperp accepts: a fraction, and no perpetuals exchange
#: charges 1 % a trade (Binance, Bybit and OKX's standard taker rates are 0.02 % to 0.06 %).
MAX_FEE_RATE = 0.01


def _fail(message: str):
    raise argparse.ArgumentTypeError(message)


def _number(text: str) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        _fail(f"{text!r} is not a number")
    if not math.isfinite(value):
        _fail(f"{text!r} is not a finite number")
    return value


def positive_float(text: str) -> float:
    value = _number(text)
    if not value > 0:
        _fail(f"must be a positive number, got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    value = _number(text)
    if value < 0:
        _fail(f"must be zero or more, got {text!r}")
    return value


def finite_float(text: str) -> float:
    return _number(text)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except (TypeError, ValueError):
        _fail(f"{text!r} is not a whole number")
    if value < 1:
        _fail(f"must be 1 or more, got {text!r}")
    return value


def percent(text: str) -> float:
    value = _number(text)
    if not 0 < value <= 100:
        _fail(f"must be a percent above 0 and at most 100, got {text!r}")
    return value


def fee_rate(text: str) -> float:
    """A fee rate as a fraction: 0.0005 is 0.05 %. 5 (500 %) or 0.05 (5 %) is a mistake."""
    value = _number(text)
    if value < 0:
        _fail(f"must be zero or more, got {text!r} (maker rebates are not modelled for takers)")
    if value >= MAX_FEE_RATE:
        _fail(f"{text!r} is {value * 100:g} % a trade; give the rate as a fraction below "
              f"{MAX_FEE_RATE:g} ({MAX_FEE_RATE * 100:g} %), e.g. 0.0005 for 0.05 %")
    return value


def mmr(text: str) -> float:
    value = _number(text)
    if not 0 < value < 1:
        _fail(f"must be a fraction above 0 and below 1 (0.004 = 0.4 %), got {text!r}")
    return value


def utc_time(text: str) -> str:
    """A date or time (UTC); the text is kept as given (a bare date as an end means the whole day)."""
    from ..times import to_utc
    try:
        to_utc(text)
    except InputError as exc:
        _fail(str(exc))
    return text.strip()


# --- paths ---------------------------------------------------------------------------------------

def _blocking_ancestor(path: Path) -> Path | None:
    """The first existing ancestor of ``path`` that is not a folder (a file where a folder should be)."""
    for parent in path.parents:
        if parent.exists():
            return None if parent.is_dir() else parent
    return None


def input_file(text: str) -> str:
    """A file to read: it must exist, be a file (not a folder) and be readable."""
    if not text.strip():
        _fail("empty path; expected a file")
    path = Path(text)
    if not path.exists():
        blocked = _blocking_ancestor(path)
        _fail(f"{text}: no such file" + (f" ({blocked} is a file, not a folder)" if blocked else ""))
    if path.is_dir():
        _fail(f"{text} is a folder; expected a file")
    if not path.is_file():
        _fail(f"{text} is not a regular file")
    if not os.access(path, os.R_OK):
        _fail(f"{text}: permission denied (cannot read it)")
    return text


def input_dir(text: str) -> str:
    """A folder to read: it must exist and be a folder."""
    if not text.strip():
        _fail("empty path; expected a folder")
    path = Path(text)
    if not path.exists():
        _fail(f"{text}: no such folder")
    if not path.is_dir():
        _fail(f"{text} is a file; expected a folder")
    if not os.access(path, os.R_OK | os.X_OK):
        _fail(f"{text}: permission denied (cannot read it)")
    return text


def output_file(text: str) -> str:
    """A file to write: not a folder, and no file where one of its folders should be."""
    if not text.strip():
        _fail("empty path; expected a file to write")
    path = Path(text)
    if path.is_dir():
        _fail(f"{text} is a folder; expected a file name to write (e.g. {Path(text) / 'plot.png'})")
    _writable_parent(text, path)
    return text


def output_dir(text: str) -> str:
    """A folder to write into (created if missing): not a file, and none of its parents a file."""
    if not text.strip():
        _fail("empty path; expected a folder")
    path = Path(text)
    if path.exists() and not path.is_dir():
        _fail(f"{text} is a file; expected a folder (it is created if missing)")
    _writable_parent(text, path / "x")
    return text


def data_dir(text: str) -> str:
    """A datasets folder: read by most commands, written by imports and fetch."""
    return output_dir(text)


def _writable_parent(text: str, path: Path) -> None:
    blocked = _blocking_ancestor(path)
    if blocked is not None:
        _fail(f"cannot write {text}: {blocked} is a file, not a folder")
    for parent in path.parents:
        if parent.exists():
            if not os.access(parent, os.W_OK | os.X_OK):
                _fail(f"cannot write {text}: permission denied in {parent}")
            return


def existing_path(text: str) -> str:
    """A file or folder to read (a run's history folder, or one history file)."""
    if not text.strip():
        _fail("empty path")
    path = Path(text)
    if not path.exists():
        blocked = _blocking_ancestor(path)
        _fail(f"{text}: no such file or folder" + (f" ({blocked} is a file)" if blocked else ""))
    if not os.access(path, os.R_OK):
        _fail(f"{text}: permission denied (cannot read it)")
    return text
