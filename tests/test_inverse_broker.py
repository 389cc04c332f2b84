"""Coin-margined (inverse) contracts through cerebro (issue #19): ``btperp.install(cerebro,
exchange="binance-coinm" | "bybit-inverse")``. Cash and value in the coin, sizes in contracts,
prices in USD.

Every expected value is hand arithmetic written out below from the exchanges' formulas, not from
btperp's mirror:
* position value (coin) = contracts × contract size / price (Binance "How to Calculate Liquidation
  Price of COIN-M Futures Contracts": notional = contracts × contract size / mark price);
* PnL (coin) = side × contracts × contract size × (1/entry − 1/exit) (Bybit "P&L Calculations
  (Inverse Contracts)");
* fee (coin) = position value at the fill × fee rate;
* funding (coin) = contracts × contract size × rate / mark, longs pay a positive rate (Binance
  "Introduction to Binance Futures Funding Rates", COIN-M);
* isolated liquidation price (Binance COIN-M FAQ, one-way, isolated, WB = the isolated margin):
  LP = (Q × MMR + side × Q) / (WB + cum + side × Q / EP), Q = contracts × contract size;
  bankruptcy price (margin exhausted): E × L / (L + 1) for a long, E × L / (L − 1) for a short
  (Bybit "Bankruptcy Price (Inverse Contract)").
"""

import math

import backtrader as bt
import pytest
from perpkit import feed, make_frame, run, table

import btperp
from btperp.errors import InputError
from btperp.io.history import read_metadata
from btperp.inverse import inverse_bankruptcy_price, inverse_liquidation_price

#: Binance BTCUSD-like tiers, bounded by position value in BTC: 0.4 % to 5 BTC (125x), ...
BTC_TIERS = table((0, 5, 0.004, 125), (5, 10, 0.005, 100), (10, math.inf, 0.01, 50))
TAKER = 0.0005          # Binance COIN-M taker fee


def coinm(close, **kwargs):
    return make_frame(close, symbol="BTC/USD:BTC", exchange="binance-coinm", **kwargs)


def run_coinm(frame, plan, **broker):
    broker.setdefault("exchange", "binance-coinm")
    broker.setdefault("cash", 1.0)
    broker.setdefault("tiers", BTC_TIERS)
    return run(frame, plan, **broker)


# --- a long and a short, closed ------------------------------------------------------------------

def test_long_pnl_funding_and_value_in_the_coin():
    """100 BTCUSD contracts (100 USD each: Q = 10,000 USD) bought at 50,000, a funding event of
    0.01 % at bar 2's open (mark 50,000), closed at 55,000, on 1 BTC:
        open fee  = 10,000 / 50,000 × 0.05 % = 0.2 × 0.0005          = 0.0001 BTC
        funding   = 10,000 × 0.0001 / 50,000                         = 0.00002 BTC (the long pays)
        value at bar 2's close (mark 52,000) = 1 − 0.0001 − 0.00002 + 10,000 × (1/50,000 − 1/52,000)
                  = 0.99988 + 0.2 − 0.192307692…                     = 1.007572307… BTC
        PnL       = 10,000 × (1/50,000 − 1/55,000) = 0.2 − 0.181818… = 0.0181818… BTC
        close fee = 10,000 / 55,000 × 0.0005                         = 0.0000909090… BTC
        wallet    = 1 − 0.0001 + 0.0181818… − 0.0000909… − 0.00002   = 1.0179709090… BTC"""
    f = coinm([50_000, 50_000, 52_000, 55_000, 55_000], funding={2: 0.0001})
    values = []

    class Long(bt.Strategy):
        def __init__(self):
            self.trades = []

        def next(self):
            values.append(self.broker.getvalue())
            if len(self) == 1:
                self.buy(size=100)
            elif len(self) == 4:
                self.close()

        def notify_trade(self, trade):
            if trade.isclosed:
                self.trades.append((trade.pnl, trade.pnlcomm))

    strat, b = run_coinm(f, None, strategy=Long, leverage=10)
    assert values[2] == pytest.approx(1 - 0.0001 - 0.00002 + 0.2 - 10_000 / 52_000, rel=1e-12)
    pnl = 10_000 * (1 / 50_000 - 1 / 55_000)
    assert pnl == pytest.approx(0.0181818181818, rel=1e-10)
    assert strat.trades[0][0] == pytest.approx(pnl, rel=1e-12)
    # pnlcomm: net of both fees and the funding (charged to the trade, like backtrader's interest)
    assert strat.trades[0][1] == pytest.approx(pnl - 0.0001 - 10_000 / 55_000 * TAKER - 0.00002, rel=1e-12)
    (funding,) = b.funding_payments
    assert (funding.size, funding.rate) == (100, 0.0001)
    assert funding.payment == pytest.approx(0.00002, rel=1e-12)
    assert funding.per_unit == pytest.approx(100 * 0.0001 / 50_000, rel=1e-12)     # one contract long
    wallet = 1 - 0.0001 + pnl - 10_000 / 55_000 * TAKER - 0.00002
    assert wallet == pytest.approx(1.017970909090909, rel=1e-12)
    assert b.getvalue() == pytest.approx(wallet, rel=1e-12)
    assert b.wallet_balance == pytest.approx(wallet, rel=1e-12)
    opened, closed = b.fills
    assert (opened.side, opened.size, closed.size) == ("long", 100, -100)
    assert (opened.price, closed.price) == (pytest.approx(50_000), pytest.approx(55_000))
    assert closed.pnl == pytest.approx(pnl, rel=1e-12)
    assert strat.position.size == 0


def test_short_receives_funding_and_gains_when_the_price_falls():
    """A short of 200 ETHUSD contracts (10 USD each: Q = 2,000 USD) sold at 2,000, funding 0.03 %
    at bar 2's open (mark 2,000: the short receives), bought back at 1,600, on 2 ETH:
        open fee  = 2,000 / 2,000 × 0.0005                  = 0.0005 ETH
        funding   = −2,000 × 0.0003 / 2,000                 = −0.0003 ETH (received)
        PnL       = −2,000 × (1/2,000 − 1/1,600) = −2,000 × (−0.000125) = 0.25 ETH
        close fee = 2,000 / 1,600 × 0.0005                  = 0.000625 ETH
        wallet    = 2 − 0.0005 + 0.0003 + 0.25 − 0.000625   = 2.249175 ETH
    While open, at bar 2's close (mark 1,800): value = 2 − 0.0005 + 0.0003 − 2,000 × (1/2,000 −
    1/1,800) = 1.9998 + 0.1111… = 2.11091111… ETH; getvalue([data]) = −200 × 10 / 1,800 ETH."""
    f = make_frame([2_000, 2_000, 1_800, 1_600, 1_600], symbol="ETH/USD:ETH", exchange="binance-coinm",
                   funding={2: 0.0003})
    seen = []

    class Short(bt.Strategy):
        def __init__(self):
            self.trades = []

        def next(self):
            if len(self) == 1:
                self.sell(size=200)
            elif len(self) == 3:
                seen.append((self.broker.getvalue(), self.broker.getvalue([self.data]),
                             self.broker.get_margin_state(self.data)))
            elif len(self) == 4:
                self.close()

        def notify_trade(self, trade):
            if trade.isclosed:
                self.trades.append(trade.pnl)

    strat, b = run_coinm(f, None, strategy=Short, leverage=5, cash=2.0)
    value, position_value, state = seen[0]
    assert value == pytest.approx(2 - 0.0005 + 0.0003 - 2_000 * (1 / 2_000 - 1 / 1_800), rel=1e-12)
    assert position_value == pytest.approx(-200 * 10 / 1_800, rel=1e-12)
    assert (state.side, state.contracts, state.contract_size) == (-1, 200, 10)
    assert state.entry_price == pytest.approx(2_000) and state.mark_price == pytest.approx(1_800)
    assert state.position_value == pytest.approx(2_000 / 1_800, rel=1e-12)
    assert strat.trades[0] == pytest.approx(0.25, rel=1e-12)
    (funding,) = b.funding_payments
    assert funding.payment == pytest.approx(-0.0003, rel=1e-12)
    assert b.getvalue() == pytest.approx(2.249175, rel=1e-12)


def test_an_increase_averages_the_entry_as_the_exchange_does():
    """Two buys of 100 contracts, filled at 40,000 and 60,000: Binance COIN-M's average entry is
    the harmonic mean, total contracts / Σ(contracts / price) = 200 / (100/40,000 + 100/60,000)
    = 200 / 0.004166… = 48,000 (not 50,000). A close at 48,000 then realizes 0 PnL."""
    f = coinm([40_000, 40_000, 60_000, 60_000, 48_000, 48_000])
    seen = []

    class Twice(bt.Strategy):
        def next(self):
            seen.append((self.position.size, self.position.price))
            if len(self) in (1, 3):
                self.buy(size=100)
            elif len(self) == 5:
                self.close()

    b = run_coinm(f, None, strategy=Twice, leverage=5)[1]
    assert [x.price for x in b.fills] == pytest.approx([40_000, 60_000, 48_000])
    assert seen[4][0] == 200 and seen[4][1] == pytest.approx(48_000, rel=1e-12)
    assert b.fills[2].size == -200 and b.fills[2].pnl == pytest.approx(0.0, abs=1e-15)
    assert b.liquidations == []


# --- liquidation -----------------------------------------------------------------------------

def test_long_liquidated_at_the_calculators_price_filled_at_bankruptcy():
    """100 BTCUSD contracts (Q = 10,000 USD) long at 50,000, 20x isolated on 1 BTC: margin =
    10,000 / 50,000 / 20 = 0.01 BTC, tier 1 (0.2 BTC: MMR 0.4 %, cum 0). Binance COIN-M FAQ:
        LP = (Q × MMR + Q) / (WB + cum + Q / EP) = (40 + 10,000) / (0.01 + 0 + 0.2) = 47,809.5238…
        BP = E × L / (L + 1) = 50,000 × 20 / 21                                = 47,619.0476…
    Bar 3's mark low is 47,000: liquidated inside the bar at LP, filled at BP, the margin lost:
        realized PnL = 10,000 × (1/50,000 − 1/47,619.0476…) = 0.2 − 0.21 = −0.01 BTC
        wallet after = 1 − 0.0001 (open fee) − 0.01                       = 0.9899 BTC
    the rest of the margin at LP (its maintenance margin 10,000 / LP × 0.4 % = 0.000836653… BTC)
    goes to the insurance fund."""
    lp = (10_000 * 0.004 + 10_000) / (0.01 + 0 + 10_000 / 50_000)
    bp = 50_000 * 20 / 21
    assert lp == pytest.approx(47_809.5238095, rel=1e-10)
    # what btperp calc and the core give for it
    assert inverse_liquidation_price("binance-coinm", "long", 100, 50_000, contract_size=100,
                                     tiers=BTC_TIERS, leverage=20, taker_fee=TAKER) == pytest.approx(lp, rel=1e-12)
    assert inverse_bankruptcy_price("binance-coinm", "long", 100, 50_000, contract_size=100,
                                    tiers=BTC_TIERS, leverage=20) == pytest.approx(bp, rel=1e-12)
    low = [50_000, 50_000, 49_000, 47_000, 48_000]
    f = coinm([50_000, 50_000, 49_000, 48_500, 48_000], low=low, mark_low=low)
    strat, b = run_coinm(f, {0: [("buy", {"size": 100})]}, leverage=20)
    (liq,) = b.liquidations
    assert (liq.side, liq.size, liq.partial) == ("long", 100, False)
    assert liq.time.hour == 3
    assert liq.trigger_price == pytest.approx(lp, rel=1e-12)
    assert liq.liquidation_price == pytest.approx(lp, rel=1e-12)
    assert liq.fill_price == pytest.approx(bp, rel=1e-12)
    assert liq.pnl == pytest.approx(-0.01, rel=1e-9)
    assert liq.insurance_flow == pytest.approx(10_000 / lp * 0.004, rel=1e-9)
    assert liq.entry_price == pytest.approx(50_000) and liq.mark_price == 47_000
    # the strategy saw a sell of the 100 contracts at the bankruptcy price, and the trade's coin PnL
    dt, status, size, price, pnl, comm, info = strat.orders[-1]
    assert (status, size, info["liquidation"]) == ("Completed", -100, True)
    assert price == pytest.approx(bp, rel=1e-12)
    assert info["trigger_price"] == pytest.approx(lp, rel=1e-12)
    assert strat.trades[0][0] == pytest.approx(-0.01, rel=1e-9)
    assert b.wallet_balance == pytest.approx(0.9899, rel=1e-12)
    assert b.getvalue() == pytest.approx(0.9899, rel=1e-12)
    assert strat.position.size == 0


def test_short_liquidated_on_the_mark_high():
    """A short of 100 BTCUSD contracts at 50,000, 10x isolated: margin 0.2 / 10 = 0.02 BTC.
        LP = (Q × MMR − Q) / (WB + cum − Q / EP) = (40 − 10,000) / (0.02 − 0.2) = 55,333.33…
        BP = E × L / (L − 1) = 50,000 × 10 / 9 = 55,555.55…
    Bar 2's mark high 56,000 crosses LP: filled at BP, −0.02 BTC realized."""
    lp = (10_000 * 0.004 - 10_000) / (0.02 + 0 - 10_000 / 50_000)
    bp = 50_000 * 10 / 9
    high = [50_000, 50_000, 56_000, 50_000]
    f = coinm([50_000, 50_000, 50_500, 50_000], high=high, mark_high=high)
    strat, b = run_coinm(f, {0: [("sell", {"size": 100})]}, leverage=10)
    (liq,) = b.liquidations
    assert liq.side == "short" and liq.trigger_price == pytest.approx(lp, rel=1e-12)
    assert liq.fill_price == pytest.approx(bp, rel=1e-12)
    assert liq.pnl == pytest.approx(-0.02, rel=1e-9)
    assert strat.orders[-1][2] == 100 and strat.orders[-1][3] == pytest.approx(bp, rel=1e-12)
    assert b.wallet_balance == pytest.approx(1 - 0.0001 - 0.02, rel=1e-12)


def test_bybit_inverse_one_dollar_contracts():
    """Bybit inverse BTCUSD: 1 USD a contract. 10,000 contracts long at 50,000 and sold at 40,000,
    Bybit's taker fee 0.055 %:
        PnL = 10,000 × (1/50,000 − 1/40,000) = 0.2 − 0.25 = −0.05 BTC
        fees = 0.2 × 0.00055 + 0.25 × 0.00055 = 0.0002475 BTC
    At 2x the position holds through the fall (Bybit's bankruptcy price 50,000 × 2 / 3 = 33,333)."""
    f = make_frame([50_000, 50_000, 45_000, 40_000, 40_000], symbol="BTC/USD:BTC", exchange="bybit-inverse")
    strat, b = run_coinm(f, {0: [("buy", {"size": 10_000})], 3: [("close", {})]}, exchange="bybit-inverse",
                         leverage=2)
    assert b.books[0].mirror.contract_size == 1.0
    assert strat.trades[0][0] == pytest.approx(-0.05, rel=1e-12)
    assert b.wallet_balance == pytest.approx(1 - 0.05 - 0.45 * 0.00055, rel=1e-12)
    assert b.liquidations == []


# --- settings and refusals -------------------------------------------------------------------

def test_contract_size_is_set_per_symbol():
    """ETHUSD at a contract size of 100 USD instead of Binance's 10: the same 100 contracts hold ten
    times the face value; PnL = 100 × 100 × (1/2,000 − 1/2,500) = 1 ETH."""
    f = make_frame([2_000, 2_000, 2_500, 2_500], symbol="ETH/USD:ETH", exchange="binance-coinm")
    for per_data in ({"ETH/USD:ETH": {"contract_size": 100}}, None):
        strat, b = run_coinm(f, {0: [("buy", {"size": 100})], 2: [("close", {})]}, leverage=5, cash=10.0,
                             per_data=per_data)
        expected = 1.0 if per_data else 0.1
        assert strat.trades[0][0] == pytest.approx(expected, rel=1e-12)


def test_refusals_name_the_argument():
    cerebro = bt.Cerebro()
    with pytest.raises(InputError, match="contract_size: .*contract_size must be a positive number"):
        btperp.install(cerebro, exchange="binance-coinm", contract_size=0)
    with pytest.raises(InputError, match="contract_size: .*is for coin-margined contracts"):
        run(make_frame([100, 100, 100]), {}, exchange="binance-usdm", contract_size=10)
    with pytest.raises(InputError, match="exchange: one account settles in one currency"):
        run([coinm([50_000] * 3), make_frame([100] * 3)], {}, exchange="binance-coinm", tiers=BTC_TIERS,
            per_data={"TEST/USDT:USDT": {"exchange": "binance-usdm"}})
    with pytest.raises(InputError, match="data: a coin-margined account is one coin's wallet"):
        run([coinm([50_000] * 3), make_frame([2_000] * 3, symbol="ETH/USD:ETH")], {},
            exchange="binance-coinm", tiers=BTC_TIERS)
    with pytest.raises(InputError, match="symbol: 'TEST/USDT:USDT' is not coin-margined"):
        run(make_frame([100] * 3), {}, exchange="binance-coinm", tiers=BTC_TIERS)


def test_orders_are_whole_contracts_and_checked_for_margin_in_the_coin():
    """Lot size 1 contract by default: 10.7 contracts are 10. On 0.001 BTC at 10x, 100 contracts
    (0.2 BTC of value) need 0.02 BTC of margin: refused (Order.Margin), with the reason in BTC."""
    f = coinm([50_000] * 4)
    strat, b = run_coinm(f, {0: [("buy", {"size": 10.7})]}, leverage=10)
    assert b.fills[0].size == 10
    strat, b = run_coinm(f, {0: [("buy", {"size": 100})]}, leverage=10, cash=0.001)
    assert strat.orders[0][1] == "Margin" and not b.fills
    # 0.2 / 10 + 0.2 × 0.0005 = 0.0201 BTC against 0.001 (amounts in a coin: 8 decimals)
    assert b.rejections[0].reason == "initial margin and fee 0.02010000 exceed the available balance 0.00100000"
    assert (b.rejections[0].size, b.rejections[0].price) == (100, 50_000)      # contracts, USD


def test_max_open_size_in_contracts():
    """1 BTC at 10x, 95 %: margin + fee per contract at 50,000 = 100 / 50,000 × (1/10 + 0.0005) =
    0.000201 BTC; 0.95 / 0.000201 = 4,726.37 → 4,726 contracts."""
    f = coinm([50_000] * 3)
    seen = []

    class Probe(bt.Strategy):
        def next(self):
            seen.append(self.broker.max_open_size(self.data, fraction=0.95))

    run_coinm(f, None, strategy=Probe, leverage=10)
    assert seen[0] == 4_726


# --- the margin history, in the settlement currency ---------------------------------------------

def test_history_columns_in_the_coin_and_usd(tmp_path):
    """The liquidation case's history (amounts in BTC, prices in USD, sizes in contracts), by hand:
    at bar 1's close (mark 50,000) the long of 100 contracts holds margin 0.01 BTC, position value
    (``notional``) 10,000 / 50,000 = 0.2 BTC, maintenance margin 0.2 × 0.4 % = 0.0008 BTC, ratio
    0.0008 / 0.01 = 8 %, liquidation price 47,809.52; at bar 2's close (mark 49,000) unrealized
    10,000 × (1/50,000 − 1/49,000) = −0.004081632… BTC. Events: the fill (+100 at 50,000, fee
    0.0001 BTC) and the liquidation (100 at the bankruptcy price 47,619.05, PnL −0.01 BTC)."""
    import pandas as pd
    low = [50_000, 50_000, 49_000, 47_000, 48_000]
    f = coinm([50_000, 50_000, 49_000, 48_500, 48_000], low=low, mark_low=low)
    run_coinm(f, {0: [("buy", {"size": 100})]}, leverage=20, history=str(tmp_path))
    h = pd.read_parquet(tmp_path / "history.parquet")
    assert list(h["side"].astype(str)) == ["long", "long"]
    first, second = h.iloc[0], h.iloc[1]
    assert (first["size"], first["entry_price"], first["mark_close"]) == (100, pytest.approx(50_000),
                                                                        pytest.approx(50_000))
    assert first["notional"] == pytest.approx(0.2, rel=1e-12)
    assert first["position_margin"] == pytest.approx(0.01, rel=1e-12)
    assert first["initial_margin"] == pytest.approx(0.01, rel=1e-12)
    assert first["maintenance_margin"] == pytest.approx(0.0008, rel=1e-12)
    assert first["margin_ratio"] == pytest.approx(0.08, rel=1e-9)
    assert first["liquidation_price"] == pytest.approx(10_040 / 0.21, rel=1e-12)
    assert first["bankruptcy_price"] == pytest.approx(50_000 * 20 / 21, rel=1e-12)
    assert first["fees_paid"] == pytest.approx(0.0001, rel=1e-12)
    assert second["mark_close"] == pytest.approx(49_000) and second["close"] == 49_000
    assert second["extreme_checked"] == pytest.approx(49_000)            # the bar's mark low
    assert second["unrealized_pnl"] == pytest.approx(10_000 * (1 / 50_000 - 1 / 49_000), rel=1e-12)
    assert second["equity"] == pytest.approx(0.01 + 10_000 * (1 / 50_000 - 1 / 49_000), rel=1e-12)
    e = pd.read_parquet(tmp_path / "events.parquet")
    fill = e[e["kind"] == "fill"].iloc[0]
    assert (fill["side"], fill["size"], fill["price"], fill["fee"]) == ("long", 100, pytest.approx(50_000),
                                                                      pytest.approx(0.0001))
    liq = e[e["kind"] == "liquidation"].iloc[0]
    assert (liq["side"], liq["size"]) == ("long", 100)
    assert liq["price"] == pytest.approx(50_000 * 20 / 21, rel=1e-12)
    assert liq["trigger_price"] == pytest.approx(10_040 / 0.21, rel=1e-12)
    assert liq["pnl"] == pytest.approx(-0.01, rel=1e-9) and liq["mark_price"] == 47_000
    meta = read_metadata(tmp_path / "history.parquet")
    inst = meta["settings"]["instruments"]["BTC/USD:BTC"]
    assert (inst["contract_size"], inst["settle"], inst["lot_size"]) == (100, "BTC", 1)


def test_cross_margin_backs_the_position_with_the_wallet():
    """Cross, 0.02 BTC, 100 BTCUSD contracts long at 50,000 (20x): after the opening fee the wallet
    is 0.02 − 0.0001 = 0.0199 BTC, and Binance's COIN-M formula with WB = 0.0199:
        LP = (Q × MMR + Q) / (WB + cum + Q / EP) = 10,040 / (0.0199 + 0.2) = 45,657.12…
        BP (equity 0: 0.0199 + 10,000 × (1/50,000 − 1/P) = 0) = 10,000 / 0.2199 = 45,475.22…
    Bar 3's mark low 45,000 crosses it: the whole wallet is lost, value 0."""
    lp, bp = 10_040 / 0.2199, 10_000 / 0.2199
    low = [50_000, 50_000, 48_000, 45_000, 46_000]
    f = coinm([50_000, 50_000, 48_000, 46_000, 46_000], low=low, mark_low=low)
    seen = []

    class Hold(bt.Strategy):
        def next(self):
            if len(self) == 1:
                self.buy(size=100)
            elif len(self) == 3:
                seen.append(self.broker.get_margin_state(self.data))

    strat, b = run_coinm(f, None, strategy=Hold, leverage=20, cash=0.02, margin_mode="cross")
    assert seen[0].liquidation_price == pytest.approx(lp, rel=1e-12)
    (liq,) = b.liquidations
    assert liq.trigger_price == pytest.approx(lp, rel=1e-12) and liq.fill_price == pytest.approx(bp, rel=1e-12)
    assert b.wallet_balance == pytest.approx(0.0, abs=1e-15) and b.getvalue() == pytest.approx(0.0, abs=1e-15)


def test_margin_sizer_sizes_whole_contracts_over_a_usd_minimum():
    """MarginSizer on 1 BTC at 10x puts 95 % of the balance up: 4,726 contracts (as max_open_size
    above); on 0.0000002 BTC (100 USD contracts) it opens nothing rather than dust."""
    from perpkit import Script, feed

    from btperp.bt.sizers import MarginSizer
    for cash, expected in ((1.0, 4_726), (0.0000002, None)):
        cerebro = bt.Cerebro(stdstats=False)
        cerebro.adddata(feed(coinm([50_000] * 4)))
        cerebro.addstrategy(Script, plan={0: [("buy", {})]})
        cerebro.addsizer(MarginSizer)
        b = btperp.install(cerebro, exchange="binance-coinm", cash=cash, leverage=10, tiers=BTC_TIERS)
        cerebro.run()
        assert (b.fills[0].size if b.fills else None) == expected


def test_a_last_price_trigger_liquidates_on_the_usd_low():
    """trigger='last': the same long as above (LP 47,809.52) on a bar whose last low is 47,500 while
    its mark low stays at 48,500: liquidated on the last price, the record keeping both USD extremes
    (mark low 48,500, last low 47,500)."""
    low, mark_low = [50_000, 50_000, 49_000, 47_500, 48_000], [50_000, 50_000, 49_000, 48_500, 48_000]
    f = coinm([50_000, 50_000, 49_000, 48_700, 48_000], low=low, mark_low=mark_low)
    _, b = run_coinm(f, {0: [("buy", {"size": 100})]}, leverage=20, trigger="last")
    (liq,) = b.liquidations
    assert liq.trigger == "last" and liq.trigger_price == pytest.approx(10_040 / 0.21, rel=1e-12)
    assert (liq.mark_price, liq.last_price) == (pytest.approx(48_500), pytest.approx(47_500))
    _, b = run_coinm(f, {0: [("buy", {"size": 100})]}, leverage=20)
    assert b.liquidations == []                 # the mark never got there


def test_the_contract_size_a_dataset_records_is_the_default():
    """A frame whose attrs carry the contract (what btperp fetch records and btperp.load reads:
    ``contract_size`` 10 USD) sizes the contracts, unless a setting says otherwise: 100 contracts
    from 50,000 to 55,000 make 100 × 10 × (1/50,000 − 1/55,000) = 0.00181818… BTC."""
    f = coinm([50_000, 50_000, 55_000, 55_000])
    f.attrs.update(contract_type="inverse", contract_size=10.0, settle="BTC")
    strat, b = run_coinm(f, {0: [("buy", {"size": 100})], 2: [("close", {})]}, leverage=5)
    assert b.books[0].mirror.contract_size == 10
    assert strat.trades[0][0] == pytest.approx(1_000 * (1 / 50_000 - 1 / 55_000), rel=1e-12)
    strat, b = run_coinm(f, {0: [("buy", {"size": 100})]}, leverage=5, contract_size=100)
    assert b.books[0].mirror.contract_size == 100
