"""``btperp audit``: explain a backtest's liquidations, or check a position (a real one) against the
exchange's rules (thin over :mod:`btperp.audit`)."""

from __future__ import annotations

import argparse
import textwrap

from . import args as types
from .format import fmt_number, print_json, table

POSITION_EXAMPLES = """\
examples:
  btperp audit position --symbol ETHUSDT --side long --entry-time "2021-05-18 00:00" \\
        --entry-price 3283.23 --margin 1000 --leverage 3 --end 2021-05-21
  btperp audit position --symbol ETHUSDT --side long --entry-time "2021-05-18 00:00" \\
        --entry-price 3283.23 --margin 1000 --leverage 2 --trigger last --json
  btperp audit position --symbol BTCUSDT --side short --entry-time "2024-03-01 08:00" \\
        --entry-price 61500 --size 0.5 --leverage 20 \\
        --reported-time "2024-03-04 21:17" --reported-price 64400 --plot out/audit.png
  # coin-margined (BTCUSD_PERP, 100 USD contracts; data and tiers under --datadir binance-coinm/)
  btperp audit position --exchange binance-coinm --symbol BTCUSD_PERP --side long \
        --entry-time "2024-03-01 08:00" --entry-price 61500 --contracts 1000 --leverage 20 --datadir data
"""

HISTORY_EXAMPLES = """\
examples:
  btperp run --strategy breakout --symbol BTCUSDT --timeframe 4h --leverage 20 --out out/run
  btperp audit history out/run                  # a table, and out/run/audit/*.png
  btperp audit history out/compare --json       # a sweep: every run's liquidations
"""


def register(sub) -> None:
    p = sub.add_parser("audit", help="explain liquidations: a backtest's, or a real position's",
                       description="Explain a backtest's liquidations, or replay a position against "
                                   "the exchange's rules (mark price, tier table in force, funding).")
    asub = p.add_subparsers(dest="audit_command", metavar="AUDIT_COMMAND", required=True)

    pos = asub.add_parser(
        "position", help="when would the rules liquidate this position? (and was a reported "
                         "liquidation consistent with them?)",
        description=textwrap.dedent("""\
            Replay one position over the mark price history (bundled or fetched), paying funding
            at each funding time and using the tier table in force, until the rules liquidate it
            or the data ends. Liquidation is checked per bar: the bar opening beyond the
            liquidation price, or its adverse extreme (mark low for a long, high for a short)
            reaching it. Give what the exchange reported (--reported-time, --reported-price) for
            a verdict: consistent within a bar, earlier or later than the rules imply."""),
        epilog=POSITION_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    pos.add_argument("--exchange", default="binance-usdm", help="exchange (default binance-usdm)")
    pos.add_argument("--symbol", required=True, help="BTCUSDT or BTC/USDT:USDT")
    pos.add_argument("--side", required=True, choices=["long", "short"])
    pos.add_argument("--entry-time", required=True, type=types.utc_time, help="when the position was opened, UTC")
    pos.add_argument("--entry-price", type=types.positive_float,
                     help="average entry price (default: the last-price open of the entry bar)")
    pos.add_argument("--size", type=types.positive_float, help="position size in base units (BTC, ETH)")
    pos.add_argument("--contracts", type=types.positive_float,
                     help="coin-margined exchanges (binance-coinm, bybit-inverse): position size in contracts")
    pos.add_argument("--contract-size", type=types.positive_float,
                     help="coin-margined: USD per contract (default: the exchange's, Binance BTCUSD 100, "
                          "other COIN-M 10, Bybit 1)")
    pos.add_argument("--margin", type=types.positive_float,
                     help="isolated margin, USDT, or the coin for coin-margined contracts (cross: the "
                          "wallet balance backing the position)")
    pos.add_argument("--leverage", type=types.positive_float, help="leverage setting; with --margin it gives the size")
    pos.add_argument("--margin-mode", default="isolated", choices=["isolated", "cross"],
                     help="margin mode (default isolated)")
    pos.add_argument("--end", type=types.utc_time, help="last time (or day, included whole) to replay; default: the data's end")
    pos.add_argument("--timeframe", help="bar size of the replay (default: the finest stored, 1h bundled)")
    pos.add_argument("--trigger", default="mark", choices=["mark", "last"],
                     help="price that liquidates: mark (the exchange's rule, default) or last")
    pos.add_argument("--detail", metavar="TIMEFRAME",
                     help="replay the liquidation bar on these finer stored bars (e.g. 1m; import them "
                          "with `btperp data import-klines`): the liquidation and the report are then "
                          "judged to that resolution")
    pos.add_argument("--liquidation", default="partial", choices=["partial", "full"],
                     help="partial (default): list the exchange's partial liquidation steps before "
                          "the close; full: one close")
    pos.add_argument("--reported-time", type=types.utc_time, help="when the exchange reported the liquidation, UTC")
    pos.add_argument("--reported-price", type=types.positive_float, help="the price the exchange reported")
    pos.add_argument("--datadir", type=types.data_dir, help="datasets folder (default: the bundled datasets/)")
    pos.add_argument("--plot", metavar="PNG", type=types.output_file, help="write a chart of the position to this file")
    pos.add_argument("--json", action="store_true", help="print JSON")
    pos.set_defaults(run=run_position)

    hist = asub.add_parser(
        "history", help="explain each liquidation in a backtest's margin history",
        description=textwrap.dedent("""\
            For each liquidation in a run's history (DIR, or a sweep's DIR/run_id=*/): time,
            symbol, side, size, entry, leverage, tier and rate, mark and last price in the bar,
            liquidation and bankruptcy price, equity and maintenance margin at the trigger, loss,
            fee, insurance-fund flow, funding paid, and when the other price (last, for a mark
            run) would have triggered: earlier, same bar, later or never. Writes a PNG per
            liquidation (mark and last price around it, entry, liquidation and bankruptcy
            prices, funding) to DIR/audit unless --no-plots."""),
        epilog=HISTORY_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    hist.add_argument("dir", type=types.existing_path, help="directory the run (or sweep) wrote its history to")
    hist.add_argument("--datadir", type=types.data_dir, help="datasets folder for the market data (default: the run's)")
    hist.add_argument("--plots", metavar="DIR", type=types.output_dir, help="folder for the PNGs (default DIR/audit)")
    hist.add_argument("--no-plots", action="store_true", help="no PNGs")
    hist.add_argument("--json", action="store_true", help="print JSON")
    hist.set_defaults(run=run_history)
    register_adl(asub)


def _price(x) -> str:
    return fmt_number(x)


def _coin(x) -> str:
    """An amount in a coin: eight decimals, as exchanges show BTC."""
    return "-" if x is None else f"{x:,.8f}"


def run_position(args: argparse.Namespace) -> int:
    from ..audit import audit_position
    a = audit_position(args.symbol, args.side, args.entry_time, args.entry_price, size=args.size,
                       margin=args.margin, leverage=args.leverage, exchange=args.exchange,
                       margin_mode=args.margin_mode, end=args.end, timeframe=args.timeframe,
                       trigger=args.trigger, reported_time=args.reported_time,
                       reported_price=args.reported_price, datadir=args.datadir, detail=args.detail,
                       liquidation=args.liquidation, contracts=args.contracts,
                       contract_size=args.contract_size)
    plot = None
    if args.plot and a.contract_size is not None:
        from ..errors import InputError
        raise InputError("the chart of a coin-margined audit is not drawn yet; drop --plot", field="plot")
    if args.plot:
        from ..report.audit import plot_position
        plot = str(plot_position(args.plot, a))
    if args.json:
        out = a.to_dict()
        out["plot"] = plot
        print_json(out)
        return 0
    inverse = a.contract_size is not None
    amount = _coin if inverse else _price
    size = (f"{a.size:.6g} contracts of {a.contract_size:g} USD" if inverse else f"{a.size:.6g}")
    print(f"{a.symbol} {a.side} {size} at {a.entry_price:,.2f} ({a.entry_time} UTC), "
          f"{a.leverage:.4g}x {a.margin_mode}, margin {amount(a.margin)} {a.settle}; tier table "
          f"{a.tier_table}; {a.timeframe} bars to {a.data_end}"
          + ("; prices in USD, amounts in " + a.settle if inverse else ""))
    print(f"at entry: liquidation price {_price(a.entry_liquidation_price)}, bankruptcy price "
          f"{_price(a.entry_bankruptcy_price)}")
    if a.liquidated:
        how = "opened beyond it" if a.gap else f"{a.trigger} reached it"
        unit = f"{a.detail} bar" if a.detail else "bar"
        print(f"LIQUIDATED by the {a.trigger} price in the {a.liquidation_time} {unit}: liquidation price "
              f"{_price(a.liquidation_price)} ({how}, triggered at {_price(a.trigger_price)}), "
              f"bankruptcy price {_price(a.bankruptcy_price)}, tier {a.tier} "
              f"({a.maintenance_rate * 100:.2f} %), equity {amount(a.equity)} vs maintenance margin "
              f"{amount(a.maintenance_margin)}")
        print(f"  bar: mark O {a.bar['mark']['open']:,.2f} H {a.bar['mark']['high']:,.2f} "
              f"L {a.bar['mark']['low']:,.2f} C {a.bar['mark']['close']:,.2f}; last O "
              f"{a.bar['last']['open']:,.2f} H {a.bar['last']['high']:,.2f} L {a.bar['last']['low']:,.2f} "
              f"C {a.bar['last']['close']:,.2f}")
        if any(e["partial"] for e in a.events):
            for e in a.events:
                what = (f"partial step: {e['size']:.6g} closed at {_price(e['fill_price'])}, fee "
                        f"{amount(e['fee'])}, {e['remaining']:.6g} left, margin ratio "
                        f"{e['margin_ratio'] * 100:.2f} %" if e["partial"] else
                        f"closed: {e['size']:.6g} at {_price(e['fill_price'])} (trigger "
                        f"{_price(e['trigger_price'])}), loss {amount(e['loss'])}")
                print(f"  {e['time']} tier {e['tier']}: {what}")
    else:
        print(f"not liquidated by the {a.trigger} price through {a.data_end} ({a.bars_held} bars)")
    print(f"funding paid until then: {amount(a.funding_paid)} {a.settle} (negative: received)")
    o = a.other_trigger
    print(f"with the {o['trigger']} price triggering instead: "
          + (f"liquidated in the {o['liquidation_time']} bar at {_price(o['liquidation_price'])}"
             if o["liquidated"] else "never liquidated"))
    if a.verdict is not None:
        print(f"\nreported liquidation {a.reported_time}"
              + (f" at {a.reported_price:,.2f}" if a.reported_price is not None else "")
              + f": {a.verdict_text.upper()}")
        for line in a.evidence:
            print(f"  - {line}")
    for note in a.notes:
        print(f"note: {note}")
    if plot:
        print(f"chart: {plot}")
    return 0


def run_history(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..report import audit_history
    plots = None if args.no_plots else (args.plots or str(Path(args.dir) / "audit"))
    audits = audit_history(args.dir, datadir=args.datadir, plots=plots)
    if args.json:
        print_json([a.to_dict() for a in audits])
        return 0
    if not audits:
        print(f"{args.dir}: no liquidations")
        _adl_mention(args)
        return 0
    headers = ["run", "time", "symbol", "side", "size", "entry", "lev", "tier (rate)", "mark", "last",
               "liq. price", "trigger", "bankr.", "equity", "maint.", "loss", "fee", "insurance",
               "funding", "other trigger"]
    rows = []
    for a in audits:
        rate = "-" if a.maintenance_rate is None else f"{a.tier} ({a.maintenance_rate * 100:.2f} %)"
        other = f"{a.other_trigger}: {a.other_verdict}" + (f" {a.other_time}" if a.other_time and
                                                            a.other_verdict != "same bar" else "")
        size = f"{a.size:.6g}" + (f" of {a.size + a.remaining:.6g}" if a.partial else "")
        rows.append([a.run_id, a.time, a.symbol.split(":")[0], a.side, size, _price(a.entry_price),
                     f"{a.leverage:g}x", rate, _price(a.mark_price), _price(a.last_price),
                     _price(a.liquidation_price), _price(a.trigger_price) + (" gap" if a.gap else ""),
                     _price(a.bankruptcy_price),
                     _price(a.equity), _price(a.maintenance_margin), _price(a.loss), _price(a.fee),
                     _price(a.insurance_flow), _price(a.funding_paid), other])
    print(table(headers, rows, right=[False, False, False, False] + [True] * 15 + [False]))
    if any(a.partial for a in audits):
        print("note: 'x of y': a partial liquidation step closed x of a position of y at the trigger "
              "price (fee on x only); the remainder stayed open, or (still margin-deficient) was "
              "closed at the bankruptcy price in the row that follows")
    notes = sorted({n for a in audits for n in a.notes})
    for note in notes:
        print(f"note: {note}")
    if plots:
        print(f"charts: {plots}/ ({sum(1 for a in audits if a.plot)} PNG)")
    _adl_mention(args)
    return 0


ADL_EXAMPLES = """\
examples:
  btperp audit adl out/run                      # the flagged bars, a table
  btperp audit adl out/compare --json           # a sweep's runs, as JSON
  btperp audit adl out/run --sweep 0.02 --quantile 0.9
"""


def register_adl(asub) -> None:
    from ..cascade import QUANTILE, SWEEP, VOLUME_MULTIPLE, VOLUME_SWEEP, VOLUME_WINDOW
    adl = asub.add_parser(
        "adl", help="bars where a liquidation cascade hit the other side while a winning position "
                    "ranked high for auto-deleveraging (an indicator)",
        description=textwrap.dedent(f"""\
            An indicator of auto-deleveraging (ADL) exposure, not a simulation: no counterparties
            are simulated, nothing is deleveraged. Lists each bar of a run's history (DIR, or a
            sweep's DIR/run_id=*/) where a position was in profit and ranked high (its adl_score
            at or above the --quantile of the run's profitable scores on that symbol, or at least
            --min-score) while the market data shows a liquidation cascade of the other side:
            longs liquidated for a short (the last low below the mark low by --sweep of the mark,
            or by --volume-sweep on a volume --volume-multiple times its median over the
            --volume-window bars before), shorts liquidated for a long (the last high above the
            mark high). The datasets have no market-wide liquidation volumes: the cascade is
            estimated from the bars.
            Defaults: --sweep {SWEEP:g} --volume-multiple {VOLUME_MULTIPLE:g} --volume-sweep {VOLUME_SWEEP:g} --volume-window {VOLUME_WINDOW} --quantile {QUANTILE:g}"""),
        epilog=ADL_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    adl.add_argument("dir", type=types.existing_path, help="directory the run (or sweep) wrote its history to")
    adl.add_argument("--datadir", type=types.data_dir, help="datasets folder for the market data (default: the run's)")
    adl.add_argument("--sweep", type=types.non_negative_float, default=SWEEP,
                     help="last price beyond the mark by this fraction of the mark: a cascade bar "
                          f"(default {SWEEP:g})")
    adl.add_argument("--volume-multiple", type=types.non_negative_float, default=VOLUME_MULTIPLE,
                     help=f"volume this many times its trailing median ... (default {VOLUME_MULTIPLE:g})")
    adl.add_argument("--volume-sweep", type=types.non_negative_float, default=VOLUME_SWEEP,
                     help=f"... with a sweep of at least this fraction: a cascade bar too (default {VOLUME_SWEEP:g})")
    adl.add_argument("--volume-window", type=types.positive_int, default=VOLUME_WINDOW,
                     help=f"bars before the bar the volume median is over (default {VOLUME_WINDOW})")
    adl.add_argument("--quantile", type=types.finite_float, default=QUANTILE,
                     help="ranked high: adl_score at or above this quantile of the run's profitable "
                          f"scores (default {QUANTILE:g})")
    adl.add_argument("--min-score", type=types.non_negative_float,
                     help="ranked high: adl_score at least this (the exchange's units), instead of --quantile")
    adl.add_argument("--json", action="store_true", help="print JSON")
    adl.set_defaults(run=run_adl)


def _adl_mention(args: argparse.Namespace) -> None:
    """One line under ``audit history``: how many bars ``audit adl`` flags (nothing if it cannot tell)."""
    from ..audit import adl_exposure
    from ..errors import BtperpError
    try:
        flagged = adl_exposure(args.dir, datadir=args.datadir)
    except BtperpError:
        return
    if len(flagged):
        print(f"ADL exposure (an indicator): {len(flagged)} bars where a winning position ranked high "
              f"during a liquidation cascade of the other side; see `btperp audit adl {args.dir}`")


def run_adl(args: argparse.Namespace) -> int:
    from ..adl import records
    from ..audit import adl_exposure
    flagged = adl_exposure(args.dir, datadir=args.datadir, sweep=args.sweep,
                           volume_multiple=args.volume_multiple, volume_sweep=args.volume_sweep,
                           volume_window=args.volume_window, quantile=args.quantile,
                           min_score=args.min_score)
    notes = flagged.attrs["notes"]
    if args.json:
        print_json({"indicator": "ADL exposure: not a simulation", "rule": flagged.attrs["rule"],
                    "flagged": records(flagged), "notes": notes})
        return 0
    if flagged.empty:
        print(f"{args.dir}: no bar where a winning position ranked high during a liquidation cascade "
              f"of the other side")
    else:
        headers = ["run", "time", "symbol", "trade", "side", "uPnL", "adl_score", "rank", "liquidated",
                   "sweep %", "last", "mark", "vol. x", "rule"]
        rows = [[r.run_id, r.time.strftime("%Y-%m-%d %H:%M"), r.symbol.split(":")[0], str(r.trade_id), r.side,
                 _price(r.unrealized_pnl), f"{r.adl_score:.4g}", f"{r.adl_rank:.2f}", r.liquidated_side,
                 f"{r.sweep * 100:.2f}", _price(r.last_extreme), _price(r.mark_extreme),
                 "-" if r.volume_ratio != r.volume_ratio else f"{r.volume_ratio:.1f}", r.rule]
                for r in flagged.itertuples()]
        print(table(headers, rows, right=[False] * 5 + [True] * 3 + [False] + [True] * 4 + [False]))
    print("indicator, not a simulation: a flagged bar is where a real account could have been "
          "auto-deleveraged (cascade estimated from last vs mark extremes and volume; rank against the "
          "run's own profitable bars)")
    for note in notes:
        print(f"note: {note}")
    return 0
