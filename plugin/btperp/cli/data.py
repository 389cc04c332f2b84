"""``btperp data``: import and inspect market data and tier tables."""

from __future__ import annotations

import argparse

from ..io.paths import datasets_dir, tier_history_path
from ..io.tierfile import import_tier_history
from ..rules import RULEBOOKS
from .format import print_json


def register(sub) -> None:
    p = sub.add_parser("data", help="import and inspect datasets and tier tables",
                       description="Import market data and tier tables into the datasets layout.")
    dsub = p.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True)
    imp = dsub.add_parser("import-tiers", help="validate a tier-history JSON and store it",
                          description="Validate every table of a tier-history file (btperp/ccxt shape: "
                                      "{'symbols': {SYMBOL: [{'observed', 'tiers'}]}}) and write it to "
                                      "DATADIR/EXCHANGE/tier_history.json atomically.")
    imp.add_argument("file")
    imp.add_argument("--exchange", default="binance-usdm", choices=sorted(RULEBOOKS))
    imp.add_argument("--datadir", default=None, help="datasets root (default: the project's datasets/)")
    imp.add_argument("--json", action="store_true")
    imp.set_defaults(run=run_import_tiers)


def run_import_tiers(args: argparse.Namespace) -> int:
    dst = tier_history_path(args.exchange, datasets_dir(args.datadir))
    counts = import_tier_history(args.file, dst, exchange=args.exchange)
    summary = {"path": str(dst), **counts}
    if args.json:
        print_json(summary)
    else:
        print(f"wrote {dst}: {counts['symbols']} symbols, {counts['tables']} tables, all validated")
    return 0
