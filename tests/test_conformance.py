"""Conformance: backtrader strategies run under btperp at 1x equal backtrader's own BackBroker.

Every case is a strategy written for this suite after one of backtrader's samples (order execution
types, bracket, oco, order_target, multidata, cheat-on-open, data resampling/replay, optimization);
it runs once with ``btperp.install(leverage=1, maker_fee=0, taker_fee=0)`` and once with
backtrader's own ``BackBroker`` in its default configuration, on the same feed, and both runs must
give the same fills (bar, type, price, size), the same order outcomes (cancelled, expired), the
same closed trades and the same account value at every bar (to 1e-6).

Why these two configurations agree exactly (the expected values are backtrader's, not btperp's):

* BackBroker's default commission scheme (with backtrader's fractional-size recipe,
  :class:`FractionalCommInfo`: ``getsize`` not truncated to integers, which is what
  ``order_target_value``/``_percent`` size with; btperp sizes crypto in fractions) is stock-like
  with zero commission: a position of size q
  bought at p takes q·p of cash and is valued at q·close, so the account value is
  cash + Σ q·close = initial cash + realized PnL + q·(close − entry), for longs and shorts alike.
  btperp's value is its wallet (initial cash + realized PnL − fees − funding) plus the unrealized
  PnL at the *mark* close (Binance "margin balance"). With zero fees, no funding and a feed whose
  mark prices equal its last prices (:func:`flat_mark`), the two are the same number.
* At 1x btperp's initial margin is the full notional (Binance "Leverage and Margin": notional /
  leverage), which is what the stock-like check asks of a long; the cases trade well inside the
  cash so neither broker refuses an order (a short at 1x needs margin under btperp but not under a
  stock-like BackBroker: the sizes keep that difference out of reach).
* A futures-like ``CommInfoBase(stocklike=False, margin=...)`` would move cash each bar
  (``cashadjust``) and value positions at their margin; its value is the same but its ``cash``
  differs, and ``order_target_percent``/sizers read value only, so the default is the simpler
  reference.

With fees and funding on (:func:`test_fees_and_funding_are_the_whole_difference`) the fills and the
gross trade PnL stay the same and the account value differs by exactly the fees and funding btperp
reports.
"""

import datetime as dt
import math
import warnings

import backtrader as bt
import numpy as np
import pytest

import btperp
from btperp.bt.feed import feed_from_frame

START, END = "2024-02-01", "2024-02-21"
MARK = ("mark_open", "mark_high", "mark_low", "mark_close")
CASH = 100_000.0
_FRAMES = {}


def frame_of(symbol, funding=False):
    key = (symbol, funding)
    if key not in _FRAMES:
        _FRAMES[key] = flat_mark(btperp.load(symbol, start=START, end=END), funding)
    return _FRAMES[key]


def flat_mark(frame, funding=False):
    """The frame with its mark prices replaced by its last prices; without ``funding``, no events."""
    out = frame.copy()
    for mark, last in zip(MARK, ("open", "high", "low", "close")):
        out[mark] = out[last]
    if not funding:
        for name in ("funding_rate", "funding_per_unit", "funding_open_per_unit"):
            out[name] = np.nan
        out["funding_events"] = 0
        out["funding_time"] = out["funding_time"].iloc[:0].reindex(out.index)
    return out


class FractionalCommInfo(bt.CommissionInfo):
    """backtrader's own recipe for fractional sizes (its blog, "Fractional Sizes", 2019): the
    default scheme (stock-like, zero commission) with ``getsize`` not truncated to whole units."""

    def getsize(self, price, cash):
        return self.p.leverage * (cash / price)


# --- what a run is compared by -----------------------------------------------------------------

class Tape(bt.Analyzer):
    """Fills, order outcomes, closed trades and the account value at each bar (kept by optstrategy)."""

    def start(self):
        self.rep = {"fills": [], "events": [], "trades": [], "values": []}

    def notify_order(self, order):
        when = len(self.strategy)
        if order.status in (order.Partial, order.Completed):
            self.rep["fills"].append((order.data._name, bt.num2date(order.executed.dt).isoformat(),
                                      order.getordername(), order.isbuy(), order.executed.price,
                                      order.executed.size))
        elif order.status in (order.Canceled, order.Expired, order.Margin, order.Rejected):
            self.rep["events"].append((order.data._name, when, order.getordername(), order.isbuy(),
                                       order.getstatusname()))

    def notify_trade(self, trade):
        if trade.isclosed:
            self.rep["trades"].append((trade.data._name, trade.dtopen, trade.dtclose, trade.pnl,
                                       trade.barlen))

    def next(self):
        self.rep["values"].append(self.strategy.broker.getvalue())

    def get_analysis(self):
        return self.rep


def run_case(strategy, broker, symbols=("BTCUSDT",), add="adddata", add_kwargs=None, opt=None,
             funding=False, fees=False, **cerebro_kwargs):
    """Run ``strategy`` with ``broker`` ('perp' or 'back'); the Tape of each run."""
    cerebro = bt.Cerebro(stdstats=False, **cerebro_kwargs)
    for symbol in symbols:
        feed = feed_from_frame(frame_of(symbol, funding), name=symbol)
        getattr(cerebro, add)(feed, **(add_kwargs or {}))
    if opt:
        cerebro.optstrategy(strategy, **opt)
    else:
        cerebro.addstrategy(strategy)
    cerebro.addanalyzer(Tape, _name="tape")
    perp = None
    if broker == "perp":
        fee = {} if fees else {"maker_fee": 0.0, "taker_fee": 0.0}
        perp = btperp.install(cerebro, cash=CASH, leverage=1, **fee)
    else:
        cerebro.broker.setcash(CASH)
        cerebro.broker.addcommissioninfo(FractionalCommInfo())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = cerebro.run()
    if opt:
        return [r[0].analyzers.tape.get_analysis() for r in results], perp
    return results[0].analyzers.tape.get_analysis(), perp


def same_fills(mine, theirs):
    """Same feed, time, type and side; price and size equal to 1e-12 (an ``order_target_percent``
    size is value × percent / price and the two brokers sum their value in another order; a fill
    price is backtrader's size-weighted average of the order's executions)."""
    return len(mine) == len(theirs) and all(
        a[:4] == b[:4] and all(math.isclose(x, y, rel_tol=1e-12, abs_tol=1e-15) for x, y in zip(a[4:], b[4:]))
        for a, b in zip(mine, theirs))


def assert_equal_runs(mine, theirs):
    assert same_fills(mine["fills"], theirs["fills"]), first_difference(mine["fills"], theirs["fills"])
    assert mine["events"] == theirs["events"]
    assert len(mine["trades"]) == len(theirs["trades"])
    for a, b in zip(mine["trades"], theirs["trades"]):
        assert a[:3] == b[:3] and a[4] == b[4] and a[3] == pytest.approx(b[3], abs=1e-6)
    assert len(mine["values"]) == len(theirs["values"])
    assert np.allclose(mine["values"], theirs["values"], rtol=0, atol=1e-6)


def first_difference(a, b):
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return f"first difference at {i}: {x} != {y}"
    return f"lengths {len(a)} != {len(b)}"


# --- strategies (module level: optstrategy with several processes pickles them) -------------------

class Base(bt.Strategy):
    """A schedule of orders on bar counts: what the case does at bar ``n`` (``act``)."""

    params = (("period", 20), ("size", 0.5))

    def next(self):
        self.act(len(self))

    def act(self, n):
        raise NotImplementedError


class MarketCase(Base):
    """Market orders, a reversal and close() (backtrader's order-execution sample, Market)."""

    def act(self, n):
        p = self.p.period
        if n % (2 * p) == 5:
            self.buy(size=self.p.size)
        elif n % (2 * p) == p:
            self.sell(size=2 * self.p.size)                 # reverse to short
        elif n % (2 * p) == p + 7:
            self.close()


class CloseCase(Base):
    def act(self, n):
        if n % 16 == 3:
            self.buy(size=0.4, exectype=bt.Order.Close)
        elif n % 16 == 11:
            self.sell(size=0.4, exectype=bt.Order.Close)


class LimitCase(Base):
    """Limits that fill, limits that expire (``valid`` as a timedelta and as a date number)."""

    def act(self, n):
        if self.position or n % 6:
            if self.position and n % 6 == 3:
                self.sell(size=self.position.size, exectype=bt.Order.Limit,
                          price=self.data.close[0] * 1.004, valid=dt.timedelta(hours=4))
            return
        close = self.data.close[0]
        self.buy(size=0.3, exectype=bt.Order.Limit, price=close * 0.997,
                 valid=self.data.datetime[0] + 3 / 24)


class StopCase(Base):
    def start(self):
        self.exit = None

    def act(self, n):
        if n % 10 == 1 and not self.position:
            self.buy(size=0.3, exectype=bt.Order.Stop, price=self.data.close[0] * 1.003,
                     valid=dt.timedelta(hours=6))
        elif n % 10 == 6 and self.position and not (self.exit and self.exit.alive()):
            self.exit = self.sell(size=self.position.size, exectype=bt.Order.Stop,
                                  price=self.data.close[0] * 0.998)


class StopLimitCase(Base):
    def act(self, n):
        close = self.data.close[0]
        if n % 10 == 1 and not self.position:
            self.buy(size=0.3, exectype=bt.Order.StopLimit, price=close * 1.002, plimit=close * 1.004,
                     valid=dt.timedelta(hours=8))
        elif n % 10 == 7 and self.position:
            self.close()


class StopTrailCase(Base):
    """The stop-loss sample: a market entry, then a trailing stop (amount) or trailing stop-limit."""

    params = (("limit", False),)

    def start(self):
        self.exit = None

    def act(self, n):
        if not self.position and self.exit is None and n % 5 == 1:
            self.buy(size=0.3)
        elif self.position and self.exit is None:
            close = self.data.close[0]
            if self.p.limit:
                self.exit = self.sell(size=self.position.size, exectype=bt.Order.StopTrailLimit,
                                      trailpercent=0.01, plimit=close * 0.98)
            else:
                self.exit = self.sell(size=self.position.size, exectype=bt.Order.StopTrail,
                                      trailamount=close * 0.01)

    def notify_order(self, order):            # the strategy is notified with a copy of the order
        if self.exit is not None and order.ref == self.exit.ref and not order.alive():
            self.exit = None


class StopTrailLimitCase(StopTrailCase):
    params = (("limit", True),)


class BracketManualCase(Base):
    """backtrader's bracket sample, by hand: a limit parent, stop and limit children (transmit)."""

    def start(self):
        self.live = []

    def act(self, n):
        if self.position or any(o.alive() for o in self.live) or n % 4:
            return
        close = self.data.close[0]
        main = self.buy(size=0.4, exectype=bt.Order.Limit, price=close * 0.998, transmit=False,
                        valid=dt.timedelta(hours=5))
        low = self.sell(size=0.4, exectype=bt.Order.Stop, price=close * 0.985, transmit=False, parent=main)
        high = self.sell(size=0.4, exectype=bt.Order.Limit, price=close * 1.01, transmit=True, parent=main)
        self.live = [main, low, high]


class BuyBracketCase(BracketManualCase):
    def act(self, n):
        if self.position or any(o.alive() for o in self.live) or n % 4:
            return
        close = self.data.close[0]
        children = dict(stopargs=dict(valid=None), limitargs=dict(valid=None))   # only the entry expires
        if n % 8:
            self.live = self.buy_bracket(size=0.4, price=close * 0.998, stopprice=close * 0.985,
                                         limitprice=close * 1.01, valid=dt.timedelta(hours=5), **children)
        else:
            self.live = self.sell_bracket(size=0.2, price=close * 1.002, stopprice=close * 1.015,
                                          limitprice=close * 0.99, valid=dt.timedelta(hours=5), **children)


class LargeBracketCase(BracketManualCase):
    """A market-entry bracket with 90 % of the account's value (a user's report: the children were
    margin-checked as if each opened a new short, and refusing them killed every bracket)."""

    def act(self, n):
        if self.position or any(o.alive() for o in self.live) or n % 4:
            return
        close = self.data.close[0]
        size = round(0.9 * self.broker.getvalue() / close, 6)
        bracket = self.buy_bracket if n % 8 else self.sell_bracket
        sign = 1 if n % 8 else -1
        self.live = bracket(size=size, exectype=bt.Order.Market, stopprice=close * (1 - sign * 0.01),
                            limitprice=close * (1 + sign * 0.01))


class OcoCase(Base):
    """backtrader's oco sample: three entries, the first to fill cancels the others."""

    def act(self, n):
        if n % 12 == 1 and not self.position:
            close = self.data.close[0]
            o1 = self.buy(size=0.3, exectype=bt.Order.Limit, price=close * 0.997, valid=dt.timedelta(hours=6))
            self.buy(size=0.3, exectype=bt.Order.Limit, price=close * 0.994, valid=dt.timedelta(hours=6), oco=o1)
            self.buy(size=0.3, exectype=bt.Order.Stop, price=close * 1.004, valid=dt.timedelta(hours=6), oco=o1)
        elif n % 12 == 9 and self.position:
            self.close()


class CancelCase(Base):
    def start(self):
        self.waiting = None

    def act(self, n):
        if self.waiting is not None and self.waiting.alive() and n % 3 == 0:
            self.cancel(self.waiting)
        if n % 7 == 1:
            self.waiting = self.buy(size=0.2, exectype=bt.Order.Limit, price=self.data.close[0] * 0.995)
        if n % 7 == 5 and self.position:
            self.close()


class TargetCase(Base):
    """order_target_size / _value / _percent in turn (backtrader's order_target sample)."""

    def act(self, n):
        step = n % 30
        if step == 1:
            self.order_target_size(target=0.5)
        elif step == 8:
            self.order_target_value(target=20_000)
        elif step == 15:
            self.order_target_percent(target=0.3)
        elif step == 22:
            self.order_target_percent(target=-0.2)
        elif step == 27:
            self.order_target_size(target=0)


class TwoDatasCase(Base):
    """backtrader's multidata sample: orders on two feeds."""

    def act(self, n):
        btc, eth = self.datas
        if n % 10 == 2:
            self.buy(data=btc, size=0.3)
            self.sell(data=eth, size=3.0)
        elif n % 10 == 7:
            self.close(data=btc)
            self.close(data=eth)


class CheatOnOpenCase(Base):
    """backtrader's cheat-on-open sample: orders in next_open fill at this bar's open."""

    def next(self):
        pass

    def next_open(self):
        n = len(self)
        if n % 8 == 2:
            self.buy(size=0.3)
        elif n % 8 == 6:
            self.close()


# --- the cases ---------------------------------------------------------------------------------

CASES = {
    "market_close_reversal": dict(strategy=MarketCase),
    "close": dict(strategy=CloseCase),
    "limit_valid_expiry": dict(strategy=LimitCase),
    "stop": dict(strategy=StopCase),
    "stoplimit": dict(strategy=StopLimitCase),
    "stoptrail": dict(strategy=StopTrailCase),
    "stoptraillimit": dict(strategy=StopTrailLimitCase),
    "bracket_manual": dict(strategy=BracketManualCase),
    "buy_bracket_sell_bracket": dict(strategy=BuyBracketCase),
    "bracket_90_percent": dict(strategy=LargeBracketCase),
    "oco": dict(strategy=OcoCase),
    "cancel": dict(strategy=CancelCase),
    "order_target": dict(strategy=TargetCase),
    "two_datas": dict(strategy=TwoDatasCase, symbols=("BTCUSDT", "ETHUSDT")),
    "cheat_on_open": dict(strategy=CheatOnOpenCase, cheat_on_open=True),
    "resampledata_4h": dict(strategy=MarketCase, add="resampledata",
                            add_kwargs=dict(timeframe=bt.TimeFrame.Minutes, compression=240)),
    "replaydata_1d": dict(strategy=LimitCase, add="replaydata", add_kwargs=dict(timeframe=bt.TimeFrame.Days)),
    "runonce_off": dict(strategy=MarketCase, runonce=False),
    "preload_off": dict(strategy=OcoCase, preload=False),
    "exactbars_1": dict(strategy=TargetCase, exactbars=1),
    "exactbars_-1": dict(strategy=BuyBracketCase, exactbars=-1),
}


@pytest.mark.parametrize("case", list(CASES))
def test_equals_backbroker(case):
    spec = CASES[case]
    mine, _ = run_case(broker="perp", **spec)
    theirs, _ = run_case(broker="back", **spec)
    assert theirs["fills"], "the case must trade"
    assert_equal_runs(mine, theirs)


@pytest.mark.parametrize("maxcpus", [1, 2])
def test_optstrategy_equals_backbroker(maxcpus):
    opt = dict(period=(10, 20, 30))
    mine, _ = run_case(MarketCase, "perp", opt=opt, maxcpus=maxcpus)
    theirs, _ = run_case(MarketCase, "back", opt=opt, maxcpus=1)
    assert len(mine) == len(theirs) == 3
    for a, b in zip(mine, theirs):
        assert_equal_runs(a, b)


@pytest.mark.parametrize("strategy", [MarketCase, LimitCase, TwoDatasCase])
def test_fees_and_funding_are_the_whole_difference(strategy):
    """Real funding events, Binance's fees (taker, maker for limits at their price): same fills and
    gross trades as BackBroker without fees; the account value lower by exactly the fees and the
    funding btperp reports (its own records, summed)."""
    symbols = ("BTCUSDT", "ETHUSDT") if strategy is TwoDatasCase else ("BTCUSDT",)
    mine, perp = run_case(strategy, "perp", symbols=symbols, funding=True, fees=True)
    theirs, _ = run_case(strategy, "back", symbols=symbols, funding=True)
    assert same_fills(mine["fills"], theirs["fills"]) and mine["events"] == theirs["events"]
    assert [t[:3] for t in mine["trades"]] == [t[:3] for t in theirs["trades"]]
    assert np.allclose([t[3] for t in mine["trades"]], [t[3] for t in theirs["trades"]], atol=1e-6)
    assert perp.fees_paid > 0 and perp.funding_payments
    fees = math.fsum(f.fee for f in perp.fills)
    funding = math.fsum(p.payment for p in perp.funding_payments)
    assert theirs["values"][-1] - mine["values"][-1] == pytest.approx(fees + funding, abs=1e-6)
