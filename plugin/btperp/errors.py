"""Error and warning classes. Every error names what was wrong and where (file, row, tier, field)."""

from __future__ import annotations


class BtperpError(Exception):
    """Base class of every error btperp raises on purpose."""


class BtperpWarning(UserWarning):
    """Base class of btperp's warnings."""


# --- tier tables -------------------------------------------------------------------------------

class TierTableError(BtperpError, ValueError):
    """A leverage-tier table is malformed.

    ``tier`` is the 1-based tier number (or None for the whole table), ``field`` the offending
    field in ccxt's spelling (``minNotional``, ``maintenanceMarginRate``, ...), ``source`` where the
    table came from (a file, a symbol, a snapshot date).
    """

    def __init__(self, message: str, *, tier: int | None = None, field: str | None = None,
                 source: str | None = None):
        where = []
        if source:
            where.append(source)
        if tier is not None:
            where.append(f"tier {tier}")
        if field:
            where.append(f"field {field!r}")
        prefix = ", ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)
        self.tier, self.field, self.source = tier, field, source


class TierGapError(TierTableError):
    """A tier's minNotional is above the previous tier's maxNotional (notionals in between have no tier)."""


class TierOverlapError(TierTableError):
    """A tier's minNotional is below the previous tier's maxNotional (notionals in two tiers)."""


class TierOrderError(TierTableError):
    """Tiers are not sorted by notional (or their numbers are not 1, 2, 3, ...)."""


class TierRateError(TierTableError):
    """The maintenance margin rate decreases from one tier to the next."""


class TierLeverageError(TierTableError):
    """The maximum leverage increases from one tier to the next."""


class TierValueError(TierTableError):
    """A value is missing, NaN, negative, or otherwise out of range."""


class TierAmountError(TierTableError):
    """A published maintenance amount (``cum`` / ``mmDeduction``) disagrees with its derivation."""


class EarliestTableAssumed(BtperpWarning):
    """A date before the first known tier table was given; the earliest known table is used."""


# --- positions and accounts --------------------------------------------------------------------

class InputError(BtperpError, ValueError):
    """A position or account description is invalid. ``field`` names the offending field."""

    def __init__(self, message: str, *, field: str | None = None):
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field


class UnknownExchangeError(InputError):
    """An exchange name that has no rulebook."""


class LeverageError(InputError):
    """The leverage is above what the tier of the position's notional allows."""


class AlreadyLiquidatedError(InputError):
    """The position or account is already at or past its liquidation point at the given mark price."""


# --- data ---------------------------------------------------------------------------------------

class DataError(BtperpError, ValueError):
    """Market data is malformed. ``path`` names the file, ``row``/``timestamp`` the first bad row."""

    def __init__(self, message: str, *, path: str | None = None, column: str | None = None,
                 timestamp: object | None = None, count: int | None = None):
        where = [str(p) for p in (path,) if p]
        if column:
            where.append(f"column {column!r}")
        detail = message
        if count is not None:
            detail += f" ({count} rows"
            detail += f", first at {timestamp})" if timestamp is not None else ")"
        elif timestamp is not None:
            detail += f" (at {timestamp})"
        super().__init__(f"{', '.join(where)}: {detail}" if where else detail)
        self.path, self.column, self.timestamp, self.count = path, column, timestamp, count


class DataWarning(BtperpWarning):
    """Market data has a problem that was reported but not fixed (gaps, for example)."""


class RefusedOrdersWarning(BtperpWarning):
    """A backtest whose every order was refused (margin, tier or lot size): it never traded."""


# --- the environment -----------------------------------------------------------------------------

class EnvironmentFailure(BtperpError, OSError):
    """The machine, not the input, stopped btperp (a full disk, a file-size limit): exit status 1."""

    exit_code = 1


class DiskFullError(EnvironmentFailure):
    """A write failed for lack of space (ENOSPC, EDQUOT) or a file-size limit (EFBIG). The message
    names the file and says what was left on disk (the temporary file is always removed)."""


def outside_stacklevel() -> int:
    """The ``stacklevel`` for :func:`warnings.warn` that points at the first caller outside btperp
    and backtrader (the user's script), so a warning never quotes a line of btperp's own code."""
    import os
    import sys
    here = os.path.dirname(os.path.abspath(__file__))
    level, frame = 1, sys._getframe(1)
    while frame is not None:
        name = os.path.abspath(frame.f_code.co_filename)
        if not (name.startswith(here) or f"{os.sep}backtrader{os.sep}" in name):
            return level
        frame = frame.f_back
        level += 1
    return level
