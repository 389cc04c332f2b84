"""The generic rulebook (issue #19): freqtrade's formula for Gate-like exchanges with the user's
explicit rates (maintenance margin = notional at the mark × (MMR + taker fee), no maintenance
amount), which says in every result that it approximates."""

import json

import pytest

from btperp.calc import calculate
from btperp.cli.main import main as cli
from btperp.errors import InputError
from btperp.margin import bankruptcy_price, evaluate, liquidation_price, make_position
from btperp.tiers import TierTable


@pytest.mark.parametrize("side, leverage, entry, amount, expected", [
    # freqtrade tests/exchange/test_exchange.py, test_get_liquidation_price, the Gate rows (MMR 1 %,
    # taker fee 0.06 %, isolated margin = amount × entry / leverage); freqtrade's docstring:
    #   short: (entry + margin / amount) / (1 + (0.01 + 0.0006))
    #   long:  (entry − margin / amount) / (1 − (0.01 + 0.0006))
    ("short", 5, 10, 1.0, 11.87413417771621),          # (10 + 2 / 1) / 1.0106
    ("short", 5, 10, 2.0, 11.87413417771621),          # (10 + 4 / 2) / 1.0106
    ("short", 3, 10, 1.0, 13.193482419684678),         # (10 + 3.3333 / 1) / 1.0106
    ("short", 5, 8, 1.0, 9.499307342172967),           # (8 + 1.6 / 1) / 1.0106
    ("long", 5, 10, 1.0, 8.085708510208207),           # (10 − 2 / 1) / 0.9894
    ("long", 3, 10, 1.0, 6.738090425173506),           # (10 − 3.3333 / 1) / 0.9894
])
def test_freqtrade_gate_vectors(side, leverage, entry, amount, expected):
    lp = liquidation_price("generic", side, amount, entry, leverage=leverage, taker_fee=0.0006,
                           tiers=TierTable.single(0.01))
    assert lp == pytest.approx(expected, rel=1e-12)
    # the bankruptcy price: the margin is gone, entry ∓ margin / amount (12, 13.33, 9.6, 8, 6.67)
    bp = bankruptcy_price("generic", side, amount, entry, leverage=leverage, taker_fee=0.0006,
                          tiers=TierTable.single(0.01))
    assert bp == pytest.approx(entry * (1 + (1 if side == "short" else -1) / leverage), rel=1e-12)


def test_the_fee_is_explicit():
    pos = make_position("X/USDT:USDT", "long", 1, 10, leverage=5, tiers=TierTable.single(0.01))
    with pytest.raises(InputError, match="taker_fee: generic has no standard fee: give the taker fee rate"):
        evaluate("generic", [pos])
    with pytest.raises(InputError, match="taker_fee: generic has no standard fee"):
        liquidation_price("generic", "long", 1, 10, leverage=5, tiers=TierTable.single(0.01))


@pytest.mark.parametrize("position, account, message", [
    ({"maintenance_margin_rate": None}, {"taker_fee": 0.0006},
     r"positions\[0\].maintenance_margin_rate: generic has no tiers: give the maintenance_margin_rate"),
    ({}, {}, "taker_fee: generic has no standard fee: give the taker fee rate of the venue it approximates"),
    ({"maintenance_amount": 5}, {"taker_fee": 0.0006},
     r"positions\[0\].maintenance_amount: generic deducts no maintenance amount"),
])
def test_what_the_generic_rulebook_needs(position, account, message):
    raw = {"symbol": "XUSDT", "side": "long", "size": 1, "entry_price": 10, "leverage": 5,
           "maintenance_margin_rate": 0.01, **position}
    with pytest.raises(InputError, match=message):
        calculate({"exchange": "generic", "positions": [raw], **account})


def test_calc_says_it_approximates(capsys):
    args = ["calc", "--exchange", "generic", "--symbol", "BTCUSDT", "--side", "short", "--size", "1",
            "--entry", "10", "--leverage", "3", "--mmr", "0.01", "--taker-fee", "0.0006"]
    assert cli(args) == 0
    text = capsys.readouterr().out
    assert "generic: an approximation, not any exchange's rules: freqtrade's formula for Gate-like" in text
    assert "13.19" in text                                   # freqtrade's 13.193482419684678
    assert cli(args + ["--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["approximation"].startswith("generic: an approximation")
    assert out["positions"][0]["liquidation_price"] == pytest.approx(13.193482419684678, rel=1e-12)
    # a real rulebook's report carries no such note
    assert cli(["calc", "--exchange", "bybit", "--symbol", "BTCUSDT", "--side", "long", "--size", "1",
                "--entry", "20000", "--leverage", "50", "--mmr", "0.005", "--json"]) == 0
    assert "approximation" not in json.loads(capsys.readouterr().out)
    # no traceback without the rates
    assert cli(args[:-4]) == 2
    assert "taker_fee: generic has no standard fee" in capsys.readouterr().err
