"""Run a sweep: skip the run ids already complete under ``out``, run the rest on an engine, show
progress. (The report is :func:`btperp.report.write_sweep_report`, a layer above this one.)"""

from __future__ import annotations

import hashlib
import json
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .engine import execute
from .spec import SweepSpec, run_id
from .task import completed, is_url, put_bytes, read_results, result_row, run_task, write_result

#: Above this many runs to do, ``engine="auto"`` picks Dask.
AUTO_DASK_RUNS = 500
SPEC_FILE = "sweep.json"


@dataclass
class SweepOutcome:
    """What a sweep did: counts and the results table (every run of the spec under ``out``)."""

    out: str
    runs: int
    done: int = 0
    failed: int = 0
    skipped: int = 0
    table: Any = None


def choose_engine(engine: str, todo: int, scheduler: str | None) -> str:
    if engine == "auto":
        return "dask" if scheduler or todo > AUTO_DASK_RUNS else "local"
    return engine


def sweep(spec: SweepSpec, out: str, *, engine: str = "auto", workers: int | None = None,
          scheduler: str | None = None, progress: bool = True, client=None,
          on_result: Callable[[str, dict], None] | None = None) -> SweepOutcome:
    """Every run of ``spec`` whose id has no ``ok`` result under ``out`` (runs that failed are run
    again); each result is written by the task that ran it. ``on_result(run_id, row)`` is called in
    this process as each finishes."""
    out = str(out) if is_url(out) else str(Path(out).resolve())      # workers may have another cwd
    configs = spec.configs()
    ids = [run_id(c) for c in configs]
    put_bytes(out, SPEC_FILE, json.dumps({"spec": spec.to_dict(), "run_ids": ids}, indent=1,
                                         default=str).encode())
    status = completed(out)
    todo = [i for i, r in enumerate(ids) if status.get(r) != "ok"]
    outcome = SweepOutcome(out, len(ids), skipped=len(ids) - len(todo))
    keep = "keep" if spec.history else "temp"
    tasks = [{"config": configs[i].to_dict(), "run_id": ids[i], "out": out, "history": keep,
              "results": True, "curve": False, "catch": True} for i in todo]
    salt = hashlib.sha256(out.encode()).hexdigest()[:8]
    keys = [f"btperp-run-{ids[i]}-{salt}" for i in todo]
    from tqdm import tqdm
    bar = tqdm(total=len(ids), initial=outcome.skipped, desc=f"sweep {spec.strategy}", unit="run",
               disable=not progress, file=sys.stderr, dynamic_ncols=True)
    bar.set_postfix(done=0, failed=0, skipped=outcome.skipped)
    raised: dict = {}
    try:
        chosen = choose_engine(engine, len(todo), scheduler)
        for k, result in execute(run_task, tasks, engine=chosen, workers=workers, scheduler=scheduler,
                                 keys=keys, client=client):
            i = todo[k]
            if isinstance(result, BaseException):     # the engine lost the task: recorded here,
                row = result_row(configs[i].to_dict(), None, f"{type(result).__name__}: {result}")
                if completed(out, ids[i]).get(ids[i]) != "ok":   # unless its worker wrote it first
                    write_result(out, ids[i], row)
                result = {"status": "error", "row": row, "warnings": []}
            raised.update(dict.fromkeys(result["warnings"]))
            if result["status"] == "ok":
                outcome.done += 1
            else:
                outcome.failed += 1
            if on_result is not None:
                on_result(ids[i], result["row"])
            bar.set_postfix(done=outcome.done, failed=outcome.failed, skipped=outcome.skipped,
                            refresh=False)
            bar.update()
    finally:
        bar.close()
    for category, message in sorted(raised, key=lambda w: w[1]):
        warnings.warn(message, category, stacklevel=2)
    table = read_results(out)
    if len(table):
        table = table[table["run_id"].isin(set(ids))].reset_index(drop=True)
    outcome.table = table
    return outcome


__all__ = ["sweep", "SweepOutcome", "choose_engine", "SPEC_FILE"]
