"""btperp.liquidation: how a liquidated position is closed (pure core)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from btperp.errors import InputError
from btperp.liquidation import FillPolicy, GroupLeg, settle, settle_group


def test_binance_faq_position_taken_over_at_its_bankruptcy_price():
    # Binance's FAQ example: isolated long 0.02 BTC at 50,000 with 500 USDT, tier 1 (0.4 %):
    # liquidation price 25,100.40 (exactly 25,000 / 0.996), bankruptcy price 25,000.
    lp = 25_000 / 0.996
    s = settle(1, 0.02, 50_000, lp, 500)
    assert s.fill_price == pytest.approx(25_000) and s.bankruptcy_price == pytest.approx(25_000)
    assert s.realized_pnl == pytest.approx(-500) and s.balance_after == 0 and s.fee == 0
    # what is left at the liquidation price, the maintenance margin, goes to the insurance fund
    assert s.equity_at_trigger == pytest.approx(0.004 * 0.02 * lp)
    assert s.insurance_flow == pytest.approx(s.equity_at_trigger)


def test_fee_policy_closes_at_the_trigger_and_keeps_the_rest():
    s = settle(1, 0.02, 50_000, 26_000, 500, policy="fee", fee_rate=0.0125)
    equity = 500 + 0.02 * (26_000 - 50_000)
    assert s.fill_price == 26_000 and s.fee == pytest.approx(0.0125 * 0.02 * 26_000)
    assert s.balance_after == pytest.approx(equity - s.fee) and s.insurance_flow == pytest.approx(s.fee)


def test_a_gap_past_bankruptcy_is_covered_by_the_insurance_fund():
    for policy in FillPolicy:
        s = settle(-1, 1.0, 100.0, 130.0, 10.0, policy=policy, fee_rate=0.0125)
        assert s.fill_price == pytest.approx(110.0) and s.balance_after == 0
        assert s.insurance_flow == pytest.approx(-20.0)


def test_bybit_reserve_is_kept_as_the_fee_to_close():
    s = settle(1, 1.0, 100.0, 91.0, 10.0, reserve=0.05)
    assert s.fill_price == pytest.approx(90.05) and s.fee == 0.05 and s.balance_after == 0


def test_bad_input():
    with pytest.raises(InputError, match="fill policy"):
        settle(1, 1.0, 100.0, 90.0, 10.0, policy="market")
    with pytest.raises(InputError, match="size"):
        settle(1, 0.0, 100.0, 90.0, 10.0)


amounts = st.floats(0.01, 1e4)


@given(side=st.sampled_from([1, -1]), size=amounts, entry=amounts, move=st.floats(-0.9, 0.9),
       balance=amounts, policy=st.sampled_from(list(FillPolicy)), fee_rate=st.floats(0, 0.02))
def test_settlement_identities(side, size, entry, move, balance, policy, fee_rate):
    trigger = entry * (1 + move)
    s = settle(side, size, entry, trigger, balance, policy=policy, fee_rate=fee_rate)
    scale = balance + size * entry
    assert s.balance_after >= 0
    assert s.balance_after == pytest.approx(balance + s.realized_pnl - s.fee, abs=1e-9 * scale)
    pnl_trigger = side * size * (trigger - entry)
    assert s.insurance_flow == pytest.approx(pnl_trigger - s.realized_pnl + s.insurance_fee,
                                             abs=1e-9 * scale)


@given(legs=st.lists(st.tuples(st.sampled_from([1, -1]), amounts, amounts, st.floats(-0.5, 0.5),
                               st.floats(0, 100)), min_size=1, max_size=4),
       wallet=amounts, policy=st.sampled_from(list(FillPolicy)))
def test_cross_group_settles_the_whole_account(legs, wallet, policy):
    group = [GroupLeg(side, size, entry, entry * (1 + move), mm) for side, size, entry, move, mm in legs]
    results = settle_group(group, wallet, policy=policy, fee_rate=0.005)
    equity = wallet + sum(l.side * l.size * (l.trigger_price - l.entry_price) for l in group)
    scale = wallet + sum(l.size * l.entry_price for l in group)
    kept = sum(r.balance_after for r in results)
    # wallet afterwards = wallet + Σ realized − Σ fees = what each share kept
    assert wallet + sum(r.realized_pnl - r.fee for r in results) == pytest.approx(kept, abs=1e-9 * scale)
    if policy is FillPolicy.BANKRUPTCY:
        assert kept == 0 and sum(r.insurance_flow for r in results) == pytest.approx(equity, abs=1e-9 * scale)


def test_one_leg_group_is_the_single_settlement():
    (g,) = settle_group([GroupLeg(1, 0.02, 50_000, 25_100.40, 2.0)], 500)
    assert g == settle(1, 0.02, 50_000, 25_100.40, 500)
