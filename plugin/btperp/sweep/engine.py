"""Where a sweep's tasks run: local processes or Dask's distributed scheduler. Not a scheduler.

:func:`execute` runs ``fn(task)`` for every task and yields ``(index, outcome)`` as each finishes
(``outcome`` the return value, or the exception that the engine reported for it).

- ``local``: a :class:`concurrent.futures.ProcessPoolExecutor` (forkserver on Linux), one process
  per core by default. Every worker watches the sweep's process and exits when it dies (Linux
  ``PR_SET_PDEATHSIG`` on its parent and a ``pidfd`` watch on the sweep's process), so ``kill -9``
  of the sweep leaves no worker behind.
- ``dask``: a :class:`distributed.LocalCluster` of one single-threaded worker process per core
  (the bar loop holds the GIL), or an existing cluster (``scheduler="tcp://host:8786"``). Tasks are
  submitted with ``retries`` (a task that raises outside the run, e.g. a storage error, is run
  again) and keys derived from the run id; a worker that dies has its tasks rescheduled by the
  scheduler (``distributed.scheduler.allowed-failures``, default 3, before ``KilledWorker``).
  LocalCluster's worker processes exit when the process that started them dies (distributed's
  parent-alive pipe; tested with ``kill -9``).
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable, Iterator, Sequence

ENGINES = ("local", "dask")


def default_workers() -> int:
    """One per core this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:                 # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


# --- local processes -----------------------------------------------------------------------------

def _exit_when_gone(pid: int) -> None:
    """Block until process ``pid`` ends, then end this one (a watchdog thread's body)."""
    import select
    import time
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        os._exit(1)
    except (AttributeError, OSError):      # no pidfd (old kernel, not Linux): poll
        while True:
            time.sleep(0.5)
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                os._exit(1)
            except PermissionError:        # pid reused by another user's process
                os._exit(1)
    select.select([fd], [], [])
    os._exit(1)


def guard_worker(sweep_pid: int) -> None:
    """Worker initializer: die with the parent (Linux), and with the sweep's process whoever the
    parent is (a forkserver's workers are the forkserver's children)."""
    import threading
    if sys.platform.startswith("linux"):
        import ctypes
        import signal
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)        # PR_SET_PDEATHSIG
    threading.Thread(target=_exit_when_gone, args=(sweep_pid,), daemon=True,
                     name="btperp-orphan-guard").start()


def local_pool(jobs: int):
    """A process pool whose workers cannot outlive this process."""
    import concurrent.futures
    import multiprocessing

    # forkserver: workers fork from a clean server process (never from a parent whose pyarrow or
    # backtrader threads might hold a lock), and the server imports btperp once for all of them
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["btperp.backtest", "btperp.bt", "btperp.sweep.task"])
    else:                                   # pragma: no cover - not POSIX
        context = multiprocessing.get_context("spawn")
    return concurrent.futures.ProcessPoolExecutor(max_workers=jobs, mp_context=context,
                                                  initializer=guard_worker, initargs=(os.getpid(),))


def _local(fn, tasks, workers) -> Iterator[tuple[int, Any]]:
    if workers == 1:
        for i, task in enumerate(tasks):
            yield i, fn(task)
        return
    import concurrent.futures

    from ..backtest import _main_not_reimported
    with local_pool(workers) as pool:
        with _main_not_reimported():           # workers start without re-running the caller's script
            futures = {pool.submit(fn, task): i for i, task in enumerate(tasks)}
        try:
            for done in concurrent.futures.as_completed(futures):
                exc = done.exception()
                yield futures[done], (exc if exc is not None else done.result())
        finally:
            for f in futures:
                f.cancel()


# --- Dask ------------------------------------------------------------------------------------------

def dask_client(workers: int | None = None, scheduler: str | None = None):
    """A :class:`distributed.Client` on ``scheduler``, or on a new LocalCluster of ``workers``
    single-threaded processes; returns ``(client, cluster or None)``."""
    import logging

    from distributed import Client, LocalCluster
    if scheduler:
        return Client(scheduler, timeout="30s"), None
    cluster = LocalCluster(n_workers=workers or default_workers(), threads_per_worker=1,
                           processes=True, dashboard_address=None, silence_logs=logging.ERROR)
    return Client(cluster), cluster


def _dask(fn, tasks, workers, scheduler, keys, retries, client=None) -> Iterator[tuple[int, Any]]:
    from distributed import as_completed
    own = client is None
    cluster = None
    if own:
        client, cluster = dask_client(workers, scheduler)
    try:
        keys = keys or [None] * len(tasks)
        futures = [client.submit(fn, task, key=key, retries=retries, pure=False)
                   for task, key in zip(tasks, keys)]
        index = {f.key: i for i, f in enumerate(futures)}
        for future in as_completed(futures):
            i = index[future.key]
            try:
                outcome = future.result()
            except Exception as exc:           # KilledWorker, a task that raised every retry
                outcome = exc
            future.release()
            yield i, outcome
    finally:
        if own:
            client.close()
            if cluster is not None:
                cluster.close()


def execute(fn: Callable[[Any], Any], tasks: Sequence[Any], *, engine: str = "local",
            workers: int | None = None, scheduler: str | None = None,
            keys: Sequence[str] | None = None, retries: int = 2, client=None) -> Iterator[tuple[int, Any]]:
    """``fn(task)`` for every task on ``engine``; yields ``(index, outcome)`` as each finishes
    (module docstring). ``fn`` must be a module-level function (it is pickled by reference)."""
    if engine not in ENGINES:
        from ..errors import InputError
        raise InputError(f"engine must be local or dask, got {engine!r}", field="engine")
    if not tasks:
        return iter(())
    if engine == "local":
        if scheduler:
            from ..errors import InputError
            raise InputError("--scheduler needs --engine dask", field="scheduler")
        return _local(fn, tasks, max(1, min(workers or default_workers(), len(tasks))))
    return _dask(fn, tasks, workers, scheduler, keys, retries, client)


__all__ = ["execute", "dask_client", "local_pool", "guard_worker", "default_workers", "ENGINES"]
