"""``btperp data``: import and inspect market data and tier tables."""

from __future__ import annotations

import argparse
import sys

from ..io.catalog import dataset_info, list_datasets
from ..io.freqtrade import import_freqtrade
from ..io.klines import import_klines
from ..io.paths import datasets_dir, tier_history_path
from ..io.tierfile import import_tier_history
from ..rules import RULEBOOKS
from . import args as types
from .format import print_json, table


def register(sub) -> None:
    p = sub.add_parser("data", help="import and inspect datasets and tier tables",
                       description="Import market data and tier tables into the datasets layout "
                                   "(datasets/<exchange>/<SYMBOL>/ohlcv-<tf>.parquet, mark-<tf>.parquet, "
                                   "funding.parquet; datasets/<exchange>/tier_history.json) and inspect it.")
    p.add_argument("--datadir", default=None, type=types.data_dir, help="datasets root (default: $BTPERP_DATASETS or the project's datasets/)")
    dsub = p.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True)

    ls = dsub.add_parser("list", help="symbols and series in the datasets")
    ls.add_argument("--json", action="store_true", help="print JSON")
    ls.set_defaults(run=run_list)

    info = dsub.add_parser("info", help="rows, range, gaps, funding intervals, mark coverage, tier versions")
    info.add_argument("symbol", help="BTCUSDT or BTC/USDT:USDT (coin-margined: BTCUSD, BTC/USD:BTC)")
    info.add_argument("--exchange", default="binance-usdm")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(run=run_info)

    ft = dsub.add_parser("import-freqtrade", help="convert freqtrade futures feather files",
                         description="Convert freqtrade's <BASE>_<QUOTE>_<SETTLE>-<tf>-futures|mark|funding_rate"
                                     ".feather files found under DIR. Every file is validated before anything "
                                     "is written; each output is written atomically.")
    ft.add_argument("dir", type=types.input_dir, help="folder holding the feather files")
    ft.add_argument("--exchange", default="binance-usdm", help="exchange folder to write into")
    ft.add_argument("--symbol", action="append", help="only this symbol (ccxt form; repeatable)")
    ft.add_argument("--json", action="store_true", help="print JSON")
    ft.set_defaults(run=run_import_freqtrade)

    kl = dsub.add_parser("import-klines", help="convert a kline CSV (Binance's kline exports)",
                         description="Convert one kline CSV (open_time in ms, open, high, low, close[, "
                                     "volume, ...], with or without a header, as Binance publishes them) "
                                     "into DATADIR/EXCHANGE/SYMBOL/<kind>-<timeframe>.parquet, merged with "
                                     "what is stored there; validated, written atomically. Detail data for "
                                     "--detail: e.g. --kind mark --timeframe 1m.")
    kl.add_argument("file", type=types.input_file, help="kline CSV file")
    kl.add_argument("--symbol", required=True, help="symbol (BTCUSDT or BTC/USDT:USDT)")
    kl.add_argument("--kind", required=True, choices=["ohlcv", "mark"], help="last-price or mark klines")
    kl.add_argument("--timeframe", required=True, help="the klines' interval (1m, 1h, ...)")
    kl.add_argument("--exchange", default="binance-usdm", help="exchange folder to write into")
    kl.add_argument("--json", action="store_true", help="print JSON")
    kl.set_defaults(run=run_import_klines)

    imp = dsub.add_parser("import-tiers", help="validate a tier-history JSON and store it",
                          description="Validate every table of a tier-history file (btperp/ccxt shape: "
                                      "{'symbols': {SYMBOL: [{'observed', 'tiers'}]}}) and write it to "
                                      "DATADIR/EXCHANGE/tier_history.json atomically.")
    imp.add_argument("file", type=types.input_file, help="tier-history JSON")
    imp.add_argument("--exchange", default="binance-usdm", choices=sorted(RULEBOOKS))
    imp.add_argument("--json", action="store_true", help="print JSON")
    imp.set_defaults(run=run_import_tiers)


def run_list(args: argparse.Namespace) -> int:
    rows = list_datasets(args.datadir)
    if args.json:
        print_json(rows)
        return 0
    if not rows:
        print(f"no datasets under {datasets_dir(args.datadir)}")
        return 0
    print(table(["exchange", "symbol", "series (rows)"],
                [[r["exchange"], r["symbol"], ", ".join(f"{k} ({v:,})" for k, v in r["series"].items())]
                 for r in rows]))
    return 0


def run_info(args: argparse.Namespace) -> int:
    info = dataset_info(args.symbol, args.exchange, args.datadir)
    if args.json:
        print_json(info)
        return 0
    print(f"{info['symbol']} on {info['exchange']} ({info['folder']})")
    c = info["contract"]
    size = (f", {c['contract_size']:g} {c['contract_size_unit']} a contract"
            if c.get("contract_size") is not None else "")
    print(f"contract: {c['contract_type']}{size}, settled in {c['settle']}"
          + ("; prices in USD, volume in the coin" if c["contract_type"] == "inverse" else ""))
    rows = []
    for name, s in info["series"].items():
        gaps = "-" if "gaps" not in s else ("none" if not s["gaps"] else
                                            f"{s['gaps']} ({s['missing_bars']} bars, first {s['first_missing']})")
        cover = f"{s['mark_coverage'] * 100:.1f} %" if "mark_coverage" in s else "-"
        rows.append([name, f"{s['rows']:,}", s["first"] or "-", s["last"] or "-", gaps, cover])
    print(table(["series", "rows", "first", "last", "gaps", "mark coverage"], rows))
    if "funding" in info:
        f = info["funding"]
        hist = ", ".join(f"{h}h: {n:,}" for h, n in f["interval_hours"].items())
        print(f"funding: {f['rows']:,} events {f['first']} → {f['last']}; intervals {hist}; "
              f"rate {f['rate_min']:.6f} .. {f['rate_max']:.6f}")
    else:
        print("funding: none")
    versions = info["tier_versions"]
    print(f"tier tables: {len(versions)} versions" + (f" ({', '.join(versions)})" if versions else ""))
    return 0


def _progress(items):
    if not sys.stderr.isatty():
        return items
    from tqdm import tqdm
    return tqdm(items, desc="validating", unit="file", file=sys.stderr)


def run_import_freqtrade(args: argparse.Namespace) -> int:
    written = import_freqtrade(args.dir, exchange=args.exchange, datadir=args.datadir, symbols=args.symbol,
                               progress=_progress)
    if args.json:
        print_json(written)
        return 0
    print(table(["symbol", "series", "rows", "first", "last"],
                [[w["symbol"], w["kind"] + (f"-{w['timeframe']}" if w["timeframe"] else ""), f"{w['rows']:,}",
                  w["first"] or "-", w["last"] or "-"] for w in written]))
    print(f"wrote {len(written)} files under {datasets_dir(args.datadir) / args.exchange}")
    return 0


def run_import_klines(args: argparse.Namespace) -> int:
    row = import_klines(args.file, symbol=args.symbol, kind=args.kind, timeframe=args.timeframe,
                        exchange=args.exchange, datadir=args.datadir)
    if args.json:
        print_json(row)
    else:
        print(f"wrote {row['path']}: {row['rows']:,} {row['kind']}-{row['timeframe']} rows, "
              f"{row['first']} to {row['last']}")
    return 0


def run_import_tiers(args: argparse.Namespace) -> int:
    dst = tier_history_path(args.exchange, datasets_dir(args.datadir))
    counts = import_tier_history(args.file, dst, exchange=args.exchange)
    summary = {"path": str(dst), **counts}
    if args.json:
        print_json(summary)
    else:
        print(f"wrote {dst}: {counts['symbols']} symbols, {counts['tables']} tables, all validated")
    return 0
