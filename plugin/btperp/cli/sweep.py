"""``btperp sweep SPEC`` and ``btperp sweep show DIR`` (thin over :mod:`btperp.sweep`)."""

from __future__ import annotations

import argparse
import textwrap

from . import args as types
from .format import fmt_number, print_json, table

EXAMPLES = """\
examples:
  btperp sweep examples/sweep.toml                          # the spec's grid, local processes
  btperp sweep examples/sweep.toml --engine dask --workers 8 --out out/big
  btperp sweep examples/sweep.toml --engine dask --scheduler tcp://10.0.0.5:8786 --out s3://bucket/sweeps/a
  btperp sweep --strategy sma_cross --param fast=5,10 --param slow=20:40:10 --leverage 1,5,20 \\
               --symbol BTCUSDT,ETHUSDT --start 2024-01-01 --end 2024-12-31 --window-length 3mo
  btperp sweep show out/sweep --sort total_return
"""


def register(sub) -> None:
    p = sub.add_parser(
        "sweep", help="many backtests (parameters x leverages x symbols x windows) on processes or Dask",
        description=textwrap.dedent("""\
            Run every combination of a spec's strategy parameters, leverages, margin modes, symbols,
            timeframes and date windows. Each run's row (settings and figures, or its error) is
            written to OUT/results/run_id=<id>/ by the worker that ran it; a rerun skips the runs
            already complete. Then writes OUT/sweep.html and PNGs. Flags override the spec's fields.
            'btperp sweep show DIR' prints a sweep's table."""),
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("spec", nargs="?", help="a TOML spec (examples/sweep.toml), or 'show'")
    p.add_argument("dir", nargs="?", help="with 'show': the sweep's folder")
    p.add_argument("--strategy", help="strategy (short name, path/to/file.py:Class or module:Class)")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUES",
                   help="a parameter's values: a,b,c or from:to:step (to included); repeat per parameter")
    p.add_argument("--leverage", help="leverages: 1,3,10 or from:to:step")
    p.add_argument("--margin-mode", help="isolated, cross or isolated,cross")
    p.add_argument("--symbol", help="symbols, comma-separated")
    p.add_argument("--timeframe", help="timeframes, comma-separated (1h,4h)")
    p.add_argument("--start", help="first day (UTC) of the window(s)")
    p.add_argument("--end", help="last day (UTC), included whole")
    p.add_argument("--window-length", help="rolling windows of this length (30d, 2w, 6mo, 1y)")
    p.add_argument("--window-step", help="rolling windows start this far apart (default: the length)")
    p.add_argument("--exchange", help="exchange (default binance-usdm)")
    p.add_argument("--cash", type=types.positive_float, help="starting balance, USDT (default 10000)")
    p.add_argument("--trigger", choices=["mark", "last"], help="price that liquidates (default mark)")
    p.add_argument("--intrabar", choices=["path", "adverse"],
                   help="which extreme of a bar comes first (default path; see btperp run --help)")
    p.add_argument("--liquidation", choices=["partial", "full"],
                   help="partial: reduce large positions first where the exchange does (default); "
                        "full: every liquidation closes the whole position")
    p.add_argument("--detail", metavar="TIMEFRAME", help="replay bars on stored finer bars (see btperp run --help)")
    p.add_argument("--stake", type=types.percent, help="percent of the balance each entry puts up (default 95)")
    p.add_argument("--datadir", help="datasets folder (default: the bundled datasets/)")
    p.add_argument("--history", action="store_true", default=None,
                   help="write each run's margin history and events (OUT/history/, OUT/events/)")
    p.add_argument("--out", default="out/sweep",
                   help="folder or fsspec URL the workers can reach, e.g. s3://bucket/x (default out/sweep)")
    p.add_argument("--engine", default="auto", choices=["auto", "local", "dask"],
                   help="local processes, or Dask (auto: Dask with --scheduler or above 500 runs)")
    p.add_argument("--workers", type=types.positive_int, help="processes / LocalCluster workers (default: one per core)")
    p.add_argument("--scheduler", metavar="ADDRESS", type=scheduler_address, help="an existing Dask scheduler, tcp://host:8786")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print JSON (runs, or with show: rows)")
    p.add_argument("--sort", default="total_return", metavar="FIGURE",
                   help="show: sort by this column, largest first (default total_return)")
    p.add_argument("--ascending", action="store_true", help="show: smallest first")
    p.set_defaults(run=run_sweep)


def scheduler_address(text: str) -> str:
    """A Dask scheduler's address: ``tcp://HOST:PORT`` (or tls://, ws://, wss://)."""
    import re
    if not re.fullmatch(r"(tcp|tls|ws|wss)://[^\s/:]+:\d{1,5}", text.strip()):
        raise argparse.ArgumentTypeError(f"{text!r} is not a scheduler address like tcp://host:8786")
    return text.strip()


def _split(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _values(text: str, field: str):
    """``a,b,c`` → a list; ``from:to:step`` → a range mapping (numbers)."""
    from ..errors import InputError
    if ":" in text and "," not in text:
        parts = text.split(":")
        try:
            numbers = [float(x) if any(ch in x for ch in ".eE") else int(x) for x in parts]
        except ValueError:
            raise InputError(f"{text!r}: a range is from:to[:step] of numbers", field=field) from None
        if len(numbers) not in (2, 3):
            raise InputError(f"{text!r}: a range is from:to[:step]", field=field)
        return {"from": numbers[0], "to": numbers[1], **({"step": numbers[2]} if len(numbers) == 3 else {})}
    return _split(text)


def overrides(args: argparse.Namespace) -> dict:
    """The flags given, in a spec's spelling."""
    from ..backtest import _split_pair
    from ..errors import InputError
    out: dict = {}
    if args.strategy:
        out["strategy"] = args.strategy
    if args.param:
        params = {}
        for text in args.param:
            name, value = _split_pair(text)
            params[name] = _values(value, f"param {name}")
        out["params"] = params
    if args.leverage:
        values = _values(args.leverage, "leverage")
        if isinstance(values, list):
            try:
                values = [float(v) for v in values]
            except ValueError:
                raise InputError(f"{args.leverage!r}: give numbers like 1,3,10", field="leverage") from None
        out["leverages"] = values
    for flag, key in (("margin_mode", "margin_modes"), ("symbol", "symbols"), ("timeframe", "timeframes")):
        if getattr(args, flag):
            out[key] = _split(getattr(args, flag))
    window = {k: getattr(args, a) for k, a in (("start", "start"), ("end", "end"),
                                                ("length", "window_length"), ("step", "window_step"))
              if getattr(args, a)}
    if window:
        out["windows"] = window
    for key in ("exchange", "cash", "trigger", "intrabar", "liquidation", "detail", "stake", "datadir",
                "history"):
        if getattr(args, key) is not None:
            out[key] = getattr(args, key)
    return out


def run_sweep(args: argparse.Namespace) -> int:
    from ..errors import InputError
    if args.spec == "show":
        if not args.dir:
            raise InputError("btperp sweep show DIR: give the sweep's folder", field="dir")
        return run_show(args)
    if args.dir:
        raise InputError(f"unexpected argument {args.dir!r} (btperp sweep [SPEC] [flags])", field="spec")
    from ..sweep.runner import sweep
    from ..sweep.spec import load_spec
    flags = overrides(args)
    if args.spec is None and "strategy" not in flags:
        raise InputError("give a spec file (btperp sweep examples/sweep.toml) or --strategy", field="spec")
    spec = load_spec(args.spec, flags)
    outcome = sweep(spec, args.out, engine=args.engine, workers=args.workers, scheduler=args.scheduler,
                    progress=not args.no_progress)
    report = {}
    if len(outcome.table):
        from ..report.sweep import write_sweep_report
        report = write_sweep_report(outcome.table, outcome.out, spec)
    if args.json:
        print_json({"out": outcome.out, "runs": outcome.runs, "done": outcome.done,
                    "failed": outcome.failed, "skipped": outcome.skipped, "report": report})
        return 0
    print(f"{outcome.runs} runs: {outcome.done} done, {outcome.failed} failed, {outcome.skipped} "
          f"already complete (skipped)")
    if len(outcome.table):
        shown = min(10, len(outcome.table))
        print(f"best {shown} of {len(outcome.table)} by total return"
              + (f" (all: btperp sweep show {outcome.out})" if shown < len(outcome.table) else "") + ":")
        print(_table(outcome.table, "total_return", False, limit=10))
    if report:
        print(f"report: {report['html']} (table: btperp sweep show {outcome.out})")
    return 0


_SHOW = ("leverage", "symbol", "timeframe", "margin_mode", "start", "end", "status", "total_return",
         "max_drawdown", "sharpe", "trades", "liquidations", "days_to_first_liquidation",
         "worst_margin_ratio")


def _fmt(column: str, value) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    if column in ("total_return", "max_drawdown", "worst_margin_ratio", "cagr"):
        return f"{value * 100:,.2f} %"
    if column == "leverage":
        return f"{value:g}x"
    if isinstance(value, float):
        return fmt_number(value)
    return str(value)


def _sorted(frame, figure: str, ascending: bool):
    from ..errors import InputError
    if figure not in frame.columns:
        raise InputError(f"no column {figure!r}; choose one of: {', '.join(frame.columns)}", field="sort")
    return frame.sort_values([figure, "run_id"], ascending=[ascending, True], na_position="last",
                             kind="mergesort")


def _table(frame, figure: str, ascending: bool, limit: int | None = None) -> str:
    from ..report.sweep import set_columns
    rows = _sorted(frame, figure, ascending)
    if limit:
        rows = rows.head(limit)
    varying = set_columns(frame)
    columns = ["run_id", *[c for c in varying if c not in _SHOW], *_SHOW]
    if frame["status"].eq("ok").all():
        columns.remove("status")
    headers = [c.removeprefix("param_") for c in columns]
    body = [[_fmt(c, r[c]) for c in columns] for _, r in rows.iterrows()]
    return table(headers, body, right=[False] + [True] * (len(columns) - 1))


def run_show(args: argparse.Namespace) -> int:
    from ..backtest import to_json_rows
    from ..errors import InputError
    from ..sweep.task import read_results
    frame = read_results(args.dir)
    if frame.empty:
        raise InputError(f"{args.dir}: no sweep results (no results/run_id=*/result.parquet)", field="dir")
    rows = _sorted(frame, args.sort, args.ascending)
    if args.json:
        rows = rows.astype(object).where(rows.notna(), None)
        records = [{k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in r.items()}
                   for r in rows.to_dict("records")]
        print_json(to_json_rows(records))
        return 0
    print(_table(frame, args.sort, args.ascending))
    failed = frame[frame["status"] != "ok"]
    for _, r in failed.iterrows():
        print(f"failed {r['run_id']}: {r['error']}")
    return 0
