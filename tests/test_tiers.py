"""Tier tables: parsing every supported shape, lookup, derivation, validation, time versions."""

import math
import os
import warnings

import numpy as np
import pytest

import btperp
from btperp.errors import (EarliestTableAssumed, TierAmountError, TierGapError, TierLeverageError,
                           TierOrderError, TierOverlapError, TierRateError, TierTableError,
                           TierValueError)
from btperp.tiers import Tier, TierHistory, TierTable, derive_maintenance_amounts

# ccxt's binanceusdm.fetch_leverage_tiers()["BTC/USDT:USDT"][:3], info as Binance sends it (strings).
CCXT_BINANCE = [
    {"tier": 1.0, "currency": "USDT", "minNotional": 0.0, "maxNotional": 50000.0,
     "maintenanceMarginRate": 0.004, "maxLeverage": 125.0,
     "info": {"bracket": "1", "initialLeverage": "125", "notionalCap": "50000", "notionalFloor": "0",
              "maintMarginRatio": "0.004", "cum": "0.0"}},
    {"tier": 2.0, "currency": "USDT", "minNotional": 50000.0, "maxNotional": 250000.0,
     "maintenanceMarginRate": 0.005, "maxLeverage": 100.0,
     "info": {"bracket": "2", "initialLeverage": "100", "notionalCap": "250000",
              "notionalFloor": "50000", "maintMarginRatio": "0.005", "cum": "50.0"}},
    {"tier": 3.0, "currency": "USDT", "minNotional": 250000.0, "maxNotional": 1000000.0,
     "maintenanceMarginRate": 0.01, "maxLeverage": 50.0,
     "info": {"bracket": "3", "initialLeverage": "50", "notionalCap": "1000000",
              "notionalFloor": "250000", "maintMarginRatio": "0.01", "cum": "1300.0"}},
]

# ccxt's bybit.fetch_leverage_tiers() shape: the amount is info.mmDeduction ("" on tier 1).
CCXT_BYBIT = [
    {"tier": 1, "currency": "USDT", "minNotional": 0, "maxNotional": 2000000.0,
     "maintenanceMarginRate": 0.005, "maxLeverage": 100.0,
     "info": {"id": 1, "symbol": "BTCUSDT", "riskLimitValue": "2000000", "maintenanceMargin": "0.005",
              "initialMargin": "0.01", "isLowestRisk": 1, "maxLeverage": "100.00", "mmDeduction": ""}},
    {"tier": 2, "currency": "USDT", "minNotional": 2000000.0, "maxNotional": 2600000.0,
     "maintenanceMarginRate": 0.0056, "maxLeverage": 95.24,
     "info": {"id": 2, "symbol": "BTCUSDT", "riskLimitValue": "2600000", "maintenanceMargin": "0.0056",
              "initialMargin": "0.0105", "isLowestRisk": 0, "maxLeverage": "95.24", "mmDeduction": "1200"}},
]

# Binance's raw GET /fapi/v1/leverageBracket answer for one symbol.
BINANCE_RAW = {"symbol": "ETHUSDT", "notionalCoef": 1.5, "brackets": [
    {"bracket": 1, "initialLeverage": 100, "notionalCap": 10000, "notionalFloor": 0,
     "maintMarginRatio": 0.005, "cum": 0.0},
    {"bracket": 2, "initialLeverage": 75, "notionalCap": 100000, "notionalFloor": 10000,
     "maintMarginRatio": 0.0065, "cum": 15.0},
    {"bracket": 3, "initialLeverage": 50, "notionalCap": 500000, "notionalFloor": 100000,
     "maintMarginRatio": 0.01, "cum": 365.0}]}


def rows(*specs):
    """(min, max, mmr, maxlev) tuples → ccxt rows without amounts (derived)."""
    return [{"tier": i + 1, "minNotional": lo, "maxNotional": hi, "maintenanceMarginRate": r,
             "maxLeverage": lev} for i, (lo, hi, r, lev) in enumerate(specs)]


GOOD = [(0, 50_000, 0.004, 125), (50_000, 250_000, 0.005, 100), (250_000, 1_000_000, 0.01, 50)]


def test_ccxt_binance_reads_cum_from_info():
    table = TierTable.from_ccxt(CCXT_BINANCE, symbol="BTC/USDT:USDT")
    assert [t.maintenance_amount for t in table] == [0.0, 50.0, 1300.0]
    assert [t.max_leverage for t in table] == [125.0, 100.0, 50.0]
    assert table.tiers[1].info["notionalFloor"] == "50000"


def test_ccxt_bybit_reads_mm_deduction_and_empty_first_tier():
    table = TierTable.from_ccxt(CCXT_BYBIT, symbol="BTC/USDT:USDT")
    assert [t.maintenance_amount for t in table] == [0.0, 1200.0]


def test_binance_raw_brackets():
    table = TierTable.from_binance_brackets(BINANCE_RAW)
    assert table.symbol == "ETHUSDT"
    assert [(t.min_notional, t.maintenance_margin_rate, t.maintenance_amount, t.max_leverage)
            for t in table] == [(0, 0.005, 0, 100), (10000, 0.0065, 15, 75), (100000, 0.01, 365, 50)]
    # the list form needs the symbol to pick one
    assert TierTable.from_binance_brackets([BINANCE_RAW], symbol="ETHUSDT") == table
    with pytest.raises(TierTableError, match="BTCUSDT"):
        TierTable.from_binance_brackets([BINANCE_RAW], symbol="BTCUSDT")


def test_missing_amounts_are_derived():
    table = TierTable.from_ccxt(rows(*GOOD))
    # cum_2 = 0 + 50,000 × (0.005 − 0.004) = 50; cum_3 = 50 + 250,000 × (0.01 − 0.005) = 1,300
    assert [t.maintenance_amount for t in table] == pytest.approx([0.0, 50.0, 1300.0], abs=1e-9)
    assert derive_maintenance_amounts([0, 10_000, 100_000], [0.005, 0.0065, 0.01]) == \
        pytest.approx([0, 15, 365], abs=1e-9)


def test_lookup_boundaries_and_vectorized_lookup():
    table = TierTable.from_ccxt(rows(*GOOD))
    assert table.lookup(0).tier == 1
    assert table.lookup(49_999.99).tier == 1
    assert table.lookup(50_000).tier == 2          # minNotional is inclusive
    assert table.lookup(999_999).tier == 3
    assert table.lookup(5e9).tier == 3             # beyond the cap: the last tier
    notionals = np.array([0, 49_999.99, 50_000, 250_000, 5e9])
    assert list(table.lookup_index(notionals)) == [0, 0, 1, 2, 2]
    rates, amounts = table.rates_and_amounts(notionals)
    assert list(rates) == [0.004, 0.004, 0.005, 0.01, 0.01]
    assert table.maintenance_margin(100_000) == pytest.approx(100_000 * 0.005 - 50)
    with pytest.raises(ValueError):
        table.lookup(-1)


def test_open_ended_last_tier():
    table = TierTable.from_ccxt(rows((0, 1000, 0.01, 20), (1000, None, 0.02, 10)))
    assert math.isinf(table.tiers[-1].max_notional)
    assert table.lookup(1e12).tier == 2
    assert table.to_ccxt()[-1]["maxNotional"] is None


@pytest.mark.parametrize("specs, error, tier, field", [
    # a gap between 50,000 and 60,000
    ([(0, 50_000, 0.004, 125), (60_000, 250_000, 0.005, 100)], TierGapError, 2, "minNotional"),
    # tier 2 starts inside tier 1
    ([(0, 50_000, 0.004, 125), (40_000, 250_000, 0.005, 100)], TierOverlapError, 2, "minNotional"),
    # sorted backwards
    ([(0, 50_000, 0.004, 125), (250_000, 1_000_000, 0.01, 50), (50_000, 250_000, 0.005, 100)],
     TierOrderError, 3, "minNotional"),
    # rate falls from 0.5 % to 0.4 %
    ([(0, 50_000, 0.005, 125), (50_000, 250_000, 0.004, 100)], TierRateError, 2, "maintenanceMarginRate"),
    # max leverage rises from 100x to 125x
    ([(0, 50_000, 0.004, 100), (50_000, 250_000, 0.005, 125)], TierLeverageError, 2, "maxLeverage"),
    # negative values
    ([(0, 50_000, -0.004, 125)], TierValueError, 1, "maintenanceMarginRate"),
    ([(0, 50_000, 0.004, 125), (50_000, 250_000, 0.005, -100)], TierValueError, 2, "maxLeverage"),
    # NaN values
    ([(0, 50_000, float("nan"), 125)], TierValueError, 1, "maintenanceMarginRate"),
    ([(0, float("nan"), 0.004, 125)], TierValueError, 1, "maxNotional"),
    # the first tier must start at 0
    ([(100, 50_000, 0.004, 125)], TierGapError, 1, "minNotional"),
    # a tier whose cap is not above its floor
    ([(0, 50_000, 0.004, 125), (50_000, 50_000, 0.005, 100)], TierOrderError, 2, "maxNotional"),
])
def test_each_invalid_table_has_its_own_error(specs, error, tier, field):
    with pytest.raises(error) as info:
        TierTable.from_ccxt(rows(*specs), source="test.json BTC/USDT:USDT")
    assert info.value.tier == tier and info.value.field == field
    message = str(info.value)
    assert f"tier {tier}" in message and field in message and "test.json" in message


def test_published_cum_that_disagrees_with_derivation():
    bad = [dict(r) for r in CCXT_BINANCE]
    bad[2] = {**bad[2], "info": {**bad[2]["info"], "cum": "1250.0"}}   # should be 1,300
    with pytest.raises(TierAmountError) as info:
        TierTable.from_ccxt(bad, source="BTC/USDT:USDT")
    assert info.value.tier == 3 and info.value.field == "cum"
    assert "1250" in str(info.value) and "1300" in str(info.value)


def test_missing_or_non_numeric_fields():
    with pytest.raises(TierValueError, match="tier 1, field 'maintenanceMarginRate': missing"):
        TierTable.from_ccxt([{"tier": 1, "minNotional": 0, "maxNotional": 10, "maxLeverage": 10}])
    with pytest.raises(TierValueError, match="not a number"):
        TierTable.from_ccxt([{"tier": 1, "minNotional": 0, "maxNotional": "ten",
                              "maintenanceMarginRate": 0.01, "maxLeverage": 10}])
    with pytest.raises(TierTableError, match="no tiers"):
        TierTable.from_ccxt([])


def test_single_tier_override():
    table = TierTable.single(0.005, 0.0)
    assert len(table) == 1 and table.lookup(1e15).maintenance_margin_rate == 0.005


# --- time versions --------------------------------------------------------------------------------

def history():
    t1 = TierTable.from_ccxt(rows(*GOOD), symbol="X")
    t2 = TierTable.from_ccxt(rows((0, 10_000, 0.01, 50), (10_000, 1e6, 0.02, 25)), symbol="X")
    return TierHistory([("2022-02-05", t1), ("2023-03-13", t2)], symbol="X/USDT:USDT"), t1, t2


def test_table_in_force_at_a_date():
    h, t1, t2 = history()
    assert h.at("2022-02-05").table is t1                       # from the observed day on
    assert h.at("2023-03-12T23:59:59").table is t1
    assert h.at("2023-03-13").table is t2
    hit = h.at("2030-01-01")
    assert hit.table is t2 and not hit.assumed and hit.observed.year == 2023


def test_before_first_table_flags_and_warns_once():
    h, t1, _ = history()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = h.at("2021-05-19")
        second = h.at("2020-01-01")
    assert first.table is t1 and first.assumed and second.assumed
    ours = [w for w in caught if issubclass(w.category, EarliestTableAssumed)]
    assert len(ours) == 1
    assert "2021-05-19" in str(ours[0].message) and "2022-02-05" in str(ours[0].message)
    # it points at the caller's line, not inside btperp (stacklevel)
    assert not ours[0].filename.startswith(os.path.dirname(btperp.__file__))


def test_history_rejects_two_tables_on_one_date():
    t = TierTable.from_ccxt(rows(*GOOD))
    with pytest.raises(TierTableError, match="two tables"):
        TierHistory([("2022-02-05", t), ("2022-02-05T00:00:00Z", t)])


# --- the bundled history ---------------------------------------------------------------------------

def test_every_bundled_snapshot_derives_its_published_amounts(tier_json):
    """Acceptance: for every snapshot the derived maintenance amount equals the published one."""
    snapshots = 0
    for symbol, snaps in tier_json["symbols"].items():
        for snap in snaps:
            tiers = snap["tiers"]
            derived = derive_maintenance_amounts([t["minNotional"] for t in tiers],
                                                 [t["maintenanceMarginRate"] for t in tiers])
            for t, d in zip(tiers, derived):
                assert d == pytest.approx(t["cum"], rel=1e-9, abs=1e-6), (symbol, snap["observed"], t)
            snapshots += 1
    assert snapshots == 1402 and len(tier_json["symbols"]) == 487


def test_every_bundled_table_validates(tier_file):
    histories = tier_file.histories()
    assert sum(len(h.versions) for h in histories.values()) == 1402
    btc = histories["BTC/USDT:USDT"]
    assert [d.strftime("%Y-%m-%d") for d in btc.change_times()] == [
        "2022-02-05", "2022-05-21", "2022-11-25", "2023-02-17", "2023-03-13", "2023-08-01",
        "2023-12-12", "2024-02-03", "2024-05-30"]
    first = btc.versions[0][1]
    assert (first.lookup(49_999).maintenance_margin_rate, first.lookup(50_000).maintenance_amount) == (0.004, 50.0)
    assert tier_file.history("BTCUSDT") is btc          # exchange spelling finds it too
    assert tier_file.history("NOPE/USDT:USDT") is None


def test_binance_bracket_numbers_are_checked():
    """Binance numbers its brackets 1, 2, 3, ...; a set that skips one is refused, naming it."""
    import copy
    skipped = copy.deepcopy(BINANCE_RAW)
    skipped["brackets"][1]["bracket"] = 3
    with pytest.raises(TierTableError) as info:
        TierTable.from_binance_brackets(skipped, source="brackets.json")
    assert str(info.value) == ("brackets.json, tier 3, field 'tier': tier numbers must be 1, 2, 3, ...; "
                               "found 3 at position 2")


def test_a_table_without_amounts_refuses_one_and_amounts_within_a_micro_unit_pass():
    """OKX tables have no maintenance amount: a non-zero one is refused, naming the source. A
    derived amount is checked within 1e-6 absolute (or 1e-9 relative): tier 2's cum is
    50,000 × (0.005 − 0.004) = 50; 50 + 5e-7 passes, 50 + 5e-6 does not."""
    with pytest.raises(TierTableError) as err:
        TierTable([Tier(1, 0.0, 1_000.0, 0.01, 50.0, 2.5)], amounts=False, source="okx BTC-USDT")
    assert "a table without maintenance amounts has a non-zero amount" in str(err.value)
    assert err.value.source == "okx BTC-USDT" and "okx BTC-USDT" in str(err.value)

    def two(cum):
        return [Tier(1, 0.0, 50_000.0, 0.004, 125.0, 0.0), Tier(2, 50_000.0, math.inf, 0.005, 100.0, cum)]
    assert TierTable(two(50 + 5e-7)).tiers[1].maintenance_amount == 50 + 5e-7
    with pytest.raises(TierAmountError):
        TierTable(two(50 + 5e-6))
