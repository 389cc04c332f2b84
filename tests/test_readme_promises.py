"""README promises, each checked against numbers worked out by hand: a strategy's own sizes,
``tiers`` as a dict by symbol, custom ``margin_call_levels``, withdrawing isolated margin with
``add_margin`` and its refusals, the history's ``extreme_checked`` column and its
``margin_change`` and ``rejection`` events, the audit's ``undetermined`` verdict and the
``earlier`` and ``never`` outcomes of ``audit history``."""

from pathlib import Path

import backtrader as bt
import pytest
from perpkit import FLAT, Script, feed, make_frame, run, table

import btperp
from btperp.audit import audit_history, audit_position
from btperp.backtest import RunConfig, run as run_config
from btperp.errors import InputError
from btperp.io.history import read

pytestmark = pytest.mark.filterwarnings("ignore::btperp.errors.EarliestTableAssumed")
HERE = __file__
DATASETS = Path(HERE).resolve().parents[1] / "datasets"


def test_a_strategy_that_sizes_its_own_orders_keeps_its_sizes(tmp_path):
    """README "Sizing": MarginSizer sizes orders without a size; 0.05 stays 0.05 at any leverage."""
    for leverage in (1, 10):
        config = RunConfig(HERE.replace("test_readme_promises.py", "strategies_for_tests.py:BuyOwnSize"),
                           symbol="BTCUSDT", start="2024-01-01", end="2024-01-03", leverage=leverage)
        run_config(config, out=tmp_path / f"own{leverage}")
        events = read(tmp_path / f"own{leverage}", "events")
        fills = events[events["kind"].astype(str) == "fill"]
        assert fills["size"].tolist() == [0.05]


def test_tiers_as_a_dict_by_symbol():
    a = make_frame([100.0] * 4, symbol="AAA/USDT:USDT")
    b = make_frame([100.0] * 4, symbol="BBB/USDT:USDT")

    class Both(Script):
        def next(self):
            if len(self) == 1:
                self.buy(data=self.datas[0], size=1.0)
                self.buy(data=self.datas[1], size=1.0)
            self.states = [self.broker.get_margin_state(d) for d in self.datas]

    tiers = {"AAA/USDT:USDT": table((0, float("inf"), 0.01, 100)),
             "BBB/USDT:USDT": table((0, float("inf"), 0.04, 20))}
    strat, _ = run([a, b], strategy=Both, cash=1_000, leverage=10, taker_fee=0.0, tiers=tiers)
    sa, sb = strat.states
    assert (sa.maintenance_margin_rate, sb.maintenance_margin_rate) == (0.01, 0.04)
    # long 1 at 100 with 10 of margin: LP = (10 − 100) / (MMR − 1)
    assert sa.liquidation_price == pytest.approx(90 / 0.99, rel=1e-12)
    assert sb.liquidation_price == pytest.approx(90 / 0.96, rel=1e-12)


def test_custom_margin_call_levels():
    """Long 1 at 100, margin 10, 0.5 %: ratio 0.005 P / (P − 90) reaches 0.5 at 45 / 0.495 = 90.909
    and 0.9 at 81 / 0.895 = 90.503; liquidation at 90 / 0.995 = 90.452."""
    close = [100, 100, 99, 95, 92, 90.8, 90.6, 90.48, 90.48]
    strat, broker = run(make_frame(close), {0: [("buy", dict(size=1.0))]}, cash=100, leverage=10,
                        taker_fee=0.0, margin_call_levels=(0.9, 0.5))
    assert broker.liquidations == []
    assert [(c.level, c.time.hour) for c in broker.margin_calls] == [(0.5, 5), (0.9, 7)]
    first, second = broker.margin_calls
    assert first.margin_ratio == pytest.approx(0.005 * 90.8 / (90.8 - 90))
    assert second.margin_ratio == pytest.approx(0.005 * 90.48 / (90.48 - 90))
    assert first.liquidation_price == pytest.approx(90 / 0.995)
    assert strat.calls == broker.margin_calls
    with pytest.raises(InputError, match="margin call levels must be between 0 and 1"):
        btperp.install(bt.Cerebro(), margin_call_levels=(0.5, 1.2))


class Margin(Script):
    """Moves isolated margin at bar 2 (``moves``) and records the outcomes."""

    params = (("moves", ()),)

    def next(self):
        super().next()
        if len(self) == 3:
            self.outcomes = []
            for amount in self.p.moves:
                try:
                    self.outcomes.append(self.broker.add_margin(self.data, amount))
                except InputError as error:
                    self.outcomes.append(str(error))
            self.state = self.broker.get_margin_state(self.data)


def test_withdrawing_isolated_margin_and_its_refusals(tmp_path):
    frame = make_frame([100.0] * 6)
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(feed(frame))
    cerebro.addstrategy(Margin, plan={0: [("buy", dict(size=1.0))]}, moves=(5.0, -3.0, -3.0, 1_000.0))
    broker = btperp.install(cerebro, cash=100, leverage=10, tiers=FLAT, taker_fee=0.0, history=tmp_path)
    strat = cerebro.run()[0]
    # initial margin 10; +5 → 15; −3 → 12; −3 would leave 9, below the initial margin;
    # 1,000 is more than the available balance 100 − 12 = 88
    assert strat.outcomes[:2] == [15.0, 12.0]
    assert strat.outcomes[2] == "amount: removing 3.00 would leave 9.00, below the initial margin 10.00"
    assert strat.outcomes[3] == "amount: amount 1,000.00 exceeds the available balance 88.00"
    assert strat.state.margin == 12.0
    assert strat.state.liquidation_price == pytest.approx((100 - 12) / 0.995, rel=1e-12)
    assert [(m.amount, m.margin) for m in broker.margin_changes] == [(5.0, 15.0), (-3.0, 12.0)]
    events = read(tmp_path, "events")
    changes = events[events["kind"].astype(str) == "margin_change"]
    assert changes["amount"].tolist() == [5.0, -3.0]
    rows = read(tmp_path)
    assert rows["position_margin"].tolist()[-1] == 12.0
    assert rows["liquidation_price"].iloc[-1] == pytest.approx(88 / 0.995, rel=1e-12)


def test_add_margin_refuses_cross_and_flat_positions():
    frame = make_frame([100.0] * 5)
    for plan, mode, message in (
            ({0: [("buy", dict(size=1.0))]}, "cross",
             "margin_mode: TEST/USDT:USDT is in cross margin: its margin is the cross wallet"),
            ({}, "isolated", "data: TEST/USDT:USDT has no open position")):
        cerebro = bt.Cerebro(stdstats=False)
        cerebro.adddata(feed(frame))
        cerebro.addstrategy(Margin, plan=plan, moves=(5.0,))
        btperp.install(cerebro, cash=100, leverage=10, tiers=FLAT, margin_mode=mode)
        assert cerebro.run()[0].outcomes == [message]


def test_extreme_checked_and_rejection_events(tmp_path):
    """history.parquet's extreme_checked is the bar's adverse mark extreme (low for the long);
    a refused order is a 'rejection' event with its reason."""
    n = 6
    mark_low = [99.0, 98.0, 97.0, 96.0, 95.0, 94.0]
    mark_high = [101.0, 102.0, 103.0, 104.0, 105.0, 106.0]
    frame = make_frame([100.0] * n, mark_low=mark_low, mark_high=mark_high)
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(feed(frame))
    cerebro.addstrategy(Script, plan={0: [("buy", dict(size=1.0))], 2: [("buy", dict(size=50.0))]})
    btperp.install(cerebro, cash=100, leverage=10, tiers=FLAT, taker_fee=0.0, history=tmp_path)
    cerebro.run()
    rows = read(tmp_path)
    assert rows["extreme_checked"].tolist() == mark_low[1:]               # held from bar 1
    events = read(tmp_path, "events")
    (refused,) = events[events["kind"].astype(str) == "rejection"].itertuples()
    # 50 more at 100, 10x: 500 of margin against 100 − 10 available
    assert refused.size == 50.0
    assert refused.detail == "initial margin and fee 500.00 exceed the available balance 90.00"


def test_a_short_checks_the_mark_high_and_last_trigger_the_last_high(tmp_path):
    n = 5
    frame = make_frame([100.0] * n, high=[100.0, 101.5, 102.5, 103.5, 104.5],
                       mark_high=[100.5, 101.0, 102.0, 103.0, 104.0])
    for trigger, expected in (("mark", [101.0, 102.0, 103.0, 104.0]), ("last", [101.5, 102.5, 103.5, 104.5])):
        cerebro = bt.Cerebro(stdstats=False)
        cerebro.adddata(feed(frame))
        cerebro.addstrategy(Script, plan={0: [("sell", dict(size=1.0))]})
        btperp.install(cerebro, cash=1_000, tiers=FLAT, history=tmp_path / trigger, trigger=trigger)
        cerebro.run()
        assert read(tmp_path / trigger)["extreme_checked"].tolist() == expected


def test_undetermined_when_the_data_ends_before_the_report():
    """A 1x long is never liquidated; a report after the bundled data's last bar cannot be judged."""
    a = audit_position("ETHUSDT", "long", "2026-05-10 00:00", size=1.0, leverage=1,
                       reported_time="2026-06-01 00:00", reported_price=100.0)
    assert not a.liquidated
    assert a.verdict == "undetermined"
    assert a.verdict_text == "undetermined: the data ends before the reported time"


def test_audit_history_says_the_last_price_would_have_fired_earlier(tmp_path):
    """A 2x long bought at the 2021-05-17 01:00 open, mark-triggered: the mark liquidates it on
    2021-05-23; the last price's 1,400.73 wick of 2021-05-19 13:00 was already below its
    liquidation price, so the other trigger is 'earlier', at that bar."""
    config = RunConfig(HERE.replace("test_readme_promises.py", "strategies_for_tests.py:BuyOnce"),
                       symbol="ETHUSDT", start="2021-05-17", end="2021-05-25", leverage=2, cash=10_000)
    out = tmp_path / "run"
    run_config(config, out=out)
    (a,) = audit_history(out)
    assert a.time.startswith("2021-05-23") and a.trigger == "mark"
    assert a.other_trigger == "last" and a.other_verdict == "earlier"
    assert a.other_time == "2021-05-19 13:00"
    rows = read(out)
    at = rows[rows["time"] == "2021-05-19 13:00"]
    assert at["close"].size == 1 and 1400.73 <= at["liquidation_price"].iloc[0] < 1764.26


def test_audit_history_says_the_other_trigger_would_never_have_fired(tmp_path, capsys):
    """README "A backtest's liquidations": the other price's outcome can be `never`. A datasets
    folder of 48 flat BTCUSDT hours at 40,000 (funding rate 0) where the last price wicks to
    35,000 at 10:00 and the mark only to 39,000: a last-triggered 10x long of 0.05 BTC is
    liquidated there, and the mark, whose lows stay at 39,000 and above, never reaches its
    liquidation price."""
    import shutil

    import numpy as np
    import pandas as pd

    from btperp.cli.main import main as cli
    from btperp.io.market import series_path, write_series

    root = tmp_path / "data"
    (root / "binance-usdm").mkdir(parents=True)
    shutil.copy(DATASETS / "binance-usdm" / "tier_history.json", root / "binance-usdm")
    times = pd.date_range("2024-01-01", periods=48, freq="h", tz="UTC")
    flat = np.full(48, 40_000.0)
    last_low, mark_low = flat - 20, flat - 20
    last_low[10], mark_low[10] = 35_000.0, 39_000.0
    meta = {"exchange": "binance-usdm", "symbol": "BTC/USDT:USDT", "timeframe": "1h", "source": "test"}
    write_series(pd.DataFrame({"time": times, "open": flat, "high": flat + 20, "low": last_low,
                               "close": flat, "volume": 1.0}),
                 series_path("binance-usdm", "BTCUSDT", "ohlcv", "1h", root), "ohlcv", meta=meta)
    write_series(pd.DataFrame({"time": times, "open": flat, "high": flat + 20, "low": mark_low,
                               "close": flat}),
                 series_path("binance-usdm", "BTCUSDT", "mark", "1h", root), "mark", meta=meta)
    write_series(pd.DataFrame({"time": times[::8], "rate": 0.0}),
                 series_path("binance-usdm", "BTCUSDT", "funding", root=root), "funding",
                 meta={**meta, "timeframe": None})
    config = RunConfig(HERE.replace("test_readme_promises.py", "strategies_for_tests.py:BuyOwnSize"),
                       symbol="BTCUSDT", leverage=10, trigger="last", datadir=str(root))
    out = tmp_path / "run"
    run_config(config, out=out)
    (a,) = audit_history(out)
    # bought 0.05 at the 01:00 open of 40,000: 2,000 of notional, 200 of margin at 10x; BTC's
    # tier 1 (0.4 %, cum 0) in the table of 2023-12-12: LP = (200 − 2,000) / (0.05 × 0.004 − 0.05)
    # = 36,144.58, which the last price's 35,000 crosses at 10:00 (it opened at 40,000: no gap)
    assert a.time == "2024-01-01 10:00" and a.trigger == "last" and not a.gap
    assert (a.size, a.entry_price, a.leverage) == (0.05, 40_000.0, 10.0)
    assert a.liquidation_price == pytest.approx((200 - 2_000) / (0.05 * 0.004 - 0.05), rel=1e-12)
    assert round(a.liquidation_price, 2) == 36_144.58
    assert a.bankruptcy_price == pytest.approx(40_000 - 200 / 0.05, rel=1e-12)      # 36,000
    # the mark: lows of 39,980 before, 39,000 in that bar, 39,980 after: never at 36,144.58
    assert a.other_trigger == "mark" and a.other_verdict == "never" and a.other_time is None
    assert a.notes == ["the mark price never reached its liquidation price through 2024-01-02 23:00"]
    assert cli(["audit", "history", str(out), "--no-plots"]) == 0
    assert "mark: never" in capsys.readouterr().out


def test_the_demos_comparison_prints_the_readmes_figures(tmp_path, capsys):
    """README: "`make demo` runs that comparison: the Donchian breakout on all bundled BTCUSDT 4h
    bars earns most at 2x (+532 %), loses 81 % at 5x without a single liquidation (it paid 19,547
    USDT of funding and 7,651 of fees on the way), and is liquidated from 10x up, the first time
    after 342 days at 10x and 10.8 days at 50x." The command is the Makefile's own."""
    import re
    import shlex

    import pandas as pd

    from btperp.cli.main import main as cli

    root = Path(HERE).resolve().parents[1]
    readme = " ".join((root / "README.md").read_text(encoding="utf-8").split())
    assert ("earns most at 2x (+532 %), loses 81 % at 5x without a single liquidation (it paid "
            "19,547 USDT of funding and 7,651 of fees on the way), and is liquidated from 10x up, "
            "the first time after 342 days at 10x and 10.8 days at 50x") in readme
    (line,) = [x for x in (root / "Makefile").read_text(encoding="utf-8").splitlines()
               if x.strip().startswith("$(BIN)/btperp compare")]
    args = shlex.split(line.strip())[1:]
    assert args[args.index("--out") + 1] == "out/compare"
    args[args.index("--out") + 1] = str(tmp_path / "compare")
    assert cli(args) == 0
    printed = capsys.readouterr().out
    table = pd.read_parquet(tmp_path / "compare" / "results.parquet").set_index("leverage")
    assert table.index.tolist() == [1, 2, 3, 5, 10, 20, 50]
    assert table["total_return"].idxmax() == 2 and round(table.loc[2, "total_return"] * 100) == 532
    five = table.loc[5]
    assert round(five["total_return"] * 100) == -81 and five["liquidations"] == 0
    assert round(five["funding_paid"]) == 19_547 and round(five["fees"]) == 7_651
    assert (table.loc[[1, 2, 3, 5], "liquidations"] == 0).all()
    assert (table.loc[[10, 20, 50], "liquidations"] > 0).all()
    assert table.loc[10, "days_to_first_liquidation"] == pytest.approx(342, abs=0.05)
    assert table.loc[50, "days_to_first_liquidation"] == pytest.approx(10.8, abs=0.05)
    # and the printed table says the same
    rows = {int(m.group(1)): m.group(0) for m in re.finditer(r"^\s*(\d+)x .*$", printed, re.M)}
    assert "531.93 %" in rows[2] and "-81.29 %" in rows[5]
    assert "19,546.72" in rows[5] and "7,650.67" in rows[5]
    assert "342.0" in rows[10] and "10.8" in rows[50]
