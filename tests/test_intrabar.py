"""Inside the bar: the order of fills, funding and liquidation (btperp.intrabar), in the core and
through the broker, on the three cases users reported and on hand-built bars."""

import datetime as dt
import math
import warnings

import backtrader as bt
import numpy as np
import pytest
from perpkit import FLAT, make_frame, random_market, run, table

import btperp
from btperp.backtest import load_strategy
from btperp.bt import MarginSizer
from btperp.intrabar import (OrderKind, first_reach, low_first, order_time, value_at,
                             vertices, window_extreme)

UTC = dt.timezone.utc


# --- the model: a bar's path is open -> first extreme -> other extreme -> close, t = 0..1 -------------

def test_the_extreme_nearer_the_open_comes_first_and_the_low_on_a_tie():
    assert low_first(100, 110, 95, "path")          # 5 to the low, 10 to the high
    assert not low_first(100, 104, 90, "path")      # 4 to the high, 10 to the low
    assert low_first(100, 105, 95, "path")          # a tie: the low
    # adverse: the long's low, the short's high, whatever is nearer; flat follows path
    assert low_first(100, 101, 50, "adverse", side=1)
    assert not low_first(100, 150, 99, "adverse", side=-1)
    assert not low_first(100, 104, 90, "adverse", side=0)


def test_times_on_the_path_are_linear_along_each_leg():
    path = vertices(100, 110, 90, 105, low_first_=True)        # 100 -> 90 -> 110 -> 105
    assert path.prices == (100, 90, 110, 105) and path.times == (0, 1 / 3, 2 / 3, 1)
    assert first_reach(path, 95, falling=True) == pytest.approx(0.5 / 3)     # halfway down leg one
    assert first_reach(path, 108, falling=False) == pytest.approx(1.9 / 3)   # 90 -> 110: 18/20 of leg two
    assert first_reach(path, 80, falling=True) == math.inf      # never that low
    assert first_reach(path, 95, falling=True, t0=0.5) == math.inf  # after t = 1/2 it stays >= 100
    assert value_at(path, 2.5 / 3) == pytest.approx(107.5)
    assert window_extreme(path, 0.5, 1, lowest=True) == pytest.approx(100)  # from 100 at t = 1/2 up
    assert window_extreme(path, 0.0, 0.5 / 3, lowest=False) == 100
    assert window_extreme(path, 0.5 / 3, 2 / 3, lowest=False) == 110


def test_order_times_follow_backtraders_fill_rules():
    path = vertices(100, 110, 90, 105, low_first_=False)       # 100 -> 110 -> 90 -> 105
    assert order_time(OrderKind.MARKET, True, path) == 0
    assert order_time(OrderKind.CLOSE, True, path) == 1
    assert order_time(OrderKind.LIMIT, True, path, 101) == 0    # the open is already below: fills there
    assert order_time(OrderKind.LIMIT, True, path, 95) == pytest.approx(1.75 / 3)  # 15/20 of leg two
    assert order_time(OrderKind.STOP, False, path, 95) == pytest.approx(1.75 / 3)
    assert order_time(OrderKind.STOP, True, path, 105) == pytest.approx(0.5 / 3)
    # stop-limit: triggered at 105 going up (t = 0.5/3), then the buy limit 96 is met going down
    assert order_time(OrderKind.STOP_LIMIT, True, path, 105, 96) == pytest.approx(1.7 / 3)


# --- case 1: a position is never liquidated by prices before it existed ------------------------------

def _breakout(leverage, intrabar="path"):
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(btperp.load_feed("BTCUSDT", timeframe="4h", end="2020-03-31"))
    cerebro.addstrategy(load_strategy("breakout"))
    cerebro.addsizer(MarginSizer, percents=95)
    broker = btperp.install(cerebro, cash=10_000, leverage=leverage, intrabar=intrabar)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cerebro.run()
    return broker


@pytest.mark.parametrize("leverage", [20, 50])
def test_no_position_opened_inside_a_bar_is_liquidated_at_that_bars_open(leverage):
    broker = _breakout(leverage)
    opened = {(f.time, f.trade_id) for f in broker.fills if f.pnl == 0.0}
    assert broker.liquidations
    for x in broker.liquidations:
        if (x.time, x.position_id) in opened:
            assert not x.at_open, x                 # no 'gap' for a position that opened in the bar
            assert x.trigger_price == pytest.approx(x.liquidation_price, rel=1e-12)


def test_the_short_filled_at_9461_89_survives_its_own_bar():
    """make demo at 20x: a sell stop filled at 9,461.89 inside the 2020-02-19 20:00 4h bar (open
    10,150, mark open 10,141.63) was liquidated 'at the open' of that bar. The bar's mark goes to
    its high first (10,150 -> 10,299 is nearer than the low): the stop fills on the way down,
    after which the mark never comes back near the short's liquidation price (about 9,890)."""
    broker = _breakout(20)
    fill = next(f for f in broker.fills if f.price == pytest.approx(9461.89) and f.pnl == 0.0)
    assert fill.time == dt.datetime(2020, 2, 19, 20, tzinfo=UTC) and fill.side == "short"
    liquidation = next(x for x in broker.liquidations if x.position_id == fill.trade_id)
    assert liquidation.time > fill.time
    assert not liquidation.at_open


# --- case 2: a stop beyond the liquidation price does not save it -----------------------------------

class LongWithStop(bt.Strategy):
    """BTCUSDT, 2024-08-05: buy 90 USDT x 20 at the 05:00 open (53,505.2); a stop at 0.93 x the 06:00
    open (52,696.5 x 0.93 = 49,007.745) waits in the 06:00 bar."""

    def __init__(self):
        self.seen = []

    def next(self):
        now = self.data.datetime.datetime(0)
        if now == dt.datetime(2024, 8, 5, 4):
            self.buy(size=90 * 20 / 53505.2)
        elif now == dt.datetime(2024, 8, 5, 5):
            self.sell(exectype=bt.Order.Stop, price=0.93 * 52696.5, size=self.position.size)

    def notify_order(self, order):
        if order.status in (order.Completed, order.Canceled):
            self.seen.append((order.getstatusname(), order.exectype, bool(order.info.get("liquidation"))))


@pytest.mark.parametrize("intrabar", ["path", "adverse"])
def test_a_stop_beyond_the_liquidation_price_is_cancelled_by_the_liquidation(intrabar):
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(btperp.load_feed("BTCUSDT", start="2024-08-05", end="2024-08-06"))
    cerebro.addstrategy(LongWithStop)
    broker = btperp.install(cerebro, cash=100, leverage=20, intrabar=intrabar)
    strat = cerebro.run()[0]
    size = 1800 / 53505.2                              # 90 USDT x 20 of notional
    # Binance isolated LP, tier 1 of BTCUSDT (MMR 0.4 %, cum 0):
    # LP = (WB + cum - size x EP) / (size x MMR - size) = (90 - 1800) / (size x (0.004 - 1))
    lp = (90 - 1800) / (size * (0.004 - 1))
    assert lp == pytest.approx(51034.0763, abs=1e-4)
    # the 06:00 bar: mark 52,698.56 -> high 52,940.10 first (241.5 from the open against 3,634.8 to
    # the low) -> low 49,063.74; last 52,696.5 -> 52,953 -> 48,888. The mark reaches the LP at
    # t = (1 + (52,940.10 - 51,034.08) / (52,940.10 - 49,063.74)) / 3 = 0.50 of the bar; the stop's
    # 49,007.745 is reached by the last price at (1 + (52,953 - 49,007.745) / (52,953 - 48,888)) / 3
    # = 0.66.
    [x] = broker.liquidations
    assert x.time == dt.datetime(2024, 8, 5, 6, tzinfo=UTC)
    assert x.trigger_price == pytest.approx(lp, rel=1e-12) and not x.at_open
    assert x.fill_price == pytest.approx(53505.2 - 90 / size, rel=1e-12)    # bankruptcy: 50,829.94
    assert ("Canceled", bt.Order.Stop, False) in strat.seen
    assert ("Completed", bt.Order.Market, True) in strat.seen
    # the trader loses the 90 of margin and the 0.9 opening fee (taker 0.05 % of 1,800), no more
    assert broker.wallet_balance == pytest.approx(100 - 0.9 - 90, abs=1e-9)
    assert broker.wallet_balance >= 0


def test_a_stop_the_path_reaches_first_fills_and_the_position_is_gone():
    """The same bar with the stop at 52,000: the last price reaches it at t = (1 + 953/4,065) / 3 =
    0.41, before the mark reaches the LP (0.50): it fills at 52,000 and nothing is liquidated."""
    class EarlyStop(LongWithStop):
        def next(self):
            if self.data.datetime.datetime(0) == dt.datetime(2024, 8, 5, 5):
                self.sell(exectype=bt.Order.Stop, price=52000.0, size=self.position.size)
            else:
                super().next()

    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(btperp.load_feed("BTCUSDT", start="2024-08-05", end="2024-08-06"))
    cerebro.addstrategy(EarlyStop)
    broker = btperp.install(cerebro, cash=100, leverage=20, taker_fee=0.0)
    cerebro.run()
    assert broker.liquidations == []
    size = 1800 / 53505.2
    assert broker.fills[-1].price == 52000.0
    assert broker.wallet_balance == pytest.approx(100 + size * (52000.0 - 53505.2), rel=1e-12)


# --- the order of events on hand-built bars -----------------------------------------------------------

def test_a_short_opened_by_a_stop_below_the_open_is_judged_from_its_fill_on():
    """Bar 2: open 100, high 100.5 first (0.5 away against 6), low 94, close 95.5. A sell stop at 95
    fills at t = (1 + (100.5 - 95) / 6.5) / 3 = 0.62; after it the path goes 95 -> 94 -> 95.5, far from the
    50x short's LP (95 x (1 + 1/50) / (1 + 0.005) = 96.42). The bar's open (100) and high (100.5)
    are beyond it but came before the position existed."""
    high, low = [100, 100, 100.5, 96], [100, 100, 94, 95]
    frame = make_frame([100, 100, 95.5, 95.5], high=high, low=low, mark_high=high, mark_low=low)
    strat, broker = run(frame, {1: [("sell", {"exectype": bt.Order.Stop, "price": 95.0, "size": 1.0})]},
                        leverage=50, cash=1000, taker_fee=0.0, tiers=FLAT)
    assert broker.fills[0].price == 95.0
    assert broker.liquidations == []
    lp = broker.get_margin_state(strat.data).liquidation_price
    assert lp == pytest.approx(95 * (1 + 1 / 50) / (1 + 0.005), rel=1e-12)
    # the cautious model puts the short's adverse extreme (the high) first too, but the book was
    # flat at the open, so the same path is used: the same answer
    _, adverse = run(frame, {1: [("sell", {"exectype": bt.Order.Stop, "price": 95.0, "size": 1.0})]},
                     leverage=50, cash=1000, taker_fee=0.0, tiers=FLAT, intrabar="adverse")
    assert adverse.liquidations == []


def test_a_long_opened_by_a_limit_is_liquidated_by_the_fall_after_its_fill():
    """Bar 2: open 100, low 90 first, high 101, close 100. A buy limit at 95 fills at t = 1/6; the
    path then falls on to 90, through the 50x long's LP 95 x (1 - 1/50) / (1 - 0.005) = 93.57:
    liquidated at the LP, not at the open."""
    high, low = [100, 100, 101, 100], [100, 100, 90, 100]
    frame = make_frame([100, 100, 100, 100], high=high, low=low, mark_high=high, mark_low=low)
    _, broker = run(frame, {1: [("buy", {"exectype": bt.Order.Limit, "price": 95.0, "size": 1.0})]},
                    leverage=50, cash=1000, taker_fee=0.0, maker_fee=0.0, tiers=FLAT)
    [x] = broker.liquidations
    assert x.trigger_price == pytest.approx(95 * (1 - 1 / 50) / (1 - 0.005), rel=1e-12)
    assert not x.at_open


def test_an_isolated_position_closed_beyond_its_bankruptcy_price_loses_only_its_margin():
    """A 10x long of 1 at 100 (margin 10, LP (10 - 100) / (0.01 - 1) = 90.91, bankruptcy 90): the mark
    holds at 95 while the last price wicks to 80 and fills the stop at 85. The trader loses the 10
    of margin; the insurance fund covers the other 5."""
    frame = make_frame([100, 100, 100, 100], high=[100, 100, 100, 100], low=[100, 100, 80, 100],
                       mark_low=[100, 100, 95, 100])
    tiers = table((0, float("inf"), 0.01, 100))
    _, broker = run(frame, {0: [("buy", {"size": 1.0})],
                            1: [("sell", {"exectype": bt.Order.Stop, "price": 85.0, "size": 1.0})]},
                    leverage=10, cash=50, taker_fee=0.0, maker_fee=0.0, tiers=tiers)
    assert broker.liquidations == []
    close = broker.fills[-1]
    assert close.price == 85.0
    assert close.pnl == pytest.approx(-10.0) and close.insurance_flow == pytest.approx(-5.0)
    assert broker.wallet_balance == pytest.approx(40.0)
    assert broker.insurance_fund == pytest.approx(-5.0)


def test_numpy_sizes_are_sizes():
    """A size computed with numpy (np.float64) is held like a float through the next bars."""
    frame = make_frame([100, 100, 101, 102, 101])
    _, broker = run(frame, {0: [("buy", {"size": np.float64(2.5)})]}, leverage=5, cash=1000)
    assert [f.size for f in broker.fills] == [2.5]
    assert broker.getposition(broker.cerebro.datas[0]).size == 2.5


# --- case 3: a reversal counts what its closing part realizes ---------------------------------------

def test_a_reversal_counts_the_released_margin_and_the_realized_pnl():
    """1x isolated, 10,000 USDT: short 2.759 at 3,404.38 (fee 0.05 % = 4.6963), the price falls to
    2,875.2, then order_target_percent(0.9). Value 9,995.3037 + 2.759 x 529.18 = 11,455.3113; the
    target is 0.9 of it, 10,309.7802 of notional, a long of 3.5857. The long's margin and fee
    (10,309.7802 + 5.1549 = 10,314.9351) exceed the cross wallet plus the short's margin
    (9,995.3037) but not once the short's realized +1,460.0276 less its 3.9664 closing fee is counted
    (11,451.3649)."""
    frame = make_frame([3404.38, 3404.38, 2875.2, 2875.2, 2875.2])
    plan = {0: [("sell", {"size": 2.759})], 2: [("order_target_percent", {"target": 0.9})]}
    strat, broker = run(frame, plan, leverage=1, cash=10_000)
    fee_open = 2.759 * 3404.38 * 0.0005
    value = 10_000 - fee_open + 2.759 * (3404.38 - 2875.2)
    assert value == pytest.approx(11455.3113, abs=1e-4)
    target = 0.9 * value / 2875.2
    assert [s for _, s, *_ in strat.orders] == ["Completed", "Completed"]
    assert broker.rejections == []
    assert strat.position.size == pytest.approx(target, rel=1e-12)
    assert target == pytest.approx(3.5857, abs=1e-4)


# --- random strategies: the invariants hold whatever the order of events ------------------------------

import tempfile                                                    # noqa: E402

import pyarrow.parquet as pq                                       # noqa: E402
from hypothesis import event, given, settings                      # noqa: E402
from hypothesis import strategies as st                            # noqa: E402

PROP_TIERS = table((0, 500, 0.004, 125), (500, 2000, 0.01, 50), (2000, 8000, 0.025, 20),
                   (8000, float("inf"), 0.05, 10))


class Plan(bt.Strategy):
    """Sends ``plan`` ({bar: [(feed, method, kwargs)]}) and watches the wallet after every bar."""

    params = (("plan", None),)

    def __init__(self):
        self.lowest_wallet = math.inf

    def next(self):
        self.lowest_wallet = min(self.lowest_wallet, self.broker.wallet_balance)
        for i, method, kwargs in (self.p.plan or {}).get(len(self) - 1, []):
            getattr(self, method)(data=self.datas[i], **kwargs)


def _account(seed, margin_mode, fill_policy, intrabar, feeds):
    """Frames, a plan of orders and broker options drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 45))
    frames = [random_market(rng, n, vol=float(rng.choice([0.005, 0.02, 0.05])), jump_chance=0.06,
                            jump_sd=0.2, wick_sd=0.015, later_share=6, symbol=f"T{i}/USDT:USDT")
              for i in range(feeds)]
    plan = {}
    for _ in range(int(rng.integers(2, 10))):
        bar, i = int(rng.integers(0, n - 2)), int(rng.integers(0, feeds))
        ref = float(frames[i]["close"].iloc[bar])
        size = float(rng.uniform(0.05, 8.0))
        kind = rng.choice(["market", "limit", "stop", "stop_limit", "close", "reverse"])
        buy = bool(rng.random() < 0.5)
        away = float(rng.uniform(0.0, 0.06))
        if kind == "close":
            order = ("close", {})
        elif kind == "reverse":
            order = ("order_target_size", {"target": size if buy else -size})
        elif kind == "market":
            order = ("buy" if buy else "sell", {"size": size})
        elif kind == "limit":          # below the close for a buy, above for a sell
            order = ("buy" if buy else "sell", {"size": size, "exectype": bt.Order.Limit,
                                               "price": ref * (1 - away if buy else 1 + away)})
        else:                          # stops beyond the close in the direction they trade
            stop = ref * (1 + away if buy else 1 - away)
            kwargs = {"size": size, "exectype": bt.Order.Stop, "price": stop}
            if kind == "stop_limit":
                kwargs.update(exectype=bt.Order.StopLimit,
                              plimit=stop * (1 + 0.01 * rng.uniform(-1, 1)))
            order = ("buy" if buy else "sell", kwargs)
        plan.setdefault(bar, []).append((i,) + order)
    options = dict(cash=float(rng.choice([50.0, 300.0, 2000.0])),
                   leverage=float(rng.choice([1, 3, 10, 25, 50, 75, 125])),
                   margin_mode=margin_mode, fill_policy=fill_policy, intrabar=intrabar,
                   liquidation=str(rng.choice(["partial", "full"])))
    return frames, plan, options


@settings(max_examples=300)
@given(seed=st.integers(0, 2**32 - 1), margin_mode=st.sampled_from(["isolated", "cross"]),
       fill_policy=st.sampled_from(["bankruptcy", "fee"]), intrabar=st.sampled_from(["path", "adverse"]),
       feeds=st.sampled_from([1, 2]))
def test_random_strategies_keep_the_accounts_invariants(seed, margin_mode, fill_policy, intrabar, feeds):
    frames, plan, options = _account(seed, margin_mode, fill_policy, intrabar, feeds)
    cerebro = bt.Cerebro(stdstats=False)
    for f in frames:
        cerebro.adddata(btperp.bt.feed_from_frame(f))
    cerebro.addstrategy(Plan, plan=plan)
    with tempfile.TemporaryDirectory() as tmp:
        broker = btperp.install(cerebro, tiers=PROP_TIERS, history=tmp, **options)
        strat = cerebro.run()[0]
        events = pq.read_table(strat.analyzers.perphistory.get_analysis()["events"]).to_pandas()
    event(f"{len(frames)} feeds, {options['margin_mode']}, {options['intrabar']}")
    event("liquidated" if broker.liquidations else "not liquidated")
    event("a partial step" if any(x.partial for x in broker.liquidations) else "no partial step")
    cash0 = options["cash"]
    scale = max(cash0, 1.0)
    # wallet = initial + realized PnL - fees - funding (liquidation losses are in the PnL and fees),
    # each PnL recomputed from its fill's prices and sizes
    for f in broker.fills:
        sign = 1 if f.side == "long" else -1
        if f.pnl or f.insurance_flow:
            entries = [g for g in broker.fills if g.symbol == f.symbol and g.trade_id == f.trade_id
                       and g.pnl == 0 and g.insurance_flow == 0 and g.time <= f.time]
            assert entries
        assert f.fee == pytest.approx(abs(f.size) * f.price * (0.0002 if f.maker else 0.0005), rel=1e-12)
    for x in broker.liquidations:
        sign = 1 if x.side == "long" else -1
        assert x.pnl == pytest.approx(sign * x.size * (x.fill_price - x.entry_price), rel=1e-9,
                                      abs=1e-9 * scale)
    realized = math.fsum([f.pnl for f in broker.fills] + [x.pnl for x in broker.liquidations])
    fees = math.fsum([f.fee for f in broker.fills] + [x.fee for x in broker.liquidations])
    funding = math.fsum(p.payment for p in broker.funding_payments)
    assert broker.wallet_balance == pytest.approx(cash0 + realized - fees - funding, rel=1e-9,
                                                  abs=1e-9 * scale)
    # the insurance fund is the sum of its flows, and events.parquet carries every one of them
    flows = [x.insurance_flow for x in broker.liquidations] + [f.insurance_flow for f in broker.fills]
    assert broker.insurance_fund == pytest.approx(math.fsum(flows), abs=1e-9 * scale)
    by_kind = events.groupby("kind")
    if broker.fills:
        fills = events[events.kind == "fill"]
        assert fills["fee"].sum() == pytest.approx(broker.trading_fees, abs=1e-9 * scale)
        assert fills["pnl"].sum() == pytest.approx(math.fsum(f.pnl for f in broker.fills), abs=1e-9 * scale)
    if "insurance_fund" in by_kind.groups:
        assert events[events.kind == "insurance_fund"]["amount"].sum() == pytest.approx(
            broker.insurance_fund, abs=1e-9 * scale)
    if broker.funding_payments:
        assert events[events.kind == "funding"]["amount"].sum() == pytest.approx(funding, abs=1e-9 * scale)
    # no position is liquidated at the open of the bar it was opened in
    opened = {(f.symbol, f.time, f.trade_id) for f in broker.fills if f.pnl == 0 and not f.insurance_flow}
    for x in broker.liquidations:
        if (x.symbol, x.time, x.position_id) in opened:
            assert not x.at_open
    if options["margin_mode"] == "isolated":
        # an isolated position loses at most its margin plus the fees it paid: per trade, what was
        # realized and paid in funding never exceeds the initial margin posted at its opening fills
        lev = options["leverage"]
        trades = {}
        for f in broker.fills:
            t = trades.setdefault((f.symbol, f.trade_id), [0.0, 0.0])
            t[0] += f.pnl
            if f.pnl == 0 and not f.insurance_flow:
                t[1] += abs(f.size) * f.price / lev
        for x in broker.liquidations:
            trades.setdefault((x.symbol, x.position_id), [0.0, 0.0])[0] += x.pnl
        for p in broker.funding_payments:
            trades.setdefault((p.symbol, p.position_id), [0.0, 0.0])[0] -= p.payment
        for data in strat.datas:                    # a position still open: its PnL at the last mark
            pos = broker.getposition(data)
            if pos.size:
                book = broker.book(data)
                trades[(book.inst.symbol, book.position_id)][0] += pos.size * (
                    data.mark_close[0] - pos.price)
        for key, (gain, margin) in trades.items():
            assert -gain <= margin + 1e-9 * scale, key
        assert strat.lowest_wallet >= -1e-9 * scale and broker.wallet_balance >= -1e-9 * scale


# --- the broker and the replay share the model: entries inside a bar ---------------------------------

from btperp.audit import market_of                               # noqa: E402
from btperp.replay import Positions, replay                     # noqa: E402
from btperp.rules import get_rulebook                           # noqa: E402


@settings(max_examples=60)
@given(seed=st.integers(0, 2**32 - 1), side=st.sampled_from([1, -1]),
       leverage=st.sampled_from([5.0, 20.0, 50.0, 100.0]), intrabar=st.sampled_from(["path", "adverse"]),
       kind=st.sampled_from(["limit", "stop"]))
def test_the_broker_and_the_replay_agree_on_a_position_entered_inside_a_bar(seed, side, leverage, intrabar,
                                                                            kind):
    rng = np.random.default_rng(seed)
    frame = random_market(rng, 30, vol=float(rng.choice([0.005, 0.02, 0.05])), jump_chance=0.06,
                          jump_sd=0.2, wick_sd=0.015, later_share=6)
    bar = int(rng.integers(2, 20))
    o, h, lo = (float(frame[c].iloc[bar]) for c in ("open", "high", "low"))
    # an order whose price the bar's last-price range reaches strictly inside it
    buy = side > 0
    if kind == "limit":
        price = (o - rng.uniform(0.1, 0.9) * (o - lo)) if buy else (o + rng.uniform(0.1, 0.9) * (h - o))
        exectype = bt.Order.Limit
    else:
        price = (o + rng.uniform(0.1, 0.9) * (h - o)) if buy else (o - rng.uniform(0.1, 0.9) * (o - lo))
        exectype = bt.Order.Stop
    size = 400.0 / price                      # tier 1 of PROP_TIERS: up to 125x
    _, broker = run(frame, {bar - 1: [("buy" if buy else "sell",
                                       {"size": size, "exectype": exectype, "price": price})]},
                    leverage=leverage, cash=1e9, tiers=PROP_TIERS, intrabar=intrabar,
                    taker_fee=0.0, maker_fee=0.0)
    fill = broker.fills[0]
    assert fill.time == frame.index[bar] and fill.price == pytest.approx(price, rel=1e-12)
    # its time on the bar's path, as the core puts it (direction decided on the mark; flat at the open)
    first_low = bool(low_first(*(float(frame["mark_" + c].iloc[bar]) for c in ("open", "high", "low")),
                               intrabar, 0))
    path = vertices(o, h, lo, float(frame["close"].iloc[bar]), first_low)
    t = order_time(OrderKind.LIMIT if kind == "limit" else OrderKind.STOP, buy, path, price)
    assert 0 < t < 1
    market = market_of(frame, PROP_TIERS)
    out = replay(market, get_rulebook("binance-usdm"),
                 Positions.of(side, size, price, size * price / leverage, leverage, bar, len(frame),
                              entry_t=t), intrabar=intrabar, taker_fee=0.0)
    got = [frame.index.get_loc(x.time) for x in broker.liquidations]
    assert got == ([int(out.bar[0])] if out.liquidated[0] else [])
    event("liquidated in its entry bar" if got == [bar] else "liquidated later" if got else "survived")
    if got:
        x = broker.liquidations[0]
        assert x.trigger_price == pytest.approx(out.trigger_price[0], rel=1e-9)
        assert x.bankruptcy_price == pytest.approx(out.bankruptcy_price[0], rel=1e-9)
        assert x.at_open == (bool(out.gap[0]) and got != [bar])
