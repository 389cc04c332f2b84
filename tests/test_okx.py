"""OKX (issue #19): position tiers bounded in contracts, converted with the contract value (ctVal),
fetched from the canned OKX answers (tests/canned/okx, served by tests/fakex.py), never the network.

The canned BTC-USDT swap has ctVal 0.01 BTC (instruments-SWAP.json) and the tiers of
position-tiers-SWAP-BTC-USDT.json: tier 1 0..2,000 contracts at 0.4 % / 125x, tier 2 2,001..5,000
at 0.5 % / 100x, tier 3 5,001..20,000 at 0.75 % / 66.66x, then +20,000 contracts and +0.5 % a tier.
"""

import json
import math

import numpy as np
import pytest

from btperp.errors import (TierAmountError, TierGapError, TierOrderError, TierOverlapError, TierTableError,
                           TierValueError)
from btperp.io.fetch import Fetcher, VENUES, make_client
from btperp.io.tierfile import TierHistoryFile
from btperp.tiers import TierHistory, TierTable, contracts_to_base

import fakex

START = 1704067200000                      # 2024-01-01 00:00 UTC
CANNED = json.loads((fakex.CANNED / "okx" / "position-tiers-SWAP-BTC-USDT.json").read_text())["data"]


def okx_rows(*specs):
    """OKX position-tier rows from (minSz, maxSz, mmr, maxLever), strings as OKX writes them."""
    return [{"tier": str(i), "minSz": str(lo), "maxSz": "" if hi is None else str(hi), "mmr": str(r),
             "imr": "0.01", "maxLever": str(lev), "instFamily": "BTC-USDT", "instId": ""}
            for i, (lo, hi, r, lev) in enumerate(specs, start=1)]


def test_contract_bounds_become_base_units_and_the_gap_closes_at_the_previous_max():
    table = TierTable.from_okx(CANNED, 0.01, symbol="BTC/USDT:USDT")
    # bounds: maxSz × ctVal, each tier starting at the previous tier's maxSz (2,000 × 0.01 = 20 BTC)
    assert [(t.min_notional, t.max_notional) for t in table.tiers[:4]] == [
        (0.0, 20.0), (20.0, 50.0), (50.0, 200.0), (200.0, 400.0)]
    assert [t.maintenance_margin_rate for t in table.tiers[:3]] == [0.004, 0.005, 0.0075]
    assert [t.max_leverage for t in table.tiers[:3]] == [125, 100, 66.66]
    assert all(t.maintenance_amount == 0 for t in table.tiers)         # OKX has no deduction
    assert table.upper_inclusive and not table.amounts and table.contract_value == 0.01
    # OKX's tier 1 is 0..2,000 contracts inclusive: 2,000 contracts (20 BTC) is tier 1, 2,000.01
    # (lotSz 0.01) and 2,001 contracts are above its maximum, so tier 2; 5,000 is tier 2's last
    contracts = [0, 0.01, 1999.99, 2000, 2000.01, 2000.5, 2001, 5000, 5000.01, 20000, 20001]
    expected = [1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 4]
    sizes = [contracts_to_base(n, 0.01) for n in contracts]
    assert [table.lookup(s).tier for s in sizes] == expected
    assert list(table.lookup_index(np.array(sizes)) + 1) == expected
    # beyond the last tier's cap: the last tier (the exchange would refuse the order)
    assert table.lookup(10_000.0).tier == 7


def test_contracts_to_base_gives_the_float_of_the_table_bound():
    assert 2001 * 0.1 != 200.1                                    # 200.10000000000002
    assert contracts_to_base(2001, 0.1) == 200.1
    assert contracts_to_base(3, 0.1) == 0.3                       # 0.30000000000000004 otherwise
    # ctVal 0.1 (ETH-USDT-SWAP): exactly 2,001 contracts is the bound of the tier ending there
    table = TierTable.from_okx(okx_rows((0, 2001, 0.01, 50), (2002, 5000, 0.02, 20)), 0.1)
    assert table.lookup(contracts_to_base(2001, 0.1)).tier == 1


def test_whole_contract_steps_and_touching_bounds_are_both_accepted():
    stepped = TierTable.from_okx(okx_rows((0, 100, 0.01, 50), (101, 300, 0.02, 20)), 1)
    touching = TierTable.from_okx(okx_rows((0, 100, 0.01, 50), (100, 300, 0.02, 20)), 1)
    assert stepped == touching
    assert stepped.lookup(100).tier == 1 and stepped.lookup(100.5).tier == 2
    # an open-ended last tier
    open_ended = TierTable.from_okx(okx_rows((0, 100, 0.01, 50), (101, None, 0.02, 20)), 1)
    assert open_ended.tiers[-1].max_notional == float("inf") and open_ended.lookup(1e9).tier == 2


@pytest.mark.parametrize("specs, cv, error, tier, field, text", [
    # 2,000 then 2,003: contracts 2,001 and 2,002 have no tier
    ([(0, 2000, 0.004, 125), (2003, 5000, 0.005, 100)], 0.01, TierGapError, 2, "minSz",
     "leaves a gap of 2 contracts after the previous tier's maxSz 2000"),
    ([(0, 2000, 0.004, 125), (1500, 5000, 0.005, 100)], 0.01, TierOverlapError, 2, "minSz",
     "overlaps the previous tier, whose maxSz is 2000"),
    ([(1, 2000, 0.004, 125)], 0.01, TierGapError, 1, "minSz", "starts at 1 contracts, not 0"),
    ([(0, 2000, 0.004, 125)], 0, TierValueError, 1, "ctVal", "contract value must be a positive number"),
    ([(0, 2000, 0.004, 125)], -1, TierValueError, 1, "ctVal", "negative"),
    ([(0, 2000, 0.004, 125)], "x", TierValueError, 1, "ctVal", "not a number"),
])
def test_malformed_okx_tiers_are_named_errors(specs, cv, error, tier, field, text):
    with pytest.raises(error, match=text) as info:
        TierTable.from_okx(okx_rows(*specs), cv, source="okx BTC/USDT:USDT")
    assert info.value.tier == tier and info.value.field == field
    assert "okx BTC/USDT:USDT" in str(info.value)


def test_okx_answers_that_are_not_tier_lists():
    with pytest.raises(TierTableError, match="expected a list of OKX position tiers, got a JSON dict"):
        TierTable.from_okx({"data": []}, 0.01)
    with pytest.raises(TierTableError, match="no tiers"):
        TierTable.from_okx([], 0.01)
    with pytest.raises(TierValueError, match="tier 1, field 'mmr': missing"):
        TierTable.from_okx([{"minSz": "0", "maxSz": "10", "maxLever": "10"}], 0.01)


def test_a_stored_okx_table_reads_back_equal_with_its_bounds_rule():
    table = TierTable.from_okx(CANNED, 0.01, symbol="BTC/USDT:USDT")
    snapshots = TierHistory([("2024-06-01", table)], symbol="BTC/USDT:USDT").to_snapshots()
    assert snapshots[0]["upper_inclusive"] is True and snapshots[0]["amounts"] is False
    assert snapshots[0]["contract_value"] == 0.01
    back = TierHistory.from_snapshots(json.loads(json.dumps(snapshots)), symbol="BTC/USDT:USDT")
    assert back.versions[0][1] == table and back.versions[0][1].lookup(20.0).tier == 1
    # the same rows without the OKX keys are refused, not read as a notional table: their zero
    # amounts disagree with the amounts a continuous table would have
    with pytest.raises(TierAmountError, match="tier 2, field 'cum': published maintenance amount 0.0 "
                                              "disagrees with the derived 0.02"):
        TierTable.from_ccxt(snapshots[0]["tiers"])
    with pytest.raises(TierTableError, match="'upper_inclusive' must be true or false, got 'yes'"):
        TierHistory.from_snapshots([{**snapshots[0], "upper_inclusive": "yes"}])
    with pytest.raises(TierValueError, match="contract_value.*must be positive"):
        TierHistory.from_snapshots([{**snapshots[0], "contract_value": 0}])


def _okx_fetcher(fake, tmp_path):
    client = fake.attach(make_client(VENUES["okx"], env={}))         # public endpoint: no keys
    client.enableRateLimit = False
    return Fetcher("okx", datadir=tmp_path, client=client, sleep=lambda s: None,
                   clock=lambda: START + 20 * fakex.HOUR)


def test_btperp_fetch_stores_okx_tiers_in_base_units(tmp_path):
    fake = fakex.FakeOKX(START, 10)
    f = _okx_fetcher(fake, tmp_path)
    reports = f.fetch(["BTC-USDT-SWAP"], since="2024-01-01", what=["tiers"])
    assert reports[0].symbol == "BTC/USDT:USDT" and reports[0].added == 1
    assert ("position-tiers", {"instType": "SWAP", "tdMode": "cross", "instFamily": "BTC-USDT"}) in fake.queries
    path = tmp_path / "okx" / "tier_history.json"
    stored = json.loads(path.read_text())["symbols"]["BTC/USDT:USDT"][0]
    assert stored["contract_value"] == 0.01 and stored["upper_inclusive"] is True
    assert [(r["minNotional"], r["maxNotional"]) for r in stored["tiers"][:2]] == [(0.0, 20.0), (20.0, 50.0)]
    table = TierHistoryFile.read(path).history("BTC-USDT-SWAP").versions[-1][1]
    assert table == TierTable.from_okx(CANNED, 0.01)
    # a second fetch finds the same table
    again = f.fetch_tiers(["BTCUSDT"], today="2099-01-01")
    assert again[0].added == 0 and again[0].note.startswith("unchanged since ")


def test_okx_tiers_that_do_not_add_up_are_refused_and_nothing_is_written(tmp_path):
    fake = fakex.FakeOKX(START, 10)
    fake.position_tiers = {**fake.position_tiers, "data": [dict(r) for r in fake.position_tiers["data"]]}
    fake.position_tiers["data"][1]["minSz"] = "2500"              # 2,001..2,499 contracts in no tier
    with pytest.raises(TierGapError, match=r"okx BTC/USDT:USDT .*tier 2, field 'minSz': minSz 2500 leaves "
                                           r"a gap of 499 contracts"):
        _okx_fetcher(fake, tmp_path).fetch(["BTCUSDT"], since="2024-01-01", what=["tiers"])
    assert not (tmp_path / "okx" / "tier_history.json").exists()


# --- the OKX rulebook ----------------------------------------------------------------------------

from btperp.calc import calculate  # noqa: E402
from btperp.cli.main import main as cli  # noqa: E402
from btperp.errors import InputError, LeverageError  # noqa: E402
from btperp.margin import evaluate, liquidation_price, make_position  # noqa: E402
from btperp.rules import OKXLinear, get_rulebook  # noqa: E402

OKX_TABLE = TierTable.from_okx(CANNED, 0.01, symbol="BTC/USDT:USDT")


@pytest.mark.parametrize("side, leverage, entry, amount, expected", [
    # freqtrade's Gate/OKX liquidation vectors (tests/exchange/test_exchange.py,
    # test_get_liquidation_price: MMR 1 %, taker fee 0.06 %, isolated margin = amount × entry /
    # leverage), whose formula is OKX's isolated margin ratio at 100 %:
    # (entry ± margin / size) / (1 ± (MMR + fee))
    ("short", 3, 10, 1.0, 13.193482419684678),         # (10 + 3.3333 / 1) / 1.0106
    ("long", 3, 10, 1.0, 6.738090425173506),           # (10 − 3.3333 / 1) / 0.9894
])
def test_freqtrade_okx_vectors(side, leverage, entry, amount, expected):
    lp = liquidation_price("okx", side, amount, entry, leverage=leverage, taker_fee=0.0006,
                           tiers=TierTable.single(0.01))
    assert lp == pytest.approx(expected, rel=1e-12)


def test_a_long_of_2000_contracts_is_tier_1_and_its_prices_follow_okx_margin_ratio():
    """OKX "Tiered maintenance margin ratio rules", isolated USDT-margined contracts: margin ratio
    = (margin balance + PnL) / (face value × |contracts| × mark × (tiered MMR + fee rate)),
    liquidated at 100 %. Long 2,000 BTC-USDT-SWAP contracts (ctVal 0.01: 20 BTC) at 60,000, 100x,
    taker fee 0.05 %: tier 1 (0..2,000 contracts, MMR 0.4 %), isolated margin 20 × 60,000 / 100
    = 12,000 USDT.

        12,000 + 20 × (P − 60,000) = 20 × P × (0.004 + 0.0005)
        P = (1,200,000 − 12,000) / (20 − 0.09) = 1,188,000 / 19.91 = 59,668.51   (liquidation)
        12,000 + 20 × (P − 60,000) = 0  →  P = 60,000 − 600 = 59,400.00           (bankruptcy)
    """
    pos = make_position("BTC/USDT:USDT", "long", 20.0, 60_000, leverage=100, tiers=OKX_TABLE)
    r = evaluate("okx", [pos]).positions[0]
    assert r.tier == 1 and r.maintenance_margin_rate == 0.004 and r.maintenance_amount == 0
    assert r.initial_margin == pytest.approx(12_000)
    assert r.maintenance_margin == pytest.approx(20 * 60_000 * 0.0045)          # 5,400: MM + fee
    assert round(r.liquidation_price, 2) == 59_668.51
    assert round(r.bankruptcy_price, 2) == 59_400.00
    # one lot more (2,000.01 contracts) is above tier 1's maximum: tier 2, MMR 0.5 %, at most 100x
    #   P = (20.0001 × 60,000 − 12,000.06) / (20.0001 × (1 − 0.0055)) = 1,188,005.94 / 19.8900995
    bigger = make_position("BTC/USDT:USDT", "long", contracts_to_base(2000.01, 0.01), 60_000, leverage=100,
                           tiers=OKX_TABLE)
    r2 = evaluate("okx", [bigger]).positions[0]
    assert r2.tier == 2 and round(r2.liquidation_price, 2) == round(1_188_005.94 / 19.8900995, 2) == 59_728.51


def test_a_short_in_cross_margin_and_the_tier_that_does_not_move_with_the_price():
    """Cross: equity = wallet + PnL against MM + liquidation fee at the mark (OKX cross margin
    ratio). Short 6,000 contracts (60 BTC: tier 3, 5,001..20,000, MMR 0.75 %) at 60,000, 20x,
    wallet 400,000 USDT, taker 0.05 %:

        400,000 − 60 × (P − 60,000) = 60 × P × 0.008
        P = (400,000 + 3,600,000) / (60 × 1.008) = 4,000,000 / 60.48 = 66,137.57
        bankruptcy: 400,000 − 60 × (P − 60,000) = 0  →  P = 66,666.67

    The tier follows the contracts, not the notional: 60 BTC at 66,137.57 is still tier 3."""
    pos = make_position("BTC/USDT:USDT", "short", 60.0, 60_000, leverage=20, tiers=OKX_TABLE)
    r = evaluate("okx", [pos], margin_mode="cross", wallet_balance=400_000).positions[0]
    assert r.tier == 3 and r.liquidation_tier == 3
    assert round(r.liquidation_price, 2) == 66_137.57
    assert round(r.bankruptcy_price, 2) == 66_666.67
    # and isolated on the same 400,000 is the same position
    iso = make_position("BTC/USDT:USDT", "short", 60.0, 60_000, leverage=20, margin=400_000, tiers=OKX_TABLE)
    assert evaluate("okx", [iso]).positions[0].liquidation_price == pytest.approx(r.liquidation_price, rel=1e-12)


def test_okx_leverage_is_checked_against_the_tier_of_the_contracts():
    ok = make_position("BTC/USDT:USDT", "long", 20.0, 60_000, leverage=125, tiers=OKX_TABLE)
    assert evaluate("okx", [ok]).positions[0].tier == 1
    from btperp.margin import check_leverage
    assert check_leverage(OKXLinear(), ok).tier == 1
    over = make_position("BTC/USDT:USDT", "long", 20.0001, 60_000, leverage=125, tiers=OKX_TABLE)
    with pytest.raises(LeverageError, match="125x is above the 100x that tier 2 allows for a position "
                                            "size of 20.0001"):
        check_leverage(OKXLinear(), over)


def test_okx_and_generic_are_core_only_for_now():
    assert get_rulebook("okx", core=True).name == "okx"
    with pytest.raises(InputError, match="okx is modelled in the margin core and `btperp calc` only so far"):
        get_rulebook("okx")
    with pytest.raises(InputError, match="unknown exchange 'ftx'; choose one of binance-usdm, bybit, "
                                         "hyperliquid, binance-coinm, bybit-inverse, generic, okx"):
        get_rulebook("ftx", core=True)
    with pytest.raises(InputError, match="unknown exchange 'ftx'; choose one of binance-usdm, bybit, hyperliquid$"):
        get_rulebook("ftx")


def test_okx_tiers_from_the_canned_files_drive_calc(tmp_path, capsys):
    """Acceptance (#19): the canned OKX answers, fetched into a datasets folder, drive calc."""
    _okx_fetcher(fakex.FakeOKX(START, 10), tmp_path).fetch(["BTC-USDT-SWAP"], since="2024-01-01",
                                                           what=["tiers"])
    tiers = str(tmp_path / "okx" / "tier_history.json")
    base = ["calc", "--exchange", "okx", "--tiers", tiers, "--symbol", "BTC-USDT-SWAP", "--entry", "60000"]
    # 2,000 contracts × ctVal 0.01 (stored with the table) = 20 BTC, 125x: margin 1,200,000 / 125
    # = 9,600; P = (1,200,000 − 9,600) / (20 − 20 × 0.0045) = 1,190,400 / 19.91 = 59,789.05
    assert cli(base + ["--side", "long", "--contracts", "2000", "--leverage", "125", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    p = out["positions"][0]
    assert (p["size"], p["tier"], p["maintenance_margin_rate"], p["maintenance_amount"]) == (20.0, 1, 0.004, 0)
    assert round(p["liquidation_price"], 2) == 59_789.05 and round(p["bankruptcy_price"], 2) == 59_520.00
    assert "approximation" not in out
    # 2,000.01 contracts is tier 2, where 125x is refused (exit 2, no traceback)
    assert cli(base + ["--side", "long", "--contracts", "2000.01", "--leverage", "125"]) == 2
    err = capsys.readouterr().err
    assert "125x is above the 100x that tier 2 allows for a position size of 20.0001" in err
    assert "Traceback" not in err
    # a contract size for an OKX table that knows its own is accepted; a size and contracts are not
    assert cli(base + ["--side", "long", "--contracts", "2000", "--contract-size", "0.01",
                       "--leverage", "100"]) == 0
    capsys.readouterr()
    assert cli(base + ["--side", "long", "--contracts", "2000", "--size", "20", "--leverage", "100"]) == 2
    assert "give the size in base units or the contracts, not both" in capsys.readouterr().err


def test_contracts_need_a_contract_size_the_table_does_not_know():
    with pytest.raises(InputError, match=r"positions\[0\].contract_size: give contract_size"):
        calculate({"exchange": "okx", "positions": [{"symbol": "BTCUSDT", "side": "long", "contracts": 10,
                                                      "entry_price": 100, "leverage": 5,
                                                      "maintenance_margin_rate": 0.01}]})
    r = calculate({"exchange": "okx", "positions": [{"symbol": "BTCUSDT", "side": "long", "contracts": 10,
                                                      "contract_size": 0.1, "entry_price": 100,
                                                      "leverage": 5, "maintenance_margin_rate": 0.01}]})
    assert r.account.positions[0].size == 1.0


@pytest.mark.parametrize("exchange", ["okx", "generic"])
def test_backtests_refuse_the_core_only_rulebooks(exchange):
    """Not wired into the broker yet (its opening check looks tiers up by notional): a clear error.
    (The coin-margined rulebooks are: tests/test_inverse_broker.py.)"""
    import backtrader as bt
    import btperp
    with pytest.raises(InputError, match=f"exchange: {exchange} is modelled in the margin core and `btperp "
                                         f"calc` only so far, not in backtests"):
        btperp.install(bt.Cerebro(), exchange=exchange)


def _okx_row(lo, hi, mmr, lever, tier=None):
    row = {"minSz": str(lo), "maxSz": "" if hi is None else str(hi), "mmr": str(mmr), "maxLever": str(lever)}
    if tier is not None:
        row["tier"] = str(tier)
    return row


@pytest.mark.parametrize("rows, error, message", [
    ({"data": []}, TierTableError, "okx X: expected a list of OKX position tiers, got a JSON dict"),
    ("0,10", TierTableError, "okx X: expected a list of OKX position tiers, got a JSON str"),
    ([], TierTableError, "okx X: the table has no tiers"),
    ([5], TierValueError, "okx X, tier 1: expected an OKX tier object (minSz, maxSz, mmr, maxLever), got 5"),
    ([_okx_row(0, 10, 0.01, 10, tier=2)], TierOrderError,
     "okx X, tier 2, field 'tier': tier numbers must be 1, 2, 3, ...; found 2 at position 1"),
    ([{"minSz": "0", "maxSz": "10", "maxLever": "10"}], TierValueError, "okx X, tier 1, field 'mmr': missing"),
    ([{"minSz": "x", "maxSz": "10", "mmr": "0.01", "maxLever": "10"}], TierValueError,
     "okx X, tier 1, field 'minSz': not a number: 'x'"),
    ([_okx_row(0, 10, 0.01, 10), {"minSz": "11", "maxSz": "y", "mmr": "0.01", "maxLever": "5"}],
     TierValueError, "okx X, tier 2, field 'maxSz': not a number: 'y'"),
    ([_okx_row(0, 10, 0.01, 10), _okx_row(11, 20, -1, 5)], TierValueError,
     "okx X, tier 2, field 'mmr': negative: -1.0"),
    ([_okx_row(0, 10, 0.01, 10), _okx_row(11, 20, 0.02, "z")], TierValueError,
     "okx X, tier 2, field 'maxLever': not a number: 'z'"),
    # one contract missing between 10 and 12 is a gap already
    ([_okx_row(0, 10, 0.01, 10), _okx_row(12, 20, 0.02, 5)], TierGapError,
     "okx X, tier 2, field 'minSz': minSz 12 leaves a gap of 1 contracts after the previous tier's maxSz "
     "10 (OKX's tiers follow one another by one contract)"),
])
def test_every_okx_refusal_names_the_source_tier_and_field_exactly(rows, error, message):
    with pytest.raises(error) as info:
        TierTable.from_okx(rows, 0.01, source="okx X")
    assert str(info.value) == message


def test_okx_tier_numbers_bounds_and_raw_fields_are_kept():
    """Tier 1 0..10 contracts and tier 2 from 11 up (no maxSz) at ctVal 0.5: 0..5 and 5..∞ in base
    units; each tier keeps OKX's own minSz/maxSz (and imr when given) in its info."""
    first = dict(_okx_row(0, 10, 0.01, 10, tier=1), imr="0.1")
    table = TierTable.from_okx([first, _okx_row(11, None, 0.02, 5, tier=2)], 0.5)
    assert [(t.tier, t.min_notional, t.max_notional, t.maintenance_margin_rate, t.max_leverage)
            for t in table.tiers] == [(1, 0.0, 5.0, 0.01, 10.0), (2, 5.0, math.inf, 0.02, 5.0)]
    assert [t.info for t in table.tiers] == [{"minSz": "0", "maxSz": "10", "imr": "0.1"},
                                             {"minSz": "11", "maxSz": ""}]


def test_a_tier_after_an_open_ended_one_overlaps_it():
    rows = [_okx_row(0, None, 0.01, 10), _okx_row(11, 20, 0.02, 5)]
    with pytest.raises(TierOverlapError) as info:
        TierTable.from_okx(rows, 0.01, source="okx X")
    assert str(info.value) == ("okx X, tier 2, field 'minSz': minSz 11 overlaps the previous tier, whose "
                               "maxSz is inf contracts")


def test_an_okx_table_knows_its_symbol_and_source():
    table = TierTable.from_okx([_okx_row(0, 10, 0.01, 10)], 0.01, symbol="BTC/USDT:USDT")
    assert (table.symbol, table.source) == ("BTC/USDT:USDT", "BTC/USDT:USDT")
    named = TierTable.from_okx([_okx_row(0, 10, 0.01, 10)], 0.01, symbol="BTC/USDT:USDT", source="okx.json")
    assert (named.symbol, named.source) == ("BTC/USDT:USDT", "okx.json")


def test_okx_tiers_keep_the_raw_bounds_and_initial_margin_rate():
    """What OKX sent in contracts (minSz, maxSz) and its initial margin rate stay on each tier's
    ``info``, as ccxt keeps the raw row, for a reader to check the conversion against."""
    table = TierTable.from_okx(okx_rows((0, 2000, 0.004, 125), (2001, None, 0.005, 100)), 0.01)
    assert [t.info for t in table.tiers] == [{"minSz": "0", "maxSz": "2000", "imr": "0.01"},
                                            {"minSz": "2001", "maxSz": "", "imr": "0.01"}]
