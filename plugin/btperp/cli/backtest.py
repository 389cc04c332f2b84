"""``btperp run`` and ``btperp compare``: a backtrader strategy with btperp's broker, at one leverage
or several (thin over :mod:`btperp.backtest`)."""

from __future__ import annotations

import argparse
import textwrap

from . import args as types
from .format import fmt_number, print_json, table

RUN_EXAMPLES = """\
examples:
  btperp run --strategy sma_cross --symbol BTCUSDT --start 2024-01-01 --end 2024-12-31 --leverage 5
  btperp run --strategy breakout --param entry=20 --param exit=10 --symbol ETHUSDT --timeframe 4h \\
             --leverage 10 --margin-mode cross --json
  btperp run --strategy my_strats.py:MyStrategy --symbol BTCUSDT --leverage 3 --plot out/run.png
"""

COMPARE_EXAMPLES = """\
examples:
  btperp compare --strategy sma_cross --symbol BTCUSDT --start 2024-01-01 --end 2024-12-31 \\
                 --leverage 1,3,10,50 --out out/compare
  btperp compare --strategy dca --symbol ETHUSDT --leverage 1,2,5,10,20 --margin-mode cross --json
"""


def _common(p: argparse.ArgumentParser, leverage_help: str, leverage_default: str) -> None:
    p.add_argument("--strategy", required=True,
                   help="short name of a file in strategies/ (list them: btperp strategies), "
                        "path/to/file.py:Class, or module:Class")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="a strategy parameter, typed like its default (repeat for several)")
    p.add_argument("--symbol", default="BTCUSDT", help="symbol of a bundled dataset (default BTCUSDT)")
    p.add_argument("--exchange", default="binance-usdm", help="exchange (default binance-usdm)")
    p.add_argument("--timeframe", default="1h", help="bar size; coarser than the data is resampled "
                                                      "(default 1h)")
    p.add_argument("--start", type=types.utc_time, help="first day (UTC), e.g. 2024-01-01; default: the data's start")
    p.add_argument("--end", type=types.utc_time, help="last day (UTC), included whole; default: the data's end")
    p.add_argument("--leverage", default=leverage_default, help=leverage_help)
    p.add_argument("--margin-mode", default="isolated", choices=["isolated", "cross"],
                   help="margin mode (default isolated)")
    p.add_argument("--cash", type=types.positive_float, default=10_000.0, help="starting balance, USDT (default 10000)")
    p.add_argument("--trigger", default="mark", choices=["mark", "last"],
                   help="price that liquidates: the exchange's mark (default) or the last price")
    p.add_argument("--intrabar", default="path", choices=["path", "adverse"],
                   help="which extreme of a bar comes first when fills and liquidations are put in "
                        "time order: path (the extreme nearer the open, default) or adverse (each "
                        "position's adverse extreme first, the cautious bound)")
    p.add_argument("--liquidation", default="partial", choices=["partial", "full"],
                   help="partial (default): a larger position is reduced first where the exchange "
                        "does it (Binance one order, Bybit a lower risk limit, Hyperliquid 20 %%); "
                        "full: every liquidation closes the whole position")
    p.add_argument("--detail", metavar="TIMEFRAME",
                   help="replay each bar on these finer stored bars where a liquidation or fill can "
                        "happen in it (e.g. 1m mark and/or last prices; bars without them use their own)")
    p.add_argument("--stake", type=types.percent, default=95.0,
                   help="percent of the available balance each entry puts up as initial margin, so "
                        "the position is about stake %% x balance x leverage (default 95)")
    p.add_argument("--datadir", type=types.data_dir, help="datasets folder (default: the bundled datasets/)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def register(sub) -> None:
    run = sub.add_parser(
        "run", help="one backtest with btperp's broker and margin history",
        description=textwrap.dedent("""\
            Run a backtrader strategy on a bundled dataset with btperp's broker: tiered maintenance
            margin from the table in force on each date, liquidation on the mark price, funding at
            each funding time, fees. Writes the margin history to --out and prints a summary."""),
        epilog=RUN_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(run, "leverage (default 1)", "1")
    run.add_argument("--out", default="out/run", type=types.output_dir, help="directory for history.parquet and events.parquet "
                                                      "(default out/run)")
    run.add_argument("--plot", metavar="FILE", type=types.output_file, help="save backtrader's plot (liquidations marked) to FILE")
    run.set_defaults(run=run_run)

    cmp = sub.add_parser(
        "compare", help="the same strategy at several leverages, side by side",
        description=textwrap.dedent("""\
            Run one strategy at each leverage of --leverage in parallel processes and compare final
            equity, return, CAGR, drawdown, Sharpe, trades, liquidations, funding, fees and the worst
            margin ratio. --out receives results.parquet, report.png, report.html and each run's
            margin history (history/run_id=<L>x/)."""),
        epilog=COMPARE_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(cmp, "comma-separated leverages (default 1,2,3,5,10,20,50)", "1,2,3,5,10,20,50")
    cmp.add_argument("--out", default="out/compare", type=types.output_dir, help="directory for the results (default out/compare)")
    cmp.add_argument("--jobs", type=types.positive_int, default=None, help="processes (default: one per core)")
    cmp.add_argument("--engine", default="local", choices=["local", "dask"],
                     help="local processes (default) or Dask, as btperp sweep")
    from .sweep import scheduler_address
    cmp.add_argument("--scheduler", metavar="ADDRESS", type=scheduler_address,
                     help="with --engine dask: an existing scheduler, tcp://host:8786")
    cmp.add_argument("--no-progress", action="store_true", help="no progress bar")
    cmp.set_defaults(run=run_compare)

    lst = sub.add_parser("strategies", help="list the strategies found by short name, with their parameters")
    lst.add_argument("--json", action="store_true", help="print JSON")
    lst.set_defaults(run=run_strategies)


def _config(args: argparse.Namespace, leverage: float):
    from ..backtest import RunConfig
    return RunConfig(strategy=args.strategy, params=dict(_pairs(args.param)), symbol=args.symbol,
                     exchange=args.exchange, timeframe=args.timeframe, start=args.start, end=args.end,
                     leverage=leverage, margin_mode=args.margin_mode, cash=args.cash,
                     trigger=args.trigger, intrabar=args.intrabar, detail=args.detail, stake=args.stake,
                     datadir=args.datadir, liquidation=args.liquidation)


def _pairs(items):
    from ..backtest import _split_pair
    return [_split_pair(text) for text in items]


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1].rstrip() + "…"


def _pct(value) -> str:
    return "-" if value is None or value != value else f"{value * 100:,.2f} %"


def run_run(args: argparse.Namespace) -> int:
    from ..backtest import parse_leverages, run, to_json_rows
    levels = parse_leverages(args.leverage)
    if len(levels) != 1:
        from ..errors import InputError
        raise InputError("btperp run takes one leverage; use btperp compare for several", field="leverage")
    result = run(_config(args, levels[0]), args.out, plot=args.plot)
    s = result.summary
    if args.json:
        print_json(to_json_rows([s])[0])
        return 0
    lines = [
        f"{s['strategy']} on {s['symbol']} {args.timeframe}, {s['first_bar']} to {s['last_bar']} UTC "
        f"({s['bars']:,} bars), {s['leverage']:g}x {s['margin_mode']}",
        f"  final value     {fmt_number(s['final_value'])} USDT (from {fmt_number(args.cash)})",
        f"  total return    {_pct(s['total_return'])}   CAGR {_pct(s['cagr'])}",
        f"  max drawdown    {_pct(s['max_drawdown'])}   Sharpe {fmt_number(s['sharpe'])}",
        f"  trades          {s['trades']}",
        f"  liquidations    {s['liquidations']}" + (f" (first {s['first_liquidation']} UTC, lost "
                                                    f"{fmt_number(s['liquidation_losses'])} USDT in all)"
                                                    if s["liquidations"] else ""),
        f"  funding paid    {fmt_number(s['funding_paid'])} USDT (negative: received)",
        f"  fees            {fmt_number(s['fees'])} USDT",
        f"  worst margin ratio {_pct(s['worst_margin_ratio'])} (100 % = liquidation)",
        f"  refused orders  {s['refused_orders']}" + (f" (most often: {s['refusal_reason']})"
                                                      if s["refused_orders"] else ""),
        f"  margin history  {s['history_dir']} (btperp history show {s['history_dir']})",
    ]
    if args.plot:
        lines.append(f"  plot            {args.plot}")
    print("\n".join(lines))
    return 0


def run_compare(args: argparse.Namespace) -> int:
    from ..backtest import compare, to_json_rows
    from ..report import write_comparison
    comparison = compare(_config(args, 1.0), args.leverage, args.out, jobs=args.jobs,
                         progress=not args.no_progress, engine=args.engine, scheduler=args.scheduler)
    paths = write_comparison(comparison, args.out)
    if args.json:
        print_json(to_json_rows(comparison.rows()))
        return 0
    headers = ["leverage", "final equity", "return", "CAGR", "max DD", "Sharpe", "trades", "liqs",
               "first liq (days)", "funding", "fees", "liq losses", "worst ratio", "refused"]
    rows = []
    for s in comparison.rows():
        first = "-" if s["days_to_first_liquidation"] is None else f"{s['days_to_first_liquidation']:.1f}"
        rows.append([f"{s['leverage']:g}x", fmt_number(s["final_value"]), _pct(s["total_return"]),
                     _pct(s["cagr"]), _pct(s["max_drawdown"]), fmt_number(s["sharpe"]), str(s["trades"]),
                     str(s["liquidations"]), first, fmt_number(s["funding_paid"]), fmt_number(s["fees"]),
                     fmt_number(s["liquidation_losses"]), _pct(s["worst_margin_ratio"]),
                     str(s["refused_orders"])])
    first = comparison.runs[0].summary
    print(f"{first['strategy']} on {first['symbol']} {args.timeframe}, {first['first_bar']} to "
          f"{first['last_bar']} UTC, {args.margin_mode}, {args.cash:,.0f} USDT")
    print(table(headers, rows, right=[True] * len(headers)))
    for s in comparison.rows():
        if s["refused_orders"]:
            print(f"{s['leverage']:g}x: {s['refused_orders']} orders refused, most often: {s['refusal_reason']}")
    print(f"report: {paths['html']} (plot {paths['png']}, table {paths['results']}, "
          f"histories {args.out}/history/)")
    return 0


def describe(cls) -> str:
    """First sentence of the strategy's docstring (its module's when the class has none), as plain
    text: reStructuredText literals and roles unwrapped, lines joined."""
    import inspect
    import re
    import sys
    doc = inspect.cleandoc(cls.__doc__) if cls.__dict__.get("__doc__") else ""
    if not doc:
        module = sys.modules.get(cls.__module__)
        doc = inspect.cleandoc(module.__doc__) if module is not None and module.__doc__ else ""
    text = " ".join(doc.split("\n\n")[0].split())
    text = re.sub(r":[a-z]+:`~?([^`]+)`", r"\1", text)          # :class:`x` -> x
    text = re.sub(r"``([^`]+)``", r"\1", text)                  # ``x`` -> x
    text = re.sub(r"`([^`]+)`", r"\1", text)
    first = re.split(r"(?<=[.!?])\s+(?=[A-Z(])", text)[0]
    return first


def run_strategies(args: argparse.Namespace) -> int:
    """Every strategy by short name; a file that cannot be loaded is listed with its error."""
    import warnings

    from ..backtest import load_strategy, strategy_catalog, strategy_params, strategy_problems
    from ..errors import BtperpWarning, InputError
    rows = []
    for name, spec in sorted(strategy_catalog().items()):
        try:
            cls = load_strategy(spec)
        except InputError as exc:
            rows.append({"name": name, "class": spec, "params": {}, "doc": "",
                         "error": str(exc).removeprefix("strategy: ")})
            continue
        doc = describe(cls)
        rows.append({"name": name, "class": spec, "params": {k: repr(v) for k, v in strategy_params(cls).items()},
                     "doc": doc, "error": None})
    for name, problem in strategy_problems().items():
        rows.append({"name": name, "class": None, "params": {}, "doc": "", "error": problem})
    rows.sort(key=lambda r: r["name"])
    broken = [r["name"] for r in rows if r["error"]]
    if broken:
        warnings.warn(f"{len(broken)} strateg{'y' if len(broken) == 1 else 'ies'} cannot be loaded "
                      f"({', '.join(broken)}): fix the file (the error is in the list) or move it out of "
                      f"strategies/", BtperpWarning)
    if args.json:
        print_json(rows)
        return 0
    print(table(["name", "parameters", "what it does"],
                [[r["name"], ", ".join(f"{k}={v}" for k, v in r["params"].items()),
                  f"CANNOT BE LOADED: {r['error']}" if r["error"] else _clip(r["doc"], 90)] for r in rows]))
    return 0
