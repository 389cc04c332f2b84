"""``make bench``: every benchmark prints ``name: value`` and all land in bench/results.json.

Speed targets live here, never in the tests. Each figure is measured on this machine, now.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

RESULTS = HERE / "results.json"


def timeit(fn, *, repeat: int = 5, number: int = 1) -> float:
    """Best wall time of ``repeat`` runs of ``number`` calls, seconds per call."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - start) / number)
    return best


def bench_margin() -> dict:
    from btperp.margin import evaluate, make_position
    from btperp.io.tierfile import TierHistoryFile

    table = TierHistoryFile.bundled("binance-usdm").history("BTCUSDT").versions[-1][1]
    pos = make_position("BTC/USDT:USDT", "long", 3.0, 60_000, leverage=20, tiers=table)
    seconds = timeit(lambda: evaluate("binance-usdm", [pos]), number=2000)
    return {"liquidation_price_isolated_us": round(seconds * 1e6, 2)}


def bench_load() -> dict:
    import btperp

    btperp.load("BTCUSDT")                       # warm the OS file cache and imports
    seconds = timeit(lambda: btperp.load("BTCUSDT"), repeat=5)
    return {"load_btc_1h_s": round(seconds, 4)}


def frame_500k():
    """500,000 one-minute bars: the bundled BTCUSDT 1h rows, repeated on a 1-minute clock (the
    content does not matter for preload speed, the shape does)."""
    import numpy as np
    import pandas as pd
    import btperp

    base = btperp.load("BTCUSDT")
    reps = -(-500_000 // len(base))
    frame = pd.concat([base] * reps).iloc[:500_000].copy()
    frame.index = pd.date_range("2020-01-01", periods=len(frame), freq="min", tz="UTC", name="time")
    frame["funding_time"] = frame["funding_time"].where(frame["funding_time"].isna(), frame.index.to_series())
    frame.attrs = {**base.attrs, "timeframe": "1m"}
    assert len(frame) == 500_000 and np.isfinite(frame["mark_low"]).all()
    return frame


def preload_seconds(feed) -> float:
    import backtrader as bt

    bt.Cerebro().adddata(feed)                    # gives the feed its environment, as cerebro.run would
    start = time.perf_counter()
    feed._start()
    feed.preload()
    return time.perf_counter() - start


def bench_preload() -> dict:
    import backtrader as bt
    from btperp.bt.feed import EXTRA_LINES, feed_from_frame

    frame = frame_500k()
    numeric = [c for c in EXTRA_LINES if c != "funding_time"]

    class PandasPerp(bt.feeds.PandasData):           # the same columns through backtrader's own feed
        lines = tuple(numeric)
        params = tuple((c, -1) for c in numeric)

    plain = frame.drop(columns=["funding_time"])
    plain.index = plain.index.tz_convert(None)
    ours = min(preload_seconds(feed_from_frame(frame)) for _ in range(3))
    theirs = preload_seconds(PandasPerp(dataname=plain, timeframe=bt.TimeFrame.Minutes, compression=1))
    print(f"  preload 500k bars: PerpData {ours:.3f} s, PandasData {theirs:.1f} s", flush=True)
    return {"preload_perpdata_500k_s": round(ours, 3), "preload_pandasdata_500k_s": round(theirs, 2),
            "preload_speedup_vs_pandasdata": round(theirs / ours, 1)}


def walk_1m(n: int = 500_000, seed: int = 7):
    """``n`` one-minute bars of a random walk around 100 with a mark price beside it and a funding
    event every 8 hours, as on Binance (the SMA strategy trades it often)."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.0008, n)))
    open_ = np.r_[100.0, close[:-1]]
    wick = np.abs(rng.normal(0, 0.0004, (2, n)))
    high, low = np.maximum(open_, close) * (1 + wick[0]), np.minimum(open_, close) * (1 - wick[1])
    basis = 1 + rng.normal(0, 0.0002, n)
    index = pd.date_range("2024-01-01", periods=n, freq="min", tz="UTC", name="time")
    events = (index.hour % 8 == 0) & (index.minute == 0)
    rate = np.where(events, rng.normal(0.0001, 0.0001, n), np.nan)
    frame = pd.DataFrame({
        "open": open_, "high": high, "low": low, "close": close, "volume": np.ones(n),
        "mark_open": open_ * basis, "mark_high": high * basis, "mark_low": low * basis,
        "mark_close": close * basis, "funding_rate": rate,
        "funding_time": pd.Series(index.where(events), index=index).to_numpy(),
        "funding_events": events.astype(np.int64), "funding_per_unit": rate * open_ * basis,
        "funding_open_per_unit": rate * open_ * basis,
    }, index=index)
    frame.attrs = {"symbol": "SIM/USDT:USDT", "exchange": "binance-usdm", "timeframe": "1m"}
    return frame


def btc_tiers():
    """Binance's BTCUSDT tier table as last observed (12 tiers): the margin math at full size."""
    from btperp.io.tierfile import TierHistoryFile
    return TierHistoryFile.bundled("binance-usdm").history("BTCUSDT").versions[-1][1]


def loop_seconds(frame, perp: bool, history: str | None = None) -> tuple[float, float]:
    """Seconds between the strategy's start and stop (the bar loop), and the final value."""
    import backtrader as bt
    import btperp
    from btperp.bt.feed import feed_from_frame
    sys.path.insert(0, str(HERE.parent))
    from strategies.sma_cross import SmaCross

    class Clock(bt.Analyzer):
        def start(self):
            self.t0 = time.perf_counter()

        def stop(self):
            self.seconds = time.perf_counter() - self.t0

    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(feed_from_frame(frame))
    cerebro.addstrategy(SmaCross)
    cerebro.addanalyzer(Clock)
    if perp:
        btperp.install(cerebro, cash=10_000, leverage=10, tiers=btc_tiers(), history=history)
    else:
        cerebro.broker.setcash(10_000)
    strat = cerebro.run()[0]
    return strat.analyzers.clock.seconds, cerebro.broker.getvalue()


def bench_broker_loop() -> dict:
    """The SMA crossover on 500k 1-minute bars: PerpBroker (marks, funding, liquidation checks)
    against backtrader's BackBroker on the same feed; best of three alternating runs each."""
    frame = walk_1m()
    back, perp = [], []
    for _ in range(3):
        back.append(loop_seconds(frame, perp=False)[0])
        perp.append(loop_seconds(frame, perp=True)[0])
    b, p = min(back), min(perp)
    print(f"  SMA crossover, 500k 1m bars: BackBroker loop {b:.1f} s, PerpBroker loop {p:.1f} s "
          f"({500_000 / p:,.0f} bars/s)", flush=True)
    return {"broker_loop_backbroker_s": round(b, 2), "broker_loop_perpbroker_s": round(p, 2),
            "broker_loop_overhead": round(p / b, 3)}


def run_seconds(frame, history: str | None) -> tuple[float, object]:
    """CPU time of a whole PerpBroker run (loop, final flush and files included): the process's
    own time, so that other work on the machine does not count."""
    import backtrader as bt
    import btperp
    from btperp.bt.feed import feed_from_frame
    sys.path.insert(0, str(HERE.parent))
    from strategies.sma_cross import SmaCross

    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(feed_from_frame(frame))
    cerebro.addstrategy(SmaCross)
    btperp.install(cerebro, cash=10_000, leverage=10, tiers=btc_tiers(), history=history)
    start = time.process_time()
    strat = cerebro.run()[0]
    return time.process_time() - start, strat


def _child(history: str) -> None:
    """``run.py --child DIR|-``: one 500k-bar run in a fresh process; prints its figures as JSON."""
    seconds, strat = run_seconds(walk_1m(), None if history == "-" else history)
    answer = strat.analyzers.perphistory.get_analysis() if history != "-" else {}
    print(json.dumps({"seconds": seconds, **answer}))


def bench_history() -> dict:
    """The same 500k-bar SMA run with and without ``history=DIR``: each run in its own process
    (no run inherits another's memory) pinned to one core, alternating, best of seven each (the
    machine's own noise is about ±2 % per run; the best run of each is the least disturbed)."""
    import shutil
    import subprocess
    import tempfile

    pin = ["taskset", "-c", str(max(os.sched_getaffinity(0)))] if shutil.which("taskset") else []

    def child(history: str) -> dict:
        out = subprocess.run(pin + [sys.executable, __file__, "--child", history], check=True,
                             capture_output=True, text=True).stdout
        return json.loads(out.strip().splitlines()[-1])

    without, with_history = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(7):
            without.append(child("-")["seconds"])
            answer = child(f"{tmp}/run{i}")
            with_history.append(answer["seconds"])
        size = os.path.getsize(answer["history"])
        rows = answer["rows"]
    a, b = min(without), min(with_history)
    pairs = sorted(w / o for w, o in zip(with_history, without))
    print(f"  500k 1m bars, {rows:,} history rows: run {a:.1f} s, with history {b:.1f} s, "
          f"{size / 1e6:.1f} MB on disk; run-by-run ratios {pairs[0]:.3f} to {pairs[-1]:.3f}, "
          f"median {pairs[len(pairs) // 2]:.3f}", flush=True)
    return {"history_run_without_s": round(a, 2), "history_run_with_s": round(b, 2),
            "history_overhead": round(b / a, 3), "history_rows": rows,
            "history_bytes_per_row": round(size / rows, 1)}


def bench_compare() -> dict:
    """``btperp compare`` of the SMA crossover on all bundled BTCUSDT 1h bars at 1, 3, 10 and 50x:
    one process against two (histories written, as the command does); best of two each."""
    import tempfile

    from btperp.backtest import RunConfig, compare

    config = RunConfig("sma_cross", symbol="BTCUSDT")
    seconds = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(2):
            for jobs in (1, 2):
                start = time.perf_counter()
                result = compare(config, [1, 3, 10, 50], f"{tmp}/{jobs}-{i}", jobs=jobs, progress=False)
                seconds[jobs].append(time.perf_counter() - start)
    one, two = min(seconds[1]), min(seconds[2])
    bars = result.runs[0].summary["bars"]
    print(f"  compare, 4 leverages x {bars:,} bars: 1 process {one:.1f} s, 2 processes {two:.1f} s",
          flush=True)
    return {"compare_1proc_s": round(one, 2), "compare_2proc_s": round(two, 2),
            "compare_speedup_2proc": round(one / two, 2)}


def bench_audit() -> dict:
    """The audit's vectorized replay: one position over a year of 1-minute marks (held the whole
    year: the longest scan), and every entry hour of BTCUSDT at 8 leverages held until liquidated."""
    import numpy as np
    import pandas as pd

    import btperp
    from btperp.audit import audit_position, audit_positions
    from btperp.io.tierfile import TierHistoryFile

    year = walk_1m(525_600)
    tiers = TierHistoryFile.bundled("binance-usdm").history("BTCUSDT")
    one = lambda: audit_position("SIM/USDT:USDT", "short", "2024-01-01", frame=year, tiers=tiers,  # noqa: E731
                                 margin=1000, leverage=2)
    a = one()
    seconds = timeit(one, repeat=7)
    print(f"  one position, {len(year):,} one-minute bars: held {a.bars_held:,} bars "
          f"(liquidated: {a.liquidated}), {seconds * 1e3:.1f} ms", flush=True)

    frame = btperp.load("BTCUSDT")
    leverages = [1, 2, 3, 5, 10, 20, 50, 100]
    entries = pd.DataFrame({"entry_time": np.repeat(frame.index, len(leverages)), "side": 1,
                            "leverage": np.tile(np.array(leverages, float), len(frame)),
                            "margin": 1000.0})
    table = audit_positions(entries, symbol="BTCUSDT", frame=frame)        # warm
    many = timeit(lambda: audit_positions(entries, symbol="BTCUSDT", frame=frame), repeat=3)
    share = table.groupby("leverage")["liquidated"].mean()
    print(f"  {len(entries):,} positions ({len(frame):,} entry hours x {len(leverages)} leverages): "
          f"{many:.2f} s; liquidated: "
          + ", ".join(f"{lev:g}x {share[lev] * 100:.0f} %" for lev in leverages), flush=True)
    return {"audit_one_position_year_1m_ms": round(seconds * 1e3, 2),
            "audit_all_entries_8lev_s": round(many, 3)}




def bench_detail() -> dict:
    """A 1h strategy (the Donchian breakout, stop orders, at 50x) over a year of synthetic 1-minute
    bars: the run with 1m detail (mark and last: its stops fill and its positions are liquidated on
    the minutes) against the same run without; best of five alternating runs each, CPU time of the
    whole run (detail attached inside it)."""
    import backtrader as bt
    import btperp
    from btperp.bt.feed import attach_detail, feed_from_frame
    sys.path.insert(0, str(HERE.parent))
    from strategies.breakout import Breakout
    from btperp.bt import MarginSizer

    minutes = walk_1m(525_600, seed=11)
    hours = btperp.resample(minutes, "1h")
    detail = minutes[["open", "high", "low", "close", "mark_open", "mark_high", "mark_low", "mark_close"]]
    detail.attrs = {"timeframe": "1m", "mark": True, "last": True}

    def once(with_detail: bool) -> tuple[float, int]:
        start = time.process_time()
        cerebro = bt.Cerebro(stdstats=False)
        data = feed_from_frame(hours)
        if with_detail:
            attach_detail(data, detail)
        cerebro.adddata(data)
        cerebro.addstrategy(Breakout, entry=24, exit=12)
        cerebro.addsizer(MarginSizer, percents=50)
        broker = btperp.install(cerebro, cash=10_000, leverage=50, tiers=btc_tiers())
        cerebro.run()
        return time.process_time() - start, (len(broker.liquidations), len(broker.fills))

    plain, fine = [], []
    for _ in range(5):
        plain.append(once(False))
        fine.append(once(True))
    p, f = min(t for t, _ in plain), min(t for t, _ in fine)
    print(f"  breakout 1h at 50x, a year of 1m bars: {p:.2f} s without detail, {f:.2f} s with "
          f"(liquidations, fills: {plain[0][1]} and {fine[0][1]})", flush=True)
    return {"detail_run_plain_s": round(p, 3), "detail_run_detail_s": round(f, 3),
            "detail_overhead": round(f / p, 3)}


def bench_sweep() -> dict:
    """``btperp sweep`` on a Dask LocalCluster: 200 one-month 1h runs (the SMA crossover, 10 fast
    periods x 5 leverages x January to April 2024 on BTCUSDT) on 1 worker, then on 2 (the cluster
    started before the clock starts). Per-task overhead: the 1-worker wall time less the time the
    runs themselves took (measured inside each task), per run: scheduling, moving the task and its
    answer, writing the result row, the client's bookkeeping."""
    import logging
    import tempfile

    from distributed import Client, LocalCluster

    from btperp.sweep import spec_from_mapping
    from btperp.sweep.runner import sweep

    spec = spec_from_mapping({"strategy": "sma_cross", "params": {"pfast": {"from": 5, "to": 14}},
                              "symbols": ["BTCUSDT"], "leverages": [1, 2, 3, 5, 10],
                              "windows": {"start": "2024-01-01", "end": "2024-04-30", "length": "1mo"}})
    runs = len(spec.configs())
    assert runs == 200
    wall: dict[int, list] = {1: [], 2: []}
    inside: dict[int, list] = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as tmp:
        for rep, order in enumerate([(1, 2), (2, 1)]):        # alternating: the machine's load drifts
            for workers in order:
                with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                  dashboard_address=None, silence_logs=logging.ERROR) as cluster, \
                        Client(cluster) as client:
                    client.run(lambda: __import__("btperp.sweep.task"))          # workers warm
                    start = time.perf_counter()
                    outcome = sweep(spec, f"{tmp}/{workers}-{rep}", engine="dask", client=client,
                                    progress=False)
                    wall[workers].append(time.perf_counter() - start)
                assert outcome.done == runs, outcome
                inside[workers].append(float(outcome.table["seconds"].sum()))
    best = {w: min(range(2), key=lambda i: wall[w][i]) for w in (1, 2)}
    one, two = wall[1][best[1]], wall[2][best[2]]
    mean_run = inside[1][best[1]] / runs
    mean_run_2 = inside[2][best[2]] / runs
    overhead = (one - inside[1][best[1]]) / runs
    print(f"  sweep, {runs} one-month 1h runs on a LocalCluster (best of 2, alternating): 1 worker "
          f"{one:.1f} s, 2 workers {two:.1f} s (all: {wall}); mean run {mean_run * 1e3:.0f} ms on 1 worker, "
          f"{mean_run_2 * 1e3:.0f} ms each on 2; per-task overhead {overhead * 1e3:.1f} ms; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
    return {"sweep_1worker_s": round(one, 2), "sweep_2workers_s": round(two, 2),
            "sweep_speedup_2workers": round(one / two, 2),
            "sweep_mean_run_ms": round(mean_run * 1e3, 1),
            "sweep_mean_run_2workers_ms": round(mean_run_2 * 1e3, 1),
            # share of the 2-worker wall time the workers spent in runs: near 1, the engine kept both
            # busy, and a speedup short of 2 is the machine (the runs themselves got slower)
            "sweep_worker_busy_2workers": round(inside[2][best[2]] / (2 * two), 3),
            "sweep_overhead_ms_per_task": round(overhead * 1e3, 1)}


BENCHMARKS = [bench_margin, bench_load, bench_preload, bench_broker_loop, bench_history, bench_compare,
              bench_audit, bench_detail, bench_sweep]


def main() -> int:
    if sys.argv[1:2] == ["--child"]:
        _child(sys.argv[2])
        return 0
    selected = set(sys.argv[1:])
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    for bench in BENCHMARKS:
        if selected and bench.__name__ not in selected:
            continue
        figures = bench()
        for name, value in figures.items():
            print(f"{name}: {value}", flush=True)
        results.update(figures)
    tmp = RESULTS.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, RESULTS)
    print(f"wrote {RESULTS.relative_to(HERE.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
