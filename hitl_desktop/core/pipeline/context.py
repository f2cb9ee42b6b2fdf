"""StageContext: what a stage sees of the engine (progress, cancellation, cancellable long units). No Qt.

It sits above stage.py (the definitions) and parallel.py (the worker pools `call_in_process` / `call_in_thread`
hand a unit to), so both dependencies go one way. Its cancel flag is a `core.tasks.TaskState`: the run's own task
state when the engine makes it, so a cancel of the run is seen by every stage at once.
"""
from __future__ import annotations

from typing import Any, Callable

from ..tasks import Cancelled, TaskState
from .parallel import call_in_process, call_in_thread


class StageContext:
    """What a stage sees of the engine: progress reporting and cancellation. Thread-safe; no Qt.

    `task` is the run's TaskState (its cancel flag is shared; progress goes to `on_progress`, which the engine
    throttles per step). Without one, a fresh TaskState: a context that is never cancelled (tests, direct calls).
    """

    def __init__(self, step: str = "", on_progress: Callable[[float, str], None] | None = None,
                 task: TaskState | None = None) -> None:
        self.step = step
        self._on_progress = on_progress
        self.task = task if task is not None else TaskState()
        #: one-line notes a (whole-data) stage leaves for the run record, e.g. why a check was skipped
        self.notes: list[str] = []
        #: called once when the stage hands its long unit over (`call_in_process` / `call_in_thread`): the engine
        #: then starts storing the step before's result, so that work overlaps the unit rather than its set-up
        self.unit_started: Callable[[], None] | None = None

    def _started(self) -> None:
        cb, self.unit_started = self.unit_started, None
        if cb is not None:
            cb()

    def note(self, message: str) -> None:
        """Record a one-line note: shown by `hitl run`, kept in the run's detail (`hitl runs --json`)."""
        self.notes.append(" ".join(str(message).split()))

    def report(self, fraction: float, message: str = "") -> None:
        if self._on_progress is not None:
            self._on_progress(max(0.0, min(1.0, float(fraction))), message)

    def cancelled(self) -> bool:
        return self.task.cancelled()

    def check_cancelled(self) -> None:
        """Raise `Cancelled` (core.tasks.Cancelled) when the run was cancelled."""
        self.task.check()

    def call_in_process(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run `fn(*args)` in a worker process and wait, cancelling within ~0.1 s (the worker is killed).

        Use this for a long single unit (a model fit) that must stay cancellable: threads cannot be killed.
        """
        return call_in_process(fn, args, kwargs, self.task.cancel_event, started=self._started)

    def call_in_thread(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run `fn(*args)` in a thread of this process and wait: no copy of the data to a worker, for a unit known
        to be short (a small model fit). A cancel returns at once; the abandoned unit finishes in the background
        (threads cannot be killed) and its result is dropped."""
        return call_in_thread(fn, args, kwargs, self.task.cancel_event, started=self._started)


__all__ = ["StageContext", "Cancelled"]
