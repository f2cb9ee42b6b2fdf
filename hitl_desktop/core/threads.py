"""Reusable helper threads for short background work inside one operation (Qt-free).

The pipeline hands small pieces of work to threads on every run: featurize's text encodings, a result stored while
the next step computes, the batches' cache files read in parallel, a short model fit. Starting a thread for each
costs about a millisecond of the caller's time where thread creation is slow (virtual machines, gVisor), and each
new thread starts on a fresh malloc arena whose pages the kernel must hand out again (a 200,000-row fit in a new
thread took 9,000-12,000 page faults where the same fit in a thread that had run one before took ~6,000).

`start(fn, *args)` runs `fn` on an idle helper thread, or on a new one when none is idle, and returns a `Task` to
wait on. Helpers are daemon threads; up to `MAX_IDLE` per lane wait for work between operations. A task that is
abandoned (the caller was cancelled; a thread cannot be stopped) keeps its helper until it ends, and other work
meanwhile gets another helper, so nothing ever queues behind it.

Tasks must leave no thread-local state behind (thread-local settings are entered and left inside the task, as
`threadpoolctl` limits are).
"""
from __future__ import annotations

import queue
import threading
from typing import Any, Callable, Iterable

MAX_IDLE = 8

_lock = threading.Lock()
_idle: dict[str, list["_Helper"]] = {}
_UNSET = object()


class Task:
    """A call running on a helper thread: `join(timeout)` waits, `result()` returns its value or raises its error
    in the caller's thread."""

    __slots__ = ("_fn", "_args", "_kwargs", "_value", "_error", "_done", "name")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], name: str) -> None:
        self._fn, self._args, self._kwargs = fn, args, kwargs
        self._value: Any = _UNSET
        self._error: BaseException | None = None
        self._done = threading.Event()
        self.name = name

    def _run(self) -> None:
        try:
            self._value = self._fn(*self._args, **self._kwargs)
        except BaseException as exc:  # re-raised by result() in the caller's thread
            self._error = exc
        finally:
            self._fn = self._args = self._kwargs = None  # no reference to the work's data outlives it

    def join(self, timeout: float | None = None) -> bool:
        """Wait until the call has ended (at most `timeout` seconds); True if it has."""
        return self._done.wait(timeout)

    def done(self) -> bool:
        return self._done.is_set()

    def result(self) -> Any:
        self._done.wait()
        if self._error is not None:
            raise self._error
        return self._value


class _Helper:
    def __init__(self, lane: str) -> None:
        self._lane = lane
        self._inbox: queue.SimpleQueue[Task] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="hitl-helper", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        me = threading.current_thread()
        while True:
            task = self._inbox.get()
            me.name = task.name
            task._run()
            me.name = "hitl-helper"
            # idle again before the caller hears the task ended: work it starts next can reuse this helper
            with _lock:
                idle = _idle.setdefault(self._lane, [])
                keep = len(idle) < MAX_IDLE  # per lane: a burst of small tasks never retires the fit's helper
                if keep:
                    idle.append(self)
            task._done.set()
            del task
            if not keep:
                return


def start(fn: Callable[..., Any], *args: Any, name: str = "hitl-task", lane: str = "", **kwargs: Any) -> Task:
    """Run fn(*args, **kwargs) on a helper thread now; the returned Task is waited on with `join` / `result`.

    `lane` keeps one kind of work on its own helpers: a pipeline unit such as a short model fit (`call_in_thread`,
    lane "unit") runs on the helper the last unit ran on, whose memory arena already holds pages of that size,
    rather than on whichever helper ran a small task last."""
    task = Task(fn, args, kwargs, name)
    with _lock:
        idle = _idle.get(lane)
        helper = idle.pop() if idle else None
    if helper is None:
        helper = _Helper(lane)
    helper._inbox.put(task)
    return task


def map_ordered(fn: Callable[[Any], Any], items: Iterable[Any], workers: int, name: str = "hitl-task") -> list[Any]:
    """[fn(x) for x in items], computed on up to `workers` threads (the caller's own thread is one of them), each
    taking the next item when it is free. After an error no new item is started; the error of the earliest item
    that failed is raised once every thread has stopped."""
    items = list(items)
    n = max(1, min(int(workers), len(items)))
    if n == 1:
        return [fn(x) for x in items]
    out: list[Any] = [None] * len(items)
    errors: dict[int, BaseException] = {}
    state = {"next": 0}
    take = threading.Lock()

    def work() -> None:
        while True:
            with take:
                i = state["next"]
                if i >= len(items) or errors:
                    return
                state["next"] = i + 1
            try:
                out[i] = fn(items[i])
            except BaseException as exc:
                with take:
                    errors[i] = exc

    tasks = [start(work, name=name) for _ in range(n - 1)]
    work()
    for t in tasks:
        t.join()
    if errors:
        raise errors[min(errors)]
    return out


def idle_helpers(lane: str | None = None) -> int:
    """How many helpers wait for work, in `lane` or in all lanes (tests)."""
    with _lock:
        return sum(len(v) for k, v in _idle.items() if lane is None or k == lane)
