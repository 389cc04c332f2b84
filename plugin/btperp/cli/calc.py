"""``btperp calc``: liquidation and bankruptcy price, tier and margins of a position or account."""

from __future__ import annotations

import argparse
import json
import textwrap

from ..calc import calculate
from ..errors import InputError
from ..io.tierfile import TierHistoryFile
from ..rules import CORE_RULEBOOKS, RULEBOOKS
from ..tiers import TierHistory, TierTable
from . import args as types
from .format import fmt_number, print_json, table

EXAMPLES = """\
examples:
  # Binance FAQ: isolated, 500 USDT margin, long 0.02 BTC at 50,000 -> liquidation at 25,100.40
  btperp calc --symbol BTCUSDT --side long --size 0.02 --entry 50000 --margin 500
  # 20x short valued at a mark of 61,000, with the tier table in force on 2022-06-01
  btperp calc --symbol ETHUSDT --side short --size 3 --entry 1800 --mark 1850 --leverage 20 --at 2022-06-01
  # Bybit, explicit maintenance rate (no bundled Bybit tiers)
  btperp calc --exchange bybit --symbol BTCUSDT --side long --size 1 --entry 20000 --leverage 50 --mmr 0.005 --taker-fee 0
  # OKX, tiers fetched with `btperp fetch --exchange okx --what tiers` (contracts x ctVal = size)
  btperp calc --exchange okx --tiers datasets/okx/tier_history.json --symbol BTC-USDT-SWAP --side long --size 20 --entry 60000 --leverage 100
  # any venue, approximately: freqtrade's Gate-like formula with your rates
  btperp calc --exchange generic --symbol BTCUSDT --side short --size 1 --entry 10 --leverage 3 --mmr 0.01 --taker-fee 0.0006
  # Hyperliquid: maintenance margin is half the initial margin at the asset's max leverage
  btperp calc --exchange hyperliquid --symbol BTC --side long --size 1 --entry 60000 --leverage 10 --max-leverage 40
  # coin-margined: 1,000 BTCUSD contracts of 100 USD (Binance COIN-M), 20x, explicit rate, amounts in BTC
  btperp calc --exchange binance-coinm --symbol BTCUSD_PERP --side long --contracts 1000 --entry 50000 --leverage 20 --mmr 0.004
  # a whole account (cross margin, several positions) from a JSON file
  btperp calc --account examples/account.json --json
"""


def register(sub) -> None:
    p = sub.add_parser(
        "calc", help="liquidation price, tier and margins of a position or an account",
        description=textwrap.dedent("""\
            Compute the tier, initial and maintenance margin, margin ratio, liquidation price and
            bankruptcy price of one position (from flags) or an account (--account FILE.json), with
            the exchange's own formulas and the tier table in force at --at (default: the newest).
            Binance tiers come from the bundled datasets; give --tiers FILE or --mmr otherwise."""),
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--account", metavar="FILE", type=types.input_file, help="account JSON (exchange, margin_mode, wallet_balance, positions)")
    p.add_argument("--exchange", default=None, choices=sorted({**RULEBOOKS, **CORE_RULEBOOKS}),
                   help="exchange rulebook (default binance-usdm); generic: an approximation with explicit "
                        "--mmr and --taker-fee")
    p.add_argument("--symbol", help="BTCUSDT or BTC/USDT:USDT")
    p.add_argument("--side", choices=("long", "short"))
    p.add_argument("--size", type=types.positive_float, help="position size in base units (BTC)")
    p.add_argument("--contracts", type=types.positive_float,
                   help="position size in contracts instead of --size (x --contract-size, or the ctVal of an OKX tier table)")
    p.add_argument("--contract-size", type=types.positive_float,
                   help="base units per contract (OKX ctVal); coin-margined: USD per contract (default: the exchange's)")
    p.add_argument("--entry", type=types.positive_float, help="average entry price")
    p.add_argument("--mark", type=types.positive_float, help="mark price to value the position at (default: entry)")
    p.add_argument("--leverage", type=types.positive_float, help="leverage setting")
    p.add_argument("--margin", type=types.positive_float, help="isolated margin in USDT, or in the coin for coin-margined contracts (default: notional / leverage)")
    p.add_argument("--margin-mode", choices=("isolated", "cross"), default=None, help="default isolated")
    p.add_argument("--wallet", type=types.non_negative_float, help="wallet balance (cross margin)")
    p.add_argument("--mmr", type=types.mmr, help="maintenance margin rate, overriding the tier table (0.004 = 0.4%%)")
    p.add_argument("--maintenance-amount", type=types.non_negative_float, help="maintenance amount (cum) that goes with --mmr")
    p.add_argument("--max-leverage", type=types.positive_float, help="asset's max leverage (Hyperliquid)")
    p.add_argument("--taker-fee", type=types.fee_rate, help="taker fee rate, a fraction below 0.01 (default: the exchange's standard rate)")
    p.add_argument("--tiers", metavar="FILE", type=types.input_file, help="tier history JSON (btperp shape) or a ccxt tier list")
    p.add_argument("--at", metavar="DATE", type=types.utc_time, help="use the tier table in force on this date (YYYY-MM-DD)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(run=run)


def _account_from_flags(args) -> dict:
    missing = [f"--{n}" for n in ("symbol", "side", "size", "entry") if getattr(args, n) is None
               and not (n == "size" and args.contracts is not None)]
    if missing:
        raise InputError(f"give --account FILE, or {', '.join(missing)} for one position")
    mode = args.margin_mode or "isolated"
    position = {"symbol": args.symbol, "side": args.side, "size": args.size, "entry_price": args.entry,
                "mark_price": args.mark, "leverage": args.leverage, "margin": args.margin,
                "maintenance_margin_rate": args.mmr, "maintenance_amount": args.maintenance_amount,
                "max_leverage": args.max_leverage}
    if args.contracts is not None or args.contract_size is not None:
        position.update(contracts=args.contracts, contract_size=args.contract_size)
    account = {"exchange": args.exchange or "binance-usdm", "margin_mode": mode,
               "positions": [position]}
    if args.wallet is not None:
        account["wallet_balance"] = args.wallet
    if args.taker_fee is not None:
        account["taker_fee"] = args.taker_fee
    return account


def _read_json(path: str):
    with open(path, encoding="utf-8") as handle:
        try:
            return json.load(handle)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}: not valid JSON: {exc}") from None
        except UnicodeDecodeError as exc:
            raise InputError(f"{path}: not UTF-8 text (a JSON file is): {exc.reason} at byte "
                             f"{exc.start}") from None


def _tier_source(path: str | None):
    """A ``tiers_for`` callable: the --tiers file, else the bundled file of the exchange."""
    if path:
        data = _read_json(path)
        if not isinstance(data, (list, dict)):
            raise InputError(f"{path}: a JSON {type(data).__name__}; expected a ccxt tier list or a "
                             f"tier-history object", field="--tiers")
        if isinstance(data, list):
            table = TierTable.from_ccxt(data, source=path)
            return lambda rulebook, symbol: TierHistory.constant(table)
        loaded = TierHistoryFile(data, path=path)
        return lambda rulebook, symbol: loaded.history(symbol, rulebook.settle)
    files: dict[str, TierHistoryFile | None] = {}

    def bundled(rulebook, symbol):
        if rulebook.name not in files:
            files[rulebook.name] = TierHistoryFile.bundled(rulebook.name)
        found = files[rulebook.name]
        return found.history(symbol, rulebook.settle) if found else None
    return bundled


def run(args) -> int:
    if args.account:
        account = _read_json(args.account)
        if not isinstance(account, dict):
            raise InputError(f"{args.account}: a JSON {type(account).__name__}; expected an account "
                             f"object with exchange, margin_mode, wallet_balance and positions (see "
                             f"examples/account.json)", field="--account")
        overrides = {"exchange": args.exchange, "margin_mode": args.margin_mode,
                     "wallet_balance": args.wallet, "taker_fee": args.taker_fee}
        account.update({k: v for k, v in overrides.items() if v is not None})
    else:
        account = _account_from_flags(args)
    report = calculate(account, tiers_for=_tier_source(args.tiers), at=args.at)
    out = report.to_dict()
    if args.json:
        print_json(out)
        return 0
    _print_report(out)
    return 0


def _print_report(out: dict) -> None:
    inverse = out.get("contract_type") == "inverse"
    headers = ["symbol", "side", "contracts" if inverse else "size", "entry", "mark", "lev", "tier", "mmr %",
               "initial m.", "maint. m.", "margin ratio %", "liq. price", "bankr. price", "to liq. %"]
    rows = []
    for p in out["positions"]:
        amount = (lambda x: _coin(x)) if inverse else fmt_number
        rows.append([p["symbol"], p["side"],
                     f"{p['contracts']:g} x {p['contract_size']:g} USD" if inverse else f"{p['size']:g}",
                     fmt_number(p["entry_price"]),
                     fmt_number(p["mark_price"]), f"{p['leverage']:g}x",
                     str(p["tier"]) + ("" if p["liquidation_tier"] in (None, p["tier"])
                                       else f"→{p['liquidation_tier']}"),
                     f"{p['maintenance_margin_rate'] * 100:g}", amount(p["initial_margin"]),
                     amount(p["maintenance_margin"]),
                     fmt_number(None if p["margin_ratio"] is None else p["margin_ratio"] * 100),
                     fmt_number(p["liquidation_price"]), fmt_number(p["bankruptcy_price"]),
                     fmt_number(p["distance_to_liquidation_pct"])])
    right = [False, False] + [True] * (len(headers) - 2)
    coins = sorted({p["settle"] for p in out["positions"]}) if inverse else []
    print(f"{out['exchange']}, {out['margin_mode']} margin"
          + (f", wallet {(_coin if inverse else fmt_number)(out['wallet_balance'])}"
             if out["wallet_balance"] is not None else "")
          + (f"; coin-margined: margins in {', '.join(coins)}, prices in USD" if inverse else ""))
    print(table(headers, rows, right))
    observed = {p["tier_table_observed"] for p in out["positions"] if p["tier_table_observed"]}
    if observed:
        print(f"tier table observed {', '.join(sorted(observed))}"
              + (" (date before the first known table: earliest table assumed)"
                 if any(p["tier_table_assumed"] for p in out["positions"]) else ""))
    if out.get("approximation"):
        print(out["approximation"])
    ratio = out["margin_ratio"]
    amount = _coin if inverse else fmt_number
    print(f"account margin ratio {fmt_number(None if ratio is None else ratio * 100)} % "
          f"(maintenance margin {amount(out['maintenance_margin'])} / margin balance "
          f"{amount(out['margin_balance'])}); liquidation at 100 %")


def _coin(x) -> str:
    """An amount in a coin: eight decimals, as exchanges show BTC."""
    return "-" if x is None else f"{x:,.8f}"
