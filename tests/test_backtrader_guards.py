"""Guards: the version and the backtrader internals btperp relies on. A failure here means an
upgrade changed something btperp depends on; read the test before touching the pin."""

import array
import inspect

import backtrader as bt
from backtrader.linebuffer import LineBuffer


def test_backtrader_is_the_pinned_version():
    assert bt.__version__ == "1.9.78.123"


def test_unbounded_line_buffers_are_plain_double_arrays():
    """PerpData.preload replaces ``line.array`` with a filled ``array('d')`` (bulk preload)."""
    buf = LineBuffer()
    assert buf.mode == LineBuffer.UnBounded
    buf.reset()
    assert isinstance(buf.array, array.array) and buf.array.typecode == "d"
    assert (buf.idx, buf.lencount, buf.extension) == (-1, 0, 0)
    buf.array.extend([1.0, 2.0, 3.0])
    buf.home()
    assert (buf.idx, len(buf), buf.buflen()) == (-1, 0, 3)
    buf.advance()
    assert buf[0] == 1.0


def test_preload_is_load_until_exhausted_then_last_and_home():
    """The bulk path is equivalent only while AbstractDataBase.preload stays this loop."""
    source = inspect.getsource(bt.feed.AbstractDataBase.preload)
    assert "while self.load()" in source and "self._last()" in source and "self.home()" in source


def test_feed_attributes_the_bulk_check_reads_exist_after_start():
    """PerpData._bulk_ok reads these once the feed has started (as cerebro does before preload)."""
    import pandas as pd
    data = bt.feeds.PandasData(dataname=pd.DataFrame(
        {"open": [1.0], "high": [1.0], "low": [1.0], "close": [1.0], "volume": [0.0]},
        index=pd.DatetimeIndex(["2024-01-01"])))
    bt.Cerebro().adddata(data)
    data._start()
    assert data._filters == [] and data._ffilters == []
    assert len(data._barstack) == 0 and len(data._barstash) == 0
    assert data._tzinput is None                   # no tz given: times taken as they are (UTC)
    tz_data = bt.feeds.PandasData(dataname=data.p.dataname, tzinput="Europe/Berlin")
    bt.Cerebro().adddata(tz_data)
    tz_data._start()
    assert tz_data._tzinput is not None            # ... and with one, the bulk path must step aside


def test_date_numbers_are_days_since_year_one():
    """btperp.bt.feed.to_bt_num assumes backtrader's date2num epoch."""
    import datetime as dt
    assert bt.date2num(dt.datetime(1970, 1, 1)) == 719163.0


# --- PerpBroker --------------------------------------------------------------------------------
# PerpBroker subclasses BackBroker, re-implements next(), check_submitted(), _execute() and
# _get_value(), and calls the helpers below. If an upgrade changes any of them, re-read the
# broker against the new source before updating these fingerprints.

def _fingerprint(func) -> str:
    import hashlib
    return hashlib.sha256(inspect.getsource(func).encode()).hexdigest()[:16]


def test_the_backbroker_methods_perpbroker_reimplements_are_unchanged():
    BB = bt.brokers.BackBroker
    assert _fingerprint(BB.next) == "71950e95764341c7"
    assert _fingerprint(BB.check_submitted) == "4cd7220971d8790d"
    assert _fingerprint(BB._execute) == "b6cc08ff1d7d4c9b"
    assert _fingerprint(BB._get_value) == "fe70f78e7094e5a2"


def test_backbroker_helpers_and_state_perpbroker_uses():
    broker = bt.brokers.BackBroker()
    broker.start()
    for name in ("_take_children", "submit_accept", "_ococheck", "_bracketize", "_try_exec",
                 "_process_order_history", "cancel", "notify", "addcommissioninfo"):
        assert callable(getattr(broker, name)), name
    for name in ("submitted", "pending", "_toactivate", "positions", "d_credit", "_cash_addition",
                 "_fundshares", "_fundval", "startingcash", "orders", "notifs", "comminfo"):
        assert hasattr(broker, name), name
    # fills reach _execute(order, ago=0, price=...): PerpBroker books them there
    source = inspect.getsource(bt.brokers.BackBroker._try_exec_market)
    assert "self._execute(order, ago=0, price=p, dtcoc=dtcoc)" in source
    assert inspect.signature(bt.brokers.BackBroker._execute).parameters.keys() == {
        "self", "order", "ago", "price", "cash", "position", "dtcoc"}


def test_cerebro_links_the_broker_and_starts_it_before_the_feeds():
    cerebro = bt.Cerebro()
    broker = bt.brokers.BackBroker()
    cerebro.broker = broker
    assert broker.cerebro is cerebro
    source = inspect.getsource(bt.Cerebro.runstrategies)
    # the broker starts before the feeds preload: PerpBroker sets itself up at its first next()
    assert source.index("self._broker.start()") < source.index("data.preload()")
    assert "self.runningstrats = runstrats" in source
    assert "self._broker.next()" in inspect.getsource(bt.Cerebro._brokernotify)


def test_orders_the_strategy_is_notified_of():
    source = inspect.getsource(bt.Strategy._addnotification)
    # a liquidation order must not be 'simulated', or notify_order would never see it
    assert "if not order.p.simulated" in source and "exbit.closed" in source
    data = bt.feeds.PandasData(dataname=__import__("pandas").DataFrame(
        {"open": [1.0], "high": [1.0], "low": [1.0], "close": [1.0], "volume": [0.0]},
        index=__import__("pandas").DatetimeIndex(["2024-01-01"])))
    cerebro = bt.Cerebro()
    cerebro.adddata(data)
    data._start()
    data.preload()
    data.advance()
    order = bt.order.SellOrder(data=data, size=1.0, price=1.0, exectype=bt.Order.Market)
    order.submit()
    order.accept()
    order.execute(data.datetime[0], -1.0, 1.0, -1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0)
    assert order.status == bt.Order.Completed
    assert order.clone().info is order.info            # order.info travels with notifications


def test_position_update_closes_to_price_zero():
    pos = bt.Position()
    pos.update(0.3, 100.0)
    pos.update(-0.3, 110.0)
    assert pos.size == 0 and pos.price == 0.0


def test_current_value_of_a_line_is_array_at_underscore_idx():
    """PerpBroker reads ``buf.array[buf._idx]`` (``buf[0]`` without its property lookups)."""
    for qbuffer in (False, True):
        buf = LineBuffer()
        if qbuffer:
            buf.qbuffer(savemem=1)
        buf.reset()
        for x in (1.0, 2.0, 3.0):
            buf.forward()
            buf[0] = x
            assert buf.array[buf._idx] == buf[0] == x and buf.lencount == len(buf)


def test_fixed_size_tranches_round_to_integers_which_btperp_replaces():
    from btperp.bt.sizers import FRACTIONAL
    sizer = bt.sizers.FixedSize(stake=0.5, tranches=2)
    assert sizer._getsizing(None, 0, None, True) == 0
    assert FRACTIONAL[bt.sizers.FixedSize](stake=0.5, tranches=2)._getsizing(None, 0, None, True) == 0.25
    assert hasattr(bt.Strategy, "getsizer") and hasattr(bt.Strategy, "setsizer")
