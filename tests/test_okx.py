"""OKX (issue #19): position tiers bounded in contracts, converted with the contract value (ctVal),
fetched from the canned OKX answers (tests/canned/okx, served by tests/fakex.py), never the network.

The canned BTC-USDT swap has ctVal 0.01 BTC (instruments-SWAP.json) and the tiers of
position-tiers-SWAP-BTC-USDT.json: tier 1 0..2,000 contracts at 0.4 % / 125x, tier 2 2,001..5,000
at 0.5 % / 100x, tier 3 5,001..20,000 at 0.75 % / 66.66x, then +20,000 contracts and +0.5 % a tier.
"""

import json

import numpy as np
import pytest

from btperp.errors import TierAmountError, TierGapError, TierOverlapError, TierTableError, TierValueError
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
