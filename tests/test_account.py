"""The pure-core account (btperp.account) without backtrader: a bar's events in order, money to the
cent against arithmetic written out here, and the position arithmetic against backtrader's own."""

import math
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, strategies as st

from btperp.account import (Account, Clock, Fill, FillResult, FundingPayment, Holding, Instrument, Leg,
                            Listener, Liquidation, MarginCall, MarginChange, Rejection)
from btperp.errors import InputError
from btperp.intrabar import END, Intrabar
from btperp.liquidation import FillPolicy, LiquidationMode
from btperp.margin import MarginMode
from btperp.rules import get_rulebook
from btperp.tiers import Tier, TierHistory, TierTable

T0 = datetime(2024, 1, 1, tzinfo=timezone.utc).timestamp()
HOUR = 3600.0


T0_UTC = datetime(2024, 1, 1, tzinfo=timezone.utc)
SYMBOL = "BTC/USDT:USDT"


def instrument(leverage=10.0, mode="isolated", mmr=0.004, table=None, exchange="binance-usdm",
               lot_size=None, symbol=SYMBOL, liquidation_fee=0.0125, liquidation="full"):
    table = table if table is not None else TierTable.single(mmr, 0.0, 125)
    return Instrument(symbol=symbol, rulebook=get_rulebook(exchange, inverse=True),
                      tiers=TierHistory.constant(table), leverage=leverage,
                      margin_mode=MarginMode.parse(mode), maker_fee=0.0002, taker_fee=0.0005,
                      liquidation_fee=liquidation_fee, fill_policy=FillPolicy.BANKRUPTCY,
                      lot_size=lot_size, trigger="mark", mark_fallback=None,
                      liquidation=LiquidationMode(liquidation))


def two_tiers():
    """Tier 1: notional [0, 50,000), MMR 0.4 %, up to 20x; tier 2: from 50,000, MMR 1 %, up to 10x
    (cum = 50,000 × (0.01 − 0.004) = 300)."""
    return TierTable([Tier(1, 0.0, 50_000.0, 0.004, 20.0, 0.0),
                      Tier(2, 50_000.0, float("inf"), 0.01, 10.0, 300.0)])


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


def open_at(account, leg, size, price):
    """``leg`` fills ``size`` at ``price`` (taker) in a flat first bar at ``T0``."""
    bar(account, leg, T0, price, price, price, price)
    account.fill(leg, size, price, maker=False, t=0.0, when=None)


def run_bar(account, leg, key, o, h, l, c, funding_rate=None):
    """One whole bar of ``leg`` alone: its open, then its end (liquidations, margin calls)."""
    bar(account, leg, key, o, h, l, c, funding_rate)
    account.open_bar()
    account.close_bar()


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
    open_at(account, leg, 0.04, 20_000.0)
    bar(account, leg, T0 + HOUR, 19_000, 19_500, 18_080, 19_400)          # low above the LP
    account.open_bar()
    account.check(END, final=True)
    assert not account.liquidations


# --- margin the trader moves (add_margin) ---------------------------------------------------

def isolated_long_at_1000(cash=1_000.0):
    """10x isolated long 1 at 1,000 (initial margin 1,000 / 10 = 100, taker fee 0.50)."""
    account = Account(cash)
    leg = account.add(Leg(instrument()))
    open_at(account, leg, 1.0, 1_000.0)
    return account, leg


def test_adding_margin_moves_it_from_the_available_balance_and_records_it():
    """Add 50 then take 50 back to exactly the initial margin 100: the wallet (999.50) does not
    move, the available balance does, and each move is a MarginChange record at the bar's time.
    Binance isolated LP = (margin − size × entry) / (size × MMR − size): with margin 150,
    (150 − 1,000) / (0.004 − 1) = 853.4136...; back at 100: 903.6144..."""
    account, leg = isolated_long_at_1000()
    assert account.available() == pytest.approx(999.50 - 100.0, abs=1e-9)
    assert account.add_margin(leg, 50.0, account.available()) == 150.0
    assert leg.margin == 150.0
    assert account.wallet == pytest.approx(999.50, abs=1e-12)
    assert account.available() == pytest.approx(999.50 - 150.0, abs=1e-9)
    lp, bp = account.cached_prices(leg)
    assert lp == pytest.approx((150 - 1_000) / (0.004 - 1), abs=1e-9)
    assert bp == pytest.approx(1_000 - 150, abs=1e-9)               # entry − margin / size
    # back down to exactly the initial margin: allowed
    assert account.add_margin(leg, -50.0, account.available()) == 100.0
    assert account.cached_prices(leg)[0] == pytest.approx((100 - 1_000) / (0.004 - 1), abs=1e-9)
    assert account.margin_changes == [MarginChange(T0_UTC, SYMBOL, 1, 50.0, 150.0),
                                      MarginChange(T0_UTC, SYMBOL, 1, -50.0, 100.0)]
    assert account.journal[-2:] == account.margin_changes
    assert account.margin_changes[0].to_dict() == {"time": T0_UTC, "symbol": SYMBOL, "trade_id": 1,
                                                   "amount": 50.0, "margin": 150.0}
    assert type(account.margin_changes[0].amount) is float


def refusal(call) -> InputError:
    with pytest.raises(InputError) as exc:
        call()
    return exc.value


def test_margin_moves_are_refused_with_what_is_wrong():
    account, leg = isolated_long_at_1000()
    cross_account = Account(1_000.0)
    cross = cross_account.add(Leg(instrument(mode="cross")))
    open_at(cross_account, cross, 1.0, 1_000.0)
    err = refusal(lambda: cross_account.add_margin(cross, 10.0, 500.0))
    assert str(err) == f"margin_mode: {SYMBOL} is in cross margin: its margin is the cross wallet"
    assert err.field == "margin_mode"

    flat_account = Account(1_000.0)
    flat = flat_account.add(Leg(instrument()))
    bar(flat_account, flat, T0, 1_000, 1_000, 1_000, 1_000)
    err = refusal(lambda: flat_account.add_margin(flat, 10.0, 500.0))
    assert str(err) == f"data: {SYMBOL} has no open position" and err.field == "data"

    for bad, shown in ((float("nan"), "nan"), (float("inf"), "inf"), (-float("inf"), "-inf")):
        err = refusal(lambda: account.add_margin(leg, bad, 500.0))
        assert str(err) == f"amount: amount must be a finite number, got {shown}"
        assert err.field == "amount"

    err = refusal(lambda: account.add_margin(leg, 1_234.5, 1_000.25))
    assert str(err) == "amount: amount 1,234.50 exceeds the available balance 1,000.25"
    assert err.field == "amount"

    account.add_margin(leg, 30.0, 500.0)                            # 130
    # removing 60 would leave 130 − 60 = 70, below the initial margin 1 × 1,000 / 10 = 100
    err = refusal(lambda: account.add_margin(leg, -60.0, 500.0))
    assert str(err) == "amount: removing 60.00 would leave 70.00, below the initial margin 100.00"
    assert err.field == "amount"
    assert leg.margin == 130.0 and len(account.margin_changes) == 1
    assert not cross_account.margin_changes and not flat_account.margin_changes


def test_adding_margin_allows_the_whole_available_balance_and_no_more():
    """The check allows float dust (1e-9) above the available balance, nothing more."""
    account, leg = isolated_long_at_1000()
    assert account.add_margin(leg, 500.0, 500.0) == 600.0                        # all of it
    assert account.add_margin(leg, 500.0 + 1e-9, 500.0) == pytest.approx(1_100.0)   # dust over
    err = refusal(lambda: account.add_margin(leg, 500.5, 500.0))
    assert str(err) == "amount: amount 500.50 exceeds the available balance 500.00"
    assert leg.margin == pytest.approx(1_100.0)


def test_withdrawing_margin_stops_at_the_initial_margin():
    """Margin 150 (initial margin 100): leaving exactly 100 − 1e-9 (float dust) is allowed,
    leaving 99.50 is not."""
    account, leg = isolated_long_at_1000()
    account.add_margin(leg, 50.0, 800.0)
    dust = (100.0 - 1e-9) - 150.0
    assert 150.0 + dust == 100.0 - 1e-9                     # the check sees exactly floor − 1e-9
    assert account.add_margin(leg, dust, 800.0) == 100.0 - 1e-9
    account.add_margin(leg, 50.0 + 1e-9, 800.0)                      # 150 again
    err = refusal(lambda: account.add_margin(leg, -50.5, 800.0))
    assert str(err) == "amount: removing 50.50 would leave 99.50, below the initial margin 100.00"


def test_margin_eaten_by_funding_can_be_topped_up_even_below_the_initial_margin():
    """Funding of 10 (1 × per unit 10) comes out of the isolated margin: 100 → 90, below the
    initial margin 100. Adding 0.50 (or nothing) is still allowed: only withdrawals stop at it."""
    account, leg = isolated_long_at_1000()
    assert account.pay_funding(leg, 10.0, 0.01) == 10.0
    assert leg.margin == 90.0
    assert account.add_margin(leg, 0.5, 800.0) == 90.5
    assert account.add_margin(leg, 0.0, 800.0) == 90.5
    assert [c.amount for c in account.margin_changes] == [0.5, 0.0]
    err = refusal(lambda: account.add_margin(leg, -0.25, 800.0))
    assert str(err) == "amount: removing 0.25 would leave 90.25, below the initial margin 100.00"


# --- cash deposited mid-run --------------------------------------------------------------------

def test_a_deposit_moves_a_cross_positions_liquidation_price():
    """Cross long 1 at 20,000 (10x, fee 10): cross wallet 2,990, Binance cross LP (one position,
    cum 0) = (wallet − size × entry) / (size × MMR − size) = (2,990 − 20,000) / (0.004 − 1).
    A deposit of 1,000 makes it (3,990 − 20,000) / −0.996; then funding of 2 (long pays
    1 × per unit 2): (3,988 − 20,000) / −0.996."""
    account = Account(3_000.0)
    leg = account.add(Leg(instrument(mode="cross")))
    open_at(account, leg, 1.0, 20_000.0)
    assert account.cached_prices(leg)[0] == pytest.approx(-17_010 / -0.996, abs=1e-9)
    account.deposit(1_000.0)
    assert account.wallet == pytest.approx(3_990.0, abs=1e-9)
    assert account.deposits == 1_000.0 and account.totals()["deposits"] == 1_000.0
    assert account.cached_prices(leg)[0] == pytest.approx(-16_010 / -0.996, abs=1e-9)
    account.deposit(500.0)
    account.pay_funding(leg, 2.0, 0.0001)
    assert account.wallet == pytest.approx(4_488.0, abs=1e-9)
    assert account.deposits == 1_500.0
    assert account.cached_prices(leg)[0] == pytest.approx(-15_512 / -0.996, abs=1e-9)


# --- the position (Holding), the clock, the bar's extremes ---------------------------------------

def test_holding_starts_flat_at_price_zero_and_keeps_the_fill_time():
    """As backtrader's Position: a new one is size 0 at price 0; closing it whole resets the price
    to 0; ``update`` records the time it is given."""
    h = Holding()
    assert (h.size, h.price, h.datetime) == (0.0, 0.0, None)
    h.update(2.0, 100.0, dt="bar 1")
    assert (h.size, h.price, h.datetime) == (2.0, 100.0, "bar 1")
    h.update(-2.0, 90.0, dt="bar 2")
    assert (h.size, h.price, h.datetime) == (0.0, 0.0, "bar 2")
    short = Holding()
    short.update(-1.0, 50.0)
    short.update(1.0, 40.0)
    assert (short.size, short.price) == (0.0, 0.0)


def test_holding_increase_averages_reduction_keeps_reversal_takes_the_fill():
    """Long 1 at 100 + 3 at 120: entry (100 + 360) / 4 = 115; sell 1: still 115; sell 5: short 2
    at the fill 90. Short 2 at 90 − 2 at 60: (−180 − 120) / −4 = 75. A zero update (a long of 3
    at 0.1) leaves the entry untouched (no 0.1 × 3 / 3 rounding)."""
    h = Holding()
    h.update(1.0, 100.0)
    h.update(3.0, 120.0)
    assert (h.size, h.price) == (4.0, 115.0)
    h.update(-1.0, 200.0)
    assert (h.size, h.price) == (3.0, 115.0)
    h.update(-5.0, 90.0)
    assert (h.size, h.price) == (-2.0, 90.0)
    h.update(-2.0, 60.0)
    assert (h.size, h.price) == (-4.0, 75.0)
    h.update(1.0, 10.0)
    assert (h.size, h.price) == (-3.0, 75.0)
    long = Holding()
    long.update(3.0, 0.1)
    long.update(0.0, 5.0)
    assert (long.size, long.price) == (3.0, 0.1)


def test_the_clock_gives_utc_datetimes():
    """Bar keys are POSIX seconds: 1,704,067,200 is 2024-01-01 00:00 UTC, whatever the local zone."""
    when = Clock.to_datetime(1_704_067_200.0)
    assert when == T0_UTC and when.tzinfo is timezone.utc
    assert Clock.to_key(T0_UTC) == 1_704_067_200.0
    assert Clock.to_datetime(T0 + 90.0) == datetime(2024, 1, 1, 0, 1, 30, tzinfo=timezone.utc)


def test_a_liquidation_records_the_bars_adverse_extreme_of_its_side():
    """A long records the bar's low as its mark and last extremes, a short the bar's high."""
    for size, high, low in ((1.0, 1_010.0, 850.0), (-1.0, 1_150.0, 990.0)):
        account = Account(1_000.0)
        leg = account.add(Leg(instrument()))
        bar(account, leg, T0, 1_000, 1_000, 1_000, 1_000)
        account.fill(leg, size, 1_000.0, maker=False, t=0.0, when=None)
        bar(account, leg, T0 + HOUR, 1_000, high, low, 1_000)
        account.open_bar()
        account.close_bar()
        (liq,) = account.liquidations
        extreme = low if size > 0 else high
        assert (liq.mark_price, liq.last_price) == (extreme, extreme)
        assert liq.side == ("long" if size > 0 else "short")


def test_margin_state_values_a_position_never_marked_at_its_entry():
    """A leg handed a position (no fill in the account: no mark yet) is valued at its entry:
    isolated long 1 at 1,000 with margin 100: MM 0.004 × 1,000 = 4, balance 100, ratio 0.04."""
    account = Account(1_000.0)
    leg = account.add(Leg(instrument(), pos=Holding(1.0, 1_000.0)))
    leg.margin = 100.0
    bar(account, leg, T0, 1_200, 1_200, 1_200, 1_200)
    state = account.margin_state(leg)
    assert state.mark_price == 1_000.0
    assert state.unrealized_pnl == 0.0
    assert state.maintenance_margin == pytest.approx(4.0, abs=1e-12)
    assert state.margin_ratio == pytest.approx(0.04, abs=1e-12)
    leg.valprice = 1_100.0                  # marked: valued there (PnL 100, balance 200)
    assert account.margin_state(leg).margin_ratio == pytest.approx(4.4 / 200, abs=1e-12)
    assert account.margin_state(Leg(instrument())) is None


# --- what can still be opened (max_open_size) -----------------------------------------------------

def open_size_leg(held=0.0, **kw):
    """A 20x leg on :func:`two_tiers`: at 20x a position may reach 50,000 of notional; the sizing
    keeps 1 % under it (49,500) minus what is held on the side being opened."""
    account = Account(100_000.0)
    leg = account.add(Leg(instrument(leverage=20.0, table=two_tiers(), **kw),
                          pos=Holding(held, 1_000.0) if held else None))
    bar(account, leg, T0, 1_000, 1_000, 1_000, 1_000)
    return account, leg


def test_max_open_size_spends_the_available_balance_on_margin_and_fee():
    """At 1,000, 20x, taker 0.05 %: one unit costs 1,000 × (1/20 + 0.0005) = 50.50, so 1,000
    available opens 1,000 / 50.5 = 19.80198... units (under the 49.5-unit cap)."""
    account, leg = open_size_leg()
    for isbuy in (True, False):
        assert account.max_open_size(leg, 1_000.0, isbuy, 1_000.0) == pytest.approx(
            1_000 / 50.5, rel=1e-12)


def test_max_open_size_stays_under_the_tier_cap_less_what_the_side_holds():
    """Cap at 20x: 50,000 × 0.99 = 49,500 of notional, 49.5 units at 1,000, less the units already
    held on the side being opened (buying onto a long of 10: 39.5; selling it: 49.5)."""
    cases = [(0.0, True, 49.5), (0.0, False, 49.5), (10.0, True, 39.5), (10.0, False, 49.5),
             (-10.0, False, 39.5), (-10.0, True, 49.5), (0.5, True, 49.0), (-0.5, False, 49.0),
             (0.5, False, 49.5), (60.0, True, 0.0), (49.5, True, 0.0)]
    for held, isbuy, expected in cases:
        account, leg = open_size_leg(held)
        got = account.max_open_size(leg, 1_000.0, isbuy, 1e9)
        assert got == pytest.approx(expected, abs=1e-9), (held, isbuy)


def test_max_open_size_counts_bybits_fee_to_close_on_each_side():
    """Bybit "Initial Margin (USDT Contract)" adds the fee to close at the bankruptcy price:
    long 1,000 × (1 − 1/20) × 0.0005 = 0.475, short 1,000 × (1 + 1/20) × 0.0005 = 0.525 per unit.
    1,000 available: long 1,000 / (50.5 + 0.475), short 1,000 / (50.5 + 0.525)."""
    account, leg = open_size_leg(exchange="bybit")
    assert account.max_open_size(leg, 1_000.0, True, 1_000.0) == pytest.approx(
        1_000 / 50.975, rel=1e-12)
    assert account.max_open_size(leg, 1_000.0, False, 1_000.0) == pytest.approx(
        1_000 / 51.025, rel=1e-12)


def test_max_open_size_rounds_down_to_the_lot_size():
    """Lot 0.001: 19.80198... units → 19.801; 1,010 available buys exactly 1,010 / 50.5 = 20 units,
    which stay 20 (the 1e-9 guards a quotient like 19,999.999999999996 lots)."""
    account, leg = open_size_leg(lot_size=0.001)
    assert account.max_open_size(leg, 1_000.0, True, 1_000.0) == pytest.approx(19.801, abs=1e-12)
    assert account.max_open_size(leg, 1_000.0, True, 1_010.0) == pytest.approx(20.0, abs=1e-12)
    account, leg = open_size_leg(lot_size=0.5)
    assert account.max_open_size(leg, 1_000.0, True, 1_000.0) == 19.5


# --- records as dictionaries ---------------------------------------------------------------------

def test_records_as_dicts():
    when = T0_UTC
    fill = Fill(when, SYMBOL, 1, "long", 0.5, 1_000.0, 0.25, 0.0, False, 7)
    assert fill.to_dict() == {"time": when, "symbol": SYMBOL, "trade_id": 1, "side": "long",
                              "size": 0.5, "price": 1_000.0, "fee": 0.25, "pnl": 0.0,
                              "maker": False, "order_ref": 7, "insurance_flow": 0.0}
    pay = FundingPayment(when, SYMBOL, -2.0, 0.0001, 0.1, -0.2, 3)
    assert pay.to_dict() == {"time": when, "symbol": SYMBOL, "size": -2.0, "rate": 0.0001,
                             "per_unit": 0.1, "payment": -0.2, "position_id": 3}
    call = MarginCall(when, SYMBOL, 2, 0.8, 0.85, 19_000.0, 18_000.0, data=object())
    assert call.to_dict() == {"time": when, "symbol": SYMBOL, "trade_id": 2, "level": 0.8,
                              "margin_ratio": 0.85, "mark_price": 19_000.0,
                              "liquidation_price": 18_000.0}
    rej = Rejection(None, SYMBOL, 1.0, 1_000.0, "no")
    assert rej.to_dict() == {"time": None, "symbol": SYMBOL, "size": 1.0, "price": 1_000.0,
                             "reason": "no"}
    liq = Liquidation(when, SYMBOL, "long", 1.0, 1_000.0, "mark", -100.0, 903.0, 900.0, 900.0,
                      100.0, 11.25, 0.5, "isolated", "bankruptcy", False, 1)
    d = liq.to_dict()
    assert list(d)[:17] == ["time", "symbol", "side", "size", "entry_price", "trigger", "pnl",
                            "trigger_price", "fill_price", "bankruptcy_price", "loss", "fee",
                            "insurance_flow", "margin_mode", "policy", "at_open", "position_id"]
    assert d["fill_price"] == 900.0 and d["partial"] is False and d["step"] == 1 and len(d) == 29


# --- partial liquidation (Binance: one order down to the tier below) ---------------------------

def test_a_partial_liquidation_step_to_the_cent():
    """10x isolated long 100 at 1,000 on :func:`two_tiers` (tier 2 at 100,000: MMR 1 %, cum 300;
    margin 10,000, fee 50), liquidation fee 0.1 %, lot 0.001, Binance partial rule.
    LP T = (10,000 + 300 − 100,000) / (100 × 0.01 − 100) = 89,700 / 99 = 906.0606...
    The step keeps the largest size under tier 2's floor: 50,000 / T = 55.1839... → 55.183;
    closes 44.817 at T: PnL 44.817 × (T − 1,000) = −4,210.08, fee 0.001 × 44.817 × T = 40.607.
    Equity at T = MM at T = 0.01 × 100 × T − 300 = 606.06; after: 606.06 − 40.607 = 565.45 against
    the remainder's MM 0.004 × 55.183 × T = 199.9996: ratio 0.3537, compliant, it stays open with
    margin 10,000 − 4,210.08 − 40.607 = 5,749.31 (its LP (5,749.31 − 55,183) / (−0.996 × 55.183)
    = 899.4, under the bar's low 900)."""
    rec = Recorder()
    account = Account(20_000.0, listener=rec)
    leg = account.add(Leg(instrument(table=two_tiers(), lot_size=0.001, liquidation_fee=0.001,
                                     liquidation="partial")))
    open_at(account, leg, 100.0, 1_000.0)
    T = 89_700 / 99
    assert account.cached_prices(leg) == (pytest.approx(T, rel=1e-12), pytest.approx(900.0, rel=1e-12))
    run_bar(account, leg, T0 + HOUR, 1_000, 1_000, 900, 950)
    (liq,) = account.liquidations
    pnl, fee = 44.817 * (T - 1_000), 0.001 * 44.817 * T
    mm = 0.01 * 100 * T - 300
    expected = Liquidation(
        datetime(2024, 1, 1, 1, tzinfo=timezone.utc), SYMBOL, "long", pytest.approx(44.817, abs=1e-9),
        1_000.0, "mark", pytest.approx(pnl, abs=1e-6), pytest.approx(T, abs=1e-9),
        pytest.approx(T, abs=1e-9), pytest.approx(900.0, abs=1e-9), pytest.approx(fee - pnl, abs=1e-6),
        pytest.approx(fee, abs=1e-9), pytest.approx(fee, abs=1e-9), "isolated", "bankruptcy", False, 1,
        10.0, pytest.approx(T, abs=1e-9), 2, 0.01, pytest.approx(mm, abs=1e-6),
        pytest.approx(mm, abs=1e-6), 900.0, 900.0, True, 1, pytest.approx(55.183, abs=1e-9),
        pytest.approx(0.004 * 55.183 * T / (mm - fee), rel=1e-9))
    assert liq.to_dict() == expected.to_dict()
    assert (leg.pos.size, leg.pos.price) == (pytest.approx(55.183, abs=1e-9), 1_000.0)
    assert leg.margin == pytest.approx(10_000 + pnl - fee, abs=1e-6)
    assert account.wallet == pytest.approx(20_000 - 50 + pnl - fee, abs=1e-6)
    assert leg.trade_fees == pytest.approx(50 + fee, abs=1e-9)
    assert leg.partial_at == datetime(2024, 1, 1, 1, tzinfo=timezone.utc)
    assert leg.liq_steps == 1 and leg.since == pytest.approx(liq_tau(T), abs=1e-12)
    # the listener is told the size closed (signed), the entry and the margin it held: 4,481.70
    assert ("liquidated", pytest.approx(44.817), 1_000.0, pytest.approx(4_481.7)) in rec.events
    # the remainder's prices are recomputed from its margin: Binance tier 1, cum 0
    lp = (10_000 + pnl - fee - 55.183 * 1_000) / (55.183 * 0.004 - 55.183)
    assert account.cached_prices(leg)[0] == pytest.approx(lp, abs=1e-6)
    assert account.totals() == {
        "deposits": 0.0, "realized_pnl": pytest.approx(pnl, abs=1e-6), "trading_fees": 50.0,
        "liquidation_fees": pytest.approx(fee, abs=1e-9), "funding_paid": 0.0,
        "wallet_balance": pytest.approx(20_000 - 50 + pnl - fee, abs=1e-6),
        "insurance_fund": pytest.approx(fee, abs=1e-9), "liquidations": 1, "partial_liquidations": 1}


def liq_tau(price):
    """Bar time where the path 1,000 → 1,000 (high) → 900 (low) → 950 reaches ``price`` falling:
    the second third, (1,000 − price) / 100 of the way."""
    return 1 / 3 + (1_000 - price) / 100 / 3


@pytest.mark.parametrize("mode", ["isolated", "cross"])
def test_a_partial_step_that_leaves_the_rest_deficient_closes_it_at_bankruptcy(mode):
    """As above with the liquidation fee at 1.25 % (isolated margin 10,000, or a cross wallet of
    10,000 after the fee: the same equity). The step's fee 0.0125 × 44.817 × T = 507.59 leaves
    equity 606.06 − 507.59 = 98.47 against the remainder's MM 0.004 × 55.183 × T = 200.00
    (ratio 2.03): the rest, backed by 10,000 − 4,210.08 − 507.59 = 5,282.33, is taken over at its
    bankruptcy price 1,000 − 5,282.33 / 55.183 = 904.276 in the same event. The trader loses the
    10,000; the insurance fund gets 507.59 + 98.47 = 606.06, the equity at T (what one take-over of
    the whole position would give it). Both records carry the time the path reached T (an
    adapter's leg dates bar time t at t hours after the bar's key)."""
    account = Account(20_000.0 if mode == "isolated" else 10_050.0)
    leg = account.add(DetailLeg(instrument(mode=mode, table=two_tiers(), lot_size=0.001,
                                           liquidation="partial")))
    open_at(account, leg, 100.0, 1_000.0)
    run_bar(account, leg, T0 + HOUR, 1_000, 1_000, 900, 950)
    T = 89_700 / 99
    pnl, fee = 44.817 * (T - 1_000), 0.0125 * 44.817 * T
    mm, mm_rest = 0.01 * 100 * T - 300, 0.004 * 55.183 * T
    balance = 10_000 + pnl - fee
    when = Clock.to_datetime(T0 + HOUR + liq_tau(T) * HOUR)
    step, rest = account.liquidations
    assert abs((step.time - when).total_seconds()) < 1e-3
    assert rest.time == step.time
    when = step.time
    a = pytest.approx
    assert step.to_dict() == Liquidation(
        when, SYMBOL, "long", a(44.817, abs=1e-9), 1_000.0, "mark", a(pnl, abs=1e-6), a(T, abs=1e-9),
        a(T, abs=1e-9), a(900.0, abs=1e-9), a(fee - pnl, abs=1e-6), a(fee, abs=1e-9),
        a(fee, abs=1e-9), mode, "bankruptcy", False, 1, 10.0, a(T, abs=1e-9), 2, 0.01, a(mm, abs=1e-6),
        a(mm, abs=1e-6), 900.0, 900.0, True, 1, a(55.183, abs=1e-9),
        a(mm_rest / (mm - fee), rel=1e-9)).to_dict()
    got = rest.to_dict()
    assert math.isnan(got.pop("margin_ratio"))
    bust = 1_000 - balance / 55.183
    want = Liquidation(
        when, SYMBOL, "long", a(55.183, abs=1e-9), 1_000.0, "mark", a(-balance, abs=1e-6),
        a(T, abs=1e-9), a(bust, abs=1e-9), a(bust, abs=1e-9), a(balance, abs=1e-6), 0.0,
        a(mm - fee, abs=1e-6), mode, "bankruptcy", False, 1, 10.0, a(T, abs=1e-9), 1, 0.004,
        a(mm_rest, abs=1e-6), a(mm - fee, abs=1e-6), 900.0, 900.0, False, 2, 0.0).to_dict()
    del want["margin_ratio"]
    assert got == want
    assert leg.pos.size == 0 and leg.margin == 0.0
    assert account.wallet == pytest.approx(account.deposits + (20_000.0 if mode == "isolated"
                                                                 else 10_050.0) - 50 - 10_000,
                                           abs=1e-6)
    assert account.insurance_fund == pytest.approx(mm, abs=1e-6)
    assert account.totals()["partial_liquidations"] == 1 and account.totals()["liquidations"] == 2
    assert [type(r).__name__ for r in account.journal] == ["Fill", "MarginCall", "Liquidation",
                                                          "Liquidation"]


class SpyHolding(Holding):
    """A Holding that remembers what ``update`` was given (the Leg's position protocol)."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def update(self, size, price, dt=None):
        self.calls.append((size, price, dt))
        super().update(size, price, dt)


class DetailLeg(Leg):
    """An adapter's leg: bar time ``t`` is ``t`` hours after the bar's key, positions are stamped."""

    def time_at(self, t, clock=Clock):
        return clock.to_datetime(self.dt + t * HOUR)

    def stamp(self):
        return ("stamp", self.dt)


class KeepingRecorder(Listener):
    def __init__(self):
        self.liquidated_calls = []
        self.funded_calls = []

    def liquidated(self, leg, size, entry, record, closed_value):
        self.liquidated_calls.append((leg, size, entry, record, closed_value))

    def funded(self, leg, payment):
        self.funded_calls.append((leg, payment))


def test_a_short_is_stepped_down_tier_by_tier_at_the_times_its_path_reaches():
    """10x isolated short 100 at 1,000 on :func:`two_tiers`, liquidation fee 0.1 %, lot 0.001.
    Binance short LP = (margin + cum + size × entry) / (size × MMR + size):
    T1 = (10,000 + 300 + 100,000) / (1 + 100) = 1,092.0792. Bar 1 (1,000 → 1,095) steps it to
    50,000 / T1 = 45.784 (closes 54.216, PnL −54.216 × (T1 − 1,000), fee 0.001 × 54.216 × T1),
    margin 10,000 + PnL − fee = 4,948.63, ratio after 0.2729. Bar 2 (up to 1,300): the remainder
    is back in tier 2 at T2 = (4,948.63 + 300 + 45,784) / (45.784 × 1.01) = 1,103.60; it is stepped
    to 50,000 / T2 = 45.306, again, then closed whole: steps 2, 3 partial, 4 the close."""
    rec = KeepingRecorder()
    account = Account(20_000.0, listener=rec)
    spy = SpyHolding()
    leg = account.add(DetailLeg(instrument(table=two_tiers(), lot_size=0.001, liquidation_fee=0.001,
                                           liquidation="partial"), pos=spy))
    open_at(account, leg, -100.0, 1_000.0)
    T1 = 110_300 / 101
    assert account.cached_prices(leg)[0] == pytest.approx(T1, rel=1e-12)
    run_bar(account, leg, T0 + HOUR, 1_000, 1_095, 1_000, 1_000)
    (step,) = account.liquidations
    pnl, fee = -54.216 * (T1 - 1_000), 0.001 * 54.216 * T1
    # the path 1,000 → 1,000 (low, at 1/3) → 1,095 (high, at 2/3) → 1,000 reaches T1 in its second
    # third; the detail leg dates it (T1 − 1,000) / 95 of that third into the hour
    tau = 1 / 3 + (T1 - 1_000) / 95 / 3
    assert leg.since == pytest.approx(tau, abs=1e-12)
    assert step.time == Clock.to_datetime(T0 + HOUR + leg.since * HOUR)
    assert (step.side, step.size, step.remaining) == ("short", pytest.approx(54.216),
                                                      pytest.approx(45.784))
    assert (step.mark_price, step.last_price) == (1_095.0, 1_095.0)
    assert step.pnl == pytest.approx(pnl, abs=1e-6) and step.fee == pytest.approx(fee, abs=1e-9)
    assert step.margin_ratio == pytest.approx(
        0.004 * 45.784 * T1 / (0.01 * 100 * T1 - 300 - fee), rel=1e-9)
    # the position update buys back 54.216 at T1, stamped by the adapter
    assert spy.calls[-1] == (pytest.approx(54.216), pytest.approx(T1, abs=1e-9),
                             ("stamp", T0 + HOUR))
    assert (spy.size, spy.price) == (pytest.approx(-45.784), 1_000.0)
    assert leg.margin == pytest.approx(10_000 + pnl - fee, abs=1e-6)
    assert rec.liquidated_calls == [(leg, pytest.approx(-54.216), 1_000.0, step,
                                     pytest.approx(5_421.6))]
    margin = 10_000 + pnl - fee
    T2 = (margin + 300 + 45.784 * 1_000) / (45.784 * 1.01)
    assert account.cached_prices(leg)[0] == pytest.approx(T2, rel=1e-12)

    run_bar(account, leg, T0 + 2 * HOUR, 1_000, 1_300, 1_000, 1_000)
    steps = account.liquidations[1:]
    assert [(x.step, x.partial) for x in steps] == [(2, True), (3, True), (4, False)]
    assert steps[0].trigger_price == pytest.approx(T2, rel=1e-12)
    assert steps[0].remaining == pytest.approx(45.306, abs=1e-9)
    assert steps[0].size == pytest.approx(45.784 - 45.306, abs=1e-9)
    assert spy.size == 0 and leg.liq_steps == 4
    assert [c[3] for c in rec.liquidated_calls] == account.liquidations
    assert all(c[0] is leg for c in rec.liquidated_calls)
    # the close, at the detail time the path reached its trigger, not the bar's open
    close = steps[-1]
    assert T0_UTC.replace(hour=2) < close.time < T0_UTC.replace(hour=3)
    tau = 1 / 3 + (close.trigger_price - 1_000) / 300 / 3      # 1,000 (low, 1/3) → 1,300 (2/3)
    assert abs((close.time - Clock.to_datetime(T0 + 2 * HOUR + tau * HOUR)).total_seconds()) < 1e-3
    assert spy.calls[-1] == (pytest.approx(45.301, abs=1e-9), close.fill_price, ("stamp", T0 + 2 * HOUR))


def bybit_liquidation(size, low, table=None, liquidation="full"):
    account = Account(20_000.0)
    leg = account.add(Leg(instrument(exchange="bybit", table=table, lot_size=0.001,
                                     liquidation_fee=0.0, liquidation=liquidation)))
    open_at(account, leg, size, 1_000.0)
    prices = account.cached_prices(leg)
    run_bar(account, leg, T0 + HOUR, 1_000, 1_000, low, 950)
    return account, leg, prices


def test_a_bybit_liquidation_keeps_the_fee_to_close_it_reserved():
    """Bybit 10x isolated long 1 at 1,000: fee to close at the bankruptcy price
    1 × 1,000 × (1 − 1/10) × 0.0005 = 0.45, initial margin 100 + 0.45 = 100.45, MM (at entry)
    0.004 × 1,000 + 0.45 = 4.45. LP: 100.45 + (P − 1,000) = 4.45 → 904; bankruptcy price:
    100.45 + (P − 1,000) = 0.45 → 900. Taken over at 900: PnL −100, fee 0.45, the trader loses
    100.45; the insurance fund gets the equity at 904 less the fee: 4.45 − 0.45 = 4."""
    account, leg, prices = bybit_liquidation(1.0, 900)
    assert prices == (pytest.approx(904.0, abs=1e-9), pytest.approx(900.0, abs=1e-9))
    (liq,) = account.liquidations
    got = liq.to_dict()
    assert math.isnan(got.pop("margin_ratio"))
    a = pytest.approx
    want = Liquidation(T0_UTC.replace(hour=1), SYMBOL, "long", 1.0, 1_000.0, "mark", a(-100.0),
                       a(904.0), a(900.0), a(900.0), a(100.45), a(0.45), a(4.0), "isolated",
                       "bankruptcy", False, 1, 10.0, a(904.0), 1, 0.004, a(4.45), a(4.45), 900.0,
                       900.0).to_dict()
    del want["margin_ratio"]
    assert got == want
    assert account.wallet == pytest.approx(20_000 - 0.50 - 100.45, abs=1e-9)
    assert leg.trade_fees == pytest.approx(0.50 + 0.45, abs=1e-12)


def test_a_bybit_partial_step_goes_one_tier_down_by_the_entry_value():
    """Bybit 10x isolated long 100 at 1,000 on :func:`two_tiers`: initial margin 10,000 + fee to
    close 100 × 900 × 0.0005 = 10,045; MM (tier 2 at the entry value 100,000) 1,000 − 300 + 45 = 745;
    LP: 10,045 + 100 (P − 1,000) = 745 → 907. Bybit's tiers follow the entry value: kept
    50,000 / 1,000 = 50 is on tier 2's floor, one lot below: 49.999; closed 50.001 at 907, PnL
    50.001 × −93 = −4,650.093, no fee. The rest's MM 0.004 × 49,999 + 49.999 × 900 × 0.0005 =
    222.4956 against equity 745: ratio 0.29865, compliant; its margin 10,045 − 4,650.093."""
    account, leg, prices = bybit_liquidation(100.0, 905, table=two_tiers(), liquidation="partial")
    assert prices == (pytest.approx(907.0, abs=1e-9), pytest.approx(900.0, abs=1e-9))
    (step,) = account.liquidations
    a = pytest.approx
    mm_rest = 0.004 * 49_999 + 49.999 * 900 * 0.0005
    assert step.to_dict() == Liquidation(
        T0_UTC.replace(hour=1), SYMBOL, "long", a(50.001, abs=1e-9), 1_000.0, "mark",
        a(-4_650.093, abs=1e-6), a(907.0), a(907.0), a(900.0), a(4_650.093, abs=1e-6), 0.0, 0.0,
        "isolated", "bankruptcy", False, 1, 10.0, a(907.0), 2, 0.01, a(745.0), a(745.0), 905.0, 905.0,
        True, 1, a(49.999, abs=1e-9), a(mm_rest / 745, rel=1e-9)).to_dict()
    assert leg.pos.size == pytest.approx(49.999, abs=1e-9)
    assert leg.margin == pytest.approx(10_045 - 4_650.093, abs=1e-6)


def test_a_fee_policy_liquidation_closes_at_the_trigger_and_charges_the_fee():
    """Fill policy ``fee``, liquidation fee 0.2 %: 10x isolated long 1 at 1,000 (margin 100) is
    closed at its LP T = (100 − 1,000) / (0.004 − 1) = 903.614: PnL T − 1,000 = −96.386, fee
    0.002 × T = 1.807 to the insurance fund; the trader keeps 100 − 96.386 − 1.807 = 1.807."""
    account = Account(1_000.0)
    inst = instrument(liquidation_fee=0.002)
    inst.fill_policy = FillPolicy.FEE
    leg = account.add(Leg(inst))
    open_at(account, leg, 1.0, 1_000.0)
    run_bar(account, leg, T0 + HOUR, 1_000, 1_000, 900, 950)
    T = 900 / 0.996
    (liq,) = account.liquidations
    assert (liq.policy, liq.fill_price, liq.bankruptcy_price) == ("fee", pytest.approx(T),
                                                                  pytest.approx(900.0))
    assert liq.pnl == pytest.approx(T - 1_000, abs=1e-9)
    assert liq.fee == liq.insurance_flow == pytest.approx(0.002 * T, abs=1e-12)
    assert liq.loss == pytest.approx(100 - (100 + T - 1_000 - 0.002 * T), abs=1e-9)
    assert account.wallet == pytest.approx(1_000 - 0.50 + (T - 1_000) - 0.002 * T, abs=1e-9)
    assert leg.trade_fees == pytest.approx(0.50 + 0.002 * T, abs=1e-12)


@pytest.mark.parametrize("gap", [29, 30])
def test_hyperliquid_closes_whole_within_30_seconds_of_a_step(gap):
    """Hyperliquid 10x isolated long 200 at 1,000 (notional above 100,000; no liquidation fee):
    LP1 = (20,000 − 200,000) / (200 × 0.004 − 200) = 903.614. Bar at +60 s (low 903): 20 % (40)
    closed at LP1, margin 20,000 + 40 × (LP1 − 1,000) = 16,144.58, LP2 = (16,144.58 − 160,000) /
    (160 × 0.004 − 160) = 902.707. A bar ``gap`` seconds later reaches LP2: within the 30 s
    cooldown (29 s) the whole 160 is closed; at 30 s another 20 % (32) is, then (same time, within
    the cooldown) the rest."""
    account = Account(50_000.0)
    leg = account.add(Leg(instrument(exchange="hyperliquid", liquidation_fee=0.0,
                                     liquidation="partial")))
    open_at(account, leg, 200.0, 1_000.0)
    lp1 = 180_000 / 199.2
    assert account.cached_prices(leg)[0] == pytest.approx(lp1, rel=1e-12)
    run_bar(account, leg, T0 + 60, 1_000, 1_000, 903, 950)
    margin = 20_000 + 40 * (lp1 - 1_000)
    assert (leg.pos.size, leg.margin) == (160.0, pytest.approx(margin, abs=1e-9))
    lp2 = (margin - 160_000) / (160 * 0.004 - 160)
    assert account.cached_prices(leg)[0] == pytest.approx(lp2, rel=1e-12)
    run_bar(account, leg, T0 + 60 + gap, 950, 950, 900, 950)
    got = [(x.time, x.partial, x.size) for x in account.liquidations]
    first = (T0_UTC.replace(minute=1), True, 40.0)
    later = Clock.to_datetime(T0 + 60 + gap)
    if gap < 30:
        assert got == [first, (later, False, 160.0)]
    else:
        assert got == [first, (later, True, 32.0), (later, False, 128.0)]
        assert account.liquidations[1].trigger_price == pytest.approx(lp2, rel=1e-12)
    assert leg.pos.size == 0


def test_a_partial_step_of_a_long_under_one_unit():
    """The step's direction comes from the sign of the size, not its magnitude: 10x isolated long
    0.1 at 1,000,000 (notional 100,000, tier 2 of :func:`two_tiers`, lot 0.000001) is liquidated as
    the long of 100 at 1,000 above, prices × 1,000: T = 906,060.6, kept 50,000 / T = 0.055183."""
    account = Account(20_000.0)
    leg = account.add(Leg(instrument(table=two_tiers(), lot_size=0.000001, liquidation_fee=0.001,
                                     liquidation="partial")))
    open_at(account, leg, 0.1, 1e6)
    run_bar(account, leg, T0 + HOUR, 1e6, 1e6, 900_000, 950_000)
    (step,) = account.liquidations
    assert (step.side, step.partial, step.mark_price, step.last_price) == ("long", True, 9e5, 9e5)
    assert step.trigger_price == pytest.approx(89_700_000 / 99, rel=1e-12)
    assert step.size == pytest.approx(0.044817, abs=1e-12)
    assert (leg.pos.size, leg.pos.price) == (pytest.approx(0.055183, abs=1e-12), 1e6)


# --- several cross positions: the account at their adverse extremes at once -------------------

ETH = "ETH/USDT:USDT"


def two_cross_longs(cash=201.0, listener=None):
    """Cross 10x: BTC long 1 at 1,000 (MMR 0.4 %), ETH long 2 at 500 (MMR 1 %); fees 0.50 each."""
    account = Account(cash, listener=listener)
    btc = account.add(Leg(instrument(mode="cross")))
    eth = account.add(Leg(instrument(mode="cross", mmr=0.01, symbol=ETH)))
    bar(account, btc, T0, 1_000, 1_000, 1_000, 1_000)
    bar(account, eth, T0, 500, 500, 500, 500)
    account.fill(btc, 1.0, 1_000.0, maker=False, t=0.0, when=None)
    account.fill(eth, 2.0, 500.0, maker=False, t=0.0, when=None)
    return account, btc, eth


def next_bars(account, btc, eth, key, btc_bar, eth_bar):
    bar(account, btc, key, *btc_bar)
    run_bar(account, eth, key, *eth_bar)


def test_cross_positions_share_the_wallet_in_their_liquidation_prices():
    """Wallet 200. Binance cross LP of one position, the other at its mark (its MM counted):
    BTC: 200 − 0.01 × 1,000 + (P − 1,000) = 0.004 P → P = 810 / 0.996 = 813.25; bankruptcy
    200 + (P − 1,000) = 0 → 800. ETH: 200 − 4 + 2 (P − 500) = 0.02 P → 804 / 1.98 = 406.06;
    bankruptcy 400."""
    account, btc, eth = two_cross_longs()
    assert account.wallet == 200.0
    assert account.shared_prices(btc) == (pytest.approx(810 / 0.996, rel=1e-12), pytest.approx(800.0))
    assert account.shared_prices(eth) == (pytest.approx(804 / 1.98, rel=1e-12), pytest.approx(400.0))


def test_cross_positions_are_liquidated_together_at_their_adverse_extremes():
    """Bar 2: BTC low 900 (PnL −100, MM 3.60), ETH low 450 (PnL −100, MM 9.00): equity 200 − 200
    = 0 ≤ 12.60, the account is liquidated. Each trigger: its LP with the other at its extreme,
    BTC 200 − 100 − 9 + (P − 1,000) = 0.004 P → 909 / 0.996 = 912.651; ETH 200 − 100 − 3.6 +
    2 (P − 500) = 0.02 P → 903.6 / 1.98 = 456.364. At the triggers: equity 200 + (912.651 − 1,000)
    + 2 (456.364 − 500) = 25.378, MM 0.004 × 912.651 + 0.01 × 2 × 456.364 = 3.651 + 9.127 = 12.778.
    Each position takes the equity's share of its MM (BTC 25.378 × 3.651 / 12.778 = 7.250, ETH
    18.127) to the insurance fund and is closed at its bankruptcy price trigger − share / size:
    BTC 905.400, ETH 447.300; the account ends at 0."""
    account, btc, eth = two_cross_longs()
    next_bars(account, btc, eth, T0 + HOUR, (1_000, 1_000, 900, 950), (500, 500, 450, 480))
    t_btc, t_eth = 909 / 0.996, 903.6 / 1.98
    equity = 200 + (t_btc - 1_000) + 2 * (t_eth - 500)
    mm_btc, mm_eth = 0.004 * t_btc, 0.01 * 2 * t_eth
    share_btc, share_eth = equity * mm_btc / (mm_btc + mm_eth), equity * mm_eth / (mm_btc + mm_eth)
    fill_btc, fill_eth = t_btc - share_btc, t_eth - share_eth / 2
    a = pytest.approx
    when = T0_UTC.replace(hour=1)
    want = []
    for sym, size, entry, trig, fill, share, mmr, low in (
            (SYMBOL, 1.0, 1_000.0, t_btc, fill_btc, share_btc, 0.004, 900.0),
            (ETH, 2.0, 500.0, t_eth, fill_eth, share_eth, 0.01, 450.0)):
        pnl = size * (fill - entry)
        d = Liquidation(when, sym, "long", size, entry, "mark", a(pnl, abs=1e-9), a(trig, abs=1e-9),
                        a(fill, abs=1e-9), a(fill, abs=1e-9), a(-pnl, abs=1e-9), 0.0,
                        a(share, abs=1e-9), "cross", "bankruptcy", False, 1, 10.0,
                        a(trig, abs=1e-9), 1, mmr, a(mm_btc + mm_eth, abs=1e-9), a(equity, abs=1e-9),
                        low, low).to_dict()
        del d["margin_ratio"]
        want.append(d)
    got = [x.to_dict() for x in account.liquidations]
    assert all(math.isnan(d.pop("margin_ratio")) for d in got)
    assert got == want
    assert account.wallet == pytest.approx(0.0, abs=1e-9)
    assert account.insurance_fund == pytest.approx(equity, abs=1e-9)
    assert btc.pos.size == eth.pos.size == 0


def test_a_cross_account_margin_call_is_raised_once_until_the_ratio_recovers():
    """BTC low 905 (PnL −95, MM 3.62), ETH low 455 (PnL −90, MM 9.10): equity 200 − 185 = 15 above
    MM 12.72, ratio 12.72 / 15 = 0.848 ≥ 0.8: one margin call, on the account's first position,
    at BTC's adverse extreme. A bar that crosses it again and closes there (ratio 0.848 at the
    closes) does not call again, nor does one that crosses it and recovers by its close (closes
    1,000 and 500: equity 200, MM 14, ratio 0.07), which clears the level: the next bar that
    crosses it calls again."""
    rec = Recorder()
    account, btc, eth = two_cross_longs(listener=rec)
    btc.data = "btc feed"
    next_bars(account, btc, eth, T0 + HOUR, (1_000, 1_000, 905, 950), (500, 500, 455, 480))
    (call,) = account.margin_calls
    assert call.to_dict() == {"time": T0_UTC.replace(hour=1), "symbol": SYMBOL, "trade_id": 1,
                              "level": 0.8, "margin_ratio": pytest.approx(12.72 / 15, rel=1e-12),
                              "mark_price": 905.0, "liquidation_price": None}
    assert call.data == "btc feed"
    assert rec.events == [("margin_call", 0.8)]
    next_bars(account, btc, eth, T0 + 2 * HOUR, (950, 950, 905, 905), (480, 480, 455, 455))
    assert len(account.margin_calls) == 1
    next_bars(account, btc, eth, T0 + 3 * HOUR, (905, 1_000, 905, 1_000), (455, 500, 455, 500))
    assert len(account.margin_calls) == 1       # crossed again (held), recovered by the close
    next_bars(account, btc, eth, T0 + 4 * HOUR, (1_000, 1_000, 990, 1_000), (500, 500, 495, 500))
    next_bars(account, btc, eth, T0 + 5 * HOUR, (1_000, 1_000, 905, 950), (500, 500, 455, 480))
    assert [c.time for c in account.margin_calls] == [T0_UTC.replace(hour=1), T0_UTC.replace(hour=5)]
    assert len(account.margin_calls) == 2 and not account.liquidations


def test_cross_positions_that_open_beyond_bankruptcy_are_taken_over_at_the_open():
    """Bar 2 opens at BTC 880, ETH 440: equity 200 − 120 − 120 = −40 below MM 0.004 × 880 +
    0.01 × 880 = 12.32 at the open: both are liquidated there (a gap: no liquidation price was
    crossed, none recorded). The −40 is shared by MM (BTC −40 × 3.52 / 12.32 = −11.43, ETH −28.57)
    and the insurance fund covers it: each is closed at open − share / size (BTC 891.43, ETH
    454.29), and the account ends at 0."""
    account, btc, eth = two_cross_longs()
    next_bars(account, btc, eth, T0 + HOUR, (880, 900, 870, 890), (440, 450, 430, 445))
    share_btc, share_eth = -40 * 3.52 / 12.32, -40 * 8.8 / 12.32
    liq_btc, liq_eth = account.liquidations
    for liq, trig, share, size in ((liq_btc, 880.0, share_btc, 1.0), (liq_eth, 440.0, share_eth, 2.0)):
        assert liq.at_open and math.isnan(liq.liquidation_price)
        assert liq.trigger_price == trig
        assert liq.fill_price == pytest.approx(trig - share / size, abs=1e-9)
        assert liq.insurance_flow == pytest.approx(share, abs=1e-9)
        assert liq.equity == pytest.approx(-40.0, abs=1e-9)
        assert liq.maintenance_margin == pytest.approx(12.32, abs=1e-9)
    assert account.wallet == pytest.approx(0.0, abs=1e-9)
    assert account.insurance_fund == pytest.approx(-40.0, abs=1e-9)


def test_stale_tells_a_reader_when_cached_prices_may_have_moved():
    """An isolated leg's prices move with its own state only; a cross leg's also with the cross
    wallet (the account's version)."""
    account, leg = isolated_long_at_1000()
    account.cached_prices(leg)
    seen = leg.rev
    assert account.stale(leg, seen) is False
    assert account.stale(leg, seen - 1) is True                     # another revision
    account.deposit(100.0)                                          # not this leg's business
    assert account.stale(leg, seen) is False
    account.add_margin(leg, 10.0, 500.0)
    assert account.stale(leg, leg.rev) is True                      # dirty, same revision
    account.cached_prices(leg)
    assert account.stale(leg, leg.rev) is False

    cross_account = Account(3_000.0)
    cross = cross_account.add(Leg(instrument(mode="cross")))
    open_at(cross_account, cross, 1.0, 20_000.0)
    cross_account.cached_prices(cross)
    seen = cross.rev
    assert cross_account.stale(cross, seen) is False
    cross_account.deposit(100.0)
    assert cross_account.stale(cross, seen) is True
    cross_account.cached_prices(cross)
    assert cross_account.stale(cross, cross.rev) is False


def test_refused_orders_are_recorded_with_their_symbol_and_reason():
    account, leg = isolated_long_at_1000()
    account.reject(leg, "ignored", T0_UTC, 2, 1_001, "margin")
    account.reject(None, ETH, None, -1, 500, "no data")
    assert account.rejections == [Rejection(T0_UTC, SYMBOL, 2.0, 1_001.0, "margin"),
                                  Rejection(None, ETH, -1.0, 500.0, "no data")]
    assert [type(r.size) for r in account.rejections] == [float, float]
    assert [type(r.price) for r in account.rejections] == [float, float]
    assert account.journal[-2:] == account.rejections


# --- what a close frees for the order check (release_estimate) ---------------------------------

def test_an_isolated_close_frees_its_margin_share_and_pnl_less_the_fee():
    """Isolated long 1 at 1,000 (margin 100): closing 0.5 at 1,100 frees 100 × 0.5 + 0.5 × 100 −
    0.5 × 1,100 × 0.0005 = 99.725; closing it all at 800 would free 100 − 200 − 0.40 < 0: nothing.
    Isolated short 2 at 1,000 (margin 200): closing 1 at 900 frees 100 + 100 − 0.45 = 199.55."""
    account, leg = isolated_long_at_1000()
    assert account.release_estimate(leg, 1.0, 0.0, 1_100.0) == 0.0
    assert account.release_estimate(leg, 1.0, 0.5, 1_100.0) == pytest.approx(99.725, abs=1e-12)
    assert account.release_estimate(leg, 1.0, 1.0, 800.0) == 0.0
    short_account = Account(1_000.0)
    short = short_account.add(Leg(instrument()))
    open_at(short_account, short, -2.0, 1_000.0)
    assert short.margin == 200.0
    assert short_account.release_estimate(short, -2.0, 1.0, 900.0) == pytest.approx(199.55,
                                                                                    abs=1e-12)


@pytest.mark.parametrize("exchange", ["binance-usdm", "bybit"])
def test_a_cross_close_swaps_its_margin_and_unrealized_pnl_at_the_mark_for_the_realized(exchange):
    """Cross 10x. Long 1 at 20,000 marked at 20,500, closing 0.5 at 21,000: initial margin at the
    mark 0.5 × 20,500 / 10 = 1,025 (Bybit + 0.5 × 20,500 × 0.9 × 0.0005 = 4.6125 to close), PnL
    0.5 × 1,000 − 0.5 × 21,000 × 0.0005 = 494.75, less the unrealized 0.5 × 500 already counted:
    1,269.75 (Bybit 1,274.3625). Not marked yet: valued at the entry, 1,000 + 494.75 (Bybit +
    0.5 × 20,000 × 0.9 × 0.0005 = 4.5). Short 1 at 20,000 marked at 19,500, closing 1 at 19,000:
    1,950 (Bybit + 19,500 × 1.1 × 0.0005 = 10.725) + 1,000 − 9.5 − 500 = 2,440.5 (2,451.225)."""
    bybit = exchange == "bybit"
    account = Account(10_000.0)
    long = account.add(Leg(instrument(mode="cross", exchange=exchange), pos=Holding(1.0, 20_000.0)))
    short = account.add(Leg(instrument(mode="cross", exchange=exchange, symbol=ETH),
                            pos=Holding(-1.0, 20_000.0)))
    for leg in (long, short):
        bar(account, leg, T0, 20_000, 20_000, 20_000, 20_000)
    assert account.release_estimate(long, 1.0, 0.5, 21_000.0) == pytest.approx(
        1_000 + 494.75 + (4.5 if bybit else 0.0), abs=1e-9)
    long.valprice, short.valprice = 20_500.0, 19_500.0
    assert account.release_estimate(long, 1.0, 0.5, 21_000.0) == pytest.approx(
        1_269.75 + (4.6125 if bybit else 0.0), abs=1e-9)
    assert account.release_estimate(short, -1.0, 1.0, 19_000.0) == pytest.approx(
        2_440.5 + (10.725 if bybit else 0.0), abs=1e-9)
    assert account.release_estimate(short, -1.0, 0.0, 19_000.0) == 0.0


# --- a leg handed a position (the adapter's, not opened by a fill) -------------------------------

def test_a_leg_handed_a_position_starts_a_clean_trade():
    """Cross long 1 at 20,000 and isolated long 1 at 1,000 (margin 100) handed to the account:
    no fees, funding or liquidation steps yet; valued at their entries until marked (available:
    3,000 − the isolated margin 100 − the cross initial margin 20,000 / 10 = 900); prices
    computed on first use: isolated LP (100 − 1,000) / (0.004 − 1) = 903.61; nothing happens to
    them before their first bar; with no reader or funding source the bar reads and pays nothing."""
    account = Account(3_000.0)
    cross = account.add(Leg(instrument(mode="cross"), pos=Holding(1.0, 20_000.0)))
    iso = account.add(Leg(instrument(symbol=ETH), pos=Holding(1.0, 1_000.0)))
    iso.margin = 100.0
    assert (cross.trade_fees, cross.trade_funding, cross.liq_steps) == (0.0, 0.0, 0)
    assert account.available() == pytest.approx(3_000 - 100 - 2_000, abs=1e-9)
    cross.funding = iso.funding = lambda leg: (1.0, 1.0, 0.0001)
    account.open_bar()                      # before their first bar: not theirs to pay
    account.close_bar()
    assert not account.funding_payments and not account.journal
    cross.funding = iso.funding = Leg(instrument()).funding       # the default: no events
    account.new_bar(cross, T0)
    account.new_bar(iso, T0)
    account.open_bar()
    assert not account.funding_payments
    unrealized, notional, held = account.unrealized()               # no reader: marks unknown
    assert math.isnan(unrealized) and math.isnan(notional) and held == 2
    assert account.cached_prices(iso)[0] == pytest.approx(900 / 0.996, rel=1e-12)
    account.pay_funding(iso, 2.0, 0.002)
    assert (iso.trade_funding, iso.trade_fees) == (2.0, 0.0)
    assert iso.margin == 98.0
    bar(account, iso, T0 + HOUR, 1_000, 1_000, 800, 900)
    account.check(END)
    (liq,) = account.liquidations
    assert (liq.symbol, liq.step, liq.partial) == (ETH, 1, False)
    assert iso.liq_steps == 1


def test_an_isolated_margin_call_at_the_bars_end_without_a_liquidation():
    """Isolated long 1 at 1,000 (margin 100): the margin ratio 0.004 P / (100 + P − 1,000) reaches
    0.8 at P = 720 / 0.796 = 904.52; a bar down to 904 (above the LP 903.61) raises the call at the
    bar's end, at its low: ratio 3.616 / 4 = 0.904."""
    account, leg = isolated_long_at_1000()
    run_bar(account, leg, T0 + HOUR, 1_000, 1_000, 904, 950)
    assert not account.liquidations
    (call,) = account.margin_calls
    assert call.to_dict() == {"time": T0_UTC.replace(hour=1), "symbol": SYMBOL, "trade_id": 1,
                              "level": 0.8, "margin_ratio": pytest.approx(3.616 / 4, rel=1e-9),
                              "mark_price": 904.0, "liquidation_price": pytest.approx(900 / 0.996)}
    assert leg.warn == [pytest.approx(720 / 0.796, rel=1e-12)]


# --- the margin check at a fill (opening_problem) ------------------------------------------------

def test_an_opening_beyond_its_tiers_leverage_is_refused_with_the_tier():
    """At 20x on :func:`two_tiers` a position may reach 50,000 of notional: 60 at 1,000 is in tier 2
    (up to 10x). At 10x (within 1e-12 of it: float dust) it is allowed, and costs
    60,000 / 10 + 60,000 × 0.0005 = 6,030."""
    account, leg = open_size_leg()
    assert account.opening_problem(leg, 60.0, 60.0, 1_000.0, 0.0, 1e9) == (
        "notional 60,000.00 is in tier 2, which allows at most 10x; leverage is 20x", 0.0)
    assert account.opening_problem(leg, 49.0, 49.0, 1_000.0, 0.0, 1e9) == (
        None, pytest.approx(49_000 / 20 + 49_000 * 0.0005, abs=1e-9))
    ten = Account(1e9)
    leg10 = ten.add(Leg(instrument(leverage=10.0 * (1 + 1e-12), table=two_tiers())))
    bar(ten, leg10, T0, 1_000, 1_000, 1_000, 1_000)
    assert ten.opening_problem(leg10, -60.0, -60.0, 1_000.0, 0.0, 1e9) == (
        None, pytest.approx(6_030.0, abs=1e-7))


def test_an_opening_must_fit_its_margin_and_fee_in_the_available_balance_and_release():
    """10x long 1 at 1,000: initial margin 100 + fee 0.50 = 100.50. Available 100 refuses it (the
    message gives both); available 100 plus 0.50 released by a close allows it; float dust of
    1e-9 × cost (1.005e-7) is tolerated, 1.5e-9 × 1 below a cost under 1 is not."""
    account, leg = open_size_leg(lot_size=None)
    leg.inst.leverage = 10.0
    assert account.opening_problem(leg, 1.0, 1.0, 1_000.0, 0.0, 100.0) == (
        "initial margin and fee 100.50 exceed the available balance 100.00", pytest.approx(100.5))
    assert account.opening_problem(leg, 1.0, 1.0, 1_000.0, 0.5, 100.0) == (None, pytest.approx(100.5))
    assert account.opening_problem(leg, 2.0, 1.0, 1_000.0, 1_234.5, 1_000.25)[0] is None
    assert account.opening_problem(leg, 2.0, 1.0, 1_000.0, 0.25, 100.0)[0] == (
        "initial margin and fee 100.50 exceed the available balance 100.25")
    cost = account.opening_problem(leg, 1.0, 1.0, 1_000.0, 0.0, 1e9)[1]
    assert account.opening_problem(leg, 1.0, 1.0, 1_000.0, 0.0, cost - 5e-8)[0] is None
    edge = cost - 1e-9 * cost
    assert edge + 0.0 + 1e-9 * cost == cost                  # the check sees exactly the cost
    assert account.opening_problem(leg, 1.0, 1.0, 1_000.0, 0.0, edge)[0] is None
    small = account.opening_problem(leg, 0.004, 0.004, 100.0, 0.0, 1e9)[1]
    assert small == pytest.approx(0.004 * 100 / 10 + 0.004 * 100 * 0.0005, abs=1e-15)    # 0.0402
    assert account.opening_problem(leg, 0.004, 0.004, 100.0, 0.0, small - 1.5e-9)[0] is not None


def test_a_funding_payment_is_recorded_and_moves_a_cross_liquidation_price():
    """Cross long 1 at 20,000 (wallet 2,990 after the fee): LP (2,990 − 20,000) / −0.996. Funding
    per unit 3 (rate 0.0001 at mark 30,000) twice: the position pays 3 each time, the trade's
    funding is 6, and the LP is (2,984 − 20,000) / −0.996."""
    rec = KeepingRecorder()
    account = Account(3_000.0, listener=rec)
    leg = account.add(Leg(instrument(mode="cross")))
    open_at(account, leg, 1.0, 20_000.0)
    assert account.cached_prices(leg)[0] == pytest.approx(-17_010 / -0.996, abs=1e-9)
    assert account.pay_funding(leg, 3.0, 0.0001) == 3.0
    assert account.cached_prices(leg)[0] == pytest.approx(-17_013 / -0.996, abs=1e-9)
    account.pay_funding(leg, 3.0, 0.0001)
    assert account.cached_prices(leg)[0] == pytest.approx(-17_016 / -0.996, abs=1e-9)
    assert leg.trade_funding == 6.0 and account.funding_paid == 6.0
    assert account.funding_payments[0].to_dict() == {
        "time": T0_UTC, "symbol": SYMBOL, "size": 1.0, "rate": 0.0001, "per_unit": 3.0,
        "payment": 3.0, "position_id": 1}
    assert rec.funded_calls == [(leg, p) for p in account.funding_payments]
    account.pay_funding(leg, 4.0, 0.0001)
    account.deposit(100.0)
    assert account.cached_prices(leg)[0] == pytest.approx(-16_920 / -0.996, abs=1e-9)


def test_isolated_funding_comes_out_of_the_margin_and_moves_the_liquidation_price():
    """Isolated long 1 at 1,000 (margin 100): funding 2 leaves margin 98 and LP
    (98 − 1,000) / (0.004 − 1) = 905.62; a reader that saw the position before is told it moved."""
    account, leg = isolated_long_at_1000()
    after_fill = leg.rev
    account.cached_prices(leg)
    after_prices = leg.rev
    account.pay_funding(leg, 2.0, 0.002)
    assert leg.margin == 98.0 and account.wallet == pytest.approx(997.50, abs=1e-12)
    assert account.stale(leg, leg.rev) is True                      # prices not yet recomputed
    assert account.cached_prices(leg)[0] == pytest.approx(902 / 0.996, rel=1e-12)
    assert account.stale(leg, after_fill) is True
    assert account.stale(leg, after_prices) is True
    assert account.stale(leg, leg.rev) is False


# --- fills: increase, reduce, reverse, float dust --------------------------------------------------

def test_fills_of_one_trade_and_a_reversal_to_the_cent():
    """Isolated 10x, maker 0.02 %, taker 0.05 %. Buy 0.25 + 0.25 at 1,000 (maker: fees 0.05 each,
    margin 25 each); sell 0.2 at 1,100 (taker): PnL 0.2 × 100 = 20, fee 0.11, margin share
    50 × 0.2 / 0.5 = 20 released; sell 0.8 at 950: closes 0.3 (PnL −15, fee 0.1425, its margin 30)
    and opens a short 0.5 (trade 2, fee 0.2375, margin 47.5). Wallet 10,000 − 0.10 + 20 − 0.11 −
    15 − 0.1425 − 0.2375 = 10,004.41. A buy of 0.5 × (1 − 1e-10) closes the short exactly (float
    dust) and the order sees what it asked for."""
    account = Account(10_000.0)
    spy = SpyHolding()
    leg = account.add(DetailLeg(instrument(), pos=spy))
    bar(account, leg, T0, 1_000, 1_100, 900, 1_000)
    w = [T0_UTC.replace(minute=m) for m in range(6)]
    r1 = account.fill(leg, 0.25, 1_000.0, maker=True, t=0.1, when=w[0], order_ref=7)
    r2 = account.fill(leg, 0.25, 1_000.0, maker=True, t=0.25, when=w[1], order_ref=7)
    assert r1 == r2 and (r2.closed, r2.opened, r2.opened_value, r2.refusal, r2.filled) == (
        0.0, 0.25, 25.0, None, 0.25)
    assert r2.opened_fee == pytest.approx(0.05, abs=1e-15)
    assert (leg.since, leg.changed, leg.margin, leg.valprice) == (0.25, True, 50.0, 1_000.0)
    r = account.fill(leg, -0.2, 1_100.0, maker=False, t=0.5, when=w[2], order_ref=8)
    assert (r.closed, r.opened, r.filled, r.refusal) == (-0.2, 0.0, -0.2, None)
    assert (r.pnl, r.closed_value, r.closed_fee) == (pytest.approx(20.0), pytest.approx(20.0),
                                                     pytest.approx(0.11))
    assert leg.margin == pytest.approx(30.0) and leg.valprice == 1_000.0
    assert leg.trade_fees == pytest.approx(0.21, abs=1e-12)
    r = account.fill(leg, -0.8, 950.0, maker=False, t=0.75, when=w[3], order_ref=9)
    assert (r.closed, r.opened) == (pytest.approx(-0.3), pytest.approx(-0.5))
    assert (r.pnl, r.closed_value, r.closed_fee, r.opened_value, r.opened_fee) == (
        pytest.approx(-15.0), pytest.approx(30.0), pytest.approx(0.1425), pytest.approx(47.5),
        pytest.approx(0.2375))
    assert (leg.position_id, leg.margin, leg.valprice) == (2, pytest.approx(47.5), 950.0)
    assert leg.trade_fees == pytest.approx(0.2375, abs=1e-12)
    assert (spy.size, spy.price) == (pytest.approx(-0.5), 950.0)
    assert account.wallet == pytest.approx(10_004.41, abs=1e-9)
    a = pytest.approx
    assert [f.to_dict() for f in account.fills] == [
        Fill(w[0], SYMBOL, 1, "long", 0.25, 1_000.0, a(0.05), 0.0, True, 7).to_dict(),
        Fill(w[1], SYMBOL, 1, "long", 0.25, 1_000.0, a(0.05), 0.0, True, 7).to_dict(),
        Fill(w[2], SYMBOL, 1, "long", a(-0.2), 1_100.0, a(0.11), a(20.0), False, 8).to_dict(),
        Fill(w[3], SYMBOL, 1, "long", a(-0.3), 950.0, a(0.1425), a(-15.0), False, 9).to_dict(),
        Fill(w[3], SYMBOL, 2, "short", a(-0.5), 950.0, a(0.2375), 0.0, False, 9).to_dict()]
    assert [type(f.size) for f in account.fills] == [float] * 5
    stamp = ("stamp", T0)
    assert spy.calls == [(0.25, 1_000.0, stamp), (0.25, 1_000.0, stamp), (-0.2, 1_100.0, stamp),
                         (pytest.approx(-0.8), 950.0, stamp)]
    nothing = account.fill(leg, 0.0, 940.0, maker=False, t=0.8, when=w[4])
    assert (nothing.closed, nothing.opened, nothing.filled) == (0.0, 0.0, 0.0)
    assert len(account.fills) == 5
    dust = 0.5 * (1 - 1e-10)
    r = account.fill(leg, dust, 940.0, maker=False, t=0.9, when=w[5])
    assert (r.closed, r.opened, r.filled) == (pytest.approx(0.5, abs=1e-15), 0.0, dust)
    assert spy.size == 0 and leg.margin == 0.0
    assert account.fills[-1].size == pytest.approx(0.5, abs=1e-15)


def test_a_cross_close_releases_the_initial_margin_at_the_entry():
    """Bybit cross 10x long 1 at 20,000, sell 0.4 at 21,000: the margin released is the initial
    margin of 0.4 long at the entry, 800 + the fee to close 0.4 × 20,000 × 0.9 × 0.0005 = 803.60."""
    account = Account(5_000.0)
    leg = account.add(Leg(instrument(mode="cross", exchange="bybit")))
    open_at(account, leg, 1.0, 20_000.0)
    r = account.fill(leg, -0.4, 21_000.0, maker=False, t=0.5, when=None)
    assert r.closed_value == pytest.approx(803.6, abs=1e-9)
    assert r.pnl == pytest.approx(400.0) and leg.margin == 0.0


def test_an_opening_refused_at_the_fill_opens_nothing_and_says_why():
    """Cross 10x long 1 at 1,000 with cash 180 (wallet 179.50 after the fee): adding 1 more needs
    100 + 0.50, but the position already held takes 100 of the available balance: 79.50 left,
    refused; the order sees nothing filled. Closing 1 and opening a short of 1 in one sell of 2 is
    checked with the long gone (149 after the closing fee 0.50): allowed."""
    account = Account(180.0)
    leg = account.add(Leg(instrument(mode="cross")))
    open_at(account, leg, 1.0, 1_000.0)
    r = account.fill(leg, 1.0, 1_000.0, maker=False, t=0.5, when=None)
    assert r == FillResult(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
                           "initial margin and fee 100.50 exceed the available balance 79.50", 0.0)
    assert len(account.fills) == 1 and leg.pos.size == 1.0
    account.wallet -= 30.0      # 149.50 (as if paid out): enough for the reversal only without the long
    r = account.fill(leg, -2.0, 1_000.0, maker=False, t=0.6, when=None)
    assert (r.closed, r.opened, r.refusal) == (-1.0, -1.0, None)
    assert leg.pos.size == -1.0 and account.wallet == pytest.approx(148.50, abs=1e-9)


def test_an_increase_past_the_tier_cap_is_refused_at_the_fill():
    """At 20x on :func:`two_tiers`: long 30 at 1,000, then 30 more would make 60,000 of notional,
    tier 2 (10x at most)."""
    account = Account(1e6)
    leg = account.add(Leg(instrument(leverage=20.0, table=two_tiers())))
    open_at(account, leg, 30.0, 1_000.0)
    r = account.fill(leg, 30.0, 1_000.0, maker=False, t=0.5, when=None)
    assert r.refusal == "notional 60,000.00 is in tier 2, which allows at most 10x; leverage is 20x"
    assert (r.opened, r.filled, leg.pos.size) == (0.0, 0.0, 30.0)


def test_an_isolated_close_releases_its_share_of_the_margin_actually_held():
    """Isolated long 1 at 1,000 with 50 added (margin 150): closing half at 1,000 releases 75 (not
    the initial margin 50); closing the rest at 849.90 loses 75.05 + fee 0.42495 on 75 of margin:
    the trader loses the 75, the insurance fund covers 0.47495."""
    account, leg = isolated_long_at_1000()
    account.add_margin(leg, 50.0, 800.0)
    r = account.fill(leg, -0.5, 1_000.0, maker=False, t=0.5, when=None)
    assert r.closed_value == 75.0 and leg.margin == 75.0
    r = account.fill(leg, -0.5, 849.9, maker=False, t=0.6, when=None)
    cover = -0.5 * 150.1 - 0.5 * 849.9 * 0.0005 + 75
    assert account.fills[-1].insurance_flow == pytest.approx(cover, abs=1e-9)
    assert r.pnl == pytest.approx(-0.5 * 150.1 - cover, abs=1e-9)
    assert account.fills[-1].order_ref == 0


def test_a_loss_past_the_margin_by_less_than_the_fee_is_still_capped():
    """Isolated long 1 at 1,000 (margin 100) closed at 900.20: PnL −99.80, fee 0.4501: −100.2501 is
    past the margin, the fund covers 0.2501."""
    account, leg = isolated_long_at_1000()
    r = account.fill(leg, -1.0, 900.2, maker=False, t=0.5, when=None)
    assert account.fills[-1].insurance_flow == pytest.approx(-0.2501, abs=1e-9)
    assert r.pnl == pytest.approx(-99.8 + 0.2501, abs=1e-9)
    assert account.wallet == pytest.approx(1_000 - 0.5 - 100, abs=1e-9)


def test_a_close_short_of_the_position_by_more_than_dust_leaves_the_rest():
    """Long 0.5: selling 0.5 − 1e-9 (1e-9 is more than the 1e-9 × 0.5 of float dust) leaves 1e-9."""
    account = Account(1_000.0)
    leg = account.add(Leg(instrument()))
    open_at(account, leg, 0.5, 1_000.0)
    r = account.fill(leg, -(0.5 - 1e-9), 1_000.0, maker=False, t=0.5, when=None)
    assert r.filled == -(0.5 - 1e-9)
    assert leg.pos.size == pytest.approx(1e-9, rel=1e-6)


# --- funding events at the open and later in the bar ---------------------------------------------

def split_funding(first_rate, later_rate):
    """Funding events of a bar: one at its open (rate ``first_rate`` × the bar's mark open) and one
    later in it (``later_rate`` × the mark open), as (per unit, part at the open, rate)."""
    def funding(leg):
        first, later = first_rate * leg.mark_open, later_rate * leg.mark_open
        if not first and not later:
            return None
        return first + later, first, first_rate + later_rate
    return funding


def test_funding_later_in_the_bar_is_paid_by_the_position_held_after_the_fills():
    """Cross long 1 at 1,000. Bar 2 opens at 2,000 with an event at the open (rate 0.001: 2 per
    unit) and one later (rate 0.002: 4 per unit); a buy of 1 in between: the open's event is paid
    by 1 (2.00, its rate unknown alone: NaN), the later one by 2 (8.00, NaN). Bar 3 (open 1,000),
    later event only (rate 0.003): 2 × 3 = 6.00 at rate 0.003. Bar 4 (open 500), an event at the
    open only (rate 0.004): 2 × 2 = 4.00 at rate 0.004. A bar entered flat, bought in it, pays its
    later event only (bar 5, open 100, rates 0.01 and 0.02: 1 × 2 = 2.00)."""
    account = Account(10_000.0)
    leg = account.add(Leg(instrument(mode="cross")))
    open_at(account, leg, 1.0, 1_000.0)
    got = []
    for key, price, first, later, buy in ((T0 + HOUR, 2_000, 0.001, 0.002, 1.0),
                                           (T0 + 2 * HOUR, 1_000, 0.0, 0.003, 0.0),
                                           (T0 + 3 * HOUR, 500, 0.004, 0.0, 0.0)):
        bar(account, leg, key, price, price, price, price)
        leg.funding = split_funding(first, later)
        account.open_bar()
        if buy:
            account.fill(leg, buy, price, maker=False, t=0.5, when=None)
        account.close_bar()
    got = [(p.time.hour, p.size, p.per_unit, p.payment) for p in account.funding_payments]
    assert got == [(1, 1.0, 2.0, 2.0), (1, 2.0, 4.0, 8.0), (2, 2.0, 3.0, 6.0), (3, 2.0, 2.0, 4.0)]
    rates = [p.rate for p in account.funding_payments]
    assert math.isnan(rates[0]) and math.isnan(rates[1]) and rates[2:] == [0.003, 0.004]
    account.fill(leg, -2.0, 500.0, maker=False, t=0.9, when=None)
    bar(account, leg, T0 + 4 * HOUR, 100, 100, 100, 100)
    leg.funding = split_funding(0.01, 0.02)
    account.open_bar()
    account.fill(leg, 1.0, 100.0, maker=False, t=0.5, when=None)
    account.close_bar()
    last = account.funding_payments[-1]
    assert len(account.funding_payments) == 5
    assert (last.time.hour, last.size, last.per_unit, last.payment) == (4, 1.0, 2.0, 2.0)
    assert math.isnan(last.rate)


# --- one position's liquidation and margin-call checks (_check_single) ---------------------------

def test_a_bar_opening_beyond_the_liquidation_price_is_a_gap():
    """Isolated long 1 at 1,000 (LP 903.61): a bar opening at 880 liquidates at its open (880),
    at_open; a bar that only trades down through the LP is not a gap."""
    for o, at_open in ((880.0, True), (950.0, False)):
        account, leg = isolated_long_at_1000()
        bar(account, leg, T0 + HOUR, o, 960, 850, 870)
        account.open_bar()
        account.close_bar()
        (liq,) = account.liquidations
        assert liq.at_open is at_open
        assert liq.trigger_price == pytest.approx(880.0 if at_open else 900 / 0.996, rel=1e-12)
        assert liq.liquidation_price == pytest.approx(900 / 0.996, rel=1e-12)


def test_exactly_reaching_the_liquidation_price_liquidates():
    """Bybit (exact prices): long LP 904 (above), short 1 at 1,000: initial margin 100 +
    1,000 × 1.1 × 0.0005 = 100.55, MM 4 + 0.55 = 4.55, LP 100.55 − (P − 1,000) = 4.55 → 1,096.
    A low of exactly 904 / a high of exactly 1,096 liquidates."""
    account, leg, prices = bybit_liquidation(1.0, 904)
    assert prices[0] == 904.0 and len(account.liquidations) == 1
    account = Account(20_000.0)
    leg = account.add(Leg(instrument(exchange="bybit")))
    open_at(account, leg, -1.0, 1_000.0)
    assert account.cached_prices(leg) == (1_096.0, 1_100.0)
    run_bar(account, leg, T0 + HOUR, 1_000, 1_096, 1_000, 1_050)
    (liq,) = account.liquidations
    assert liq.trigger_price == 1_096.0 and liq.side == "short"


def test_a_single_cross_position_is_liquidated_at_its_lp_on_the_path():
    """Cross long 1 at 1,000 with cash 101 (wallet 100.50): LP (100.50 − 1,000) / (0.004 − 1) =
    903.11; a bar 1,000 → 1,000 → 850 reaches it (1,000 − 903.11) / 150 of the way through its
    second third; the detail leg dates it so."""
    account = Account(101.0)
    leg = account.add(DetailLeg(instrument(mode="cross")))
    open_at(account, leg, 1.0, 1_000.0)
    lp = 899.5 / 0.996
    run_bar(account, leg, T0 + HOUR, 1_000, 1_000, 850, 900)
    (liq,) = account.liquidations
    tau = 1 / 3 + (1_000 - lp) / 150 / 3
    assert abs((liq.time - Clock.to_datetime(T0 + HOUR + tau * HOUR)).total_seconds()) < 1e-3
    assert (liq.margin_mode, liq.at_open) == ("cross", False)
    assert liq.trigger_price == pytest.approx(lp, rel=1e-12)
    assert liq.liquidation_price == pytest.approx(lp, rel=1e-12)
    assert liq.equity == pytest.approx(0.004 * lp, rel=1e-9)            # at the LP: equity = MM
    assert account.wallet == pytest.approx(0.0, abs=1e-9)


def test_an_isolated_margin_call_is_raised_once_until_the_price_recovers():
    """Isolated long 1 at 1,000: ratio 0.8 at 904.52. Bar 1 to 904 (close 904.2): a call. Bar 2
    down to 904 again, closing under the level: no new call. Bar 3 crosses and recovers by its close
    (950): no call, the level is cleared. Bar 4 to 904: a call again. A bar through the LP (of
    another such position) records its call at the LP (the ratio it reached before the
    liquidation, 1), then the liquidation."""
    account, leg = isolated_long_at_1000()
    for hour, (o, h, l, c) in enumerate([(1_000, 1_000, 904, 904.2), (904.2, 910, 904, 904.1),
                                         (904.1, 950, 904, 950), (950, 950, 904, 920)], start=1):
        bar(account, leg, T0 + hour * HOUR, o, h, l, c)
        account.open_bar()
        account.close_bar()
    assert [c.time.hour for c in account.margin_calls] == [1, 4]
    account, leg = isolated_long_at_1000()
    run_bar(account, leg, T0 + HOUR, 920, 920, 850, 870)
    assert [type(r).__name__ for r in account.journal[-2:]] == ["MarginCall", "Liquidation"]
    call = account.margin_calls[-1]
    assert call.mark_price == pytest.approx(900 / 0.996, rel=1e-12)
    assert call.margin_ratio == pytest.approx(1.0, rel=1e-9)


def test_no_margin_call_for_a_position_closed_before_the_bars_end():
    """The bar crosses the 0.8 level (904.52) before a fill at t = 0.9 closes the position: margin
    calls are taken at the bar's end, of what is still open then: none."""
    account, leg = isolated_long_at_1000()
    bar(account, leg, T0 + HOUR, 1_000, 1_000, 904, 950)
    account.open_bar()
    account.check(0.9)
    account.fill(leg, -1.0, 950.0, maker=False, t=0.9, when=None)
    account.close_bar()
    assert not account.margin_calls and not account.liquidations


def test_a_short_through_its_lp_records_its_margin_call_at_the_lp():
    """Isolated short 1 at 1,000 (margin 100): LP (100 + 1,000) / (0.004 + 1) = 1,095.62; a bar up
    to 1,150 records the margin call at the LP, not at the high, then the liquidation there."""
    account = Account(1_000.0)
    leg = account.add(Leg(instrument()))
    open_at(account, leg, -1.0, 1_000.0)
    run_bar(account, leg, T0 + HOUR, 1_000, 1_150, 1_000, 1_100)
    (call,) = account.margin_calls
    (liq,) = account.liquidations
    assert call.mark_price == pytest.approx(1_100 / 1.004, rel=1e-12) == liq.trigger_price
    assert (liq.mark_price, liq.side) == (1_150.0, "short")


@pytest.mark.parametrize("held, size, o, h, l, c, tau", [
    # held at the open: the adverse extreme first (long: the low; short: the high)
    (0.5, 0.0, 1_000, 1_010, 800, 900, lambda lp: (1_000 - lp) / 200 / 3),
    (-0.5, 0.0, 1_000, 1_200, 990, 1_100, lambda lp: (lp - 1_000) / 200 / 3),
    # flat at the open (opened at t = 0): path's rule, the extreme nearer the open first
    (0.0, 0.5, 1_000, 1_010, 800, 900, lambda lp: 1 / 3 + (1_010 - lp) / 210 / 3),
    (0.0, -0.5, 1_000, 1_200, 990, 1_100, lambda lp: 1 / 3 + (lp - 990) / 210 / 3),
])
def test_the_adverse_model_orders_a_bar_by_the_side_held_at_its_open(held, size, o, h, l, c, tau):
    """``intrabar="adverse"``: a position held at the bar's open sees its adverse extreme first; a
    position opened in the bar from flat, the path's order. Isolated 10x 0.5 at 1,000 (margin 50):
    long LP (50 − 500) / (0.002 − 0.5) = 903.61, short LP (50 + 500) / (0.002 + 0.5) = 1,095.62;
    the detail leg dates the liquidation at its bar time on the path."""
    account = Account(1_000.0)
    inst = instrument()
    inst.intrabar = Intrabar.ADVERSE
    leg = account.add(DetailLeg(inst, pos=Holding(held, 1_000.0) if held else None))
    leg.margin = 50.0 if held else 0.0
    bar(account, leg, T0, o, h, l, c)
    account.open_bar()
    if size:
        account.fill(leg, size, 1_000.0, maker=False, t=0.0, when=None)
    account.close_bar()
    lp = 450 / 0.498 if (held or size) > 0 else 550 / 0.502
    (liq,) = account.liquidations
    assert liq.trigger_price == pytest.approx(lp, rel=1e-12)
    assert abs((liq.time - Clock.to_datetime(T0 + tau(lp) * HOUR)).total_seconds()) < 1e-3


def test_a_coin_margined_refusal_gives_amounts_to_8_decimals():
    """Coin-margined (Binance COIN-M, amounts in the coin): 8 decimals instead of USDT's 2."""
    account = Account(1.0)
    leg = account.add(Leg(instrument(exchange=get_rulebook("binance-coinm", core=True))))
    bar(account, leg, T0, 1_000, 1_000, 1_000, 1_000)
    problem, cost = account.opening_problem(leg, 1.0, 1.0, 1_000.0, 0.0, 1e-9)
    assert cost > 0
    assert problem == f"initial margin and fee {cost:,.8f} exceed the available balance 0.00000000"
    assert len(problem.split("fee ")[1].split(" ")[0].split(".")[1]) == 8


def test_unrealized_pnl_and_notional_at_the_marks():
    """Cross long 1 at 1,000 with a new bar closing (mark) at 1,100: PnL 100, notional 1,100;
    isolated short 1 at 500 without a new bar, last valued at 450: PnL −1 × (450 − 500) = 50,
    notional 450. Totals 150 and 1,550 over 2 positions; a flat leg counts for nothing."""
    account = Account(10_000.0)
    btc = account.add(Leg(instrument(mode="cross")))
    eth = account.add(Leg(instrument(symbol=ETH)))
    account.add(Leg(instrument(symbol="SOL/USDT:USDT")))
    bar(account, btc, T0, 1_000, 1_000, 1_000, 1_000)
    bar(account, eth, T0, 500, 500, 500, 500)
    account.fill(btc, 1.0, 1_000.0, maker=False, t=0.0, when=None)
    account.fill(eth, -1.0, 500.0, maker=False, t=0.0, when=None)
    eth.fresh = False                       # the adapter moved past ETH's bar
    eth.valprice = 450.0
    bar(account, btc, T0 + HOUR, 1_050, 1_120, 1_040, 1_100)
    assert account.unrealized() == (pytest.approx(150.0, abs=1e-9), pytest.approx(1_550.0, abs=1e-9), 2)
    assert btc.valprice == 1_100.0 and eth.valprice == 450.0


def test_a_tier_table_change_takes_effect_at_its_bar():
    """The tier history raises the MMR from 0.4 % to 1 % at 02:00: isolated long 1 at 1,000
    (margin 100) has LP (100 − 1,000) / (0.004 − 1) = 903.61 until then, (100 − 1,000) /
    (0.01 − 1) = 909.09 from the 02:00 bar on."""
    inst = instrument()
    inst.tiers = TierHistory([(T0_UTC, TierTable.single(0.004, 0.0, 125)),
                              (T0_UTC.replace(hour=2), TierTable.single(0.01, 0.0, 125))])
    account = Account(1_000.0)
    leg = account.add(Leg(inst, changes=[T0 + 2 * HOUR]))
    open_at(account, leg, 1.0, 1_000.0)
    lps = []
    for hour in range(4):
        bar(account, leg, T0 + hour * HOUR, 1_000, 1_000, 1_000, 1_000)
        lps.append(account.cached_prices(leg)[0])
    assert lps == [pytest.approx(900 / 0.996, rel=1e-12)] * 2 + [pytest.approx(900 / 0.99, rel=1e-12)] * 2
    assert leg.next_change == float("inf")


# --- margin_state: what a strategy reads (broker.get_margin_state) -------------------------------

def test_a_single_cross_positions_margin_call_is_measured_at_the_bars_extreme():
    """Cross long 1 at 1,000 with 200 (wallet 199.50 after the 0.50 fee): ratio 0.004 P /
    (199.5 + P − 1,000), 0.8 at P = 640.4 / 0.796 = 804.52, the LP at 800.5 / 0.996 = 803.71. A bar
    down to 804 (then 900) calls at its end, at the low: 3.216 / 3.5 = 0.918857..., not at the
    close (3.6 / 99.5)."""
    account = Account(200.0)
    leg = account.add(Leg(instrument(mode="cross")))
    open_at(account, leg, 1.0, 1_000.0)
    run_bar(account, leg, T0 + HOUR, 1_000, 1_000, 804, 900)
    assert not account.liquidations
    (call,) = account.margin_calls
    assert call.mark_price == 804.0 and call.margin_ratio == pytest.approx(3.216 / 3.5, rel=1e-12)
    assert call.liquidation_price == pytest.approx(800.5 / 0.996, rel=1e-12)


def test_margin_state_follows_the_instruments_rules_and_the_cross_wallet():
    """* Bybit isolated, 50x, long 1 at 20,000, MMR 0.5 %, taker 0.05 % (not Bybit's standard
      0.055 %): maintenance margin 100 + the fee to close at the bankruptcy price 20,000 × (1 −
      1/50) = 19,600 × 0.0005 = 109.8; margin 400 + 9.8; LP 409.8 + (P − 20,000) = 109.8 → 19,700.
    * The same in cross with 1,000 (wallet 990 after the 10 fee): 990 + P − 20,000 = 109.8 →
      19,119.8.
    * Binance coin-margined, on its mirror: the USDⓈ-M formula in the reciprocal price (the
      account never sees USD): a mirror long 1 at 1,000, 10x, LP 900 / 0.996; in cross with 200,
      800.5 / 0.996.
    * Binance cross long 1 at 1,000 beside an isolated ETH long 1 at 500 (margin 50) and a
      position opened and closed on SOL (fees 0.5, 0.25, 0.05 + 0.05): cross wallet 1,000 − 0.85
      − 50 = 949.15, LP 949.15 + (P − 1,000) = 0.004 P → 50.85 / 0.996; the isolated and the flat
      position are not in the cross account."""
    def long_one(cash, price, **inst):
        account = Account(cash)
        leg = account.add(Leg(instrument(**inst)))
        open_at(account, leg, 1.0, float(price))
        return account.margin_state(leg)

    bybit = dict(leverage=50.0, mmr=0.005, exchange="bybit")
    for mode, lp in (("isolated", 19_700), ("cross", 19_119.8)):
        state = long_one(1_000.0, 20_000, mode=mode, **bybit)
        assert state.maintenance_margin == pytest.approx(109.8, rel=1e-12)
        assert state.liquidation_price == pytest.approx(lp, rel=1e-12)
    for cash, mode, lp in ((1_000.0, "isolated", 900 / 0.996), (200.0, "cross", 800.5 / 0.996)):
        state = long_one(cash, 1_000, mode=mode, exchange="binance-coinm")
        assert state.liquidation_price == pytest.approx(lp, rel=1e-12)
    mixed = Account(1_000.0)
    btc = mixed.add(Leg(instrument(mode="cross")))
    eth = mixed.add(Leg(instrument(symbol=ETH)))
    sol = mixed.add(Leg(instrument(mode="cross", symbol="SOL/USDT:USDT")))
    for leg, price in ((btc, 1_000), (eth, 500), (sol, 100)):
        open_at(mixed, leg, 1.0, float(price))
    mixed.fill(sol, -1.0, 100.0, maker=False, t=0.0, when=None)
    assert mixed.cross_wallet() == pytest.approx(949.15, abs=1e-9)
    assert mixed.margin_state(btc).liquidation_price == pytest.approx(50.85 / 0.996, rel=1e-12)


def test_a_short_margin_call_is_raised_once_until_the_price_recovers():
    """Isolated short 1 at 1,000 (margin 100): ratio 0.004 P / (1,100 − P) reaches 0.8 at P =
    880 / 0.804 = 1,094.53, the LP at 1,100 / 1.004 = 1,095.62. Bar 1 up to 1,095: a call. Bar 2
    up to it again, closing above the level (1,094.6): no call, the level held. Bar 3 crosses and
    closes back at 1,050: the level is cleared. Bar 4 up to 1,095: a call again."""
    account = Account(1_000.0)
    leg = account.add(Leg(instrument()))
    open_at(account, leg, -1.0, 1_000.0)
    for hour, (o, h, l, c) in enumerate([(1_000, 1_095, 1_000, 1_094.8), (1_094.8, 1_095, 1_090, 1_094.6),
                                         (1_094.6, 1_095, 1_050, 1_050), (1_050, 1_095, 1_050, 1_080)],
                                        start=1):
        bar(account, leg, T0 + hour * HOUR, o, h, l, c)
        account.open_bar()
        account.close_bar()
    assert leg.warn == [pytest.approx(880 / 0.804, rel=1e-12)]
    assert [c.time.hour for c in account.margin_calls] == [1, 4] and not account.liquidations


@pytest.mark.parametrize("side", [1.0, -1.0])
def test_a_margin_call_level_reached_exactly_calls_and_a_close_exactly_there_does_not_clear_it(side):
    """The level's price w (long: 720 / 0.796 = 904.52, short: 880 / 0.804 = 1,094.53, isolated 1
    at 1,000 with 100): a bar whose adverse extreme is w exactly calls (ratio 0.8 is reached); a
    bar touching it again and closing exactly at w keeps the level (the price has not recovered
    past it), so a third bar through it, closing 0.1 better, does not call again."""
    account = Account(1_000.0)
    leg = account.add(Leg(instrument()))
    open_at(account, leg, side, 1_000.0)
    account.cached_prices(leg)
    (w,) = leg.warn
    assert w == pytest.approx(720 / 0.796 if side > 0 else 880 / 0.804, rel=1e-12)
    away = side * 5                        # 5 on the safe side of w (the LP is 0.91 / 1.09 beyond it)
    for hour, (o, extreme, c) in enumerate([(w + away, w, w + away), (w + away, w, w),
                                            (w, w - away / 50, w + away / 50)], start=1):
        h, l = (max(o, c), extreme) if side > 0 else (extreme, min(o, c))
        bar(account, leg, T0 + hour * HOUR, o, h, l, c)
        account.open_bar()
        account.close_bar()
    assert [c.time.hour for c in account.margin_calls] == [1]
    assert account.margin_calls[0].margin_ratio == pytest.approx(0.8, rel=1e-9)


def test_records_take_their_times_from_the_accounts_own_clock():
    """An adapter may key its bars by anything its clock converts (here: hours since 2024-01-01).
    Isolated long 1 at 1,000, LP 903.61; bar 1 (2024-01-01 01:00) goes down to 850: the
    liquidation and the margin call are recorded at 01:00 by that clock, not at POSIX second 1."""
    class Hours(Clock):
        @staticmethod
        def to_datetime(key):
            return T0_UTC + timedelta(hours=key)

        @staticmethod
        def to_key(when):
            return (when - T0_UTC) / timedelta(hours=1)

    account = Account(1_000.0, clock=Hours)
    leg = account.add(Leg(instrument()))
    bar(account, leg, 0.0, 1_000, 1_000, 1_000, 1_000)
    account.fill(leg, 1.0, 1_000.0, maker=False, t=0.0, when=None)
    run_bar(account, leg, 1.0, 1_000, 1_000, 850, 900)
    (liq,) = account.liquidations
    (call,) = account.margin_calls
    assert liq.time == call.time == datetime(2024, 1, 1, 1, tzinfo=timezone.utc)


def test_a_cross_positions_prices_follow_an_isolated_legs_funding_then_fill():
    """Cross BTC long 1 at 1,000 beside isolated ETH long 1 at 500 (10x), cash 1,000: fees 0.50 and
    0.25, ETH's margin 50, cross wallet 949.25. Next bar ETH pays 0.1 % funding at its open (0.50,
    from its own margin: the cross wallet does not move), then buys 1 more at 500 (fee 0.25, margin
    + 50): cross wallet 899, and BTC's LP moves from 50.75 / 0.996 to 101 / 0.996 (899 + (P − 1,000) =
    0.004 P)."""
    account = Account(1_000.0)
    btc = account.add(Leg(instrument(mode="cross")))
    eth = account.add(Leg(instrument(symbol=ETH)))
    bar(account, btc, T0, 1_000, 1_000, 1_000, 1_000)
    bar(account, eth, T0, 500, 500, 500, 500)
    account.fill(btc, 1.0, 1_000.0, maker=False, t=0.0, when=None)
    account.fill(eth, 1.0, 500.0, maker=False, t=0.0, when=None)
    assert account.cross_wallet() == pytest.approx(949.25, abs=1e-9)
    assert account.cached_prices(btc)[0] == pytest.approx(50.75 / 0.996, rel=1e-12)
    bar(account, btc, T0 + HOUR, 1_000, 1_000, 1_000, 1_000)
    bar(account, eth, T0 + HOUR, 500, 500, 500, 500, funding_rate=0.001)
    account.open_bar()
    assert account.cross_wallet() == pytest.approx(949.25, abs=1e-9) and eth.margin == pytest.approx(49.5)
    account.fill(eth, 1.0, 500.0, maker=False, t=0.0, when=None)
    assert account.cross_wallet() == pytest.approx(899.0, abs=1e-9)
    assert account.cached_prices(btc)[0] == pytest.approx(101 / 0.996, rel=1e-12)
