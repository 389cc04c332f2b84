"""Detail data: coarse bars replayed on finer ones (btperp.intrabar.detail_path) in the broker and
the audit; kline imports; the bundled ETHUSDT 1-minute marks of 2021-05-19."""

import datetime as dt
import warnings

import backtrader as bt
import numpy as np
import pandas as pd
import pytest
from perpkit import make_frame, table

import btperp
from btperp.audit import audit_position
from btperp.bt import attach_detail, feed_from_frame
from btperp.errors import DataError
from btperp.io.klines import import_klines
from btperp.io.loader import load_detail, resample

UTC = dt.timezone.utc
TIERS = table((0, 2000, 0.005, 125), (2000, 20000, 0.01, 50), (20000, float("inf"), 0.025, 20))


# --- the bundled day: ETHUSDT mark prices by the minute, 2021-05-19 ----------------------------------

def test_the_bundled_minutes_aggregate_to_the_bundled_hours():
    minutes = load_detail("ETHUSDT", start="2021-05-19", end="2021-05-19 23:59")
    assert minutes.attrs["mark"] and not minutes.attrs["last"] and len(minutes) == 1440
    hours = btperp.load("ETHUSDT", start="2021-05-19", end="2021-05-19 23:00")
    agg = minutes.resample("1h").agg({"mark_open": "first", "mark_high": "max", "mark_low": "min",
                                      "mark_close": "last"})
    assert np.array_equal(agg.to_numpy(), hours[list(agg.columns)].to_numpy())
    # the day's lowest mark: 1,764.25818052 in the 13:10 minute (the raw file's README)
    assert minutes["mark_low"].min() == 1764.25818052
    assert minutes["mark_low"].idxmin() == pd.Timestamp("2021-05-19 13:10", tz="UTC")


class LongEth(bt.Strategy):
    params = (("leverage", 3.0),)

    def next(self):
        if self.data.datetime.datetime(0) == dt.datetime(2021, 5, 17, 23):
            self.buy(size=1000.0 * self.p.leverage / 3283.23)


@pytest.mark.parametrize("intrabar", ["path", "adverse"])
def test_the_3x_eth_long_is_liquidated_in_the_12_51_minute(intrabar):
    """1h bars name the 12:00 bar; the 1-minute marks name the minute: 12:50's low 2,246.47 is above
    the liquidation price 2,204.18, 12:51 opens at 2,256.05 and falls to 2,190.72."""
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(btperp.load_feed("ETHUSDT", start="2021-05-17", end="2021-05-21", detail="1m"))
    cerebro.addstrategy(LongEth)
    broker = btperp.install(cerebro, cash=1010.0, leverage=3, intrabar=intrabar)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cerebro.run()
    [x] = broker.liquidations
    assert x.time == dt.datetime(2021, 5, 19, 12, 51, tzinfo=UTC)
    assert x.trigger_price == pytest.approx(2204.18, abs=0.005) and not x.at_open
    minutes = load_detail("ETHUSDT", start="2021-05-19 12:50", end="2021-05-19 12:51")
    assert minutes["mark_low"].iloc[0] > x.trigger_price > minutes["mark_low"].iloc[1]
    assert minutes["mark_open"].iloc[1] > x.trigger_price
    # the audit replays that bar on the same minutes and agrees
    a = audit_position("ETHUSDT", "long", "2021-05-18 00:00", 3283.23, margin=1000, leverage=3,
                       end="2021-05-21", detail="1m")
    assert a.liquidation_time == "2021-05-19 12:51" and a.detail == "1m"
    assert a.trigger_price == pytest.approx(x.trigger_price, rel=1e-12)
    # its chart draws that bar's 60 minutes (the 12:00 bar's mark minutes) in an inset
    assert list(a._detail.index.strftime("%H:%M")[[0, -1]]) == ["12:00", "12:59"]
    # the lowest minute is the 1h bar's mark low ("mark extreme 1,992.48" in make demo's audit)
    assert a._detail["mark_low"].min() == pytest.approx(1992.48, abs=0.005)


def test_the_audit_chart_with_detail_is_written(tmp_path):
    from btperp.report.audit import plot_position
    a = audit_position("ETHUSDT", "long", "2021-05-18 00:00", 3283.23, margin=1000, leverage=3,
                       end="2021-05-21", detail="1m", reported_time="2021-05-19 12:51")
    out = plot_position(tmp_path / "eth.png", a)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("reported, verdict", [("2021-05-19 12:51", "consistent"),
                                               ("2021-05-19 12:40", "earlier"),
                                               ("2021-05-19 12:58", "later")])
def test_the_audit_judges_a_report_to_the_minute(reported, verdict):
    a = audit_position("ETHUSDT", "long", "2021-05-18 00:00", 3283.23, margin=1000, leverage=3,
                       end="2021-05-21", reported_time=reported, detail="1m")
    assert a.verdict == verdict
    if verdict == "earlier":        # the closest approach before 12:40 is not the bar's later low
        assert a.closest["price"] > a.liquidation_price


def test_the_2x_audit_names_the_minute_the_mark_came_closest():
    a = audit_position("ETHUSDT", "long", "2021-05-18 00:00", 3283.23, margin=1000, leverage=2,
                       end="2021-05-21", reported_time="2021-05-19 13:12", detail="1m")
    assert not a.liquidated and a.verdict == "earlier"
    assert a.closest["time"] == "2021-05-19 13:10" and a.closest["price"] == 1764.25818052


def test_cli_audit_position_with_detail(capsys):
    from btperp.cli.main import main
    code = main(["audit", "position", "--symbol", "ETHUSDT", "--side", "long", "--entry-time",
                 "2021-05-18 00:00", "--entry-price", "3283.23", "--margin", "1000", "--leverage", "3",
                 "--end", "2021-05-21", "--reported-time", "2021-05-19 12:51", "--detail", "1m"])
    out = capsys.readouterr().out
    assert code == 0
    assert "in the 2021-05-19 12:51 1m bar" in out and "CONSISTENT WITHIN A 1M BAR" in out


# --- a run on coarse bars with detail equals the run on the detail bars ------------------------------

def _minutes(seed, days=2):
    rng = np.random.default_rng(seed)
    n = days * 1440
    steps = rng.normal(0, 0.0015, n)
    close = 100 * np.exp(np.cumsum(steps))
    open_ = np.r_[100.0, close[:-1]] * np.exp(rng.normal(0, 0.0003, n))      # small gaps
    wick = np.abs(rng.normal(0, 0.001, (2, n)))
    high, low = np.maximum(open_, close) * (1 + wick[0]), np.minimum(open_, close) * (1 - wick[1])
    basis = 1 + rng.normal(0, 0.0005, n)
    mo, mc = open_ * basis, close * basis
    mh = np.maximum(np.maximum(mo, mc), high * basis * (1 - wick[0] / 3))
    ml = np.minimum(np.minimum(mo, mc), low * basis * (1 + wick[1] / 3))
    funding = {i: float(rng.normal(0.0001, 0.001)) for i in range(0, n, 480)}   # 00:00, 08:00, 16:00
    return make_frame(close, open=open_, high=high, low=low, mark_open=mo, mark_high=mh, mark_low=ml,
                      mark_close=mc, funding=funding, timeframe="1m")


class AtTimes(bt.Strategy):
    """Sends ``plan`` ({time the order must be live from: [(method, kwargs)]}) in the bar before."""

    params = (("plan", None), ("step", None))

    def next(self):
        nxt = self.data.datetime.datetime(0).replace(tzinfo=UTC) + self.p.step
        for method, kwargs in self.p.plan.get(nxt, []):
            getattr(self, method)(**kwargs)


def _run(frame, plan, step, detail=None, **options):
    cerebro = bt.Cerebro(stdstats=False)
    data = feed_from_frame(frame)
    if detail is not None:
        attach_detail(data, detail)
    cerebro.adddata(data)
    cerebro.addstrategy(AtTimes, plan=plan, step=step)
    broker = btperp.install(cerebro, cash=100.0, tiers=TIERS, taker_fee=0.0004, maker_fee=0.0002,
                            **options)
    cerebro.run()
    return broker


@pytest.mark.parametrize("coarse", ["1h", "4h"])
@pytest.mark.parametrize("series", ["mark", "mark+last"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_coarse_bars_with_detail_equal_the_detail_bars(coarse, series, seed):
    minutes = _minutes(seed)
    bars = resample(minutes, coarse)
    detail = minutes[["mark_open", "mark_high", "mark_low", "mark_close"]
                     + (["open", "high", "low", "close"] if series == "mark+last" else [])].copy()
    detail.attrs = {"timeframe": "1m", "mark": True, "last": series == "mark+last"}
    rng = np.random.default_rng(seed + 10)
    starts = bars.index[1:-1]
    plan = {}
    for when in rng.choice(starts, 6, replace=False):
        when = pd.Timestamp(when).to_pydatetime()
        side = "buy" if rng.random() < 0.5 else "sell"
        size = float(rng.uniform(10, 45))
        if series == "mark":        # fills at a coarse open: the same last price on both grids
            plan.setdefault(when, []).append((side, {"size": size}))
        else:
            ref = float(bars["open"].loc[when])
            away = float(rng.uniform(0.001, 0.01))
            kind = rng.choice(["limit", "stop", "market"])
            if kind == "market":
                order = (side, {"size": size})
            elif kind == "limit":
                order = (side, {"size": size, "exectype": bt.Order.Limit,
                                "price": ref * (1 - away if side == "buy" else 1 + away)})
            else:
                order = (side, {"size": size, "exectype": bt.Order.Stop,
                                "price": ref * (1 + away if side == "buy" else 1 - away)})
            plan.setdefault(when, []).append(order)
    lev = 50.0
    fine = _run(minutes, plan, pd.Timedelta("1min").to_pytimedelta(), leverage=lev)
    rough = _run(bars, plan, pd.Timedelta(coarse).to_pytimedelta(), detail=detail, leverage=lev)
    assert fine.liquidations, "the scenario should liquidate"
    assert [(x.time, x.side) for x in rough.liquidations] == [(x.time, x.side) for x in fine.liquidations]
    for a, b in zip(rough.liquidations, fine.liquidations):
        assert a.trigger_price == pytest.approx(b.trigger_price, rel=1e-9)
        assert a.fill_price == pytest.approx(b.fill_price, rel=1e-9)
    assert len(rough.fills) == len(fine.fills)
    for a, b in zip(rough.fills, fine.fills):
        assert (a.size, a.maker) == (b.size, b.maker) and a.price == pytest.approx(b.price, rel=1e-12)
        assert a.time == b.time or series == "mark"     # mark detail alone: fills at coarse opens
    assert rough.funding_paid == pytest.approx(fine.funding_paid, rel=1e-9, abs=1e-12)
    assert rough.wallet_balance == pytest.approx(fine.wallet_balance, rel=1e-9, abs=1e-9)


def test_a_minute_that_opens_beyond_the_liquidation_price_triggers_at_its_open():
    """Two 1h bars of minutes at 100, except that the 09:30 minute opens at 97 (a gap down from 100)
    and trades 96.5-97.2. A 50x long of 1 from 100 (margin 2, LP (2 - 100) / (0.005 - 1) = 98.49) is
    liquidated in that minute at its open, 97, not at the LP: no trade happened in between."""
    n = 180
    close = np.full(n, 100.0)
    open_, high, low = close.copy(), close.copy(), close.copy()
    k = 90                                          # the 09:30 minute (the frame starts at 08:00)
    open_[k], high[k], low[k], close[k] = 97.0, 97.2, 96.5, 97.0
    open_[k + 1:] = 97.0
    close[k + 1:] = 97.0
    high[k + 1:], low[k + 1:] = 97.0, 97.0
    minutes = make_frame(close, open=open_, high=high, low=low, mark_open=open_, mark_high=high,
                         mark_low=low, mark_close=close, timeframe="1m", start="2024-01-01 08:00")
    bars = resample(minutes, "1h")
    detail = minutes[["mark_open", "mark_high", "mark_low", "mark_close"]].copy()
    detail.attrs = {"timeframe": "1m", "mark": True, "last": False}
    start = dt.datetime(2024, 1, 1, 8, tzinfo=UTC)
    tiers = table((0, float("inf"), 0.005, 125))
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(attach_detail(feed_from_frame(bars), detail))
    cerebro.addstrategy(AtTimes, plan={start + dt.timedelta(hours=1): [("buy", {"size": 1.0})]},
                        step=dt.timedelta(hours=1))
    broker = btperp.install(cerebro, cash=10.0, leverage=50, tiers=tiers, taker_fee=0.0)
    cerebro.run()
    [x] = broker.liquidations
    assert x.liquidation_price == pytest.approx((2 - 100) / (0.005 - 1), rel=1e-12)
    assert x.time == dt.datetime(2024, 1, 1, 9, 30, tzinfo=UTC)
    assert x.trigger_price == 97.0


def test_klines_import_with_and_without_a_header_merge_and_refuse_bad_rows(tmp_path):
    raw = tmp_path / "raw.csv"
    raw.write_text("1704067200000,100,101,99,100.5,3,1704067259999,0,0,0,0,0\n"
                   "1704067260000,100.5,102,100,101,4,1704067319999,0,0,0,0,0\n")
    row = import_klines(raw, symbol="XUSDT", kind="ohlcv", timeframe="1m", datadir=tmp_path / "d")
    assert row["rows"] == 2
    more = tmp_path / "more.csv"
    more.write_text("open_time,open,high,low,close,volume\n"
                    "1704067260000,100.5,103,100,101,5\n1704067320000,101,101,100,100,1\n")
    row = import_klines(more, symbol="XUSDT", kind="ohlcv", timeframe="1m", datadir=tmp_path / "d")
    assert row["rows"] == 3                         # the 00:01 bar replaced, 00:02 added
    got = load_detail("XUSDT", "binance-usdm", "1m", datadir=tmp_path / "d")
    assert got.attrs["last"] and not got.attrs["mark"]
    assert list(got["high"]) == [101.0, 103.0, 101.0]
    bad = tmp_path / "bad.csv"
    bad.write_text("open_time,open,high,low,close\n1704067200000,100,99,101,100\n")
    with pytest.raises(DataError, match="bad.csv|high below low"):
        import_klines(bad, symbol="XUSDT", kind="mark", timeframe="1m", datadir=tmp_path / "d")
    assert not (tmp_path / "d" / "binance-usdm" / "XUSDT" / "mark-1m.parquet").exists()
    with pytest.raises(DataError, match="no 1m detail"):
        load_detail("YUSDT", "binance-usdm", "1m", datadir=tmp_path / "d")


def test_bars_without_detail_fall_back_to_themselves_with_a_warning():
    """Detail for one day only: the 3x liquidation (on that day) is named to the minute; a 20x long
    liquidated on 2021-05-12, outside it, is named to its hour, and the run says so once."""
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(btperp.load_feed("ETHUSDT", start="2021-05-10", end="2021-05-13", detail="1m"))

    class Twenty(bt.Strategy):
        def next(self):
            if len(self) == 1:
                self.buy(size=20 * 500 / self.data.close[0])

    cerebro.addstrategy(Twenty)
    btperp.install(cerebro, cash=600.0, leverage=20)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cerebro.run()
    broker = cerebro.broker
    assert broker.liquidations and broker.liquidations[0].time.minute == 0
    assert sum("had no 1m detail" in str(w.message) for w in caught) == 1
