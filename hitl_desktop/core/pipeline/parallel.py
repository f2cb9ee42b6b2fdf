"""Parallel execution: per-batch work units over joblib, and cancellable single units in a worker process.

Backend (project meta, set with `hitl pipeline DIR set-setting` or the window's settings):

* ``settings.joblib_backend``: ``loky`` (default; local processes), ``threading``, ``sequential`` or ``dask``.
* ``settings.joblib_n_jobs``: workers (default: all cores).
* ``settings.dask_address``: the `distributed` scheduler address (``tcp://host:8786``) when the backend is dask.
  Dask workers must see the project folder at the same path (they read batches and write cache files there).

Inside every worker BLAS/OpenMP pools are capped with threadpoolctl to cores // workers (at least 1), so that
workers do not oversubscribe the cores.
"""
from __future__ import annotations

import os
import threading
import time
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

from .errors import PipelineError
from ..tasks import Cancelled

BACKENDS = ("loky", "threading", "sequential", "dask")
_dask_clients: dict[str, Any] = {}
_dask_lock = threading.Lock()


@dataclass
class ParallelConfig:
    backend: str = "loky"
    n_jobs: int = 1
    address: str | None = None

    @property
    def threads_per_worker(self) -> int:
        return max(1, (os.cpu_count() or 1) // max(1, self.n_jobs))


def config_from_meta(project: Any, n_jobs: int | None = None, backend: str | None = None) -> ParallelConfig:
    b = backend or project.meta("settings.joblib_backend", "loky") or "loky"
    if b not in BACKENDS:
        raise PipelineError(f"setting settings.joblib_backend is '{b}'; use one of {', '.join(BACKENDS)}")
    if n_jobs is None:
        raw = project.meta("settings.joblib_n_jobs")
        try:
            n_jobs = int(raw) if raw else (os.cpu_count() or 1)
        except ValueError:
            raise PipelineError(f"setting settings.joblib_n_jobs must be a whole number, got '{raw}'") from None
    if n_jobs < 1:
        n_jobs = max(1, (os.cpu_count() or 1) + 1 + n_jobs)  # joblib convention: -1 = all cores
    addr = project.meta("settings.dask_address") if b == "dask" else None
    if b == "dask" and not addr:
        raise PipelineError("the joblib backend is 'dask' but settings.dask_address is not set "
                            "(e.g. tcp://scheduler:8786)")
    return ParallelConfig(b, 1 if b == "sequential" else n_jobs, addr)


def _dask_client(address: str) -> Any:
    try:
        from distributed import Client
    except ImportError:
        raise PipelineError("the 'dask' backend needs the distributed package: pip install dask distributed") from None
    with _dask_lock:
        c = _dask_clients.get(address)
        if c is None or c.status not in ("running", "connecting"):
            try:
                c = Client(address, timeout=10, set_as_default=False)
            except Exception as exc:
                raise PipelineError(f"cannot reach the Dask scheduler at {address}: {exc}") from None
            _dask_clients[address] = c
        return c


_capped: dict[int, int] = {}


def _cap_threads(threads: int) -> None:
    """Cap BLAS/OpenMP pools in this worker process once (threadpoolctl scans the loaded libraries: not per task)."""
    if _capped.get(os.getpid()) != threads:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=threads)
        _capped[os.getpid()] = threads


def _run_chunk(fn: Callable[[Any], Any], chunk: list[Any], threads: int, stop_file: str | None = None) -> list[Any]:
    """Run a chunk of units in a worker; stop early (between units) once `stop_file` exists (a cancel)."""
    _cap_threads(threads)
    out = []
    for t in chunk:
        if stop_file is not None and os.path.exists(stop_file):
            break
        out.append(fn(t))
    return out


def chunked(items: list[Any], n_jobs: int, max_chunk: int = 64) -> list[list[Any]]:
    """Chunks of units (fewer round trips), at least ~6 per worker for balance. Workers check for a cancel
    between units, so the chunk size does not bound the cancel latency."""
    if not items:
        return []
    size = max(1, min(max_chunk, len(items) // max(1, 6 * n_jobs)))
    return [items[i:i + size] for i in range(0, len(items), size)]


def run_units(fn: Callable[[Any], Any], tasks: list[Any], cfg: ParallelConfig,
              cancel: threading.Event, stop_file: str | None = None) -> Iterator[Any]:
    """Yield fn(task) results (unordered) as they complete; stop when `cancel` is set.

    The caller creates `stop_file` when cancelling (see TaskState.on_cancel); workers see it between units and
    return early, so in-flight chunks end within one unit. Raises Cancelled.
    """
    if not tasks:
        return
    if cfg.n_jobs == 1 or cfg.backend == "sequential" or len(tasks) == 1:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=cfg.threads_per_worker):  # in this process: restored afterwards
            for t in tasks:
                if cancel.is_set():
                    raise Cancelled()
                yield fn(t)
        return
    from joblib import Parallel, delayed, parallel_config

    chunks = chunked(tasks, cfg.n_jobs)
    threads = cfg.threads_per_worker
    kwargs: dict[str, Any] = {}
    if cfg.backend == "dask":
        client = _dask_client(cfg.address or "")
        kwargs = {"scheduler_host": client.scheduler.address}
        backend = "dask"
        n_jobs = -1
    else:
        backend = cfg.backend
        n_jobs = cfg.n_jobs
    with parallel_config(backend=backend, n_jobs=n_jobs, **kwargs):
        par = Parallel(return_as="generator_unordered", batch_size=1, pre_dispatch="2*n_jobs")
        gen = par(delayed(_run_chunk)(fn, c, threads, stop_file) for c in chunks)
        try:
            for out in gen:
                yield from out
                if cancel.is_set():
                    raise Cancelled()
        finally:
            import warnings

            with warnings.catch_warnings():  # joblib notes the chunks abandoned by a cancel: expected
                warnings.simplefilter("ignore", UserWarning)
                gen.close()


# --- single cancellable unit in a process -----------------------------------------------------------------------

_proc_lock = threading.Lock()
_proc_executor: Any = None


def _executor() -> Any:
    global _proc_executor
    from joblib.externals.loky.process_executor import ProcessPoolExecutor

    with _proc_lock:
        if _proc_executor is None:
            _proc_executor = ProcessPoolExecutor(max_workers=1, initializer=_keep_worker)
        return _proc_executor


def _keep_worker() -> None:
    """In the fit worker: turn off loky's "memory leak" restart, which a large training matrix triggers every call
    (a restart re-imports scikit-learn, seconds per call). The worker lives until cancel or exit."""
    from joblib.externals.loky import process_executor

    process_executor._USE_PSUTIL = False


def _kill_executor() -> None:
    global _proc_executor
    with _proc_lock:
        ex, _proc_executor = _proc_executor, None
    if ex is not None:
        ex.shutdown(wait=False, kill_workers=True)


def call_in_process(fn: Callable[..., Any], args: Iterable[Any], kwargs: dict[str, Any],
                    cancel: threading.Event, poll: float = 0.05, started: Callable[[], None] | None = None) -> Any:
    """fn(*args, **kwargs) in a worker process; on cancel the worker is killed and Cancelled raised. `started` is
    called once the call has been handed over."""
    if os.environ.get("HITL_PIPELINE_INPROCESS"):  # debugging aid: run in this process
        if started is not None:
            started()
        return fn(*args, **kwargs)
    if cancel.is_set():
        raise Cancelled()
    try:
        fut = _executor().submit(fn, *args, **kwargs)
    except Exception:
        _kill_executor()  # a broken executor (worker died): start a fresh one once
        fut = _executor().submit(fn, *args, **kwargs)
    if started is not None:
        started()
    while True:
        try:
            return fut.result(timeout=poll)
        except FutureTimeout:
            if cancel.is_set():
                fut.cancel()
                _kill_executor()
                raise Cancelled() from None


def call_in_thread(fn: Callable[..., Any], args: Iterable[Any], kwargs: dict[str, Any],
                   cancel: threading.Event, poll: float = 0.05, started: Callable[[], None] | None = None) -> Any:
    """fn(*args, **kwargs) in a thread of this process: for a short unit, whose data is then not copied to a
    worker. A cancel returns at once (Cancelled); a thread cannot be killed, so the abandoned call runs to its end in
    the background and its result is dropped. Use `call_in_process` for anything that may run long."""
    if cancel.is_set():
        raise Cancelled()
    from .. import threads

    running = threading.Event()

    def unit() -> Any:
        running.set()
        return fn(*args, **kwargs)

    task = threads.start(unit, name="hitl-unit", lane="unit")
    if started is not None:
        running.wait(1.0)  # the unit is under way before anything `started` begins competes for the interpreter
        started()
    while not task.join(poll):
        if cancel.is_set():
            raise Cancelled()
    return task.result()


def shutdown() -> None:
    """Stop worker processes (tests, application exit)."""
    _kill_executor()
    with _dask_lock:
        for c in _dask_clients.values():
            try:
                c.close()
            except Exception:
                pass
        _dask_clients.clear()


def elapsed(t0: float) -> float:
    return time.perf_counter() - t0
