"""Coin-margined (inverse) contracts in the pure core and btperp calc (issue #19): the exchanges'
worked examples, cited by title, with the arithmetic written out; then the linear suite's
invariants as property tests, amounts in the coin, each side computed here from the exchange's
formulas (not from the core's mirror)."""

import json
import math

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from btperp.calc import calculate
from btperp.cli.main import main as cli
from btperp.errors import InputError, LeverageError
from btperp.inverse import (InversePosition, evaluate_inverse, inverse_bankruptcy_price,
                            inverse_funding_payment, inverse_liquidation_price,
                            inverse_maintenance_margin, inverse_unrealized_pnl, make_inverse_position,
                            position_value)
from btperp.margin import evaluate, liquidation_price
from btperp.rules import BinanceCoinM, BybitInverse
from btperp.tiers import TierHistory, TierTable


def binance_btcusd_table():
    """Binance BTCUSD perpetual (COIN-M) tiers, bounded by position value in BTC. Floors and
    leverages: "Leverage and Margin in Coin-Margined Futures Contracts" (125x up to 5 BTC, 100x 10,
    50x 20, 20x 50, 10x 100, 5x 200, 4x 400, 3x 1,000, 2x above); rates: Binance's ladder 0.4, 0.5,
    1, 2.5, 5, 10, 12.5, 15, 25 %, which the amount the liquidation-price FAQ gives for 300 BTC
    (11.605 BTC, checked below) confirms."""
    floors = [0, 5, 10, 20, 50, 100, 200, 400, 1000]
    rates = [0.004, 0.005, 0.01, 0.025, 0.05, 0.10, 0.125, 0.15, 0.25]
    levs = [125, 100, 50, 20, 10, 5, 4, 3, 2]
    caps = floors[1:] + [None]
    return TierTable.from_ccxt([{"tier": i + 1, "minNotional": lo, "maxNotional": hi,
                                 "maintenanceMarginRate": r, "maxLeverage": lev}
                                for i, (lo, hi, r, lev) in enumerate(zip(floors, caps, rates, levs))])


# --- Binance COIN-M -------------------------------------------------------------------------------

def test_binance_coinm_maintenance_margin_example():
    """Binance, "How to Calculate Liquidation Price of COIN-M Futures Contracts", Maintenance
    Margin: 100 BTCUSD contracts (100 USD each) at a mark of 25,000: position notional =
    100 × 100 / 25,000 = 0.4 BTC, level 1 (MMR 0.4 %, amount 0); MM = 0.4 × 0.4 % − 0 = 0.0016 BTC."""
    assert position_value(100, 100, 25_000) == 0.4
    pos = make_inverse_position("BTC/USD:BTC", "long", 100, 25_000, contract_size=100, leverage=20,
                                tiers=binance_btcusd_table())
    r = evaluate_inverse("binance-coinm", [pos]).positions[0]
    assert (r.position_value, r.tier, r.maintenance_margin_rate) == (0.4, 1, 0.004)
    assert round(r.maintenance_margin, 8) == 0.0016
    assert inverse_maintenance_margin("binance-coinm", pos, 25_000, 0.0) == pytest.approx(0.0016, abs=1e-15)


def test_binance_coinm_maintenance_amount_example():
    """Same FAQ, Maintenance Amount: "if the BTCUSD contract position is 300 BTC, the Maintenance
    Margin Rate would be 12.5 % ... the Maintenance Amount would be 11.605 BTC". Level by level
    (amount_n = floor_n × (rate_n − rate_n−1) + amount_n−1):
        5 × 0.1 % = 0.005;  + 10 × 0.5 % = 0.055;  + 20 × 1.5 % = 0.355;  + 50 × 2.5 % = 1.605;
        + 100 × 5 % = 6.605;  + 200 × 2.5 % = 11.605 BTC   (level 7: 200 to 400 BTC, 12.5 %)"""
    tier = binance_btcusd_table().lookup(300)
    assert (tier.tier, tier.maintenance_margin_rate) == (7, 0.125)
    assert round(tier.maintenance_amount, 8) == 11.605


def test_binance_coinm_liquidation_price_of_the_calculator():
    """Binance's COIN-M calculator, as quoted in "Coin-Margined Futures Liquidation Price
    Calculation Help (CM variable)" (dev.binance.vision): cross, wallet balance 101 BTC, long
    100,000 BTCUSD contracts (10,000,000 USD) at 45,000: liquidation price 33,599.40. The FAQ's
    formula, one-way, no other contracts, level 7 at the liquidation price (10,000,000 / 33,599
    = 297.6 BTC):
        LP = (Q × MMR + side × Q) / (WB + cum + side × Q / EP)
           = 10,000,000 × 1.125 / (101 + 11.605 + 222.2222) = 11,250,000 / 334.8272 = 33,599.42
    which BTCUSD's 0.1 tick shows as 33,599.4. (The user's 33,578.86 used the FAQ's older
    amount, 11.81 BTC.)"""
    pos = make_inverse_position("BTC/USD:BTC", "long", 100_000, 45_000, contract_size=100, leverage=4,
                                tiers=binance_btcusd_table())
    r = evaluate_inverse("binance-coinm", [pos], margin_mode="cross", wallet_balance=101).positions[0]
    assert r.liquidation_tier == 7
    assert round(r.liquidation_price, 2) == round(11_250_000 / (101 + 11.605 + 10_000_000 / 45_000), 2) == 33_599.42
    assert round(r.liquidation_price, 1) == 33_599.4
    # the bankruptcy price: 101 + 10,000,000 × (1/45,000 − 1/P) = 0 → P = 10,000,000 / 323.2222
    assert round(r.bankruptcy_price, 2) == round(10_000_000 / (101 + 10_000_000 / 45_000), 2) == 30_938.47
    # isolated on the same 101 BTC is the same position
    iso = make_inverse_position("BTC/USD:BTC", "long", 100_000, 45_000, contract_size=100, margin=101,
                                tiers=binance_btcusd_table())
    assert evaluate_inverse("binance-coinm", [iso]).positions[0].liquidation_price == pytest.approx(
        r.liquidation_price, rel=1e-12)


def test_binance_coinm_short_and_the_tier_at_the_liquidation_price():
    """A short's liquidation price by the same formula (side −1), worked here: isolated, 3,000
    contracts × 100 USD (Q 300,000) at 50,000 with 1 BTC margin: position value 6 BTC (level 2).
        level 2 (5..10 BTC, 0.5 %, cum 0.005):
        LP = (300,000 × 0.005 − 300,000) / (1 + 0.005 − 300,000 / 50,000) = −298,500 / −4.995
           = 59,759.76;  value there 300,000 / 59,759.76 = 5.02 BTC: level 2, consistent.
        bankruptcy: 1 + 300,000 × (1/P − 1/50,000) = 0 → P = 300,000 / 5 = 60,000."""
    lp = inverse_liquidation_price("binance-coinm", "short", 3_000, 50_000, contract_size=100, margin=1,
                                   tiers=binance_btcusd_table())
    assert round(lp, 2) == round(298_500 / 4.995, 2) == 59_759.76
    assert inverse_bankruptcy_price("binance-coinm", "short", 3_000, 50_000, contract_size=100, margin=1,
                                    tiers=binance_btcusd_table()) == pytest.approx(60_000, rel=1e-12)


# --- Bybit inverse --------------------------------------------------------------------------------

@pytest.mark.parametrize("fee", [0.0, 0.00055])
def test_bybit_inverse_isolated_example(fee):
    """Bybit, "Liquidation Price Calculation under Isolated Mode (Unified Trading Account)",
    Inverse Perpetual: 60,000 USD of BTCUSD at 50,000, 10x, MMR 0.5 %, no extra margin:
        position value = 60,000 / 50,000 = 1.2 BTC; initial margin = 1.2 / 10 = 0.12 BTC;
        maintenance margin = 1.2 × 0.5 % = 0.006 BTC
        LP (long)  = 60,000 / [1.2 + (0.12 − 0.006)] = 60,000 / 1.314 = 45,662.10
        LP (short) = 60,000 / [1.2 − (0.12 − 0.006)] = 60,000 / 1.086 = 55,248.62
    The fee to close, reserved in both margins, cancels (the article: only "minor differences")."""
    kw = dict(contract_size=1, leverage=10, tiers=TierTable.single(0.005), taker_fee=fee)
    assert round(inverse_liquidation_price("bybit-inverse", "long", 60_000, 50_000, **kw), 2) == 45_662.10
    assert round(inverse_liquidation_price("bybit-inverse", "short", 60_000, 50_000, **kw), 2) == 55_248.62


def test_bybit_inverse_bankruptcy_prices():
    """Bybit, "What is Bankruptcy Price? (Inverse Contract)", isolated: long = entry × leverage /
    (leverage + 1), short = entry × leverage / (leverage − 1). At 8,000 and 50x (the inputs of the
    examples of "How to calculate Liquidation Price (Inverse Contract)"):
        long  8,000 × 50 / 51 = 7,843.14;   short 8,000 × 50 / 49 = 8,163.27
    and the liquidation prices there, by the isolated formula above with MMR 0.5 %:
        long  10,000 / (1.25 × (1 + 0.02 − 0.005)) = 8,000 / 1.015 = 7,881.77
        short 8,000 / (1 − 0.02 + 0.005) = 8,000 / 0.985 = 8,121.83"""
    kw = dict(contract_size=1, leverage=50, tiers=TierTable.single(0.005))
    assert round(inverse_bankruptcy_price("bybit-inverse", "long", 10_000, 8_000, **kw), 2) == 7_843.14
    assert round(inverse_bankruptcy_price("bybit-inverse", "short", 10_000, 8_000, **kw), 2) == 8_163.27
    assert round(inverse_liquidation_price("bybit-inverse", "long", 10_000, 8_000, **kw), 2) == 7_881.77
    assert round(inverse_liquidation_price("bybit-inverse", "short", 10_000, 8_000, **kw), 2) == 8_121.83


def test_bybit_inverse_cross_example():
    """Bybit, "How to calculate Liquidation Price (Inverse Contract)", Cross Margin: balance
    0.5 BTC, long 10,000 contracts at 8,000, taker fee 0.075 %, no orders:
        bankruptcy price = 1.00075 × 10,000 / (10,000 / 8,000 + 0.5) = 10,007.5 / 1.75 = 5,718.57
        10,000 × (1/8,000 − 1/LP) = −(0.5 − 0 − 10,000 / 8,000 × 0.5 % − 10,000 × 0.00075 / 5,718.57)
        10,000 / LP = 1.75 − 0.00625 − 0.00131151 = 1.74243849  →  LP = 5,739.08
    The article prints 5,739.50, which its own equation does not give (5,739.08 to the cent).
    In btperp the fee to close is reserved at the position's bankruptcy price entry × L / (L + 1),
    so the position's leverage is the one that puts it at the account's 5,718.57:
    L = 5,718.57 / (8,000 − 5,718.57) = 2.5066."""
    bp = 1.00075 * 10_000 / (10_000 / 8_000 + 0.5)
    pos = make_inverse_position("BTC/USD:BTC", "long", 10_000, 8_000, contract_size=1,
                                leverage=bp / (8_000 - bp), tiers=TierTable.single(0.005))
    r = evaluate_inverse("bybit-inverse", [pos], margin_mode="cross", wallet_balance=0.5,
                         taker_fee=0.00075).positions[0]
    assert round(r.bankruptcy_price, 2) == 5_718.57
    assert round(r.liquidation_price, 2) == round(10_000 / (1.75 - 0.00625 - 7.5 / bp), 2) == 5_739.08


# --- the elementary formulas and the API's edges ----------------------------------------------------

def test_pnl_and_funding_in_the_coin():
    # Bybit "P&L Calculations (Inverse Contracts)": long 10,000 contracts from 8,000 to 10,000:
    # 10,000 × (1/8,000 − 1/10,000) = 1.25 − 1 = 0.25 BTC; the short loses as much
    assert inverse_unrealized_pnl(1, 10_000, 1, 8_000, 10_000) == pytest.approx(0.25, rel=1e-12)
    assert inverse_unrealized_pnl(-1, 10_000, 1, 8_000, 10_000) == pytest.approx(-0.25, rel=1e-12)
    # funding in the coin = contracts × contract size × rate / mark: 1,000 × 100 × 0.01 % / 50,000
    # = 0.0002 BTC, paid by the long, received by the short
    assert inverse_funding_payment(1_000, 100, 50_000, 0.0001) == pytest.approx(0.0002, rel=1e-12)
    assert inverse_funding_payment(-1_000, 100, 50_000, 0.0001) == pytest.approx(-0.0002, rel=1e-12)


def test_linear_and_inverse_rulebooks_are_not_mixed():
    pos = make_inverse_position("BTC/USD:BTC", "long", 10, 50_000, contract_size=100, leverage=5,
                                tiers=TierTable.single(0.01))
    with pytest.raises(InputError, match="exchange: binance-coinm is for coin-margined contracts, sized in "
                                         "contracts: use btperp.inverse"):
        evaluate("binance-coinm", [pos.mirror()])
    with pytest.raises(InputError, match="binance-coinm is for coin-margined contracts"):
        liquidation_price("binance-coinm", "long", 1, 50_000, leverage=5, tiers=TierTable.single(0.01))
    with pytest.raises(InputError, match="binance-usdm is a linear .* coin-margined contracts take "
                                         "binance-coinm or bybit-inverse"):
        evaluate_inverse("binance-usdm", [pos])
    with pytest.raises(InputError, match=r"positions\[0\]: expected an InversePosition, got Position"):
        evaluate_inverse("binance-coinm", [pos.mirror()])
    eth = make_inverse_position("ETH/USD:ETH", "long", 10, 3_000, contract_size=10, leverage=5,
                                tiers=TierTable.single(0.01))
    with pytest.raises(InputError, match="cross margin is per coin: positions settle in BTC, ETH"):
        evaluate_inverse("binance-coinm", [pos, eth], margin_mode="cross", wallet_balance=1)
    # isolated, each in its own coin, is fine
    assert len(evaluate_inverse("binance-coinm", [pos, eth]).positions) == 2
    with pytest.raises(InputError, match="contracts: must be a positive number, got 0"):
        make_inverse_position("BTC/USD:BTC", "long", 0, 50_000, contract_size=100, leverage=5,
                              tiers=TierTable.single(0.01))
    with pytest.raises(InputError, match="leverage: give the leverage, or the isolated margin"):
        make_inverse_position("BTC/USD:BTC", "long", 1, 50_000, contract_size=100, tiers=TierTable.single(0.01))
    # symbols are read as coin-margined ones
    assert make_inverse_position("ETHUSD_PERP", "long", 1, 3_000, contract_size=10, leverage=5,
                                 tiers=TierTable.single(0.01)).symbol == "ETH/USD:ETH"
    with pytest.raises(InputError, match="symbol: 'ETHUSDT' is not coin-margined"):
        make_inverse_position("ETHUSDT", "long", 1, 3_000, contract_size=10, leverage=5,
                              tiers=TierTable.single(0.01))
    # leverage from the margin: 1,000 × 100 / 50,000 = 2 BTC on 0.5 BTC → 4x
    assert make_inverse_position("BTC/USD:BTC", "long", 1_000, 50_000, contract_size=100, margin=0.5,
                                 tiers=TierTable.single(0.01)).leverage == 4


# --- btperp calc --------------------------------------------------------------------------------------

def test_calc_for_coin_margined_contracts(capsys):
    """`btperp calc --exchange binance-coinm --contracts N`: Binance's MM example through the CLI,
    then a liquidation price worked by hand: 1,000 contracts (100 USD) long at 50,000, 20x, MMR
    0.4 %: margin = 100,000 / 50,000 / 20 = 0.1 BTC;
        LP = 100,000 × 1.004 / (0.1 + 100,000 / 50,000) = 100,400 / 2.1 = 47,809.52
        BP = 100,000 / 2.1 = 47,619.05"""
    base = ["calc", "--exchange", "binance-coinm", "--symbol", "BTCUSD_PERP", "--side", "long",
            "--contracts", "1000", "--entry", "50000", "--leverage", "20", "--mmr", "0.004"]
    assert cli(base + ["--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["contract_type"] == "inverse" and out["settle"] == "BTC"
    p = out["positions"][0]
    assert (p["symbol"], p["settle"], p["contracts"], p["contract_size"], p["face_value"]) == (
        "BTC/USD:BTC", "BTC", 1000, 100, 100_000)                 # BTCUSD: 100 USD a contract
    assert p["position_value"] == 2.0 and p["initial_margin"] == pytest.approx(0.1)
    assert round(p["liquidation_price"], 2) == 47_809.52 and round(p["bankruptcy_price"], 2) == 47_619.05
    assert cli(base) == 0
    text = capsys.readouterr().out
    assert "coin-margined: margins in BTC, prices in USD" in text and "1000 x 100 USD" in text
    assert "0.10000000" in text and "47,809.52" in text
    # Bybit's contracts are 1 USD
    assert cli(["calc", "--exchange", "bybit-inverse", "--symbol", "BTCUSD", "--side", "long", "--contracts",
                "60000", "--entry", "50000", "--leverage", "10", "--mmr", "0.005", "--json"]) == 0
    p = json.loads(capsys.readouterr().out)["positions"][0]
    assert p["contract_size"] == 1 and round(p["liquidation_price"], 2) == 45_662.10


@pytest.mark.parametrize("extra, message", [
    (["--size", "3"], "positions[0].size: coin-margined positions are sized in contracts"),
    (["--symbol", "BTCUSDT", "--contracts", "3"], "positions[0].symbol: 'BTCUSDT' is not coin-margined"),
    (["--contracts", "3", "--maintenance-amount", "1"], "a maintenance amount needs its maintenance_margin_rate"),
    (["--contracts", "3"], "no tier table for BTC/USD:BTC on binance-coinm"),
    (["--contracts", "100000", "--mmr", "0.004", "--max-leverage", "2"], "5x is above the 2x"),
])
def test_calc_refuses_bad_coin_margined_input_with_exit_2(capsys, extra, message):
    args = ["calc", "--exchange", "binance-coinm", "--symbol", "BTCUSD", "--side", "long", "--entry", "50000",
            "--leverage", "5"]
    assert cli(args + extra) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_calc_account_json_with_coin_margined_positions():
    acct = {"exchange": "binance-coinm", "margin_mode": "cross", "wallet_balance": 101,
            "positions": [{"symbol": "BTCUSD_PERP", "side": "long", "contracts": 100_000, "entry_price": 45_000,
                           "leverage": 4}]}
    table = binance_btcusd_table()
    report = calculate(acct, tiers_for=lambda rb, s: TierHistory.constant(table))
    assert round(report.account.positions[0].liquidation_price, 1) == 33_599.4
    with pytest.raises(LeverageError, match="5x is above the 4x that tier 7 allows"):
        calculate({**acct, "positions": [{**acct["positions"][0], "leverage": 5}]},
                  tiers_for=lambda rb, s: TierHistory.constant(table))


# --- properties ---------------------------------------------------------------------------------------

RULEBOOKS = [BinanceCoinM(), BybitInverse()]


@st.composite
def coin_tables(draw):
    """Valid tables bounded in the coin: floors from 0 up, rates non-decreasing, leverage non-increasing."""
    n = draw(st.integers(1, 6))
    floors = [0.0] + sorted(set(draw(st.lists(st.floats(1e-2, 1e4), min_size=n - 1, max_size=n - 1))))
    k = len(floors)
    rates = sorted(draw(st.lists(st.floats(0.001, 0.5), min_size=k, max_size=k)))
    levs = sorted(draw(st.lists(st.integers(1, 125), min_size=k, max_size=k)), reverse=True)
    caps = floors[1:] + [floors[-1] * 10 + 1e3]
    return TierTable.from_ccxt([{"tier": i + 1, "minNotional": lo, "maxNotional": hi,
                                 "maintenanceMarginRate": r, "maxLeverage": lev}
                                for i, (lo, hi, r, lev) in enumerate(zip(floors, caps, rates, levs))])


positions = st.fixed_dictionaries({
    "side": st.sampled_from([1, -1]),
    "contracts": st.floats(1, 1e6),
    "contract_size": st.sampled_from([1.0, 10.0, 100.0]),
    "entry": st.floats(1e-1, 2e5),
    "leverage": st.floats(0.0, 1.0),     # a fraction of the highest leverage the entry tier carries
    "fee": st.sampled_from([0.0, 0.0002, 0.0005, 0.001]),
})


def leverage_for(fraction, table, value):
    ceiling = max(1.0, min(125.0, 0.95 / table.lookup(value).maintenance_margin_rate))
    return 1.0 + fraction * (ceiling - 1.0)


def make(p, table, leverage=None, **kw):
    q = p["contracts"] * p["contract_size"]
    lev = leverage if leverage is not None else leverage_for(p["leverage"], table, q / p["entry"])
    return make_inverse_position("BTC/USD:BTC", p["side"], p["contracts"], p["entry"],
                                 contract_size=p["contract_size"], leverage=lev, tiers=table, **kw)


def fee_to_close(rulebook, pos: InversePosition, fee):
    """Bybit "Initial Margin (Inverse Contract)": contracts / bankruptcy price × taker fee, the
    bankruptcy price entry × L / (L ± 1), so contracts × (L ± 1) / (entry × L) × fee (finite for a
    1x short, whose bankruptcy price is infinite); Binance reserves nothing."""
    if not isinstance(rulebook, BybitInverse):
        return 0.0
    return pos.face_value * (pos.leverage + int(pos.side)) / (pos.entry_price * pos.leverage) * fee


def margin_of(rulebook, pos, fee):
    """Isolated margin: as given, else the initial margin = Q / E / leverage (+ Bybit's fee to close)."""
    return pos.margin if pos.margin is not None else pos.entry_value / pos.leverage + fee_to_close(rulebook, pos, fee)


def mm_at(rulebook, pos, price, fee):
    """Maintenance margin in the coin, from the exchanges' documents: Binance COIN-M: value at the
    price × MMR − cum, the tier of that value; Bybit inverse: value at entry × MMR − mmDeduction +
    fee to close, the tier of the value at entry."""
    value = pos.face_value / price if isinstance(rulebook, BinanceCoinM) else pos.entry_value
    tier = pos.tiers.lookup(value)
    return value * tier.maintenance_margin_rate - tier.maintenance_amount + fee_to_close(rulebook, pos, fee)


def equity_at(pos, margin, price):
    return margin + int(pos.side) * pos.face_value * (1 / pos.entry_price - 1 / price)


@pytest.mark.parametrize("rulebook", RULEBOOKS, ids=lambda r: r.name)
@given(p=positions, table=coin_tables())
def test_equity_equals_maintenance_margin_at_the_liquidation_price(rulebook, p, table):
    pos = make(p, table)
    r = evaluate_inverse(rulebook, [pos], taker_fee=p["fee"]).positions[0]
    assume(not r.liquidated)
    margin = margin_of(rulebook, pos, p["fee"])
    assert r.initial_margin == pytest.approx(pos.entry_value / pos.leverage + fee_to_close(rulebook, pos, p["fee"]),
                                             rel=1e-12)
    lp = r.liquidation_price
    if lp is None:       # a short whose margin outlasts any rise: the loss in the coin is bounded by Q/E
        assert pos.side == -1
        assert equity_at(pos, margin, 1e300) >= mm_at(rulebook, pos, 1e300, p["fee"]) - 1e-9 * pos.entry_value
        return
    assert math.isclose(equity_at(pos, margin, lp), mm_at(rulebook, pos, lp, p["fee"]),
                        rel_tol=1e-9, abs_tol=1e-9 * pos.entry_value)
    assert (lp < pos.mark_price) if pos.side == 1 else (lp > pos.mark_price)


@pytest.mark.parametrize("rulebook", RULEBOOKS, ids=lambda r: r.name)
@given(p=positions, table=coin_tables())
def test_equity_at_the_bankruptcy_price_is_the_reserve(rulebook, p, table):
    pos = make(p, table)
    r = evaluate_inverse(rulebook, [pos], taker_fee=p["fee"]).positions[0]
    assume(r.bankruptcy_price is not None)
    margin = margin_of(rulebook, pos, p["fee"])
    assert math.isclose(equity_at(pos, margin, r.bankruptcy_price), fee_to_close(rulebook, pos, p["fee"]),
                        rel_tol=1e-9, abs_tol=1e-9 * pos.entry_value)
    if r.liquidation_price is not None and not r.liquidated:
        assert (r.bankruptcy_price <= r.liquidation_price) if pos.side == 1 else \
            (r.bankruptcy_price >= r.liquidation_price)


@pytest.mark.parametrize("rulebook", RULEBOOKS, ids=lambda r: r.name)
@given(p=positions, table=coin_tables(), frac2=st.floats(0.0, 1.0))
def test_liquidation_price_moves_toward_entry_as_leverage_rises(rulebook, p, table, frac2):
    value = p["contracts"] * p["contract_size"] / p["entry"]
    lo, hi = sorted(leverage_for(f, table, value) for f in (p["leverage"], frac2))
    assume(hi > lo * 1.0001)
    results = [evaluate_inverse(rulebook, [make(p, table, leverage=lev)], taker_fee=p["fee"]).positions[0]
               for lev in (lo, hi)]
    assume(not any(r.liquidated for r in results))
    a, b = (r.liquidation_price for r in results)
    if p["side"] == 1:
        assert b >= a * (1 - 1e-12)
    else:
        a, b = (math.inf if x is None else x for x in (a, b))
        assert b <= a * (1 + 1e-12)


@pytest.mark.parametrize("rulebook", RULEBOOKS, ids=lambda r: r.name)
@given(p=positions, table=coin_tables(), extra=st.floats(0.0, 2.0), mark_move=st.floats(-0.3, 0.3))
def test_cross_with_one_position_equals_isolated_with_that_margin(rulebook, p, table, extra, mark_move):
    base = make(p, table, mark_price=p["entry"] * (1 + mark_move))
    wallet = margin_of(rulebook, base, p["fee"]) * (1 + extra)
    iso_pos = make(p, table, leverage=base.leverage, mark_price=base.mark_price, margin=wallet)
    iso = evaluate_inverse(rulebook, [iso_pos], taker_fee=p["fee"])
    cross = evaluate_inverse(rulebook, [base], margin_mode="cross", wallet_balance=wallet, taker_fee=p["fee"])
    a, b = iso.positions[0], cross.positions[0]
    for x, y in ((a.liquidation_price, b.liquidation_price), (a.bankruptcy_price, b.bankruptcy_price)):
        assert (x is None) == (y is None)
        if x is not None:
            assert y == pytest.approx(x, rel=1e-12)
    assert b.margin_ratio == pytest.approx(a.margin_ratio, rel=1e-12)
    assert cross.margin_balance == pytest.approx(iso.margin_balance, rel=1e-12)
    # the margin balance is the wallet plus the PnL in the coin at the mark
    assert cross.margin_balance == pytest.approx(
        wallet + inverse_unrealized_pnl(int(base.side), base.contracts, base.contract_size, base.entry_price,
                                        base.mark_price), rel=1e-12, abs=1e-12 * base.entry_value)


@given(contracts=st.floats(1, 1e7), size=st.sampled_from([1.0, 10.0, 100.0]), mark=st.floats(1e-2, 1e6),
       rate=st.floats(-0.003, 0.003), side=st.sampled_from([1, -1]))
def test_funding_in_the_coin_is_contracts_times_size_times_rate_over_mark(contracts, size, mark, rate, side):
    paid = inverse_funding_payment(side * contracts, size, mark, rate)
    assert paid == pytest.approx(side * contracts * size * rate / mark, rel=1e-12, abs=1e-300)


# --- OKX coin-margined swaps ------------------------------------------------------------------------

def test_okx_inverse_isolated_long_and_short_follow_okx_margin_ratio(capsys):
    """OKX "Tiered maintenance margin ratio rules", coin-margined swaps, isolated: margin ratio =
    (margin + UPL) / (face value × |contracts| / mark × (tiered MMR + fee rate)), liquidated at
    100 %; UPL (long) = face value × contracts × (1/entry − 1/mark). 1,000 BTC-USD-SWAP contracts
    (100 USD: Q = 100,000 USD) at 50,000, 10x: margin Q / E / 10 = 0.2 BTC; MMR 0.5 %, taker 0.05 %.
        long:  0.2 + 100,000 (1/50,000 − 1/P) = 100,000 / P × 0.0055  →  P = 100,550 / 2.2 = 45,704.55
               bankruptcy: 0.2 + 2 − 100,000 / P = 0                   →  P = 100,000 / 2.2 = 45,454.55
        short: 0.2 + 100,000 (1/P − 1/50,000) = 100,000 / P × 0.0055  →  P = 99,450 / 1.8 = 55,250.00
               bankruptcy: 100,000 / P = 1.8                           →  P = 55,555.56
    The tier follows the contracts (tables bounded in USD of face value): 3,000 contracts (300,000 USD)
    are tier 2 (above 200,000: MMR 1 %) at any price; long at 10x, margin 0.6 BTC:
        6.6 = 300,000 × 1.0105 / P  →  P = 303,150 / 6.6 = 45,931.82"""
    from btperp.rules import OKXInverse, get_rulebook
    rb = get_rulebook("okx-inverse", core=True)
    assert isinstance(rb, OKXInverse) and rb.inverse and (rb.taker_fee, rb.liquidation_fee_rate) == (0.0005, 0.0)
    assert rb.default_contract_size("BTC") == 100.0 and rb.default_contract_size("ETH") == 10.0
    single = TierTable.single(0.005)
    long = evaluate_inverse(rb, [make_inverse_position("BTC/USD:BTC", "long", 1_000, 50_000, contract_size=100,
                                                       tiers=single, leverage=10)]).positions[0]
    assert long.initial_margin == pytest.approx(0.2, rel=1e-12) and long.position_value == 2.0
    assert long.maintenance_margin == pytest.approx(2 * 0.0055, rel=1e-12)
    assert round(long.liquidation_price, 2) == 45_704.55 and round(long.bankruptcy_price, 2) == 45_454.55
    short = evaluate_inverse(rb, [make_inverse_position("BTC/USD:BTC", "short", 1_000, 50_000, contract_size=100,
                                                        tiers=single, leverage=10)]).positions[0]
    assert round(short.liquidation_price, 2) == 55_250.00 and round(short.bankruptcy_price, 2) == 55_555.56
    two = TierTable.from_ccxt([{"tier": 1, "minNotional": 0, "maxNotional": 200_000, "maintenanceMarginRate": 0.005,
                                "maxLeverage": 100},
                               {"tier": 2, "minNotional": 200_000, "maxNotional": 1e7, "maintenanceMarginRate": 0.01,
                                "maxLeverage": 50}], amounts=False)
    big = evaluate_inverse(rb, [make_inverse_position("BTC/USD:BTC", "long", 3_000, 50_000, contract_size=100,
                                                      tiers=two, leverage=10)]).positions[0]
    assert big.tier == 2 and round(big.liquidation_price, 2) == 45_931.82
    # the same through btperp calc (BTC-USD-SWAP: 100 USD a contract by default)
    assert cli(["calc", "--exchange", "okx-inverse", "--symbol", "BTC-USD-SWAP", "--side", "long", "--contracts",
                "1000", "--entry", "50000", "--leverage", "10", "--mmr", "0.005", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)["positions"][0]
    assert (out["contract_size"], round(out["liquidation_price"], 2)) == (100, 45_704.55)
    # OKX's coin-margined swaps are not in backtests (like its linear ones): a clear refusal
    import backtrader as bt
    import btperp
    with pytest.raises(InputError, match="okx-inverse is modelled in the margin core and `btperp calc` only"):
        btperp.install(bt.Cerebro(), exchange="okx-inverse")


@given(p=positions, mmr=st.floats(0.001, 0.1))
def test_okx_inverse_equity_is_the_maintenance_margin_at_the_liquidation_price(p, mmr):
    """Equity in the coin at OKX's liquidation price = face value / P × (MMR + fee); zero at the
    bankruptcy price (OKX reserves nothing there)."""
    from btperp.rules import OKXInverse
    rb = OKXInverse()
    lev = 1 + p["leverage"] * (1 / (2 * (mmr + p["fee"])) - 1)       # below the leverage where IM = MM
    pos = make_inverse_position("BTC/USD:BTC", p["side"], p["contracts"], p["entry"], contract_size=p["contract_size"],
                                tiers=TierTable.single(mmr), leverage=lev)
    r = evaluate_inverse(rb, [pos], taker_fee=p["fee"]).positions[0]
    margin = pos.entry_value / lev
    if r.liquidation_price is not None:
        assert math.isclose(equity_at(pos, margin, r.liquidation_price),
                            pos.face_value / r.liquidation_price * (mmr + p["fee"]),
                            rel_tol=1e-9, abs_tol=1e-9 * pos.entry_value)
    if r.bankruptcy_price is not None:
        assert math.isclose(equity_at(pos, margin, r.bankruptcy_price), 0.0, abs_tol=1e-9 * pos.entry_value)
