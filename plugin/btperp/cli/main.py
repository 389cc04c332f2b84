"""Entry point of the ``btperp`` command: sub-commands register themselves here."""

from __future__ import annotations

import argparse
import sys
import warnings
from typing import Sequence

from .. import __version__
from ..errors import BtperpError, BtperpWarning
from . import audit, backtest, calc, data, fetch, history

COMMANDS = (calc, data, history, backtest, audit, fetch)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="btperp",
        description="Exchange-accurate perpetual futures for backtrader: tiered maintenance margin, "
                    "mark-price liquidation, funding.",
        epilog="Run 'btperp COMMAND --help' for a command's options.")
    parser.add_argument("--version", action="version", version=f"btperp {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMANDS:
        module.register(sub)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None):
    if issubclass(category, BtperpWarning):
        print(f"btperp: warning: {message}", file=sys.stderr)
    else:
        print(warnings.formatwarning(message, category, filename, lineno, line), file=sys.stderr, end="")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 2 bad input or failure)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    previous = warnings.showwarning
    warnings.showwarning = _show_warning
    try:
        return int(args.run(args) or 0)
    except BtperpError as exc:
        print(f"btperp {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"btperp {args.command}: error: no such file: {exc.filename}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"btperp {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = previous


if __name__ == "__main__":   # pragma: no cover
    sys.exit(main())
