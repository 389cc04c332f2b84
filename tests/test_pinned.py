"""Pinned values on fixed data, each worked out by hand in the test: ``btperp calc`` on
examples/account.json, the replay's gaps, funding at the open and tier-table changes (against the
broker too), and Bybit's and Hyperliquid's rules through the broker and the replay.

Formulas: Binance "How to Calculate Liquidation Price of USDⓈ-M Futures Contracts"
(LP = [WB − TMM1 + UPNL1 + cum − side·pos·EP] / [pos·MMR − side·pos]); bankruptcy price: equity
exhausted; Bybit "Liquidation Price (USDT Contract)" (entry − (IM − MM) / size) and "Bankruptcy
Price (USDT Contract)" (entry × (1 − 1/leverage)); Hyperliquid "Liquidations"
(liq = price − side × margin_available / size / (1 − l × side), l = 1 / (2 × max leverage)).
"""

import json
import math
from datetime import datetime, timezone
from pathlib import Path

import pytest
from perpkit import FLAT, make_frame, run, table

from btperp.audit import audit_position, market_of
from btperp.cli.main import main as cli
from btperp.replay import Positions, replay
from btperp.rules import get_rulebook
from btperp.rules.hyperliquid import Hyperliquid
from btperp.tiers import TierHistory, TierTable

ROOT = Path(__file__).resolve().parents[1]


# --- btperp calc --account examples/account.json ------------------------------------------------

def test_the_example_account_file(capsys):
    """Cross, wallet 10,000: BTC long 0.5 at 60,000 (mark 59,000, 20x), ETH short 4 at 3,000
    (mark 3,100, 10x); Binance's 2024-05-30 tables: both in tier 1 at 0.4 %, cum 0."""
    assert cli(["calc", "--account", str(ROOT / "examples" / "account.json"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    btc, eth = out["positions"]
    mm_btc, mm_eth = 0.5 * 59_000 * 0.004, 4 * 3_100 * 0.004            # 118, 49.6
    upnl_btc, upnl_eth = 0.5 * (59_000 - 60_000), -4 * (3_100 - 3_000)   # −500, −400
    assert (btc["maintenance_margin"], eth["maintenance_margin"]) == (pytest.approx(118),
                                                                      pytest.approx(49.6))
    assert out["margin_balance"] == pytest.approx(10_000 + upnl_btc + upnl_eth)        # 9,100
    assert out["margin_ratio"] == pytest.approx((mm_btc + mm_eth) / 9_100, rel=1e-12)
    # BTC: WB − TMM1 + UPNL1 = 10,000 − 49.6 − 400; side = +1
    lp_btc = (10_000 - mm_eth + upnl_eth + 0 - 0.5 * 60_000) / (0.5 * 0.004 - 0.5)
    assert lp_btc == pytest.approx(41_063.4538, abs=1e-4)
    assert btc["liquidation_price"] == pytest.approx(lp_btc, rel=1e-12)
    # ETH: WB − TMM1 + UPNL1 = 10,000 − 118 − 500; side = −1
    lp_eth = (10_000 - mm_btc + upnl_btc + 0 + 4 * 3_000) / (4 * 0.004 + 4)
    assert lp_eth == pytest.approx(5_324.2032, abs=1e-4)
    assert eth["liquidation_price"] == pytest.approx(lp_eth, rel=1e-12)
    # bankruptcy: 10,000 + the other position's PnL + side × size × (P − entry) = 0
    assert btc["bankruptcy_price"] == pytest.approx(60_000 - (10_000 + upnl_eth) / 0.5, rel=1e-12)  # 40,800
    assert eth["bankruptcy_price"] == pytest.approx(3_000 + (10_000 + upnl_btc) / 4, rel=1e-12)     # 5,375
    assert (btc["liquidation_tier"], eth["liquidation_tier"]) == (1, 1)
    assert btc["initial_margin"] == pytest.approx(0.5 * 60_000 / 20)
    assert eth["initial_margin"] == pytest.approx(4 * 3_000 / 10)


def test_the_example_account_file_as_a_table(capsys):
    assert cli(["calc", "--account", str(ROOT / "examples" / "account.json")]) == 0
    out = capsys.readouterr().out
    for figure in ("41,063.45", "40,800.00", "5,324.20", "5,375.00", "9,100.00", "167.60"):
        assert figure in out


# --- the replay on fixed data: gaps, funding at the open, a second tier table ----------------------

RB = get_rulebook("binance-usdm")


def gap_frame(gap_open):
    """Flat at 100, then bar 4 opens (and stays) at ``gap_open``."""
    prices = [100.0, 100.0, 100.0, 100.0, gap_open, gap_open]
    return make_frame(prices, open=prices)


@pytest.mark.parametrize("gap_open", [85.0, 90.2])
def test_a_gap_is_filled_at_the_open_by_the_replay_and_the_broker(gap_open):
    """Isolated long 1 at 100, margin 10 (10x), 0.5 %: LP = (10 − 100) / (0.005 − 1) = 90.452,
    bankruptcy 100 − 10 = 90. Bar 4 opens beyond LP: triggered at the open."""
    lp = (10 - 100) / (0.005 - 1)
    frame = gap_frame(gap_open)
    a = audit_position("TEST/USDT:USDT", "long", frame.index[1], frame=frame, tiers=FLAT, size=1.0,
                       leverage=10, taker_fee=0.0)
    assert a.liquidated and a.liquidation_time == "2024-01-01 04:00" and a.gap
    assert a.trigger_price == gap_open
    assert a.liquidation_price == pytest.approx(lp, rel=1e-12)
    assert a.bankruptcy_price == pytest.approx(90.0, rel=1e-12)
    assert a.equity == pytest.approx(10 + (gap_open - 100), rel=1e-12)       # −5 or 0.2
    assert a.maintenance_margin == pytest.approx(0.005 * gap_open, rel=1e-12)
    _, broker = run(frame, {0: [("buy", dict(size=1.0))]}, cash=100, leverage=10, taker_fee=0.0)
    (x,) = broker.liquidations
    assert x.at_open and x.trigger_price == gap_open and x.fill_price == pytest.approx(90.0)
    assert x.insurance_flow == pytest.approx(gap_open - 90.0)                 # −5: the fund covers it
    assert x.loss == pytest.approx(10.0)


def test_funding_at_the_open_is_paid_before_the_open_is_checked():
    """Long 1 at 100, margin 10 (LP 90.452). Bar 4 opens at 91, above it, with a funding event at
    its open (rate 1 %: 91 × 0.01 = 0.91 paid): margin 9.09, LP (9.09 − 100) / (0.005 − 1) = 91.367,
    so the position is liquidated at the open (README steps 2 and 3), before the close order sent
    in bar 3 can fill."""
    prices = [100.0, 100.0, 100.0, 100.0, 91.0, 91.0]
    frame = make_frame(prices, open=prices, funding={4: 0.01})
    margin = 10 - 91 * 0.01
    lp = (margin - 100) / (0.005 - 1)
    assert lp == pytest.approx(91.3668, abs=1e-4) and lp > 91
    strat, broker = run(frame, {0: [("buy", dict(size=1.0))], 3: [("close", {})]}, cash=100,
                        leverage=10, taker_fee=0.0)
    (x,) = broker.liquidations
    assert x.time.hour == 4 and x.at_open and x.trigger_price == 91.0
    assert x.liquidation_price == pytest.approx(lp, rel=1e-12)
    assert x.bankruptcy_price == pytest.approx(100 - margin, rel=1e-12) == x.fill_price    # 90.91
    assert x.insurance_flow == pytest.approx(91 - (100 - margin), rel=1e-9)              # 0.09
    assert [p.payment for p in broker.funding_payments] == pytest.approx([0.91])
    assert [o[1] for o in strat.orders] == ["Completed", "Canceled", "Completed"]        # close cancelled
    assert broker.getvalue() == pytest.approx(100 - 10, abs=1e-9)
    a = audit_position("TEST/USDT:USDT", "long", frame.index[1], frame=frame, tiers=FLAT, size=1.0,
                       leverage=10, taker_fee=0.0)
    assert a.liquidation_time == "2024-01-01 04:00" and a.gap and a.trigger_price == 91.0
    assert a.liquidation_price == pytest.approx(lp, rel=1e-12)
    assert a.bankruptcy_price == pytest.approx(100 - margin, rel=1e-12)
    assert a.funding_paid == pytest.approx(0.91, rel=1e-12)


T1 = table((0, 1_000, 0.01, 50), (1_000, 5_000, 0.025, 20), (5_000, math.inf, 0.05, 10))
T2 = table((0, 500, 0.02, 25), (500, math.inf, 0.05, 10))
TWO_TABLES = TierHistory([(datetime(2024, 1, 1, tzinfo=timezone.utc), T1),
                          (datetime(2024, 1, 1, 6, tzinfo=timezone.utc), T2)], symbol="TEST/USDT:USDT")


def two_table_frame():
    n = 10
    mark_low = [100.0] * n
    mark_low[3] = 92.5          # under T1: above its LP 91.54
    mark_low[7] = 93.5          # under T2 (from 06:00): below its LP 93.95
    return make_frame([100.0] * n, mark_low=mark_low)


def test_a_second_tier_table_moves_the_liquidation_price():
    """Long 20 at 100, margin 200 (10x). T1, tier 2 (notional 1,000 to 5,000, 2.5 %, cum 15):
    LP = (200 + 15 − 2,000) / (20 × 0.025 − 20) = 91.54. From 06:00 T2, tier 2 (500 up, 5 %,
    cum 500 × 3 % = 15): LP = (200 + 15 − 2,000) / (20 × 0.05 − 20) = 93.95."""
    lp1 = (200 + 15 - 2_000) / (20 * 0.025 - 20)
    lp2 = (200 + 15 - 2_000) / (20 * 0.05 - 20)
    assert lp1 == pytest.approx(91.5385, abs=1e-4) and lp2 == pytest.approx(93.9474, abs=1e-4)
    frame = two_table_frame()
    a = audit_position("TEST/USDT:USDT", "long", frame.index[1], frame=frame, tiers=TWO_TABLES,
                       size=20.0, leverage=10, taker_fee=0.0)
    assert a.liquidated and a.liquidation_time == "2024-01-01 07:00" and not a.gap
    assert a.liquidation_price == pytest.approx(lp2, rel=1e-12) == a.trigger_price
    assert a.tier == 2 and a.maintenance_rate == 0.05
    assert a.equity == pytest.approx(200 + 20 * (lp2 - 100), rel=1e-12)
    assert a.maintenance_margin == pytest.approx(20 * lp2 * 0.05 - 15, rel=1e-12)
    assert a.bankruptcy_price == pytest.approx(100 - 200 / 20, rel=1e-12)
    # under T1 alone the 93.5 wick is harmless
    b = audit_position("TEST/USDT:USDT", "long", frame.index[1], frame=frame, tiers=T1, size=20.0,
                       leverage=10, taker_fee=0.0)
    assert not b.liquidated and b.entry_liquidation_price == pytest.approx(lp1, rel=1e-12)
    # the broker agrees (closing the whole position, as the audit's first trigger does)
    _, broker = run(frame, {0: [("buy", dict(size=20.0))]}, cash=10_000, leverage=10, taker_fee=0.0,
                    tiers=TWO_TABLES, liquidation="full")
    (x,) = broker.liquidations
    assert x.time.hour == 7 and x.trigger_price == pytest.approx(lp2, rel=1e-12)
    assert x.tier == 2 and x.maintenance_rate == 0.05
    assert x.loss == pytest.approx(200.0, rel=1e-12)
    assert x.insurance_flow == pytest.approx(20 * (lp2 - 90), rel=1e-9)


def test_the_replay_of_a_short_through_a_gap_with_funding_later_in_the_bar():
    """Short 2 at 100, margin 40 (5x), FLAT 0.5 %: LP = (40 + 2 × 100) / (2 × 0.005 + 2) = 119.40.
    Bar 2 pays funding later in the bar (rate −1 %, on the mark close 110: the short pays
    2 × 110 × 0.01 = 2.2): margin 37.8, LP (37.8 + 200) / 2.01 = 118.31; bar 3 opens at 125."""
    prices = [100.0, 100.0, 110.0, 125.0, 125.0]
    frame = make_frame(prices, open=[100.0, 100.0, 100.0, 125.0, 125.0], funding_later={2: -0.01})
    a = audit_position("TEST/USDT:USDT", "short", frame.index[1], frame=frame, tiers=FLAT, size=2.0,
                       leverage=5, taker_fee=0.0)
    margin = 40 - 2 * 110 * 0.01
    assert a.liquidation_time == "2024-01-01 03:00" and a.gap and a.trigger_price == 125.0
    assert a.liquidation_price == pytest.approx((margin + 200) / 2.01, rel=1e-12)
    assert a.bankruptcy_price == pytest.approx(100 + margin / 2, rel=1e-12)             # 118.9
    assert a.funding_paid == pytest.approx(2.2, rel=1e-12)
    assert a.equity == pytest.approx(margin - 2 * (125 - 100), rel=1e-12)               # −12.2
    _, broker = run(frame, {0: [("sell", dict(size=2.0))]}, cash=1000, leverage=5, taker_fee=0.0)
    (x,) = broker.liquidations
    assert x.at_open and x.trigger_price == 125.0
    assert x.fill_price == pytest.approx(100 + margin / 2, rel=1e-12)
    assert x.insurance_flow == pytest.approx(-2 * (125 - (100 + margin / 2)), rel=1e-9)  # −12.2


# --- Bybit and Hyperliquid through the broker and the replay ---------------------------------------

def test_bybit_worked_example_end_to_end():
    """Bybit "Liquidation Price (USDT Contract)": isolated long 1 BTC at 20,000, 50x, MMR 0.5 %,
    no fees: IM 400, MM 100, LP = 20,000 − (400 − 100) = 19,700; bankruptcy 20,000 × (1 − 1/50) =
    19,600. The mark falls by 50 an hour from 20,000."""
    bybit = TierTable.single(0.005)
    close = [20_000.0] + [20_000.0 - 50 * i for i in range(12)]
    frame = make_frame(close, symbol="BTC/USDT:USDT", exchange="bybit")
    # the mark reaches 19,700 in bar 7 (19,750 → 19,700); 19,700 − 19,600 goes to the fund
    _, broker = run(frame, {0: [("buy", dict(size=1.0))]}, exchange="bybit", cash=1_000, leverage=50,
                    taker_fee=0.0, tiers=bybit)
    (x,) = broker.liquidations
    assert x.time.hour == 7 and not x.at_open
    assert x.trigger_price == pytest.approx(19_700, abs=1e-9)
    assert x.fill_price == pytest.approx(19_600, abs=1e-9) == x.bankruptcy_price
    assert x.loss == pytest.approx(400, abs=1e-9) and x.insurance_flow == pytest.approx(100, abs=1e-9)
    assert broker.getvalue() == pytest.approx(600, abs=1e-9)
    market = market_of(frame, bybit)
    out = replay(market, get_rulebook("bybit"), Positions.of(1, 1.0, 20_000.0, 400.0, 50.0, 1, len(frame)),
                 taker_fee=0.0)
    assert out.bar[0] == 7 and out.liquidation_price[0] == pytest.approx(19_700, abs=1e-9)
    assert out.trigger_price[0] == pytest.approx(19_700, abs=1e-9)
    assert out.bankruptcy_price[0] == pytest.approx(19_600, abs=1e-9)
    # Bybit values the position at entry: the maintenance margin at the trigger is still 100
    assert out.maintenance_margin[0] == pytest.approx(20_000 * 0.005, abs=1e-9)


def test_bybit_with_its_fee_to_close_still_liquidates_at_19700():
    """The same position with Bybit's taker fee (0.055 %): Bybit reserves the fee to close in the
    position margin ("Initial Margin (USDT Contract)": IM = 20,000 / 50 + fee to close, the fee to
    close = 1 × 19,600 × 0.00055 = 10.78) and counts it in the maintenance margin too, so the two
    cancel: LP = 20,000 − ((400 + 10.78) − (100 + 10.78)) = 19,700, bankruptcy 19,600, and the
    opening costs 400 + 10.78 + 20,000 × 0.00055 = 421.78 (found by the #20 review: the broker took
    the margin as notional / leverage and liquidated at 19,710.78)."""
    bybit = TierTable.single(0.005)
    close = [20_000.0] + [20_000.0 - 50 * i for i in range(12)]
    frame = make_frame(close, symbol="BTC/USDT:USDT", exchange="bybit")
    strat, broker = run(frame, {0: [("buy", dict(size=1.0))]}, exchange="bybit", cash=1_000,
                        leverage=50, tiers=bybit)
    (x,) = broker.liquidations
    assert x.trigger_price == pytest.approx(19_700, abs=1e-9)
    assert x.fill_price == pytest.approx(19_600, abs=1e-9)
    assert broker.fills[0].fee == pytest.approx(11.0, abs=1e-9)
    # the trader loses the margin with its reserved fee (410.78) and the opening fee (11)
    assert broker.getvalue() == pytest.approx(1_000 - 410.78 - 11.0, abs=1e-9)


def test_hyperliquid_short_end_to_end():
    """Hyperliquid "Liquidations": short 1 at 60,000, 10x (margin 6,000), max leverage 40:
    l = 1/80, margin_available = 6,000 − 60,000 / 80 = 5,250, liq = 60,000 + 5,250 / (1 + 1/80)
    = 65,185.19; bankruptcy 66,000. Funding (Hyperliquid "Funding": size × price × rate) at bar 2's
    open, rate 0.01 % on the mark 60,000: the short receives 6."""
    table40 = Hyperliquid.table_for_max_leverage(40)
    close = [60_000.0] * 3 + [60_000.0 + 1_000 * i for i in range(1, 9)]
    frame = make_frame(close, symbol="BTC/USDC:USDC", exchange="hyperliquid", funding={2: 0.0001})
    _, broker = run(frame, {0: [("sell", dict(size=1.0))]}, exchange="hyperliquid", cash=10_000,
                    leverage=10, taker_fee=0.0, tiers=table40)
    assert [p.payment for p in broker.funding_payments] == pytest.approx([-6.0])
    margin = 6_000 + 6
    liq = 60_000 + (margin - 60_000 / 80) / (1 + 1 / 80)
    assert liq == pytest.approx(65_191.11, abs=0.01)
    (x,) = broker.liquidations
    assert x.trigger_price == pytest.approx(liq, rel=1e-12)
    assert x.fill_price == pytest.approx(60_000 + margin, rel=1e-12)
    assert x.insurance_flow == pytest.approx(60_000 + margin - liq, rel=1e-9)   # its MM: liq / 80
    assert x.insurance_flow == pytest.approx(liq / 80, rel=1e-9)
    assert x.time == frame.index[8]
    market = market_of(frame, table40)
    out = replay(market, get_rulebook("hyperliquid"),
                 Positions.of(-1, 1.0, 60_000.0, 6_000.0, 10.0, 1, len(frame)), taker_fee=0.0)
    assert out.bar[0] == 8 and out.trigger_price[0] == pytest.approx(liq, rel=1e-12)
    assert out.bankruptcy_price[0] == pytest.approx(60_000 + margin, rel=1e-12)
    assert out.funding_paid[0] == pytest.approx(-6.0, rel=1e-12)
