"""The pure-core account (btperp.account) without backtrader: a bar's events in order, money to the
cent against arithmetic written out here, and the position arithmetic against backtrader's own."""

import subprocess
import sys
from datetime import datetime, timezone

import pytest
from hypothesis import given, strategies as st

from btperp.account import Account, Holding, Instrument, Leg, Listener
from btperp.intrabar import END
from btperp.liquidation import FillPolicy
from btperp.margin import MarginMode
from btperp.rules import get_rulebook
from btperp.tiers import TierHistory, TierTable

T0 = datetime(2024, 1, 1, tzinfo=timezone.utc).timestamp()
HOUR = 3600.0


def instrument(leverage=10.0, mode="isolated", mmr=0.004):
    return Instrument(symbol="BTC/USDT:USDT", rulebook=get_rulebook("binance-usdm"),
                      tiers=TierHistory.constant(TierTable.single(mmr, 0.0, 125)), leverage=leverage,
                      margin_mode=MarginMode.parse(mode), maker_fee=0.0002, taker_fee=0.0005,
                      liquidation_fee=0.0125, fill_policy=FillPolicy.BANKRUPTCY, lot_size=None,
                      trigger="mark", mark_fallback=None)


def bar(account, leg, key, o, h, l, c, funding_rate=None):
    """Give ``leg`` a bar (mark = trigger series) and, optionally, one funding event at its open."""
    def read(leg):
        leg.read = True
        leg.mark_open, leg.mark_close = o, c
        leg.t_open, leg.t_high, leg.t_low, leg.t_close = o, h, l, c
    leg.reader = read
    # (per unit, part at the open, rate): Binance "Introduction to Binance Futures Funding
    # Rates": a long pays position × mark × rate
    leg.funding = (lambda leg: None) if funding_rate is None else (
        lambda leg: (funding_rate * o, funding_rate * o, funding_rate))
    account.new_bar(leg, key)


class Recorder(Listener):
    def __init__(self):
        self.events = []

    def liquidated(self, leg, size, entry, record, closed_value):
        self.events.append(("liquidated", size, entry, closed_value))

    def margin_call(self, leg, event):
        self.events.append(("margin_call", event.level))

    def funded(self, leg, payment):
        self.events.append(("funded", payment.payment))


def test_the_core_account_imports_no_backtrader():
    out = subprocess.run([sys.executable, "-c", "import sys, btperp.account; "
                          "print('backtrader' in sys.modules)"], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "False"


def test_an_isolated_long_bar_by_bar_to_the_cent():
    """Cash 1,000; 10x isolated long 0.04 BTC at 20,000 (MMR 0.4 %, taker 0.05 %); funding at
    the next bar's open; that bar's mark falls through the liquidation price."""
    rec = Recorder()
    account = Account(1000.0, (0.8,), listener=rec)
    leg = account.add(Leg(instrument()))

    bar(account, leg, T0, 20_000, 20_100, 19_900, 20_000)
    account.open_bar()
    fill = account.fill(leg, 0.04, 20_000.0, maker=False, t=0.0, when=None)
    # opening fee 0.04 × 20,000 × 0.0005 = 0.40; initial margin 800 / 10 = 80
    assert fill.opened_fee == pytest.approx(0.40, abs=1e-12)
    assert fill.opened_value == pytest.approx(80.0, abs=1e-12)
    assert account.wallet == pytest.approx(999.60, abs=1e-9)
    assert leg.margin == pytest.approx(80.0, abs=1e-12)
    assert account.available() == pytest.approx(999.60 - 80.0, abs=1e-9)
    account.close_bar()
    # Binance "How to Calculate Liquidation Price" (isolated, one position, cum = 0):
    # LP = (80 − 0.04 × 20,000) / (0.04 × 0.004 − 0.04) = −720 / −0.03984
    assert leg.lp == pytest.approx(720 / 0.03984, abs=1e-6)
    assert not account.liquidations and not rec.events

    bar(account, leg, T0 + HOUR, 19_000, 19_050, 17_000, 17_500, funding_rate=0.0001)
    account.open_bar()
    # funding at the open: 0.04 × 19,000 × 0.0001 = 0.076, from the isolated margin
    assert rec.events == [("funded", pytest.approx(0.076, abs=1e-12))]
    assert leg.margin == pytest.approx(79.924, abs=1e-9)
    assert account.wallet == pytest.approx(999.524, abs=1e-9)
    # the open (19,000) is above the new LP: no gap
    assert not account.liquidations
    lp = (79.924 - 800) / (0.04 * 0.004 - 0.04)                 # 18,074.1968...
    # path: the high (50 away) before the low (2,000 away): 19,000 → 19,050 at 1/3 → 17,000 at
    # 2/3; the LP is reached on the second leg at 1/3 + (19,050 − LP) / 2,050 / 3
    tau = 1 / 3 + (19_050 - lp) / 2_050 / 3
    account.check(tau - 1e-9)                                   # just before: still open
    assert leg.pos.size == pytest.approx(0.04)
    account.check(tau + 1e-9)
    assert leg.pos.size == 0
    (liq,) = account.liquidations
    assert liq.trigger_price == pytest.approx(lp, abs=1e-6) and not liq.at_open
    # taken over at the bankruptcy price 20,000 − 79.924 / 0.04 = 18,001.90: the trader loses the
    # whole margin; the insurance fund gets the equity left at the LP, its maintenance margin
    # 0.004 × 0.04 × LP
    assert liq.fill_price == pytest.approx(18_001.90, abs=1e-9)
    assert liq.pnl == pytest.approx(-79.924, abs=1e-9)
    assert liq.insurance_flow == pytest.approx(0.004 * 0.04 * lp, abs=1e-9)
    assert account.wallet == pytest.approx(1000 - 0.40 - 0.076 - 79.924, abs=1e-9)     # 919.60
    assert leg.margin == 0.0
    assert rec.events[-1] == ("liquidated", pytest.approx(0.04), 20_000.0, pytest.approx(80.0))
    account.close_bar()                                         # nothing left to do in the bar
    assert len(account.liquidations) == 1
    # the journal in the bar's causal order: the margin ratio crosses 0.8 on the way down to the
    # LP, so the margin call comes before the liquidation
    assert [type(r).__name__ for r in account.journal] == [
        "Fill", "FundingPayment", "MarginCall", "Liquidation"]
    assert account.insurance_fund == pytest.approx(0.004 * 0.04 * lp, abs=1e-9)


def test_a_position_opened_inside_a_bar_is_checked_from_its_fill_on():
    """The bar opens at 17,000 (below where a 10x long at 20,000 is liquidated), rises to 20,100;
    a long filled at 20,000 at t = 0.9 never saw the 17,000."""
    account = Account(1000.0)
    leg = account.add(Leg(instrument()))
    bar(account, leg, T0, 17_000, 20_100, 16_900, 20_050)
    account.open_bar()
    account.check(0.9)
    account.fill(leg, 0.04, 20_000.0, maker=False, t=0.9, when=None)
    account.close_bar()
    assert not account.liquidations and leg.pos.size == pytest.approx(0.04)


def test_a_reversal_closes_with_its_pnl_and_opens_at_the_fill():
    """Short 1 at 3,000 (10x isolated), then buy 2 at 2,800: close 1 (+200, fee 1.40, margin 300
    back), open 1 long (fee 1.40, margin 280)."""
    account = Account(10_000.0)
    leg = account.add(Leg(instrument(mmr=0.005)))
    bar(account, leg, T0, 3_000, 3_010, 2_990, 3_000)
    account.fill(leg, -1.0, 3_000.0, maker=False, t=0.0, when=None)        # fee 1.50, margin 300
    r = account.fill(leg, 2.0, 2_800.0, maker=False, t=0.5, when=None)
    assert (r.closed, r.opened) == (1.0, 1.0)
    assert r.pnl == pytest.approx(200.0) and r.closed_fee == pytest.approx(1.40)
    assert r.closed_value == pytest.approx(300.0) and r.opened_value == pytest.approx(280.0)
    assert account.wallet == pytest.approx(10_000 - 1.50 + 200 - 1.40 - 1.40, abs=1e-9)
    assert leg.margin == pytest.approx(280.0)
    assert (leg.pos.size, leg.pos.price) == (1.0, 2_800.0)
    assert [(f.trade_id, f.side, f.size) for f in account.fills] == [
        (1, "short", -1.0), (1, "short", 1.0), (2, "long", 1.0)]


def test_an_isolated_close_beyond_bankruptcy_loses_only_the_margin():
    """10x long 1 at 3,000 (margin 300) closed at 2,000: −1,000 at the price, but an isolated
    position loses its margin and no more; the insurance fund covers 1,000 + fee 1.00 − 300."""
    account = Account(1_000.0)
    leg = account.add(Leg(instrument()))
    bar(account, leg, T0, 3_000, 3_000, 3_000, 3_000)
    account.fill(leg, 1.0, 3_000.0, maker=False, t=0.0, when=None)        # fee 1.50
    account.fill(leg, -1.0, 2_000.0, maker=False, t=0.5, when=None)
    close = account.fills[-1]
    assert close.insurance_flow == pytest.approx(-(1_000 + 1.00 - 300), abs=1e-9)
    assert account.wallet == pytest.approx(1_000 - 1.50 - 300, abs=1e-9)


def test_cross_funding_comes_from_the_wallet_and_moves_the_available_balance():
    account = Account(5_000.0)
    leg = account.add(Leg(instrument(leverage=5, mode="cross")))
    bar(account, leg, T0, 30_000, 30_000, 30_000, 30_000)
    account.fill(leg, -0.5, 30_000.0, maker=True, t=0.0, when=None)       # maker fee 3.00
    leg.valprice = 30_000.0
    bar(account, leg, T0 + 8 * HOUR, 30_000, 30_000, 30_000, 30_000, funding_rate=0.0003)
    account.open_bar()
    # a short receives 0.5 × 30,000 × 0.0003 = 4.50
    assert account.funding_payments[0].payment == pytest.approx(-4.50)
    assert account.wallet == pytest.approx(5_000 - 3.00 + 4.50)
    # available = cross wallet − initial margin at the mark (15,000 / 5)
    assert account.available() == pytest.approx(5_001.50 - 3_000)


@given(st.lists(st.tuples(st.floats(-5, 5).filter(lambda x: abs(x) > 1e-3),
                          st.floats(1, 1e5)), min_size=1, max_size=12))
def test_holding_updates_as_backtraders_position(steps):
    """The core's position arithmetic (average entry on increases, kept on reductions, the fill
    price on reversals) is backtrader's, step for step."""
    import backtrader as bt
    ours, theirs = Holding(), bt.Position()
    for size, price in steps:
        ours.update(size, price)
        theirs.update(size, price)
        assert ours.size == theirs.size
        assert ours.price == theirs.price


def test_the_bar_end_check_is_the_whole_bar():
    """check(END) on a position held from the open compares the whole bar's adverse extreme."""
    account = Account(1000.0)
    leg = account.add(Leg(instrument()))
    bar(account, leg, T0, 20_000, 20_000, 20_000, 20_000)
    account.fill(leg, 0.04, 20_000.0, maker=False, t=0.0, when=None)
    bar(account, leg, T0 + HOUR, 19_000, 19_500, 18_080, 19_400)          # low above the LP
    account.open_bar()
    account.check(END, final=True)
    assert not account.liquidations
