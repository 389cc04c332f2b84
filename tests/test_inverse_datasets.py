"""Coin-margined backtests and audits on fetched datasets (issue #19): btperp fetch against the
canned Binance COIN-M answers (tests/fakex.py, no network) writes BTCUSD_PERP's candles, marks,
funding and brackets; ``btperp.load_feed`` + ``btperp.install(exchange="binance-coinm",
datadir=...)`` backtest on them with the stored contract size (100 USD) and brackets (in BTC), and
``audit_position`` on the same folder agrees with the broker. Expected funding from the canned
events and marks: contracts × 100 × rate / mark open of the event's bar."""

import backtrader as bt
import pandas as pd
import pytest

import btperp
from btperp.audit import audit_position
from btperp.io.fetch import VENUES, Fetcher, make_client

import fakex

START = 1704067200000                      # 2024-01-01 00:00 UTC


def _fetch(tmp_path, bars=120):
    fake = fakex.FAKES["binance-coinm"](START, bars)
    client = fake.attach(make_client(VENUES["binance-coinm"], env={"BINANCE_API_KEY": "k", "BINANCE_API_SECRET": "s"}))
    client.enableRateLimit = False
    Fetcher("binance-coinm", datadir=tmp_path, client=client, sleep=lambda s: None,
            clock=lambda: START + 2600 * fakex.HOUR).fetch(["BTCUSD_PERP"], since="2024-01-01",
                                                         what=["ohlcv", "mark", "funding", "tiers"])
    return fake


@pytest.mark.filterwarnings("ignore::btperp.errors.EarliestTableAssumed")   # brackets fetched "today"
def test_a_backtest_and_an_audit_on_a_fetched_coin_m_dataset(tmp_path):
    fake = _fetch(tmp_path)
    frame = btperp.load("BTCUSD_PERP", exchange="binance-coinm", datadir=tmp_path)
    assert frame.attrs["contract_size"] == 100.0

    class Hold(bt.Strategy):
        def next(self):
            if len(self) == 1:
                self.buy(size=50)

    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(btperp.load_feed("BTCUSD_PERP", exchange="binance-coinm", datadir=tmp_path))
    cerebro.addstrategy(Hold)
    broker = btperp.install(cerebro, exchange="binance-coinm", cash=0.1, leverage=20, datadir=tmp_path,
                            liquidation="full")
    cerebro.run()
    assert broker.books[0].mirror.contract_size == 100.0
    entry = broker.fills[0]
    assert (entry.size, entry.price) == (50, pytest.approx(frame["open"].iloc[1]))
    # every funding event while held: 50 × 100 × rate / mark open of its bar (the canned values)
    marks = {pd.Timestamp(t, unit="ms", tz="UTC"): float(o) for t, o, *_ in fake.marks}
    until = broker.liquidations[0].time if broker.liquidations else frame.index[-1]
    expected = {pd.Timestamp(t, unit="ms", tz="UTC"): 50 * 100 * float(r) / marks[pd.Timestamp(t, unit="ms", tz="UTC")]
                for t, r in fake.events
                if frame.index[1] < pd.Timestamp(t, unit="ms", tz="UTC") <= until}
    paid = {p.time: p.payment for p in broker.funding_payments}
    assert paid.keys() == expected.keys() and len(paid) >= 3
    for when, payment in paid.items():
        assert payment == pytest.approx(expected[when], rel=1e-9)
    # the audit on the same folder: the same liquidation, the same funding until then
    a = audit_position("BTCUSD_PERP", "long", frame.index[1], entry.price, contracts=50, leverage=20,
                       exchange="binance-coinm", datadir=tmp_path, liquidation="full")
    assert a.contract_size == 100 and a.settle == "BTC"
    assert a.liquidated and broker.liquidations      # 20x through the canned series' fall
    (liq,) = broker.liquidations
    assert a.liquidation_time == liq.time.strftime("%Y-%m-%d %H:%M")
    assert a.trigger_price == pytest.approx(liq.trigger_price, rel=1e-9)
    assert a.bankruptcy_price == pytest.approx(liq.fill_price, rel=1e-9)
    assert a.funding_paid == pytest.approx(sum(paid.values()), rel=1e-9)
