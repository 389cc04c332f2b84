"""btperp fetch for coin-margined (inverse) perpetuals (issue #19): Binance COIN-M, Bybit inverse
and OKX coin-margined swaps, through ccxt against canned HTTP answers (tests/fakex.py,
tests/canned), never the network. What is stored, what btperp.load / load_feed read back, the tier
tables in the coin (Binance, Bybit) and in USD of face value (OKX), bad symbols, the CLI.

Expected values come from the canned answers (the fakes' generated series, the canned JSON files),
not from btperp's code."""

import json

import backtrader as bt
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

import btperp
from btperp.cli.main import main as cli
from btperp.errors import DataError, InputError
from btperp.io import fetch as fetch_mod
from btperp.io.fetch import Fetcher, VENUES, make_client
from btperp.io.market import COIN_MARGINED, read_meta, read_series
from btperp.io.tierfile import TierHistoryFile

import fakex

START = 1704067200000                      # 2024-01-01 00:00 UTC
KEYS = {"BINANCE_API_KEY": "k3y-not-logged", "BINANCE_API_SECRET": "s3cret-not-logged"}
INVERSE = ["binance-coinm", "bybit-inverse", "okx-inverse"]
#: the exchange's own spelling of its BTC coin-margined perpetual, and USD a contract, as the
#: canned instrument lists give them (exchangeInfo contractSize, Bybit lotSizeFilter.minOrderQty, OKX ctVal)
EXCHANGE_ID = {"binance-coinm": "BTCUSD_PERP", "bybit-inverse": "BTCUSD", "okx-inverse": "BTC-USD-SWAP"}
CONTRACT_USD = {"binance-coinm": 100.0, "bybit-inverse": 1.0, "okx-inverse": 100.0}


def _fake(exchange, bars, **kw):
    return fakex.FAKES[exchange](START, bars, **kw)


def _client(fake, exchange, env):
    client = fake.attach(make_client(VENUES[exchange], env=env))
    client.enableRateLimit = False
    return client


def _fetcher(fake, tmp_path, exchange, *, keys=True, **kw):
    client = _client(fake, exchange, KEYS if keys else {})
    return Fetcher(exchange, datadir=tmp_path, client=client, sleep=lambda s: None,
                   clock=lambda: START + 2600 * fakex.HOUR, **kw)


def _as_rows(frame: pd.DataFrame) -> np.ndarray:
    ms = frame["time"].map(lambda t: t.value // 1_000_000).to_numpy(dtype=float)
    return np.column_stack([ms, frame.drop(columns="time").to_numpy(dtype=float)])


def _stored(tmp_path, exchange, kind):
    name = "funding.parquet" if kind == "funding" else f"{kind}-1h.parquet"
    return read_series(tmp_path / exchange / "BTCUSD" / name, kind, timeframe=None if kind == "funding" else "1h",
                       warn_gaps=False)


def test_the_coin_margined_venues_are_the_datasets_coin_margined_exchanges():
    assert {name for name, v in VENUES.items() if v.inverse} == set(COIN_MARGINED) == set(INVERSE)
    for name in INVERSE:
        assert VENUES[name].counterpart == COIN_MARGINED[name] and VENUES[COIN_MARGINED[name]].counterpart == name


@pytest.mark.parametrize("exchange", INVERSE)
def test_a_multi_page_download_of_a_coin_margined_perpetual_equals_the_canned_series(tmp_path, exchange):
    fake = _fake(exchange, 2500)
    reports = _fetcher(fake, tmp_path, exchange).fetch([EXCHANGE_ID[exchange]], since="2024-01-01",
                                                       what=["ohlcv", "mark", "funding"])
    assert [(r.symbol, r.series, r.added) for r in reports] == [
        ("BTC/USD:BTC", "ohlcv", 2500), ("BTC/USD:BTC", "mark", 2500), ("BTC/USD:BTC", "funding", 313)]
    assert fake.calls.count(fake.PATHS["ohlcv"]) == -(-2500 // VENUES[exchange].ohlcv_page) + 1
    for kind in ("ohlcv", "mark", "funding"):
        # prices in USD as the exchange wrote them; volume: the coin's column of each API
        np.testing.assert_array_equal(_as_rows(_stored(tmp_path, exchange, kind)), fake.expected(kind))
    meta = read_meta(tmp_path / exchange / "BTCUSD" / "ohlcv-1h.parquet")
    assert meta["symbol"] == "BTC/USD:BTC" and meta["exchange"] == exchange
    assert meta["contract"] == {"type": "inverse", "size": CONTRACT_USD[exchange], "size_unit": "USD",
                                "settle": "BTC", "id": EXCHANGE_ID[exchange]}


@pytest.mark.parametrize("exchange", INVERSE)
@pytest.mark.parametrize("spelling", ["BTC/USD:BTC", "BTCUSD", "exchange id"])
def test_btperp_load_and_load_feed_read_a_coin_margined_dataset(tmp_path, exchange, spelling):
    fake = _fake(exchange, 300)
    _fetcher(fake, tmp_path, exchange).fetch(["BTC/USD:BTC"], since="2024-01-01", what=["ohlcv", "mark", "funding"])
    symbol = EXCHANGE_ID[exchange] if spelling == "exchange id" else spelling
    frame = btperp.load(symbol, exchange=exchange, datadir=tmp_path)
    assert len(frame) == 300
    t, o, h, lo, c, v = fake.candles[7]
    row = frame.loc[pd.Timestamp(t, unit="ms", tz="UTC")]
    assert (row["open"], row["high"], row["low"], row["close"], row["volume"]) == tuple(map(float, (o, h, lo, c, v)))
    assert row["mark_close"] == float(fake.marks[7][4])
    # funding every 8 hours on the hour: the canned rate of 2024-01-01 08:00 at that bar
    event_t, rate = fake.events[1]
    at = frame.loc[pd.Timestamp(event_t, unit="ms", tz="UTC")]
    assert at["funding_rate"] == float(rate) and at["funding_events"] == 1
    assert frame["funding_events"].sum() == len(fake.events) == 38
    assert {k: frame.attrs[k] for k in ("symbol", "exchange", "contract_type", "contract_size",
                                         "contract_size_unit", "settle")} == {
        "symbol": "BTC/USD:BTC", "exchange": exchange, "contract_type": "inverse",
        "contract_size": CONTRACT_USD[exchange], "contract_size_unit": "USD", "settle": "BTC"}

    closes = []

    class Record(bt.Strategy):
        def next(self):
            closes.append((self.data.close[0], self.data.mark_close[0]))

    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(btperp.load_feed(symbol, exchange=exchange, datadir=tmp_path, end="2024-01-02 23:00"))
    cerebro.addstrategy(Record)
    cerebro.run()
    # bar open times up to 2024-01-02 23:00: 48 hourly bars, the canned closes in USD
    assert len(closes) == 48
    assert closes[-1] == (float(fake.candles[47][4]), float(fake.marks[47][4]))


def test_the_data_catalog_describes_a_coin_margined_dataset(tmp_path):
    from btperp.io.catalog import dataset_info
    _fetcher(_fake("binance-coinm", 50), tmp_path, "binance-coinm").fetch(["BTCUSD_PERP"], since="2024-01-01",
                                                                         what=["ohlcv", "mark"])
    info = dataset_info("BTCUSD_PERP", "binance-coinm", tmp_path)
    assert info["symbol"] == "BTC/USD:BTC" and info["series"]["ohlcv-1h"]["rows"] == 50
    assert info["contract"]["contract_size"] == 100.0


def test_btperp_data_info_shows_the_contract(tmp_path, capsys):
    _fetcher(_fake("okx-inverse", 50), tmp_path, "okx-inverse").fetch(["BTC-USD-SWAP"], since="2024-01-01",
                                                                     what=["ohlcv", "mark"])
    assert cli(["data", "--datadir", str(tmp_path), "info", "BTC-USD-SWAP", "--exchange", "okx-inverse"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("BTC/USD:BTC on okx-inverse (")
    # ctVal of BTC-USD-SWAP in the canned instruments: 100 USD
    assert lines[1] == "contract: inverse, 100 USD a contract, settled in BTC; prices in USD, volume in the coin"


def _tiers(tmp_path, exchange):
    history = TierHistoryFile.read(tmp_path / exchange / "tier_history.json").history("BTC/USD:BTC")
    return history.versions[-1][1]


def test_binance_coinm_brackets_are_stored_in_the_coin(tmp_path):
    fake = _fake("binance-coinm", 10)
    reports = _fetcher(fake, tmp_path, "binance-coinm").fetch(["BTCUSD_PERP"], since="2024-01-01", what=["tiers"])
    assert reports[0].added == 1 and fake.calls.count("leverageBracket") == 1
    table = _tiers(tmp_path, "binance-coinm")
    canned = next(b["brackets"] for b in fake.brackets if b["symbol"] == "BTCUSD_PERP")
    assert [t.max_notional for t in table.tiers] == [b["qtyCap"] for b in canned]     # BTC: 5, 10, 20, ...
    assert [t.min_notional for t in table.tiers] == [b["qtyFloor"] for b in canned]
    assert [t.maintenance_amount for t in table.tiers] == [b["cum"] for b in canned]
    # Binance "How to Calculate Liquidation Price of COIN-M Futures Contracts": 300 BTC of position
    # value is level 7 (12.5 %, cum 11.605 BTC)
    assert table.maintenance_margin(300) == pytest.approx(300 * 0.125 - 11.605)


def test_bybit_inverse_risk_limits_are_stored_in_the_coin(tmp_path):
    fake = _fake("bybit-inverse", 10)
    _fetcher(fake, tmp_path, "bybit-inverse", keys=False).fetch(["BTCUSD"], since="2024-01-01", what=["tiers"])
    table = _tiers(tmp_path, "bybit-inverse")
    canned = fake.risk_limit["result"]["list"]
    assert [t.max_notional for t in table.tiers] == [float(r["riskLimitValue"]) for r in canned]   # 150 BTC, ...
    assert [t.maintenance_amount for t in table.tiers] == [float(r["mmDeduction"] or 0) for r in canned]
    assert table.maintenance_margin(400) == pytest.approx(400 * 0.015 - 2.25)


def test_okx_inverse_tiers_are_stored_in_usd_of_face_value(tmp_path):
    fake = _fake("okx-inverse", 10)
    _fetcher(fake, tmp_path, "okx-inverse", keys=False).fetch(["BTC-USD-SWAP"], since="2024-01-01", what=["tiers"])
    table = _tiers(tmp_path, "okx-inverse")
    canned = fake.position_tiers["data"]
    assert table.contract_value == 100.0 and table.upper_inclusive
    # maxSz contracts x ctVal 100 USD: 50,000 contracts = 5,000,000 USD of face value
    assert [t.max_notional for t in table.tiers] == [float(r["maxSz"]) * 100 for r in canned]
    assert table.lookup(5_000_000).maintenance_margin_rate == float(canned[0]["mmr"])
    assert table.lookup(5_000_100).maintenance_margin_rate == float(canned[1]["mmr"])


def test_fetched_coin_m_brackets_drive_btperp_calc(tmp_path, monkeypatch, capsys):
    _fetcher(_fake("binance-coinm", 10), tmp_path, "binance-coinm").fetch(["BTCUSD_PERP"], since="2024-01-01",
                                                                         what=["tiers"])
    monkeypatch.setenv("BTPERP_DATASETS", str(tmp_path))
    # 3,000 contracts x 100 USD at 50,000 = 6 BTC of position value: bracket 2 (0.5 %, cum 0.005 BTC)
    assert cli(["calc", "--exchange", "binance-coinm", "--symbol", "BTCUSD_PERP", "--side", "long",
                "--contracts", "3000", "--entry", "50000", "--leverage", "20", "--json"]) == 0
    position = json.loads(capsys.readouterr().out)["positions"][0]
    assert position["tier"] == 2
    assert position["maintenance_margin"] == pytest.approx(6 * 0.005 - 0.005)


@pytest.mark.parametrize("exchange,symbol,message", [
    ("binance-coinm", "BTCUSDT", r"^symbol: 'BTCUSDT' is not a coin-margined symbol; binance-coinm has "
                                 r"coin-margined perpetuals \(quoted in USD, settled in the coin: BTCUSD, "
                                 r"BTC/USD:BTC\), linear ones are on binance-usdm$"),
    ("binance-coinm", "BTC/USDT:USDT", "'BTC/USDT:USDT' is not a coin-margined symbol"),
    ("bybit-inverse", "ETHUSDC", "'ETHUSDC' is not a coin-margined symbol; .* linear ones are on bybit$"),
    ("binance-coinm", "BTCUSD_250328", "BTC/USD:BTC-250328 on binance-coinm is not a coin-margined perpetual"),
    ("binance-coinm", "DOGEUSD", "binance-coinm has no market 'DOGE/USD:DOGE'"),
    ("bybit-inverse", "BTCUSDH25", "BTC/USD:BTC-250328 on bybit-inverse is not a coin-margined perpetual"),
    ("okx-inverse", "BTC-USDT-SWAP", "BTC/USDT:USDT on okx-inverse is not a coin-margined perpetual .*; "
                                     "linear ones: --exchange okx"),
    ("binance-usdm", "BTCUSD_PERP", r"'BTCUSD_PERP' reads as a coin-margined symbol \(BTC/USD:BTC\); binance-usdm "
                                    r"has linear .* --exchange binance-coinm"),
    ("bybit", "BTCUSD", "--exchange bybit-inverse"),
    ("okx", "BTC-USD-SWAP", "BTC/USD:BTC on okx is not a linear perpetual .*; coin-margined ones: "
                            "--exchange okx-inverse"),
])
def test_a_symbol_of_the_other_margin_type_or_unknown_is_an_input_error(tmp_path, exchange, symbol, message):
    fake = _fake(exchange, 10)
    with pytest.raises(InputError, match=message) as info:
        _fetcher(fake, tmp_path, exchange).fetch([symbol], since="2024-01-01", what=["ohlcv"])
    assert info.value.field == "symbol"
    assert not (tmp_path / exchange).exists()


def test_loading_a_linear_symbol_from_a_coin_margined_exchange_is_an_input_error(tmp_path):
    _fetcher(_fake("binance-coinm", 20), tmp_path, "binance-coinm").fetch(["BTCUSD"], since="2024-01-01",
                                                                         what=["ohlcv", "mark"])
    with pytest.raises(InputError, match="symbol: 'BTCUSDT' is not a coin-margined symbol") as info:
        btperp.load("BTCUSDT", exchange="binance-coinm", datadir=tmp_path)
    assert info.value.field == "symbol"
    with pytest.raises(DataError, match="no data for symbol 'ETHUSD'"):
        btperp.load("ETHUSD", exchange="binance-coinm", datadir=tmp_path)


def test_binance_coinm_candle_windows_stay_within_200_days():
    """COIN-M klines refuse a startTime..endTime span above 200 days (the fake too): 1000 daily bars
    would be 1000 days; the window is cut to 200 days, whatever the page."""
    day = 24 * fakex.HOUR
    for exchange, expected in (("binance-coinm", 200 * day), ("binance-usdm", 1000 * day)):
        f = Fetcher(exchange, datadir="unused", client=_client(_fake(exchange, 1), exchange, KEYS))
        assert f._window_ms("1d") == expected
        assert f._window_ms("1h") == 1000 * fakex.HOUR


def test_the_fake_refuses_a_coin_m_span_above_200_days(tmp_path):
    fake = _fake("binance-coinm", 10)
    client = _client(fake, "binance-coinm", KEYS)
    import ccxt
    with pytest.raises(ccxt.BadRequest, match="-1130"):
        client.fetch_ohlcv("BTC/USD:BTC", "1h", since=START, limit=10,
                           params={"until": START + 201 * 24 * fakex.HOUR})


def test_cli_fetches_coin_margined_symbols_and_refuses_linear_ones_with_exit_2(tmp_path, capsys, monkeypatch):
    fakes = {name: _fake(name, 400) for name in INVERSE}
    monkeypatch.setattr(fetch_mod, "make_client", lambda v, env=None: _client(fakes[v.name], v.name, KEYS))
    for exchange in INVERSE:
        code = cli(["fetch", "--exchange", exchange, "--symbol", EXCHANGE_ID[exchange], "--since", "2024-01-01",
                    "--until", "2024-01-10", "--what", "ohlcv,mark,funding", "--datadir", str(tmp_path), "--json"])
        assert code == 0
        out = json.loads(capsys.readouterr().out)
        assert [(r["exchange"], r["symbol"], r["series"], r["added"]) for r in out] == [
            (exchange, "BTC/USD:BTC", "ohlcv", 240), (exchange, "BTC/USD:BTC", "mark", 240),
            (exchange, "BTC/USD:BTC", "funding", 30)]
        assert (tmp_path / exchange / "BTCUSD" / "ohlcv-1h.parquet").is_file()
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert cli(["fetch", "--exchange", "binance-coinm", "--symbol", "BTCUSDT", "--since", "2024-01-01",
                "--datadir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "symbol: 'BTCUSDT' is not a coin-margined symbol" in err and "Traceback" not in err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_a_fetched_coin_margined_file_has_the_bundled_schema(tmp_path):
    from btperp.io.paths import datasets_dir
    _fetcher(_fake("bybit-inverse", 30), tmp_path, "bybit-inverse").fetch(["BTCUSD"], since="2024-01-01",
                                                                         what=["ohlcv", "mark", "funding"])
    bundled = datasets_dir() / "binance-usdm" / "BTCUSDT"
    for name in ("ohlcv-1h.parquet", "mark-1h.parquet", "funding.parquet"):
        ours = pq.read_schema(tmp_path / "bybit-inverse" / "BTCUSD" / name)
        assert ours.remove_metadata() == pq.read_schema(bundled / name).remove_metadata()


@pytest.mark.parametrize("exchange", INVERSE)
def test_coin_margined_page_sizes_are_within_the_documented_caps(tmp_path, exchange):
    """The fakes' caps are the exchanges' documented maxima for the inverse endpoints (tests/fakex.py
    cites them); every request of a multi-page download is within them."""
    fake = _fake(exchange, 2500)
    v = VENUES[exchange]
    assert v.ohlcv_page <= fake.CAPS[fake.PATHS["ohlcv"]] and v.ohlcv_page <= fake.CAPS[fake.PATHS["mark"]]
    assert v.funding_page <= fake.CAPS[fake.PATHS["funding"]]
    _fetcher(fake, tmp_path, exchange).fetch(["BTC/USD:BTC"], since="2024-01-01", what=["ohlcv", "mark", "funding"])
    limits = [(p, int(q["limit"])) for p, q in fake.queries if "limit" in q and p in fake.CAPS]
    assert {p for p, _ in limits} == {fake.PATHS[k] for k in ("ohlcv", "mark", "funding")}
    assert all(limit <= fake.CAPS[p] for p, limit in limits)


def test_a_coin_m_funding_page_above_1000_is_refused(tmp_path, monkeypatch):
    import dataclasses
    from btperp.io.fetch import FetchError
    monkeypatch.setitem(VENUES, "binance-coinm", dataclasses.replace(VENUES["binance-coinm"], funding_page=1001))
    with pytest.raises(FetchError, match="page from 2024-01-01 00:00 refused: .*-1130"):
        _fetcher(_fake("binance-coinm", 300), tmp_path, "binance-coinm", retries=0).fetch(
            ["BTCUSD_PERP"], since="2024-01-01", what=["funding"])


@pytest.mark.parametrize("exchange", INVERSE)
def test_an_interrupted_coin_margined_download_resumes_to_the_canned_series(tmp_path, exchange):
    from btperp.io.fetch import FetchError
    fake = _fake(exchange, 2500)
    page = VENUES[exchange].ohlcv_page
    fake.down_after[fake.PATHS["ohlcv"]] = 2               # two pages come, then the exchange is down
    with pytest.raises(FetchError, match="failed after 2 attempts"):
        _fetcher(fake, tmp_path, exchange, checkpoint=1, retries=1).fetch(["BTC/USD:BTC"], since="2024-01-01",
                                                                           what=["ohlcv"])
    assert len(_stored(tmp_path, exchange, "ohlcv")) == 2 * page
    fake.down_after.clear()
    again = _fetcher(fake, tmp_path, exchange).fetch(["BTC/USD:BTC"], since="2024-01-01", what=["ohlcv"])
    assert again[0].added == 2500 - 2 * page
    np.testing.assert_array_equal(_as_rows(_stored(tmp_path, exchange, "ohlcv")), fake.expected("ohlcv"))
