"""Margin math against the exchanges' own worked examples and their published formulas."""

import itertools
import math

import numpy as np
import pytest

from btperp.errors import InputError, LeverageError
from btperp.margin import (MarginMode, Side, bankruptcy_price, check_leverage, evaluate,
                           liquidation_price, make_position, margin_ratio, solve_price, tier_of)
from btperp.rules import BinanceUSDM, BybitLinear, Hyperliquid, get_rulebook
from btperp.tiers import TierTable

BINANCE, BYBIT, HYPER = BinanceUSDM(), BybitLinear(), Hyperliquid()


# --- the exchanges' own examples -------------------------------------------------------------------

def test_binance_faq_isolated_example():
    """Binance FAQ: isolated, wallet 500 USDT, long 0.02 BTC at 50,000, tier 1 (0.4 %, cum 0)."""
    tier1 = TierTable.single(0.004, 0.0)
    lp = liquidation_price("binance-usdm", "long", 0.02, 50_000, margin=500, tiers=tier1)
    assert round(lp, 2) == 25_100.40
    # The same through the bundled table (0.02 BTC at 50,000 = 1,000 USDT: tier 1).
    assert lp == pytest.approx((500 + 0 - 0.02 * 50_000) / (0.02 * 0.004 - 0.02), rel=1e-15)


def test_bybit_help_examples():
    """Bybit: isolated long 1 BTC at 20,000, 50x, MMR 0.5 %, no fees → 19,700; bankruptcy at 10,000/50x → 9,800."""
    table = TierTable.single(0.005)
    assert liquidation_price("bybit", "long", 1, 20_000, leverage=50, tiers=table,
                             taker_fee=0) == pytest.approx(19_700, abs=1e-9)
    assert bankruptcy_price("bybit", "long", 1, 10_000, leverage=50, tiers=table,
                            taker_fee=0) == pytest.approx(9_800, abs=1e-9)
    # shorts mirror it: entry + (IM − MM) / size
    assert liquidation_price("bybit", "short", 1, 20_000, leverage=50, tiers=table,
                             taker_fee=0) == pytest.approx(20_300, abs=1e-9)


def test_bybit_fee_to_close_is_in_both_margins_and_cancels_in_the_liquidation_price():
    table = TierTable.single(0.005)
    fee = 0.00055
    pos = make_position("BTC/USDT:USDT", "long", 1, 20_000, leverage=50, tiers=table)
    fee_to_close = 1 * 20_000 * (1 - 1 / 50) * fee                       # size × bankruptcy × taker
    result = evaluate(BYBIT, [pos], taker_fee=fee).positions[0]
    assert result.initial_margin == pytest.approx(400 + fee_to_close)
    assert result.maintenance_margin == pytest.approx(100 + fee_to_close)
    assert result.liquidation_price == pytest.approx(19_700)
    assert result.bankruptcy_price == pytest.approx(19_600)


def hyperliquid_docs_formula(side, entry, size, margin, max_leverage):
    """Hyperliquid docs, literally: liq_price = price − side × margin_available / position_size / (1 − l × side)."""
    l = 1 / (2 * max_leverage)                                   # 1 / maintenance leverage
    margin_available = margin - size * entry * l                 # isolated margin − maintenance margin
    return entry - side * margin_available / size / (1 - l * side)


@pytest.mark.parametrize("side", [1, -1])
@pytest.mark.parametrize("max_leverage, leverage", [(50, 50), (40, 10), (3, 2), (20, 1)])
def test_hyperliquid_matches_its_docs_formula(side, max_leverage, leverage):
    table = Hyperliquid.table_for_max_leverage(max_leverage)
    size, entry = 2.5, 61_234.5
    margin = size * entry / leverage
    lp = liquidation_price("hyperliquid", side, size, entry, leverage=leverage, tiers=table)
    expected = hyperliquid_docs_formula(side, entry, size, margin, max_leverage)
    if expected <= 0:
        assert lp is None
    else:
        assert lp == pytest.approx(expected, rel=1e-12)


# --- Binance's published formula, implemented literally, including hedge mode and cross ----------

def binance_faq_formula(WB, TMM1, UPNL1, cumB, cumL, cumS, side1B, pos1B, EP1B, pos1L, EP1L,
                        pos1S, EP1S, MMRB, MMRL, MMRS):
    """LP1 of "How to Calculate Liquidation Price of USDⓈ-M Futures Contracts", symbol for symbol."""
    return ((WB - TMM1 + UPNL1 + cumB + cumL + cumS - side1B * pos1B * EP1B - pos1L * EP1L + pos1S * EP1S)
            / (pos1B * MMRB + pos1L * MMRL + pos1S * MMRS - side1B * pos1B - pos1L + pos1S))


def test_cross_hedge_mode_matches_binance_formula_with_consistent_tiers(btc_table):
    eth = TierTable.from_ccxt([
        {"tier": 1, "minNotional": 0, "maxNotional": 10_000, "maintenanceMarginRate": 0.005, "maxLeverage": 100},
        {"tier": 2, "minNotional": 10_000, "maxNotional": 100_000, "maintenanceMarginRate": 0.0065, "maxLeverage": 75},
        {"tier": 3, "minNotional": 100_000, "maxNotional": 500_000, "maintenanceMarginRate": 0.01, "maxLeverage": 50}])
    long_ = make_position("BTC/USDT:USDT", "long", 3.0, 60_000, mark_price=58_000, leverage=20, tiers=btc_table)
    short = make_position("BTC/USDT:USDT", "short", 1.0, 61_000, mark_price=58_000, leverage=20, tiers=btc_table)
    eth_pos = make_position("ETH/USDT:USDT", "long", 20.0, 3_000, mark_price=2_900, leverage=10, tiers=eth)
    wallet = 30_000.0
    acct = evaluate(BINANCE, [long_, short, eth_pos], margin_mode="cross", wallet_balance=wallet,
                    hedge_mode=True)
    lp = acct.positions[0].liquidation_price
    assert acct.positions[1].liquidation_price == lp           # hedge legs share one price in cross

    eth_notional = 20 * 2_900
    eth_tier = eth.lookup(eth_notional)
    TMM1 = eth_notional * eth_tier.maintenance_margin_rate - eth_tier.maintenance_amount
    UPNL1 = 20 * (2_900 - 3_000)
    # brute force over every pair of tiers: keep the LP whose notionals fall in the tiers used
    consistent = []
    for tl, ts in itertools.product(btc_table.tiers, repeat=2):
        if 3.0 * tl.maintenance_margin_rate + 1.0 * ts.maintenance_margin_rate - 3.0 + 1.0 == 0:
            continue                                   # this pair of tiers has no root
        p = binance_faq_formula(wallet, TMM1, UPNL1, 0, tl.maintenance_amount, ts.maintenance_amount,
                                0, 0, 0, 3.0, 60_000, 1.0, 61_000, 0, tl.maintenance_margin_rate,
                                ts.maintenance_margin_rate)
        if p > 0 and btc_table.lookup(3.0 * p) == tl and btc_table.lookup(1.0 * p) == ts:
            consistent.append(p)
    assert len(consistent) == 1
    assert lp == pytest.approx(consistent[0], rel=1e-12)


def test_liquidation_tier_is_the_tier_at_the_liquidation_price(btc_table):
    """10 BTC at 60,000 is tier 3 (1 %, cum 1,300) at entry, but at its liquidation price the notional
    is in tier 2 (0.5 %, cum 50): Binance says recompute with the tier at the liquidation price."""
    margin = 400_000.0
    pos = make_position("BTC/USDT:USDT", "long", 10, 60_000, leverage=1.5, tiers=btc_table, margin=margin)
    result = evaluate(BINANCE, [pos]).positions[0]
    assert result.tier == 3 and result.liquidation_tier == 2
    tier2 = btc_table.tiers[1]
    expected = binance_faq_formula(margin, 0, 0, tier2.maintenance_amount, 0, 0, 1, 10, 60_000,
                                   0, 0, 0, 0, tier2.maintenance_margin_rate, 0, 0)
    assert result.liquidation_price == pytest.approx(expected, rel=1e-12)       # 20,095.48
    assert round(result.liquidation_price, 2) == 20_095.48
    tier3 = btc_table.tiers[2]
    naive = binance_faq_formula(margin, 0, 0, tier3.maintenance_amount, 0, 0, 1, 10, 60_000,
                                0, 0, 0, 0, tier3.maintenance_margin_rate, 0, 0)
    assert abs(naive - result.liquidation_price) > 20        # the entry tier would be off by ~25 USDT


def test_short_liquidation_and_bankruptcy_above_entry(btc_table):
    result = evaluate(BINANCE, [make_position("BTC/USDT:USDT", "short", 0.5, 40_000, leverage=10,
                                              tiers=btc_table)]).positions[0]
    # (WB + cum + pos × EP) / (pos × MMR + pos), WB = 2,000
    assert result.liquidation_price == pytest.approx((2_000 + 0 + 0.5 * 40_000) / (0.5 * 0.004 + 0.5))
    assert result.bankruptcy_price == pytest.approx(40_000 + 2_000 / 0.5)
    assert result.bankruptcy_price > result.liquidation_price > 40_000


def test_one_x_long_has_no_liquidation_price(btc_table):
    result = evaluate(BINANCE, [make_position("BTC/USDT:USDT", "long", 0.1, 30_000, leverage=1,
                                              tiers=btc_table)]).positions[0]
    assert result.liquidation_price is None and result.distance_to_liquidation_pct is None
    assert result.bankruptcy_price is None


def test_cross_account_margin_ratio(btc_table):
    a = make_position("BTC/USDT:USDT", "long", 0.5, 60_000, mark_price=59_000, leverage=20, tiers=btc_table)
    b = make_position("ETH/USDT:USDT", "short", 4, 3_000, mark_price=3_100, leverage=10,
                      tiers=TierTable.single(0.005))
    acct = evaluate(BINANCE, [a, b], margin_mode=MarginMode.CROSS, wallet_balance=10_000)
    mm = 0.5 * 59_000 * 0.004 + 4 * 3_100 * 0.005
    balance = 10_000 + 0.5 * (59_000 - 60_000) - 4 * (3_100 - 3_000)
    assert acct.maintenance_margin == pytest.approx(mm)
    assert acct.margin_balance == pytest.approx(balance)
    assert acct.margin_ratio == pytest.approx(mm / balance)
    assert all(p.margin_ratio == acct.margin_ratio for p in acct.positions)


def test_margin_ratio_edge_cases():
    assert margin_ratio(5.0, 10.0) == 0.5
    assert margin_ratio(5.0, 0.0) == math.inf and margin_ratio(5.0, -3.0) == math.inf


def test_leverage_above_the_tier_maximum_is_refused(btc_table):
    ok = make_position("BTC/USDT:USDT", "long", 0.02, 50_000, leverage=125, tiers=btc_table)
    assert check_leverage(BINANCE, ok).tier == 1
    big = make_position("BTC/USDT:USDT", "long", 2, 50_000, leverage=101, tiers=btc_table)  # 100k: tier 2, 100x
    with pytest.raises(LeverageError, match="101x is above the 100x that tier 2 allows"):
        check_leverage(BINANCE, big)


def test_one_way_mode_refuses_two_positions_in_a_symbol(btc_table):
    a = make_position("BTC/USDT:USDT", "long", 1, 60_000, leverage=10, tiers=btc_table)
    b = make_position("BTC/USDT:USDT", "short", 1, 60_000, leverage=10, tiers=btc_table)
    with pytest.raises(InputError, match="one-way mode"):
        evaluate(BINANCE, [a, b], margin_mode="cross", wallet_balance=10_000)
    assert len(evaluate(BINANCE, [a, b], margin_mode="cross", wallet_balance=10_000,
                        hedge_mode=True).positions) == 2


def test_bad_positions_name_their_field(btc_table):
    with pytest.raises(InputError, match="size: must be a positive number"):
        make_position("BTC/USDT:USDT", "long", -1, 60_000, leverage=10, tiers=btc_table)
    with pytest.raises(InputError, match="leverage: give the leverage"):
        make_position("BTC/USDT:USDT", "long", 1, 60_000, tiers=btc_table)
    with pytest.raises(InputError, match="side: must be 'long' or 'short'"):
        Side.parse("up")
    with pytest.raises(InputError, match="unknown exchange 'ftx'"):
        get_rulebook("ftx")
    with pytest.raises(InputError, match="wallet balance"):
        evaluate(BINANCE, [make_position("B", "long", 1, 1, leverage=1, tiers=btc_table)], margin_mode="cross")


def test_funding_sign_convention():
    # positive rate: longs pay, shorts receive; on mark price × size
    assert BINANCE.funding_payment(0.5, 60_000, 0.0001) == pytest.approx(3.0)
    assert BINANCE.funding_payment(-0.5, 60_000, 0.0001) == pytest.approx(-3.0)
    assert BYBIT.funding_payment(2, 3_000, -0.0002) == pytest.approx(-1.2)


def test_solve_price_uses_the_tier_of_the_notional_at_the_root(btc_table):
    """1 BTC at 60,000 with 6,000 margin: liquidated near 54,221, a 54k notional, so tier 2
    (0.5 %, cum 50) applies, not tier 1 as a 0.4 % rule of thumb would assume."""
    pos = make_position("BTC/USDT:USDT", "long", 1, 60_000, leverage=10, tiers=btc_table)
    lp = solve_price(BINANCE, [pos], 6_000, 0.0005, 60_000)
    assert lp == pytest.approx((6_000 + 50 - 60_000) / (0.005 - 1), rel=1e-12)


def test_vectorized_maintenance_margin_equals_the_scalar_one(btc_table):
    from btperp.margin import maintenance_margin, maintenance_margin_array
    rng = np.random.default_rng(3)
    n = 400
    side = rng.choice([1.0, -1.0], n)
    size = rng.uniform(0.001, 400, n)
    entry = rng.uniform(20_000, 70_000, n)
    price = entry * rng.uniform(0.5, 1.5, n)
    for name in ("binance-usdm", "bybit"):
        rulebook = get_rulebook(name)
        index, mm = maintenance_margin_array(rulebook, btc_table, side, size, entry, price, 10.0, 0.0005)
        for i in range(n):
            pos = make_position("BTC/USDT:USDT", "long" if side[i] > 0 else "short", size[i], entry[i],
                                tiers=btc_table, leverage=10.0)
            assert mm[i] == pytest.approx(maintenance_margin(rulebook, pos, price[i], 0.0005), rel=1e-12)
            assert index[i] + 1 == tier_of(rulebook, pos, price[i]).tier


def test_the_tier_walk_goes_down_when_the_reference_tiers_root_is_negative():
    """Long 1 at 100 with 81.63 margin: in tier 2 (50 % MMR, cum 24.5) the affine root is below 0,
    but the real liquidation price is in tier 1: P − 18.37 = 0.01 P."""
    table = TierTable.from_ccxt([
        {"tier": 1, "minNotional": 0, "maxNotional": 50, "maintenanceMarginRate": 0.01, "maxLeverage": 50},
        {"tier": 2, "minNotional": 50, "maxNotional": 1e9, "maintenanceMarginRate": 0.5, "maxLeverage": 1}])
    pos = make_position("X", "long", 1.0, 100.0, tiers=table, margin=81.63)
    lp = solve_price(BINANCE, [pos], 81.63, 0.0, 100.0)
    assert lp == pytest.approx(18.37 / 0.99, rel=1e-12)
