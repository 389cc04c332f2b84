"""``btperp calc`` and ``btperp data import-tiers`` from the command line."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from btperp.cli.main import main

ROOT = Path(__file__).resolve().parents[1]
FAQ = ["calc", "--symbol", "BTCUSDT", "--side", "long", "--size", "0.02", "--entry", "50000", "--margin", "500"]


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys, *argv):
    code, out, err = run(capsys, *argv, "--json")
    assert code == 0, err
    return json.loads(out), err


def write_account(tmp_path, account):
    path = tmp_path / "account.json"
    path.write_text(json.dumps(account))
    return str(path)


def test_faq_example_json(capsys):
    out, _ = run_json(capsys, *FAQ)
    pos = out["positions"][0]
    assert round(pos["liquidation_price"], 2) == 25_100.40
    assert pos["tier"] == 1 and pos["maintenance_margin_rate"] == 0.004 and pos["maintenance_amount"] == 0
    assert pos["bankruptcy_price"] == pytest.approx(25_000)
    assert pos["initial_margin"] == pytest.approx(500) and pos["maintenance_margin"] == pytest.approx(4)
    assert pos["distance_to_liquidation_pct"] == pytest.approx((50_000 - 25_100.40) / 50_000 * 100, abs=1e-3)
    assert out["margin_ratio"] == pytest.approx(4 / 500)


def test_faq_example_table(capsys):
    code, out, _ = run(capsys, *FAQ)
    assert code == 0
    assert "25,100.40" in out and "BTC/USDT:USDT" in out and "liquidation at 100 %" in out


def test_account_file_positions_in_input_order(capsys):
    out, _ = run_json(capsys, "calc", "--account", str(ROOT / "examples" / "account.json"))
    assert [p["symbol"] for p in out["positions"]] == ["BTC/USDT:USDT", "ETH/USDT:USDT"]
    assert out["margin_mode"] == "cross"
    keys = {"symbol", "side", "tier", "maintenance_margin_rate", "maintenance_amount", "initial_margin",
            "maintenance_margin", "liquidation_price", "bankruptcy_price", "distance_to_liquidation_pct"}
    assert keys <= set(out["positions"][0])
    btc, eth = out["positions"]
    assert btc["liquidation_price"] < 59_000 < btc["mark_price"] + 1 and eth["liquidation_price"] > 3_100
    assert out["margin_ratio"] == pytest.approx(out["maintenance_margin"] / out["margin_balance"])


def test_bybit_and_hyperliquid_from_flags(capsys):
    out, _ = run_json(capsys, "calc", "--exchange", "bybit", "--symbol", "BTCUSDT", "--side", "long",
                      "--size", "1", "--entry", "20000", "--leverage", "50", "--mmr", "0.005", "--taker-fee", "0")
    assert out["positions"][0]["liquidation_price"] == pytest.approx(19_700)
    out, _ = run_json(capsys, "calc", "--exchange", "hyperliquid", "--symbol", "BTC", "--side", "short",
                      "--size", "1", "--entry", "60000", "--leverage", "10", "--max-leverage", "40")
    pos = out["positions"][0]
    assert pos["symbol"] == "BTC/USDC:USDC" and pos["maintenance_margin_rate"] == pytest.approx(1 / 80)


def test_at_date_uses_the_table_in_force_and_flags_assumptions(capsys):
    args = ["calc", "--symbol", "BTCUSDT", "--side", "long", "--size", "20", "--entry", "20000",
            "--leverage", "10"]
    old, _ = run_json(capsys, *args, "--at", "2022-03-01")
    new, _ = run_json(capsys, *args, "--at", "2024-10-01")
    assert old["positions"][0]["tier_table_observed"] == "2022-02-05"
    assert new["positions"][0]["tier_table_observed"] == "2024-05-30"
    # 20 BTC at 20,000 = 400,000 of notional. datasets/binance-usdm/tier_history.json: on 2022-02-05
    # tier 3 (250k to 1M) at 1 %, cum 1,300; on 2024-05-30 tier 2 (50k to 600k) at 0.5 %, cum 50
    o, n = old["positions"][0], new["positions"][0]
    assert (o["tier"], o["maintenance_margin_rate"], o["maintenance_amount"]) == (3, 0.01, 1300)
    assert (n["tier"], n["maintenance_margin_rate"], n["maintenance_amount"]) == (2, 0.005, 50)
    assert o["maintenance_margin"] == pytest.approx(400_000 * 0.01 - 1_300)
    assert n["maintenance_margin"] == pytest.approx(400_000 * 0.005 - 50)
    # isolated margin 40,000 (10x): LP = (40,000 + cum − 400,000) / (20 × MMR − 20)
    assert o["liquidation_price"] == pytest.approx((40_000 + 1_300 - 400_000) / (20 * 0.01 - 20), rel=1e-12)
    assert n["liquidation_price"] == pytest.approx((40_000 + 50 - 400_000) / (20 * 0.005 - 20), rel=1e-12)
    early, err = run_json(capsys, *args, "--at", "2021-05-19")
    assert early["positions"][0]["tier_table_assumed"] is True
    assert "before the first known tier table" in err


@pytest.mark.parametrize("account, message", [
    ({"exchange": "ftx", "positions": [{"symbol": "BTCUSDT", "side": "long", "size": 1, "entry_price": 1,
                                        "leverage": 1}]}, "unknown exchange 'ftx'"),
    ({"positions": [{"symbol": "BTCUSDT", "side": "long", "size": 1, "entry_price": 1, "leverage": 1,
                     "colour": "red"}]}, "positions[0].colour: unknown field"),
    ({"wallet": 5, "positions": []}, "unknown field(s) wallet"),
    ({"positions": [{"symbol": "BTCUSDT", "side": "long", "size": -0.5, "entry_price": 60000,
                     "leverage": 10}]}, "positions[0].size: must be a positive number"),
    ({"positions": [{"symbol": "BTCUSDT", "side": "long", "size": 1, "entry_price": 60000,
                     "leverage": 150}]}, "positions[0].leverage: 150x is above the"),
    ({"positions": [{"symbol": "BTCUSDT", "side": "long", "size": 1, "entry_price": 60000, "mark_price": 50000,
                     "leverage": 10}]}, "positions[0]: already past liquidation"),
    ({"positions": [{"symbol": "BTCUSDT", "side": "sideways", "size": 1, "entry_price": 1,
                     "leverage": 1}]}, "positions[0].side: must be 'long' or 'short'"),
    ({"exchange": "bybit", "positions": [{"symbol": "BTCUSDT", "side": "long", "size": 1, "entry_price": 1,
                                          "leverage": 1}]}, "no tier table for BTC/USDT:USDT on bybit"),
    ({"exchange": "hyperliquid", "positions": [{"symbol": "BTC", "side": "long", "size": 1, "entry_price": 1,
                                                "leverage": 1}]}, "max_leverage"),
    ({"margin_mode": "cross", "positions": [{"symbol": "BTCUSDT", "side": "long", "size": 1,
                                             "entry_price": 1, "leverage": 1}]}, "wallet_balance"),
    ({"positions": [{"symbol": "BTCUSDT", "side": "long", "size": 1, "entry_price": 1, "leverage": 1,
                     "maintenance_margin_rate": 4}]}, "must be a fraction below 1"),
    ({"positions": [{"symbol": "NOPEUSDT", "side": "long", "size": 1, "entry_price": 1,
                     "leverage": 1}]}, "no tier table for NOPE/USDT:USDT"),
])
def test_bad_accounts_exit_nonzero_with_a_clear_message(capsys, tmp_path, account, message):
    code, out, err = run(capsys, "calc", "--account", write_account(tmp_path, account))
    assert code == 2 and out == ""
    assert message in err


def test_unreadable_date(capsys):
    code, _, err = run(capsys, *FAQ, "--at", "next tuesday")
    assert code == 2 and "argument --at: 'next tuesday' is not a date" in err


def test_bad_flags(capsys, tmp_path):
    code, _, err = run(capsys, "calc", "--symbol", "BTCUSDT", "--side", "long")
    assert code == 2 and "--size, --entry" in err
    assert main(["calc", "--exchange", "ftx"]) == 2   # argparse refuses unknown choices itself
    bad_json = tmp_path / "broken.json"
    bad_json.write_text("{not json")
    code, _, err = run(capsys, "calc", "--account", str(bad_json))
    assert code == 2 and "broken.json: not valid JSON" in err
    code, _, err = run(capsys, "calc", "--account", str(tmp_path / "missing.json"))
    assert code == 2 and "no such file" in err


def test_tiers_file_option_accepts_a_ccxt_list(capsys, tmp_path):
    tiers = tmp_path / "tiers.json"
    tiers.write_text(json.dumps([
        {"tier": 1, "minNotional": 0, "maxNotional": 2_000_000, "maintenanceMarginRate": 0.005,
         "maxLeverage": 100, "info": {"mmDeduction": ""}}]))
    out, _ = run_json(capsys, "calc", "--exchange", "bybit", "--tiers", str(tiers), "--symbol", "BTCUSDT",
                      "--side", "long", "--size", "1", "--entry", "20000", "--leverage", "50", "--taker-fee", "0")
    assert out["positions"][0]["liquidation_price"] == pytest.approx(19_700)


def test_import_tiers_validates_and_writes_atomically(capsys, tmp_path):
    good = {"source": "test", "symbols": {"BTC/USDT:USDT": [{"observed": "2022-02-05", "tiers": [
        {"tier": 1, "minNotional": 0, "maxNotional": 50000, "maintenanceMarginRate": 0.004, "maxLeverage": 125, "cum": 0},
        {"tier": 2, "minNotional": 50000, "maxNotional": 250000, "maintenanceMarginRate": 0.005, "maxLeverage": 100, "cum": 50}]}]}}
    src = tmp_path / "good.json"
    src.write_text(json.dumps(good))
    code, out, err = run(capsys, "data", "--datadir", str(tmp_path / "ds"), "import-tiers", str(src))
    assert code == 0, err
    written = json.loads((tmp_path / "ds" / "binance-usdm" / "tier_history.json").read_text())
    assert written["symbols"]["BTC/USDT:USDT"][0]["tiers"][1]["cum"] == 50

    bad = json.loads(json.dumps(good))
    bad["symbols"]["BTC/USDT:USDT"][0]["tiers"][1]["cum"] = 60
    src.write_text(json.dumps(bad))
    out_dir = tmp_path / "ds2"
    code, _, err = run(capsys, "data", "--datadir", str(out_dir), "import-tiers", str(src))
    assert code == 2
    assert "BTC/USDT:USDT snapshot 2022-02-05, tier 2, field 'cum'" in err
    assert not out_dir.exists() or not any(out_dir.rglob("*"))       # nothing half-written


def test_console_script():
    exe = str(Path(sys.executable).parent / "btperp")          # installed by `pip install -e .`
    help_text = subprocess.run([exe, "calc", "--help"], capture_output=True, text=True, check=True).stdout
    assert "examples:" in help_text and "--account" in help_text
    done = subprocess.run([exe, *FAQ, "--json"], capture_output=True, text=True)
    assert done.returncode == 0
    assert round(json.loads(done.stdout)["positions"][0]["liquidation_price"], 2) == 25_100.40
