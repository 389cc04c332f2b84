"""``btperp sweep``: thousands of backtests (strategy parameters × leverages × margin modes × symbols
× timeframes × date windows) on local processes or a Dask cluster, each run's result written by
the worker that ran it into a hive-partitioned Parquet dataset (``results/run_id=<id>/``).

::

    from btperp.sweep import load_spec, sweep
    spec = load_spec("examples/sweep.toml")
    outcome = sweep(spec, "out/sweep", engine="dask")      # .table (pandas), .done, .failed, .skipped
"""

from .spec import SweepSpec, load_spec, run_id, spec_from_mapping
from .runner import SweepOutcome, sweep
from .task import read_results, run_task

__all__ = ["SweepSpec", "SweepOutcome", "load_spec", "spec_from_mapping", "run_id", "run_task",
           "read_results", "sweep"]
