"""Per-trade margin history: files, exactness, identity, atomicity, sweeps, the CLI."""

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import backtrader as bt
import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from perpkit import FLAT, Script, feed, make_frame

import btperp
from btperp.cli.main import main as cli
from btperp.errors import InputError
from btperp.io.history import EVENTS_SCHEMA, HISTORY_SCHEMA, read, read_metadata
from strategies.sma_cross import SmaCross

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.filterwarnings("ignore::btperp.errors.EarliestTableAssumed")


class OpenBars(bt.Analyzer):
    """Added before PerpHistory: what the broker says at each bar, for comparison."""

    def start(self):
        self.rows = []

    def next(self):
        broker = self.strategy.broker
        for data in self.strategy.datas:
            state = broker.get_margin_state(data)
            if state is not None:
                self.rows.append((data.datetime.datetime(0), state))


def sma_eth(path, *, every="bar", **options):
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(btperp.load_feed("ETHUSDT", start="2021-04-01", end="2021-06-30"))
    cerebro.addstrategy(SmaCross)
    cerebro.addanalyzer(OpenBars)
    broker = btperp.install(cerebro, cash=3000, leverage=20, history=path, history_every=every, **options)
    strat = cerebro.run()[0]
    return strat, broker


@pytest.fixture(scope="module")
def eth_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("eth")
    strat, broker = sma_eth(path)
    return path, strat, broker


def test_the_files_load_with_pandas_pyarrow_dataset_and_duckdb(eth_run):
    path, strat, _ = eth_run
    paths = strat.analyzers.perphistory.get_analysis()
    assert paths["history"] == str(path / "history.parquet") and paths["events"] == str(path / "events.parquet")
    frame = pd.read_parquet(path / "history.parquet")
    assert list(frame.columns) == HISTORY_SCHEMA.names
    table = ds.dataset(path / "events.parquet").to_table()
    assert table.schema.names == EVENTS_SCHEMA.names
    (count, worst), = duckdb.sql(
        f"select count(*), max(margin_ratio) from read_parquet('{path}/history.parquet')").fetchall()
    assert count == len(frame) == paths["rows"] and worst == frame["margin_ratio"].max()
    kinds = duckdb.sql(f"select kind, count(*) from read_parquet('{path}/events.parquet') group by kind"
                       ).fetchall()
    assert {"fill", "funding", "liquidation", "insurance_fund", "margin_call"} <= {k for k, _ in kinds}


def test_events_reproduce_the_broker_totals_exactly(eth_run):
    path, _, broker = eth_run
    events = read(path, "events")
    funding = events.loc[events["kind"] == "funding", "amount"]
    assert math.fsum(funding) == broker.funding_paid
    assert math.fsum(events["fee"].dropna()) == broker.fees_paid
    assert math.fsum(events.loc[events["kind"] == "insurance_fund", "amount"]) == broker.insurance_fund
    liquidations = events[events["kind"] == "liquidation"]
    assert len(broker.liquidations) == len(liquidations) > 0
    for record, (_, row) in zip(broker.liquidations, liquidations.iterrows()):
        assert (row["time"], row["trigger_price"], row["price"], row["amount"]) == (
            pd.Timestamp(record.time), record.trigger_price, record.fill_price, record.loss)
    meta = read_metadata(path / "events.parquet")
    assert meta["totals"]["funding_paid"] == broker.funding_paid


def test_one_row_per_bar_per_open_position_agreeing_with_the_broker(eth_run):
    path, strat, _ = eth_run
    history = read(path)
    seen = strat.analyzers.openbars.rows
    assert len(history) == len(seen)
    assert not history.duplicated(["time", "symbol"]).any()
    for (when, state), (_, row) in zip(seen, history.iterrows()):
        assert row["time"] == pd.Timestamp(when, tz="UTC")
        assert row["size"] == state.size and row["entry_price"] == state.entry_price
        assert row["tier"] == state.tier and row["mark_close"] == state.mark_price
        assert row["maintenance_margin"] == pytest.approx(state.maintenance_margin, rel=1e-12)
        assert row["margin_ratio"] == pytest.approx(state.margin_ratio, rel=1e-12)
        assert row["liquidation_price"] == pytest.approx(state.liquidation_price, rel=1e-12)
        assert row["bankruptcy_price"] == pytest.approx(state.bankruptcy_price, rel=1e-12)
        assert row["position_margin"] == pytest.approx(state.margin, rel=1e-12)


def test_trade_funding_and_fees_accumulate_per_trade(eth_run):
    path, _, _ = eth_run
    history = read(path)
    events = read(path, "events")
    funding = events[events["kind"] == "funding"]
    fills = events[events["kind"] == "fill"]
    def so_far(events, row):
        return events[(events["trade_id"] == row["trade_id"]) & (events["time"] <= row["time"])]

    for _, row in history.sample(200, random_state=1).iterrows():
        assert row["funding_paid"] == pytest.approx(so_far(funding, row)["amount"].sum(), abs=1e-9)
        opening = so_far(fills, row)
        assert row["fees_paid"] == pytest.approx(opening.loc[opening["size"] > 0, "fee"].sum(), abs=1e-9)


def test_two_identical_runs_write_identical_files(tmp_path, eth_run):
    path, _, _ = eth_run
    sma_eth(tmp_path)
    for name in ("history.parquet", "events.parquet"):
        a, b = pq.read_table(path / name), pq.read_table(tmp_path / name)
        assert a.equals(b)
        meta_a, meta_b = read_metadata(path / name), read_metadata(tmp_path / name)
        meta_a.pop("created"), meta_b.pop("created")
        assert meta_a == meta_b
    meta = read_metadata(tmp_path / "history.parquet")
    assert meta["settings"]["instruments"]["ETH/USDT:USDT"]["leverage"] == 20.0
    assert meta["settings"]["data"]["ETH/USDT:USDT"]["first"] == "2021-04-01 00:00"
    assert set(meta["versions"]) == {"btperp", "backtrader", "pandas", "pyarrow", "numpy"}
    assert meta["tier_tables_used"]


def test_recording_only_changes(tmp_path, eth_run):
    path, _, _ = eth_run
    sma_eth(tmp_path, every="change")
    every_bar, changes = read(path), read(tmp_path)
    assert 0 < len(changes) < len(every_bar) / 2
    assert set(changes["time"]) <= set(every_bar["time"])
    state = ["trade_id", "size", "entry_price", "tier", "funding_paid", "fees_paid"]
    # every state of the run is a row of the change-only file (row by row, not column by column),
    # and the change-only file has no row whose state equals the row before it
    distinct = every_bar.drop_duplicates(state)[state]
    found = distinct.merge(changes[state].drop_duplicates(), how="left", indicator=True)
    assert len(found) == len(distinct) and (found["_merge"] == "both").all()
    assert len(changes.drop_duplicates(state)) == len(distinct)


def long_for_300_bars(path, strategy=Script) -> bt.Cerebro:
    """A long of 1 held from the first bar, its history in batches of 50 rows."""
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(feed(make_frame([100.0] * 300)))
    cerebro.addstrategy(strategy, plan={0: [("buy", dict(size=1.0))]})
    btperp.install(cerebro, cash=1000, tiers=FLAT)
    cerebro.addanalyzer(btperp.bt.PerpHistory, path=str(path), batch_rows=50)
    return cerebro


def test_rows_are_flushed_in_batches(tmp_path):
    long_for_300_bars(tmp_path).run()
    parquet = pq.ParquetFile(tmp_path / "history.parquet")
    assert parquet.metadata.num_rows == 299 and parquet.num_row_groups >= 5


def test_cross_rows_carry_the_accounts_equity_and_ratio(tmp_path):
    a = make_frame([100.0, 100.0, 95.0, 97.0, 96.0], symbol="AAA/USDT:USDT")
    b = make_frame([100.0, 100.0, 101.0, 99.0, 100.0], symbol="BBB/USDT:USDT")

    class Both(Script):
        def next(self):
            if len(self) == 1:
                self.buy(data=self.datas[0], size=1.0)
                self.sell(data=self.datas[1], size=1.0)

    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(feed(a))
    cerebro.adddata(feed(b))
    cerebro.addstrategy(Both)
    btperp.install(cerebro, cash=30, leverage=10, margin_mode="cross", tiers=FLAT, history=tmp_path,
                   taker_fee=0.0)
    cerebro.run()
    history = read(tmp_path)
    for _, bar in history.groupby("time"):
        assert len(bar) == 2 and bar["equity"].nunique() == 1 and bar["margin_ratio"].nunique() == 1
        equity = 30 + bar["unrealized_pnl"].sum()
        assert bar["equity"].iloc[0] == pytest.approx(equity)
        assert bar["margin_ratio"].iloc[0] == pytest.approx(bar["maintenance_margin"].sum() / equity)
        assert bar["position_margin"].isna().all() and bar["liquidation_price"].notna().all()
        # Binance's ADL LeveragePnL of the cross account: max(0, UP) / max(1, wallet 30) × MM / equity
        up = bar["unrealized_pnl"].sum()
        expected = max(0.0, up) / 30 * bar["maintenance_margin"].sum() / (30 + up)
        assert bar["adl_score"].tolist() == pytest.approx([expected, expected], abs=1e-15)


def test_isolated_rows_carry_binances_adl_score(eth_run):
    """Each isolated row: max(0, UP) / max(1, isolated margin) × MM / (isolated margin + UP)."""
    path, _, _ = eth_run
    h = read(path)
    up, wallet, mm = h["unrealized_pnl"], h["position_margin"], h["maintenance_margin"]
    expected = up.clip(lower=0) / wallet.clip(lower=1) * (mm / (wallet + up)).where(wallet + up > 0, 0.0)
    assert (h["adl_score"] - expected).abs().max() < 1e-12
    assert (h["adl_score"] > 0).any() and (h["adl_score"] == 0).any()     # winners and losers


def test_adl_scores_by_exchange_worked_by_hand():
    binance, bybit = btperp.get_rulebook("binance-usdm"), btperp.get_rulebook("bybit")
    # Binance, isolated 10x long 0.04 at 20,000 (margin 80), mark 22,000: UP = 80, MM = 0.004 ×
    # 880 = 3.52: LeveragePnL = 80 / 80 × 3.52 / 160 = 0.022
    assert binance.adl_score(side=1, entry_price=20_000, price=22_000, bankruptcy_price=18_000,
                             wallet=80, unrealized=80, maintenance=3.52) == pytest.approx(0.022)
    # in a loss, or with no equity left, the score is 0
    assert binance.adl_score(side=1, entry_price=20_000, price=19_000, bankruptcy_price=18_000,
                             wallet=80, unrealized=-40, maintenance=3.04) == 0.0
    # Bybit: PnL% × effective leverage, effective leverage = mark / (mark − bankruptcy) for a long
    # long 20,000 → 22,000, bankruptcy 18,000: 0.10 × 22,000 / 4,000 = 0.55
    # short 20,000 → 18,000, bankruptcy 22,000: 0.10 × 18,000 / 4,000 = 0.45
    # long 20,000 → 19,000 (a loss): −0.05 / (19,000 / 1,000) = −0.05 / 19
    scores = bybit.adl_score(side=[1, -1, 1], entry_price=[20_000] * 3, price=[22_000, 18_000, 19_000],
                             bankruptcy_price=[18_000, 22_000, 18_000], wallet=0, unrealized=0,
                             maintenance=0)
    assert scores.tolist() == pytest.approx([0.55, 0.45, -0.05 / 19], abs=1e-15)
    # Hyperliquid publishes no ranking formula: NaN
    assert math.isnan(btperp.get_rulebook("hyperliquid").adl_score(
        side=1, entry_price=1, price=1, bankruptcy_price=0, wallet=1, unrealized=0, maintenance=0))


def test_a_sweep_writes_one_hive_partition_per_run(tmp_path):
    cerebro = bt.Cerebro(stdstats=False, maxcpus=2)
    cerebro.adddata(btperp.load_feed("ETHUSDT", start="2021-04-01", end="2021-06-30"))
    cerebro.optstrategy(SmaCross, pfast=[5, 10])
    btperp.install(cerebro, cash=3000, leverage=20, history=tmp_path)
    results = cerebro.run()
    answers = [r[0].analyzers.perphistory.get_analysis() for r in results]
    runs = {a["run_id"] for a in answers}
    assert len(runs) == 2
    for a in answers:
        assert Path(a["history"]) == tmp_path / "history" / f"run_id={a['run_id']}" / "history.parquet"
    assert set(pd.read_parquet(tmp_path / "history")["run_id"]) == runs
    assert set(ds.dataset(tmp_path / "events", partitioning="hive").to_table()["run_id"].to_pylist()) == runs
    rows = dict(duckdb.sql(f"select run_id, count(*) from read_parquet('{tmp_path}/history/*/*.parquet', "
                           f"hive_partitioning = true) group by run_id").fetchall())
    assert rows == {a["run_id"]: a["rows"] for a in answers}
    assert set(read(tmp_path)["run_id"]) == runs


def test_an_unwritable_directory_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(InputError, match="cannot write the history"):
        sma_eth(blocker / "history")
    assert blocker.read_text() == "not a directory"


class FailsAtBar(Script):
    def next(self):
        super().next()
        if len(self) == 200:
            raise RuntimeError("strategy bug")


def test_a_run_that_fails_leaves_no_file_that_passes_for_complete(tmp_path):
    with pytest.raises(RuntimeError, match="strategy bug"):
        long_for_300_bars(tmp_path, FailsAtBar).run()
    assert not (tmp_path / "history.parquet").exists() and not (tmp_path / "events.parquet").exists()
    leftovers = list(tmp_path.iterdir())
    assert leftovers and all(p.name.startswith(".history.parquet.") for p in leftovers)
    for partial in leftovers:
        with pytest.raises(pa.ArrowInvalid):
            pq.read_table(partial)


def test_a_killed_run_leaves_no_file_that_passes_for_complete(tmp_path):
    script = textwrap.dedent(f"""
        import sys, time
        sys.path[:0] = [{str(ROOT / 'tests')!r}, {str(ROOT)!r}]
        import backtrader as bt, btperp
        from perpkit import FLAT, Script, feed, make_frame

        class Slow(Script):
            def next(self):
                super().next()
                if len(self) > 100:
                    time.sleep(0.01)

        cerebro = bt.Cerebro(stdstats=False)
        cerebro.adddata(feed(make_frame([100.0] * 100000)))
        cerebro.addstrategy(Slow, plan={{0: [("buy", dict(size=1.0))]}})
        btperp.install(cerebro, cash=1000, tiers=FLAT)
        cerebro.addanalyzer(btperp.bt.PerpHistory, path={str(tmp_path)!r}, batch_rows=20)
        cerebro.run()
    """)
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not any(tmp_path.glob(".history.parquet.*")):
            time.sleep(0.1)
        time.sleep(1.0)                                 # a few batches in
        assert proc.poll() is None
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (tmp_path / "history.parquet").exists()
    (partial,) = tmp_path.glob(".history.parquet.*")
    assert partial.stat().st_size > 0
    with pytest.raises(pa.ArrowInvalid):
        pq.read_table(partial)


def test_history_needs_the_perp_broker(tmp_path):
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(feed(make_frame([100.0] * 5)))
    cerebro.addstrategy(Script)
    cerebro.addanalyzer(btperp.bt.PerpHistory, path=str(tmp_path))
    with pytest.raises(InputError, match="PerpBroker"):
        cerebro.run()


def test_cli_history_show(eth_run, capsys):
    path, _, broker = eth_run
    assert cli(["history", "show", str(path)]) == 0
    out = capsys.readouterr().out
    assert "liquidations" in out and "worst margin ratio" in out
    assert cli(["history", "show", str(path), "--json"]) == 0
    (run,) = json.loads(capsys.readouterr().out)
    assert run["liquidations"] == len(broker.liquidations)
    assert run["funding_paid"] == broker.funding_paid and run["fees_paid"] == broker.fees_paid
    assert run["worst_margin_ratio"] < 1
    assert cli(["history", "show", str(path / "nothing-here")]) == 2
    err = capsys.readouterr().err
    assert "argument dir: " in err and "nothing-here: no such file or folder" in err
    (path / "empty-folder").mkdir()
    assert cli(["history", "show", str(path / "empty-folder")]) == 2
    assert "no history.parquet" in capsys.readouterr().err


def test_a_write_that_fails_at_the_end_leaves_nothing(tmp_path, monkeypatch):
    """The final rename fails (as in a directory made read-only during the run)."""
    import btperp.io.atomic as atomic
    real = atomic.os.replace

    def refuse(src, dst):
        if str(dst).endswith("history.parquet"):
            raise PermissionError(13, "Permission denied", str(dst))
        return real(src, dst)

    monkeypatch.setattr(atomic.os, "replace", refuse)
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(feed(make_frame([100.0] * 50)))
    cerebro.addstrategy(Script, plan={0: [("buy", dict(size=1.0))]})
    btperp.install(cerebro, cash=1000, tiers=FLAT, history=tmp_path)
    with pytest.raises(PermissionError):
        cerebro.run()
    assert list(tmp_path.iterdir()) == []
