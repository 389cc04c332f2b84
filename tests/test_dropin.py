"""Drop-in behaviour for existing backtrader scripts (issue 16): setcommission, sizing."""

import json
import math
import warnings

import backtrader as bt
import pyarrow.parquet as pq
import pytest

import btperp
from btperp.backtest import RunConfig, run
from btperp.cli.main import main as cli
from btperp.errors import InputError, RefusedOrdersWarning
from strategies.sma_cross import SmaCross


_DEFAULT = []


def sma_run(setup=None, **install):
    if setup is None and not install and _DEFAULT:
        return _DEFAULT[0]
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(btperp.load_feed("BTCUSDT", start="2024-01-01", end="2024-01-31"))
    cerebro.addstrategy(SmaCross)
    broker = btperp.install(cerebro, cash=50_000, leverage=2, **install)
    if setup:
        setup(broker)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cerebro.run()
    if setup is None and not install:
        _DEFAULT.append(broker)
    return broker


def notional(broker):
    return math.fsum(abs(f.size) * f.price for f in broker.fills)


@pytest.mark.parametrize("setup", [lambda b: b.setcommission(commission=0.001),
                                   lambda b: b.setcommission(commission=0.1, percabs=False),
                                   lambda b: b.setcommission(commission=0.001, name="BTC/USDT:USDT")])
def test_setcommission_sets_maker_and_taker_fees(setup):
    default = sma_run()
    assert default.fees_paid == pytest.approx(notional(default) * 0.0005)    # Binance's taker rate
    broker = sma_run(setup)
    assert len(broker.fills) == len(default.fills) >= 4
    # fee = notional x rate (Binance "Trading Fees"): 0.1 % of every fill
    assert broker.fees_paid == pytest.approx(notional(broker) * 0.001, rel=1e-12)
    assert broker.fees_paid != pytest.approx(default.fees_paid)


def test_setcommission_for_another_name_leaves_this_feed_alone():
    default = sma_run()
    broker = sma_run(lambda b: b.setcommission(commission=0.001, name="ETHUSDT"))
    assert broker.fees_paid == pytest.approx(default.fees_paid, rel=1e-12)


@pytest.mark.parametrize("kwargs, field, hint", [
    (dict(margin=2000.0), "margin", "leverage"), (dict(mult=10), "mult", "lot_size"),
    (dict(stocklike=True), "stocklike", "futures-like"), (dict(leverage=5), "leverage", "configure"),
    (dict(commtype=bt.CommInfoBase.COMM_FIXED), "commtype", "maker_fee"),
    (dict(interest=0.05), "interest", "funding")])
def test_setcommission_refuses_what_contradicts_a_perpetual(kwargs, field, hint):
    cerebro = bt.Cerebro()
    broker = btperp.install(cerebro)
    with pytest.raises(InputError) as caught:
        broker.setcommission(commission=0.001, **kwargs)
    assert caught.value.field == field and hint in str(caught.value)


# --- refusals visible ----------------------------------------------------------------------------

GREEDY = '''
import backtrader as bt


class Greedy(bt.Strategy):
    """Buys 100 BTC every 24 bars: far more than the balance can margin."""

    params = (("size", 100.0),)

    def next(self):
        if len(self) % 24 == 1:
            self.buy(size=self.p.size)
'''


def greedy(tmp_path):
    path = tmp_path / "greedy.py"
    path.write_text(GREEDY)
    return f"{path}:Greedy"


def test_a_run_whose_every_order_is_refused_says_so(tmp_path, capsys):
    args = ["--strategy", greedy(tmp_path), "--symbol", "BTCUSDT", "--start", "2024-01-01", "--end",
            "2024-01-03", "--leverage", "5"]
    assert cli(["run", *args, "--out", str(tmp_path / "run"), "--json"]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    # 3 days of 1h bars, an order every 24 bars; 100 BTC x 42,000 / 5 = 840,000 USDT of margin each
    assert summary["refused_orders"] == 3 and summary["trades"] == 0
    assert "exceed the available balance" in summary["refusal_reason"]
    assert "never traded: all 3 orders were refused" in captured.err
    assert cli(["run", *args, "--out", str(tmp_path / "run")]) == 0
    assert "refused orders  3 (most often: initial margin and fee" in capsys.readouterr().out
    assert cli(["compare", *args[:-2], "--leverage", "5,10", "--out", str(tmp_path / "cmp"), "--jobs", "1",
                "--no-progress"]) == 0
    out = capsys.readouterr()
    assert "5x: 3 orders refused" in out.out and "10x: 3 orders refused" in out.out
    results = pq.read_table(tmp_path / "cmp" / "results.parquet").to_pandas()
    assert results["refused_orders"].tolist() == [3, 3]
    assert "refused orders" in (tmp_path / "cmp" / "report.html").read_text()
    with pytest.warns(RefusedOrdersWarning):
        run(RunConfig(greedy(tmp_path), symbol="BTCUSDT", start="2024-01-01", end="2024-01-02", leverage=2))


@pytest.mark.parametrize("command, leverage", [("run", "500"), ("compare", "1,1000")])
def test_a_leverage_no_tier_allows_is_refused_up_front(tmp_path, capsys, command, leverage):
    status = cli([command, "--strategy", "sma_cross", "--symbol", "BTCUSDT", "--leverage", leverage,
                  "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert status == 2
    assert f"{leverage.split(',')[-1]}x: no tier of BTC/USDT:USDT on binance-usdm allows it (at most 125x" in err
    assert not (tmp_path / "x").exists()


# --- sizing under leverage -------------------------------------------------------------------------

class TargetHalf(bt.Strategy):
    def next(self):
        if len(self) == 1:
            self.order_target_percent(target=0.5)
        elif len(self) == 2:
            self.buy()                                   # sized by the cerebro's sizer


@pytest.mark.parametrize("leverage", [1, 10])
def test_order_target_percent_keeps_backtraders_meaning_and_margin_sizer_scales(leverage):
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(btperp.load_feed("BTCUSDT", start="2024-01-01", end="2024-01-02"))
    cerebro.addstrategy(TargetHalf)
    cerebro.addsizer(btperp.bt.MarginSizer, percents=20)
    broker = btperp.install(cerebro, cash=10_000, leverage=leverage, maker_fee=0.0, taker_fee=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        strat = cerebro.run()[0]
    first, second = broker.fills[:2]
    close0, close1 = strat.data.close.array[0], strat.data.close.array[1]
    # order_target_percent: a position whose notional is 50 % of the account value, at any leverage
    assert first.size * close0 == pytest.approx(5_000, rel=1e-12)
    # MarginSizer: 20 % of the available balance as initial margin, so notional x leverage
    available = 10_000 - 5_000 * (first.price / close0) / leverage
    assert second.size * close1 == pytest.approx(0.2 * available * leverage, rel=1e-9)


def test_history_show_orders_runs_by_leverage_and_counts_trades_as_compare(tmp_path, capsys):
    out = tmp_path / "cmp"
    assert cli(["compare", "--strategy", "sma_cross", "--symbol", "BTCUSDT", "--start", "2024-01-01",
                "--end", "2024-01-20", "--leverage", "10,1,2", "--out", str(out), "--jobs", "1",
                "--no-progress", "--json"]) == 0
    table = json.loads(capsys.readouterr().out)
    assert cli(["history", "show", str(out), "--json"]) == 0
    runs = json.loads(capsys.readouterr().out)
    assert [r["run_id"] for r in runs] == ["1x", "2x", "10x"]
    # closed trades, as backtrader counts them in the comparison; the one still open apart
    assert [r["trades"] for r in runs] == [row["trades"] for row in table]
    open_at_end = [r["open_trades"] for r in runs]
    assert len(set(open_at_end)) == 1 and open_at_end[0] in (0, 1)


def test_strategies_command_shows_plain_descriptions(capsys):
    assert cli(["strategies", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["sma_cross"]["doc"].startswith("The SMA crossover of backtrader's documentation")
    assert rows["breakout"]["doc"].startswith("Enter on a break of the entry-bar high")
    assert all("``" not in r["doc"] and r["doc"] for r in rows.values())
    assert cli(["run", "--help"]) == 0              # main() returns argparse's exit status
    assert "--list-strategies" not in capsys.readouterr().out


# --- plots -------------------------------------------------------------------------------------------

def test_backtrader_plot_of_a_btperp_run_has_dates_named_observers_and_volume_labels():
    from btperp.bt.plot import name_observers, readable, use_agg
    use_agg()
    import matplotlib.pyplot as plt
    cerebro = bt.Cerebro()
    cerebro.adddata(btperp.load_feed("ETHUSDT", start="2021-05-10", end="2021-05-20"))
    cerebro.addstrategy(SmaCross)
    btperp.install(cerebro, cash=10_000, leverage=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cerebro.run()
    name_observers(cerebro)
    figures = cerebro.plot(iplot=False)
    readable(figures)
    fig = figures[0][0]
    fig.canvas.draw()
    bottom = min(fig.axes, key=lambda ax: ax.get_position().y0)
    dates = [t.get_text() for t in bottom.get_xticklabels() if t.get_visible() and t.get_text()]
    assert dates and all(t.startswith("2021-05-") for t in dates)
    legends = [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]
    assert any(t.startswith("Account, USDT") for t in legends)
    assert not any("(None)" in t or "(True" in t for t in legends)
    volume = [ax for ax in fig.axes if any(t.get_text().endswith("M") for t in ax.get_yticklabels())]
    labels = [t.get_text() for t in volume[0].get_yticklabels() if t.get_text()]
    assert len(set(labels)) == len(labels)                  # no '0M, 0M, 1M'
    plt.close("all")


def test_report_floor_and_labels():
    from types import SimpleNamespace

    import numpy as np

    from btperp.report.comparison import label_groups, log_floor
    runs = [SimpleNamespace(equity=np.array([10_000.0, 5.0, 0.04])),
            SimpleNamespace(equity=np.array([10_000.0, 0.0, 0.0]))]
    assert log_floor(runs, 10_000) == 0.001                 # a decade under 0.04: the cents show
    groups = label_groups([(45, 318), (97.6, -81), (100, -100), (100, -100), (100, -99.99)], (3, 25))
    assert [g[2] for g in groups] == [[0], [1, 2, 3, 4]]


def test_layers_import_downwards_only():
    """io/ reads and writes files and imports nothing above it; backtest and audit import nothing
    from the report layer (which draws them)."""
    import ast
    from pathlib import Path
    package = Path(btperp.__file__).parent

    def imports(path):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module is not None:
                yield ("." * node.level) + node.module
            elif isinstance(node, ast.ImportFrom):
                yield "." * node.level
    for path in (package / "io").glob("*.py"):
        bad = [m for m in imports(path) if m.lstrip(".").split(".")[0] in ("backtest", "audit", "report", "cli")
               and m.startswith("..")]
        assert not bad, f"{path.name} imports {bad}"
    for name in ("backtest.py", "audit.py"):
        bad = [m for m in imports(package / name) if m.lstrip(".").startswith("report")]
        assert not bad, f"{name} imports {bad}"
