"""What a sweep runs: a TOML file (or the same as flags) expanded into one :class:`RunConfig` per run.

::

    strategy = "breakout"                 # as for btperp run: short name, file.py:Class, module:Class
    symbols = ["BTCUSDT", "ETHUSDT"]
    timeframes = ["4h"]
    leverages = [1, 2, 3, 5, 10, 20]      # or { from = 1, to = 10, step = 1 }
    margin_modes = ["isolated"]           # isolated, cross
    exchange = "binance-usdm"
    cash = 10000
    trigger = "mark"                      # or "last"
    intrabar = "path"                     # or "adverse": which extreme of a bar comes first
    liquidation = "partial"               # or "full": every liquidation closes the whole position
    # detail = "1m"                       # replay bars on stored finer bars (btperp run --detail)
    stake = 95
    history = false                       # write each run's margin history and events

    [params]                              # a list, a range (to included) or one value each
    entry = [20, 55]
    exit = { from = 10, to = 30, step = 10 }

    [windows]                             # one window start..end, or rolling (walk-forward) windows
    start = "2021-01-01"
    end = "2022-12-31"
    length = "6mo"                        # d, w, mo, y
    step = "3mo"                          # default: length (back to back)
    # list = [["2021-01-01", "2021-06-30"], ["2021-07-01", "2021-12-31"]]

Every run is the product of the lists. Its run id is a hash of its settings (the history's own
run-id form: 12 hex digits of a SHA-256), so the same run has the same id in every sweep.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..errors import InputError

KEYS = ("strategy", "params", "symbols", "timeframes", "leverages", "margin_modes", "windows",
        "exchange", "cash", "trigger", "intrabar", "liquidation", "detail", "stake", "datadir",
        "history")
WINDOW_KEYS = ("start", "end", "length", "step", "list")
MARGIN_MODES = ("isolated", "cross")
TRIGGERS = ("mark", "last")
INTRABAR = ("path", "adverse")
LIQUIDATIONS = ("partial", "full")


def _text(exc: InputError) -> str:
    """An error's message without its own field prefix (the spec's field replaces it)."""
    text = str(exc)
    prefix = f"{exc.field}: " if getattr(exc, "field", None) else ""
    return text[len(prefix):] if prefix and text.startswith(prefix) else text


def _bad(source: str, key: str, message: str) -> InputError:
    error = InputError(f"{source}: {key}: {message}")
    error.field = key
    return error


@dataclass(frozen=True)
class SweepSpec:
    """The grid: every combination of params × symbols × timeframes × windows × margin modes ×
    leverages is one run."""

    strategy: str
    params: Mapping[str, Sequence[Any]] = field(default_factory=dict)
    symbols: Sequence[str] = ("BTCUSDT",)
    timeframes: Sequence[str] = ("1h",)
    leverages: Sequence[float] = (1.0,)
    margin_modes: Sequence[str] = ("isolated",)
    windows: Sequence[tuple[str | None, str | None]] = ((None, None),)
    exchange: str = "binance-usdm"
    cash: float = 10_000.0
    trigger: str = "mark"
    intrabar: str = "path"
    liquidation: str = "partial"
    detail: str | None = None
    stake: float = 95.0
    datadir: str | None = None
    history: bool = False
    source: str = "flags"

    def configs(self) -> list:
        """One :class:`btperp.backtest.RunConfig` per run, in a fixed order."""
        from ..backtest import RunConfig
        names = list(self.params)
        grids = [list(self.params[n]) for n in names]
        out = []
        for values, symbol, timeframe, (start, end), mode, leverage in itertools.product(
                itertools.product(*grids), self.symbols, self.timeframes, self.windows,
                self.margin_modes, self.leverages):
            out.append(RunConfig(strategy=self.strategy, params=dict(zip(names, values)), symbol=symbol,
                                 exchange=self.exchange, timeframe=timeframe, start=start, end=end,
                                 leverage=float(leverage), margin_mode=mode, cash=float(self.cash),
                                 trigger=self.trigger, intrabar=self.intrabar, detail=self.detail,
                                 liquidation=self.liquidation, stake=float(self.stake),
                                 datadir=self.datadir))
        return out

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["params"] = {k: list(v) for k, v in self.params.items()}
        d["windows"] = [list(w) for w in self.windows]
        return d


def run_id(config) -> str:
    """The run id of ``config``: 12 hex digits of a SHA-256 of its settings (its data folder left
    out: the same data at another path is the same run)."""
    settings = {k: v for k, v in config.to_dict().items() if k != "datadir"}
    settings["params"] = {k: settings["params"][k] for k in sorted(settings["params"])}
    blob = json.dumps(settings, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


# --- reading ---------------------------------------------------------------------------------------

def read_toml(path: "str | Path") -> dict:
    """The spec file as a mapping; a missing or malformed file is an error naming it."""
    try:
        import tomllib
    except ImportError:                    # Python 3.10
        import tomli as tomllib
    path = Path(path)
    if not path.is_file():
        raise InputError(f"no sweep spec {path}", field="spec")
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{path}: not valid TOML ({exc})", field="spec") from None


def _number(source: str, key: str, value: Any, *, positive: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _bad(source, key, f"{value!r} is not a number")
    if positive and value <= 0:
        raise _bad(source, key, f"{value!r} must be positive")
    return value


def expand_values(source: str, key: str, value: Any) -> list:
    """A list, a range ``{from, to, step}`` (``to`` included) or one value → a list of values."""
    if isinstance(value, Mapping):
        unknown = set(value) - {"from", "to", "step"}
        if unknown or not {"from", "to"} <= set(value):
            raise _bad(source, key, "a range is { from = A, to = B, step = S } (step default 1), "
                                    f"got keys {sorted(value)}")
        lo, hi = _number(source, key, value["from"], positive=False), _number(source, key, value["to"], positive=False)
        step = _number(source, key, value.get("step", 1))
        if hi < lo:
            raise _bad(source, key, f"range from {lo} to {hi}: 'to' is below 'from'")
        count = int(math.floor((hi - lo) / step + 1e-9)) + 1
        if count > 100_000:
            raise _bad(source, key, f"range of {count:,} values; too many")
        integral = all(isinstance(v, int) for v in (lo, hi, step))
        digits = max(0, -math.floor(math.log10(step)) + 6) if not integral else 0
        return [lo + i * step if integral else round(lo + i * step, digits) for i in range(count)]
    if isinstance(value, list):
        if not value:
            raise _bad(source, key, "empty list")
        return list(value)
    return [value]


def _strings(source: str, key: str, value: Any) -> list[str]:
    values = expand_values(source, key, value)
    for v in values:
        if not isinstance(v, str) or not v.strip():
            raise _bad(source, key, f"{v!r} is not a name")
    return [v.strip() for v in values]


_LENGTH = re.compile(r"^\s*(\d+)\s*(d|w|mo|y)\s*$")


def _offset(source: str, key: str, text: Any):
    import pandas as pd
    match = _LENGTH.match(str(text))
    if not match or int(match[1]) == 0:
        raise _bad(source, key, f"{text!r}: give a length like 30d, 2w, 6mo or 1y")
    n, unit = int(match[1]), match[2]
    return {"d": pd.DateOffset(days=n), "w": pd.DateOffset(weeks=n), "mo": pd.DateOffset(months=n),
            "y": pd.DateOffset(years=n)}[unit]


def _day(source: str, key: str, text: Any):
    import pandas as pd
    try:
        stamp = pd.Timestamp(str(text))
    except (ValueError, TypeError):
        raise _bad(source, key, f"{text!r} is not a date (YYYY-MM-DD)") from None
    if stamp.tz is not None:
        stamp = stamp.tz_convert("UTC").tz_localize(None)
    return stamp.normalize()


def windows(source: str, value: Any) -> list[tuple[str | None, str | None]]:
    """The ``[windows]`` table → (start, end) days, ends included whole."""
    if value is None:
        return [(None, None)]
    if not isinstance(value, Mapping):
        raise _bad(source, "windows", "a table: start, end, length, step, or list")
    unknown = sorted(set(value) - set(WINDOW_KEYS))
    if unknown:
        raise _bad(source, f"windows.{unknown[0]}", f"unknown key; use {', '.join(WINDOW_KEYS)}")
    if "list" in value:
        if set(value) - {"list"}:
            raise _bad(source, "windows.list", "give either list or start/end/length/step")
        out = []
        for item in expand_values(source, "windows.list", value["list"]):
            if not (isinstance(item, list) and len(item) == 2):
                raise _bad(source, "windows.list", f"{item!r}: each window is [start, end]")
            a, b = (_day(source, "windows.list", x) for x in item)
            if b < a:
                raise _bad(source, "windows.list", f"{item!r}: end before start")
            out.append((a.strftime("%Y-%m-%d"), b.strftime("%Y-%m-%d")))
        return out
    start = _day(source, "windows.start", value["start"]) if "start" in value else None
    end = _day(source, "windows.end", value["end"]) if "end" in value else None
    if start is not None and end is not None and end < start:
        raise _bad(source, "windows.end", f"{end:%Y-%m-%d} is before the start {start:%Y-%m-%d}")
    if "length" not in value:
        if "step" in value:
            raise _bad(source, "windows.step", "a step needs a length")
        return [(None if start is None else start.strftime("%Y-%m-%d"),
                 None if end is None else end.strftime("%Y-%m-%d"))]
    if start is None or end is None:
        raise _bad(source, "windows.length", "rolling windows need a start and an end")
    length = _offset(source, "windows.length", value["length"])
    step = _offset(source, "windows.step", value.get("step", value["length"]))
    out = []
    first = start
    import pandas as pd
    while True:
        last = first + length - pd.Timedelta(days=1)
        if last > end:
            break
        out.append((first.strftime("%Y-%m-%d"), last.strftime("%Y-%m-%d")))
        first = first + step
        if len(out) > 100_000:
            raise _bad(source, "windows.step", "too many windows")
    if not out:
        raise _bad(source, "windows.length", f"{value['length']!r} is longer than {start:%Y-%m-%d} to "
                                             f"{end:%Y-%m-%d}")
    return out


def spec_from_mapping(mapping: Mapping[str, Any], source: str = "flags") -> SweepSpec:
    """Check every field (errors name the source and the field) and type the strategy's parameters."""
    from ..backtest import load_strategy, parse_params
    unknown = sorted(set(mapping) - set(KEYS))
    if unknown:
        raise _bad(source, unknown[0], f"unknown key; a sweep spec has {', '.join(KEYS)}")
    if not isinstance(mapping.get("strategy"), str) or not mapping["strategy"].strip():
        raise _bad(source, "strategy", "required: a short name, path/to/file.py:Class or module:Class")
    strategy = mapping["strategy"].strip()
    try:
        cls = load_strategy(strategy)
    except InputError as exc:
        raise _bad(source, "strategy", _text(exc)) from None
    raw_params = mapping.get("params", {})
    if not isinstance(raw_params, Mapping):
        raise _bad(source, "params", "a table of name = values")
    params: dict[str, list] = {}
    for name, value in raw_params.items():
        values = expand_values(source, f"params.{name}", value)
        try:
            typed = [parse_params(cls, {name: str(v) if isinstance(v, (bool, int, float)) else v})[name]
                     for v in values]
        except InputError as exc:
            raise _bad(source, f"params.{name}", _text(exc)) from None
        params[name] = list(dict.fromkeys(typed))
    leverages = []
    for v in expand_values(source, "leverages", mapping.get("leverages", [1])):
        leverages.append(float(_number(source, "leverages", v)))
    modes = [m.lower() for m in _strings(source, "margin_modes", mapping.get("margin_modes", ["isolated"]))]
    for m in modes:
        if m not in MARGIN_MODES:
            raise _bad(source, "margin_modes", f"{m!r}: use isolated or cross")
    symbols = _strings(source, "symbols", mapping.get("symbols", ["BTCUSDT"]))
    timeframes = _strings(source, "timeframes", mapping.get("timeframes", ["1h"]))
    from ..io.market import parse_timeframe
    for tf in timeframes:
        try:
            parse_timeframe(tf)
        except Exception as exc:  # noqa: BLE001 - DataError: reported with the field
            raise _bad(source, "timeframes", str(exc)) from None
    trigger = mapping.get("trigger", "mark")
    if trigger not in TRIGGERS:
        raise _bad(source, "trigger", f"{trigger!r}: use mark or last")
    intrabar = mapping.get("intrabar", "path")
    if intrabar not in INTRABAR:
        raise _bad(source, "intrabar", f"{intrabar!r}: use path or adverse")
    liquidation = mapping.get("liquidation", "partial")
    if liquidation not in LIQUIDATIONS:
        raise _bad(source, "liquidation", f"{liquidation!r}: use partial or full")
    detail = mapping.get("detail")
    if detail is not None:
        if not isinstance(detail, str):
            raise _bad(source, "detail", f"{detail!r}: a timeframe of stored finer bars, e.g. 1m")
        try:
            parse_timeframe(detail)
        except Exception as exc:  # noqa: BLE001 - DataError: reported with the field
            raise _bad(source, "detail", str(exc)) from None
    stake = _number(source, "stake", mapping.get("stake", 95.0))
    if stake > 100:
        raise _bad(source, "stake", f"{stake!r}: a percent in (0, 100]")
    exchange = mapping.get("exchange", "binance-usdm")
    if not isinstance(exchange, str):
        raise _bad(source, "exchange", f"{exchange!r} is not a name")
    datadir = mapping.get("datadir")
    if datadir is not None and not isinstance(datadir, str):
        raise _bad(source, "datadir", f"{datadir!r} is not a path")
    history = mapping.get("history", False)
    if not isinstance(history, bool):
        raise _bad(source, "history", f"{history!r}: true or false")
    from ..io.loader import available_symbols
    from ..symbols import to_exchange
    known = available_symbols(exchange, datadir)
    for s in symbols:
        try:
            name = to_exchange(s)
        except Exception:  # noqa: BLE001 - any unreadable symbol is reported the same way
            name = s
        if name not in known:
            raise _bad(source, "symbols", f"no data for {s!r} on {exchange}; available: "
                                          f"{', '.join(known) or 'none'}")
    return SweepSpec(strategy=strategy, params=params, symbols=list(dict.fromkeys(symbols)),
                     timeframes=list(dict.fromkeys(timeframes)),
                     leverages=sorted(set(leverages)), margin_modes=list(dict.fromkeys(modes)),
                     windows=list(dict.fromkeys(windows(source, mapping.get("windows")))),
                     exchange=exchange, cash=float(_number(source, "cash", mapping.get("cash", 10_000.0))),
                     trigger=trigger, intrabar=intrabar, liquidation=liquidation, detail=detail,
                     stake=float(stake), datadir=datadir,
                     history=history, source=source)


def load_spec(path: "str | Path | None" = None, overrides: Mapping[str, Any] | None = None) -> SweepSpec:
    """The spec in ``path`` (TOML), with ``overrides`` (the command line's flags) on top."""
    mapping = read_toml(path) if path is not None else {}
    if overrides:
        merged = {**mapping, **overrides}
        if isinstance(mapping.get("windows"), Mapping) and isinstance(overrides.get("windows"), Mapping):
            base = {k: v for k, v in mapping["windows"].items() if k != "list"}
            merged["windows"] = {**base, **overrides["windows"]}     # flag by flag over the file's
        mapping = merged
    source = str(path) if path is not None else "flags"
    if path is not None and overrides:
        source = f"{path} (with flags)"
    return spec_from_mapping(mapping, source)


__all__ = ["SweepSpec", "run_id", "load_spec", "spec_from_mapping", "read_toml", "expand_values", "windows"]
