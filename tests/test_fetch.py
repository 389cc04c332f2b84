"""btperp fetch (issue #8): ccxt against canned Binance USDⓈ-M, Bybit v5 and OKX v5 HTTP answers
(tests/fakex.py), never the network. Multi-page downloads, resume, retries, malformed and empty
pages, gaps, funding intervals, listing times, tiers, bad requests, the CLI."""

import json
from collections import Counter

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

import btperp
from btperp.cli.main import main as cli
from btperp.errors import DataError, InputError
from btperp.io import fetch as fetch_mod
from btperp.io.fetch import FetchError, Fetcher, VENUES, make_client
from btperp.io.market import read_series
from btperp.io.paths import datasets_dir

import fakex

START = 1704067200000                      # 2024-01-01 00:00 UTC
KEYS = {"BINANCE_API_KEY": "k3y-not-logged", "BINANCE_API_SECRET": "s3cret-not-logged"}
EXCHANGES = ["binance-usdm", "bybit", "okx"]


def _fake(exchange, bars, **kw):
    return fakex.FAKES[exchange](START, bars, **kw)


def _client(fake, exchange, env):
    client = fake.attach(make_client(VENUES[exchange], env=env))
    assert client.enableRateLimit is True               # on in production ...
    client.enableRateLimit = False                      # ... but its real-time sleeps have nothing to pace here
    return client


def _fetcher(fake, tmp_path, *, exchange="binance-usdm", keys=True, bars_now=None, **kw):
    client = _client(fake, exchange, KEYS if keys else {})
    now = START + (bars_now or 2600) * fakex.HOUR
    sleeps = []
    f = Fetcher(exchange, datadir=tmp_path, client=client, sleep=sleeps.append, clock=lambda: now, **kw)
    f.sleeps = sleeps
    return f


def _stored(tmp_path, kind, tf="1h", exchange="binance-usdm"):
    name = f"{kind}-{tf}.parquet" if kind != "funding" else "funding.parquet"
    return read_series(tmp_path / exchange / "BTCUSDT" / name, kind,
                       timeframe=tf if kind != "funding" else None, warn_gaps=False)


def _as_rows(frame: pd.DataFrame) -> np.ndarray:
    ms = frame["time"].map(lambda t: t.value // 1_000_000).to_numpy(dtype=float)
    return np.column_stack([ms, frame.drop(columns="time").to_numpy(dtype=float)])


@pytest.mark.parametrize("exchange", EXCHANGES)
def test_a_multi_page_download_equals_the_canned_series(tmp_path, exchange):
    fake = _fake(exchange, 2500)
    f = _fetcher(fake, tmp_path, exchange=exchange)
    reports = f.fetch(["BTC/USDT:USDT"], since="2024-01-01", what=["ohlcv", "mark", "funding"])
    assert [r.series for r in reports] == ["ohlcv", "mark", "funding"]
    page = VENUES[exchange].ohlcv_page
    # full windows, the rest, then one empty window up to the last closed bar (2599 h)
    assert Counter(fake.calls)[fake.PATHS["ohlcv"]] == -(-2500 // page) + 1
    for kind in ("ohlcv", "mark", "funding"):
        np.testing.assert_array_equal(_as_rows(_stored(tmp_path, kind, exchange=exchange)), fake.expected(kind))
    funding = _stored(tmp_path, "funding", exchange=exchange)
    assert len(funding) == 313 and (funding["time"].dt.second == 0).all()
    assert reports[0].added == 2500 and reports[0].rows == 2500 and reports[0].gaps is None
    assert reports[2].added == 313 and all(r.note is None for r in reports)


@pytest.mark.parametrize("exchange", EXCHANGES)
def test_btperp_load_reads_a_fetched_dataset_with_the_bundled_schema(tmp_path, exchange):
    fake = _fake(exchange, 300)
    _fetcher(fake, tmp_path, exchange=exchange).fetch(["BTCUSDT"], since="2024-01-01",
                                                      what=["ohlcv", "mark", "funding"])
    frame = btperp.load("BTCUSDT", exchange=exchange, datadir=tmp_path)
    assert len(frame) == 300 and frame["funding_events"].sum() == len(fake.events)
    bundled = datasets_dir() / "binance-usdm" / "BTCUSDT"
    for name in ("ohlcv-1h.parquet", "mark-1h.parquet", "funding.parquet"):
        ours = pq.read_schema(tmp_path / exchange / "BTCUSDT" / name)
        theirs = pq.read_schema(bundled / name)
        assert ours.remove_metadata() == theirs.remove_metadata()


@pytest.mark.parametrize("exchange", EXCHANGES)
def test_a_resumed_download_equals_an_uninterrupted_one(tmp_path, exchange):
    whole = tmp_path / "whole"
    _fetcher(_fake(exchange, 2500), whole, exchange=exchange).fetch(["BTCUSDT"], since="2024-01-01",
                                                                    what=["ohlcv", "funding"])
    part = tmp_path / "part"
    fake = _fake(exchange, 2500)
    page = VENUES[exchange].ohlcv_page
    fake.down_after[fake.PATHS["ohlcv"]] = 2               # two pages come, then the exchange is down
    cut = pd.Timestamp(START + 2 * page * fakex.HOUR, unit="ms", tz="UTC").strftime("%Y-%m-%d %H:%M")
    with pytest.raises(FetchError, match=f"ohlcv 1h: page from {cut} failed after 3 attempts"):
        _fetcher(fake, part, exchange=exchange, checkpoint=1, retries=2).fetch(
            ["BTCUSDT"], since="2024-01-01", what=["ohlcv"])
    assert len(_stored(part, "ohlcv", exchange=exchange)) == 2 * page    # the checkpointed pages, intact
    assert not list(part.rglob("*.tmp*"))
    resumed = _fetcher(_fake(exchange, 2500), part, exchange=exchange)
    reports = resumed.fetch(["BTCUSDT"], since="2024-01-01", what=["ohlcv", "funding"])
    assert reports[0].added == 2500 - 2 * page and reports[0].first_added == cut
    for kind in ("ohlcv", "funding"):
        pd.testing.assert_frame_equal(_stored(part, kind, exchange=exchange),
                                      _stored(whole, kind, exchange=exchange))
    again = _fetcher(_fake(exchange, 2500), part, exchange=exchange).fetch(["BTCUSDT"], since="2024-01-01",
                                                                           what=["ohlcv"])
    assert again[0].added == 0 and again[0].note == "up to date" and again[0].requests == 1


@pytest.mark.parametrize("exchange", EXCHANGES)
def test_429_and_5xx_are_retried_with_backoff(tmp_path, exchange):
    fake = _fake(exchange, 1200)
    fake.fail[fake.PATHS["ohlcv"]] = [429, 502, 503]
    fake.fail[fake.PATHS["funding"]] = [429]
    f = _fetcher(fake, tmp_path, exchange=exchange)
    reports = f.fetch(["BTCUSDT"], since="2024-01-01", what=["ohlcv", "funding"])
    assert reports[0].added == 1200 and reports[1].added == len(fake.events)
    np.testing.assert_array_equal(_as_rows(_stored(tmp_path, "ohlcv", exchange=exchange)), fake.expected("ohlcv"))
    assert f.sleeps[:3] == [1.0, 2.0, 4.0]                 # exponential backoff, then success
    assert 1.0 in f.sleeps[3:]


@pytest.mark.parametrize("exchange", EXCHANGES)
def test_retries_give_up_with_a_clear_error(tmp_path, exchange):
    fake = _fake(exchange, 100)
    fake.fail[fake.PATHS["ohlcv"]] = [429] * 10
    with pytest.raises(FetchError, match=r"BTC/USDT:USDT ohlcv 1h: page from 2024-01-01 00:00 failed "
                                         r"after 3 attempts: (DDoSProtection|RateLimitExceeded)"):
        _fetcher(fake, tmp_path, exchange=exchange, retries=2).fetch(["BTCUSDT"], since="2024-01-01",
                                                                     what=["ohlcv"])
    assert not (tmp_path / exchange / "BTCUSDT" / "ohlcv-1h.parquet").exists()
    assert not list(tmp_path.rglob("*.tmp*"))


@pytest.mark.parametrize("exchange", EXCHANGES)
@pytest.mark.parametrize("kind", ["ohlcv", "mark", "funding"])
def test_a_malformed_page_is_reported(tmp_path, exchange, kind):
    fake = _fake(exchange, 100)
    fake.malformed[fake.PATHS[kind]] = 1
    with pytest.raises(FetchError, match=r"malformed|could parse") as error:
        _fetcher(fake, tmp_path, exchange=exchange).fetch(["BTCUSDT"], since="2024-01-01", what=[kind])
    assert "page from 2024-01-01 00:00" in str(error.value)
    assert not (tmp_path / exchange / "BTCUSDT").exists()


@pytest.mark.parametrize("exchange", EXCHANGES)
def test_empty_answers_and_real_gaps_are_reported_not_filled(tmp_path, exchange):
    fake = _fake(exchange, 300, missing=[100, 101, 102, 250])
    reports = _fetcher(fake, tmp_path, exchange=exchange).fetch(["BTCUSDT"], since="2024-01-01", what=["ohlcv"])
    assert reports[0].added == 296
    assert reports[0].gaps == "2 gaps (4 missing bars, first at 2024-01-05 04:00:00+00:00)"
    np.testing.assert_array_equal(_as_rows(_stored(tmp_path, "ohlcv", exchange=exchange)), fake.expected("ohlcv"))
    empty = _fetcher(_fake(exchange, 300), tmp_path / "e", exchange=exchange).fetch(
        ["BTCUSDT"], since="2024-02-01", until="2024-02-10", what=["ohlcv", "funding"])
    assert [(r.added, r.note) for r in empty] == [(0, "the exchange returned nothing")] * 2
    assert not (tmp_path / "e" / exchange).exists()


@pytest.mark.parametrize("exchange", EXCHANGES)
@pytest.mark.parametrize("hours", [1, 4, 8])
def test_funding_at_4h_and_1h_intervals_has_no_holes(tmp_path, exchange, hours):
    fake = _fake(exchange, 2400, funding_hours=hours)
    reports = _fetcher(fake, tmp_path, exchange=exchange).fetch(["BTCUSDT"], since="2024-01-01", what=["funding"])
    stored = _stored(tmp_path, "funding", exchange=exchange)
    assert len(stored) == 2400 // hours and reports[0].added == 2400 // hours
    np.testing.assert_array_equal(_as_rows(stored), fake.expected("funding"))
    steps = np.diff(stored["time"].dt.tz_localize(None).to_numpy().astype("datetime64[h]").astype(np.int64))
    assert (steps == hours).all()


@pytest.mark.parametrize("exchange", EXCHANGES)
def test_only_closed_candles_are_stored(tmp_path, exchange):
    fake = _fake(exchange, 500)
    _fetcher(fake, tmp_path, exchange=exchange, bars_now=300.5).fetch(["BTCUSDT"], since="2024-01-01",
                                                                      what=["ohlcv"])
    # the bar that opened at 299 h closed at 300 h; the one open at "now" (300.5 h) is not stored
    assert len(_stored(tmp_path, "ohlcv", exchange=exchange)) == 300


@pytest.mark.parametrize("exchange", ["bybit", "okx"])
def test_nothing_before_the_listing_is_requested(tmp_path, exchange):
    fake = _fake(exchange, 300)
    f = _fetcher(fake, tmp_path, exchange=exchange)
    listed = f.market("BTC/USDT:USDT")["created"]
    reports = f.fetch(["BTCUSDT"], since="2015-01-01", what=["ohlcv"])
    first = {"bybit": lambda q: int(q["start"]), "okx": lambda q: int(q["before"]) + 1}[exchange]
    starts = [first(q) for path, q in fake.queries if path == fake.PATHS["ohlcv"]]
    span = VENUES[exchange].ohlcv_page * fakex.HOUR
    # one window just before the listing (2020 / 2021) holds nothing: the walk starts there, not in 2015
    assert listed - span <= starts[0] < listed
    assert listed <= starts[1] < listed + fakex.HOUR and starts[1:] == sorted(starts[1:])
    assert reports[0].requests == len(starts) <= (START + 2600 * fakex.HOUR - listed) // span + 4
    assert reports[0].added == 300
    assert reports[0].note == ("the exchange's history starts at 2024-01-01 00:00, after the requested "
                               "2015-01-01 00:00")


@pytest.mark.parametrize("exchange", EXCHANGES)
def test_data_before_the_stated_listing_time_are_not_skipped(tmp_path, exchange):
    # Binance states BTCUSDT's onboardDate as 2019-09-25, yet its candles start on 2019-09-08
    fake = _fake(exchange, 300)
    f = _fetcher(fake, tmp_path, exchange=exchange)
    f.market("BTCUSDT")["created"] = START + 100 * fakex.HOUR
    reports = f.fetch(["BTCUSDT"], since="2023-12-01", what=["ohlcv", "funding"])
    assert [r.added for r in reports] == [300, len(fake.events)]
    np.testing.assert_array_equal(_as_rows(_stored(tmp_path, "ohlcv", exchange=exchange)), fake.expected("ohlcv"))


def test_okx_funding_history_that_starts_late_is_noted(tmp_path):
    fake = _fake("okx", 2400, funding_from=1600)           # OKX serves three months of funding
    reports = _fetcher(fake, tmp_path, exchange="okx").fetch(["BTCUSDT"], since="2024-01-01", what=["funding"])
    assert reports[0].added == 100 == len(fake.events)
    assert reports[0].note == ("the exchange's history starts at 2024-03-07 16:00, after the requested "
                               "2024-01-01 00:00")


@pytest.mark.parametrize("exchange,symbol,what,timeframe,message", [
    ("binance-usdm", "DOGE/USDT:USDT", ["ohlcv"], "1h", "binance-usdm has no market 'DOGE/USDT:USDT'"),
    ("binance-usdm", "BTC/USDT:USDT-250328", ["ohlcv"], "1h", "is not a linear perpetual"),
    ("binance-usdm", "BTCUSDT", ["ohlcv"], "7x", "unknown timeframe"),
    ("binance-usdm", "BTCUSDT", ["ohlcv"], "7m", "has no '7m' candles; it offers 1s, 1m, 3m"),
    ("binance-usdm", "BTCUSDT", ["ohlcv"], "2w", "has no '2w' candles"),
    ("binance-usdm", "BTCUSDT", ["volume"], "1h", "unknown series volume"),
    ("bybit", "DOGEUSDT", ["ohlcv"], "1h", "bybit has no market 'DOGE/USDT:USDT'$"),
    ("bybit", "BTC/USDT:USDT-250328", ["ohlcv"], "1h", "BTC/USDT:USDT-250328 on bybit is not a linear perpetual"),
    ("bybit", "BTCUSDT", ["ohlcv"], "3d", "bybit has no '3d' candles; it offers 1m, 3m"),
    ("okx", "BTC/USD:BTC", ["ohlcv"], "1h", "BTC/USD:BTC on okx is not a linear perpetual"),
    ("okx", "BTC-USDT-250328", ["ohlcv"], "1h", "BTC/USDT:USDT-250328 on okx is not a linear perpetual"),
    ("okx", "BTC/USD:BTC", ["tiers"], "1h", "BTC/USD:BTC on okx is not a linear perpetual"),
])
def test_bad_requests_are_clear_errors(tmp_path, exchange, symbol, what, timeframe, message):
    fake = _fake(exchange, 10)
    with pytest.raises((InputError, DataError), match=message):
        _fetcher(fake, tmp_path, exchange=exchange).fetch([symbol], since="2024-01-01", timeframe=timeframe,
                                                          what=what)
    assert not (tmp_path / exchange).exists()


def test_the_exchange_spelling_of_a_symbol_is_accepted(tmp_path):
    fake = _fake("okx", 50)
    reports = _fetcher(fake, tmp_path, exchange="okx").fetch(["BTC-USDT-SWAP"], since="2024-01-01",
                                                             what=["ohlcv"])
    assert reports[0].symbol == "BTC/USDT:USDT" and reports[0].added == 50


def test_a_series_the_exchange_does_not_offer(tmp_path):
    f = _fetcher(_fake("binance-usdm", 10), tmp_path)
    f.client.has["fetchMarkOHLCV"] = False
    with pytest.raises(InputError, match="does not offer mark through ccxt"):
        f.fetch(["BTCUSDT"], since="2024-01-01", what=["mark"])


def test_tiers_are_appended_only_when_they_change_and_keys_are_never_logged(tmp_path):
    fake = _fake("binance-usdm", 10)
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


def test_bybit_risk_limits_are_public_and_keep_mm_deduction(tmp_path):
    fake = _fake("bybit", 10)
    reports = _fetcher(fake, tmp_path, exchange="bybit", keys=False).fetch(
        ["BTCUSDT"], since="2024-01-01", what=["tiers"])
    assert reports[0].added == 1 and fake.calls.count("risk-limit") == 1
    from btperp.io.tierfile import TierHistoryFile
    table = TierHistoryFile.read(tmp_path / "bybit" / "tier_history.json").history("BTCUSDT").versions[-1][1]
    assert [t.max_notional for t in table.tiers][:2] == [2_000_000, 2_600_000]
    assert [t.maintenance_amount for t in table.tiers] == [0, 1200, 2760, 4680, 6960]   # mmDeduction
    assert table.maintenance_margin(2_300_000) == pytest.approx(2_300_000 * 0.0056 - 1200)


def test_tiers_without_keys_name_the_variables(tmp_path):
    f = _fetcher(_fake("binance-usdm", 10), tmp_path, keys=False)
    with pytest.raises(FetchError, match="needs API keys; set BINANCE_API_KEY and BINANCE_API_SECRET"):
        f.fetch(["BTCUSDT"], since="2024-01-01", what=["tiers"])


def test_keys_in_the_environment_do_not_make_ccxt_call_signed_wallet_endpoints(tmp_path):
    env = {"BYBIT_API_KEY": "k", "BYBIT_API_SECRET": "s"}
    fake = _fake("bybit", 10)
    client = _client(fake, "bybit", env)
    assert client.apiKey == "k"
    Fetcher("bybit", datadir=tmp_path, client=client, clock=lambda: START + 20 * fakex.HOUR).fetch(
        ["BTCUSDT"], since="2024-01-01", what=["ohlcv"])
    assert set(fake.calls) == {"instruments-info", "kline"}


def test_cli_json_summary(tmp_path, capsys, monkeypatch):
    fakes = {"binance-usdm": _fake("binance-usdm", 400), "bybit": _fake("bybit", 400)}
    monkeypatch.setattr(fetch_mod, "make_client",
                        lambda v, env=None: _client(fakes[v.name], v.name, KEYS))
    for exchange in fakes:
        code = cli(["fetch", "--exchange", exchange, "--symbol", "BTCUSDT", "--since", "2024-01-01",
                    "--until", "2024-01-10", "--what", "ohlcv,mark,funding", "--datadir", str(tmp_path), "--json"])
        assert code == 0
        out = json.loads(capsys.readouterr().out)
        # --until 2024-01-10 includes that whole day: 240 hourly bars, 30 funding events
        assert [(r["exchange"], r["series"], r["added"]) for r in out] == [
            (exchange, "ohlcv", 240), (exchange, "mark", 240), (exchange, "funding", 30)]
    # without --what: everything the exchange offers (OKX's position tiers are public)
    fakes["okx"] = _fake("okx", 400)
    assert cli(["fetch", "--exchange", "okx", "--symbol", "BTC-USDT-SWAP", "--since", "2024-01-01",
                "--until", "2024-01-02", "--datadir", str(tmp_path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [(r["series"], r["added"]) for r in out] == [("ohlcv", 48), ("mark", 48), ("funding", 6),
                                                        ("tiers", 1)]
    assert cli(["fetch", "--exchange", "kraken", "--symbol", "BTCUSDT", "--since", "2024-01-01"]) == 2
    assert "unknown exchange 'kraken'" in capsys.readouterr().err


def test_the_suite_cannot_reach_the_network():
    import socket
    with pytest.raises(RuntimeError, match="tried to reach the network"):
        socket.create_connection(("127.0.0.1", 9), timeout=1)


@pytest.mark.parametrize("row,message", [
    (["soon", "1", "2", "3", "4", "5"], r"malformed candle 0 of the page from 1970-01-01 00:00: \['soon'"),
    ([3600000, "1", None, "3", "4", "5"], r"malformed candle 0 \(at 1970-01-01 01:00\) of the page"),
    ([3600000, "1", "2", "3", "nan", "5"], r"malformed candle 0 \(at 1970-01-01 01:00\)"),
    (None, "malformed candle 0 of the page from 1970-01-01 00:00: None"),
    ([5, "1", "2", "3", "4", "5"], "candle 0 of the page from 1970-01-01 00:00 at 1970-01-01 00:00 is off the"),
])
def test_every_malformed_candle_is_named(row, message):
    with pytest.raises(FetchError, match=message):
        fetch_mod._check_candles([row], "BTC/USDT:USDT ohlcv 1h", 0, fakex.HOUR)


def test_by_default_signed_tiers_are_skipped_without_keys_and_fetched_with_them(tmp_path):
    without = _fetcher(_fake("binance-usdm", 50), tmp_path / "a", keys=False).fetch(["BTCUSDT"], since="2024-01-01")
    assert [(r.series, r.added) for r in without] == [("ohlcv", 50), ("mark", 50), ("funding", 7), ("tiers", 0)]
    assert without[-1].note == ("skipped: the tier endpoint is signed; set BINANCE_API_KEY and "
                                "BINANCE_API_SECRET to fetch tiers")
    assert not (tmp_path / "a" / "binance-usdm" / "tier_history.json").exists()
    with_keys = _fetcher(_fake("binance-usdm", 50), tmp_path / "b").fetch(["BTCUSDT"], since="2024-01-01")
    assert with_keys[-1].series == "tiers" and with_keys[-1].added == 1
    assert (tmp_path / "b" / "binance-usdm" / "tier_history.json").exists()


# --- the fakes behave like the exchanges: dropped connections, timeouts, documented page caps ------

import dataclasses  # noqa: E402

import requests  # noqa: E402


@pytest.mark.parametrize("exchange", EXCHANGES)
def test_dropped_connections_and_timeouts_are_retried(tmp_path, exchange):
    fake = _fake(exchange, 300)
    fake.raise_on[fake.PATHS["ohlcv"]] = [requests.ConnectionError, requests.ReadTimeout]
    fake.raise_on[fake.PATHS["funding"]] = [requests.ConnectTimeout]
    f = _fetcher(fake, tmp_path, exchange=exchange)
    f.fetch(["BTC/USDT:USDT"], since="2024-01-01", what=["ohlcv", "funding"])
    assert f.sleeps[:3] == [1.0, 2.0, 1.0]                 # backoff per failed call, then success
    for kind in ("ohlcv", "funding"):
        np.testing.assert_array_equal(_as_rows(_stored(tmp_path, kind, exchange=exchange)), fake.expected(kind))


@pytest.mark.parametrize("exchange", EXCHANGES)
def test_timeouts_give_up_naming_the_series_and_the_page(tmp_path, exchange):
    fake = _fake(exchange, 300)
    fake.raise_on[fake.PATHS["ohlcv"]] = [requests.ReadTimeout] * 5
    f = _fetcher(fake, tmp_path, exchange=exchange, retries=2)
    with pytest.raises(FetchError, match=r"BTC/USDT:USDT ohlcv 1h: page from 2024-01-01 00:00 failed "
                                         r"after 3 attempts: RequestTimeout"):
        f.fetch(["BTC/USDT:USDT"], since="2024-01-01", what=["ohlcv"])
    assert f.sleeps == [1.0, 2.0]


@pytest.mark.parametrize("exchange", EXCHANGES)
def test_page_sizes_are_within_the_documented_caps(tmp_path, exchange):
    """The fakes' caps are the exchanges' documented maxima (tests/fakex.py cites them); every
    request a download sends is within them, or the fake refuses it as the exchange would."""
    fake = _fake(exchange, 2500)
    v = VENUES[exchange]
    assert v.ohlcv_page <= fake.CAPS[fake.PATHS["ohlcv"]] and v.ohlcv_page <= fake.CAPS[fake.PATHS["mark"]]
    assert v.funding_page <= fake.CAPS[fake.PATHS["funding"]]
    _fetcher(fake, tmp_path, exchange=exchange).fetch(["BTC/USDT:USDT"], since="2024-01-01",
                                                      what=["ohlcv", "mark", "funding"])
    limits = [(p, int(q["limit"])) for p, q in fake.queries if "limit" in q and p in fake.CAPS]
    assert limits and all(limit <= fake.CAPS[p] for p, limit in limits)


@pytest.mark.parametrize("exchange,series", [("binance-usdm", "funding"), ("bybit", "ohlcv"),
                                             ("bybit", "funding"), ("okx", "ohlcv"), ("okx", "funding")])
def test_a_page_above_the_documented_cap_is_refused(tmp_path, monkeypatch, exchange, series):
    """Binance -1130 (HTTP 400), Bybit retCode 10001, OKX 51000: an error, never a clipped page.
    (Binance's klines are clipped to 1500 by ccxt itself before they reach the exchange.)"""
    fake = _fake(exchange, 300)
    cap = fake.CAPS[fake.PATHS[series]]
    field = "ohlcv_page" if series == "ohlcv" else "funding_page"
    monkeypatch.setitem(VENUES, exchange, dataclasses.replace(VENUES[exchange], **{field: cap + 1}))
    code = {"binance-usdm": "-1130", "bybit": "10001", "okx": "51000"}[exchange]
    with pytest.raises(FetchError, match=f"page from 2024-01-01 00:00 refused: .*{code}"):
        _fetcher(fake, tmp_path, exchange=exchange, retries=0).fetch(["BTC/USDT:USDT"], since="2024-01-01",
                                                                      what=[series])


def test_the_fifty_page_checkpoint(tmp_path):
    """OKX pages hold 100 candles: 51 pages are needed; the exchange goes down after 50 and the
    50 pages (5,000 candles) are on disk, written at the default checkpoint; a second run resumes."""
    fake = _fake("okx", 5_200)
    fake.down_after[fake.PATHS["ohlcv"]] = 50
    f = _fetcher(fake, tmp_path, exchange="okx", bars_now=5_300, retries=1)
    assert f.checkpoint == 50
    with pytest.raises(FetchError, match="failed after 2 attempts"):
        f.fetch(["BTC/USDT:USDT"], since="2024-01-01", what=["ohlcv"])
    assert len(_stored(tmp_path, "ohlcv", exchange="okx")) == 5_000
    fake.down_after.clear()
    _fetcher(fake, tmp_path, exchange="okx", bars_now=5_300).fetch(["BTC/USDT:USDT"], since="2024-01-01",
                                                                  what=["ohlcv"])
    np.testing.assert_array_equal(_as_rows(_stored(tmp_path, "ohlcv", exchange="okx")), fake.expected("ohlcv"))


def test_an_error_text_that_echoes_the_api_key_is_redacted(tmp_path):
    fake = _fake("binance-usdm", 300)
    fake.echo_headers = True                       # a gateway echoing the request's headers
    fake.fail["leverageBracket"] = [502] * 5
    with pytest.raises(FetchError) as info:
        _fetcher(fake, tmp_path, retries=1).fetch(["BTC/USDT:USDT"], since="2024-01-01", what=["tiers"])
    text = str(info.value)
    assert "leverage tiers failed after 2 attempts" in text
    assert "'X-MBX-APIKEY': '***'" in text
    assert KEYS["BINANCE_API_KEY"] not in text and KEYS["BINANCE_API_SECRET"] not in text
