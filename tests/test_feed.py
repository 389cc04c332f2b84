"""PerpData and attach(): what a backtrader strategy sees equals the frame, in every loading mode."""

import math

import backtrader as bt
import numpy as np
import pandas as pd
import pytest

import btperp
from btperp.bt.feed import bt_timeframe, feed_from_frame, to_bt_num

LINES = ("datetime", "open", "high", "low", "close", "volume", "mark_open", "mark_high", "mark_low",
         "mark_close", "funding_rate", "funding_per_unit", "funding_open_per_unit", "funding_events",
         "funding_time")


@pytest.fixture(scope="module")
def frame():
    return btperp.load("ETHUSDT", start="2021-05-15", end="2021-05-25")


class Recorder(bt.Strategy):
    def __init__(self):
        self.rows = []

    def next(self):
        self.rows.append(tuple(getattr(self.data, name)[0] for name in LINES))


def run(feed, **cerebro_kwargs):
    cerebro = bt.Cerebro(stdstats=False, **cerebro_kwargs)
    cerebro.adddata(feed)
    cerebro.addstrategy(Recorder)
    return np.array(cerebro.run()[0].rows)


def same(a, b):
    return a.shape == b.shape and np.array_equal(np.isnan(a), np.isnan(b)) and np.array_equal(
        np.nan_to_num(a), np.nan_to_num(b))


@pytest.mark.parametrize("preload, runonce", [(True, True), (True, False), (False, False)])
def test_strategy_sees_the_frame(frame, preload, runonce):
    rows = run(btperp.load_feed("ETHUSDT", start="2021-05-15", end="2021-05-25"), preload=preload, runonce=runonce)
    assert len(rows) == len(frame)
    assert np.array_equal(rows[:, LINES.index("mark_low")], frame["mark_low"].to_numpy())
    assert np.array_equal(rows[:, LINES.index("low")], frame["low"].to_numpy())
    fpu = rows[:, LINES.index("funding_per_unit")]
    assert np.array_equal(np.isnan(fpu), frame["funding_per_unit"].isna().to_numpy())
    crash = [bt.num2date(r[0]) for r in rows].index(pd.Timestamp("2021-05-19 13:00").to_pydatetime())
    assert rows[crash, LINES.index("low")] == 1400.73 and round(rows[crash, LINES.index("mark_low")], 2) == 1764.26


def test_bulk_preload_equals_backtraders_own_loading(frame):
    bulk = run(feed_from_frame(frame))
    slow_feed = feed_from_frame(frame)
    slow_feed._bulk_ok = lambda: False            # force AbstractDataBase.preload's load() loop
    assert same(bulk, run(slow_feed))
    assert same(bulk, run(feed_from_frame(frame), preload=False, runonce=False))


def test_bulk_preload_equals_pandasdata_on_the_shared_columns(frame):
    bulk = run(feed_from_frame(frame))
    plain = frame[["open", "high", "low", "close", "volume"]].copy()
    plain.index = plain.index.tz_convert(None)
    pandas_feed = bt.feeds.PandasData(dataname=plain, timeframe=bt.TimeFrame.Minutes, compression=60)
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(pandas_feed)

    class Plain(bt.Strategy):
        def __init__(self):
            self.rows = []

        def next(self):
            self.rows.append(tuple(getattr(self.data, n)[0] for n in LINES[:6]))
    cerebro.addstrategy(Plain)
    theirs = np.array(cerebro.run()[0].rows)
    assert same(bulk[:, :6], theirs)


def test_fromdate_todate_are_honoured(frame):
    feed = feed_from_frame(frame, fromdate=pd.Timestamp("2021-05-19").to_pydatetime(),
                           todate=pd.Timestamp("2021-05-19 23:00").to_pydatetime())
    rows = run(feed)
    assert len(rows) == 24 and bt.num2date(rows[0][0]) == pd.Timestamp("2021-05-19").to_pydatetime()


@pytest.mark.parametrize("tf, expected", [("1m", (bt.TimeFrame.Minutes, 1)), ("1h", (bt.TimeFrame.Minutes, 60)),
                                          ("4h", (bt.TimeFrame.Minutes, 240)), ("1d", (bt.TimeFrame.Days, 1)),
                                          ("1w", (bt.TimeFrame.Weeks, 1))])
def test_backtrader_timeframe_mapping(tf, expected):
    assert bt_timeframe(tf) == expected


def test_feed_carries_its_real_timeframe():
    feed = btperp.load_feed("BTCUSDT", timeframe="4h", start="2024-01-01", end="2024-01-10")
    assert (feed._timeframe, feed._compression) == (bt.TimeFrame.Minutes, 240)
    assert feed._name == "BTC/USDT:USDT" and feed.p.exchange == "binance-usdm"


def test_date_numbers_match_backtrader():
    times = pd.DatetimeIndex(["2021-05-19 13:00", "1970-01-01", "2026-05-17 06:00"], tz="UTC")
    expected = [bt.date2num(t.tz_convert(None).to_pydatetime()) for t in times]
    assert np.allclose(to_bt_num(times), expected, rtol=0, atol=1e-9)


def test_attach_mark_and_funding_to_an_existing_csv_feed(tmp_path, frame):
    csv = tmp_path / "ethusdt-1h.csv"
    out = frame[["open", "high", "low", "close", "volume"]].copy()
    out.index = out.index.tz_convert(None)
    out.to_csv(csv, index_label="datetime", date_format="%Y-%m-%d %H:%M:%S")
    data = bt.feeds.GenericCSVData(dataname=str(csv), dtformat="%Y-%m-%d %H:%M:%S", timeframe=bt.TimeFrame.Minutes,
                                   compression=60, openinterest=-1)
    btperp.attach(data, "ETHUSDT")

    class Reads(bt.Strategy):
        def __init__(self):
            self.marks = []

        def next(self):
            table = self.data.btperp_market
            self.marks.append((table.value("mark_low", self.data.datetime[0]),
                               table.value("funding_per_unit", self.data.datetime[0])))
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(data)
    cerebro.addstrategy(Reads)
    marks = np.array(cerebro.run()[0].marks)
    assert np.array_equal(marks[:, 0], frame["mark_low"].to_numpy())
    assert np.array_equal(np.isnan(marks[:, 1]), frame["funding_per_unit"].isna().to_numpy())


def test_attach_with_close_stamped_bars_shifts_one_bar(frame):
    data = bt.feeds.PandasData(dataname=frame[["open"]], timeframe=bt.TimeFrame.Minutes, compression=60)
    btperp.attach(data, frame=frame, bar_time="close")
    table = data.btperp_market
    close_stamp = to_bt_num(pd.DatetimeIndex([frame.index[0] + pd.Timedelta(hours=1)]))[0]
    assert table.value("mark_low", close_stamp) == frame["mark_low"].iloc[0]
    assert math.isnan(table.value("mark_low", to_bt_num(pd.DatetimeIndex([frame.index[0]]))[0]))
