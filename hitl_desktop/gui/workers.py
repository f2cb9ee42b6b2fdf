"""Background work for the window: plain functions run on a QThreadPool, reporting through Qt signals.

* A task is a plain callable ``fn(ctx)``; ``ctx`` is a :class:`hitl_desktop.core.tasks.TaskState` whose sink emits
  the task's Qt ``progress`` signal. ``ctx.report(fraction, message)``, ``ctx.cancelled()``, ``ctx.check()``,
  ``ctx.cancel_event`` and ``ctx.progress_callback()`` are all it sees of the window.
* Progress is throttled by the TaskState (the core's one throttle), so a stage reporting per row never floods the
  event loop.
* Running tasks are kept referenced by the :class:`TaskManager` until their end signal has been delivered.
* The window's own database writes (edits, decisions, flag resolutions) go through one single-thread pool, the
  *writer*: one write at a time, in order, and the event loop never waits for SQLite's lock. CPU-heavy work
  (imports, checks, pipeline runs) runs on the general pool so it never queues behind the writer.
* Creating the task manager tunes the garbage collector (`keep_gc_pauses_short`): with the default thresholds,
  full collections freeze the window for 100-235 ms at a time while checks run.
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
from ..core.tasks import Cancelled, TaskState

__all__ = ["Cancelled", "Task", "TaskManager", "TaskSignals", "TaskState", "error_text", "keep_gc_pauses_short"]


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

    def __init__(self, name: str, fn: Callable[[TaskState], Any], *, cancellable: bool = True,
                 writer: bool = False) -> None:
        super().__init__()
        self.setAutoDelete(False)
        self.id = next(self._ids)
        self.name = name
        self.fn = fn
        self.cancellable = cancellable
        self.writer = writer
        self.signals = TaskSignals()
        #: what `fn` receives: progress goes out as `signals.progress`, throttled by the TaskState
        self.ctx = TaskState(self.signals.progress.emit)
        self.started_at = 0.0
        self.done = threading.Event()
        self.outcome: str | None = None  # finished | failed | cancelled
        self.result: Any = None
        self.error: str | None = None

    def cancel(self) -> None:
        if self.cancellable:
            self.ctx.cancel()

    @property
    def cancel_requested(self) -> bool:
        return self.ctx.cancelled()

    def run(self) -> None:  # worker thread
        self.started_at = time.monotonic()
        try:
            if self.ctx.cancelled():
                raise Cancelled()
            result = self.fn(self.ctx)
            if self.ctx.cancelled():  # the function noticed and returned early
                raise Cancelled()
        except Cancelled:
            self.outcome = "cancelled"
            self.signals.cancelled.emit()
        except BaseException as exc:  # noqa: BLE001 - reported to the user as one line
            if self.ctx.cancelled() and isinstance(exc, HitlError):  # the core's own "cancelled" refusal
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
    the stalls matched the collections one for one). Frozen objects are not walked, and a full collection comes
    after 100 younger collections instead of the default 10; the pauses left during that run were 40-65 ms. Garbage
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

    def submit(self, name: str, fn: Callable[[TaskState], Any], *, writer: bool = False,
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
