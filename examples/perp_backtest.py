"""Two backtests on the bundled data with btperp's broker (run by `make demo`).

1. ETHUSDT, 19 May 2021: an isolated long opened at the 18 May open (3283.23) with 1000 USDT of
   margin, at 2x and 3x leverage, liquidated (or not) on the mark price, and on the last price as
   freqtrade and Jesse would.
2. backtrader's documented SMA crossover, unchanged, on BTCUSDT 1h in 2024 at 5x: trades, fees,
   funding and the margin state of its open position; its margin history goes to out/demo-history
   (`btperp history show out/demo-history`).
"""

import datetime as dt
import sys
import warnings
from pathlib import Path

import backtrader as bt

import btperp
from btperp.errors import EarliestTableAssumed

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from strategies.sma_cross import SmaCross  # noqa: E402

warnings.simplefilter("ignore", EarliestTableAssumed)   # 2021 predates the first bundled tier table


class LongFromMay18(bt.Strategy):
    params = (("leverage", 2.0),)

    def next(self):
        if self.data.datetime.datetime(0) == dt.datetime(2021, 5, 17, 23):
            self.buy(size=1000.0 * self.p.leverage / 3283.23)      # fills at the 18 May 00:00 open


def may_2021(leverage: float, trigger: str) -> str:
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(btperp.load_feed("ETHUSDT", start="2021-05-17", end="2021-05-21"))
    cerebro.addstrategy(LongFromMay18, leverage=leverage)
    broker = btperp.install(cerebro, cash=1010, leverage=leverage, trigger=trigger)
    cerebro.run()
    if not broker.liquidations:
        state = broker.get_margin_state(cerebro.datas[0])
        return (f"survives: liquidation price {state.liquidation_price:,.2f}, "
                f"margin ratio {state.margin_ratio:.1%} on 21 May")
    liq = broker.liquidations[0]
    return (f"liquidated {liq.time:%Y-%m-%d %H:%M} UTC at {liq.trigger} {liq.trigger_price:,.2f}, "
            f"taken over at {liq.fill_price:,.2f}, lost {liq.loss:,.2f} USDT")


def sma_2024() -> None:
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(btperp.load_feed("BTCUSDT", start="2024-01-01", end="2024-12-31"))
    cerebro.addstrategy(SmaCross)
    cerebro.addanalyzer(bt.analyzers.TradeAnalyzer)
    broker = btperp.install(cerebro, cash=50_000, leverage=5, history=ROOT / "out" / "demo-history")
    strat = cerebro.run()[0]
    trades = strat.analyzers.tradeanalyzer.get_analysis()
    ledger = broker.ledger()
    print(f"  {trades.total.closed} closed trades, realized PnL {ledger['realized_pnl']:,.2f}, "
          f"fees {broker.fees_paid:,.2f}, funding paid {broker.funding_paid:,.2f} "
          f"({len(broker.funding_payments)} events), liquidations {len(broker.liquidations)}")
    print(f"  final value {broker.getvalue():,.2f} USDT (wallet {broker.wallet_balance:,.2f} + "
          f"unrealized at mark {ledger['unrealized_pnl']:,.2f})")
    written = strat.analyzers.perphistory.get_analysis()
    print(f"  margin history: {written['rows']:,} rows in {Path(written['history']).relative_to(ROOT)}, "
          f"events in {Path(written['events']).relative_to(ROOT)}")
    state = broker.get_margin_state(strat.data)
    if state is not None:
        print(f"  open {state.side} {state.size:g} BTC at {state.entry_price:,.2f}: tier {state.tier}, "
              f"maintenance {state.maintenance_margin:,.2f}, margin ratio {state.margin_ratio:.2%}, "
              f"liquidation {state.liquidation_price:,.2f}")


if __name__ == "__main__":
    print("ETHUSDT, isolated long from 3283.23 with 1000 USDT margin, held through 19 May 2021:")
    for leverage, trigger in ((3, "mark"), (2, "mark"), (2, "last")):
        print(f"  {leverage}x, {trigger:4} trigger: {may_2021(leverage, trigger)}")
    print()
    print("backtrader's SMA crossover, unchanged, BTCUSDT 1h 2024, 50,000 USDT at 5x isolated:")
    sma_2024()
