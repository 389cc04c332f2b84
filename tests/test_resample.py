"""resampledata and replaydata on btperp feeds (PerpData and plain feeds with attach()).

Expected values come from outside the feed code: ``btperp.load(timeframe=...)`` (pandas' resample of
the frame) for the lines, and the broker's own run on the 1h feed and on ``load_feed(timeframe=...)``
for the liquidation (the acceptance scenario of issue 16: ETHUSDT, 3x long from the 18 May 2021
open with 1000 USDT of margin, liquidated on the mark in the 19 May 12:00 4h bar).
"""

import datetime as dt
import warnings

import backtrader as bt
import numpy as np
import pandas as pd
import pytest

import btperp
from btperp.bt.feed import to_bt_num
from btperp.errors import EarliestTableAssumed

LINES = ("datetime", "open", "high", "low", "close", "volume", "mark_open", "mark_high", "mark_low",
         "mark_close", "funding_rate", "funding_per_unit", "funding_open_per_unit", "funding_events",
         "funding_time")
START, END = "2021-05-10", "2021-05-24"
ETH = dict(start="2021-05-17", end="2021-05-21")


@pytest.fixture(autouse=True)
def quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EarliestTableAssumed)
        yield


class Recorder(bt.Strategy):
    def __init__(self):
        self.rows = []

    def next(self):
        self.rows.append(tuple(getattr(self.data, name)[0] for name in LINES))


def rows_of(add, **cerebro_kwargs):
    cerebro = bt.Cerebro(stdstats=False, **cerebro_kwargs)
    add(cerebro)
    cerebro.addstrategy(Recorder)
    return np.array(cerebro.run()[0].rows)


def frame_rows(frame):
    cols = [to_bt_num(frame.index)] + [frame[n].to_numpy(float, na_value=np.nan) for n in LINES[1:-1]]
    cols.append(to_bt_num(frame["funding_time"]))
    return np.column_stack(cols)


def assert_same(a, b):
    assert a.shape == b.shape
    assert np.array_equal(np.isnan(a), np.isnan(b))
    assert np.allclose(np.nan_to_num(a), np.nan_to_num(b), rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("timeframe, bt_tf, compression", [("4h", bt.TimeFrame.Minutes, 240),
                                                            ("1d", bt.TimeFrame.Days, 1)])
@pytest.mark.parametrize("mode", [dict(), dict(runonce=False), dict(preload=False, runonce=False)])
def test_resampled_lines_equal_the_resampled_frame(timeframe, bt_tf, compression, mode):
    rows = rows_of(lambda c: c.resampledata(btperp.load_feed("ETHUSDT", start=START, end=END),
                                            timeframe=bt_tf, compression=compression), **mode)
    expected = frame_rows(btperp.load("ETHUSDT", timeframe=timeframe, start=START, end=END))
    assert_same(rows, expected)
    # the crash bar: its mark low is the mark's, not the last price's
    crash = list(expected[:, 0]).index(to_bt_num(pd.DatetimeIndex(["2021-05-19 12:00" if timeframe == "4h"
                                                                    else "2021-05-19"], tz="UTC"))[0])
    assert round(rows[crash, LINES.index("mark_low")], 2) == 1764.26
    assert rows[crash, LINES.index("low")] == 1400.73


def test_replayed_ticks_build_the_day_and_end_on_the_daily_bar():
    hourly = btperp.load("ETHUSDT", start=START, end=END)
    daily = frame_rows(btperp.load("ETHUSDT", timeframe="1d", start=START, end=END))
    rows = rows_of(lambda c: c.replaydata(btperp.load_feed("ETHUSDT", start=START, end=END),
                                          timeframe=bt.TimeFrame.Days))
    assert len(rows) == len(hourly)                     # one next() per source bar
    assert np.array_equal(rows[:, 0], to_bt_num(hourly.index))   # each tick at its source bar's time
    day = hourly.index.floor("1D")
    # the running extremes of the day so far, as the price lines
    expected_low = hourly["mark_low"].groupby(day).cummin().to_numpy()
    assert np.array_equal(rows[:, LINES.index("mark_low")], expected_low)
    assert np.array_equal(rows[:, LINES.index("low")], hourly["low"].groupby(day).cummin().to_numpy())
    last = np.r_[day[1:] != day[:-1], True]             # the day's last tick holds the daily bar
    assert_same(rows[last, 1:], daily[:, 1:])


class LongAt(bt.Strategy):
    """Buys 3000 USDT of ETH at 3x (1000 USDT of margin) on the bar stamped ``at``."""
    params = (("at", None),)

    def __init__(self):
        self.sent = False

    def next(self):
        if not self.sent and self.data.datetime.datetime(0) == self.p.at:
            self.buy(size=3000 / 3283.23)
            self.sent = True


def liquidation(add, at, stamp=dt.timedelta(0)):
    """(time, trigger, prices, loss, funding) of the liquidation; the entry fill is checked at the
    18 May open, stamped ``stamp`` later on close-stamped bars."""
    cerebro = bt.Cerebro(stdstats=False)
    add(cerebro)
    cerebro.addstrategy(LongAt, at=at)
    broker = btperp.install(cerebro, cash=1010, leverage=3)
    cerebro.run()
    assert broker.fills[0].price == 3283.23 and broker.fills[0].time == utc(2021, 5, 18) + stamp
    assert len(broker.liquidations) == 1
    liq = broker.liquidations[0]
    return (liq.time, liq.trigger, liq.trigger_price, liq.fill_price, liq.loss,
            round(broker.funding_paid, 9)), liq


def utc(*args):
    return dt.datetime(*args, tzinfo=dt.timezone.utc)


def test_acceptance_resampled_4h_and_1d_liquidate_as_load_feed():
    hourly = lambda: btperp.load_feed("ETHUSDT", **ETH)       # noqa: E731
    four, liq = liquidation(lambda c: c.resampledata(hourly(), timeframe=bt.TimeFrame.Minutes,
                                                     compression=240), dt.datetime(2021, 5, 17, 20))
    assert liq.time == utc(2021, 5, 19, 12) and liq.trigger == "mark"
    assert round(liq.mark_price, 2) == 1764.26            # the 4h bar's mark low, not a stale one
    assert four == liquidation(lambda c: c.adddata(btperp.load_feed("ETHUSDT", timeframe="4h", **ETH)),
                               dt.datetime(2021, 5, 17, 20))[0]
    day, liq = liquidation(lambda c: c.resampledata(hourly(), timeframe=bt.TimeFrame.Days),
                           dt.datetime(2021, 5, 17))
    assert liq.time == utc(2021, 5, 19)
    assert day == liquidation(lambda c: c.adddata(btperp.load_feed("ETHUSDT", timeframe="1d", **ETH)),
                              dt.datetime(2021, 5, 17))[0]


def test_acceptance_replayed_day_liquidates_in_the_12_00_tick_as_the_1h_feed():
    replayed, liq = liquidation(lambda c: c.replaydata(btperp.load_feed("ETHUSDT", **ETH),
                                                       timeframe=bt.TimeFrame.Days), dt.datetime(2021, 5, 17, 23))
    assert liq.time == utc(2021, 5, 19, 12)
    # the tick's own mark low (the 12:00 hour's), not the day's running low
    assert liq.mark_price == btperp.load("ETHUSDT", **ETH).loc["2021-05-19 12:00", "mark_low"]
    assert replayed == liquidation(lambda c: c.adddata(btperp.load_feed("ETHUSDT", **ETH)),
                                   dt.datetime(2021, 5, 17, 23))[0]


def plain_feed(close_stamped=True):
    """A plain backtrader feed of the ETHUSDT prices (no mark lines), stamped at bar close."""
    frame = btperp.load("ETHUSDT", **ETH)
    prices = frame[["open", "high", "low", "close", "volume"]].copy()
    prices.index = prices.index.tz_convert(None) + pd.Timedelta(hours=1 if close_stamped else 0)
    return bt.feeds.PandasData(dataname=prices, name="ETHUSDT", timeframe=bt.TimeFrame.Minutes,
                               compression=60)


@pytest.mark.parametrize("attach_first", [True, False])
def test_attached_plain_feed_resampled_and_replayed(attach_first):
    hourly, _ = liquidation(lambda c: c.adddata(btperp.load_feed("ETHUSDT", **ETH)), dt.datetime(2021, 5, 17, 23))

    def add(replay):
        def adder(cerebro):
            data = plain_feed()
            if attach_first:
                btperp.attach(data, "ETHUSDT", bar_time="close")
            if replay:
                cerebro.replaydata(data, timeframe=bt.TimeFrame.Days)
            else:
                cerebro.resampledata(data, timeframe=bt.TimeFrame.Minutes, compression=240)
            if not attach_first:
                btperp.attach(data, "ETHUSDT", bar_time="close")
        return adder
    # close-stamped: backtrader's 4h bar stamped 04:00 holds the hours opening 00:00 to 03:00
    four, liq = liquidation(add(False), dt.datetime(2021, 5, 18, 0), dt.timedelta(hours=4))
    assert liq.time == utc(2021, 5, 19, 16)              # the 12:00-16:00 bar, stamped at its close
    assert round(liq.mark_price, 2) == 1764.26
    assert four[1:] == liquidation(lambda c: c.adddata(btperp.load_feed("ETHUSDT", timeframe="4h", **ETH)),
                                   dt.datetime(2021, 5, 17, 20))[0][1:]
    replayed, liq = liquidation(add(True), dt.datetime(2021, 5, 18, 0), dt.timedelta(hours=1))
    assert liq.time == utc(2021, 5, 19, 13)              # the 12:00 hour, stamped at its close
    assert replayed[1:] == hourly[1:]
