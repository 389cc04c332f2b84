"""Run a backtrader strategy with btperp's broker, or the same strategy at several leverages.

The Python API behind ``btperp run`` and ``btperp compare``::

    from btperp.backtest import RunConfig, run, compare
    config = RunConfig("sma_long_short", symbol="BTCUSDT", start="2024-01-01", end="2024-12-31",
                       leverage=10)
    result = run(config, out="out/run")             # summary, equity curve, liquidations, history
    table = compare(config, [1, 3, 10, 50], out="out/compare").table   # one row per leverage

Strategies are named by ``path/to/file.py:Class``, ``module:Class`` or the short name of a file
in a ``strategies/`` folder (the current directory's, then the project's). Positions are sized by
:class:`btperp.bt.MarginSizer` (``stake`` % of the available balance as initial margin), so the
exposure grows with the leverage; a strategy that sizes its own orders keeps its sizes.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import hashlib
import importlib
import importlib.util
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from .errors import BtperpError, InputError
from .io.market import inclusive_end
from .stats import DAY_MS, summarize
from .symbols import to_unified
from .times import utc_minute as _iso

#: Folders searched for strategies named by their short name, in this order.
PROJECT_STRATEGIES = Path(__file__).resolve().parents[2] / "strategies"


# --- strategies ------------------------------------------------------------------------------

def strategy_dirs() -> list[Path]:
    """``./strategies`` (the current directory's), then the project's own ``strategies/``."""
    found: list[Path] = []
    for folder in (Path.cwd() / "strategies", PROJECT_STRATEGIES):
        if folder.is_dir() and folder.resolve() not in [f.resolve() for f in found]:
            found.append(folder)
    return found


def _strategy_classes(path: Path) -> list[str]:
    """Names of the classes in ``path`` that derive from something called ``*Strategy``
    (read with ``ast``: listing the strategies runs none of their code). A file that cannot be
    read or parsed raises :class:`InputError` saying why (the file, the line)."""
    if not path.is_file():
        raise InputError(f"{path} is {'a folder' if path.is_dir() else 'not a regular file'}, not a "
                         f"Python file", field="strategy")
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except SyntaxError as exc:
        raise InputError(f"{path}, line {exc.lineno}: {type(exc).__name__}: {exc.msg}",
                         field="strategy") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); save it as "
                         f"UTF-8", field="strategy") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot be read ({getattr(exc, 'strerror', None) or exc})",
                         field="strategy") from None
    names = []
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            for base in node.bases:
                text = ast.unparse(base)
                if text.split(".")[-1].endswith("Strategy"):
                    names.append(node.name)
                    break
    return names


def _scan_strategies() -> tuple[dict[str, str], dict[str, str]]:
    """The catalog, and the files in the strategy folders that cannot be read: short name → why."""
    catalog: dict[str, str] = {}
    broken: dict[str, str] = {}
    for folder in strategy_dirs():
        for path in sorted(folder.glob("*.py")):
            if path.name.startswith("_"):
                continue
            try:
                classes = _strategy_classes(path)
            except InputError as exc:
                if path.stem not in catalog:
                    broken.setdefault(path.stem, str(exc.args[0]).removeprefix("strategy: "))
                continue
            for cls in classes:
                name = path.stem if len(classes) == 1 else f"{path.stem}.{cls}"
                catalog.setdefault(name, f"{path}:{cls}")
    return catalog, {k: v for k, v in broken.items() if k not in catalog}


def strategy_catalog() -> dict[str, str]:
    """Short name → ``file.py:Class`` of the strategies in :func:`strategy_dirs` (a file with one
    strategy is named by its stem; with several, ``stem.Class``). Files that cannot be read or
    parsed are left out: :func:`strategy_problems` lists them."""
    return _scan_strategies()[0]


def strategy_problems() -> dict[str, str]:
    """Short name → why the file of that name in the strategy folders cannot be loaded (a syntax
    error with its line, text that is not UTF-8, a folder named ``x.py``)."""
    return _scan_strategies()[1]


def _import_failure(path: Path, exc: BaseException) -> InputError:
    """The error for a strategy file whose import raised: the file, the line in it, the exception."""
    import traceback
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if Path(frame.filename).resolve() == path.resolve():
            line = frame.lineno
    if isinstance(exc, SyntaxError) and exc.lineno:
        line = exc.lineno
    where = f"{path}, line {line}" if line else str(path)
    message = str(exc.msg if isinstance(exc, SyntaxError) else exc).strip().splitlines()
    return InputError(f"{where}: importing it failed: {type(exc).__name__}: "
                      f"{message[0] if message else ''}", field="strategy")


def _import_file(path: Path):
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:10]
    name = f"btperp_strategies_{digest}_{path.stem}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise InputError(f"{path}: not a Python file", field="strategy")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise _import_failure(path, exc) from None
    except BaseException:
        del sys.modules[name]
        raise
    return module


def load_strategy(spec: str):
    """The backtrader Strategy class ``spec`` names (see the module docstring)."""
    import backtrader as bt

    catalog, broken = _scan_strategies()
    choices = ", ".join(sorted(catalog)) or "none found"
    if spec in broken:
        raise InputError(f"{spec!r} cannot be loaded: {broken[spec]}", field="strategy")
    if spec in catalog:
        spec = catalog[spec]
    where, _, cls_name = spec.rpartition(":") if ":" in spec else (spec, "", "")
    if where.endswith(".py") or os.sep in where or "/" in where:
        path = Path(where)
        if not path.is_file():
            raise InputError(f"no strategy file {path} (short names: {choices})", field="strategy")
        _strategy_classes(path)                 # a syntax error or non-UTF-8 text, named
        module = _import_file(path)
    elif cls_name:
        try:
            module = importlib.import_module(where)
        except ImportError as exc:
            raise InputError(f"cannot import module {where!r} ({exc}); short names: {choices}",
                             field="strategy") from None
        except Exception as exc:
            raise InputError(f"importing module {where!r} failed: {type(exc).__name__}: {exc}",
                             field="strategy") from None
    else:
        raise InputError(f"unknown strategy {spec!r}; choose one of: {choices}, or give "
                         f"path/to/file.py:Class or module:Class", field="strategy")
    found = {name: obj for name, obj in vars(module).items()
             if isinstance(obj, type) and issubclass(obj, bt.Strategy) and obj.__module__ == module.__name__}
    if not cls_name:
        if len(found) != 1:
            raise InputError(f"{where} defines {len(found)} strategies ({', '.join(sorted(found)) or 'none'}); "
                             f"name one as {where}:Class", field="strategy")
        cls_name = next(iter(found))
    if cls_name not in found:
        raise InputError(f"{where} has no strategy {cls_name!r}; it defines: "
                         f"{', '.join(sorted(found)) or 'none'}", field="strategy")
    return found[cls_name]


def strategy_params(cls) -> dict[str, Any]:
    """The strategy's parameters and their defaults."""
    return {name: getattr(cls.params, name) for name in cls.params._getkeys()}


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _typed(name: str, text: str, default: Any) -> Any:
    """``text`` as the type of the parameter's default. A parameter whose default is a positive
    whole number (a period, a count) must be 1 or more: 0 or -5 would make backtrader divide by
    zero or look at the future."""
    try:
        value = _convert(text, default)
    except (ValueError, TypeError) as exc:
        raise InputError(f"parameter {name}={text!r}: not a {type(default).__name__} "
                         f"(default {default!r}; {exc})", field=name) from None
    if (isinstance(default, int) and not isinstance(default, bool) and default > 0
            and isinstance(value, int) and value < 1):
        raise InputError(f"parameter {name}={text!r}: must be 1 or more (its default {default} is a "
                         f"positive whole number: a period or a count)", field=name)
    return value


def _convert(text: str, default: Any) -> Any:
    if isinstance(default, bool):
        low = text.strip().lower()
        if low in _TRUE | _FALSE:
            return low in _TRUE
        raise ValueError("expected true or false")
    if isinstance(default, int):
        return int(text)
    if isinstance(default, float):
        value = float(text)
        if not math.isfinite(value):
            raise ValueError("not a finite number")
        return value
    if default is None:
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return text
    return type(default)(text)


def parse_params(cls, pairs: Iterable[str] | Mapping[str, Any]) -> dict[str, Any]:
    """``["fast=10", "short=false"]`` (or a mapping of strings) → typed parameters of ``cls``."""
    known = strategy_params(cls)
    listed = ", ".join(f"{k} ({v!r})" for k, v in known.items()) or "none"
    items = pairs.items() if isinstance(pairs, Mapping) else [_split_pair(p) for p in pairs]
    out: dict[str, Any] = {}
    for name, value in items:
        if name not in known:
            raise InputError(f"{cls.__name__} has no parameter {name!r}; its parameters: {listed}",
                             field=name)
        out[name] = _typed(name, value, known[name]) if isinstance(value, str) else value
    return out


def _split_pair(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise InputError(f"--param wants name=value, got {text!r}", field="param")
    return name.strip(), value.strip()


# --- one run ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class RunConfig:
    """Everything a run depends on (a run is a pure function of it and the datasets)."""

    strategy: str
    params: Mapping[str, Any] = field(default_factory=dict)
    symbol: str = "BTCUSDT"
    exchange: str = "binance-usdm"
    timeframe: str = "1h"
    start: str | None = None
    end: str | None = None
    leverage: float = 1.0
    margin_mode: str = "isolated"
    cash: float = 10_000.0
    trigger: str = "mark"
    intrabar: str = "path"
    """Which extreme of a bar comes first (btperp.intrabar): ``path`` or ``adverse``."""
    detail: str | None = None
    """Finer stored bars (``1m``) each bar is replayed on where something can happen in it."""
    stake: float = 95.0
    """Percent of the available balance each entry puts up as initial margin (MarginSizer)."""
    datadir: str | None = None
    liquidation: str = "partial"
    """``partial`` (reduce a larger position first where the exchange does) or ``full``."""

    def with_leverage(self, leverage: float) -> "RunConfig":
        return dataclasses.replace(self, leverage=float(leverage))

    def to_dict(self) -> dict:
        return {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in dataclasses.asdict(self).items()}


@dataclass
class RunResult:
    """What a run produced: the summary row, the equity curve and where its history is."""

    summary: dict[str, Any]
    time: np.ndarray                  # int64 ms, bar open times (UTC)
    equity: np.ndarray                # account value after each bar
    liquidations: list[dict[str, Any]]
    history: str | None = None
    fills: int = 0
    """Fills of the run (a run with refused orders and no fill refused every entry)."""


#: Columns of a summary row, in order (``btperp run --json`` and ``results.parquet``).
SUMMARY_COLUMNS = ("strategy", "symbol", "leverage", "margin_mode", "first_bar", "last_bar", "bars",
                   "final_value", "total_return", "cagr", "max_drawdown", "sharpe", "trades",
                   "liquidations", "first_liquidation", "days_to_first_liquidation", "funding_paid",
                   "fees", "liquidation_losses", "worst_margin_ratio", "refused_orders",
                   "refusal_reason", "history_dir")


def _check(config: RunConfig, leverages: Sequence[float] | None = None) -> None:
    from .times import to_utc
    if not (isinstance(config.leverage, (int, float)) and config.leverage > 0
            and math.isfinite(config.leverage)):
        raise InputError(f"leverage must be a positive number, got {config.leverage!r}", field="leverage")
    from .liquidation import LiquidationMode
    LiquidationMode.parse(config.liquidation)
    if not (0 < config.stake <= 100):
        raise InputError(f"stake must be a percent in (0, 100], got {config.stake!r}", field="stake")
    if not (isinstance(config.cash, (int, float)) and math.isfinite(config.cash) and config.cash > 0):
        raise InputError(f"must be a positive number, got {config.cash!r}", field="cash")
    start = to_utc(config.start, "start") if config.start is not None else None
    end = to_utc(inclusive_end(config.end), "end") if config.end is not None else None
    if start is not None and end is not None and start > end:
        raise InputError(f"the start {config.start} is after the end {config.end}", field="end")
    for leverage in leverages or [config.leverage]:
        _check_leverage_allowed(config, float(leverage))


def _check_leverage_allowed(config: RunConfig, leverage: float) -> None:
    """A leverage above what every tier table of the symbol allows (Binance "Leverage and Margin
    of USDⓈ-M Futures": tier 1's maximum) would have every order refused: an error up front, as
    ``btperp calc`` gives. Without a bundled tier history the broker reports it."""
    from .io.tierfile import TierHistoryFile
    from .rules import get_rulebook
    try:
        rulebook = get_rulebook(config.exchange)
        found = TierHistoryFile.bundled(rulebook.name, config.datadir)
        history = found.history(config.symbol, rulebook.settle) if found is not None else None
    except BtperpError:
        return                                  # the run itself reports a bad exchange or tier file
    if history is None:
        return
    best = max(max(t.max_leverage for t in table.tiers) for _, table in history.versions)
    if leverage > best * (1 + 1e-12):
        raise InputError(f"{leverage:g}x: no tier of {to_unified(config.symbol)} on "
                         f"{rulebook.name} allows it (at most {best:g}x, for the smallest positions); "
                         f"every order would be refused", field="leverage")


def refusal_summary(rejections) -> tuple[int, str | None]:
    """(number of refused orders, the most common reason: the first message of the most frequent
    kind, numbers aside)."""
    import re
    from collections import Counter
    if not rejections:
        return 0, None
    kinds = [re.sub(r"[-+]?\d[\d,]*(\.\d+)?", "#", r.reason) for r in rejections]
    top = Counter(kinds).most_common(1)[0][0]
    return len(rejections), rejections[kinds.index(top)].reason


def run(config: RunConfig, out: "str | os.PathLike[str] | None" = None, *, run_id: str | None = None,
        plot: "str | os.PathLike[str] | None" = None) -> RunResult:
    """One backtest of ``config`` with btperp's broker; the margin history goes to ``out`` (with
    ``run_id``: into the sweep layout ``out/history/run_id=<id>/``). ``plot``: save
    ``cerebro.plot()`` (liquidations marked) to that file."""
    import backtrader as bt

    from .bt import MarginSizer, PerpHistory, install, load_feed
    from .bt.analyzers import EquityCurve

    _check(config)
    cls = load_strategy(config.strategy)
    params = parse_params(cls, config.params)
    data = load_feed(config.symbol, config.exchange, config.timeframe, config.start,
                     inclusive_end(config.end), datadir=config.datadir)
    cerebro = bt.Cerebro(stdstats=plot is not None)
    cerebro.adddata(data)
    cerebro.addstrategy(cls, **params)
    cerebro.addsizer(MarginSizer, percents=config.stake)
    cerebro.addanalyzer(EquityCurve, _name="equity")
    broker = install(cerebro, exchange=config.exchange, cash=config.cash, leverage=config.leverage,
                     margin_mode=config.margin_mode, trigger=config.trigger, intrabar=config.intrabar,
                     detail=config.detail, liquidation=config.liquidation,
                     **({"datadir": config.datadir} if config.datadir else {}))
    if out is not None:
        cerebro.addanalyzer(PerpHistory, path=str(out), run_id=run_id)
    try:
        strategy = cerebro.run()[0]
    except Exception as exc:
        raise _strategy_failure(exc, cerebro, cls, params, len(data.p.dataname)) from exc
    if plot is not None:
        from .bt.plot import save_plot
        save_plot(cerebro, plot)
    curve = strategy.analyzers.equity.get_analysis()
    history = strategy.analyzers.perphistory.get_analysis() if out is not None else {}
    return _result(config, cls.__name__, broker, curve, history)


def _strategy_failure(exc: Exception, cerebro, cls, params: Mapping[str, Any], bars: int) -> Exception:
    """What to raise when ``cerebro.run()`` failed: a named :class:`InputError` when the strategy
    (its code, its parameters, or too few bars for its indicators) caused it; the exception itself
    when btperp's own code raised it (an internal error, shown as such)."""
    import traceback
    from .errors import BtperpError
    if isinstance(exc, BtperpError):
        return exc
    frames = traceback.extract_tb(exc.__traceback__)
    package = str(Path(__file__).resolve().parent)
    last = frames[-1].filename if frames else ""
    if str(Path(last).resolve()).startswith(package):
        return exc
    shown = {**{k: v for k, v in strategy_params(cls).items()}, **params}
    settings = ", ".join(f"{k}={v!r}" for k, v in shown.items()) or "no parameters"
    needed = max((max(getattr(s, "_minperiods", [0]) or [0]) for s in getattr(cerebro, "runningstrats", [])),
                 default=0)
    if isinstance(exc, IndexError) and needed > bars:
        return InputError(f"the data window has {bars} bars, fewer than the {needed} that {cls.__name__} "
                          f"({settings}) needs to warm up its indicators; widen --start/--end or "
                          f"shorten its periods", field="strategy")
    where = f" ({Path(frames[-1].filename).name}, line {frames[-1].lineno})" if frames else ""
    return InputError(f"{cls.__name__} ({settings}) failed on {bars} bars: {type(exc).__name__}: "
                      f"{str(exc).strip()[:200]}{where}; check its parameters", field="strategy")


def _result(config: RunConfig, name: str, broker, curve: Mapping[str, Any], history: Mapping[str, Any]):
    times, equity = curve["time"], curve["equity"]
    figures = summarize(times, equity, config.cash)
    liqs = [{"time": int(np.datetime64(x.time.replace(tzinfo=None), "ms").astype(np.int64)),
             "side": x.side, "price": x.fill_price, "loss": x.loss} for x in broker.liquidations]
    first = liqs[0]["time"] if liqs else None
    worst = None
    if history.get("history"):
        import pyarrow.compute as pc
        import pyarrow.parquet as pq
        column = pq.read_table(history["history"], columns=["margin_ratio"])["margin_ratio"]
        worst = pc.max(column).as_py() if len(column) else None
    summary = {
        "strategy": name, "symbol": to_unified(config.symbol), "leverage": float(config.leverage),
        "margin_mode": config.margin_mode,
        "first_bar": _iso(times[0]) if len(times) else None,
        "last_bar": _iso(times[-1]) if len(times) else None, "bars": int(len(times)),
        **figures,
        "trades": int(curve["trades"]),
        "liquidations": len(liqs),
        "first_liquidation": _iso(first) if first is not None else None,
        "days_to_first_liquidation": (first - int(times[0])) / DAY_MS if first is not None else None,
        "funding_paid": broker.funding_paid,
        "fees": math.fsum(f.fee for f in broker.fills),
        "liquidation_losses": math.fsum(x.loss for x in broker.liquidations),
        "worst_margin_ratio": worst,
        "refused_orders": refusal_summary(broker.rejections)[0],
        "refusal_reason": refusal_summary(broker.rejections)[1],
        "history_dir": str(Path(history["history"]).parent) if history.get("history") else None,
    }
    if broker.rejections and not broker.fills:
        import warnings

        from .errors import RefusedOrdersWarning
        warnings.warn(f"{name} on {summary['symbol']} at {config.leverage:g}x never traded: all "
                      f"{summary['refused_orders']} orders were refused (most often: "
                      f"{summary['refusal_reason']})", RefusedOrdersWarning, stacklevel=3)
    return RunResult({k: summary[k] for k in SUMMARY_COLUMNS}, times, equity, liqs,
                     history.get("history"), fills=len(broker.fills))


# --- several leverages -----------------------------------------------------------------------

@dataclass
class Comparison:
    """``compare``'s answer: the table (one row per leverage) and every run's result."""

    config: RunConfig
    runs: list[RunResult]

    @property
    def table(self):
        import pandas as pd
        return pd.DataFrame([r.summary for r in self.runs], columns=list(SUMMARY_COLUMNS))

    def rows(self) -> list[dict[str, Any]]:
        return [dict(r.summary) for r in self.runs]


def parse_leverages(text: "str | Sequence[float]") -> list[float]:
    """``"1,3,10"`` → ``[1.0, 3.0, 10.0]`` (sorted, no duplicates); errors name the bad item."""
    items = text.split(",") if isinstance(text, str) else list(text)
    out: list[float] = []
    for item in items:
        try:
            value = float(item)
        except (TypeError, ValueError):
            raise InputError(f"leverage {item!r} is not a number (give a list like 1,3,10)",
                             field="leverage") from None
        if not (value > 0 and math.isfinite(value)):
            raise InputError(f"leverage {item!r} must be a positive number", field="leverage")
        out.append(value)
    if not out:
        raise InputError("no leverage given", field="leverage")
    return sorted(set(out))


def run_id_of(leverage: float) -> str:
    """The run id (and hive partition) of one leverage in a comparison: ``10x``, ``2.5x``."""
    return f"{leverage:g}x"


@contextlib.contextmanager
def _main_not_reimported():
    """Worker processes need btperp only (strategies travel by name, never pickled): while they
    start, the calling script is hidden from multiprocessing so that they do not re-run it (a
    script without an ``if __name__ == "__main__":`` guard would otherwise start the comparison
    again in each worker and fail with "bootstrapping phase")."""
    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    saved_file = main.__dict__.pop("__file__", None)
    saved_spec = main.__dict__.get("__spec__")
    main.__spec__ = None
    try:
        yield
    finally:
        main.__spec__ = saved_spec
        if saved_file is not None:
            main.__file__ = saved_file


def compare(config: RunConfig, leverages: "str | Sequence[float]", out: "str | os.PathLike[str] | None" = None,
            *, jobs: int | None = None, progress: bool = True, engine: str = "local",
            scheduler: str | None = None) -> Comparison:
    """The same run at each leverage: a sweep over leverage (:mod:`btperp.sweep.engine`, in ``jobs``
    processes, default one per core, or on Dask); histories go to ``out/history/run_id=<L>x/``.
    Rows come back in leverage order whatever the finishing order."""
    from .sweep.engine import default_workers, execute
    from .sweep.task import run_task

    levels = parse_leverages(leverages)
    _check(config, levels)
    cls = load_strategy(config.strategy)               # errors before any process starts
    parse_params(cls, config.params)
    jobs = max(1, min(jobs or default_workers(), len(levels)))
    import multiprocessing
    if multiprocessing.current_process().daemon:        # inside a worker (a strategy file that
        jobs = 1                                          # runs a comparison when imported)
    out_s = str(out) if out is not None else None
    tasks = [{"config": config.with_leverage(L).to_dict(), "run_id": run_id_of(L), "out": out_s,
              "history": "keep" if out_s is not None else "none", "results": False, "curve": True,
              "catch": False} for L in levels]
    token = os.urandom(4).hex()                        # Dask keys of this comparison only
    results: dict[float, RunResult] = {}
    raised: dict[tuple[type, str], None] = {}
    from tqdm import tqdm
    bar = tqdm(total=len(levels), desc=f"compare {config.strategy} {config.symbol}", unit="run",
               disable=not progress, file=sys.stderr, leave=False)
    try:
        for i, outcome in execute(run_task, tasks, engine=engine, workers=jobs, scheduler=scheduler,
                                  keys=[f"btperp-compare-{token}-{run_id_of(L)}" for L in levels]):
            if isinstance(outcome, BaseException):
                raise outcome
            results[levels[i]] = outcome["result"]
            raised.update(dict.fromkeys(outcome["warnings"]))
            bar.update()
    finally:
        bar.close()
    import warnings
    for category, message in sorted(raised, key=lambda w: w[1]):
        warnings.warn(message, category, stacklevel=2)
    return Comparison(config, [results[L] for L in levels])


def to_json_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rows with NaN as null (JSON has no NaN)."""
    def clean(v):
        return None if isinstance(v, float) and not math.isfinite(v) else v
    return [{k: clean(v) for k, v in row.items()} for row in rows]


__all__ = ["RunConfig", "RunResult", "Comparison", "run", "compare",
           "load_strategy", "strategy_catalog", "strategy_params", "parse_params", "parse_leverages",
           "SUMMARY_COLUMNS"]
