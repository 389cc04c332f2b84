"""btperp run / compare: strategies, loading, sizing, statistics, reports, the CLI (issue #6)."""

import ast
import json
import math
from pathlib import Path

import backtrader as bt
import numpy as np
import pandas as pd
import pytest

import btperp
from btperp import stats
from btperp.backtest import (RunConfig, compare, load_strategy, parse_leverages, parse_params, run,
                             strategy_catalog)
from btperp.bt.observers import Liquidations
from btperp.cli.main import main as cli
from btperp.errors import InputError
from btperp.io.tierfile import TierHistoryFile
from btperp.margin import max_open_size

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.filterwarnings("ignore::btperp.errors.EarliestTableAssumed")
Q1 = dict(symbol="BTCUSDT", start="2024-01-01", end="2024-03-31")


# --- the acceptance command ------------------------------------------------------------------

def test_compare_acceptance_command(tmp_path, capsys):
    out = tmp_path / "cmp"
    code = cli(["compare", "--strategy", "sma_cross", "--symbol", "BTCUSDT", "--start", "2024-01-01",
                "--end", "2024-12-31", "--leverage", "1,3,10,50", "--out", str(out), "--json",
                "--no-progress"])
    assert code == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["leverage"] for r in rows] == [1.0, 3.0, 10.0, 50.0]
    liqs = [r["liquidations"] for r in rows]
    assert liqs == sorted(liqs) and liqs[-1] > 0          # does not fall as leverage rises
    assert all(r["last_bar"] == "2024-12-31 23:00" for r in rows)   # --end includes the whole day
    for name in ("results.parquet", "report.png", "report.html"):
        assert (out / name).stat().st_size > 1000
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (out / "report.html").read_text()
    assert "data:image/png;base64," in page and "<td>50x</td>" in page
    table = pd.read_parquet(out / "results.parquet")
    assert table["liquidations"].tolist() == liqs
    # each leverage's margin history is a partition of one dataset
    runs = btperp.io.history.summarize(out)
    assert sorted(r["run_id"] for r in runs) == ["10x", "1x", "3x", "50x"]
    by_id = {r["run_id"]: r for r in runs}
    assert [by_id[f"{L:g}x"]["liquidations"] for L in (1, 3, 10, 50)] == liqs


def test_compare_is_deterministic_and_independent_of_processes(tmp_path):
    config = RunConfig("sma_long_short", **Q1)
    one = compare(config, [2, 20], tmp_path / "a", jobs=1, progress=False).table
    two = compare(config, [20, 2], tmp_path / "b", jobs=2, progress=False).table
    one = one.drop(columns="history_dir")
    two = two.drop(columns="history_dir")
    pd.testing.assert_frame_equal(one, two, check_exact=True)
    assert one["leverage"].tolist() == [2.0, 20.0]


def test_run_json_summary_matches_the_broker_and_history(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli(["run", "--strategy", "sma_long_short", "--symbol", "ETHUSDT", "--start", "2021-05-01",
                "--end", "2021-05-31", "--leverage", "20", "--out", str(out), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    for key in ("final_value", "total_return", "max_drawdown", "trades", "liquidations",
                "funding_paid", "fees", "history_dir"):
        assert key in s
    assert s["total_return"] == pytest.approx(s["final_value"] / 10_000 - 1, rel=1e-12)
    assert s["liquidations"] > 0 and s["first_liquidation"].startswith("2021-05")
    events = pd.read_parquet(Path(s["history_dir"]) / "events.parquet")
    assert (events["kind"] == "liquidation").sum() == s["liquidations"]
    fills = events[events["kind"] == "fill"]
    assert math.fsum(fills["fee"]) == pytest.approx(s["fees"], rel=1e-12)
    assert math.fsum(events.loc[events["kind"] == "funding", "amount"]) == pytest.approx(s["funding_paid"])
    history = pd.read_parquet(Path(s["history_dir"]) / "history.parquet")
    assert history["margin_ratio"].max() == pytest.approx(s["worst_margin_ratio"])


def test_run_text_output_and_plot_with_liquidation_markers(tmp_path, capsys):
    png = tmp_path / "run.png"
    assert cli(["run", "--strategy", "sma_long_short", "--symbol", "ETHUSDT", "--start", "2021-05-10",
                "--end", "2021-05-25", "--leverage", "25", "--out", str(tmp_path / "r"),
                "--plot", str(png)]) == 0
    text = capsys.readouterr().out
    assert "liquidations" in text and "first 2021-05" in text and str(png) in text
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_liquidations_observer_marks_each_liquidation_fill():
    cerebro = bt.Cerebro()                       # stdstats: install adds the observer
    cerebro.adddata(btperp.load_feed("ETHUSDT", start="2021-05-10", end="2021-05-25"))
    cerebro.addstrategy(load_strategy("sma_long_short"))
    cerebro.addsizer(btperp.bt.MarginSizer)
    broker = btperp.install(cerebro, cash=10_000, leverage=25)
    strategy = cerebro.run()[0]
    observer = next(o for o in strategy.getobservers() if isinstance(o, Liquidations))
    marks = np.r_[observer.lines.long.array, observer.lines.short.array,
                  observer.lines.partial_long.array, observer.lines.partial_short.array]
    marks = marks[~np.isnan(marks)]
    assert len(broker.liquidations) > 0 and any(x.partial for x in broker.liquidations)
    assert sorted(marks) == pytest.approx(sorted(x.fill_price for x in broker.liquidations))


# --- strategies --------------------------------------------------------------------------------

def test_strategies_are_plain_backtrader():
    files = [p for p in (ROOT / "strategies").glob("*.py") if p.name != "__init__.py"]
    assert len(files) >= 4
    for path in files:
        tree = ast.parse(path.read_text())
        imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert "btperp" not in imported, path


@pytest.mark.parametrize("name", ["sma_long_short", "breakout", "dca"])
def test_each_example_strategy_trades(name):
    config = RunConfig(name, leverage=3, **Q1)
    result = run(config)
    assert result.summary["trades"] >= 3
    assert result.summary["fees"] > 0


def test_long_short_and_breakout_go_both_ways_and_breakout_uses_stops():
    for name in ("sma_long_short", "breakout"):
        cerebro = bt.Cerebro(stdstats=False)
        cerebro.adddata(btperp.load_feed("BTCUSDT", start="2024-01-01", end="2024-03-31"))
        cerebro.addstrategy(load_strategy(name))
        cerebro.addsizer(btperp.bt.MarginSizer)
        broker = btperp.install(cerebro, cash=10_000, leverage=2)
        cerebro.run()
        sides = {f.side for f in broker.fills}
        assert sides == {"long", "short"}, name


def test_dca_buys_in_legs():
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(btperp.load_feed("BTCUSDT", start="2024-01-01", end="2024-03-31"))
    cerebro.addstrategy(load_strategy("dca"), legs=4, take_profit=5.0)   # never takes profit
    cerebro.addsizer(btperp.bt.MarginSizer, percents=80)
    broker = btperp.install(cerebro, cash=10_000, leverage=2)
    cerebro.run()
    assert len(broker.fills) == 4
    notionals = [f.size * f.price for f in broker.fills]
    # the first leg is a quarter of what the sizer gives (80 % x 10,000 x 2); later legs follow the
    # available balance, which moves with the unrealized PnL
    assert notionals[0] == pytest.approx(16_000 / (1 + 2 * 0.0005) / 4, rel=0.01)
    assert [f.trade_id for f in broker.fills] == [1] * 4


# --- loading strategies and parameters ---------------------------------------------------------

def test_strategy_names(tmp_path):
    assert {"sma_cross", "sma_long_short", "breakout", "dca"} <= set(strategy_catalog())
    assert load_strategy("sma_cross").__name__ == "SmaCross"
    assert load_strategy("strategies.sma_cross:SmaCross").__name__ == "SmaCross"
    assert load_strategy(f"{ROOT}/strategies/breakout.py:Breakout").__name__ == "Breakout"
    mine = tmp_path / "mine.py"
    mine.write_text("import backtrader as bt\nclass A(bt.Strategy):\n    pass\n"
                    "class B(bt.Strategy):\n    params = dict(n=3)\n")
    assert load_strategy(f"{mine}:B").__name__ == "B"
    with pytest.raises(InputError, match="defines 2 strategies"):
        load_strategy(str(mine))
    with pytest.raises(InputError, match="has no strategy 'C'.*A, B"):
        load_strategy(f"{mine}:C")


def test_unknown_strategy_lists_the_choices(capsys):
    assert cli(["run", "--strategy", "nope", "--leverage", "2"]) == 2
    err = capsys.readouterr().err
    assert "unknown strategy 'nope'" in err and "sma_cross" in err and "breakout" in err


def test_missing_module_or_file_is_an_error():
    with pytest.raises(InputError, match="cannot import module 'no_such_module'"):
        load_strategy("no_such_module:X")
    with pytest.raises(InputError, match="no strategy file"):
        load_strategy("missing/file.py:X")


def test_params_are_typed_from_the_defaults():
    cls = load_strategy("sma_long_short")
    assert parse_params(cls, ["fast=5", "short=false"]) == {"fast": 5, "short": False}
    dca = load_strategy("dca")
    assert parse_params(dca, ["take_profit=0.05"]) == {"take_profit": 0.05}
    with pytest.raises(InputError, match="no parameter 'period'.*fast \\(10\\), slow \\(30\\), short \\(True\\)"):
        parse_params(cls, ["period=5"])
    with pytest.raises(InputError, match="fast='ten': not a int"):
        parse_params(cls, ["fast=ten"])
    with pytest.raises(InputError, match="short='maybe'"):
        parse_params(cls, ["short=maybe"])
    with pytest.raises(InputError, match="name=value"):
        parse_params(cls, ["fast"])


@pytest.mark.parametrize("command, extra, message", [
    ("run", ["--symbol", "DOGEUSDT"], "no data for symbol 'DOGEUSDT'"),
    ("run", ["--leverage", "2,3"], "one leverage"),
    ("compare", ["--leverage", "1,x"], "leverage 'x' is not a number"),
    ("compare", ["--leverage", "1,-2"], "must be a positive number"),
    ("run", ["--param", "pfast=abc"], "pfast='abc'"),
    ("run", ["--stake", "150"], "argument --stake: must be a percent"),
])
def test_cli_errors_name_the_problem(capsys, tmp_path, command, extra, message):
    base = ["--strategy", "sma_cross", "--out", str(tmp_path / "x")]
    assert cli([command, *base, *extra]) == 2
    assert message in capsys.readouterr().err


def test_unknown_symbol_lists_the_available_ones(capsys, tmp_path):
    assert cli(["compare", "--strategy", "sma_cross", "--symbol", "DOGEUSDT", "--leverage", "1,2",
                "--jobs", "1", "--no-progress", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "DOGEUSDT" in err and "BTCUSDT" in err and "ETHUSDT" in err


def test_parse_leverages():
    assert parse_leverages("10, 1,3,3") == [1.0, 3.0, 10.0]
    with pytest.raises(InputError, match="no leverage"):
        parse_leverages([])


def test_strategies_command_lists_params(capsys):
    assert cli(["strategies", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["breakout"]["params"] == {"entry": "55", "exit": "20", "short": "True"}


# --- sizing --------------------------------------------------------------------------------------

def btc_table():
    return TierHistoryFile.bundled("binance-usdm").history("BTCUSDT").versions[-1][1]


def test_max_open_size_spends_the_balance_on_margin_and_fee():
    size = max_open_size(1_000.0, 50_000.0, 20, 0.0005)
    notional = size * 50_000
    assert notional / 20 + notional * 0.0005 == pytest.approx(1_000.0, rel=1e-12)
    assert max_open_size(1_000.0, 50_000.0, 20, 0.0005, max_notional=5_000) == pytest.approx(0.1)
    assert max_open_size(-5.0, 100.0, 2, 0.0) == 0.0


def test_max_notional_for_a_leverage_follows_the_tiers():
    table = btc_table()
    top = max(t.max_leverage for t in table.tiers)
    first = table.tiers[0]
    assert table.max_notional_for(top) == first.max_notional
    for t in table.tiers:
        cap = table.max_notional_for(t.max_leverage)
        assert table.lookup(cap * (1 - 1e-9)).max_leverage >= t.max_leverage
    assert table.max_notional_for(top * 2) == 0.0


def test_margin_sizer_orders_pass_the_broker_check_at_any_leverage():
    # at the table's top leverage the tier cap binds, below it the balance does
    table = btc_table()
    top = max(t.max_leverage for t in table.tiers)
    for leverage in (1, 10, top):
        cerebro = bt.Cerebro(stdstats=False)
        cerebro.adddata(btperp.load_feed("BTCUSDT", start="2024-03-01", end="2024-03-03"))
        cerebro.addstrategy(load_strategy("sma_long_short"))
        cerebro.addsizer(btperp.bt.MarginSizer, percents=95)
        broker = btperp.install(cerebro, cash=1_000_000, leverage=leverage, tiers=table)
        cerebro.run()
        assert not broker.rejections, (leverage, broker.rejections[:1])
        first = broker.fills[0]
        notional = abs(first.size) * first.price
        expected = min(0.95 * 1_000_000 / (1 / leverage + 0.0005), 0.99 * table.max_notional_for(leverage))
        assert notional == pytest.approx(expected, rel=0.02)       # sized at the close, filled at the open


def test_margin_sizer_places_no_order_below_the_minimum_notional():
    # 95 % of 5 USDT at 1x is under Binance's 5 USDT minimum order: a wiped-out account stops
    # trading instead of trading dust; 6 USDT at 1x is above it
    small = run(RunConfig("sma_long_short", cash=5.0, leverage=1, **Q1))
    assert small.summary["trades"] == 0 and small.summary["fees"] == 0.0
    enough = run(RunConfig("sma_long_short", cash=6.0, leverage=1, **Q1))
    assert enough.summary["trades"] > 0


# --- statistics ----------------------------------------------------------------------------------

def test_statistics_of_known_curves():
    assert stats.max_drawdown([100, 120, 90, 130, 65]) == pytest.approx(0.5)
    assert stats.max_drawdown([1, 2, 3]) == 0.0
    year = 365.25 * stats.DAY_MS
    assert stats.cagr(100, 200, year) == pytest.approx(1.0)
    assert stats.cagr(100, 400, 2 * year) == pytest.approx(1.0)
    assert stats.cagr(100, 0, year) == -1.0
    hour = 3_600_000
    times = np.arange(72) * hour                                   # three days of hourly bars
    equity = np.r_[np.full(24, 100.0), np.full(24, 110.0), np.full(24, 99.0)]
    assert stats.daily_returns(times, equity) == pytest.approx([0.10, -0.10])
    r = np.array([0.10, -0.10])
    assert stats.sharpe_ratio(times, equity) == pytest.approx(r.mean() / r.std(ddof=1) * math.sqrt(365))
    assert math.isnan(stats.sharpe_ratio(times[:30], equity[:30]))
    s = stats.summarize(times, equity, 100.0)
    assert s["final_value"] == 99.0 and s["total_return"] == pytest.approx(-0.01)
    assert s["max_drawdown"] == pytest.approx(0.1)


def test_cerebro_plot_works_without_a_screen(tmp_path):
    # a fresh interpreter without DISPLAY: backtrader's plot module would force TkAgg
    import os
    import subprocess
    import sys
    import textwrap
    script = textwrap.dedent(f"""
        import warnings
        warnings.simplefilter("ignore")
        import backtrader as bt, btperp
        cerebro = bt.Cerebro()
        cerebro.adddata(btperp.load_feed("ETHUSDT", start="2021-05-15", end="2021-05-22"))
        cerebro.addstrategy(bt.Strategy)
        btperp.install(cerebro, cash=1000, leverage=5)
        cerebro.run()
        figures = cerebro.plot()
        figures[0][0].savefig(r"{tmp_path / 'plot.png'}")
        import matplotlib
        print(matplotlib.get_backend())
    """)
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "MPLBACKEND")}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().lower() == "agg"
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
