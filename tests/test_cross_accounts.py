"""Cross-margin accounts with two and three positions through the PerpBroker, every number worked
out by hand in the test from Binance's formulas:

* maintenance margin = notional × MMR − cum, the tier of the notional at the price
  ("Leverage and Margin of USDⓈ-M Futures"; cum_n = cum_(n−1) + floor_n × (MMR_n − MMR_(n−1)));
* liquidation price LP = [WB − TMM1 + UPNL1 + cum − side·pos·EP] / [pos·MMR − side·pos]
  ("How to Calculate Liquidation Price of USDⓈ-M Futures Contracts"), where in the broker the
  other positions (TMM1, UPNL1) are held at their adverse extremes of the bar (README step 5);
* available balance = wallet + unrealized PnL − initial margin at the mark (Binance "available
  balance");
* a cross liquidation gives each position the share MM_i / ΣMM of the account's margin balance at
  the trigger prices (``btperp.liquidation.settle_group``): bankruptcy fill
  P_b = entry − side × share_balance / size, or the trigger price less the liquidation fee.

The positions are opened one bar before the bars that are checked, and the liquidating bar is a
*mark wick*: the mark closes where it opened, so only the adverse extreme liquidates.
"""

import math

import pytest
from perpkit import Script, make_frame, table

#: Three tiers: 1 % up to 1,000 (50x), 2.5 % up to 5,000 (20x, cum 1,000 × 1.5 % = 15),
#: 5 % above (10x, cum 15 + 5,000 × 2.5 % = 140).
TIERS = table((0, 1_000, 0.01, 50), (1_000, 5_000, 0.025, 20), (5_000, math.inf, 0.05, 10))
INF = float("inf")


class Recorder(Script):
    """Sends the plan's orders and records, after each bar, the broker's cash and value."""

    params = (("entries", None),)

    def __init__(self):
        super().__init__()
        self.cash, self.value = [], []

    def next(self):
        self.cash.append(self.broker.getcash())
        self.value.append(self.broker.getvalue())
        if len(self) == 1:
            for i, (method, size) in enumerate(self.p.entries):
                getattr(self, method)(data=self.datas[i], size=size)


def run_entries(frames, entries, **broker):
    """Entries sent at bar 0 fill at bar 1's open (the last-price open)."""
    import backtrader as bt

    import btperp
    from perpkit import feed
    cerebro = bt.Cerebro(stdstats=False)
    for f in frames:
        cerebro.adddata(feed(f))
    cerebro.addstrategy(Recorder, entries=entries)
    broker.setdefault("tiers", TIERS)
    b = btperp.install(cerebro, **broker)
    return cerebro.run()[0], b


def flat_marks(n, level, *, close=None, low=None, high=None):
    """Mark lines: open at ``level`` every bar, close ``close`` (a dict of bar → price), and the
    given wicks; the last price stays at ``level`` (so orders fill at ``level``)."""
    mark_open = [level] * n
    mark_close = [level] * n
    for i, p in (close or {}).items():
        mark_close[i] = p
    mark_high = [max(o, c) for o, c in zip(mark_open, mark_close)]
    mark_low = [min(o, c) for o, c in zip(mark_open, mark_close)]
    for i, p in (low or {}).items():
        mark_low[i] = p
    for i, p in (high or {}).items():
        mark_high[i] = p
    return dict(mark_open=mark_open, mark_close=mark_close, mark_high=mark_high, mark_low=mark_low)


def by_symbol(broker):
    return {r.symbol[:3]: r for r in broker.liquidations}


# --- two positions: a long wicks through its liquidation price ---------------------------------

def two_positions(**options):
    n = 6
    a = make_frame([100.0] * n, symbol="AAA/USDT:USDT", **flat_marks(n, 100.0, close={2: 104.0},
                                                                      low={3: 50.0}))
    b = make_frame([100.0] * n, symbol="BBB/USDT:USDT", **flat_marks(n, 100.0, close={2: 98.0}))
    return run_entries([a, b], [("buy", 20.0), ("sell", 5.0)], cash=1000, leverage=10,
                       margin_mode="cross", taker_fee=0.0, **options)


def test_two_positions_available_balance_uses_the_mark_for_initial_margin():
    strat, broker = two_positions()
    # bar 1: both filled at 100, marks close at 100: 1000 − (20 × 100 / 10 + 5 × 100 / 10)
    assert strat.cash[1] == pytest.approx(1000 - (200 + 50), abs=1e-9)
    # bar 2: marks close at 104 (AAA) and 98 (BBB)
    upnl = 20 * (104 - 100) + (-5) * (98 - 100)                          # 80 + 10
    initial_at_mark = 20 * 104 / 10 + 5 * 98 / 10                        # 208 + 49
    assert strat.cash[2] == pytest.approx(1000 + upnl - initial_at_mark, abs=1e-9)   # 833
    assert strat.value[2] == pytest.approx(1000 + upnl, abs=1e-9)                    # 1090


def test_two_positions_a_mark_wick_liquidates_the_account():
    strat, broker = two_positions()
    assert len(broker.liquidations) == 2
    aaa, bbb = by_symbol(broker)["AAA"], by_symbol(broker)["BBB"]
    assert aaa.time == bbb.time and aaa.time.hour == 3           # the wick bar, closing at 100
    # AAA's liquidation price with BBB at its adverse extreme (100: upnl 0, MM 5 × 100 × 1 % = 5):
    # WB − TMM1 + UPNL1 = 1000 − 5 + 0; tier 2 at LP (20 × LP between 1,000 and 5,000):
    # LP = [995 + 15 − 20 × 100] / [20 × 0.025 − 20] = 990 / 19.5
    lp_a = (995 + 15 - 20 * 100) / (20 * 0.025 - 20)
    assert lp_a == pytest.approx(50.769230769, rel=1e-9)
    assert 1_000 <= 20 * lp_a < 5_000
    assert aaa.liquidation_price == pytest.approx(lp_a, rel=1e-12)
    assert aaa.trigger_price == pytest.approx(lp_a, rel=1e-12)       # the wick (50) went past it
    assert not aaa.at_open and aaa.mark_price == 50.0
    # BBB's liquidation price with AAA at its wick (50): upnl −1000, MM 1000 × 2.5 % − 15 = 10
    # (a notional of exactly 1,000 is tier 2): [1000 − 10 − 1000 + 0 + 5 × 100] / [5 × 0.01 + 5]
    lp_b = (1000 - 10 - 1000 + 0 + 5 * 100) / (5 * 0.01 + 5)
    assert bbb.liquidation_price == pytest.approx(lp_b, rel=1e-12)   # 97.03: below the bar's range
    assert bbb.trigger_price == 100.0                                # so it closes at its open
    # the account at the trigger prices: equity = ΣMM (AAA's LP was solved for exactly that)
    upnl_a = 20 * (lp_a - 100)
    mm_a = 20 * lp_a * 0.025 - 15
    mm_b = 5 * 100 * 0.01
    equity = 1000 + upnl_a + 0.0
    assert equity == pytest.approx(mm_a + mm_b, rel=1e-12)
    assert aaa.equity == pytest.approx(equity, rel=1e-12) and aaa.maintenance_margin == pytest.approx(
        mm_a + mm_b, rel=1e-12)
    assert aaa.tier == 2 and aaa.maintenance_rate == 0.025 and bbb.tier == 1
    # shares by maintenance margin: AAA gets mm_a of the equity, BBB mm_b
    share_a, share_b = mm_a / (mm_a + mm_b) * equity, mm_b / (mm_a + mm_b) * equity
    balance_a, balance_b = share_a - upnl_a, share_b - 0.0          # the margin behind each
    assert balance_a == pytest.approx(995.0, rel=1e-12) and balance_b == pytest.approx(5.0, rel=1e-12)
    # bankruptcy fills: entry − side × balance / size
    assert aaa.fill_price == pytest.approx(100 - 995 / 20, rel=1e-12)          # 50.25
    assert bbb.fill_price == pytest.approx(100 + 5 / 5, rel=1e-12)             # 101
    assert aaa.bankruptcy_price == pytest.approx(50.25, rel=1e-12)
    assert aaa.loss == pytest.approx(995.0, rel=1e-12) and bbb.loss == pytest.approx(5.0, rel=1e-12)
    assert aaa.pnl == pytest.approx(20 * (50.25 - 100), rel=1e-12)
    assert bbb.pnl == pytest.approx(-5 * (101 - 100), rel=1e-12)
    # what the trigger prices left goes to the insurance fund: each share's maintenance margin
    assert aaa.insurance_flow == pytest.approx(mm_a, rel=1e-9)                 # 10.3846
    assert bbb.insurance_flow == pytest.approx(mm_b, rel=1e-9)                 # 5
    assert broker.insurance_fund == pytest.approx(equity, rel=1e-9)
    assert aaa.fee == 0 and bbb.fee == 0
    assert broker.getvalue() == pytest.approx(0.0, abs=1e-9)
    assert strat.cash[-1] == pytest.approx(0.0, abs=1e-9) and broker.wallet_balance == pytest.approx(
        0.0, abs=1e-9)


def test_two_positions_without_the_wick_are_not_liquidated():
    n = 6
    a = make_frame([100.0] * n, symbol="AAA/USDT:USDT", **flat_marks(n, 100.0, low={3: 50.9}))
    b = make_frame([100.0] * n, symbol="BBB/USDT:USDT", **flat_marks(n, 100.0))
    _, broker = run_entries([a, b], [("buy", 20.0), ("sell", 5.0)], cash=1000, leverage=10,
                            margin_mode="cross", taker_fee=0.0)
    # 50.9 is above the 50.77 worked out above: the account survives, with a margin call (ratio
    # at the wick: (20 × 50.9 × 2.5 % − 15 + 5) / (1000 + 20 × (50.9 − 100)) = 15.45 / 18 = 0.858)
    assert broker.liquidations == []
    (call,) = broker.margin_calls
    assert call.margin_ratio == pytest.approx((20 * 50.9 * 0.025 - 15 + 5) / (1000 + 20 * (50.9 - 100)))
    assert call.time.hour == 3


# --- three positions, fees, the fee policy: a short wicks up ----------------------------------------

def three_positions(**options):
    n = 6
    a = make_frame([100.0] * n, symbol="AAA/USDT:USDT", **flat_marks(n, 100.0, close={2: 102.0}))
    b = make_frame([50.0] * n, symbol="BBB/USDT:USDT", **flat_marks(n, 50.0, close={2: 49.0},
                                                                     high={3: 120.0}))
    c = make_frame([200.0] * n, symbol="CCC/USDT:USDT", **flat_marks(n, 200.0, close={2: 205.0}))
    return run_entries([a, b, c], [("buy", 10.0), ("sell", 30.0), ("buy", 4.0)], cash=2000,
                       leverage=5, margin_mode="cross", taker_fee=0.0005, **options)


FEES_AT_ENTRY = (10 * 100 + 30 * 50 + 4 * 200) * 0.0005                 # 1.65
WALLET = 2000 - FEES_AT_ENTRY


def test_three_positions_fees_and_available_balance():
    strat, broker = three_positions(fill_policy="fee", liquidation_fee=0.0125)
    assert broker.trading_fees == pytest.approx(FEES_AT_ENTRY, rel=1e-12)
    # bar 1: marks at the entries: wallet − initial margin (200 + 300 + 160)
    assert strat.cash[1] == pytest.approx(WALLET - (10 * 100 / 5 + 30 * 50 / 5 + 4 * 200 / 5), abs=1e-9)
    # bar 2: marks close at 102, 49, 205
    upnl = 10 * (102 - 100) - 30 * (49 - 50) + 4 * (205 - 200)            # 20 + 30 + 20
    initial_at_mark = 10 * 102 / 5 + 30 * 49 / 5 + 4 * 205 / 5            # 204 + 294 + 164
    assert strat.cash[2] == pytest.approx(WALLET + upnl - initial_at_mark, abs=1e-9)   # 1406.35
    assert strat.value[2] == pytest.approx(WALLET + upnl, abs=1e-9)


def test_three_positions_a_short_wick_liquidates_with_the_fee_policy():
    strat, broker = three_positions(fill_policy="fee", liquidation_fee=0.0125)
    x = by_symbol(broker)
    assert sorted(x) == ["AAA", "BBB", "CCC"] and len({r.time for r in broker.liquidations}) == 1
    # the others at their adverse extremes (their entries): AAA MM 1000 × 2.5 % − 15 = 10 (tier 2),
    # CCC MM 800 × 1 % = 8 (tier 1), no unrealized PnL. BBB (short 30 at 50), tier 2 at LP:
    # LP = [WB − 18 + 0 + 15 + 30 × 50] / [30 × 0.025 + 30]
    lp_b = (WALLET - 18 + 15 + 30 * 50) / (30 * 0.025 + 30)
    assert lp_b == pytest.approx(113.66991869918, rel=1e-10) and 1_000 <= 30 * lp_b < 5_000
    assert x["BBB"].trigger_price == pytest.approx(lp_b, rel=1e-12)
    assert x["BBB"].liquidation_price == pytest.approx(lp_b, rel=1e-12)
    assert x["BBB"].mark_price == 120.0 and x["BBB"].tier == 2
    # AAA's liquidation price with BBB at its wick (120: upnl −2100, MM 3,600 × 2.5 % − 15 = 75) and
    # CCC at 200 (MM 8): WB − 83 − 2100, tier 2: [WB − 2183 + 15 − 10 × 100] / [10 × 0.025 − 10]
    lp_a = (WALLET - 2183 + 15 - 10 * 100) / (10 * 0.025 - 10)
    assert x["AAA"].liquidation_price == pytest.approx(lp_a, rel=1e-12)      # 119.96: above its bar
    assert x["AAA"].trigger_price == 100.0 and x["CCC"].trigger_price == 200.0
    # the account at the trigger prices
    mm = {"AAA": 10 * 100 * 0.025 - 15, "BBB": 30 * lp_b * 0.025 - 15, "CCC": 4 * 200 * 0.01}
    equity = WALLET - 30 * (lp_b - 50)
    assert equity == pytest.approx(sum(mm.values()), rel=1e-12)                 # 88.25
    for r in broker.liquidations:
        assert r.equity == pytest.approx(equity, rel=1e-12)
        assert r.maintenance_margin == pytest.approx(sum(mm.values()), rel=1e-12)
    # fee policy: each closes at its trigger; the fee (1.25 % of the notional there) is capped at
    # the share of the equity (= its MM here), the rest stays with the trader
    notional = {"AAA": 10 * 100, "BBB": 30 * lp_b, "CCC": 4 * 200}
    fee = {k: min(0.0125 * notional[k], equity * mm[k] / sum(mm.values())) for k in mm}
    assert fee["AAA"] == pytest.approx(10.0) and fee["CCC"] == pytest.approx(8.0)   # capped
    assert fee["BBB"] == pytest.approx(0.0125 * 30 * lp_b)                         # 42.63
    for k, r in x.items():
        assert r.fill_price == pytest.approx(r.trigger_price, rel=1e-12)
        assert r.fee == pytest.approx(fee[k], rel=1e-9)
        assert r.insurance_flow == pytest.approx(fee[k], rel=1e-9)
    assert x["BBB"].pnl == pytest.approx(-30 * (lp_b - 50), rel=1e-12)
    assert x["BBB"].loss == pytest.approx(30 * (lp_b - 50) + fee["BBB"], rel=1e-12)
    kept = mm["BBB"] - fee["BBB"]                                                   # 27.62
    assert broker.wallet_balance == pytest.approx(kept, rel=1e-9)
    assert broker.getvalue() == pytest.approx(kept, rel=1e-9) and strat.cash[-1] == pytest.approx(kept,
                                                                                                rel=1e-9)
    assert broker.insurance_fund == pytest.approx(sum(fee.values()), rel=1e-9)


def test_three_positions_bankruptcy_policy_splits_the_loss_by_maintenance_margin():
    _, broker = three_positions()
    x = by_symbol(broker)
    lp_b = (WALLET - 18 + 15 + 30 * 50) / (30 * 0.025 + 30)
    mm = {"AAA": 10.0, "BBB": 30 * lp_b * 0.025 - 15, "CCC": 8.0}
    upnl = {"AAA": 0.0, "BBB": -30 * (lp_b - 50), "CCC": 0.0}
    equity = WALLET + upnl["BBB"]
    side = {"AAA": 1, "BBB": -1, "CCC": 1}
    size = {"AAA": 10.0, "BBB": 30.0, "CCC": 4.0}
    entry = {"AAA": 100.0, "BBB": 50.0, "CCC": 200.0}
    for k, r in x.items():
        balance = mm[k] / sum(mm.values()) * equity - upnl[k]       # the margin behind the position
        assert r.fill_price == pytest.approx(entry[k] - side[k] * balance / size[k], rel=1e-12)
        assert r.loss == pytest.approx(balance, rel=1e-9)
        assert r.insurance_flow == pytest.approx(mm[k], rel=1e-9)
    # AAA: 10 / 88.25 of the equity: loses 10 and is taken over at 100 − 10 / 10 = 99
    assert x["AAA"].fill_price == pytest.approx(99.0, rel=1e-12)
    assert x["CCC"].fill_price == pytest.approx(200 - 8 / 4, rel=1e-12)
    assert broker.getvalue() == pytest.approx(0.0, abs=1e-9)
    assert broker.insurance_fund == pytest.approx(equity, rel=1e-9)


# --- the account of examples/account.json, held in the broker --------------------------------------

def test_the_example_account_in_the_broker():
    """examples/account.json (BTC long 0.5 at 60,000, 20x; ETH short 4 at 3,000, 10x; wallet
    10,000) as two feeds, Binance's bundled 2024-05-30 tables (tier 1: 0.4 % for both)."""
    n = 4
    btc = make_frame([60_000.0] * n, symbol="BTC/USDT:USDT", start="2024-07-01",
                     **flat_marks(n, 60_000.0, close={2: 59_000.0, 3: 59_000.0}))
    eth = make_frame([3_000.0] * n, symbol="ETH/USDT:USDT", start="2024-07-01",
                     **flat_marks(n, 3_000.0, close={2: 3_100.0, 3: 3_100.0}))

    class Hold(Recorder):
        def stop(self):
            self.states = [self.broker.get_margin_state(d) for d in self.datas]

    import backtrader as bt

    import btperp
    from perpkit import feed
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(feed(btc))
    cerebro.adddata(feed(eth))
    cerebro.addstrategy(Hold, entries=[("buy", 0.5), ("sell", 4.0)])
    broker = btperp.install(cerebro, cash=10_000, margin_mode="cross", taker_fee=0.0,
                            per_data={"BTC/USDT:USDT": {"leverage": 20}, "ETH/USDT:USDT": {"leverage": 10}})
    strat = cerebro.run()[0]
    btc_state, eth_state = strat.states
    # BTC: [WB − TMM1 + UPNL1 − side·pos·EP] / [pos·MMR − side·pos], ETH's MM 4 × 3100 × 0.4 % = 49.6,
    # its upnl −4 × 100 = −400
    assert btc_state.liquidation_price == pytest.approx((10_000 - 49.6 - 400 - 0.5 * 60_000)
                                                        / (0.5 * 0.004 - 0.5), rel=1e-12)   # 41,063.45
    # ETH: BTC's MM 0.5 × 59,000 × 0.4 % = 118, its upnl 0.5 × (59,000 − 60,000) = −500
    assert eth_state.liquidation_price == pytest.approx((10_000 - 118 - 500 + 4 * 3_000)
                                                        / (4 * 0.004 + 4), rel=1e-12)       # 5,324.20
    # bankruptcy: the wallet plus the other position's PnL exhausted
    assert btc_state.bankruptcy_price == pytest.approx(60_000 - (10_000 - 400) / 0.5, rel=1e-12)  # 40,800
    assert eth_state.bankruptcy_price == pytest.approx(3_000 + (10_000 - 500) / 4, rel=1e-12)     # 5,375
    # available: 10,000 − 900 − (0.5 × 59,000 / 20 + 4 × 3,100 / 10) = 6,385
    assert strat.cash[-1] == pytest.approx(10_000 - 900 - (1_475 + 1_240), abs=1e-9)
    assert broker.getvalue() == pytest.approx(9_100, abs=1e-9)
    assert btc_state.margin_ratio == pytest.approx((118 + 49.6) / 9_100, rel=1e-12)
