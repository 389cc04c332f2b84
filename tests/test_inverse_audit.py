"""``audit position`` for coin-margined (inverse) contracts (issue #19): the position is replayed as
its mirror by btperp.replay (1/P, high and low swapped); the audit reports USD prices, contracts
and amounts in the coin, and agrees with the broker on the same data."""

import json

import numpy as np
import pandas as pd
import pytest
from perpkit import make_frame, random_market, run, table

from btperp.audit import audit_position
from btperp.cli.main import main as cli
from btperp.errors import InputError
from btperp.io.market import series_path, write_series
from btperp.io.tierfile import write_tier_histories
from btperp.tiers import TierHistory

BTC_TIERS = table((0, 5, 0.004, 125), (5, 10, 0.005, 100), (10, np.inf, 0.01, 50))
LOW = [50_000, 50_000, 49_000, 47_000, 48_000]


def hand_frame():
    return make_frame([50_000, 50_000, 49_000, 48_500, 48_000], low=LOW, mark_low=LOW,
                      symbol="BTC/USD:BTC", exchange="binance-coinm")


def test_the_hand_case_liquidates_where_the_broker_does():
    """The broker test's long (tests/test_inverse_broker.py): 100 BTCUSD contracts at 50,000, 20x
    isolated: LP = (40 + 10,000) / (0.01 + 0.2) = 47,809.52, BP = 50,000 × 20 / 21 = 47,619.05,
    liquidated in the 03:00 bar (mark low 47,000), the margin 0.01 BTC lost."""
    lp, bp = 10_040 / 0.21, 50_000 * 20 / 21
    a = audit_position("BTCUSD_PERP", "long", "2024-01-01 01:00", 50_000, contracts=100, leverage=20,
                       exchange="binance-coinm", frame=hand_frame(), tiers=BTC_TIERS,
                       reported_time="2024-01-01 03:00", reported_price=47_700)
    assert (a.symbol, a.side, a.size, a.contract_size, a.settle) == ("BTC/USD:BTC", "long", 100, 100, "BTC")
    assert a.margin == pytest.approx(0.01, rel=1e-12)
    assert a.entry_liquidation_price == pytest.approx(lp, rel=1e-12)
    assert a.entry_bankruptcy_price == pytest.approx(bp, rel=1e-12)
    assert a.liquidated and a.liquidation_time == "2024-01-01 03:00"
    assert a.trigger_price == pytest.approx(lp, rel=1e-12)
    assert a.bankruptcy_price == pytest.approx(bp, rel=1e-12)
    assert a.bar["mark"] == {"open": 49_000, "high": 49_000, "low": 47_000, "close": 48_500}
    (event,) = a.events
    assert event["size"] == 100 and event["fill_price"] == pytest.approx(bp, rel=1e-12)
    assert event["pnl"] == pytest.approx(-0.01, rel=1e-9)
    assert a.verdict == "consistent"
    assert a.evidence[0] == ("the rules liquidate it in the 2024-01-01 03:00 bar at 47,809.52 "
                             "(liquidation price 47,809.52, mark extreme 47,000.00)")
    assert a.evidence[1] == ("reported price 47,700.00 is inside the 2024-01-01 03:00 bar's last-price "
                             "range 47,000.00 to 49,000.00")
    # the broker on the same data
    _, b = run(hand_frame(), {0: [("buy", {"size": 100})]}, exchange="binance-coinm", cash=1.0,
               leverage=20, tiers=BTC_TIERS)
    (liq,) = b.liquidations
    assert liq.time.strftime("%Y-%m-%d %H:%M") == a.liquidation_time
    assert liq.trigger_price == pytest.approx(a.trigger_price, rel=1e-12)
    assert liq.fill_price == pytest.approx(a.bankruptcy_price, rel=1e-12)


def test_an_earlier_report_says_how_close_the_price_came_in_usd():
    """Reported in the 02:00 bar, whose mark low 49,000 is 2.49 % above LP = 47,809.52 (a long's
    distance: (49,000 − 47,809.52) / 47,809.52)."""
    a = audit_position("BTCUSD", "long", "2024-01-01 01:00", 50_000, contracts=100, leverage=20,
                       exchange="binance-coinm", frame=hand_frame(), tiers=BTC_TIERS,
                       reported_time="2024-01-01 02:00")
    assert a.verdict == "earlier"
    lp = 10_040 / 0.21
    assert a.closest["price"] == 49_000 and a.closest["liquidation_price"] == pytest.approx(lp)
    assert a.closest["distance_pct"] == pytest.approx((49_000 - lp) / lp * 100, rel=1e-9)
    assert "low 49,000.00 at 2024-01-01 02:00, 2.49 % above the liquidation price 47,809.52" in a.evidence[1]


@pytest.mark.parametrize("seed", range(6))
def test_audit_and_broker_agree_on_random_markets(seed):
    """Random markets around 100 USD (gaps, wicks, funding), Bybit inverse (1 USD contracts) and
    Binance COIN-M (contract size 10): the broker's liquidations and the audit's events have the
    same times, trigger and fill prices, sizes (partial steps in whole contracts) and PnL, and the
    same funding paid before the first."""
    rng = np.random.default_rng(seed)
    frame = random_market(rng, 60, vol=0.02, symbol="BTC/USD:BTC")
    exchange = "bybit-inverse" if seed % 2 else "binance-coinm"
    cs = 1.0 if exchange == "bybit-inverse" else 10.0
    side = "buy" if seed % 3 else "sell"
    contracts, leverage = (1_000 if cs == 1 else 100) * (1 + seed % 3), [10, 20, 25][seed % 3]
    strat, b = run(frame, {0: [(side, {"size": contracts})]}, exchange=exchange, cash=100.0,
                   leverage=leverage, tiers=BTC_TIERS, contract_size=cs)
    entry = b.fills[0]
    a = audit_position("BTCUSD", "long" if side == "buy" else "short", frame.index[1], entry.price,
                       contracts=contracts, leverage=leverage, exchange=exchange, frame=frame,
                       tiers=BTC_TIERS, contract_size=cs)
    assert a.liquidated == bool(b.liquidations)
    assert len(a.events) == len(b.liquidations)
    for event, liq in zip(a.events, b.liquidations):
        assert event["time"] == liq.time.strftime("%Y-%m-%d %H:%M")
        assert event["trigger_price"] == pytest.approx(liq.trigger_price, rel=1e-9)
        assert event["fill_price"] == pytest.approx(liq.fill_price, rel=1e-9)
        assert event["size"] == pytest.approx(liq.size, rel=1e-9)
        assert event["pnl"] == pytest.approx(liq.pnl, rel=1e-9, abs=1e-12)
    # the audit's funding: until the first liquidation event (the broker's remainder pays on)
    until = b.liquidations[0].time if b.liquidations else frame.index[-1]
    paid = sum(p.payment for p in b.funding_payments if p.time <= until)
    assert a.funding_paid == pytest.approx(paid, rel=1e-9, abs=1e-15)


def test_refusals():
    kw = dict(exchange="binance-coinm", frame=hand_frame(), tiers=BTC_TIERS)
    with pytest.raises(InputError, match="size: coin-margined positions are sized in contracts"):
        audit_position("BTCUSD", "long", "2024-01-01 01:00", size=1, leverage=20, **kw)
    with pytest.raises(InputError, match="give two of contracts, margin"):
        audit_position("BTCUSD", "long", "2024-01-01 01:00", contracts=1, margin=0.1, leverage=20, **kw)
    with pytest.raises(InputError, match="contract_size: must be a positive number"):
        audit_position("BTCUSD", "long", "2024-01-01 01:00", contracts=1, leverage=20, contract_size=-1, **kw)
    with pytest.raises(InputError, match="symbol: 'BTCUSDT' is not coin-margined"):
        audit_position("BTCUSDT", "long", "2024-01-01 01:00", contracts=1, leverage=20, **kw)
    with pytest.raises(InputError, match="contracts: binance-usdm is sized in base units"):
        audit_position("BTCUSDT", "long", "2024-01-01 01:00", contracts=1, leverage=20)


def _coinm_datadir(root):
    f = hand_frame().reset_index()
    meta = {"exchange": "binance-coinm", "symbol": "BTC/USD:BTC", "timeframe": "1h", "source": "test"}
    write_series(f[["time", "open", "high", "low", "close", "volume"]],
                 series_path("binance-coinm", "BTCUSD", "ohlcv", "1h", root), "ohlcv", meta=meta)
    mark = f[["time", "mark_open", "mark_high", "mark_low", "mark_close"]]
    mark.columns = ["time", "open", "high", "low", "close"]
    write_series(mark, series_path("binance-coinm", "BTCUSD", "mark", "1h", root), "mark", meta=meta)
    write_series(pd.DataFrame({"time": f["time"][:1], "rate": [0.0]}),
                 series_path("binance-coinm", "BTCUSD", "funding", root=root), "funding",
                 meta={**meta, "timeframe": None})
    write_tier_histories(root / "binance-coinm" / "tier_history.json",
                         {"BTC/USD:BTC": TierHistory.constant(BTC_TIERS)}, exchange="binance-coinm",
                         source="test")
    return root


def test_cli_audits_a_coin_margined_position(tmp_path, capsys):
    root = _coinm_datadir(tmp_path / "data")
    base = ["audit", "position", "--exchange", "binance-coinm", "--symbol", "BTCUSD_PERP", "--side", "long",
            "--entry-time", "2024-01-01 01:00", "--entry-price", "50000", "--datadir", str(root)]
    assert cli(base + ["--contracts", "100", "--leverage", "20", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["liquidation_time"] == "2024-01-01 03:00" and out["settle"] == "BTC"
    assert out["liquidation_price"] == pytest.approx(10_040 / 0.21, rel=1e-12)
    assert cli(base + ["--contracts", "100", "--leverage", "20"]) == 0
    text = capsys.readouterr().out
    assert ("BTC/USD:BTC long 100 contracts of 100 USD at 50,000.00 (2024-01-01 01:00 UTC), 20x isolated, "
            "margin 0.01000000 BTC") in text
    assert "equity 0.00083665 vs maintenance margin 0.00083665" in text
    for extra, message in ((["--size", "1", "--leverage", "20"], "size: coin-margined positions are sized"),
                           (["--contracts", "100", "--leverage", "20", "--plot", str(tmp_path / "a.png")],
                            "plot: the chart of a coin-margined audit is not drawn yet")):
        assert cli(base + extra) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err


def test_the_frames_contract_size_is_the_default():
    """A frame recording 10 USD contracts: 1,000 of them are the hand case's 10,000 USD long."""
    f = hand_frame()
    f.attrs["contract_size"] = 10.0
    a = audit_position("BTCUSD", "long", "2024-01-01 01:00", 50_000, contracts=1_000, leverage=20,
                       exchange="binance-coinm", frame=f, tiers=BTC_TIERS)
    assert a.contract_size == 10 and a.liquidation_price == pytest.approx(10_040 / 0.21, rel=1e-12)
