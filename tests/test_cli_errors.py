"""Issue #17: nothing a user types or feeds crashes btperp.

Every case the issue lists is here as the exact command, with the message and the exit status it
gets: 2 for bad input (the message names the argument or file and what was expected), 1 for the
environment (a full disk: the file and what was left on disk), never a traceback.
"""

import errno
import json
import os
import shlex
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

import btperp
from btperp.cli.main import main
from btperp.errors import DataWarning
from btperp.io.atomic import atomic_path, remove_stale
from btperp.io.market import series_path, write_series

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT / "datasets"
POSITION = ("audit position --symbol ETHUSDT --side long --entry-time '2021-05-18 00:00' "
            "--entry-price 3283.23 --end 2021-05-21")


def small_run_history(folder: Path) -> None:
    """A real run's history, written by btperp (a short window of the bundled data)."""
    assert main(["run", "--strategy", "sma_cross", "--start", "2021-05-01", "--end", "2021-05-03",
                 "--out", str(folder)]) == 0


@pytest.fixture(scope="module")
def history_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("history") / "run"
    small_run_history(folder)
    return folder


@pytest.fixture
def workdir(tmp_path, monkeypatch, history_run):
    """A current directory with everything the commands below point at."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "DIR").mkdir()
    (tmp_path / "afile").write_text("not a folder\n")
    (tmp_path / "list.json").write_text("[]")
    (tmp_path / "ccxt.json").write_text(json.dumps([{"tier": 1, "minNotional": 0, "maxNotional": 50000,
                                                      "maintenanceMarginRate": 0.004, "maxLeverage": 125}]))
    (tmp_path / "notparquet").mkdir()
    (tmp_path / "notparquet" / "history.parquet").write_text("time,run_id\n")
    whole = (history_run / "history.parquet").read_bytes()
    (tmp_path / "truncated").mkdir()
    (tmp_path / "truncated" / "history.parquet").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "truncated" / "events.parquet").write_bytes(whole[: len(whole) // 3])
    (tmp_path / "norunid").mkdir()
    for name in ("history", "events"):
        table = pq.read_table(history_run / f"{name}.parquet")
        pq.write_table(table.drop(["run_id"]), tmp_path / "norunid" / f"{name}.parquet")
    strategies = tmp_path / "strategies"
    strategies.mkdir()
    (strategies / "x.py").mkdir()                                     # a folder named like a file
    (strategies / "bad.py").write_text("import backtrader as bt\nclass Bad(bt.Strategy)\n    pass\n")
    (strategies / "imp.py").write_text("import backtrader as bt\nimport no_such_package_17\n\n"
                                       "class Imp(bt.Strategy):\n    pass\n")
    (strategies / "latin.py").write_bytes("# caf\xe9\nimport backtrader as bt\n".encode("latin-1"))
    return tmp_path


def cli(capsys, command: str):
    code = main(shlex.split(command))
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "Traceback" not in out
    return code, out, err


# command, exit status, what stderr says (every fragment must be there)
CASES = [
    # --- a folder where a file is expected
    ("calc --account DIR", 2, ["argument --account: DIR is a folder; expected a file"]),
    ("calc --tiers DIR --symbol BTCUSDT --side long --size 1 --entry 100 --leverage 2", 2,
     ["argument --tiers: DIR is a folder; expected a file"]),
    ("data import-tiers DIR", 2, ["argument file: DIR is a folder; expected a file"]),
    ("run --strategy sma_cross --plot DIR", 2, ["argument --plot: DIR is a folder; expected a file name"]),
    (f"{POSITION} --margin 1000 --leverage 2 --plot DIR", 2,
     ["argument --plot: DIR is a folder; expected a file name"]),
    # --- unparseable or impossible dates
    ("run --strategy sma_cross --start notadate", 2, ["argument --start: 'notadate' is not a date",
                                                      "expected a UTC date or time such as 2024-01-31"]),
    ("run --strategy sma_cross --start 2024-02-30", 2,
     ["argument --start: '2024-02-30' is not a date (day is out of range for month)"]),
    ("run --strategy sma_cross --start 2024-13-01", 2,
     ["argument --start: '2024-13-01' is not a date (month must be in 1..12)"]),
    ("audit position --symbol ETHUSDT --side long --entry-time notadate --margin 1000 --leverage 2", 2,
     ["argument --entry-time: 'notadate' is not a date"]),
    ("audit position --symbol ETHUSDT --side long --entry-time 2021-05-18 --margin 1000 --leverage 2 "
     "--end notadate", 2, ["argument --end: 'notadate' is not a date"]),
    ("audit position --symbol ETHUSDT --side long --entry-time 2021-05-18 --margin 1000 --leverage 2 "
     "--reported-time notadate", 2, ["argument --reported-time: 'notadate' is not a date"]),
    ("calc --symbol BTCUSDT --side long --size 1 --entry 100 --leverage 2 --at 2024-02-30", 2,
     ["argument --at: '2024-02-30' is not a date"]),
    ("fetch --symbol BTCUSDT --since 2024-13-01", 2, ["argument --since: '2024-13-01' is not a date"]),
    # --- history that is not Parquet, truncated, or without run_id
    ("history show notparquet", 2, ["notparquet/history.parquet: not a readable Parquet history file"]),
    ("history show truncated", 2, ["truncated/history.parquet: not a readable Parquet history file"]),
    ("audit history notparquet", 2, ["notparquet: no events.parquet"]),
    ("audit history truncated --no-plots", 2, ["truncated/events.parquet: not a readable Parquet events file"]),
    ("history show norunid", 2, ["norunid: not a btperp history file: it lacks the column(s) run_id"]),
    ("audit history norunid --no-plots", 2, ["norunid: not a btperp events file: it lacks the column(s) run_id"]),
    # --- JSON of the wrong shape
    ("calc --account list.json", 2, ["list.json: a JSON list; expected an account object"]),
    ("data --datadir out import-tiers ccxt.json", 2,
     ["ccxt.json: a JSON list (a ccxt tier list for one symbol?); expected btperp's tier-history object",
      "btperp calc --tiers FILE"]),
    # --- a path under a file
    ("audit history DIR --plots afile/sub", 2, ["argument --plots: cannot write afile/sub: afile is a file, "
                                                 "not a folder"]),
    ("data --datadir afile/sub import-tiers ccxt.json", 2,
     ["argument --datadir: cannot write afile/sub: afile is a file, not a folder"]),
    # --- numbers that crashed deep inside
    ("audit position --symbol ETHUSDT --side long --entry-time 2021-05-18 --margin 1000 --leverage 0", 2,
     ["argument --leverage: must be a positive number, got '0'"]),
    ("run --strategy sma_cross --start 2021-05-01 --end 2021-05-01 --out o", 2,
     ["the data window has 24 bars, fewer than the 31 that SmaCross (pfast=10, pslow=30) needs to warm "
      "up its indicators"]),
    ("run --strategy sma_long_short --param fast=0 --start 2021-05-01 --end 2021-05-03 --out o", 2,
     ["parameter fast='0': must be 1 or more"]),
    # --- strategy files that cannot be loaded: named, never 'unknown strategy'
    ("run --strategy latin", 2, ["'latin' cannot be loaded", "strategies/latin.py: not UTF-8 text"]),
    ("run --strategy bad", 2, ["'bad' cannot be loaded", "strategies/bad.py, line 2: SyntaxError"]),
    ("run --strategy imp", 2, ["strategies/imp.py, line 2: importing it failed: ModuleNotFoundError: "
                               "No module named 'no_such_package_17'"]),
    ("run --strategy x", 2, ["'x' cannot be loaded", "strategies/x.py is a folder, not a Python file"]),
    # --- silently accepted before
    (f"{POSITION} --size 1 --margin 10 --leverage 50", 2,
     ["margin: 10.00 is below the initial margin 65.66 that a size of 1 at 3,283.23 needs at 50x"]),
    (f"{POSITION} --margin 1000 --leverage 2 --reported-time '2021-05-19 13:12' --reported-price -5", 2,
     ["argument --reported-price: must be a positive number, got '-5'"]),
    (f"{POSITION} --margin 1000 --leverage 2 --reported-price 1650", 2,
     ["reported_price: a reported price needs the reported time (--reported-time)"]),
    ("calc --symbol BTCUSDT --side long --size 0.02 --entry 50000 --margin 500 --taker-fee 5", 2,
     ["argument --taker-fee: '5' is 500 % a trade; give the rate as a fraction below 0.01"]),
    ("run --strategy sma_long_short --param fast=-5", 2, ["parameter fast='-5': must be 1 or more"]),
    ("compare --strategy sma_cross --jobs 0", 2, ["argument --jobs: must be 1 or more, got '0'"]),
    ("compare --strategy sma_cross --jobs -1", 2, ["argument --jobs: must be 1 or more, got '-1'"]),
    ("run --strategy sma_cross --start 2021-05-03 --end 2021-05-01", 2,
     ["the start 2021-05-03 is after the end 2021-05-01"]),
    ("run --strategy sma_cross --leverage 1e9", 2,
     ["leverage: 1e+09x: no tier of BTC/USDT:USDT on binance-usdm allows it (at most 125x"]),
    ("compare --strategy sma_cross --leverage 1,200", 2, ["200x: no tier of BTC/USDT:USDT on binance-usdm allows it"]),
]


@pytest.mark.parametrize("command, code, fragments", CASES, ids=[c[0] for c in CASES])
def test_every_listed_case_is_a_named_error(workdir, capsys, command, code, fragments):
    got, out, err = cli(capsys, command)
    assert got == code, err
    for fragment in fragments:
        assert fragment in err, err
    assert err.count("error:") == 1


def test_size_margin_and_leverage_together_is_margin_added_and_says_so(workdir, capsys):
    """The exchange allows margin above the initial margin in isolated mode: not an error, said."""
    code, out, err = cli(capsys, f"{POSITION} --size 1 --margin 1000 --leverage 50")
    assert code == 0, err
    assert ("note: size, margin and leverage all given: the margin 1,000.00 is above the initial margin "
            "65.66 of 1 at 50x, so the difference (934.34) is taken as margin added") in out
    assert "effective leverage 3.28x" in out


@pytest.mark.parametrize("flag", ["", " --json"])
def test_strategies_lists_the_files_it_cannot_load(workdir, capsys, flag):
    code, out, err = cli(capsys, "strategies" + flag)
    assert code == 0, err
    assert err.count("btperp: warning: 4 strategies cannot be loaded (bad, imp, latin, x)") == 1
    if flag:
        rows = {r["name"]: r for r in json.loads(out)}
        assert rows["sma_cross"]["error"] is None
        assert "bad.py, line 2: SyntaxError" in rows["bad"]["error"]
        assert "importing it failed: ModuleNotFoundError" in rows["imp"]["error"]
        assert "not UTF-8 text" in rows["latin"]["error"]
        assert "x.py is a folder" in rows["x"]["error"]
    else:
        lines = {line.split()[0]: line for line in out.splitlines()[2:]}
        assert "CANNOT BE LOADED" in lines["bad"] and "SyntaxError" in lines["bad"]
        assert "CANNOT BE LOADED" not in lines["breakout"]


# --- the environment: full disk and file-size limit -------------------------------------------------

def test_full_disk_in_a_run_is_exit_1_naming_the_file_and_what_was_left(workdir, capsys, monkeypatch):
    def no_space(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(pq.ParquetWriter, "write_table", no_space)
    code, out, err = cli(capsys, "run --strategy sma_cross --start 2021-05-01 --end 2021-05-03 --out o")
    assert code == 1
    assert ("btperp run: error: cannot write o/history.parquet: no space left on device; the incomplete "
            "temporary file was removed, o/history.parquet was not created") in err
    assert not any((workdir / "o").iterdir())                 # nothing half-written, no temp file


def test_full_disk_in_compare_is_exit_1(workdir, capsys, monkeypatch):
    def no_space(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(pq.ParquetWriter, "write_table", no_space)
    code, out, err = cli(capsys, "compare --strategy sma_cross --start 2021-05-01 --end 2021-05-03 "
                                 "--leverage 1,2 --jobs 1 --no-progress --out c")
    assert code == 1
    assert "cannot write c/history/run_id=1x/history.parquet: no space left on device" in err
    assert not [p for p in (workdir / "c").rglob("*") if p.is_file()]


LIMITED = textwrap.dedent("""\
    import resource, signal, sys
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)      # a write past the limit fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))
    from btperp.cli.main import main
    sys.exit(main(sys.argv[1:]))
""")


def test_a_file_size_limit_is_exit_1_with_the_file_and_nothing_left(tmp_path):
    """A real EFBIG: the process may not write files over 20 kB (the history of 45 days is bigger)."""
    command = "run --strategy sma_long_short --start 2021-01-01 --end 2021-02-15 --out big"
    proc = subprocess.run([sys.executable, "-c", LIMITED, *shlex.split(command)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "history.parquet: file too large; the incomplete temporary file was removed" in proc.stderr
    leftovers = [p for p in (tmp_path / "big").rglob("*") if p.is_file()]
    assert not [p for p in leftovers if p.name.endswith(".tmp")]
    for p in leftovers:                                 # whatever is there is complete
        pq.read_metadata(p)


# --- temporary files of killed runs --------------------------------------------------------------------

KILLED = textwrap.dedent("""\
    import os, signal, sys
    from btperp.io.atomic import atomic_path
    with atomic_path(sys.argv[1]) as tmp:
        tmp.write_bytes(b"half a file")
        os.kill(os.getpid(), signal.SIGKILL)
""")


def test_the_next_run_removes_temp_files_of_killed_runs_only(tmp_path):
    target = tmp_path / "history.parquet"
    proc = subprocess.run([sys.executable, "-c", KILLED, str(target)], timeout=60)
    assert proc.returncode == -signal.SIGKILL
    (killed,) = tmp_path.glob(".history.parquet.*.tmp")
    assert not target.exists()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        held = tmp_path / f".events.parquet.{live.pid}.abcdefgh.tmp"    # a concurrent run still writing
        held.write_bytes(b"in progress")
        legacy = tmp_path / ".history.parquet.x1y2z3w4.tmp"             # btperp 0.1.0, no pid, old
        legacy.write_bytes(b"old")
        os.utime(legacy, (0, 0))
        fresh_legacy = tmp_path / ".report.png.a1b2c3d4.tmp"            # no pid, recent: maybe live
        fresh_legacy.write_bytes(b"recent")
        other = tmp_path / ".notes.tmp"                                 # not btperp's
        other.write_bytes(b"mine")
        with atomic_path(target) as tmp:                                # the next run into the dir
            tmp.write_bytes(b"whole")
        assert target.read_bytes() == b"whole"
        assert not killed.exists() and not legacy.exists()
        assert held.exists() and fresh_legacy.exists() and other.exists()
        assert remove_stale(tmp_path) == []
    finally:
        live.kill()
        live.wait()
    assert remove_stale(tmp_path) == [held]                            # its process is gone now


def test_a_run_cleans_its_out_folder(workdir, capsys):
    out = workdir / "o"
    out.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    stale = out / f".history.parquet.{dead}.k9s8d7f6.tmp"
    stale.write_bytes(b"half")
    code, _, err = cli(capsys, "run --strategy sma_cross --start 2021-05-01 --end 2021-05-03 --out o")
    assert code == 0, err
    assert not stale.exists() and (out / "history.parquet").is_file()


# --- data: funding ------------------------------------------------------------------------------------

def small_root(root: Path, funding: pd.DataFrame, hours: int = 96) -> Path:
    times = pd.date_range("2024-01-01", periods=hours, freq="h", tz="UTC")
    close = 40_000 + np.cumsum(np.random.default_rng(17).normal(0, 50, hours))
    ohlcv = pd.DataFrame({"time": times, "open": close - 5, "high": close + 30, "low": close - 30,
                          "close": close, "volume": 10.0})
    mark = pd.DataFrame({"time": times, "open": close - 4, "high": close + 20, "low": close - 20,
                         "close": close + 1})
    meta = {"exchange": "binance-usdm", "symbol": "BTC/USDT:USDT", "timeframe": "1h", "source": "test"}
    write_series(ohlcv, series_path("binance-usdm", "BTCUSDT", "ohlcv", "1h", root), "ohlcv", meta=meta)
    write_series(mark, series_path("binance-usdm", "BTCUSDT", "mark", "1h", root), "mark", meta=meta)
    write_series(funding, series_path("binance-usdm", "BTCUSDT", "funding", root=root), "funding",
                 meta={**meta, "timeframe": None})
    tiers = json.loads((DATASETS / "binance-usdm" / "tier_history.json").read_text())
    tiers["symbols"] = {"BTC/USDT:USDT": tiers["symbols"]["BTC/USDT:USDT"]}
    (root / "binance-usdm" / "tier_history.json").write_text(json.dumps(tiers))
    return root


def events(times, rates):
    return pd.DataFrame({"time": pd.DatetimeIndex(times, tz="UTC"), "rate": rates})


@pytest.mark.parametrize("funding, message", [
    (events([], []), "funding.parquet: no rows; the frame has no funding events and no funding is paid"),
    (events(pd.date_range("2024-01-01", periods=20, freq="8h"), 0.0001),
     "funding.parquet: 8 funding events after the last bar (2024-01-04 23:00:00+00:00; first at "
     "2024-01-05 00:00:00+00:00) are not attached: the price data ends before the funding data"),
    (events(pd.date_range("2024-01-01", periods=12, freq="8h"), [0.0001] * 5 + [5.0, 0.0001, -0.04] + [0.0001] * 4),
     "funding.parquet: 2 funding rates above 3% a funding event in absolute value (first at "
     "2024-01-02 16:00:00+00:00: 5 = 500%), beyond any exchange's cap"),
])
def test_funding_problems_are_warned_with_count_and_first_time(tmp_path, capsys, funding, message):
    root = small_root(tmp_path / "data", funding)
    with pytest.warns(DataWarning) as caught:
        btperp.load("BTCUSDT", datadir=root)
    assert any(message in str(w.message) for w in caught), [str(w.message) for w in caught]
    code, out, err = cli(capsys, f"run --strategy sma_long_short --param slow=20 --datadir {root} "
                                 f"--start 2024-01-01 --out {tmp_path / 'o'}")
    assert code == 0, err
    assert err.count(message) == 1 and f"btperp: warning: {root}" in err


# --- warnings read as one line, once ---------------------------------------------------------------------

EARLIEST = ("BTC/USDT:USDT: 2021-05-01 00:00 is before the first known tier table (2022-02-05); that "
            "table is used for every date before it (the exchange's tiers may have differed then). For "
            "exact tiers start on or after 2022-02-05, or import older tables with `btperp data "
            "import-tiers`")


def test_the_earliest_table_warning_is_one_line_once_per_run(workdir, capsys):
    code, out, err = cli(capsys, "run --strategy sma_cross --start 2021-05-01 --end 2021-05-03 --out o")
    assert code == 0, err
    assert [line for line in err.splitlines() if "first known tier table" in line] == [
        f"btperp: warning: {EARLIEST}"]
    assert "broker.py" not in err and "warnings.warn" not in err


def test_the_earliest_table_warning_is_raised_once_per_comparison():
    """compare gathers the warnings of its runs (processes or not) and raises each once."""
    import warnings

    from btperp.backtest import RunConfig, compare
    from btperp.errors import EarliestTableAssumed
    config = RunConfig("sma_cross", start="2021-05-01", end="2021-05-03")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compare(config, [1, 2, 3], jobs=1, progress=False)
    assert [str(w.message) for w in caught if w.category is EarliestTableAssumed] == [EARLIEST]


def test_the_earliest_table_warning_points_at_the_callers_line():
    """From Python, the warning names the caller's line (here), not a line of btperp or backtrader."""
    import warnings

    import backtrader as bt

    from btperp.backtest import load_strategy
    from btperp.errors import EarliestTableAssumed
    cerebro = bt.Cerebro()
    cerebro.adddata(btperp.load_feed("BTCUSDT", start="2021-05-01", end="2021-05-03"))
    cerebro.addstrategy(load_strategy("sma_cross"))
    btperp.install(cerebro, cash=1000, leverage=3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cerebro.run()
    (w,) = [w for w in caught if issubclass(w.category, EarliestTableAssumed)]
    assert w.filename == __file__


def test_the_brokers_data_warnings_name_the_callers_line():
    """A feed without funding (at the first bar) and bars without a mark (at the end of the run):
    both warnings point at cerebro.run() here, not at btperp's broker."""
    import warnings

    import backtrader as bt
    from perpkit import FLAT, Script, make_frame

    from btperp.errors import DataWarning
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(bt.feeds.PandasData(dataname=make_frame([100.0] * 5), name="TESTUSDT"))
    cerebro.addstrategy(Script, plan={0: [("buy", dict(size=1.0))]})
    btperp.install(cerebro, cash=1000, tiers=FLAT, mark_fallback="last")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cerebro.run()
    found = [w for w in caught if issubclass(w.category, DataWarning)]
    assert ["no funding data" in str(w.message) for w in found] == [True, False]
    assert "bars had no mark price" in str(found[1].message)
    assert [w.filename for w in found] == [__file__, __file__]


# --- --debug, and the last line of defence ------------------------------------------------------------------

def test_debug_shows_the_traceback(workdir, capsys, monkeypatch):
    assert main(["calc", "--account", "list.json"]) == 2
    assert "Traceback" not in capsys.readouterr().err
    assert main(["calc", "--account", "list.json", "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "btperp calc: error: --account: list.json: a JSON list" in err
    monkeypatch.setenv("BTPERP_DEBUG", "1")
    assert main(["calc", "--account", "list.json"]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_an_unexpected_exception_is_an_internal_error_not_a_traceback(workdir, capsys, monkeypatch):
    import btperp.calc

    def broken(*args, **kwargs):
        raise RuntimeError("something btperp did not foresee")
    monkeypatch.setattr(btperp.cli.calc, "calculate", broken)
    code, _, err = cli(capsys, "calc --symbol BTCUSDT --side long --size 0.02 --entry 50000 --margin 500")
    assert code == 1
    assert ("btperp calc: error: internal error (RuntimeError: something btperp did not foresee); rerun "
            "with --debug (or BTPERP_DEBUG=1) for the traceback and report it") in err
