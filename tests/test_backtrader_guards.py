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
