"""``btperp fetch``: download candles, mark prices, funding and tiers through ccxt into the datasets
layout (thin over :mod:`btperp.io.fetch`)."""

from __future__ import annotations

import argparse
import textwrap

from . import args as types
from .format import print_json, table

EXAMPLES = """\
examples:
  btperp fetch --exchange binance-usdm --symbol BTC/USDT:USDT --timeframe 1h --since 2024-01-01
  btperp fetch --symbol SOLUSDT --symbol DOGEUSDT --since 2023-06-01 --what ohlcv,mark,funding --json
  btperp fetch --exchange bybit --symbol ETHUSDT --since 2024-01-01 --datadir mydata
  btperp fetch --exchange okx --symbol BTC-USDT-SWAP --since 2024-06-01     # OKX tiers in base units
  btperp fetch --exchange binance-coinm --symbol BTCUSD_PERP --since 2024-01-01   # coin-margined: BTC/USD:BTC
  btperp fetch --exchange bybit-inverse --symbol BTCUSD --since 2024-01-01
  btperp fetch --exchange okx-inverse --symbol BTC-USD-SWAP --since 2024-06-01  # tiers in USD of face value
  BINANCE_API_KEY=... BINANCE_API_SECRET=... btperp fetch --symbol BTCUSDT --since 2024-01-01 --what tiers

A second run fetches only what is missing after the last stored bar. Read the result with
btperp.load("BTCUSDT", datadir=...) (coin-margined: btperp.load("BTC/USD:BTC",
exchange="binance-coinm", datadir=...)) or btperp data info.
"""


def register(sub) -> None:
    p = sub.add_parser(
        "fetch", help="download OHLCV, mark prices, funding and leverage tiers through ccxt",
        description=textwrap.dedent("""\
            Download candles, mark-price candles, funding history and the current leverage tiers of
            linear perpetuals (binance-usdm, bybit, okx) or coin-margined ones (binance-coinm,
            bybit-inverse, okx-inverse: BTC/USD:BTC, prices in USD, the contract size in USD
            stored with the data) into the datasets layout that btperp.load reads. Incremental: each
            series resumes after its last stored row; every write is atomic. Network errors, HTTP
            429 and 5xx are retried with backoff; gaps the exchange has are reported, not filled.
            Tiers: Binance's endpoint is signed (BINANCE_API_KEY, BINANCE_API_SECRET in the
            environment); Bybit's risk limits and OKX's position tiers are public (OKX bounds them
            in contracts: stored in base units, contracts x ctVal). Coin-margined tiers: Binance
            COIN-M brackets and Bybit inverse risk limits in the coin; OKX inverse tiers in USD of
            face value (contracts x ctVal). OKX keeps three months of funding history."""),
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exchange", default="binance-usdm",
                   help="binance-usdm (default), bybit or okx; coin-margined: binance-coinm, bybit-inverse "
                        "or okx-inverse")
    p.add_argument("--symbol", action="append", required=True,
                   help="BTC/USDT:USDT, BTCUSDT or the exchange's id (BTC-USDT-SWAP); coin-margined "
                        "BTC/USD:BTC, BTCUSD or the id (BTCUSD_PERP, BTC-USD-SWAP); repeat for several")
    p.add_argument("--timeframe", default="1h", help="candle size (default 1h)")
    p.add_argument("--since", required=True, type=types.utc_time, help="first day (UTC) to fetch when nothing is stored")
    p.add_argument("--until", type=types.utc_time, help="last time (UTC) to fetch (default: now; only closed candles)")
    p.add_argument("--what", help="series to fetch, comma-separated: ohlcv, mark, funding, tiers "
                                  "(default: all the exchange offers)")
    p.add_argument("--datadir", type=types.data_dir, help="datasets folder (default: the bundled datasets/)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print a JSON summary of what was added")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..io.fetch import Fetcher
    what = [w.strip() for w in args.what.split(",") if w.strip()] if args.what else None
    fetcher = Fetcher(args.exchange, datadir=args.datadir, progress=not args.no_progress and not args.json)
    reports = fetcher.fetch(args.symbol, timeframe=args.timeframe, since=args.since, until=args.until,
                            what=what)
    if args.json:
        print_json([r.to_dict() for r in reports])
        return 0
    rows = [[r.symbol, r.series + (f" {r.timeframe}" if r.timeframe else ""), f"{r.added:,}",
             r.first_added or "-", r.last_added or "-", f"{r.rows:,}", str(r.requests),
             r.gaps or r.note or ""] for r in reports]
    print(table(["symbol", "series", "added", "first added", "last added", "stored", "requests", "notes"],
                rows, right=[False, False, True, False, False, True, True, False]))
    return 0
