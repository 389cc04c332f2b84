"""btperp fetch (issue #8), Binance USDⓈ-M: ccxt against canned HTTP answers (tests/fakex.py), never
the network. Multi-page downloads, resume, retries, malformed pages, gaps, funding intervals, tiers."""

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

import btperp
from btperp.cli.main import main as cli
from btperp.errors import InputError
from btperp.io import fetch as fetch_mod
from btperp.io.fetch import FetchError, Fetcher, VENUES, make_client
from btperp.io.market import read_series
from btperp.io.paths import datasets_dir

import fakex

START = 1704067200000                      # 2024-01-01 00:00 UTC
KEYS = {"BINANCE_API_KEY": "k3y-not-logged", "BINANCE_API_SECRET": "s3cret-not-logged"}


def _fetcher(fake, tmp_path, *, keys=True, bars_now=None, **kw):
    client = fake.attach(make_client(VENUES["binance-usdm"], env=KEYS if keys else {}))
    now = START + (bars_now or 2600) * fakex.HOUR
    sleeps = []
    f = Fetcher("binance-usdm", datadir=tmp_path, client=client, sleep=sleeps.append,
                clock=lambda: now, **kw)
    f.sleeps = sleeps
    return f


def _stored(tmp_path, kind, tf="1h"):
    name = f"{kind}-{tf}.parquet" if kind != "funding" else "funding.parquet"
    return read_series(tmp_path / "binance-usdm" / "BTCUSDT" / name, kind,
                       timeframe=tf if kind != "funding" else None, warn_gaps=False)


def test_a_multi_page_download_equals_the_canned_series(tmp_path):
    fake = fakex.FakeBinance(START, 2500)
    f = _fetcher(fake, tmp_path)
    reports = f.fetch(["BTC/USDT:USDT"], since="2024-01-01", what=["ohlcv", "mark", "funding"])
    assert [r.series for r in reports] == ["ohlcv", "mark", "funding"]
    assert fake.calls.count("klines") == 4                  # 1000 + 1000 + 500, then an empty page
    ohlcv = _stored(tmp_path, "ohlcv")
    want = np.array([[float(x) for x in row[1:6]] for row in fake.klines])
    assert ohlcv["time"].map(lambda t: t.value // 1_000_000).tolist() == [r[0] for r in fake.klines]
    np.testing.assert_array_equal(ohlcv[["open", "high", "low", "close", "volume"]].to_numpy(), want)
    mark = _stored(tmp_path, "mark")
    np.testing.assert_array_equal(mark["close"].to_numpy(), [float(r[4]) for r in fake.mark])
    funding = _stored(tmp_path, "funding")
    assert len(funding) == len(fake.funding) == 313
    # Binance stamps funding a few ms after the hour: stored on the second
    assert (funding["time"].dt.second == 0).all() and (funding["time"].dt.microsecond == 0).all()
    np.testing.assert_array_equal(funding["rate"].to_numpy(), [float(e["fundingRate"]) for e in fake.funding])
    assert reports[0].added == 2500 and reports[0].rows == 2500 and reports[0].gaps is None


def test_btperp_load_reads_a_fetched_dataset_with_the_bundled_schema(tmp_path):
    fake = fakex.FakeBinance(START, 300)
    _fetcher(fake, tmp_path).fetch(["BTCUSDT"], since="2024-01-01", what=["ohlcv", "mark", "funding"])
    frame = btperp.load("BTCUSDT", datadir=tmp_path)
    assert len(frame) == 300 and frame["funding_events"].sum() == len(fake.funding)
    bundled = datasets_dir() / "binance-usdm" / "BTCUSDT"
    for name in ("ohlcv-1h.parquet", "mark-1h.parquet", "funding.parquet"):
        ours = pq.read_schema(tmp_path / "binance-usdm" / "BTCUSDT" / name)
        theirs = pq.read_schema(bundled / name)
        assert ours.remove_metadata() == theirs.remove_metadata()


def test_a_resumed_download_equals_an_uninterrupted_one(tmp_path):
    whole = tmp_path / "whole"
    _fetcher(fakex.FakeBinance(START, 2500), whole).fetch(["BTCUSDT"], since="2024-01-01",
                                                           what=["ohlcv", "funding"])
    part = tmp_path / "part"
    fake = fakex.FakeBinance(START, 2500)
    fake.down_after["klines"] = 2                          # pages 1 and 2 come, then the exchange is down
    cut = pd.Timestamp(START + 2000 * fakex.HOUR, unit="ms", tz="UTC").strftime("%Y-%m-%d %H:%M")
    with pytest.raises(FetchError, match=f"ohlcv 1h: page from {cut} failed after 3 attempts"):
        _fetcher(fake, part, checkpoint=1, retries=2).fetch(["BTCUSDT"], since="2024-01-01", what=["ohlcv"])
    kept = _stored(part, "ohlcv")
    assert len(kept) == 2000                               # the two checkpointed pages, intact
    resumed = _fetcher(fakex.FakeBinance(START, 2500), part)
    reports = resumed.fetch(["BTCUSDT"], since="2024-01-01", what=["ohlcv", "funding"])
    assert reports[0].added == 500 and reports[0].first_added == cut
    pd.testing.assert_frame_equal(_stored(part, "ohlcv"), _stored(whole, "ohlcv"))
    pd.testing.assert_frame_equal(_stored(part, "funding"), _stored(whole, "funding"))
    again = _fetcher(fakex.FakeBinance(START, 2500), part).fetch(["BTCUSDT"], since="2024-01-01",
                                                                 what=["ohlcv"])
    assert again[0].added == 0 and again[0].note == "up to date" and again[0].requests == 1


def test_429_and_5xx_are_retried_with_backoff(tmp_path):
    fake = fakex.FakeBinance(START, 1200)
    fake.fail["klines"] = [429, 502, 503]
    fake.fail["fundingRate"] = [429]
    f = _fetcher(fake, tmp_path)
    reports = f.fetch(["BTCUSDT"], since="2024-01-01", what=["ohlcv", "funding"])
    assert reports[0].added == 1200 and reports[1].added == len(fake.funding)
    assert f.sleeps[:3] == [1.0, 2.0, 4.0]                 # exponential backoff, then success
    assert 1.0 in f.sleeps[3:]


def test_retries_give_up_with_a_clear_error(tmp_path):
    fake = fakex.FakeBinance(START, 100)
    fake.fail["klines"] = [429] * 10
    with pytest.raises(FetchError, match=r"BTC/USDT:USDT ohlcv 1h: page from 2024-01-01 00:00 failed "
                                         r"after 3 attempts: DDoSProtection: binanceusdm 429"):
        _fetcher(fake, tmp_path, retries=2).fetch(["BTCUSDT"], since="2024-01-01", what=["ohlcv"])
    assert not (tmp_path / "binance-usdm" / "BTCUSDT" / "ohlcv-1h.parquet").exists()
    assert not list(tmp_path.rglob("*.tmp*"))


@pytest.mark.parametrize("path,message", [("klines", "malformed candle 0 of the page from 2024-01-01 00:00"),
                                          ("fundingRate", "had 13 rows, of which ccxt could parse 12")])
def test_a_malformed_page_is_reported(tmp_path, path, message):
    fake = fakex.FakeBinance(START, 100)
    fake.malformed[path] = 1
    with pytest.raises(FetchError, match=message):
        _fetcher(fake, tmp_path).fetch(["BTCUSDT"], since="2024-01-01",
                                       what=["ohlcv" if path == "klines" else "funding"])


def test_an_empty_answer_and_real_gaps_are_reported_not_filled(tmp_path):
    fake = fakex.FakeBinance(START, 300, missing=[100, 101, 102, 250])
    reports = _fetcher(fake, tmp_path).fetch(["BTCUSDT"], since="2024-01-01", what=["ohlcv"])
    assert reports[0].added == 296
    assert reports[0].gaps == "2 gaps (4 missing bars, first at 2024-01-05 04:00:00+00:00)"
    empty = _fetcher(fakex.FakeBinance(START, 300), tmp_path / "e").fetch(
        ["BTCUSDT"], since="2024-02-01", until="2024-02-10", what=["ohlcv"])
    assert empty[0].added == 0 and empty[0].note == "the exchange returned nothing"


@pytest.mark.parametrize("hours", [1, 4, 8])
def test_funding_at_4h_and_1h_intervals_has_no_holes(tmp_path, hours):
    fake = fakex.FakeBinance(START, 2400, funding_hours=hours)
    reports = _fetcher(fake, tmp_path).fetch(["BTCUSDT"], since="2024-01-01", what=["funding"])
    stored = _stored(tmp_path, "funding")
    assert len(stored) == len(fake.funding) == 2400 // hours and reports[0].added == 2400 // hours
    steps = np.diff(stored["time"].dt.tz_localize(None).to_numpy().astype("datetime64[h]").astype(np.int64))
    assert (steps == hours).all()


def test_only_closed_candles_are_stored(tmp_path):
    fake = fakex.FakeBinance(START, 500)
    _fetcher(fake, tmp_path, bars_now=300.5).fetch(["BTCUSDT"], since="2024-01-01", what=["ohlcv"])
    # the bar that opened at 299 h closed at 300 h; the one open at "now" (300.5 h) is not stored
    assert len(_stored(tmp_path, "ohlcv")) == 300


@pytest.mark.parametrize("symbol,what,timeframe,message", [
    ("DOGE/USDT:USDT", ["ohlcv"], "1h", "binance-usdm has no market 'DOGE/USDT:USDT'"),
    ("BTC/USDT:USDT-250328", ["ohlcv"], "1h", "is not a linear perpetual"),
    ("BTCUSDT", ["ohlcv"], "7x", "unknown timeframe"),
    ("BTCUSDT", ["ohlcv"], "7m", "has no '7m' candles; it offers 1s, 1m, 3m"),
    ("BTCUSDT", ["ohlcv"], "2w", "has no '2w' candles"),
    ("BTCUSDT", ["volume"], "1h", "unknown series volume"),
])
def test_bad_requests_are_clear_errors(tmp_path, symbol, what, timeframe, message):
    from btperp.errors import DataError
    with pytest.raises((InputError, DataError), match=message):
        _fetcher(fakex.FakeBinance(START, 10), tmp_path).fetch([symbol], since="2024-01-01",
                                                               timeframe=timeframe, what=what)


def test_a_series_the_exchange_does_not_offer(tmp_path):
    f = _fetcher(fakex.FakeBinance(START, 10), tmp_path)
    f.client.has["fetchMarkOHLCV"] = False
    with pytest.raises(InputError, match="does not offer mark through ccxt"):
        f.fetch(["BTCUSDT"], since="2024-01-01", what=["mark"])


def test_tiers_are_appended_only_when_they_change_and_keys_are_never_logged(tmp_path):
    fake = fakex.FakeBinance(START, 10)
    f = _fetcher(fake, tmp_path)
    first = f.fetch_tiers(["BTCUSDT"], today="2024-06-01")
    assert first[0].added == 1
    assert f.fetch_tiers(["BTCUSDT"], today="2024-06-08")[0].note == "unchanged since 2024-06-01"
    fake.brackets[1]["brackets"][0]["maintMarginRatio"] = 0.0045    # Binance changes tier 1
    fake.brackets[1]["brackets"][0]["notionalCap"] = 50000
    for b in fake.brackets[1]["brackets"][1:]:
        b["cum"] = None
    changed = f.fetch_tiers(["BTCUSDT"], today="2024-06-15")
    assert changed[0].added == 1 and changed[0].rows == 2
    from btperp.io.tierfile import TierHistoryFile
    history = TierHistoryFile.read(tmp_path / "binance-usdm" / "tier_history.json").history("BTCUSDT")
    assert [w.strftime("%Y-%m-%d") for w in history.change_times()] == ["2024-06-01", "2024-06-15"]
    assert history.at("2024-06-10").table.tiers[0].maintenance_margin_rate == 0.004
    assert history.at("2024-06-20").table.tiers[0].maintenance_margin_rate == 0.0045
    text = (tmp_path / "binance-usdm" / "tier_history.json").read_text()
    assert KEYS["BINANCE_API_KEY"] not in text and KEYS["BINANCE_API_SECRET"] not in text


def test_tiers_without_keys_name_the_variables(tmp_path):
    f = _fetcher(fakex.FakeBinance(START, 10), tmp_path, keys=False)
    with pytest.raises(FetchError, match="needs API keys; set BINANCE_API_KEY and BINANCE_API_SECRET"):
        f.fetch(["BTCUSDT"], since="2024-01-01", what=["tiers"])


def test_cli_json_summary(tmp_path, capsys, monkeypatch):
    fake = fakex.FakeBinance(START, 400)
    monkeypatch.setattr(fetch_mod, "make_client", lambda v, env=None: fake.attach(make_client(v, env=KEYS)))
    code = cli(["fetch", "--symbol", "BTCUSDT", "--since", "2024-01-01", "--until", "2024-01-10",
                "--what", "ohlcv,mark,funding", "--datadir", str(tmp_path), "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    # --until 2024-01-10 includes that whole day: 240 hourly bars, 30 funding events
    assert [(r["series"], r["added"]) for r in out] == [("ohlcv", 240), ("mark", 240), ("funding", 30)]
    assert cli(["fetch", "--exchange", "kraken", "--symbol", "BTCUSDT", "--since", "2024-01-01"]) == 2
    assert "unknown exchange 'kraken'" in capsys.readouterr().err


def test_the_suite_cannot_reach_the_network():
    import socket
    with pytest.raises(RuntimeError, match="tried to reach the network"):
        socket.create_connection(("127.0.0.1", 9), timeout=1)
