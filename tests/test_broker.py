"""PerpBroker: liquidation, funding, margin checks and account value inside backtrader."""

import datetime as dt
import math
import warnings

import backtrader as bt
import pandas as pd
import pytest
from perpkit import FLAT, Script, feed, make_frame, run, table

import btperp
from btperp.errors import DataError, DataWarning, EarliestTableAssumed, InputError
from btperp.margin import evaluate, make_position
from strategies.sma_cross import SmaCross

H = dt.timedelta(hours=1)


# --- acceptance: ETHUSDT, May 2021 -------------------------------------------------------------

class LongEthMay2021(bt.Strategy):
    """A long whose entry fills at the 2021-05-18 00:00 open (3283.23), sized to 1000 USDT x lev."""

    params = (("leverage", 1.0),)

    def __init__(self):
        self.fills, self.trades, self.seen_at = [], [], []

    def next(self):
        if self.data.datetime.datetime(0) == dt.datetime(2021, 5, 17, 23):
            self.buy(size=1000.0 * self.p.leverage / 3283.23)

    def notify_order(self, order):
        if order.status == order.Completed:
            self.fills.append(order)
            self.seen_at.append(self.data.datetime.datetime(0))

    def notify_trade(self, trade):
        if trade.isclosed:
            self.trades.append(trade)


def run_eth(leverage, **options):
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(btperp.load_feed("ETHUSDT", start="2021-05-17", end="2021-05-21"))
    cerebro.addstrategy(LongEthMay2021, leverage=leverage)
    broker = btperp.install(cerebro, cash=1010.0, leverage=leverage, **options)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        strat = cerebro.run()[0]
    return strat, broker, caught


def eth_size_and_margin(leverage, through):
    """Size and isolated margin of the 2021-05-18 long after the funding events up to ``through``
    (the raw funding rates times the mark at each event, from the bundled files)."""
    folder = btperp.io.paths.exchange_dir("binance-usdm") / "ETHUSDT"
    funding = pd.read_parquet(folder / "funding.parquet")
    marks = pd.read_parquet(folder / "mark-1h.parquet").set_index("time")["open"]
    paid = funding[(funding.time > "2021-05-18 00:00") & (funding.time <= through)]
    size = 1000.0 * leverage / 3283.23
    per_unit = (paid["rate"].to_numpy() * marks.loc[paid["time"].dt.floor("h")].to_numpy()).sum()
    return size, size * 3283.23 / leverage - size * per_unit


def test_eth_3x_is_liquidated_in_the_2021_05_19_12h_bar():
    strat, broker, caught = run_eth(3)
    entry, liq = strat.fills
    assert entry.executed.price == 3283.23
    assert bt.num2date(entry.executed.dt) == dt.datetime(2021, 5, 18)
    assert broker.liquidations[0].time == dt.datetime(2021, 5, 19, 12, tzinfo=dt.timezone.utc)
    assert liq.info.liquidation is True and bt.num2date(liq.executed.dt) == dt.datetime(2021, 5, 19, 12)
    # the strategy hears of it in the same bar, and its trade is closed
    assert strat.seen_at[1] == dt.datetime(2021, 5, 19, 12)
    assert len(strat.trades) == 1
    record = broker.liquidations[0]
    # the earliest known table (2022-02-05) is assumed, with a warning: ETH tier 1 0.5 %
    assert any(issubclass(w.category, EarliestTableAssumed) for w in caught)
    # by hand: size 3000 / 3283.23, margin 1000 less the funding of the four events after the
    # entry (each: size × rate × mark), LP = (size × entry − margin) / (size × (1 − 0.005))
    size, margin = eth_size_and_margin(3, "2021-05-19 12:00")
    lp = (size * 3283.23 - margin) / (size * (1 - 0.005))
    assert record.trigger_price == pytest.approx(lp, rel=1e-12)
    assert round(record.trigger_price, 2) == 2204.18                  # README
    frame = btperp.load("ETHUSDT", start="2021-05-19 11:00", end="2021-05-19 12:00")
    assert frame["mark_low"].iloc[0] > record.trigger_price >= frame["mark_low"].iloc[1]
    # bankruptcy fill: the trader loses exactly the position's isolated margin (1000 less funding paid)
    assert record.fill_price == pytest.approx(3283.23 - margin / size, rel=1e-12)
    assert (round(record.fill_price, 2), round(record.loss, 2)) == (2193.16, 996.04)    # README demo
    assert record.fill_price == pytest.approx(record.bankruptcy_price)
    assert broker.getvalue() == pytest.approx(1010.0 - 1000.0 - broker.trading_fees, rel=1e-12)


def test_eth_2x_survives_on_the_mark_but_the_last_price_liquidates_it_at_13h():
    strat, broker, _ = run_eth(2)
    assert broker.liquidations == [] and len(strat.fills) == 1
    state = broker.get_margin_state(strat.data)
    size, margin = eth_size_and_margin(2, "2021-05-21 00:00")      # the last bar; funding received
    assert state.liquidation_price == pytest.approx((size * 3283.23 - margin) / (size * 0.995), rel=1e-12)
    assert round(state.liquidation_price, 2) == 1645.51                # README demo
    frame = btperp.load("ETHUSDT", start="2021-05-18", end="2021-05-21")
    assert frame["mark_low"].min() == pytest.approx(1764.26, abs=0.005)   # never reached it
    strat, broker, _ = run_eth(2, trigger="last")
    (record,) = broker.liquidations
    assert record.time == dt.datetime(2021, 5, 19, 13, tzinfo=dt.timezone.utc)
    size, margin = eth_size_and_margin(2, "2021-05-19 13:00")
    assert record.trigger == "last"
    assert record.trigger_price == pytest.approx((size * 3283.23 - margin) / (size * 0.995), rel=1e-12)
    assert round(record.trigger_price, 2) == 1654.23 and record.last_price == 1400.73   # README
    assert round(record.fill_price, 2) == 1645.95 and round(record.loss, 2) == 997.36


# --- the SMA crossover of backtrader's documentation, unchanged ---------------------------------

class MarginStates(bt.Analyzer):
    def start(self):
        self.states = []

    def next(self):
        state = self.strategy.broker.get_margin_state(self.data)
        if state is not None:
            self.states.append(state)


def test_unchanged_sma_crossover_trades_pays_funding_and_reports_its_margin():
    cerebro = bt.Cerebro()
    cerebro.adddata(btperp.load_feed("BTCUSDT", start="2024-01-01", end="2024-03-31"))
    cerebro.addstrategy(SmaCross)
    cerebro.addanalyzer(MarginStates)
    cerebro.addanalyzer(bt.analyzers.TradeAnalyzer)
    broker = btperp.install(cerebro, cash=20_000, leverage=5)
    strat = cerebro.run()[0]
    trades = strat.analyzers.tradeanalyzer.get_analysis()
    assert trades.total.closed > 20
    assert len(broker.funding_payments) > 100 and broker.funding_paid != 0
    states = strat.analyzers.marginstates.states
    assert states and all(s.tier >= 1 and 0 < s.margin_ratio < 1 for s in states)
    assert all(s.liquidation_price < s.mark_price for s in states)       # longs only
    assert all(s.initial_margin == pytest.approx(s.size * s.entry_price / 5) for s in states)
    ledger = broker.ledger()
    assert ledger["value"] == pytest.approx(20_000 + ledger["realized_pnl"] - broker.fees_paid
                                            - broker.funding_paid + ledger["unrealized_pnl"], rel=1e-12)


# --- funding -----------------------------------------------------------------------------------

def test_one_btc_long_through_january_2024_pays_the_sum_of_mark_times_rate():
    class HoldJanuary(bt.Strategy):
        def next(self):
            now = self.data.datetime.datetime(0)
            if now == dt.datetime(2023, 12, 31, 22):
                self.buy(size=1.0)                      # fills at the 23:00 open
            elif now == dt.datetime(2024, 1, 31, 22):
                self.close()                            # fills at the 23:00 open

    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(btperp.load_feed("BTCUSDT", start="2023-12-31", end="2024-02-01"))
    cerebro.addstrategy(HoldJanuary)
    broker = btperp.install(cerebro, cash=100_000, leverage=1)
    cerebro.run()
    # independently: the raw files, each event valued at the mark price at its time
    folder = btperp.io.paths.exchange_dir("binance-usdm") / "BTCUSDT"
    funding = pd.read_parquet(folder / "funding.parquet")
    marks = pd.read_parquet(folder / "mark-1h.parquet").set_index("time")["open"]
    jan = funding[(funding.time >= "2024-01-01") & (funding.time < "2024-02-01")]
    assert len(jan) == 93
    expected = float((jan["rate"].to_numpy() * marks.loc[jan["time"].dt.floor("h")].to_numpy()).sum())
    assert len(broker.funding_payments) == 93
    assert broker.funding_paid == pytest.approx(expected, rel=1e-12)


def test_funding_is_charged_to_the_trade_and_from_the_isolated_margin():
    frame = make_frame([100.0] * 10, funding={3: 0.001, 6: -0.0005})
    strat, broker = run(frame, {0: [("buy", dict(size=2.0))], 7: [("close", {})]}, cash=1000,
                        leverage=10, taker_fee=0.0)
    paid = 2 * 100 * 0.001 - 2 * 100 * 0.0005
    assert broker.funding_paid == pytest.approx(paid)
    assert [p.payment for p in broker.funding_payments] == pytest.approx([0.2, -0.1])
    ((pnl, pnlcomm),) = strat.trades
    assert pnl == 0 and pnlcomm == pytest.approx(-paid)
    assert broker.getvalue() == pytest.approx(1000 - paid)


def test_a_short_receives_positive_funding():
    frame = make_frame([100.0] * 5, funding={2: 0.001})
    _, broker = run(frame, {0: [("sell", dict(size=1.0))]}, cash=1000, leverage=2, taker_fee=0.0)
    assert broker.funding_paid == pytest.approx(-0.1)


# --- orders and margin checks ------------------------------------------------------------------

def test_an_order_above_the_available_balance_is_refused_with_its_reason():
    frame = make_frame([100.0] * 5)
    strat, broker = run(frame, {0: [("buy", dict(size=11.0))]}, cash=100, leverage=10)
    (order,) = strat.orders
    assert order[1] == "Margin" and "exceed the available balance" in order[6]["margin_reason"]
    assert broker.rejections[0].reason == order[6]["margin_reason"]


def test_an_order_whose_notional_the_tier_refuses_at_that_leverage():
    tiers = table((0, 1000, 0.01, 50), (1000, float("inf"), 0.025, 20))
    frame = make_frame([100.0] * 5)
    strat, _ = run(frame, {0: [("buy", dict(size=15.0))], 2: [("buy", dict(size=9.0))]},
                   cash=10_000, leverage=50, tiers=tiers)
    refused, filled = strat.orders
    assert refused[1] == "Margin" and "tier 2, which allows at most 20x" in refused[6]["margin_reason"]
    assert filled[1] == "Completed" and filled[2] == 9.0


def test_a_leverage_no_tier_table_allows_is_an_error_not_a_run_of_refusals():
    """FLAT allows 100x at most: at 1e9x every order would be refused; the run says why instead."""
    with pytest.raises(InputError, match=r"leverage 1e\+09x is above the 100x") as err:
        run(make_frame([100.0] * 5), {0: [("buy", dict(size=1.0))]}, cash=100, leverage=1e9)
    assert err.value.field == "leverage"
    strat, _ = run(make_frame([100.0] * 5), {0: [("buy", dict(size=1.0))]}, cash=100, leverage=100)
    assert strat.orders[0][1] == "Completed"


def test_closing_is_never_refused_and_a_reversal_counts_the_margin_it_frees():
    frame = make_frame([100.0] * 6)
    strat, broker = run(frame, {0: [("buy", dict(size=9.0))], 2: [("sell", dict(size=18.0))]},
                        cash=100, leverage=10, taker_fee=0.0)
    assert [o[1] for o in strat.orders] == ["Completed", "Completed"]
    assert broker.getposition(strat.data).size == -9.0


def test_maker_fee_for_a_limit_filled_at_its_price_and_taker_otherwise():
    frame = make_frame([100, 100, 98, 99, 99], low=[100, 100, 97, 98, 98])
    strat, broker = run(frame, {0: [("buy", dict(size=1.0, price=98.0, exectype=bt.Order.Limit))],
                                3: [("sell", dict(size=1.0))]}, cash=1000, leverage=1)
    buy, sell = strat.orders
    assert buy[3] == 98.0 and buy[5] == pytest.approx(98 * 0.0002)
    assert sell[5] == pytest.approx(99 * 0.0005)


def test_fractional_stakes_are_not_rounded_to_integers():
    frame = make_frame([100.0] * 5)

    class Tranche(bt.Strategy):
        def next(self):
            if len(self) == 1:
                self.buy()

    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(feed(frame))
    cerebro.addstrategy(Tranche)
    cerebro.addsizer(bt.sizers.FixedSize, stake=0.5, tranches=2)
    btperp.install(cerebro, cash=1000, tiers=FLAT)
    strat = cerebro.run()[0]
    assert strat.position.size == 0.25


def test_lot_size_rounds_orders_down_and_rejects_what_is_below_one_lot():
    frame = make_frame([100.0] * 5)
    strat, broker = run(frame, {0: [("buy", dict(size=0.12345)), ("buy", dict(size=0.0004))]},
                        cash=1000, lot_size=0.001)
    rejected, filled = strat.orders
    assert rejected[1] == "Rejected" and "below the lot size" in rejected[6]["reject_reason"]
    assert filled[2] == pytest.approx(0.123)


# --- liquidation mechanics ---------------------------------------------------------------------

def falling(n=10, start=100.0, step=-2.0):
    return [start] + [start + step * i for i in range(n - 1)]


def test_isolated_long_is_liquidated_at_its_liquidation_price_and_loses_its_margin():
    strat, broker = run(make_frame(falling()), {0: [("buy", dict(size=1.0))]}, cash=100, leverage=10,
                        taker_fee=0.0)
    (record,) = broker.liquidations
    assert record.trigger_price == pytest.approx(90 / 0.995)          # (10 + P − 100) = 0.005 P
    assert record.fill_price == pytest.approx(90.0)                   # bankruptcy: margin 10 gone
    assert record.insurance_flow == pytest.approx(record.trigger_price - 90.0)
    assert broker.getvalue() == pytest.approx(90.0)
    assert strat.orders[-1][6]["liquidation"] is True


def test_fee_policy_closes_at_the_liquidation_price_and_charges_the_liquidation_fee():
    strat, broker = run(make_frame(falling()), {0: [("buy", dict(size=1.0))]}, cash=100, leverage=10,
                        taker_fee=0.0, fill_policy="fee")
    (record,) = broker.liquidations
    lp = 90 / 0.995
    # equity at the liquidation price is the maintenance margin (0.5 %): the 1.25 % fee is capped
    # at what is left, so the trader's balance does not go below zero
    assert record.fill_price == pytest.approx(lp) and record.fee == pytest.approx(0.005 * lp)
    assert broker.getvalue() == pytest.approx(90.0) and broker.insurance_fund == pytest.approx(record.fee)


def test_fee_policy_returns_what_the_fee_leaves():
    tiers = table((0, float("inf"), 0.02, 20))
    _, broker = run(make_frame(falling()), {0: [("buy", dict(size=1.0))]}, cash=100, leverage=10,
                    taker_fee=0.0, fill_policy="fee", tiers=tiers, liquidation_fee=0.005)
    (record,) = broker.liquidations
    lp = 90 / 0.98
    assert record.fee == pytest.approx(0.005 * lp)
    assert broker.getvalue() == pytest.approx(90 + 0.02 * lp - 0.005 * lp)


def test_a_gap_past_the_bankruptcy_price_liquidates_at_the_open_and_the_fund_covers_it():
    close = [100, 100, 100, 80, 80]
    frame = make_frame(close, open=[100, 100, 100, 80, 80])
    strat, broker = run(frame, {0: [("buy", dict(size=1.0))]}, cash=100, leverage=10, taker_fee=0.0)
    (record,) = broker.liquidations
    assert record.at_open and record.trigger_price == 80.0 and record.fill_price == pytest.approx(90.0)
    assert record.insurance_flow == pytest.approx(-10.0)              # 80 − 90 on one unit
    assert broker.getvalue() == pytest.approx(90.0)                   # never below the margin lost


def test_liquidation_cancels_the_pending_orders_of_that_data():
    frame = make_frame(falling())
    strat, broker = run(frame, {0: [("buy", dict(size=1.0)),
                                    ("sell", dict(size=1.0, price=150.0, exectype=bt.Order.Limit))]},
                        cash=100, leverage=10)
    statuses = [o[1] for o in strat.orders]
    assert statuses == ["Completed", "Canceled", "Completed"]


def test_short_liquidated_on_the_mark_high():
    close = [100, 100, 101, 103, 105, 107, 109, 111, 113]
    _, broker = run(make_frame(close), {0: [("sell", dict(size=1.0))]}, cash=100, leverage=10,
                    taker_fee=0.0)
    (record,) = broker.liquidations
    assert record.side == "short" and record.trigger_price == pytest.approx(110 / 1.005)


def test_mark_wick_liquidates_but_a_last_price_wick_does_not():
    n = 8
    close = [100.0] * n
    low = [100.0] * n
    low[4] = 80.0                                                     # last-price wick only
    frame = make_frame(close, low=low)
    _, broker = run(frame, {0: [("buy", dict(size=1.0))]}, cash=100, leverage=10)
    assert broker.liquidations == []
    _, broker = run(frame, {0: [("buy", dict(size=1.0))]}, cash=100, leverage=10, trigger="last")
    assert len(broker.liquidations) == 1


def test_add_margin_moves_the_liquidation_price_away():
    frame = make_frame(falling(12))

    class AddMargin(Script):
        def next(self):
            super().next()
            if len(self) == 3:
                self.before = self.broker.get_margin_state(self.data)
                self.broker.add_margin(self.data, 5.0)
                self.after = self.broker.get_margin_state(self.data)

    strat, broker = run(frame, {0: [("buy", dict(size=1.0))]}, strategy=AddMargin, cash=100,
                        leverage=10, taker_fee=0.0)
    assert strat.before.margin == pytest.approx(10) and strat.after.margin == pytest.approx(15)
    assert strat.after.liquidation_price == pytest.approx(85 / 0.995)
    assert broker.liquidations[0].trigger_price == pytest.approx(85 / 0.995)


def test_margin_state_matches_the_core():
    frame = make_frame([100.0, 100.0, 99.0, 98.0])
    strat, broker = run(frame, {0: [("buy", dict(size=1.0))]}, cash=100, leverage=10, taker_fee=0.0)
    state = broker.get_margin_state(strat.data)
    core = evaluate("binance-usdm", [make_position("TEST/USDT:USDT", "long", 1.0, 100.0, tiers=FLAT,
                                                   mark_price=98.0, leverage=10, margin=10.0)])
    assert state == core.positions[0]


def test_margin_calls_are_recorded_and_reach_the_strategy():
    # margin ratio 0.8 at 90 / 0.99375 = 90.566 (10 + P − 100 = 0.005 P / 0.8); liquidation at 90.452
    close = [100, 100, 99, 95, 92, 90.5, 90.5, 92, 90.5, 89, 89]
    strat, broker = run(make_frame(close), {0: [("buy", dict(size=1.0))]}, cash=100, leverage=10,
                        taker_fee=0.0)
    # crossed at the 05:00 bar; back above at 07:00 re-arms it; crossed again at 08:00
    assert [c.time.hour for c in broker.margin_calls] == [5, 8]
    assert broker.liquidations[0].time.hour == 9
    call = broker.margin_calls[0]
    assert strat.calls == broker.margin_calls and call.level == 0.8
    assert call.margin_ratio == pytest.approx(0.005 * 90.5 / (10 + 90.5 - 100))
    assert call.time < broker.liquidations[0].time


# --- cross margin ------------------------------------------------------------------------------

def test_cross_single_position_uses_the_whole_wallet():
    strat, broker = run(make_frame(falling(60, step=-1.0)), {0: [("buy", dict(size=1.0))]}, cash=50,
                        leverage=10, margin_mode="cross", taker_fee=0.0)
    (record,) = broker.liquidations
    assert record.trigger_price == pytest.approx(50 / 0.995)          # 50 + P − 100 = 0.005 P
    assert record.fill_price == pytest.approx(50.0) and broker.getvalue() == pytest.approx(0.0)


def test_cross_account_with_two_positions_is_liquidated_together():
    # one account: 40 + (P − 100) = 0.005 P + 0.5 at P = 60.80 for AAA while BBB stays at 100
    a = make_frame(falling(50, step=-1.0), symbol="AAA/USDT:USDT")
    b = make_frame([100.0] * 50, symbol="BBB/USDT:USDT")
    plan = {0: [("buy", dict(data=None, size=1.0))]}

    class Both(Script):
        def next(self):
            if len(self) == 1:
                self.buy(data=self.datas[0], size=1.0)
                self.buy(data=self.datas[1], size=1.0)

    strat, broker = run([a, b], plan, strategy=Both, cash=40, leverage=10, margin_mode="cross",
                        taker_fee=0.0)
    assert {r.symbol for r in broker.liquidations} == {"AAA/USDT:USDT", "BBB/USDT:USDT"}
    assert len({r.time for r in broker.liquidations}) == 1
    assert broker.getvalue() == pytest.approx(0.0, abs=1e-9)
    # the account's margin balance at the trigger prices went to the insurance fund
    trig = {r.symbol: r.trigger_price for r in broker.liquidations}
    equity = 40 + (trig["AAA/USDT:USDT"] - 100) + (trig["BBB/USDT:USDT"] - 100)
    assert broker.insurance_fund == pytest.approx(equity)


# --- modes, feeds and data problems ------------------------------------------------------------

def sma_run(**cerebro_kwargs):
    cerebro = bt.Cerebro(stdstats=False, **cerebro_kwargs)
    cerebro.adddata(btperp.load_feed("ETHUSDT", start="2021-04-01", end="2021-06-30"))
    cerebro.addstrategy(SmaCross)
    broker = btperp.install(cerebro, cash=3000, leverage=20)
    cerebro.run()
    return broker


@pytest.mark.filterwarnings("ignore::btperp.errors.EarliestTableAssumed")
def test_runonce_and_event_mode_give_the_same_account():
    a, b, c = sma_run(), sma_run(runonce=False), sma_run(preload=False)
    assert a.liquidations and a.ledger() == b.ledger() == c.ledger()
    assert a.liquidations == b.liquidations == c.liquidations
    assert a.funding_payments == b.funding_payments == c.funding_payments


class LedgerAnalyzer(bt.Analyzer):
    def stop(self):
        self.rets = self.strategy.broker.ledger()

    def get_analysis(self):
        return self.rets


@pytest.mark.filterwarnings("ignore::btperp.errors.EarliestTableAssumed")
def test_optstrategy_with_several_processes():
    cerebro = bt.Cerebro(stdstats=False, maxcpus=2)
    cerebro.adddata(btperp.load_feed("ETHUSDT", start="2021-04-01", end="2021-06-30"))
    cerebro.optstrategy(SmaCross, pfast=[5, 10])
    cerebro.addanalyzer(LedgerAnalyzer)
    btperp.install(cerebro, cash=3000, leverage=20)
    results = cerebro.run()
    ledgers = [r[0].analyzers.ledgeranalyzer.get_analysis() for r in results]
    assert len(ledgers) == 2 and ledgers[0] != ledgers[1]
    assert ledgers[1] == sma_run().ledger()                        # pfast=10 is the default


def test_a_bar_without_a_mark_is_an_error_naming_it():
    mark = [100.0] * 6
    mark[3] = math.nan
    frame = make_frame([100.0] * 6, mark_close=mark, mark_low=mark, mark_high=mark, mark_open=mark)
    with pytest.raises(DataError, match="2024-01-01 03:00"):
        run(frame, {0: [("buy", dict(size=1.0))]}, cash=1000)


def test_mark_fallback_uses_last_prices_and_warns_with_the_count():
    mark = [100.0] * 6
    mark[3] = mark[4] = math.nan
    frame = make_frame([100.0] * 6, mark_close=mark, mark_low=mark, mark_high=mark, mark_open=mark)
    with pytest.warns(DataWarning, match="2 bars had no mark price"):
        run(frame, {0: [("buy", dict(size=1.0))]}, cash=1000, mark_fallback="last")


def test_a_plain_feed_needs_marks_or_the_fallback():
    frame = make_frame([100.0] * 5)
    plain = bt.feeds.PandasData(dataname=frame[["open", "high", "low", "close", "volume"]].tz_localize(None),
                                name="TESTUSDT", timeframe=bt.TimeFrame.Minutes, compression=60)
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(plain)
    cerebro.addstrategy(Script, plan={0: [("buy", dict(size=1.0))]})
    btperp.install(cerebro, cash=1000, tiers=FLAT)
    with pytest.raises(DataError, match="no mark prices"):
        cerebro.run()


def test_attached_marks_drive_liquidation_of_a_plain_feed():
    frame = make_frame(falling(), low=[60.0] * 10)           # last price wicks far below the mark
    plain = bt.feeds.PandasData(dataname=frame[["open", "high", "low", "close", "volume"]].tz_localize(None),
                                name="TESTUSDT", timeframe=bt.TimeFrame.Minutes, compression=60)
    btperp.attach(plain, frame=frame)
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(plain)
    cerebro.addstrategy(Script, plan={0: [("buy", dict(size=1.0))]})
    broker = btperp.install(cerebro, cash=100, leverage=10, tiers=FLAT, taker_fee=0.0)
    cerebro.run()
    (record,) = broker.liquidations
    assert record.trigger_price == pytest.approx(90 / 0.995)       # the mark's, not the wick's


def test_bad_settings_are_clear_errors():
    with pytest.raises(InputError, match="leverage"):
        btperp.install(bt.Cerebro(), leverage=0)
    with pytest.raises(InputError, match="fill policy"):
        btperp.install(bt.Cerebro(), fill_policy="market")
    with pytest.raises(InputError, match="unknown setting"):
        btperp.install(bt.Cerebro(), per_data={"BTCUSDT": {"levrage": 3}})
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(feed(make_frame([1.0] * 3, symbol="NOPE/USDT:USDT")))
    cerebro.addstrategy(Script)
    btperp.install(cerebro)
    with pytest.raises(InputError, match="no tier table for NOPE/USDT:USDT"):
        cerebro.run()


def test_per_data_settings():
    a = make_frame([100.0] * 5, symbol="AAA/USDT:USDT")
    b = make_frame([100.0] * 5, symbol="BBB/USDT:USDT")

    class Both(Script):
        def next(self):
            if len(self) == 1:
                self.buy(data=self.datas[0], size=1.0)
                self.buy(data=self.datas[1], size=1.0)

    strat, broker = run([a, b], strategy=Both, cash=1000, leverage=10,
                        per_data={"BBB/USDT:USDT": {"leverage": 2, "taker_fee": 0.0}})
    assert broker.get_margin_state(strat.datas[0]).leverage == 10
    assert broker.get_margin_state(strat.datas[1]).initial_margin == pytest.approx(50.0)
    assert broker.trading_fees == pytest.approx(100 * 0.0005)


def test_daily_bars_pay_each_event_with_the_position_held_at_its_time():
    """Bought at a day's open (after its 00:00 event), closed at a later day's open (after that
    day's 00:00 event): pays the events in between, as the hourly data says."""
    hourly = btperp.load("BTCUSDT", start="2024-01-01", end="2024-01-10 23:00")
    daily = btperp.resample(hourly, "1d")
    strat, broker = run(daily, {0: [("buy", dict(size=1.0))], 3: [("close", {})]}, cash=100_000,
                        tiers=FLAT)
    # fills at the 2024-01-02 and 2024-01-05 opens
    events = hourly.loc["2024-01-02 01:00":"2024-01-05 00:00", "funding_per_unit"].dropna()
    assert len(events) == 9
    assert broker.funding_paid == pytest.approx(events.sum(), rel=1e-12)
    # the same account on hourly bars
    _, hourly_broker = run(hourly, {23: [("buy", dict(size=1.0))], 95: [("close", {})]},
                           cash=100_000, tiers=FLAT)
    assert hourly_broker.funding_paid == pytest.approx(broker.funding_paid, rel=1e-12)


def test_events_later_in_the_bar_are_paid_by_the_position_after_the_fills():
    frame = make_frame([100.0] * 6, funding={2: 0.001, 4: 0.001}, funding_later={2: 0.002, 4: 0.002})
    # opened at bar 2's open: pays bar 2's later event only; closed at bar 4's open: pays its open one
    _, broker = run(frame, {1: [("buy", dict(size=1.0))], 3: [("close", {})]}, cash=1000, tiers=FLAT)
    assert [p.payment for p in broker.funding_payments] == pytest.approx([0.2, 0.1])


def test_float_dust_does_not_leave_a_position_or_an_order_open():
    frame = make_frame([100.0] * 6)
    strat, broker = run(frame, {0: [("buy", dict(size=0.1)), ("buy", dict(size=0.2))],
                                2: [("sell", dict(size=0.3))]}, cash=1000, tiers=FLAT)
    assert 0.1 + 0.2 != 0.3
    assert [o[1] for o in strat.orders] == ["Completed"] * 3
    assert broker.getposition(strat.data).size == 0 and len(strat.trades) == 1
    assert broker.get_orders_open() == []
