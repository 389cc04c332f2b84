"""Bundled datasets, the loader, resampling, the importer, and every bad input of the data layer."""

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import btperp
from btperp.cli.main import main
from btperp.errors import DataError, DataWarning
from btperp.io.market import read_meta, series_path, validate_series, write_series


@pytest.fixture(scope="module")
def btc():
    return btperp.load("BTCUSDT")


@pytest.fixture(scope="module")
def eth():
    return btperp.load("ETH/USDT:USDT")


# --- bundled data: the acceptance facts -------------------------------------------------------------

def test_bundled_symbols_cover_2019_to_2026_with_marks_and_funding(btc, eth):
    for frame in (btc, eth):
        assert frame.index[0] == pd.Timestamp("2019-12-23 11:00", tz="UTC")
        assert frame.index[-1] == pd.Timestamp("2026-05-17 06:00", tz="UTC")
        assert frame["mark_close"].notna().all() and frame.attrs["mark_coverage"] == 1.0
        assert frame["funding_events"].sum() > 7000 and frame.attrs["gaps"] == 0
        assert list(frame.columns) == ["open", "high", "low", "close", "volume", "mark_open", "mark_high",
                                       "mark_low", "mark_close", "funding_rate", "funding_time",
                                       "funding_events", "funding_per_unit", "funding_open_per_unit"]
        assert str(frame.index.tz) == "UTC"


def test_eth_crash_bar_shows_the_wick_and_the_mark(eth):
    bar = eth.loc[pd.Timestamp("2021-05-19 13:00", tz="UTC")]
    assert bar["low"] == 1400.73
    assert round(bar["mark_low"], 2) == 1764.26


def test_january_2024_holds_93_btc_funding_events(btc):
    jan = btc.loc["2024-01"]
    assert jan["funding_events"].sum() == 93
    assert jan["funding_rate"].notna().sum() == 93          # one per bar on 1h data


def test_funding_sits_on_the_bar_that_holds_it_with_the_mark_at_that_time(btc):
    bar = btc.loc[pd.Timestamp("2024-01-01 08:00", tz="UTC")]
    assert bar["funding_time"] == pd.Timestamp("2024-01-01 08:00", tz="UTC")
    assert bar["funding_per_unit"] == pytest.approx(bar["funding_rate"] * bar["mark_open"], rel=1e-15)
    quiet = btc.loc[pd.Timestamp("2024-01-01 09:00", tz="UTC")]
    assert np.isnan(quiet["funding_rate"]) and pd.isna(quiet["funding_time"]) and quiet["funding_events"] == 0


def test_start_end_and_summary(btc):
    part = btperp.load("BTCUSDT", start="2024-01-01", end="2024-01-31 23:00")
    assert len(part) == 31 * 24 and part["funding_events"].sum() == 93
    line = btperp.summary(part)
    assert "BTC/USDT:USDT binance-usdm 1h: 744 bars 2024-01-01 00:00 → 2024-01-31 23:00" in line
    assert "no gaps" in line and "93 funding events" in line


def test_funding_at_the_open_is_told_apart_from_funding_later_in_the_bar(btc):
    hourly = btc.loc["2024-01-01 00:00":"2024-01-01 23:00"]
    assert hourly["funding_open_per_unit"].equals(hourly["funding_per_unit"])   # all at bar opens
    day = btperp.resample(btc.loc["2024-01-01":"2024-01-02 23:00"], "1d").loc[pd.Timestamp("2024-01-01", tz="UTC")]
    assert day["funding_events"] == 3
    assert day["funding_open_per_unit"] == hourly["funding_per_unit"].iloc[0]          # the 00:00 event
    assert day["funding_per_unit"] - day["funding_open_per_unit"] == pytest.approx(
        hourly["funding_per_unit"].iloc[[8, 16]].sum(), rel=1e-12)                   # 08:00 and 16:00
    no_event_at_open = btperp.resample(btc.loc["2024-01-01":"2024-01-02 23:00"], "4h")
    assert no_event_at_open.loc[pd.Timestamp("2024-01-01 04:00", tz="UTC"), "funding_events"] == 0


@pytest.mark.parametrize("timeframe", ["4h", "1d"])
def test_resampling_keeps_mark_extremes_and_every_funding_event(btc, timeframe):
    coarse = btperp.load("BTCUSDT", timeframe=timeframe)
    assert coarse.attrs["timeframe"] == timeframe
    assert coarse["mark_low"].min() == btc["mark_low"].min()
    assert coarse["mark_high"].max() == btc["mark_high"].max()
    assert coarse["funding_events"].sum() == btc["funding_events"].sum()
    assert coarse["funding_per_unit"].sum() == pytest.approx(btc["funding_per_unit"].sum(), rel=1e-12)
    assert coarse["funding_rate"].sum() == pytest.approx(btc["funding_rate"].sum(), rel=1e-12)
    assert coarse["volume"].sum() == pytest.approx(btc["volume"].sum(), rel=1e-12)
    # a day holds three 8-hourly events; its low is the lowest hourly low
    day = coarse.loc[pd.Timestamp("2021-05-19", tz="UTC")] if timeframe == "1d" else None
    if day is not None:
        hours = btc.loc["2021-05-19"]
        assert day["funding_events"] == 3 and day["mark_low"] == hours["mark_low"].min()
        assert day["open"] == hours["open"].iloc[0] and day["close"] == hours["close"].iloc[-1]


# --- a small datasets root for bad inputs ----------------------------------------------------------------

def small_frames(hours=48):
    times = pd.date_range("2024-01-01", periods=hours, freq="h", tz="UTC")
    rng = np.random.default_rng(7)
    close = 40_000 + np.cumsum(rng.normal(0, 50, hours))
    ohlcv = pd.DataFrame({"time": times, "open": close - 5, "high": close + 30, "low": close - 30,
                          "close": close, "volume": 10.0})
    mark = pd.DataFrame({"time": times, "open": close - 4, "high": close + 20, "low": close - 20, "close": close + 1})
    funding = pd.DataFrame({"time": pd.date_range("2024-01-01", periods=hours // 8, freq="8h", tz="UTC"),
                            "rate": 0.0001})
    return ohlcv, mark, funding


def write_raw(path, df):
    """Write a Parquet file without btperp's validation (to plant bad data)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path)


@pytest.fixture
def root(tmp_path):
    ohlcv, mark, funding = small_frames()
    meta = {"exchange": "binance-usdm", "symbol": "BTC/USDT:USDT", "timeframe": "1h", "source": "test"}
    write_series(ohlcv, series_path("binance-usdm", "BTCUSDT", "ohlcv", "1h", tmp_path), "ohlcv", meta=meta)
    write_series(mark, series_path("binance-usdm", "BTCUSDT", "mark", "1h", tmp_path), "mark", meta=meta)
    write_series(funding, series_path("binance-usdm", "BTCUSDT", "funding", root=tmp_path), "funding",
                 meta={**meta, "timeframe": None})
    return tmp_path


def test_small_root_loads(root):
    frame = btperp.load("BTCUSDT", datadir=root)
    assert len(frame) == 48 and frame["funding_events"].sum() == 6
    assert read_meta(series_path("binance-usdm", "BTCUSDT", "ohlcv", "1h", root))["source"] == "test"


def plant(root, kind, df):
    write_raw(series_path("binance-usdm", "BTCUSDT", kind, "1h" if kind != "funding" else None, root), df)


@pytest.mark.parametrize("kind, mutate, message", [
    ("ohlcv", lambda d: d.drop(columns=["low"]), "missing column(s) low"),
    ("ohlcv", lambda d: d.iloc[[0, 2, 1] + list(range(3, len(d)))], "timestamps not sorted (1 rows, first at 2024-01-01 01:00:00"),
    ("ohlcv", lambda d: pd.concat([d.iloc[:5], d.iloc[4:]]), "duplicated timestamps (1 rows, first at 2024-01-01 04:00:00"),
    ("ohlcv", lambda d: d.assign(close=d["close"].where(d.index != 10)), "column 'close': NaN or non-numeric values (1 rows, first at 2024-01-01 10:00:00"),
    ("ohlcv", lambda d: d.assign(low=d["low"].where(d.index != 3, -1.0)), "column 'low': non-positive prices (1 rows, first at 2024-01-01 03:00:00"),
    ("ohlcv", lambda d: d.assign(high=d["high"].where(d.index != 6, d["low"] - 1)), "column 'high': high below low (1 rows, first at 2024-01-01 06:00:00"),
    ("ohlcv", lambda d: d.assign(time=d["time"].dt.tz_localize(None)), "naive timestamps"),
    ("mark", lambda d: d.assign(time=d["time"] + pd.Timedelta(minutes=30)), "times off the 1h grid (misaligned bars) (48 rows"),
    ("mark", lambda d: d.assign(low=d["low"].where(d.index != 2, 0.0)), "non-positive prices"),
    ("funding", lambda d: d.assign(rate=np.nan), "column 'rate': NaN or non-numeric values (6 rows"),
])
def test_bad_series_raise_naming_file_column_count_and_first_time(root, kind, mutate, message):
    frames = dict(zip(("ohlcv", "mark", "funding"), small_frames()))
    plant(root, kind, mutate(frames[kind]))
    with pytest.raises(DataError) as info:
        btperp.load("BTCUSDT", datadir=root)
    text = str(info.value)
    assert message in text
    assert str(series_path("binance-usdm", "BTCUSDT", kind, "1h" if kind != "funding" else None, root)) in text


def test_gaps_are_warned_with_count_and_first_missing_bar_never_filled(root):
    ohlcv, mark, _ = small_frames()
    plant(root, "ohlcv", ohlcv.drop(index=[10, 11, 30]))
    plant(root, "mark", mark.drop(index=[10, 11, 30]))
    with pytest.warns(DataWarning, match=r"2 gaps \(3 missing bars, first at 2024-01-01 10:00:00"):
        frame = btperp.load("BTCUSDT", datadir=root)
    assert len(frame) == 45 and frame.attrs["gaps"] == 2
    assert "2 gaps (3 missing bars" in btperp.summary(frame)


def test_bars_without_a_mark_are_warned_and_left_nan(root):
    _, mark, _ = small_frames()
    plant(root, "mark", mark.drop(index=[5, 6]))
    with pytest.warns(DataWarning) as record:
        frame = btperp.load("BTCUSDT", datadir=root)
    messages = " ".join(str(w.message) for w in record)
    assert "2 bars have no mark price (first at 2024-01-01 05:00:00" in messages
    assert frame["mark_close"].isna().sum() == 2 and frame.attrs["mark_coverage"] == pytest.approx(46 / 48)


def test_funding_outside_the_price_bars_is_reported(root):
    ohlcv, mark, funding = small_frames()
    plant(root, "ohlcv", ohlcv.drop(index=[16]))           # the 16:00 bar holds a funding event
    plant(root, "mark", mark.drop(index=[16]))
    with pytest.warns(DataWarning) as record:
        frame = btperp.load("BTCUSDT", datadir=root)
    messages = " ".join(str(w.message) for w in record)
    assert "1 funding events fall in gaps of the price data (first at 2024-01-01 16:00:00" in messages
    assert frame["funding_events"].sum() == 5


def test_funding_times_are_floored_to_the_second(tmp_path):
    _, _, funding = small_frames()
    funding["time"] = funding["time"] + pd.Timedelta(milliseconds=7)
    from btperp.io.market import floor_funding_times
    floored = floor_funding_times(funding)
    assert (floored["time"].dt.microsecond == 0).all() and floored["time"].iloc[1] == pd.Timestamp("2024-01-01 08:00", tz="UTC")


def test_unknown_symbol_exchange_and_timeframe(root):
    with pytest.raises(DataError, match="no data for symbol 'DOGEUSDT' on binance-usdm; available: BTCUSDT"):
        btperp.load("DOGEUSDT", datadir=root)
    with pytest.raises(DataError, match="no datasets for exchange 'okx'.*available: binance-usdm"):
        btperp.load("BTCUSDT", exchange="okx", datadir=root)
    with pytest.raises(DataError, match="unknown timeframe '7x'"):
        btperp.load("BTCUSDT", timeframe="7x", datadir=root)
    with pytest.raises(DataError, match="no 1m data and none finer to resample from; available: 1h"):
        btperp.load("BTCUSDT", timeframe="1m", datadir=root)


def test_validate_series_refuses_misaligned_or_open_outside_bar():
    ohlcv, _, _ = small_frames()
    bad = ohlcv.assign(open=ohlcv["high"] + 1)
    with pytest.raises(DataError, match="open or close outside the bar's high-low range"):
        validate_series(bad, "ohlcv", where="x.parquet", timeframe="1h")


# --- the importer ------------------------------------------------------------------------------------------

def freqtrade_dir(tmp_path, bad_mark=False):
    ohlcv, mark, funding = small_frames()
    src = tmp_path / "ft" / "futures"
    src.mkdir(parents=True)
    ohlcv.rename(columns={"time": "date"}).to_feather(src / "BTC_USDT_USDT-1h-futures.feather")
    m = mark.assign(volume=0.0).rename(columns={"time": "date"})
    if bad_mark:
        m.loc[3, "high"] = m.loc[3, "low"] - 1
    m.to_feather(src / "BTC_USDT_USDT-1h-mark.feather")
    f = funding.rename(columns={"time": "date", "rate": "open"}).assign(high=0.0, low=0.0, close=0.0, volume=0.0)
    f["date"] = f["date"] + pd.Timedelta(milliseconds=3)                 # raw exchange times
    f.to_feather(src / "BTC_USDT_USDT-1h-funding_rate.feather")
    return tmp_path / "ft"


def test_import_freqtrade_writes_the_layout(tmp_path, capsys):
    src = freqtrade_dir(tmp_path)
    out = tmp_path / "ds"
    assert main(["data", "--datadir", str(out), "import-freqtrade", str(src), "--json"]) == 0
    written = json.loads(capsys.readouterr().out)
    assert sorted(w["kind"] for w in written) == ["funding", "mark", "ohlcv"]
    for name in ("ohlcv-1h.parquet", "mark-1h.parquet", "funding.parquet"):
        assert (out / "binance-usdm" / "BTCUSDT" / name).is_file()
    frame = btperp.load("BTCUSDT", datadir=out)
    assert len(frame) == 48 and frame["funding_events"].sum() == 6
    assert frame["funding_time"].dropna().iloc[0] == pd.Timestamp("2024-01-01 00:00", tz="UTC")
    schema = pq.read_schema(out / "binance-usdm" / "BTCUSDT" / "ohlcv-1h.parquet")
    assert str(schema.field("time").type) == "timestamp[ms, tz=UTC]"
    assert pq.ParquetFile(out / "binance-usdm" / "BTCUSDT" / "ohlcv-1h.parquet").metadata.row_group(0).column(1).compression == "ZSTD"


def test_a_failing_import_writes_nothing(tmp_path, capsys):
    src = freqtrade_dir(tmp_path, bad_mark=True)
    out = tmp_path / "ds"
    assert main(["data", "--datadir", str(out), "import-freqtrade", str(src)]) == 2
    err = capsys.readouterr().err
    assert "BTC_USDT_USDT-1h-mark.feather" in err and "high below low" in err
    assert not any(p.is_file() for p in out.rglob("*")) if out.exists() else True


def test_an_interrupted_write_leaves_the_old_file(tmp_path, monkeypatch):
    ohlcv, _, _ = small_frames()
    path = series_path("binance-usdm", "BTCUSDT", "ohlcv", "1h", tmp_path)
    meta = {"exchange": "binance-usdm", "symbol": "BTC/USDT:USDT", "timeframe": "1h", "source": "v1"}
    write_series(ohlcv, path, "ohlcv", meta=meta)
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr(pq, "write_table", boom)
    with pytest.raises(OSError, match="disk full"):
        write_series(ohlcv.assign(volume=99.0), path, "ohlcv", meta={**meta, "source": "v2"})
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == [path.name]        # no temporary left behind


# --- catalog commands ---------------------------------------------------------------------------------------

def test_data_info_and_list_json(capsys):
    assert main(["data", "info", "BTCUSDT", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["series"]["ohlcv-1h"]["rows"] == 58_623 and info["series"]["mark-1h"]["gaps"] == 0
    assert info["funding"]["interval_hours"] == {"8": 7322}
    assert len(info["tier_versions"]) == 9
    assert main(["data", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["symbol"] for r in rows} >= {"BTCUSDT", "ETHUSDT"}
    assert main(["data", "info", "XRPUSDT"]) == 2
    assert "no data for symbol 'XRPUSDT'" in capsys.readouterr().err
