"""Entry point of the ``btperp`` command: sub-commands register themselves here.

Exit status: 0 done, 2 bad input (every error names the argument or file and what was expected),
1 the environment failed (a full disk: the file and what was left on disk) or an internal error,
130 interrupted. No traceback is shown unless ``--debug`` (anywhere on the line) or
``BTPERP_DEBUG=1``. Warnings print as one ``btperp: warning: ...`` line each, once per command.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import traceback
import warnings
from typing import Sequence

from .. import __version__
from ..errors import BtperpError, BtperpWarning
from . import audit, backtest, calc, data, fetch, history, sweep

COMMANDS = (calc, data, history, backtest, audit, fetch, sweep)
DEBUG_ENV = "BTPERP_DEBUG"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="btperp",
        description="Exchange-accurate perpetual futures for backtrader: tiered maintenance margin, "
                    "mark-price liquidation, funding.",
        epilog="Run 'btperp COMMAND --help' for a command's options. --debug (or BTPERP_DEBUG=1) "
               "shows the full traceback of an error.")
    parser.add_argument("--version", action="version", version=f"btperp {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error (also BTPERP_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMANDS:
        module.register(sub)
    return parser


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


class _Warnings:
    """``warnings.showwarning`` of the command: one line per distinct warning, no source line
    (with --debug: Python's usual form, with the file and line that raised it)."""

    def __init__(self, debug: bool):
        self.debug = debug
        self.seen: set[str] = set()

    def __call__(self, message, category, filename, lineno, file=None, line=None):
        text = _one_line(message)
        if not issubclass(category, BtperpWarning):
            text = f"{category.__name__}: {text}"
        if text in self.seen:
            return
        self.seen.add(text)
        if self.debug:
            sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))
        else:
            print(f"btperp: warning: {text}", file=sys.stderr)


def _debug_requested(argv: list[str]) -> tuple[bool, list[str]]:
    """--debug anywhere on the line (before a ``--``), or BTPERP_DEBUG set to something true."""
    cut = argv.index("--") if "--" in argv else len(argv)
    debug = "--debug" in argv[:cut]
    rest = [a for i, a in enumerate(argv) if not (i < cut and a == "--debug")]
    env = os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no", "off")
    return debug or env, rest


def _os_error(exc: OSError) -> tuple[str, int]:
    from ..io.atomic import DISK_FULL
    what = exc.strerror or str(exc) or type(exc).__name__
    where = f" {exc.filename}" if exc.filename else ""
    if exc.errno in DISK_FULL:
        return (f"{what.lower()} writing{where or ' a file'}; nothing half-written is kept under a "
                f"final name (temporary files are removed). Free some space and rerun"), 1
    if exc.filename:
        return f"cannot use{where}: {what.lower()}", 2
    return f"{what}", 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (module docstring), argparse's too."""
    debug, argv = _debug_requested(list(sys.argv[1:] if argv is None else argv))
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:           # argparse: usage error (2, message printed), --help (0)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    name = " ".join(["btperp", args.command] + [getattr(args, k) for k in
                                                 ("data_command", "history_command", "audit_command")
                                                 if getattr(args, k, None)])
    previous = warnings.showwarning
    warnings.showwarning = _Warnings(debug)
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:             # `btperp ... | head`: the reader left; nothing to say
        with contextlib.suppress(Exception):
            sys.stdout = open(os.devnull, "w")
        return 1
    except BaseException as exc:
        if isinstance(exc, SystemExit):
            raise
        if debug:
            traceback.print_exc()
        if isinstance(exc, BtperpError):
            message, code = _one_line(str(exc)), int(getattr(exc, "exit_code", 2))
        elif isinstance(exc, OSError):
            message, code = _os_error(exc)
        else:
            message = (f"internal error ({type(exc).__name__}: {_one_line(str(exc))[:300]}); "
                       + ("the traceback is above" if debug else
                          f"rerun with --debug (or {DEBUG_ENV}=1) for the traceback") +
                       " and report it")
            code = 1
        print(f"{name}: error: {message}", file=sys.stderr)
        return code
    finally:
        warnings.showwarning = previous


if __name__ == "__main__":   # pragma: no cover
    sys.exit(main())
