"""The one task state of background work: a progress sink and a cancel flag in one object, throttled in one place."""
from __future__ import annotations

import threading
import time
from typing import Callable

ProgressSink = Callable[[float, str], None]


class Cancelled(Exception):
    """Raised inside work (by `TaskState.check()`) to stop at the next safe point; nothing is half-written."""


class TaskState:
    """What a piece of background work (a stage, training, an import, an export, a window task) reports to and asks.

    `report(fraction, message)` forwards to the sink, throttled: at most one report per `min_interval` seconds,
    and always the one that says the work is done (fraction 1.0).
    `cancel()` may be called from any thread; the work sees it through `cancelled()` / `check()` and callbacks
    registered with `on_cancel` run at once (e.g. to stop worker processes). `span(start, end)` gives a view that
    maps its own 0..1 onto a sub-range of this one, sharing the cancel flag.
    """

    def __init__(self, sink: ProgressSink | None = None, *, min_interval: float = 0.05,
                 cancel_event: threading.Event | None = None) -> None:
        self._sink = sink
        self.min_interval = min_interval
        self._event = cancel_event if cancel_event is not None else threading.Event()
        self._callbacks: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        self._last_t = float("-inf")  # the first report always passes
        self.fraction = 0.0
        self.message = ""
        #: reports actually passed on to the sink (for tests and benchmarks)
        self.reported = 0

    # progress -------------------------------------------------------------------------------------------------
    def report(self, fraction: float, message: str = "") -> None:
        f = max(0.0, min(1.0, float(fraction)))
        self.fraction, self.message = f, message
        if self._sink is None:
            return
        now = time.monotonic()
        with self._lock:
            # at most one report per `min_interval` (whatever the message says), and always the last one
            if f < 1.0 and now - self._last_t < self.min_interval:
                return
            self._last_t = now
            self.reported += 1
        self._sink(f, message)

    def span(self, start: float, end: float) -> "TaskSpan":
        return TaskSpan(self, start, end)

    # cancellation ---------------------------------------------------------------------------------------------
    def cancel(self) -> None:
        with self._lock:
            self._event.set()
            callbacks = list(self._callbacks)
        for cb in callbacks:
            try:
                cb()
            except Exception:  # a failing stop hook must not keep the others from running
                pass

    def cancelled(self) -> bool:
        return self._event.is_set()

    @property
    def cancel_event(self) -> threading.Event:
        return self._event

    def check(self) -> None:
        """Raise `Cancelled` when the person asked to stop."""
        if self._event.is_set():
            raise Cancelled()

    def on_cancel(self, cb: Callable[[], None]) -> Callable[[], None]:
        """Call `cb` when cancelled (at once if already); returns a function that removes it."""
        with self._lock:
            self._callbacks.append(cb)
            already = self._event.is_set()
        if already:
            cb()

        def remove() -> None:
            with self._lock:
                if cb in self._callbacks:
                    self._callbacks.remove(cb)
        return remove

    def progress_callback(self, check: bool = True) -> ProgressSink:
        """A plain `progress(fraction, message)` callable for core functions; it also stops the work when cancelled."""
        return _progress_callback(self, check)


class TaskSpan:
    """A sub-range of a `TaskState`: its 0..1 maps onto [start, end] of the parent; cancellation is the parent's."""

    def __init__(self, parent: TaskState | "TaskSpan", start: float, end: float) -> None:
        self._parent = parent
        self._start = start
        self._width = end - start

    def report(self, fraction: float, message: str = "") -> None:
        self._parent.report(self._start + self._width * max(0.0, min(1.0, float(fraction))), message)

    def span(self, start: float, end: float) -> "TaskSpan":
        return TaskSpan(self, start, end)

    def cancel(self) -> None:
        self._parent.cancel()

    def cancelled(self) -> bool:
        return self._parent.cancelled()

    @property
    def cancel_event(self) -> threading.Event:
        return self._parent.cancel_event

    def check(self) -> None:
        self._parent.check()

    def on_cancel(self, cb: Callable[[], None]) -> Callable[[], None]:
        return self._parent.on_cancel(cb)

    def progress_callback(self, check: bool = True) -> ProgressSink:
        return _progress_callback(self, check)


def _progress_callback(task: TaskState | TaskSpan, check: bool) -> ProgressSink:
    def cb(fraction: float, message: str = "") -> None:
        if check:
            task.check()
        task.report(fraction, message)
    return cb
