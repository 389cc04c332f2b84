"""btperp sweep (issue #18): specs, the results dataset, Dask and local engines, faults, report."""

import contextlib
import json
import logging
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest

from btperp.backtest import SUMMARY_COLUMNS, run
from btperp.cli.main import main as cli
from btperp.report import write_sweep_report
from btperp.sweep import load_spec, read_results, run_id, spec_from_mapping
from btperp.sweep.runner import sweep

pytestmark = pytest.mark.filterwarnings("ignore::btperp.errors.EarliestTableAssumed")

#: ETHUSDT around the 19 May 2021 crash, two three-day walk-forward windows
CRASH = {"start": "2021-05-17", "end": "2021-05-22", "length": "3d"}
FIGURES = [c for c in SUMMARY_COLUMNS if c not in ("strategy", "symbol", "leverage", "margin_mode",
                                                   "history_dir")]

FRAGILE = '''
import backtrader as bt


class Fragile(bt.Strategy):
    """Buys at the first bar; with boom=True raises at the fifth."""

    params = dict(boom=False)

    def next(self):
        if self.p.boom and len(self) == 5:
            raise RuntimeError("boom at bar 5")
        if len(self) == 1:
            self.buy()
'''


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """conftest's guard, but the loopback stays open: a test's Dask LocalCluster listens there."""
    connect = socket.socket.connect

    def guarded(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in ("127.0.0.1", "::1"):
            raise RuntimeError(f"a test tried to reach the network ({address!r})")
        return connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)


@pytest.fixture(scope="module")
def dask2():
    """A LocalCluster of two single-threaded worker processes, and its client."""
    from distributed import Client, LocalCluster
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      host="127.0.0.1", silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
        yield cluster, client


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if a is None or b is None or (isinstance(a, float) and math.isnan(a)) or (isinstance(b, float) and math.isnan(b)):
        return (a is None or a != a) and (b is None or b != b)
    return a == b


# --- the spec ----------------------------------------------------------------------------------

def test_spec_lists_ranges_and_rolling_windows(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('strategy = "sma_cross"\nleverages = { from = 1, to = 3 }\nmargin_modes = ["isolated", "cross"]\n'
                    'symbols = ["BTCUSDT", "ETHUSDT"]\n[params]\npfast = [5, 10]\npslow = { from = 20, to = 40, step = 10 }\n'
                    '[windows]\nstart = "2024-01-01"\nend = "2024-12-31"\nlength = "3mo"\nstep = "1mo"\n')
    spec = load_spec(path)
    assert spec.leverages == [1.0, 2.0, 3.0] and spec.params == {"pfast": [5, 10], "pslow": [20, 30, 40]}
    assert spec.windows[0] == ("2024-01-01", "2024-03-31") and spec.windows[-1] == ("2024-10-01", "2024-12-31")
    assert len(spec.windows) == 10
    configs = spec.configs()
    assert len(configs) == 2 * 3 * 2 * 10 * 2 * 3
    ids = [run_id(c) for c in configs]
    assert len(set(ids)) == len(ids) and all(len(i) == 12 for i in ids)
    # flags override the file; the same run has the same id whichever way it was named
    flags = load_spec(path, {"params": {"pfast": ["5"], "pslow": "20:20".split(":")[:1]},
                             "leverages": [2], "symbols": ["BTCUSDT"], "margin_modes": ["cross"],
                             "windows": {"length": "3mo", "step": "3mo"}})
    assert len(flags.configs()) == 4
    assert run_id(flags.configs()[0]) in ids


def test_the_liquidation_mode_is_a_setting_of_every_run_and_of_its_id(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('strategy = "sma_cross"\nleverages = [5, 20]\nliquidation = "full"\n')
    full = load_spec(path).configs()
    assert [c.liquidation for c in full] == ["full", "full"]
    partial = load_spec(path, {"liquidation": "partial"}).configs()          # --liquidation partial
    assert [c.liquidation for c in partial] == ["partial", "partial"]
    assert load_spec(tmp_path / "s.toml", {}).liquidation == "full"
    # the same run in the other mode is another run
    assert {run_id(c) for c in full}.isdisjoint(run_id(c) for c in partial)
    from btperp.sweep.task import SETTINGS
    assert SETTINGS.index("liquidation") == SETTINGS.index("intrabar") + 1


@pytest.mark.parametrize("text,message", [
    ('strategy = "sma_cross"\nleverage = [1]\n', "leverage: unknown key"),
    ('strategy = "sma_cross"\n[params]\nslow = [1]\n', "params.slow: SmaCross has no parameter 'slow'"),
    ('strategy = "sma_cross"\n[params]\npfast = { from = 9, to = 1 }\n', "params.pfast: range from 9 to 1"),
    ('strategy = "sma_cross"\nleverages = [0]\n', "leverages: 0 must be positive"),
    ('strategy = "sma_cross"\n[windows]\nstart = "2024-01-01"\nend = "2024-01-10"\nlength = "1mo"\n',
     "windows.length: '1mo' is longer than"),
    ('strategy = "sma_cross"\nsymbols = ["DOGEUSDT"]\n', "symbols: no data for 'DOGEUSDT'"),
    ('strategy = "nope"\n', "strategy: unknown strategy 'nope'"),
    ('strategy = "sma_cross"\nliquidation = "half"\n', "liquidation: 'half': use partial or full"),
    ('strategy = "sma_cross"\nleverages = [1\n', "not valid TOML"),
])
def test_bad_spec_is_an_error_naming_the_file_and_field(tmp_path, capsys, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    assert cli(["sweep", str(path), "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and message in err
    assert not (tmp_path / "out").exists()                 # nothing written


# --- Dask: equal to serial, a worker killed, a failing run ---------------------------------------

def test_dask_sweep_of_24_runs_equals_the_runs_done_serially(tmp_path, dask2):
    _, client = dask2
    spec = spec_from_mapping({"strategy": "sma_cross", "params": {"pfast": [5, 10], "pslow": [20]},
                              "symbols": ["ETHUSDT"], "leverages": [1, 5, 20],
                              "margin_modes": ["isolated", "cross"], "windows": CRASH})
    outcome = sweep(spec, str(tmp_path / "sw"), engine="dask", client=client, progress=False)
    assert (outcome.runs, outcome.done, outcome.failed, outcome.skipped) == (24, 24, 0, 0)
    write_sweep_report(outcome.table, outcome.out, spec)
    table = pd.read_parquet(tmp_path / "sw" / "results")            # a hive-partitioned dataset
    assert len(table) == 24 and table["run_id"].astype(str).nunique() == 24
    assert set(table["status"]) == {"ok"} and table["liquidations"].sum() > 0
    assert len({w.split(":")[1] for w in table["worker"]}) == 2    # both workers ran some
    rows = read_results(tmp_path / "sw").set_index("run_id")
    for config in spec.configs():
        rid = run_id(config)
        serial = run(config, tmp_path / "serial", run_id=rid).summary
        row = rows.loc[rid]
        assert row["leverage"] == config.leverage and row["margin_mode"] == config.margin_mode
        assert row["param_pfast"] == config.params["pfast"] and row["start"] == config.start
        for name in FIGURES:
            assert _same(row[name].item() if hasattr(row[name], "item") else row[name], serial[name]), (rid, name)
    # the report and the table
    for name in ("heatmap_liquidations.png", "heatmap_return.png", "survival.png"):
        assert (tmp_path / "sw" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (tmp_path / "sw" / "sweep.html").read_text()
    assert page.count("data:image/png;base64,") == 3 and "pfast=10 cross" in page


def test_a_worker_killed_mid_sweep_still_completes_each_run_once(tmp_path, dask2):
    _, client = dask2
    spec = spec_from_mapping({"strategy": "sma_cross", "params": {"pfast": [4, 6, 8, 10]},
                              "symbols": ["ETHUSDT"], "leverages": [2, 10],
                              "windows": {"start": "2021-05-15", "end": "2021-05-21"}})
    pids = list(client.run(os.getpid).values())
    killed = []

    def kill_one(rid, row):
        if not killed:
            os.kill(pids[0], signal.SIGKILL)
            killed.append(pids[0])

    outcome = sweep(spec, str(tmp_path / "sw"), engine="dask", client=client, progress=False,
                    on_result=kill_one)
    assert killed
    with contextlib.suppress(psutil.NoSuchProcess):                 # gone, or a zombie of its nanny
        assert psutil.Process(killed[0]).status() == psutil.STATUS_ZOMBIE
    assert (outcome.done, outcome.failed) == (8, 0)
    table = read_results(tmp_path / "sw")
    assert sorted(table["run_id"]) == sorted(run_id(c) for c in spec.configs())   # each run once


def test_a_failing_run_is_recorded_and_the_sweep_goes_on(tmp_path, dask2, capsys):
    _, client = dask2
    strategy = tmp_path / "fragile.py"
    strategy.write_text(FRAGILE)
    spec = spec_from_mapping({"strategy": f"{strategy}:Fragile", "params": {"boom": [False, True]},
                              "leverages": [1, 3], "windows": {"start": "2024-01-01", "end": "2024-01-02"}})
    out = tmp_path / "sw"
    outcome = sweep(spec, str(out), engine="dask", client=client, progress=False)
    assert (outcome.done, outcome.failed) == (2, 2)
    write_sweep_report(outcome.table, outcome.out, spec)
    table = read_results(out)
    failed = table[table["status"] == "error"]
    assert failed["param_boom"].tolist() == [True, True]
    assert all("RuntimeError: boom at bar 5" in e for e in failed["error"])
    assert all("raise RuntimeError" in t for t in failed["traceback"])
    assert failed["total_return"].isna().all()
    ok = table[table["status"] == "ok"]
    assert ok["bars"].tolist() == [48, 48] and ok["trades"].tolist() == [0, 0]
    assert "boom at bar 5" in (out / "sweep.html").read_text()
    # show: sorted by a chosen figure, JSON or text
    assert cli(["sweep", "show", str(out), "--json", "--sort", "leverage", "--ascending"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["leverage"] for r in rows] == [1.0, 1.0, 3.0, 3.0]
    assert cli(["sweep", "show", str(out)]) == 0
    text = capsys.readouterr().out
    assert "failed" in text and "RuntimeError: boom at bar 5" in text
    assert cli(["sweep", "show", str(out), "--sort", "nope"]) == 2
    assert "no column 'nope'" in capsys.readouterr().err
    # a rerun runs the failed ones again and skips the rest
    again = sweep(spec, str(out), engine="local", workers=1, progress=False)
    assert (again.done, again.failed, again.skipped) == (0, 2, 2)


# --- kill -9 of the client: no orphans; a rerun completes the missing runs only ------------------

def _descendants(pid: int) -> list:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _kill_client_mid_sweep(tmp_path, engine: str) -> tuple[Path, Path, dict]:
    spec = tmp_path / "spec.toml"
    spec.write_text('strategy = "sma_cross"\nsymbols = ["BTCUSDT"]\nleverages = [1, 2, 3]\n'
                    '[params]\npfast = [5, 10]\n[windows]\nstart = "2024-01-01"\nend = "2024-01-05"\n')
    out = tmp_path / "sw"
    client = subprocess.Popen([sys.executable, "-m", "btperp.cli.main", "sweep", str(spec), "--out", str(out),
                               "--engine", engine, "--workers", "2", "--no-progress"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not any(out.glob("results/run_id=*/result.parquet")) and time.monotonic() < deadline:
        assert client.poll() is None, "the sweep ended before it was killed"
        time.sleep(0.05)
    children = _descendants(client.pid)
    assert len(children) >= 2                         # its workers (and their helpers)
    client.send_signal(signal.SIGKILL)
    client.wait()
    gone, alive = psutil.wait_procs(children, timeout=20)
    alive = [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]
    for p in alive:
        p.kill()
    assert not alive, [" ".join(p.cmdline()) for p in alive]
    done = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("results/run_id=*/result.parquet")}
    return spec, out, done


def test_kill_9_of_a_local_sweep_leaves_no_process_and_a_rerun_runs_only_the_missing(tmp_path, capsys):
    spec, out, done = _kill_client_mid_sweep(tmp_path, "local")
    assert 1 <= len(done) < 6
    assert cli(["sweep", str(spec), "--out", str(out), "--engine", "local", "--workers", "2",
                "--no-progress", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert (answer["runs"], answer["skipped"], answer["done"]) == (6, len(done), 6 - len(done))
    after = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("results/run_id=*/result.parquet")}
    assert len(after) == 6 and all(after[k] == v for k, v in done.items())   # not run again


def test_kill_9_of_a_dask_sweep_leaves_no_process(tmp_path):
    _, out, done = _kill_client_mid_sweep(tmp_path, "dask")
    assert len(done) >= 1
