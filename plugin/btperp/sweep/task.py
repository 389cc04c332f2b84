"""One run of a sweep, as a plain module-level function of its inputs (:func:`run_task`), and the
``results/`` dataset it writes: one Parquet file per run in the hive partition
``results/run_id=<id>/result.parquet``, written under a temporary name and renamed (locally), or
put as one object (fsspec URLs: ``s3://``, ``gs://``, ... ; an object store never shows half an
object). A retried run overwrites its own partition, so it appears once.
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import socket
import tempfile
import time
import traceback
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

RESULTS = "results"
RESULT_FILE = "result.parquet"

#: Settings columns of a results row (the run's :class:`RunConfig`, params as JSON and one
#: ``param_<name>`` column each).
SETTINGS = ("strategy", "params", "symbol", "exchange", "timeframe", "start", "end", "leverage",
            "margin_mode", "cash", "trigger", "intrabar", "liquidation", "detail", "stake")
#: Columns of the summary that are settings already (the summary's own spelling is dropped).
_SUMMARY_SETTINGS = {"strategy", "symbol", "leverage", "margin_mode"}
_STRING_FIGURES = {"first_bar", "last_bar", "first_liquidation", "refusal_reason", "history_dir"}
_INT_FIGURES = {"bars", "trades", "liquidations", "refused_orders"}     # the rest: float64


# --- where things go -------------------------------------------------------------------------------

def is_url(out: "str | os.PathLike[str]") -> bool:
    """Whether ``out`` is an fsspec URL (``s3://bucket/x``) rather than a local path."""
    text = str(out)
    return "://" in text and not text.startswith("file://")


def filesystem(out: "str | os.PathLike[str]"):
    """``(fsspec filesystem, path inside it)`` of ``out``."""
    import fsspec
    return fsspec.core.url_to_fs(str(out))


def put_bytes(out: "str | os.PathLike[str]", relative: str, data: bytes) -> str:
    """Write ``data`` to ``out/relative`` so that no reader sees half of it; returns the path."""
    if not is_url(out):
        from ..io.atomic import atomic_path
        target = Path(str(out).removeprefix("file://")) / relative
        with atomic_path(target) as tmp:
            tmp.write_bytes(data)
        return str(target)
    fs, root = filesystem(out)
    target = f"{root.rstrip('/')}/{relative}"
    tmp = f"{target}.{uuid.uuid4().hex}.tmp"
    fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
    fs.pipe_file(tmp, data)
    fs.mv(tmp, target)
    return f"{str(out).rstrip('/')}/{relative}"


# --- the results row ---------------------------------------------------------------------------

def _arrow_type(value: Any):
    import pyarrow as pa
    if isinstance(value, bool):
        return pa.bool_()
    if isinstance(value, int):
        return pa.int64()
    if isinstance(value, float):
        return pa.float64()
    return pa.string()


def results_schema(params: Mapping[str, Any]):
    """The schema of every results file of a sweep whose runs have ``params`` (their values give
    the ``param_<name>`` column types)."""
    import pyarrow as pa

    from ..backtest import SUMMARY_COLUMNS
    fields = [pa.field("strategy", pa.string()), pa.field("params", pa.string())]
    fields += [pa.field(f"param_{k}", _arrow_type(v)) for k, v in params.items()]
    fields += [pa.field("symbol", pa.string()), pa.field("exchange", pa.string()),
               pa.field("timeframe", pa.string()), pa.field("start", pa.string()),
               pa.field("end", pa.string()), pa.field("leverage", pa.float64()),
               pa.field("margin_mode", pa.string()), pa.field("cash", pa.float64()),
               pa.field("trigger", pa.string()), pa.field("intrabar", pa.string()),
               pa.field("liquidation", pa.string()), pa.field("detail", pa.string()),
               pa.field("stake", pa.float64()),
               pa.field("status", pa.string()), pa.field("error", pa.string()),
               pa.field("traceback", pa.string())]
    for name in SUMMARY_COLUMNS:
        if name in _SUMMARY_SETTINGS:
            continue
        kind = pa.string() if name in _STRING_FIGURES else pa.int64() if name in _INT_FIGURES else pa.float64()
        fields.append(pa.field(name, kind))
    fields += [pa.field("seconds", pa.float64()), pa.field("worker", pa.string()),
               pa.field("finished", pa.timestamp("ms", tz="UTC"))]
    return pa.schema(fields)


def result_row(config: Mapping[str, Any], summary: Mapping[str, Any] | None, error: str | None = None,
               trace: str | None = None, seconds: float = math.nan) -> dict:
    """One results row: the run's settings, ``status`` (ok or error), its figures or its error."""
    from ..backtest import SUMMARY_COLUMNS
    params = dict(config.get("params") or {})
    row: dict[str, Any] = {k: config.get(k) for k in SETTINGS}
    row["params"] = json.dumps(params, sort_keys=True, default=str)
    row.update({f"param_{k}": v for k, v in params.items()})
    row["status"] = "ok" if error is None else "error"
    row["error"], row["traceback"] = error, trace
    for name in SUMMARY_COLUMNS:
        if name not in _SUMMARY_SETTINGS:
            row[name] = None if summary is None else summary.get(name)
    row["seconds"] = seconds
    row["worker"] = f"{socket.gethostname()}:{os.getpid()}"
    row["finished"] = datetime.now(timezone.utc)
    return row


def write_result(out: "str | os.PathLike[str]", run_id: str, row: Mapping[str, Any]) -> str:
    """``out/results/run_id=<id>/result.parquet`` (one row), atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    params = json.loads(row["params"])
    schema = results_schema(params)
    table = pa.Table.from_pylist([{f.name: row.get(f.name) for f in schema}], schema=schema)
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    return put_bytes(out, f"{RESULTS}/run_id={run_id}/{RESULT_FILE}", buffer.getvalue())


def results_dataset(out: "str | os.PathLike[str]", run_id: str = "*"):
    """The ``results/`` dataset under ``out`` (pyarrow, hive partitioning; one run's with
    ``run_id``), or None if empty."""
    import pyarrow.dataset as ds
    fs, root = filesystem(out)
    base = f"{root.rstrip('/')}/{RESULTS}"
    if not fs.isdir(base):
        return None
    files = [p for p in fs.glob(f"{base}/run_id={run_id}/{RESULT_FILE}")]
    if not files:
        return None
    return ds.dataset(files, filesystem=fs, format="parquet",
                      partitioning=ds.partitioning(flavor="hive"), partition_base_dir=base)


def completed(out: "str | os.PathLike[str]", run_id: str = "*") -> dict[str, str]:
    """``run_id → status`` of the runs with a result under ``out`` (or of ``run_id`` alone)."""
    data = results_dataset(out, run_id)
    if data is None:
        return {}
    table = data.to_table(columns=["run_id", "status"])
    return dict(zip(map(str, table["run_id"].to_pylist()), table["status"].to_pylist()))


def read_results(out: "str | os.PathLike[str]"):
    """Every run's row as a pandas frame (``run_id`` first), or an empty frame."""
    import pandas as pd
    data = results_dataset(out)
    if data is None:
        return pd.DataFrame()
    frame = data.to_table().to_pandas()
    frame["run_id"] = frame["run_id"].astype(str)
    return frame[["run_id", *[c for c in frame.columns if c != "run_id"]]]


# --- the task ----------------------------------------------------------------------------------

def _upload(local: Path, out: str, run_id: str) -> str:
    """A run's history and events from a local folder to ``out`` (URL), file by file."""
    for which in ("history", "events"):
        for path in (local / which).glob(f"run_id={run_id}/*.parquet"):
            put_bytes(out, f"{which}/run_id={run_id}/{path.name}", path.read_bytes())
    return f"{out.rstrip('/')}/history/run_id={run_id}"


def run_task(task: Mapping[str, Any]) -> dict:
    """Run one backtest and write its result row; returns the row, the btperp warnings it raised and
    (``curve``) the whole :class:`RunResult`.

    ``task``: ``config`` (a RunConfig as a dict), ``run_id``, ``out`` (path or URL, or None),
    ``history`` (``keep``: the margin history and events go to ``out``; ``temp``: recorded in a
    temporary folder for the worst margin ratio, then removed; ``none``), ``results`` (write
    ``out/results/run_id=<id>/``), ``curve`` (return the equity curve), ``catch`` (a run that raises
    becomes an error row instead of an exception).
    """
    import warnings

    from ..backtest import RunConfig, run
    from ..errors import BtperpWarning

    config = RunConfig(**task["config"])
    run_id, out, keep = task["run_id"], task.get("out"), task.get("history", "none")
    started = time.perf_counter()
    result = error = trace = None
    scratch = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", BtperpWarning)
        try:
            if keep == "keep" and out is not None and not is_url(out):
                target = out
            elif keep in ("keep", "temp"):
                scratch = tempfile.mkdtemp(prefix="btperp-run-")
                target = scratch
            else:
                target = None
            result = run(config, target, run_id=run_id if target is not None else None)
            if scratch is not None:
                history_dir = _upload(Path(scratch), str(out), run_id) if keep == "keep" else None
                result.summary["history_dir"] = history_dir
                result.history = None
        except Exception as exc:
            if not task.get("catch", True):
                raise
            error = f"{type(exc).__name__}: {exc}"
            trace = "".join(traceback.format_exception(exc)[-8:])
        finally:
            if scratch is not None:
                shutil.rmtree(scratch, ignore_errors=True)
    seconds = time.perf_counter() - started
    row = result_row(task["config"], None if result is None else result.summary, error, trace, seconds)
    if task.get("results") and out is not None:
        write_result(out, run_id, row)
    raised = list(dict.fromkeys((w.category, str(w.message)) for w in caught
                                if issubclass(w.category, BtperpWarning)))
    return {"run_id": run_id, "status": row["status"], "row": row, "warnings": raised,
            "result": result if task.get("curve") else None}


__all__ = ["run_task", "write_result", "result_row", "results_schema", "read_results", "completed",
           "results_dataset", "put_bytes", "is_url", "filesystem", "RESULTS", "RESULT_FILE"]
