"""Background work for the window: plain functions run on a QThreadPool, reporting through Qt signals.

* A task is a plain callable ``fn(ctx)``; ``ctx.report(fraction, message)`` and ``ctx.cancelled()`` are all it
  sees of the window (the core's stage/observer conventions map onto it without importing Qt).
* Progress is throttled in the worker (at most one signal per 50 ms or per 1% step; the last value always goes
  out), so a stage reporting per row never floods the event loop.
* Running tasks are kept referenced by the :class:`TaskManager` until their end signal has been delivered.
* The window's own database writes (edits, decisions, flag resolutions) go through one single-thread pool, the
  *writer*: one write at a time, in order, and the event loop never waits for SQLite's lock. CPU-heavy work
  (imports, checks, pipeline runs) runs on the general pool so it never queues behind the writer.
* Creating the task manager tunes the garbage collector (`keep_gc_pauses_short`): full collections used to
  freeze the window for 100-235 ms at a time while checks ran.
"""
from __future__ import annotations

import gc
import itertools
import sys
import threading
import time
import traceback
from typing import Any, Callable

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal

from ..core.errors import HitlError


class Cancelled(Exception):
    """Raised inside a task (by ``ctx.check()``) to stop at the next safe point."""


class TaskContext:
    """What a task function receives: report progress, ask whether it was cancelled."""

    MIN_INTERVAL = 0.05
    MIN_STEP = 0.01

    def __init__(self, task: "Task") -> None:
        self._task = task
        self._last_t = 0.0
        self._last_f = -1.0
        self._last_msg = ""
        self.reported = 0  # signals actually emitted (for tests and benchmarks)

    def report(self, fraction: float, message: str = "") -> None:
        f = max(0.0, min(1.0, float(fraction)))
        now = time.monotonic()
        if (f < 1.0 and message == self._last_msg and now - self._last_t < self.MIN_INTERVAL
                and abs(f - self._last_f) < self.MIN_STEP) or (f < 1.0 and now - self._last_t < self.MIN_INTERVAL):
            return
        self._last_t, self._last_f, self._last_msg = now, f, message
        self.reported += 1
        self._task.signals.progress.emit(f, message)

    def cancelled(self) -> bool:
        return self._task._cancel.is_set()

    @property
    def cancel_event(self) -> threading.Event:
        return self._task._cancel

    def check(self) -> None:
        """Raise :class:`Cancelled` when the user asked to stop."""
        if self._task._cancel.is_set():
            raise Cancelled()

    def progress_callback(self, check: bool = True) -> Callable[[float, str], None]:
        """A ``progress(fraction, message)`` callback for core functions; it also stops the work when cancelled."""
        def cb(fraction: float, message: str = "") -> None:
            if check:
                self.check()
            self.report(fraction, message)
        return cb


class TaskSignals(QObject):
    progress = Signal(float, str)
    finished = Signal(object)  # the function's return value
    failed = Signal(str)  # one line for a person
    cancelled = Signal()
    ended = Signal()  # after any of the three above


def error_text(exc: BaseException) -> str:
    """One line for a person: a HitlError as is; anything else names its type (details go to stderr)."""
    if isinstance(exc, HitlError):
        return str(exc)
    first = str(exc).splitlines()[0] if str(exc) else ""
    return f"internal error: {type(exc).__name__}: {first}".rstrip(": ")


class Task(QRunnable):
    _ids = itertools.count(1)

    def __init__(self, name: str, fn: Callable[[TaskContext], Any], *, cancellable: bool = True,
                 writer: bool = False) -> None:
        super().__init__()
        self.setAutoDelete(False)
        self.id = next(self._ids)
        self.name = name
        self.fn = fn
        self.cancellable = cancellable
        self.writer = writer
        self.signals = TaskSignals()
        self._cancel = threading.Event()
        self.ctx = TaskContext(self)
        self.started_at = 0.0
        self.done = threading.Event()
        self.outcome: str | None = None  # finished | failed | cancelled
        self.result: Any = None
        self.error: str | None = None

    def cancel(self) -> None:
        if self.cancellable:
            self._cancel.set()

    @property
    def cancel_requested(self) -> bool:
        return self._cancel.is_set()

    def run(self) -> None:  # worker thread
        self.started_at = time.monotonic()
        try:
            if self._cancel.is_set():
                raise Cancelled()
            result = self.fn(self.ctx)
            if self._cancel.is_set():  # the function noticed and returned early
                raise Cancelled()
        except Cancelled:
            self.outcome = "cancelled"
            self.signals.cancelled.emit()
        except BaseException as exc:  # noqa: BLE001 - reported to the user as one line
            if self._cancel.is_set() and isinstance(exc, HitlError):  # the core's own "cancelled" refusal
                self.outcome = "cancelled"
                self.signals.cancelled.emit()
                return
            if not isinstance(exc, HitlError):
                traceback.print_exc(file=sys.stderr)
            self.outcome, self.error = "failed", error_text(exc)
            self.signals.failed.emit(self.error)
        else:
            self.outcome, self.result = "finished", result
            self.signals.finished.emit(result)
        finally:
            self.done.set()
            self.signals.ended.emit()


_gc_tuned = False


def keep_gc_pauses_short() -> None:
    """Once per process: collect, then `gc.freeze()` what exists (modules, Qt wrappers, the libraries: objects that
    live as long as the window), and make full collections ten times rarer.

    A full (generation 2) collection holds the GIL while it walks every tracked object. While a background task
    creates many objects (the label check reading 2,000 cached batches), Python ran one every second, each
    100-235 ms long on a 1M-row project, and each froze the window for that long (measured with a 5 ms heartbeat;
    the stalls matched the collections one for one). Frozen objects are no longer walked, and a full collection
    now comes after 100 younger collections instead of 10; the pauses left during that run were 40-65 ms. Garbage
    in reference cycles is still collected, later."""
    global _gc_tuned
    if _gc_tuned:
        return
    _gc_tuned = True
    gc.collect()
    gc.freeze()
    young, middle, old = gc.get_threshold()
    gc.set_threshold(young, middle, max(old, 100))


class TaskManager(QObject):
    """Owns the pools and keeps every running task referenced until its end signal arrives. Creating one tunes the
    garbage collector for the window (`keep_gc_pauses_short`)."""

    taskStarted = Signal(object)
    taskEnded = Signal(object)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        keep_gc_pauses_short()
        self.pool = QThreadPool(self)
        self.pool.setMaxThreadCount(max(2, QThreadPool.globalInstance().maxThreadCount()))
        self.writer = QThreadPool(self)
        self.writer.setMaxThreadCount(1)
        self.writer.setExpiryTimeout(-1)  # keep the writer thread: no start-up cost per edit
        self._running: dict[int, Task] = {}

    def submit(self, name: str, fn: Callable[[TaskContext], Any], *, writer: bool = False,
               on_done: Callable[[Any], None] | None = None, on_error: Callable[[str], None] | None = None,
               on_cancel: Callable[[], None] | None = None, on_progress: Callable[[float, str], None] | None = None,
               cancellable: bool = True, visible: bool = True) -> Task:
        task = Task(name, fn, cancellable=cancellable, writer=writer)
        task.visible = visible
        if on_done:
            task.signals.finished.connect(on_done)
        if on_error:
            task.signals.failed.connect(on_error)
        if on_cancel:
            task.signals.cancelled.connect(on_cancel)
        if on_progress:
            task.signals.progress.connect(on_progress)
        task.signals.ended.connect(lambda t=task: self._ended(t))
        self._running[task.id] = task
        self.taskStarted.emit(task)
        (self.writer if writer else self.pool).start(task)
        return task

    def _ended(self, task: Task) -> None:
        self._running.pop(task.id, None)
        self.taskEnded.emit(task)

    def running(self, include_hidden: bool = False) -> list[Task]:
        return [t for t in self._running.values() if include_hidden or getattr(t, "visible", True)]

    def busy(self) -> bool:
        return bool(self._running)

    def cancel_all(self) -> None:
        for t in list(self._running.values()):
            t.cancel()

    def wait(self, timeout_ms: int = 30000) -> bool:
        ok = self.pool.waitForDone(timeout_ms)
        return self.writer.waitForDone(timeout_ms) and ok
