"""Partial liquidation (#19): each exchange's rule, worked out by hand, through the broker and the
audit (README "Partial liquidation", btperp.liquidation's module docstring).

Expected values are written out here from the tier tables and the formulas:
* Binance (Liquidation Protocols): one order leaves the position's notional at the trigger price
  at the floor of its tier (the top of the tier below), the liquidation fee on the part closed;
  still deficient: the rest closed at the bankruptcy price;
* Bybit (Liquidation Process, USDT Contract): the highest lower tier (by value at entry) whose
  margin requirement the remainder meets, no liquidation fee;
* Hyperliquid (Liquidations): 20 % of a position above 100,000 USDC; within the 30 s cooldown (the
  same bar) the whole position.
Isolated long, Binance: LP = (margin + cum − size × entry) / (size × MMR − size) ("How to
Calculate Liquidation Price of USDⓈ-M Futures Contracts").
"""

import math

import backtrader as bt
import numpy as np
import pandas as pd
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from perpkit import make_frame, random_market, run, table

import btperp
from btperp.audit import audit_history, audit_position, market_of
from btperp.backtest import RunConfig
from btperp.errors import InputError
from btperp.liquidation import LiquidationMode, partial_step
from btperp.margin import Position, Side
from btperp.replay import liquidation_events
from btperp.rules import get_rulebook
from btperp.rules.base import PartialRule
from btperp.rules.hyperliquid import Hyperliquid
from btperp.tiers import TierHistory

# --- the acceptance example: 5,000,000 USDT of BTCUSDT long at 20x -------------------------------

# Binance BTCUSDT brackets observed 2022-05-21 (datasets/binance-usdm/tier_history.json), in force
# in June 2022: tier 4 from 1,000,000 at 2.5 % (cum 16,300), tier 3 from 250,000 at 1 % (cum 1,300),
# tier 2 from 50,000 at 0.5 % (cum 50).
T4_FLOOR, T4_MMR, T4_CUM = 1_000_000.0, 0.025, 16_300.0
T3_FLOOR, T3_MMR, T3_CUM = 250_000.0, 0.01, 1_300.0
LIQ_FEE = 0.0125                    # BTCUSDT liquidationFee
ENTRY = 29_739.1                    # last-price open of 2022-06-10 01:00, where the order fills
SIZE = 5_000_000.0 / ENTRY          # 5,000,000 USDT at entry
MARGIN = 5_000_000.0 / 20           # isolated, 20x


class Hold(bt.Strategy):
    """Buys ``size`` at the first bar (filled at the next open) and holds."""

    params = (("size", SIZE),)

    def __init__(self):
        self.liquidation_orders = []

    def next(self):
        if len(self) == 1:
            self.buy(size=self.p.size)

    def notify_order(self, order):
        if order.status == order.Completed and order.info.get("liquidation"):
            self.liquidation_orders.append(order)


def btc_run(liquidation, history=None):
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(btperp.load_feed("BTCUSDT", start="2022-06-10", end="2022-06-15"))
    cerebro.addstrategy(Hold)
    broker = btperp.install(cerebro, cash=300_000, leverage=20, liquidation=liquidation,
                            history=history)
    return cerebro.run()[0], broker


def funding_per_unit(start, end):
    """Σ rate × mark at the event over the funding events at the bar opens in [start, end]
    (Binance "Introduction to Binance Futures Funding Rates": position × mark × rate)."""
    f = btperp.load("BTCUSDT", start="2022-06-10", end="2022-06-15").loc[start:end]
    f = f[f["funding_rate"].notna()]
    return float((f["funding_rate"] * f["mark_open"]).sum())


def hand_5m():
    """The two events of the 5M long worked out by hand (module docstring)."""
    # isolated margin after the 08:00 and 16:00 funding (the 16:00 event is paid at the bar's open)
    m = MARGIN - SIZE * funding_per_unit("2022-06-10 01:00", "2022-06-10 16:00")
    lp = (m + T4_CUM - SIZE * ENTRY) / (SIZE * T4_MMR - SIZE)
    equity = m + SIZE * (lp - ENTRY)                 # = maintenance margin at lp
    kept = T4_FLOOR / lp                             # notional at lp: the top of tier 3
    closed = SIZE - kept
    pnl = closed * (lp - ENTRY)
    fee = LIQ_FEE * closed * lp
    ratio = (kept * lp * T3_MMR - T3_CUM) / (equity - fee)
    # the remainder: its margin, the funding it pays until 2022-06-12 00:00, its liquidation price
    # in tier 3; there a step down to tier 2 (fee on 1,000,000 − 250,000 of notional, about 8,800)
    # would cost more than its equity (its maintenance margin, about 8,200): closed whole at its
    # bankruptcy price
    m2 = m + pnl - fee - kept * funding_per_unit("2022-06-10 17:00", "2022-06-12 02:00")
    lp2 = (m2 + T3_CUM - kept * ENTRY) / (kept * T3_MMR - kept)
    mm2 = kept * lp2 * T3_MMR - T3_CUM
    step_fee2 = LIQ_FEE * (kept - T3_FLOOR / lp2) * lp2
    bankrupt2 = ENTRY - m2 / kept
    return dict(m=m, lp=lp, equity=equity, kept=kept, closed=closed, pnl=pnl, fee=fee, ratio=ratio,
                m2=m2, lp2=lp2, mm2=mm2, step_fee2=step_fee2, bankrupt2=bankrupt2)


def test_a_5m_btcusdt_long_at_20x_is_reduced_before_it_is_closed():
    h = hand_5m()
    # the figures, rounded (README "Partial liquidation")
    assert h["m"] == pytest.approx(249_357.35, abs=0.01)             # after 642.65 of funding
    assert h["lp"] == pytest.approx(28_881.04, abs=0.01)
    assert SIZE * h["lp"] == pytest.approx(4_855_736, abs=1)        # tier 4 at the trigger
    assert h["closed"] == pytest.approx(133.5040, abs=1e-4) and h["kept"] == pytest.approx(34.6248, abs=1e-4)
    assert h["fee"] == pytest.approx(48_196.70, abs=0.01) and h["equity"] == pytest.approx(105_093.40, abs=0.01)
    assert h["ratio"] == pytest.approx(0.1529, abs=1e-4)
    assert h["lp2"] == pytest.approx(27_480.41, abs=0.01) and h["bankrupt2"] == pytest.approx(27_243.15, abs=0.01)
    assert h["step_fee2"] == pytest.approx(8_768.79, abs=0.01)
    assert h["mm2"] == pytest.approx(8_215.03, abs=0.01) and h["mm2"] < h["step_fee2"]

    strat, broker = btc_run("partial")
    step, close = broker.liquidations
    assert step.time == pd.Timestamp("2022-06-10 16:00", tz="UTC") and step.partial and step.step == 1
    assert step.trigger_price == pytest.approx(h["lp"], rel=1e-9) == step.fill_price
    assert step.tier == 4 and step.maintenance_rate == T4_MMR
    assert step.size == pytest.approx(h["closed"], rel=1e-9)
    assert step.remaining == pytest.approx(h["kept"], rel=1e-9)
    assert step.pnl == pytest.approx(h["pnl"], rel=1e-9)
    assert step.fee == pytest.approx(h["fee"], rel=1e-9) == step.insurance_flow
    assert step.equity == pytest.approx(h["equity"], rel=1e-9)
    assert step.margin_ratio == pytest.approx(h["ratio"], rel=1e-7) and step.margin_ratio < 1
    assert step.bankruptcy_price == pytest.approx(ENTRY - h["m"] / SIZE, rel=1e-9)

    assert close.time == pd.Timestamp("2022-06-12 02:00", tz="UTC") and not close.partial
    assert close.step == 2 and close.remaining == 0 and close.tier == 3
    assert close.size == pytest.approx(h["kept"], rel=1e-9)
    assert close.trigger_price == pytest.approx(h["lp2"], rel=1e-9)
    assert close.fill_price == pytest.approx(h["bankrupt2"], rel=1e-9) == close.bankruptcy_price
    assert close.loss == pytest.approx(h["m2"], rel=1e-9)                # the remainder's margin
    assert close.insurance_flow == pytest.approx(h["mm2"], rel=1e-7)     # its equity at the trigger

    # the strategy saw both, as orders marked liquidation (and partial)
    first, second = strat.liquidation_orders
    assert first.info.partial and first.executed.size == pytest.approx(-h["closed"], rel=1e-9)
    assert first.info.remaining == pytest.approx(h["kept"], rel=1e-9)
    assert not second.info.partial and second.executed.size == pytest.approx(-h["kept"], rel=1e-9)
    # the trader lost the margin it posted; the insurance fund got the step's fee and the rest's gap
    assert broker.insurance_fund == pytest.approx(h["fee"] + h["mm2"], rel=1e-7)
    assert broker.ledger()["partial_liquidations"] == 1 and broker.ledger()["liquidations"] == 2


def test_with_full_liquidation_the_5m_long_is_closed_whole():
    h = hand_5m()
    _, broker = btc_run("full")
    (x,) = broker.liquidations
    assert x.time == pd.Timestamp("2022-06-10 16:00", tz="UTC") and not x.partial and x.step == 1
    assert x.size == pytest.approx(SIZE, rel=1e-12) and x.remaining == 0
    assert x.trigger_price == pytest.approx(h["lp"], rel=1e-9)
    assert x.fill_price == pytest.approx(ENTRY - h["m"] / SIZE, rel=1e-9)     # bankruptcy price
    assert x.fill_price == pytest.approx(28_255.97, abs=0.01)                 # README
    assert x.loss == pytest.approx(h["m"], rel=1e-9) and x.fee == 0
    assert x.insurance_flow == pytest.approx(h["equity"], rel=1e-9)


def test_the_audit_agrees_with_the_broker_on_the_5m_long(tmp_path):
    h = hand_5m()
    _, broker = btc_run("partial", history=tmp_path / "run")
    a = audit_position("BTCUSDT", "long", "2022-06-10 01:00", ENTRY, size=SIZE, leverage=20,
                       end="2022-06-15")
    assert a.liquidation == "partial" and a.liquidated and a.liquidation_time == "2022-06-10 16:00"
    assert a.closed_time == "2022-06-12 02:00"
    assert [e["partial"] for e in a.events] == [True, False]
    for e, x in zip(a.events, broker.liquidations):
        assert e["time"] == x.time.strftime("%Y-%m-%d %H:%M")
        for key, value in (("size", x.size), ("remaining", x.remaining), ("trigger_price", x.trigger_price),
                           ("fill_price", x.fill_price), ("pnl", x.pnl), ("fee", x.fee), ("loss", x.loss),
                           ("insurance_flow", x.insurance_flow), ("tier", x.tier),
                           ("bankruptcy_price", x.bankruptcy_price), ("equity", x.equity)):
            assert e[key] == pytest.approx(value, rel=1e-9), key
    assert a.events[0]["margin_ratio"] == pytest.approx(h["ratio"], rel=1e-7)
    assert "1 step, then closed in the 2022-06-12 02:00 bar" in " ".join(a.notes)
    full = audit_position("BTCUSDT", "long", "2022-06-10 01:00", ENTRY, size=SIZE, leverage=20,
                          end="2022-06-15", liquidation="full")
    assert [e["partial"] for e in full.events] == [False] and full.closed_time == "2022-06-10 16:00"
    # many at once: the same count of steps and the close
    table_ = btperp.audit.audit_positions(pd.DataFrame({"entry_time": ["2022-06-10 01:00"] * 2,
                                                         "side": ["long", "long"],
                                                         "size": [SIZE, 1.0], "leverage": [20.0, 20.0],
                                                         "entry_price": [ENTRY, ENTRY]}),
                                          symbol="BTCUSDT", end="2022-06-15")
    assert table_["partial_steps"].tolist() == [1, 0]
    assert table_["closed_time"].iloc[0] == pd.Timestamp("2022-06-12 02:00", tz="UTC")
    # the history: each event in events.parquet, and audit history explains the step as one
    events = btperp.io.history.read(tmp_path / "run", "events")
    liq = events[events["kind"].astype(str) == "liquidation"]
    assert liq["partial"].tolist() == [True, False] and liq["step"].tolist() == [1, 2]
    assert liq["remaining"].iloc[0] == pytest.approx(h["kept"], rel=1e-9) and liq["remaining"].iloc[1] == 0
    assert liq["margin_ratio"].iloc[0] == pytest.approx(h["ratio"], rel=1e-7)
    assert "partial step" in liq["detail"].iloc[0]
    (run,) = btperp.io.history.summarize(tmp_path / "run")
    assert run["liquidations"] == 2 and run["partial_liquidations"] == 1 and run["open_trades"] == 0
    audits = audit_history(tmp_path / "run")
    assert [x.partial for x in audits] == [True, False] and audits[0].step == 1
    assert audits[0].remaining == pytest.approx(h["kept"], rel=1e-9)
    assert audits[0].fee == pytest.approx(h["fee"], rel=1e-9)
    assert audits[0].insurance_flow == pytest.approx(h["fee"], rel=1e-9)         # its own flow
    assert audits[1].insurance_flow == pytest.approx(h["mm2"], rel=1e-7)


def test_events_written_before_partial_liquidation_still_read(tmp_path):
    import pyarrow.parquet as pq
    _, broker = btc_run("full", history=tmp_path / "run")
    path = tmp_path / "run" / "events.parquet"
    old = pq.read_table(path)
    old = old.drop_columns(["partial", "step", "remaining"])
    pq.write_table(old.replace_schema_metadata(pq.read_table(path).schema.metadata), path)
    events = btperp.io.history.read(tmp_path / "run", "events")
    assert events["partial"].isna().all() and list(events.columns)[-3:] == ["partial", "step", "remaining"]
    (run,) = btperp.io.history.summarize(tmp_path / "run")
    assert run["liquidations"] == 1 and run["partial_liquidations"] == 0


# --- Bybit: the highest lower tier that meets the requirement, tier by tier as the mark falls ---

# tiers by position value at entry: 1 % under 1,000, 2 % to 3,000 (mmDeduction 1,000 × 1 % = 10),
# 4 % above (70 = 10 + 3,000 × 2 %)
BYBIT = table((0, 1_000, 0.01, 50), (1_000, 3_000, 0.02, 25), (3_000, math.inf, 0.04, 12.5))


def test_bybit_lowers_the_risk_limit_one_tier_at_a_time():
    """Long 40 at 100 (value 4,000: tier 3), 10x, taker fee 0 (no fee to close reserved): initial
    margin 400, MM 4,000 × 4 % − 70 = 90, LP = 100 − (400 − 90) / 40 = 92.25 ("Liquidation Price
    (USDT Contract)"). Step 1 keeps 30 (value 3,000: top of tier 2) and closes 10 at 92.25: PnL
    −77.5, margin 322.5, MM 3,000 × 2 % − 10 = 50, equity 90, ratio 50 / 90. LP 100 − (322.5 −
    50) / 30 = 90.9167; the same bar reaches 90: step 2 keeps 10 (tier 1), closes 20: PnL
    −181.667, margin 140.833, MM 10, ratio 10 / 50, LP 100 − 130.833 / 10 = 86.9167. The next bar
    reaches 85: tier 1, closed whole at the bankruptcy price 100 − 14.0833 = 85.9167."""
    frame = make_frame([100.0] * 6, mark_low=[100, 100, 90, 95, 85, 85])
    _, broker = run(frame, {0: [("buy", {"size": 40.0})]}, exchange="bybit", leverage=10,
                    taker_fee=0.0, maker_fee=0.0, tiers=BYBIT, cash=1_000)
    s1, s2, close = broker.liquidations
    lp2 = 100 - (322.5 - 50) / 30
    assert (s1.partial, s2.partial, close.partial) == (True, True, False)
    assert s1.trigger_price == pytest.approx(92.25, rel=1e-12) and s1.tier == 3
    assert s1.size == pytest.approx(10, rel=1e-9) and s1.remaining == pytest.approx(30, rel=1e-9)
    assert s1.pnl == pytest.approx(-77.5, rel=1e-9) and s1.fee == 0
    assert s1.margin_ratio == pytest.approx(50 / 90, rel=1e-9)
    assert s2.time == s1.time and s2.trigger_price == pytest.approx(lp2, rel=1e-9) and s2.tier == 2
    assert s2.size == pytest.approx(20, rel=1e-9) and s2.remaining == pytest.approx(10, rel=1e-9)
    assert s2.pnl == pytest.approx(-20 * (100 - lp2), rel=1e-9)
    assert s2.margin_ratio == pytest.approx(10 / 50, rel=1e-7)
    m3 = 322.5 - 20 * (100 - lp2)
    assert close.time.day == s1.time.day and close.time.hour == 4 and close.tier == 1
    assert close.trigger_price == pytest.approx(100 - (m3 - 10) / 10, rel=1e-9)
    assert close.fill_price == pytest.approx(100 - m3 / 10, rel=1e-9)
    assert close.loss == pytest.approx(m3, rel=1e-9)
    # the replay takes the same steps
    chain = liquidation_events(market_of(frame, BYBIT), get_rulebook("bybit"), 1, 40.0, 100.0, 400.0,
                               10.0, 1, len(frame), True, taker_fee=0.0)
    assert [(e.bar, e.partial) for e in chain.events] == [(2, True), (2, True), (4, False)]
    for e, x in zip(chain.events, broker.liquidations):
        assert (e.size, e.trigger_price, e.fill_price, e.pnl) == pytest.approx(
            (x.size, x.trigger_price, x.fill_price, x.pnl), rel=1e-9)


# --- Hyperliquid: 20 % above 100k, the whole position within the cooldown -----------------------

HL = Hyperliquid.table_for_max_leverage(20)         # maintenance margin 1 / 40 = 2.5 % of notional


def test_hyperliquid_sends_20_percent_then_the_whole_position_within_the_cooldown():
    """Long 2,000 at 100 (200,000 USDC), 10x: margin 20,000, LP = (20,000 − 200,000) / (2,000 ×
    0.025 − 2,000) = 92.3077 ("Liquidations": equity = notional / (2 × max leverage)). The step
    closes 400 (20 %) at LP, no clearance fee: margin 16,923.08, ratio 0.8, LP 91.716. A later bar
    reaching it steps again (1,600 × 91.7 is above 100,000); the same bar reaching it is within
    the 30 s cooldown: the whole remainder at its bankruptcy price 100 − 16,923.08 / 1,600."""
    lp = (20_000 - 200_000) / (2_000 * 0.025 - 2_000)
    m2 = 20_000 - 400 * (100 - lp)
    lp2 = (m2 - 1_600 * 100) / (1_600 * 0.025 - 1_600)
    assert lp == pytest.approx(92.3077, abs=1e-4) and lp2 == pytest.approx(91.7160, abs=1e-4)
    same_bar = make_frame([100.0] * 4, mark_low=[100, 100, 91.5, 100])
    _, broker = run(same_bar, {0: [("buy", {"size": 2_000.0})]}, exchange="hyperliquid", leverage=10,
                    taker_fee=0.0, maker_fee=0.0, tiers=HL, cash=50_000)
    step, close = broker.liquidations
    assert step.partial and step.size == pytest.approx(400, rel=1e-12) and step.fee == 0
    assert step.trigger_price == pytest.approx(lp, rel=1e-12)
    assert step.margin_ratio == pytest.approx(0.8, rel=1e-12)
    assert not close.partial and close.time == step.time and close.size == pytest.approx(1_600, rel=1e-12)
    assert close.trigger_price == pytest.approx(lp2, rel=1e-9)
    assert close.fill_price == pytest.approx(100 - m2 / 1_600, rel=1e-9)
    later_bar = make_frame([100.0] * 5, mark_low=[100, 100, 92, 91.5, 100])
    _, broker = run(later_bar, {0: [("buy", {"size": 2_000.0})]}, exchange="hyperliquid", leverage=10,
                    taker_fee=0.0, maker_fee=0.0, tiers=HL, cash=50_000)
    s1, s2 = broker.liquidations
    assert s1.partial and s2.partial and s2.time > s1.time
    assert s2.trigger_price == pytest.approx(lp2, rel=1e-9) and s2.size == pytest.approx(320, rel=1e-9)
    assert s2.remaining == pytest.approx(1_280, rel=1e-9)
    # a position of 100,000 or less is closed whole
    small = make_frame([100.0] * 4, mark_low=[100, 100, 91.5, 100])
    _, broker = run(small, {0: [("buy", {"size": 1_000.0})]}, exchange="hyperliquid", leverage=10,
                    taker_fee=0.0, maker_fee=0.0, tiers=HL, cash=50_000)
    (x,) = broker.liquidations
    assert not x.partial and x.size == 1_000


# --- the core function on its own -----------------------------------------------------------------

def test_partial_step_by_hand_and_its_refusals():
    rb = get_rulebook("binance-usdm")
    tiers = table((0, 1_000, 0.01, 50), (1_000, 5_000, 0.025, 20), (5_000, math.inf, 0.05, 10))
    pos = Position("X", Side.LONG, 60.0, 100.0, 100.0, 10.0, tiers)
    # at 95: notional 5,700 (tier 3): keep 5,000 / 95 (tier 2's top), close the rest
    step = partial_step(rb, pos, 95.0, 600.0, rule=rb.partial_liquidation, fee_rate=0.0125,
                        taker_fee=0.0)
    kept = 5_000 / 95
    assert step.remaining == pytest.approx(kept, rel=1e-12) and step.tier == 2
    assert step.closed == pytest.approx(60 - kept, rel=1e-12)
    assert step.fee == pytest.approx(0.0125 * (60 - kept) * 95, rel=1e-12)
    assert step.balance_after == pytest.approx(600 - (60 - kept) * 5 - step.fee, rel=1e-12)
    assert step.equity_after == pytest.approx(600 - 60 * 5 - step.fee, rel=1e-12)
    assert step.maintenance_margin == pytest.approx(5_000 * 0.025 - 15, rel=1e-9)
    # a lot size: kept rounded down to it
    lot = partial_step(rb, pos, 95.0, 600.0, rule=rb.partial_liquidation, fee_rate=0.0125,
                       taker_fee=0.0, lot_size=0.1)
    assert lot.remaining == pytest.approx(52.6, rel=1e-12)
    # tier 1, no rule, or a fee the equity cannot pay: no step
    small = Position("X", Side.LONG, 5.0, 100.0, 100.0, 10.0, tiers)
    assert partial_step(rb, small, 95.0, 50.0, rule=rb.partial_liquidation, fee_rate=0.0125,
                        taker_fee=0.0) is None
    assert partial_step(rb, pos, 95.0, 600.0, rule=None, fee_rate=0.0125, taker_fee=0.0) is None
    assert partial_step(rb, pos, 95.0, 300.0, rule=rb.partial_liquidation, fee_rate=0.0125,
                        taker_fee=0.0) is None              # equity 0 at 95: nothing to pay with
    with pytest.raises(InputError, match="liquidation: must be 'partial' or 'full', got 'half'"):
        LiquidationMode.parse("half")
    assert LiquidationMode.parse(LiquidationMode.FULL) is LiquidationMode.FULL
    assert LiquidationMode.parse(" Partial ") is LiquidationMode.PARTIAL


def test_bad_liquidation_settings_are_named():
    cerebro = bt.Cerebro()
    with pytest.raises(InputError) as err:
        btperp.install(cerebro, liquidation="half")
    assert err.value.field == "liquidation"
    with pytest.raises(InputError) as err:
        btperp.backtest.run(RunConfig("sma_long_short", liquidation="nope"))
    assert err.value.field == "liquidation"
    with pytest.raises(InputError) as err:
        audit_position("BTCUSDT", "long", "2022-06-10 01:00", size=1.0, leverage=5, end="2022-06-11",
                       liquidation="some")
    assert err.value.field == "liquidation"


# --- the broker and the replay take the same steps, on random markets -----------------------------

PROP = table((0, 500, 0.01, 50), (500, 2_000, 0.025, 20), (2_000, 8_000, 0.05, 10),
             (8_000, math.inf, 0.1, 5))


@settings(max_examples=60, deadline=None)
# found by this test: a funding event later in the bar moved the liquidation price above an open
# that the open's events alone left inside; the replay charged that event to the remainder again
@example(seed=1064, side=1, exchange="binance-usdm", notional=6_000.0, trigger="mark")
@given(seed=st.integers(0, 2**32 - 1), side=st.sampled_from([1, -1]),
       exchange=st.sampled_from(["binance-usdm", "bybit", "hyperliquid"]),
       notional=st.sampled_from([300.0, 1_500.0, 6_000.0, 20_000.0, 150_000.0]),
       trigger=st.sampled_from(["mark", "last"]))
def test_the_broker_and_the_replay_take_the_same_steps(seed, side, exchange, notional, trigger):
    rng = np.random.default_rng(seed)
    frame = random_market(rng, 40, vol=0.03)
    tiers = HL if exchange == "hyperliquid" else PROP
    leverage = 5.0 if notional > 10_000 else 10.0
    size = notional / frame["open"].iloc[1]
    _, broker = run(frame, {0: [("buy" if side > 0 else "sell", {"size": size})]}, exchange=exchange,
                    leverage=leverage, tiers=tiers, trigger=trigger, cash=1e7, taker_fee=0.0)
    entry = float(frame["open"].iloc[1])
    margin = size * entry / leverage
    chain = liquidation_events(market_of(frame, TierHistory.constant(tiers)), get_rulebook(exchange),
                               side, size, entry, margin, leverage, 1, len(frame), True,
                               trigger=trigger, taker_fee=0.0)
    got = broker.liquidations
    assert len(chain.events) == len(got)
    for e, x in zip(chain.events, got):
        assert frame.index[e.bar] == pd.Timestamp(x.time)
        assert e.partial == x.partial and e.gap == x.at_open
        for a, b in ((e.size, x.size), (e.remaining, x.remaining), (e.trigger_price, x.trigger_price),
                     (e.fill_price, x.fill_price), (e.pnl, x.pnl), (e.fee, x.fee),
                     (e.insurance_flow, x.insurance_flow), (e.equity, x.equity)):
            assert a == pytest.approx(b, rel=1e-9, abs=1e-9 * notional)
        if e.partial:
            assert e.margin_ratio == pytest.approx(x.margin_ratio, rel=1e-9)
    assert chain.closed == (bool(got) and not got[-1].partial)


def test_audit_history_gives_a_step_and_the_close_in_one_bar_their_own_flows(tmp_path):
    """ETHUSDT 25x, May 2021: a short in tier 3 whose one order leaves it still deficient (the
    rest closed at once, in the same bar): each row has its own fee and insurance-fund flow."""
    config = RunConfig("sma_long_short", symbol="ETHUSDT", start="2021-05-10", end="2021-05-25",
                       leverage=25)
    with pytest.warns(btperp.errors.EarliestTableAssumed):
        btperp.backtest.run(config, out=tmp_path / "run")
    audits = audit_history(tmp_path / "run")
    events = btperp.io.history.read(tmp_path / "run", "events")
    liq = events[events["kind"].astype(str) == "liquidation"]
    pairs = [(a, b) for a, b in zip(audits, audits[1:]) if a.partial and a.time == b.time]
    assert pairs, "a step and the close in one bar"
    for step, close in pairs:
        assert step.margin_ratio_after >= 1 and not close.partial and close.step == step.step + 1
        assert close.size == pytest.approx(step.remaining, rel=1e-12)
        assert step.insurance_flow == pytest.approx(step.fee, rel=1e-12)      # the step's fee
    flows = events[events["kind"].astype(str) == "insurance_fund"]["amount"]
    assert math.fsum(a.insurance_flow for a in audits) == pytest.approx(math.fsum(flows), rel=1e-9)
    assert len(liq) == len(audits)


# --- OKX: two tiers down (core) --------------------------------------------------------------------

def test_okx_reduces_a_tier_4_position_two_tiers_down_and_closes_tiers_1_and_2_whole():
    """OKX "Forced partial liquidation" (perpetual swaps): a position in tier 3 or above is reduced
    by the contracts that bring it two tiers down; tiers 1 and 2 are liquidated whole. The canned
    BTC-USDT-SWAP tiers (ctVal 0.01 BTC): tier 2 up to 5,000 contracts (50 BTC) at MMR 0.5 %,
    tier 4 20,001..40,000 contracts (200..400 BTC) at MMR 1.25 %, at most 50x; OKX's maintenance
    margin counts the taker fee to close (0.05 %).

    Long 300 BTC (30,000 contracts, tier 4) at 60,000, 50x isolated: margin 300 × 60,000 / 50
    = 360,000. Liquidated where equity = MM:
        360,000 + 300 (T − 60,000) = 300 × T × (0.0125 + 0.0005)  →  296.1 T = 17,640,000
        T = 59,574.47
    The step keeps 50 BTC (5,000 contracts: the top of tier 2) and closes 250 BTC at T:
        pnl      = 250 × (T − 60,000)                    = −106,382.98
        balance' = 360,000 − 106,382.98                  =  253,617.02   (no liquidation fee)
        equity'  = 3.9 T                                 =  232,340.43
        MM'      = 50 × T × (0.005 + 0.0005) = 0.275 T   =   16,382.98   → ratio 0.0705, compliant
    """
    import json
    from pathlib import Path
    from btperp.margin import make_position
    from btperp.tiers import TierTable
    rows = json.loads((Path(__file__).parent / "canned" / "okx" / "position-tiers-SWAP-BTC-USDT.json")
                      .read_text())["data"]
    okx_table = TierTable.from_okx(rows, 0.01, symbol="BTC/USDT:USDT")
    rb = get_rulebook("okx", core=True)
    assert (rb.partial_liquidation.tiers_down, rb.liquidation_fee_rate) == (2, 0.0)
    T = 17_640_000 / 296.1
    assert round(T, 2) == 59_574.47

    def step(size, trigger, balance):
        pos = make_position("BTC/USDT:USDT", "long", size, 60_000, leverage=50, tiers=okx_table)
        return partial_step(rb, pos, trigger, balance, rule=rb.partial_liquidation,
                            fee_rate=rb.liquidation_fee_rate, taker_fee=rb.taker_fee, lot_size=0.01)

    s = step(300.0, T, 360_000.0)
    assert (s.closed, s.remaining, s.tier, s.fee) == (250.0, 50.0, 2, 0.0)
    assert round(s.realized_pnl, 2) == -106_382.98
    assert round(s.balance_after, 2) == 253_617.02
    assert round(s.equity_after, 2) == 232_340.43
    assert round(s.maintenance_margin, 2) == 16_382.98
    assert round(s.margin_ratio, 4) == 0.0705 and s.compliant
    # tier 3 (100 BTC) goes to tier 1 (20 BTC: 2,000 contracts); tier 2 (40 BTC) is closed whole
    assert step(100.0, 59_000.0, 120_000.0).remaining == 20.0
    assert step(40.0, 59_000.0, 48_000.0) is None


def test_hyperliquid_fraction_step_at_its_edges():
    """Hyperliquid ("Liquidations"): 20 % of a position whose notional at the trigger is *above*
    100,000 USDC, rounded down to the lot size. Numbers by hand:
    * 1,000 at a trigger of 100: notional 100,000, not above the floor: closed whole (None);
      at 100.5 it is 100,500: 200 closed, 800 kept, PnL 200 × (100.5 − 100) = 100;
    * 0.7 BTC at 200,000 (notional 140,000), lot 0.01: 20 % is 0.14 (0.7 × 0.2 is
      0.13999999999999999 in floating point; 13.999999999999998 lots are 14 lots, not 13): 0.56 kept;
      with a lot of 1, 20 % rounds down to nothing: closed whole."""
    rb = get_rulebook("hyperliquid")
    rule = rb.partial_liquidation
    assert (rule.kind, rule.fraction, rule.min_notional) == ("fraction", 0.2, 100_000.0)
    pos = Position("X", Side.LONG, 1_000.0, 100.0, 100.0, 10.0, HL)

    def step(p, trigger, lot=None, r=rule):
        return partial_step(rb, p, trigger, 20_000.0, rule=r, fee_rate=0.0, taker_fee=0.0,
                            lot_size=lot)

    assert step(pos, 100.0) is None
    s = step(pos, 100.5)
    assert (s.closed, s.remaining) == (pytest.approx(200, rel=1e-12), pytest.approx(800, rel=1e-12))
    assert s.realized_pnl == pytest.approx(100.0, rel=1e-12) and s.fee == 0.0
    btc = Position("X", Side.LONG, 0.7, 200_000.0, 200_000.0, 10.0, HL)
    s = step(btc, 200_000.0, lot=0.01)
    assert s.closed == pytest.approx(0.14, rel=1e-12) and s.remaining == pytest.approx(0.56, rel=1e-12)
    assert step(btc, 200_000.0, lot=1.0) is None
    with pytest.raises(InputError) as err:
        step(pos, 100.5, r=PartialRule("halves"))
    assert str(err.value) == "liquidation: unknown partial liquidation kind 'halves'"
    assert err.value.field == "liquidation"


def test_a_step_that_leaves_under_one_coin_is_still_brought_below_the_tier_floor():
    """Tiers 0.4 % to 50,000 and 0.5 % (cum 50) to 250,000. Long 2 BTC at 52,000 with 5,200, a
    trigger at 50,000: notional 100,000 (tier 2). Binance brings it below tier 2's floor: 50,000 /
    50,000 = 1 BTC is *at* the floor (tier 2), so one step down: the largest size below 1 BTC (to
    the last bit), or 0.999 with a lot of 0.001: 1.001 closed at a loss of 1.001 × 2,000 (no fee),
    3,198 left; equity 5,200 − 2 × 2,000 = 1,200; the remainder in tier 1: 0.999 × 50,000 × 0.4 % =
    199.8."""
    rb = get_rulebook("binance-usdm")
    tiers = table((0, 50_000, 0.004, 125), (50_000, 250_000, 0.005, 100), (250_000, math.inf, 0.01, 50))
    pos = Position("BTC", Side.LONG, 2.0, 52_000.0, 52_000.0, 20.0, tiers, margin=5_200.0)
    exact = partial_step(rb, pos, 50_000.0, 5_200.0, rule=rb.partial_liquidation, fee_rate=0.0,
                         taker_fee=0.0)
    assert exact.remaining == math.nextafter(1.0, 0.0) and exact.tier == 1
    lot = partial_step(rb, pos, 50_000.0, 5_200.0, rule=rb.partial_liquidation, fee_rate=0.0,
                       taker_fee=0.0, lot_size=0.001)
    assert lot.remaining == pytest.approx(0.999, rel=1e-12) and lot.tier == 1
    assert lot.closed == pytest.approx(1.001, rel=1e-12)
    assert lot.balance_after == pytest.approx(5_200 - 1.001 * 2_000, rel=1e-12)
    assert lot.equity_after == pytest.approx(1_200, rel=1e-12)
    assert lot.maintenance_margin == pytest.approx(199.8, rel=1e-12)
    # with a lot of 1 BTC, the largest lot multiple below the floor is 0: nothing to keep, closed whole
    assert partial_step(rb, pos, 50_000.0, 5_200.0, rule=rb.partial_liquidation, fee_rate=0.0,
                        taker_fee=0.0, lot_size=1.0) is None


def test_partial_step_refuses_only_what_the_trader_cannot_pay():
    """A step is refused (the position closed whole) when the equity cannot pay its fee, or when
    what backs the remainder (balance + PnL of the part closed − fee) would be negative; at exactly
    zero it goes ahead. Long 60 at 100, the module's three tiers, a lot of 0.5.
    * Trigger 95 with 300 of balance and no fee: equity 300 − 60 × 5 = 0, a step all the same (the
      remainder, 5,000 / 95 = 52.63 rounded to 52.5, has nothing left: not compliant).
    * Trigger 105 (in profit, as a cross position can be): keep 47.5 (5,000 / 105 = 47.62), close
      12.5 for a PnL of 12.5 × 5 = 62.5 and a fee of 1.25 % × 12.5 × 105 = 16.40625. Balance 10:
      10 + 62.5 − 16.40625 = 56.09375 backs the rest. Balance −50: −3.90625, refused. With no fee
      and a balance of −62.5: exactly 0, a step."""
    rb = get_rulebook("binance-usdm")
    tiers = table((0, 1_000, 0.01, 50), (1_000, 5_000, 0.025, 20), (5_000, math.inf, 0.05, 10))
    pos = Position("X", Side.LONG, 60.0, 100.0, 100.0, 10.0, tiers)

    def step(trigger, balance, fee_rate):
        return partial_step(rb, pos, trigger, balance, rule=rb.partial_liquidation,
                            fee_rate=fee_rate, taker_fee=0.0, lot_size=0.5)

    zero = step(95.0, 300.0, 0.0)
    assert zero.remaining == 52.5 and zero.equity_after == 0.0 and not zero.compliant
    s = step(105.0, 10.0, 0.0125)
    assert (s.remaining, s.closed, s.realized_pnl) == (47.5, 12.5, 62.5)
    assert s.fee == pytest.approx(16.40625, rel=1e-12)
    assert s.balance_after == pytest.approx(56.09375, rel=1e-12)
    assert step(105.0, -50.0, 0.0125) is None
    assert step(105.0, -62.5, 0.0).balance_after == 0.0
