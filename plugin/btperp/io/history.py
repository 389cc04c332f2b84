"""Per-trade margin history on disk: two Parquet files per run, one schema each.

``history.parquet``
    one row per bar per open position (or per change, see :class:`btperp.bt.PerpHistory`);
``events.parquet``
    fills, funding payments, margin calls, liquidations, insurance-fund flows, margin changes and
    refused orders.

A single run writes ``DIR/history.parquet`` and ``DIR/events.parquet``; each run of a
``cerebro.optstrategy`` sweep writes ``DIR/history/run_id=<id>/history.parquet`` and
``DIR/events/run_id=<id>/events.parquet``, so ``DIR/history`` and ``DIR/events`` are hive-partitioned
datasets for pandas (``pd.read_parquet("DIR/history")``), ``pyarrow.dataset`` (``partitioning=
"hive"``) and DuckDB (``read_parquet('DIR/history/*/*.parquet', hive_partitioning = true)``). In a
sweep the ``run_id`` column comes from the partition (the files leave it out: readers infer the
partition's type differently, and a column of the same name would clash with it). Files are written
under a temporary name and renamed when complete, so a killed or failed run never leaves a file
that passes for complete. The run's configuration is in the file metadata (key ``btperp``).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from pathlib import Path
from typing import Any, Mapping

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from ..errors import InputError
from .atomic import atomic_path

HISTORY_FILE = "history.parquet"
EVENTS_FILE = "events.parquet"
METADATA_KEY = b"btperp"

_TIME = pa.timestamp("ms", tz="UTC")
_LABEL = pa.dictionary(pa.int32(), pa.string())


def _f(name: str, type_, doc: str, nullable: bool = False) -> pa.Field:
    return pa.field(name, type_, nullable=nullable, metadata={b"doc": doc.encode()})


#: One row per bar per open position. Amounts in the settlement currency (USDT; coin-margined: the
#: coin), sizes in base units (coin-margined: contracts), prices in the quote currency (USD).
HISTORY_SCHEMA = pa.schema([
    _f("time", _TIME, "bar open time, UTC"),
    _f("run_id", pa.string(), "the run that wrote the row (in a sweep: the hive partition key)"),
    _f("symbol", _LABEL, "unified symbol, BTC/USDT:USDT"),
    _f("trade_id", pa.int32(), "1, 2, ... per symbol: a new id each time a position opens from flat"),
    _f("side", _LABEL, "long or short"),
    _f("size", pa.float64(), "position size, base units (coin-margined: contracts), > 0"),
    _f("entry_price", pa.float64(), "average entry price"),
    _f("close", pa.float64(), "last-price close of the bar"),
    _f("mark_close", pa.float64(), "mark-price close of the bar (the valuation price)"),
    _f("extreme_checked", pa.float64(), "adverse extreme the liquidation check used: mark low (long) "
                                        "or high (short); last-price extremes with trigger='last'"),
    _f("notional", pa.float64(), "size x mark close (coin-margined: the position value in the coin, "
                                 "contracts x contract size / mark close)"),
    _f("tier", pa.int16(), "tier (1-based) of the position at the mark close"),
    _f("maintenance_rate", pa.float64(), "maintenance margin rate of that tier, fraction"),
    _f("maintenance_amount", pa.float64(), "maintenance amount (cum) of that tier"),
    _f("initial_margin", pa.float64(), "size x entry / leverage (+ the exchange's reserves)"),
    _f("maintenance_margin", pa.float64(), "maintenance margin at the mark close"),
    _f("position_margin", pa.float64(), "isolated margin of the position; null in cross margin", True),
    _f("equity", pa.float64(), "margin balance: isolated margin + unrealized PnL, or (cross) the "
                               "account's cross wallet + cross unrealized PnL"),
    _f("unrealized_pnl", pa.float64(), "at the mark close"),
    _f("margin_ratio", pa.float64(), "maintenance margin / equity (the account's in cross); 1 = liquidation"),
    _f("liquidation_price", pa.float64(), "mark price that liquidates; null if none does", True),
    _f("bankruptcy_price", pa.float64(), "mark price where the margin is exhausted; null if never", True),
    _f("leverage", pa.float64(), "leverage setting"),
    _f("margin_mode", _LABEL, "isolated or cross"),
    _f("funding_paid", pa.float64(), "funding the trade has paid so far (negative: received)"),
    _f("fees_paid", pa.float64(), "trading fees the trade has paid so far"),
    _f("adl_score", pa.float64(), "the exchange's auto-deleveraging ranking score at the mark close "
                                  "(Binance LeveragePnL, Bybit PnL% x effective leverage; higher is "
                                  "deleveraged sooner): an indicator, NaN where no formula is published"),
])

#: One row per event, in the order the account met them (inside a bar, the order of its path). Columns
#: an event kind does not use are null.
EVENTS_SCHEMA = pa.schema([
    _f("time", _TIME, "bar open time of the event, UTC"),
    _f("run_id", pa.string(), "the run that wrote the row (in a sweep: the hive partition key)"),
    _f("kind", _LABEL, "fill, funding, margin_call, liquidation, insurance_fund, margin_change or "
                       "rejection"),
    _f("symbol", _LABEL, "unified symbol"),
    _f("trade_id", pa.int32(), "trade the event belongs to", True),
    _f("side", _LABEL, "long or short (position side)", True),
    _f("size", pa.float64(), "fill: signed size filled; funding: signed position size; liquidation: "
                             "size closed; rejection: signed size asked", True),
    _f("price", pa.float64(), "fill or liquidation fill price; margin call: the mark that crossed", True),
    _f("amount", pa.float64(), "funding: payment (negative: received); liquidation: the trader's loss; "
                               "insurance_fund: what the fund gained (negative: covered); "
                               "margin_change: margin added (negative: removed)", True),
    _f("fee", pa.float64(), "fill: trading fee; liquidation: liquidation fee", True),
    _f("pnl", pa.float64(), "fill or liquidation: realized PnL", True),
    _f("trigger_price", pa.float64(), "liquidation: price that triggered it", True),
    _f("bankruptcy_price", pa.float64(), "liquidation: bankruptcy price", True),
    _f("rate", pa.float64(), "funding: sum of the rates paid; NaN when a coarse bar's events are split", True),
    _f("level", pa.float64(), "margin call: the level crossed", True),
    _f("margin_ratio", pa.float64(), "margin call: the ratio reached; partial liquidation: the "
                                     "remainder's margin ratio at the trigger price after the step", True),
    _f("detail", pa.string(), "fill: maker or taker; liquidation: trigger and fill policy, 'gap' at the "
                              "open; rejection: the reason", True),
    _f("entry_price", pa.float64(), "liquidation: entry price of the position", True),
    _f("leverage", pa.float64(), "liquidation: leverage setting", True),
    _f("liquidation_price", pa.float64(), "liquidation: liquidation price in force when it triggered", True),
    _f("tier", pa.int16(), "liquidation: tier (1-based) at the trigger price", True),
    _f("maintenance_rate", pa.float64(), "liquidation: maintenance margin rate of that tier", True),
    _f("maintenance_margin", pa.float64(), "liquidation: maintenance margin at the trigger price "
                                           "(the account's in cross margin)", True),
    _f("equity", pa.float64(), "liquidation: margin balance at the trigger price (the account's in "
                               "cross margin)", True),
    _f("mark_price", pa.float64(), "liquidation: the bar's adverse mark extreme (low long, high short)",
       True),
    _f("last_price", pa.float64(), "liquidation: the bar's adverse last-price extreme", True),
    _f("partial", pa.bool_(), "liquidation: true for a partial liquidation step (the position reduced, "
                              "not closed)", True),
    _f("step", pa.int16(), "liquidation: 1-based number of the event within the trade (steps, then "
                           "the close)", True),
    _f("remaining", pa.float64(), "liquidation: size left open after it (0: closed)", True),
])

#: Events columns added after the first release: files without them read as null.
_LATER_EVENTS = ("partial", "step", "remaining")

FLOAT_HISTORY = [f.name for f in HISTORY_SCHEMA if pa.types.is_floating(f.type)]
FLOAT_EVENTS = [f.name for f in EVENTS_SCHEMA if pa.types.is_floating(f.type)]


def run_paths(root: "str | os.PathLike[str]", run_id: str | None) -> tuple[Path, Path]:
    """Where a run writes its history and events: in ``root``, or (``run_id`` given: a run of a
    sweep) in the hive partitions ``root/history/run_id=<id>/`` and ``root/events/run_id=<id>/``."""
    root = Path(root)
    if run_id is None:
        return root / HISTORY_FILE, root / EVENTS_FILE
    return (root / "history" / f"run_id={run_id}" / HISTORY_FILE,
            root / "events" / f"run_id={run_id}" / EVENTS_FILE)


def metadata_blob(metadata: Mapping[str, Any]) -> dict[bytes, bytes]:
    return {METADATA_KEY: json.dumps(metadata, sort_keys=True, default=str).encode()}


def file_schema(schema: pa.Schema, partitioned: bool) -> pa.Schema:
    """The schema a file is written with: without ``run_id`` inside a hive partition."""
    return schema.remove(schema.get_field_index("run_id")) if partitioned else schema


class HistorySink:
    """Record batches into a Parquet file under a temporary name; :meth:`commit` renames it.

    Floats use the byte-stream-split encoding and zstd (about half the size of plain zstd on
    prices); labels are dictionary-encoded. :meth:`discard` removes the temporary file.
    """

    def __init__(self, path: "str | os.PathLike[str]", schema: pa.Schema, floats: list[str]):
        self.path = Path(path)
        self.schema = schema
        self._atomic = atomic_path(self.path)
        try:
            self.tmp = self._atomic.__enter__()
        except OSError as exc:
            raise InputError(f"cannot write the history to {self.path.parent}: {exc.strerror}",
                             field="history") from None
        labels = [f.name for f in schema if pa.types.is_dictionary(f.type)]
        self._writer = pq.ParquetWriter(self.tmp, schema, compression="zstd", compression_level=1,
                                        use_dictionary=labels, use_byte_stream_split=floats,
                                        write_statistics=["time", "symbol", "trade_id"])
        self.rows = 0

    def write(self, columns: Mapping[str, Any]) -> None:
        table = pa.Table.from_pydict({f.name: columns[f.name] for f in self.schema}, schema=self.schema)
        if table.num_rows:
            try:
                self._writer.write_table(table)
            except OSError as exc:
                self._fail(exc)
            self.rows += table.num_rows

    def commit(self, metadata: Mapping[str, Any]) -> Path:
        try:
            self._writer.add_key_value_metadata(metadata_blob(metadata))
            self._writer.close()
        except OSError as exc:
            self._fail(exc)
        self._atomic.__exit__(None, None, None)
        return self.path

    def _fail(self, exc: OSError):
        """A write failed: remove the temporary file, and raise (a full disk as DiskFullError,
        naming the file and what is left)."""
        with contextlib.suppress(Exception):
            self._writer.close()
        self._atomic.__exit__(type(exc), exc, exc.__traceback__)   # raises DiskFullError if full
        raise exc

    def discard(self) -> None:
        with contextlib.suppress(Exception):
            self._writer.close()
        with contextlib.suppress(RuntimeError):
            self._atomic.__exit__(RuntimeError, RuntimeError("history discarded"), None)


def write_events(path: "str | os.PathLike[str]", columns: Mapping[str, Any],
                 metadata: Mapping[str, Any], *, partitioned: bool = False) -> Path:
    """The events table, written atomically."""
    sink = HistorySink(path, file_schema(EVENTS_SCHEMA, partitioned), FLOAT_EVENTS)
    try:
        sink.write(columns)
        return sink.commit(metadata)
    except BaseException:
        sink.discard()
        raise


# --- reading -----------------------------------------------------------------------------------

def dataset(root: "str | os.PathLike[str]", which: str = "history") -> ds.Dataset:
    """A run's (``root/history.parquet``) or a sweep's (``root/history/run_id=*/``) table as a
    ``pyarrow.dataset``; ``which``: history or events."""
    name = {"history": HISTORY_FILE, "events": EVENTS_FILE}[which]
    root = Path(root)
    if root.is_file():                  # one file given: the history, or its events beside it
        single = root if root.name == name or which == "history" else root.parent / name
    else:
        single = root / name
    try:
        if single.is_file():
            return ds.dataset(str(single), format="parquet")
        if (root / which).is_dir() and any((root / which).glob(f"run_id=*/{name}")):
            return ds.dataset(str(root / which), format="parquet", partitioning="hive")
    except (pa.ArrowInvalid, OSError) as exc:
        where = single if single.is_file() else root / which
        raise InputError(f"{where}: not a readable Parquet {which} file (truncated, or not Parquet): "
                         f"{_first_line(exc)}") from None
    raise InputError(f"{root}: no {name} (neither {name} nor {which}/run_id=*/{name})", field="path")


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


def read(root: "str | os.PathLike[str]", which: str = "history") -> pd.DataFrame:
    """A run's or a sweep's ``which`` table as one pandas frame, in the documented column order."""
    data = dataset(root, which)
    schema = HISTORY_SCHEMA if which == "history" else EVENTS_SCHEMA
    order = [f.name for f in schema]
    later = [c for c in (_LATER_EVENTS if which == "events" else ()) if c not in data.schema.names]
    missing = [c for c in order if c not in data.schema.names and c not in later]
    if missing:
        raise InputError(f"{root}: not a btperp {which} file: it lacks the column(s) "
                         f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''} "
                         f"(found {', '.join(data.schema.names[:8]) or 'none'})")
    try:
        table = data.to_table(columns=[c for c in order if c not in later])
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"{root}: the {which} files cannot be read (truncated or corrupt): "
                         f"{_first_line(exc)}") from None
    for c in later:                     # written by an older btperp: no partial liquidation then
        field = schema.field(c)
        table = table.add_column(order.index(c), field, pa.nulls(table.num_rows, field.type))
    return table.to_pandas()


def read_metadata(path: "str | os.PathLike[str]") -> dict:
    """The ``btperp`` metadata of one history or events file."""
    meta = pq.ParquetFile(path).metadata.metadata or {}
    if METADATA_KEY not in meta:
        raise InputError(f"{path}: not a btperp history file (no btperp metadata)", field="path")
    return json.loads(meta[METADATA_KEY])


def _run_order(run_id: str):
    """Runs in natural order: ``1x, 2x, 10x`` (numbers by value), then the other ids."""
    import re
    match = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)(.*)", run_id)
    return (0, float(match.group(1)), match.group(2)) if match else (1, 0.0, run_id)


def summarize(root: "str | os.PathLike[str]") -> list[dict]:
    """Per run: rows, range, trades (closed, as backtrader's trade count, and still open at the
    end), liquidation events (``partial_liquidations`` of them partial steps), worst margin ratio,
    funding and fees."""
    history = read(root, "history")
    events = read(root, "events")
    runs = sorted(set(map(str, history["run_id"].unique())) | set(map(str, events["run_id"].unique())),
                  key=_run_order)
    out = []
    for run in runs:
        h = history[history["run_id"] == run]
        e = events[events["run_id"] == run]
        kinds = e["kind"].astype(str)
        trades = set(zip(h["symbol"].astype(str), h["trade_id"]))
        fills = e[kinds == "fill"]
        trades |= set(zip(fills["symbol"].astype(str), fills["trade_id"].astype("Int64")))
        # a trade is closed when its fills net to zero or a liquidation closed it (not a step)
        closes = (kinds == "liquidation") & ~e["partial"].fillna(False).astype(bool)
        liquidated = set(zip(e.loc[closes, "symbol"].astype(str),
                             e.loc[closes, "trade_id"].astype("Int64")))
        net = fills.groupby([fills["symbol"].astype(str), fills["trade_id"].astype("Int64")])["size"]
        flat = {key for key, sizes in net if abs(sizes.sum()) <= 1e-9 * max(sizes.abs().sum(), 1e-300)}
        open_trades = len({t for t in trades if t not in flat and t not in liquidated})
        worst = h.loc[h["margin_ratio"].idxmax()] if len(h) else None
        out.append({
            "run_id": run,
            "rows": int(len(h)),
            "first": str(h["time"].min()) if len(h) else None,
            "last": str(h["time"].max()) if len(h) else None,
            "symbols": sorted(set(h["symbol"].astype(str)) | set(e["symbol"].astype(str))),
            "trades": len(trades) - open_trades,
            "open_trades": open_trades,
            "liquidations": int((kinds == "liquidation").sum()),
            "partial_liquidations": int((kinds == "liquidation").sum() - closes.sum()),
            "worst_margin_ratio": None if worst is None else float(worst["margin_ratio"]),
            "worst_at": None if worst is None else str(worst["time"]),
            "worst_symbol": None if worst is None else str(worst["symbol"]),
            "funding_paid": math.fsum(e.loc[kinds == "funding", "amount"]),
            "fees_paid": math.fsum(e["fee"].dropna()),
            "insurance_fund": math.fsum(e.loc[kinds == "insurance_fund", "amount"]),
        })
    return out


__all__ = ["HISTORY_SCHEMA", "EVENTS_SCHEMA", "HistorySink", "write_events", "dataset", "read",
           "read_metadata", "summarize", "run_paths", "HISTORY_FILE", "EVENTS_FILE"]
