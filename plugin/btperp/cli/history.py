"""``btperp history``: read the margin history a backtest wrote (``btperp.install(..., history=DIR)``)."""

from __future__ import annotations

import argparse

from . import args as types
from .format import fmt_number, print_json, table


def register(sub) -> None:
    p = sub.add_parser("history", help="summaries of recorded margin histories",
                       description="Read the history.parquet and events.parquet files a run wrote "
                                   "(DIR, or DIR/run_id=*/ for a sweep).")
    hsub = p.add_subparsers(dest="history_command", metavar="HISTORY_COMMAND", required=True)
    show = hsub.add_parser("show", help="per run: trades, liquidations, worst margin ratio, funding, fees")
    show.add_argument("dir", type=types.existing_path, help="directory the run (or sweep) wrote to")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(run=run_show)


def run_show(args: argparse.Namespace) -> int:
    from ..io.history import summarize        # pyarrow only when needed: the other commands start fast
    runs = summarize(args.dir)
    if args.json:
        print_json(runs)
        return 0
    headers = ["run", "rows", "from", "to", "trades", "liquidations", "worst margin ratio",
               "funding paid", "fees paid", "insurance fund"]
    rows = []
    for r in runs:
        worst = "-" if r["worst_margin_ratio"] is None else (
            f"{r['worst_margin_ratio'] * 100:.2f} % ({r['worst_symbol']}, {r['worst_at'][:16]})")
        rows.append([r["run_id"], f"{r['rows']:,}", (r["first"] or "-")[:16], (r["last"] or "-")[:16],
                     str(r["trades"]) + (f" (+{r['open_trades']} open)" if r["open_trades"] else ""),
                     str(r["liquidations"]) + (f" ({r['partial_liquidations']} partial)"
                                               if r["partial_liquidations"] else ""),
                     worst, fmt_number(r["funding_paid"]),
                     fmt_number(r["fees_paid"]), fmt_number(r["insurance_fund"])])
    print(table(headers, rows, right=[False, True, False, False, True, True, False, True, True, True]))
    return 0
