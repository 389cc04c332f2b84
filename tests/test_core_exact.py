"""The pure core's smaller functions, each pinned to a value worked out by hand (what mutation
testing found unchecked): vectorized liquidation prices, sizing, tier tables' shapes and caps,
settlement edge cases, and the exact words of the errors users read."""

import math
from datetime import date, datetime, timezone

import numpy as np
import pandas as pd
import pytest
from perpkit import table

from btperp.errors import InputError, LeverageError, TierTableError
from btperp.liquidation import GroupLeg, settle, settle_group
from btperp.margin import (Side, bankruptcy_price, check_leverage, liquidation_price, linear_root,
                           maintenance_margin_array, make_position, margin_ratio, max_open_size,
                           solve_price_array)
from btperp.rules import get_rulebook
from btperp.tiers import Tier, TierHistory, TierTable

BINANCE, BYBIT = get_rulebook("binance-usdm"), get_rulebook("bybit")
#: 1 % to 1,000 (50x), 2.5 % to 5,000 (20x, cum 15), 5 % above (10x, cum 15 + 5,000 × 2.5 % = 140)
T = table((0, 1_000, 0.01, 50), (1_000, 5_000, 0.025, 20), (5_000, math.inf, 0.05, 10))


# --- vectorized liquidation prices ----------------------------------------------------------

def test_solve_price_array_by_hand():
    side = [1, -1, 1, 1, -1]
    size = [20.0, 20.0, 5.0, 100.0, 100.0]
    entry = [100.0] * 5
    margin = [200.0, 200.0, 600.0, 1_000.0, 1_000.0]
    lp, k = solve_price_array(BINANCE, T, side, size, entry, [10, 10, 1, 10, 10], margin, 0.0)
    expected = [
        (200 + 15 - 2_000) / (20 * 0.025 - 20),        # long, tier 2 at LP: 91.54
        (200 + 15 + 2_000) / (20 * 0.025 + 20),        # short, tier 2: 108.05
        math.nan,                                      # 600 of margin on 500 of notional: never
        (1_000 + 140 - 10_000) / (100 * 0.05 - 100),   # long, tier 3: 93.26
        (1_000 + 140 + 10_000) / (100 * 0.05 + 100),   # short, tier 3: 106.10
    ]
    np.testing.assert_allclose(lp, expected, rtol=1e-12)
    assert k.tolist() == [1, 1, -1, 2, 2]
    # a reference price far away does not change a unique root
    lp2, _ = solve_price_array(BINANCE, T, side, size, entry, [10, 10, 1, 10, 10], margin, 0.0,
                               reference_price=500.0)
    np.testing.assert_allclose(lp2, expected, rtol=1e-12)


def test_solve_price_array_bybit_uses_the_tier_at_entry():
    one = TierTable.single(0.005)
    lp, k = solve_price_array(BYBIT, one, [1, -1, 1], [1.0, 1.0, 1.0], [20_000.0, 20_000.0, 100.0],
                              [50, 50, 1], [400.0, 400.0, 200.0], 0.0)
    # 20,000 ∓ (400 − 100); a long with 200 of margin on 100 of notional is never liquidated
    np.testing.assert_allclose(lp, [19_700, 20_300, math.nan], rtol=1e-12)
    assert k.tolist() == [0, 0, -1]


class _ReservingBinance(type(BINANCE)):
    """Binance's tiers by the mark price, with Bybit's fee to close reserved in the maintenance
    margin (taker × size × entry × (1 − σ / leverage)): a rulebook whose terms read every argument,
    as a user's own rulebook may."""

    def maintenance_terms(self, side, size, entry_price, leverage, tier, taker_fee):
        fee = taker_fee * size * entry_price * (1 - side / leverage)
        return fee - tier.maintenance_amount, size * tier.maintenance_margin_rate


def test_solve_price_array_passes_the_rulebook_every_argument():
    """1 BTC at 20,000, 50x, 400 of margin, taker 1 %, MMR 0.5 %, priced by the tier at the
    liquidation price. Long: fee reserved 0.01 × 20,000 × (1 − 1/50) = 196, and
    400 + (P − 20,000) = 0.005 P + 196 gives P = 19,796 / 0.995. Short: 0.01 × 20,000 × (1 + 1/50)
    = 204, and 400 − (P − 20,000) = 0.005 P + 204 gives P = 20,196 / 1.005."""
    lp, k = solve_price_array(_ReservingBinance(), TierTable.single(0.005), [1, -1], [1.0, 1.0],
                              [20_000.0, 20_000.0], [50, 50], [400.0, 400.0], 0.01)
    np.testing.assert_allclose(lp, [19_796 / 0.995, 20_196 / 1.005], rtol=1e-12)
    assert k.tolist() == [0, 0]


def test_solve_price_array_binance_takes_the_tier_at_the_liquidation_price():
    """Binance's note to its formula: "if the position at the liquidation price and the current
    position are of different levels, substitute the level at the liquidation price". Both
    positions here change tier between entry and liquidation (10x, fee 0, table T)."""
    lp, k = solve_price_array(BINANCE, T, [1, -1], [52.0, 48.0], [100.0, 100.0], [10, 10],
                              [520.0, 480.0], 0.0)
    # long 52 at 100: 5,200 at entry (tier 3), but with tier 2's 2.5 % and cum 15:
    # LP = (520 + 15 − 52 × 100) / (52 × 0.025 − 52) = −4,665 / −50.7 = 92.0118...,
    # notional 52 × 92.01 = 4,784.6 < 5,000: tier 2, consistent (tier 3 would give
    # (520 + 140 − 5,200) / (52 × 0.05 − 52) = 91.90, whose notional 4,779 is not in tier 3)
    long_lp = (520 + 15 - 52 * 100) / (52 * 0.025 - 52)
    # short 48 at 100: 4,800 at entry (tier 2), but with tier 3's 5 % and cum 140:
    # LP = (480 + 140 + 48 × 100) / (48 × 0.05 + 48) = 5,420 / 50.4 = 107.5397...,
    # notional 48 × 107.54 = 5,161.9 ≥ 5,000: tier 3 (tier 2 would give 5,295 / 49.2 = 107.62)
    short_lp = (480 + 140 + 48 * 100) / (48 * 0.05 + 48)
    np.testing.assert_allclose(lp, [long_lp, short_lp], rtol=1e-12)
    assert long_lp == pytest.approx(92.0118343195, rel=1e-10)
    assert short_lp == pytest.approx(107.5396825397, rel=1e-10)
    assert k.tolist() == [1, 2]


def test_solve_price_array_bybit_positions_in_different_tiers():
    """Bybit ("Liquidation Price (USDT Contract)", isolated, fee 0): LP(long) = entry − (IM − MM) / size,
    LP(short) = entry + (IM − MM) / size, MM = position value at entry × MMR − mmDeduction, in the
    tier of the value at entry, whatever the notional at the liquidation price."""
    bybit_t = table((0, 1_000, 0.01, 50), (1_000, math.inf, 0.025, 20))   # deduction 1,000 × 1.5 % = 15
    lp, k = solve_price_array(BYBIT, bybit_t, [1, 1, 1, -1], [5.0, 20.0, 10.5, 5.0],
                              [100.0, 100.0, 100.0, 100.0], [10, 10, 10, 10],
                              [50.0, 200.0, 105.0, 50.0], 0.0)
    expected = [
        100 - (50 - 500 * 0.01) / 5,               # 500 at entry, tier 1: MM 5, LP 91
        100 - (200 - (2_000 * 0.025 - 15)) / 20,   # 2,000, tier 2: MM 35, LP 91.75
        # 1,050 at entry, tier 2: MM 26.25 − 15 = 11.25, LP 100 − 93.75 / 10.5 = 91.0714...
        # (its notional there, 956, is in tier 1's range: Bybit keeps the tier at entry)
        100 - (105 - (1_050 * 0.025 - 15)) / 10.5,
        100 + (50 - 500 * 0.01) / 5,               # short, 500, tier 1: LP 109
    ]
    np.testing.assert_allclose(lp, expected, rtol=1e-12)
    np.testing.assert_allclose(expected, [91.0, 91.75, 91.0 + 0.75 / 10.5, 109.0], rtol=1e-12)
    assert k.tolist() == [0, 1, 1, 0]


def test_maintenance_margin_array_by_hand():
    idx, mm = maintenance_margin_array(BINANCE, T, [1, -1, 1], [2, 20, 100], [100, 100, 100],
                                       [100, 100, 100], [10, 10, 10], 0.0)
    assert idx.tolist() == [0, 1, 2]
    np.testing.assert_allclose(mm, [200 * 0.01, 2_000 * 0.025 - 15, 10_000 * 0.05 - 140], rtol=1e-12)
    idx, mm = maintenance_margin_array(BINANCE, T, 1, 10, 100, [50, 120, 600], 10, 0.0)   # ints
    assert idx.tolist() == [0, 1, 2]
    np.testing.assert_allclose(mm, [5.0, 1_200 * 0.025 - 15, 6_000 * 0.05 - 140], rtol=1e-12)


def test_linear_root():
    assert linear_root(10, -2) == 5.0 and isinstance(linear_root(10, -2), float)
    assert math.isnan(linear_root(1, 0))
    np.testing.assert_allclose(linear_root([10, 3, 1], [-2, 1, 0]), [5.0, -3.0, math.nan])
    np.testing.assert_allclose(linear_root(np.array([4, 4]), np.array([1, 2])), [-4.0, -2.0])
    with np.errstate(all="raise"):          # no warning escapes for a zero slope
        assert math.isnan(linear_root(np.array([1.0]), np.array([0.0]))[0])


def test_margin_ratio_by_hand():
    assert margin_ratio(5, 20) == 0.25 and isinstance(margin_ratio(5, 20), float)
    assert margin_ratio(5, 0) == math.inf and margin_ratio(5, -1) == math.inf
    np.testing.assert_allclose(margin_ratio([1, 2, 3], [4, 0, 6]), [0.25, math.inf, 0.5])


# --- sizing --------------------------------------------------------------------------------

def test_max_open_size_by_hand():
    # 1,000 of balance at 100, 10x, taker 0.05 %: each unit costs 100 / 10 + 100 × 0.0005 = 10.05
    assert max_open_size(1_000, 100, 10, 0.0005) == pytest.approx(1_000 / 10.05, rel=1e-15)
    assert max_open_size(1_000, 100, 10, 0.0005, max_notional=5_000) == 50.0
    assert max_open_size(-5, 100, 10, 0.0005) == 0.0
    assert max_open_size(0.5, 0.5, 1, 0.0) == 1.0                 # a price below 1 is a price
    assert max_open_size(10, 100, 0.5, 0.0) == pytest.approx(0.05)  # and a leverage below 1
    for price, lev in ((0, 10), (-1, 10), (100, 0), (100, -2)):
        with pytest.raises(ValueError, match=f"price and leverage must be positive, got {price} and {lev}"):
            max_open_size(100, price, lev, 0.0)


# --- single-position calculators ------------------------------------------------------------

def test_bankruptcy_and_liquidation_price_of_one_position():
    one = TierTable.single(0.004)
    # Binance FAQ numbers: long 0.02 at 50,000 with 500: bankruptcy 25,000; short: 75,000
    assert bankruptcy_price("binance-usdm", "long", 0.02, 50_000, margin=500, tiers=one) == pytest.approx(25_000)
    assert bankruptcy_price("binance-usdm", "short", 0.02, 50_000, margin=500, tiers=one) == pytest.approx(75_000)
    assert bankruptcy_price("binance-usdm", "long", 0.02, 50_000, leverage=4, tiers=one) == pytest.approx(37_500)
    # Bybit reserves the fee to close: bankruptcy 20,000 × (1 − 1/50) = 19,600 whatever the fee
    b = TierTable.single(0.005)
    assert bankruptcy_price("bybit", "long", 1, 20_000, leverage=50, tiers=b) == pytest.approx(19_600)
    assert bankruptcy_price("bybit", "long", 1, 20_000, leverage=50, tiers=b, taker_fee=0.001) == pytest.approx(19_600)
    # the fee to close is in both margins and cancels in the liquidation price
    assert liquidation_price("bybit", "long", 1, 20_000, leverage=50, tiers=b) == pytest.approx(19_700)
    assert liquidation_price("bybit", "long", 1, 20_000, leverage=50, tiers=b, taker_fee=0.01) == pytest.approx(19_700)
    assert liquidation_price("binance-usdm", "long", 1, 100, leverage=1, tiers=one) is None


def test_check_leverage_returns_the_tier_and_names_the_field():
    pos = make_position("X", "long", 20, 100, tiers=T, leverage=20)          # 2,000: tier 2, 20x max
    assert check_leverage(BINANCE, pos).tier == 2
    pos = make_position("X", "long", 20, 100, tiers=T, leverage=25)
    with pytest.raises(LeverageError) as info:
        check_leverage(BINANCE, pos)
    assert str(info.value) == "leverage: 25x is above the 20x that tier 2 allows for a notional of 2,000.00"
    assert info.value.field == "leverage"
    with pytest.raises(LeverageError, match="^positions.0..leverage: 25x"):
        check_leverage(BINANCE, pos, "positions[0].leverage")
    # Bybit: the tier of the notional at the entry price
    bybit_table = table((0, 1_000, 0.01, 50), (1_000, math.inf, 0.02, 10))
    assert check_leverage(BYBIT, make_position("X", "short", 20, 100, tiers=bybit_table, leverage=10)).tier == 2


def test_side():
    assert str(Side.LONG) == "long" and str(Side.SHORT) == "short"
    assert [Side.parse(x) for x in ("buy", "+1", 1, "SELL", " -1 ")] == [1, 1, 1, -1, -1]
    with pytest.raises(InputError) as info:
        Side.parse("up", field="positions[2].side")
    assert str(info.value) == "positions[2].side: must be 'long' or 'short', got 'up'"


# --- settlement edge cases ------------------------------------------------------------------

def test_settle_group_weights():
    # no maintenance margin anywhere: equal shares of the equity 100 + 10 − 10 = 100
    legs = [GroupLeg(1, 1.0, 100.0, 110.0, 0.0), GroupLeg(-1, 1.0, 100.0, 110.0, 0.0)]
    a, b = settle_group(legs, 100.0)
    assert a.fill_price == pytest.approx(100 - (50 - 10))          # share 50, its PnL +10
    assert b.fill_price == pytest.approx(100 + (50 + 10))          # share 50, its PnL −10
    # maintenance margins below 1 still weigh (0.2 and 0.6: a quarter and three quarters)
    legs = [GroupLeg(1, 1.0, 100.0, 100.0, 0.2), GroupLeg(1, 1.0, 100.0, 100.0, 0.6)]
    a, b = settle_group(legs, 8.0)
    assert (a.fill_price, b.fill_price) == (pytest.approx(98.0), pytest.approx(94.0))
    assert settle_group([], 10.0) == []
    # the fee policy's rate defaults to 0 and is passed to every leg
    (c,) = settle_group([GroupLeg(1, 1.0, 100.0, 95.0, 1.0)], 10.0, policy="fee")
    assert c.fee == 0 and c.balance_after == pytest.approx(5.0)
    (c,) = settle_group([GroupLeg(1, 1.0, 100.0, 95.0, 1.0)], 10.0, policy="fee", fee_rate=0.01)
    assert c.fee == pytest.approx(0.95) and c.balance_after == pytest.approx(4.05)


def test_settle_fee_policy_at_exactly_zero_equity_and_the_loss():
    s = settle(1, 1.0, 100.0, 90.0, 10.0, policy="fee", fee_rate=0.0125)
    assert s.fill_price == 90.0 and s.fee == 0.0 and s.balance_after == 0.0 and s.loss == 10.0
    s = settle(-1, 2.0, 100.0, 104.0, 10.0, policy="fee", fee_rate=0.0125)
    # equity at the trigger 10 − 8 = 2: the fee (2 × 104 × 1.25 % = 2.6) is capped at it
    assert s.realized_pnl == -8.0 and s.fee == pytest.approx(2.0) and s.balance_after == 0.0
    assert s.loss == pytest.approx(10.0) and s.equity_at_trigger == pytest.approx(2.0)
    s = settle(-1, 2.0, 100.0, 101.0, 10.0, policy="fee", fee_rate=0.0125)
    assert s.fee == pytest.approx(2 * 101 * 0.0125) and s.loss == pytest.approx(2 + 2.525)
    assert s.balance_after == pytest.approx(10 - 2 - 2.525)


# --- tier tables ---------------------------------------------------------------------------------

def test_tier_to_ccxt_and_back():
    tier = T.tiers[1]
    assert tier.to_ccxt() == {"tier": 2, "minNotional": 1_000.0, "maxNotional": 5_000.0,
                              "maintenanceMarginRate": 0.025, "maxLeverage": 20.0,
                              "cum": pytest.approx(15.0)}
    assert T.tiers[2].to_ccxt()["maxNotional"] is None
    assert T.to_ccxt()[0] == {"tier": 1, "minNotional": 0.0, "maxNotional": 1_000.0,
                              "maintenanceMarginRate": 0.01, "maxLeverage": 50.0, "cum": 0.0}
    assert TierTable.from_ccxt(T.to_ccxt()) == T


def test_history_to_snapshots():
    history = TierHistory([("2024-01-02", T), (date(2023, 3, 4), TierTable.single(0.02))])
    snaps = history.to_snapshots()
    assert [s["observed"] for s in snaps] == ["2023-03-04", "2024-01-02"]
    assert snaps[1]["tiers"] == T.to_ccxt()
    assert TierHistory.from_snapshots(snaps).versions[1][1] == T


BINANCE_RAW = [{"symbol": "ETHUSDT", "brackets": [
    {"bracket": 1, "initialLeverage": 100, "notionalCap": 10000, "notionalFloor": 0,
     "maintMarginRatio": 0.005, "cum": 0.0},
    {"bracket": 2, "initialLeverage": 75, "notionalCap": 100000, "notionalFloor": 10000,
     "maintMarginRatio": 0.0065, "cum": 15.0}]},
    {"symbol": "BTCUSDT", "brackets": [
        {"bracket": 1, "initialLeverage": 125, "notionalCap": 50000, "notionalFloor": 0,
         "maintMarginRatio": 0.004, "cum": 0.0}]}]


def test_binance_brackets_by_symbol():
    eth = TierTable.from_binance_brackets(BINANCE_RAW, symbol="ETHUSDT", source="answer.json")
    assert eth.symbol == "ETHUSDT" and eth.source == "answer.json"
    assert [t.tier for t in eth.tiers] == [1, 2]
    assert eth.tiers[1] == Tier(2, 10_000.0, 100_000.0, 0.0065, 75.0, 15.0)
    one = TierTable.from_binance_brackets(BINANCE_RAW[1])
    assert one.symbol == "BTCUSDT" and one.tiers[0].max_leverage == 125
    with pytest.raises(TierTableError) as info:
        TierTable.from_binance_brackets(BINANCE_RAW, symbol="SOLUSDT", source="answer.json")
    assert str(info.value) == "answer.json: expected one bracket set for symbol 'SOLUSDT', found 0"
    with pytest.raises(TierTableError, match="found 2"):
        TierTable.from_binance_brackets(BINANCE_RAW)
    with pytest.raises(TierTableError) as info:
        TierTable.from_binance_brackets({"symbol": "X", "brackets": []}, source="answer.json")
    assert str(info.value) == "answer.json: no 'brackets' in the answer"


def test_single_tier_table():
    one = TierTable.single(0.02, 5.0, 40, symbol="X/USDT:USDT")
    assert one.tiers == (Tier(1, 0.0, math.inf, 0.02, 40.0, 5.0),)
    assert one.symbol == "X/USDT:USDT" and one.source == "explicit rate"
    assert TierTable.single(0.02, source="cli").source == "cli"
    assert one.maintenance_margin(1_000) == pytest.approx(15.0)       # 1,000 × 2 % − 5, unchecked


def test_caps_and_lookups():
    assert [T.max_notional_for(x) for x in (1, 10, 10.5, 20, 21, 50, 51)] == [
        math.inf, math.inf, 5_000, 5_000, 1_000, 1_000, 0.0]
    assert T.max_leverage_at(999.99) == 50 and T.max_leverage_at(1_000) == 20
    assert T.max_leverage_at(1e9) == 10
    assert T.lookup_index([0, 999.999, 1_000, 5_000, 1e12]).tolist() == [0, 0, 1, 2, 2]
    assert T.lookup_index(np.array([1_000], dtype=np.int64)).tolist() == [1]
    rates, amounts = T.rates_and_amounts([500, 2_000, 9_000])
    assert rates.tolist() == [0.01, 0.025, 0.05] and amounts.tolist() == pytest.approx([0.0, 15.0, 140.0])
    assert T.maintenance_margin(2_000) == pytest.approx(2_000 * 0.025 - 15)
    with pytest.raises(ValueError, match="notional must be a non-negative number, got -1"):
        T.lookup(-1)


def test_table_equality():
    same = table((0, 1_000, 0.01, 50), (1_000, 5_000, 0.025, 20), (5_000, math.inf, 0.05, 10))
    other = TierTable.single(0.01)
    assert same == T and hash(same) == hash(T) and {T: 1}[same] == 1
    assert T != other and T != "T" and (T == T.tiers) is False
    assert len(T) == 3 and list(T) == list(T.tiers)
    assert repr(T) == "TierTable('TEST/USDT:USDT', 3 tiers)"


def test_history_dates():
    history = TierHistory([(datetime(2024, 1, 1, tzinfo=timezone.utc), T),
                           ("2024-02-01T00:00Z", TierTable.single(0.02))], symbol="X")
    assert history.at("2024-01-31 23:59").table == T
    assert history.at(pd.Timestamp("2024-02-01", tz="UTC")).table.tiers[0].maintenance_margin_rate == 0.02
    assert history.at(date(2024, 2, 1)).observed == datetime(2024, 2, 1, tzinfo=timezone.utc)
    # an aware time elsewhere is converted: 2024-02-01 00:30 at +01:00 is 2024-01-31 23:30 UTC
    assert history.at("2024-02-01T00:30+01:00").table == T
    with pytest.raises(InputError, match="cannot read the date 'soon'; write it as YYYY-MM-DD"):
        history.at("soon")
    with pytest.raises(TypeError, match="not a date or time: 5"):
        history.at(5)
    with pytest.raises(TierTableError, match="X: two tables observed at 2024-01-01"):
        TierHistory([("2024-01-01", T), ("2024-01-01", T)], symbol="X")
    with pytest.raises(TierTableError, match="a tier history needs at least one table"):
        TierHistory([])
    assert TierHistory.constant(T).at("1999-01-01").assumed is False


# --- more edges mutation testing found unchecked ---------------------------------------------------

def test_solve_price_array_edges():
    # a margin exactly equal to the notional: the root is 0, which is no liquidation price
    lp, k = solve_price_array(BINANCE, T, [1], [5.0], [100.0], [1], [500.0], 0.0)
    assert math.isnan(lp[0]) and k[0] == -1
    # prices below 1 are prices: long 100 at 2 with 100 of margin (2x), 1 %: LP = (100 − 200) / (1 − 100)
    lp, k = solve_price_array(BINANCE, T, [1], [100.0], [2.0], [2], [100.0], 0.0)
    assert lp[0] == pytest.approx(100 / 99, rel=1e-12) and k[0] == 0
    lp, _ = solve_price_array(BINANCE, T, [1], [100.0], [2.0], [2], [150.0], 0.0)
    assert lp[0] == pytest.approx(50 / 99, rel=1e-12)
    # Bybit: MM from the tier of the notional at entry (here tier 2: 2,000 at 2.5 %, cum 15), and
    # the same cases: a zero root, a root below 1
    bybit_t = table((0, 1_000, 0.01, 50), (1_000, math.inf, 0.025, 20))
    lp, k = solve_price_array(BYBIT, bybit_t, [1, -1], [20.0, 20.0], [100.0, 100.0], [10, 10],
                              [200.0, 200.0], 0.0)
    mm = 2_000 * 0.025 - 15                                       # 35, at entry whatever the price
    np.testing.assert_allclose(lp, [100 - (200 - mm) / 20, 100 + (200 - mm) / 20], rtol=1e-12)
    assert k.tolist() == [1, 1]
    one = TierTable.single(0.005)
    lp, _ = solve_price_array(BYBIT, one, [1], [1.0], [100.0], [1], [100.5], 0.0)   # 100.5 − 0.5 = 100
    assert math.isnan(lp[0])
    lp, _ = solve_price_array(BYBIT, one, [1], [100.0], [2.0], [1.5], [133.0], 0.0)  # 2 − (133 − 1) / 100
    assert lp[0] == pytest.approx(0.68, rel=1e-12)


def test_calculators_pass_the_fee_on():
    """Bybit with an explicit margin: MM includes the fee to close (size × entry × (1 − 1/lev) × fee)
    but the margin does not, so the fee moves both prices."""
    b = TierTable.single(0.005)
    fee_to_close = 1 * 20_000 * (1 - 1 / 50) * 0.001                  # 19.6
    assert liquidation_price("bybit", "long", 1, 20_000, margin=400, leverage=50, tiers=b,
                             taker_fee=0.001) == pytest.approx(20_000 - (400 - 100 - fee_to_close))
    assert bankruptcy_price("bybit", "long", 1, 20_000, margin=400, leverage=50, tiers=b,
                            taker_fee=0.001) == pytest.approx(20_000 - (400 - fee_to_close))
    from btperp.margin import evaluate
    (pm,) = evaluate(BINANCE, [make_position("X", "short", 1, 100, tiers=T, leverage=10)]).positions
    assert pm.side is Side.SHORT and str(pm.side) == "short"


def test_settlement_fields_and_defaults():
    from btperp.liquidation import Settlement, bankruptcy_fill
    assert bankruptcy_fill(1, 2.0, 100.0, 10.0) == 95.0 and bankruptcy_fill(-1, 2.0, 100.0, 10.0) == 105.0
    assert settle(1, 1.0, 100.0, 95.0, 10.0, policy="fee") == Settlement(95.0, 95.0, 90.0, 5.0, -5.0, 0.0,
                                                                         0.0, 0.0, 5.0)
    assert settle(1, 1.0, 100.0, 95.0, 10.0, policy="fee", fee_rate=0.01) == Settlement(
        95.0, 95.0, 90.0, 5.0, -5.0, pytest.approx(0.95), pytest.approx(0.95), pytest.approx(0.95),
        pytest.approx(4.05))
    assert settle(1, 1.0, 100.0, 95.0, 10.0) == Settlement(95.0, 90.0, 90.0, 5.0, -10.0, 0.0, 0.0, 5.0, 0.0)
    # equity at the trigger exactly the reserve (Bybit's fee to close): the fee policy still closes
    # at the trigger and the reserve stays with the trader
    s = settle(1, 1.0, 100.0, 90.5, 10.0, policy="fee", reserve=0.5)
    assert (s.fill_price, s.fee, s.balance_after) == (90.5, 0.0, 0.5)
    with pytest.raises(InputError) as info:
        settle(1, 0.0, 100.0, 90.0, 10.0)
    assert str(info.value) == "size: must be a positive number, got 0.0"


def test_settle_group_sizes_and_reserves():
    # two legs of size 2: upnl 2 × (90 − 100) = −20 and −2 × (90 − 100) = +20; equal MM
    legs = [GroupLeg(1, 2.0, 100.0, 90.0, 1.0), GroupLeg(-1, 2.0, 100.0, 90.0, 1.0)]
    a, b = settle_group(legs, 100.0)
    assert a.fill_price == pytest.approx(100 - (50 + 20) / 2) and b.fill_price == pytest.approx(100 + (50 - 20) / 2)
    (c,) = settle_group([GroupLeg(1, 1.0, 100.0, 95.0, 1.0, reserve=0.5)], 10.0)
    assert c.fill_price == pytest.approx(90.5) and c.fee == 0.5


def test_history_sources_and_snapshots():
    with pytest.raises(TierTableError) as info:
        TierHistory([], symbol="X")
    assert str(info.value) == "X: a tier history needs at least one table"
    with pytest.raises(TierTableError, match="X: two tables observed at 2024-01-01"):
        TierHistory([("2024-01-01", T), ("2024-01-01", TierTable.single(0.02))], symbol="X")
    assert TierHistory([("2024-01-01", T)], symbol="X").symbol == "X"
    snaps = [{"observed": "2024-01-01", "tiers": T.to_ccxt()}, {"tiers": T.to_ccxt()}]
    with pytest.raises(TierTableError) as info:
        TierHistory.from_snapshots(snaps, symbol="X/USDT:USDT", source="file.json")
    assert str(info.value) == "file.json: snapshot 1 has no 'observed' date"
    with pytest.raises(TierTableError, match="^X/USDT:USDT: snapshot 1 has no"):
        TierHistory.from_snapshots(snaps, symbol="X/USDT:USDT")
    bad = [{"observed": "2024-03-01", "tiers": [dict(T.to_ccxt()[0], maintenanceMarginRate=2)]}]
    with pytest.raises(TierTableError, match="^file.json snapshot 2024-03-01, tier 1"):
        TierHistory.from_snapshots(bad, symbol="X/USDT:USDT", source="file.json")
    history = TierHistory.from_snapshots(snaps[:1], symbol="X/USDT:USDT")
    assert history.symbol == "X/USDT:USDT" and history.versions[0][1].symbol == "X/USDT:USDT"
    assert history.versions[0][1].source == "X/USDT:USDT snapshot 2024-01-01"


def test_constant_history_and_the_earliest_table_warning(monkeypatch):
    const = TierHistory.constant(T)
    assert const.symbol == "TEST/USDT:USDT"
    assert const.at("1970-01-01 00:00").assumed is False
    assert const.versions[0][0] == datetime(1970, 1, 1, tzinfo=timezone.utc)
    history = TierHistory([("2024-01-01", T)])
    with pytest.warns(UserWarning) as caught:
        early = history.at("2023-12-31T23:30+01:00")
    assert str(caught[0].message).startswith("tier history: 2023-12-31 22:30 is before the first known "
                                             "tier table (2024-01-01); ")
    assert early.assumed is True and early.observed == datetime(2024, 1, 1, tzinfo=timezone.utc)
    named = TierHistory([("2024-01-01", T)], symbol="X")
    with pytest.warns(UserWarning, match="^X: 2023-12-31 00:00 is before"):
        named.at("2023-12-31")
    # in another local time zone the times stay UTC
    import time
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        with pytest.warns(UserWarning, match="^X2: 2023-12-31 22:30 is before"):
            TierHistory([("2024-01-01", T)], symbol="X2").at("2023-12-31T23:30+01:00")
    finally:
        monkeypatch.undo()
        time.tzset()


def test_evaluate_every_field_by_hand():
    from btperp.margin import AccountMargin, MarginMode, PositionMargin, evaluate
    a = make_position("A", "long", 1, 100, tiers=T, mark_price=95, leverage=10)      # margin 10
    b = make_position("B", "short", 2, 50, tiers=T, mark_price=55, leverage=5)       # margin 20
    acct = evaluate(BINANCE, [a, b], taker_fee=0.001)
    pa = PositionMargin("A", Side.LONG, 1.0, 100.0, 95.0, 10.0, 95.0, 1, 0.01, 0.0, 10.0,
                        pytest.approx(0.95), -5.0, 5.0, pytest.approx(0.95 / 5),
                        pytest.approx((10 - 100) / (0.01 - 1)), 1, pytest.approx(90.0), 10.0)
    pb = PositionMargin("B", Side.SHORT, 2.0, 50.0, 55.0, 5.0, 110.0, 1, 0.01, 0.0, 20.0,
                        pytest.approx(1.1), -10.0, 10.0, pytest.approx(1.1 / 10),
                        pytest.approx((20 + 100) / (0.02 + 2)), 1, pytest.approx(60.0), 20.0)
    assert acct == AccountMargin("binance-usdm", MarginMode.ISOLATED, None, (pa, pb), 15.0,
                                 pytest.approx(2.05), pytest.approx(0.19), 0.001)
    assert evaluate(BINANCE, []).margin_ratio == 0.0
    # an isolated account keeps the wallet balance it was given (the positions' margins stand alone)
    kept = evaluate(BINANCE, [a, b], wallet_balance=1_234.5, taker_fee=0.001)
    assert kept.wallet_balance == 1_234.5 and kept.margin_balance == 15.0
    cross = evaluate(BINANCE, [a, b], margin_mode="cross", wallet_balance=100.0)
    assert (cross.exchange, cross.margin_mode, cross.wallet_balance) == ("binance-usdm", MarginMode.CROSS, 100.0)
    assert cross.margin_balance == 85.0 and cross.maintenance_margin == pytest.approx(2.05)
    assert [p.unrealized_pnl for p in cross.positions] == [-5.0, -10.0]
    assert [p.margin_balance for p in cross.positions] == [85.0, 85.0]
    assert cross.taker_fee == BINANCE.taker_fee


def test_margin_ratio_with_a_balance_below_one_and_the_evaluate_errors():
    from btperp.margin import evaluate
    assert margin_ratio(0.1, 0.5) == pytest.approx(0.2)
    a = make_position("A", "long", 1, 100, tiers=T, leverage=10)
    with pytest.raises(InputError) as info:
        evaluate(BINANCE, [a], margin_mode="cross")
    assert str(info.value) == "wallet_balance: cross margin needs the wallet balance"
    with pytest.raises(InputError) as info:
        evaluate(BINANCE, [a, a])
    assert str(info.value) == ("positions[1]: a second position in A (position 0 already holds it); "
                               "one-way mode holds one position per symbol")
    with pytest.raises(InputError) as info:
        evaluate(BINANCE, [a, a], hedge_mode=True)
    assert str(info.value) == "positions[1]: a second long of A (position 0 already holds it); merge them"


def test_make_position_derives_the_leverage_and_names_the_field():
    pos = make_position("X", "long", 2, 100, tiers=T, margin=50)
    # leverage = notional / margin = 2 × 100 / 50; the mark defaults to the entry
    assert (pos.side, pos.size, pos.entry_price, pos.mark_price, pos.leverage, pos.margin) == (
        Side.LONG, 2.0, 100.0, 100.0, 4.0, 50.0)
    assert make_position("X", "short", 0.5, 2_000, tiers=T, margin=250, mark_price=1_900).leverage == 4.0
    for kwargs, text in [
        (dict(size=0), "size: must be a positive number, got 0"),
        (dict(size=True), "size: must be a positive number, got True"),
        (dict(entry_price=0.0), "entry_price: must be a positive number, got 0.0"),
        (dict(mark_price=-1), "mark_price: must be a positive number, got -1"),
        (dict(margin=0), "margin: must be a positive number, got 0"),
        (dict(leverage=0), "leverage: must be a positive number, got 0"),
        (dict(leverage=None), "leverage: give the leverage, or the isolated margin to derive it from"),
    ]:
        args = {**dict(size=1, entry_price=100, leverage=10), **kwargs}
        size, entry = args.pop("size"), args.pop("entry_price")
        with pytest.raises(InputError) as info:
            make_position("X", "long", size, entry, tiers=T, **args)
        assert str(info.value) == text
        with pytest.raises(InputError) as info:               # in an account file: where it is
            make_position("X", "long", size, entry, tiers=T, field_prefix="positions[1].", **args)
        assert str(info.value) == "positions[1]." + text


def test_max_open_size_with_the_exchanges_extra_per_unit():
    # Bybit's fee to close reserved in the initial margin, 0.95 a unit: 1,000 at 100, 10x, 0.05 %
    # buys 1,000 / (10 + 0.05 + 0.95) = 90.91
    assert max_open_size(1_000, 100, 10, 0.0005, extra_per_unit=0.95) == pytest.approx(1_000 / 11, rel=1e-15)


def test_a_snapshot_that_is_not_an_object_is_named():
    with pytest.raises(TierTableError) as info:
        TierHistory.from_snapshots([{"observed": "2024-01-01", "tiers": [T.tiers[0].to_ccxt()]}, "x"],
                                   symbol="BTC/USDT:USDT")
    assert str(info.value) == ("BTC/USDT:USDT: snapshot 1 is a JSON str; expected an object with "
                               "'observed' and 'tiers'")
    with pytest.raises(TierTableError) as info:
        TierHistory.from_snapshots([[1, 2]], symbol="X", source="tiers.json")
    assert str(info.value) == "tiers.json: snapshot 0 is a JSON list; expected an object with 'observed' and 'tiers'"


#: T with a fourth tier: 25 % above 20,000 (max 2x; cum 140 + 20,000 × (25 % − 5 %) = 4,140)
T4 = table((0, 1_000, 0.01, 50), (1_000, 5_000, 0.025, 20), (5_000, 20_000, 0.05, 10),
           (20_000, math.inf, 0.25, 2))


def test_the_scalar_solve_reaches_the_last_tier_and_prices_below_one():
    # short 48 at 100 with 480 (10x): 4,800 at entry (tier 2), LP in tier 3:
    # (480 + 140 + 4,800) / (48 × 0.05 + 48) = 107.54 (notional 5,162)
    assert liquidation_price(BINANCE, "short", 48, 100, margin=480, tiers=T) == pytest.approx(
        (480 + 140 + 48 * 100) / (48 * 0.05 + 48), rel=1e-12)
    # a bankruptcy price below 1: long 100 at 2 with 150 of margin: 2 − 150 / 100 = 0.5
    assert bankruptcy_price(BINANCE, "long", 100, 2.0, margin=150, tiers=T) == pytest.approx(0.5, rel=1e-12)


def test_hedge_mode_liquidation_where_the_gross_position_outgrows_the_net():
    """Binance hedge mode, cross, one symbol: long 100 and short 80 at 100, wallet 2,000. Equity
    2,000 + 100 (P − 100) − 80 (P − 100) = 20 P; the only root is where both legs are in tier 4
    (25 %, cum 4,140), Binance's hedge formula: LP = (WB + cumL + cumS − posL × EPL + posS × EPS) /
    (posL × MMRL + posS × MMRS − posL + posS) = (2,000 + 8,280 − 10,000 + 8,000) / (25 + 20 − 20) = 331.2."""
    from btperp.margin import evaluate
    a = make_position("X", "long", 100, 100, tiers=T4, leverage=2)
    b = make_position("X", "short", 80, 100, tiers=T4, leverage=2)
    acct = evaluate(BINANCE, [a, b], margin_mode="cross", wallet_balance=2_000, hedge_mode=True)
    expected = (2_000 + 2 * 4_140 - 100 * 100 + 80 * 100) / (100 * 0.25 + 80 * 0.25 - 100 + 80)
    assert expected == pytest.approx(331.2)
    assert [p.liquidation_price for p in acct.positions] == pytest.approx([expected, expected], rel=1e-12)
    assert [p.liquidation_tier for p in acct.positions] == [4, 4]


def test_a_margin_call_level_reached_only_in_the_top_tier():
    """solve_price's ``ratio``: where MM / equity reaches 20 %. A 1x long of 10 at 100 (1,000 of
    margin): equity 10 P; in tier 4, MM = 2.5 P − 4,140 = 0.2 × 10 P at P = 4,140 / 0.5 = 8,280
    (below 2,000 the ratio stays under 1 %)."""
    from btperp.margin import solve_price
    p = make_position("X", "long", 10, 100, tiers=T4, margin=1_000)
    assert solve_price(BINANCE, [p], 1_000.0, 0.0, 100.0, ratio=0.2) == pytest.approx(8_280.0, rel=1e-12)


def _rows(**override):
    """Two ccxt rows (1 % to 1,000, then 2.5 %; cum 0 and 15) without tier numbers, then ``override``
    applied to the second row (a key set to ... is removed)."""
    rows = [{"minNotional": 0, "maxNotional": 1_000, "maintenanceMarginRate": 0.01, "maxLeverage": 50},
            {"minNotional": 1_000, "maxNotional": None, "maintenanceMarginRate": 0.025, "maxLeverage": 20}]
    for key, value in override.items():
        if value is ...:
            rows[1].pop(key)
        else:
            rows[1][key] = value
    return rows


def test_ccxt_rows_are_numbered_by_position_and_read_the_published_amounts():
    table = TierTable.from_ccxt(_rows(), symbol="X")
    assert [t.tier for t in table.tiers] == [1, 2]
    assert [t.maintenance_amount for t in table.tiers] == [0.0, pytest.approx(15.0)]   # 1,000 × (2.5 % − 1 %)
    # a published amount, top level or in info, is read; an empty one is derived
    assert TierTable.from_ccxt(_rows(cum="15"), symbol="X").tiers[1].maintenance_amount == 15.0
    assert TierTable.from_ccxt(_rows(cum=""), symbol="X").tiers[1].maintenance_amount == pytest.approx(15.0)
    assert TierTable.from_ccxt(_rows(info={"mmDeduction": "15"}), symbol="X").tiers[1].maintenance_amount == 15.0


@pytest.mark.parametrize("rows, text", [
    (_rows(cum="16"), "X, tier 2, field 'cum': published maintenance amount 16.0 disagrees with the derived 15"),
    (_rows(info={"cum": "17"}), "X, tier 2, field 'cum': published maintenance amount 17.0 disagrees with the derived 15"),
    (_rows(cum="-1"), "X, tier 2, field 'cum': negative: -1.0"),
    (_rows(info={"mmDeduction": "x"}), "X, tier 2, field 'mmDeduction': not a number: 'x'"),
    (_rows(minNotional=...), "X, tier 2, field 'minNotional': missing"),
    (_rows(minNotional=""), "X, tier 2, field 'minNotional': missing"),
    (_rows(maxLeverage="20x"), "X, tier 2, field 'maxLeverage': not a number: '20x'"),
    (_rows(maintenanceMarginRate=float("nan")), "X, tier 2, field 'maintenanceMarginRate': NaN"),
    (_rows(maintenanceMarginRate=-0.1), "X, tier 2, field 'maintenanceMarginRate': negative: -0.1"),
    (_rows(tier="two"), "X, tier 2, field 'tier': not a tier number: 'two'"),
    ([_rows()[0], 7], "X, tier 2: expected an object with minNotional, maxNotional, "
                      "maintenanceMarginRate and maxLeverage, got 7"),
    ({"tiers": []}, "X: expected a list of tiers, got a JSON dict"),
    ("tiers", "X: expected a list of tiers, got a JSON str"),
    ([], "X: the table has no tiers"),
])
def test_ccxt_rows_refused_with_where_and_why(rows, text):
    with pytest.raises(TierTableError) as info:
        TierTable.from_ccxt(rows, symbol="X")
    assert str(info.value) == text


def _t(n, lo, hi, rate, lev, cum):
    return Tier(n, float(lo), float(hi), float(rate), float(lev), float(cum))


NAN = float("nan")
GOOD1, GOOD2 = _t(1, 0, 1_000, 0.01, 50, 0), _t(2, 1_000, math.inf, 0.025, 20, 15)


@pytest.mark.parametrize("tiers, text", [
    ([], "S: the table has no tiers"),
    ([_t(1, NAN, 1_000, 0.01, 50, 0)], "S, tier 1, field 'minNotional': NaN"),
    ([_t(1, 0, NAN, 0.01, 50, 0)], "S, tier 1, field 'maxNotional': NaN"),
    ([_t(1, 0, 1_000, NAN, 50, 0)], "S, tier 1, field 'maintenanceMarginRate': NaN"),
    ([_t(1, 0, 1_000, 0.01, NAN, 0)], "S, tier 1, field 'maxLeverage': NaN"),
    ([_t(1, -1, 1_000, 0.01, 50, 0)], "S, tier 1, field 'minNotional': negative: -1.0"),
    ([_t(1, 0, -1, 0.01, 50, 0)], "S, tier 1, field 'maxNotional': negative: -1.0"),
    ([_t(1, 0, 1_000, -0.01, 50, 0)], "S, tier 1, field 'maintenanceMarginRate': negative: -0.01"),
    ([_t(1, 0, 1_000, 0.01, -5, 0)], "S, tier 1, field 'maxLeverage': negative: -5.0"),
    ([_t(1, 0, 1_000, 1.0, 50, 0)], "S, tier 1, field 'maintenanceMarginRate': rate 1.0 is not below 1 (100 %)"),
    ([GOOD1, _t(2, 1_000, math.inf, 1.5, 20, 15)],
     "S, tier 2, field 'maintenanceMarginRate': rate 1.5 is not below 1 (100 %)"),
    ([_t(1, 0, 1_000, 0.01, 0.5, 0)], "S, tier 1, field 'maxLeverage': max leverage 0.5 is below 1"),
    ([GOOD1, _t(3, 1_000, math.inf, 0.025, 20, 15)],
     "S, tier 3, field 'tier': tier numbers must be 1, 2, 3, ...; found 3 at position 2"),
    ([_t(1, 0, 0, 0.01, 50, 0)], "S, tier 1, field 'maxNotional': maxNotional 0.0 is not above minNotional 0.0"),
    ([_t(1, 10, 1_000, 0.01, 50, 0)], "S, tier 1, field 'minNotional': the first tier starts at 10.0, not 0"),
    ([GOOD1, _t(2, 1_000, 5_000, 0.025, 20, 15), _t(3, 500, math.inf, 0.05, 10, 140)],
     "S, tier 3, field 'minNotional': minNotional 500.0 is below tier 2's 1000.0: tiers are not sorted"),
    ([GOOD1, _t(2, 1_200, math.inf, 0.025, 20, 18)],
     "S, tier 2, field 'minNotional': minNotional 1200.0 leaves a gap after tier 1's maxNotional 1000.0"),
    ([_t(1, 0, 1_200, 0.01, 50, 0), _t(2, 1_000, math.inf, 0.025, 20, 15)],
     "S, tier 2, field 'minNotional': minNotional 1000.0 overlaps tier 1, whose maxNotional is 1200.0"),
    ([GOOD1, _t(2, 1_000, math.inf, 0.005, 20, 0)],
     "S, tier 2, field 'maintenanceMarginRate': rate 0.005 is below tier 1's 0.01"),
    ([GOOD1, _t(2, 1_000, math.inf, 0.025, 60, 15)],
     "S, tier 2, field 'maxLeverage': max leverage 60.0 is above tier 1's 50.0"),
    ([GOOD1, _t(2, 1_000, math.inf, 0.025, 20, -1)], "S, tier 2, field 'cum': negative or NaN: -1.0"),
    ([GOOD1, _t(2, 1_000, math.inf, 0.025, 20, NAN)], "S, tier 2, field 'cum': negative or NaN: nan"),
    ([GOOD1, _t(2, 1_000, math.inf, 0.025, 20, 16)],
     "S, tier 2, field 'cum': published maintenance amount 16.0 disagrees with the derived 15"),
])
def test_every_table_rule_refuses_with_where_and_why(tiers, text):
    with pytest.raises(TierTableError) as info:
        TierTable(tiers, symbol="X", source="S")
    assert str(info.value) == text


def test_a_table_named_by_its_symbol_and_its_amounts_unchecked_on_request():
    with pytest.raises(TierTableError) as info:
        TierTable([], symbol="X")
    assert str(info.value) == "X: the table has no tiers"
    # amounts are checked unless told not to (a table of explicit rates and amounts)
    odd = TierTable([GOOD1, _t(2, 1_000, math.inf, 0.025, 20, 16)], check_amounts=False)
    assert odd.tiers[1].maintenance_amount == 16.0 and odd.source is None
    assert TierTable([GOOD1, GOOD2], symbol="X").source == "X"


def test_a_liquidation_price_in_a_narrow_tier():
    """Tiers 1 % to 1,000, 2.5 % (cum 15) to 1,500, 5 % above: tier 2 spans less than a doubling of
    the price. Long 12 at 100, 10x (margin 120): at the LP the notional is in tier 2, so
    120 + 12 (P − 100) = 12 × 0.025 P − 15 gives P = 1,065 / 11.7 = 91.03 (notional 1,092); tier 1's
    rate would give 1,080 / 11.88 = 90.91 instead."""
    narrow = table((0, 1_000, 0.01, 50), (1_000, 1_500, 0.025, 20), (1_500, math.inf, 0.05, 10))
    lp = liquidation_price("binance-usdm", "long", 12, 100, leverage=10, tiers=narrow)
    assert lp == pytest.approx(1_065 / 11.7, rel=1e-12)
    assert 1_000 <= 12 * lp < 1_500


def test_a_nearly_flat_hedge_has_two_liquidation_prices_and_the_nearer_one_counts():
    """Hedge mode, cross, wallet 20: long 10 and short 9.7 at 100 (table T). Equity 20 + 0.3 (P −
    100) grows slower than maintenance margin once both legs are in tier 2, so it is liquidated on
    either side. Below 100 (both tier 1: MM 0.1 P + 0.097 P): −10 + 0.3 P = 0.197 P at 10 / 0.103 =
    97.09. Between 1,000 / 9.7 = 103.09 and 500 (both tier 2: MM 0.25 P − 15 + 0.2425 P − 15):
    −10 + 0.3 P = 0.4925 P − 30 at 20 / 0.1925 = 103.90. Between 100 and 103.09 (long tier 2, short
    tier 1: 0.347 P − 15) the root 5 / 0.047 = 106.38 lies outside its interval: not one. At a mark
    of 101 the nearer is 103.90, at 99.5 it is 97.09."""
    from btperp.margin import evaluate
    lower, upper = 10 / 0.103, 20 / 0.1925
    for mark, lp in ((101.0, upper), (99.5, lower)):
        a = make_position("X", "long", 10, 100, tiers=T, leverage=10, mark_price=mark)
        b = make_position("X", "short", 9.7, 100, tiers=T, leverage=10, mark_price=mark)
        acct = evaluate(BINANCE, [a, b], margin_mode="cross", wallet_balance=20, hedge_mode=True,
                        taker_fee=0.0)
        assert [p.liquidation_price for p in acct.positions] == pytest.approx([lp, lp], rel=1e-12)
