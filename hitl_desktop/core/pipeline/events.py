"""Run events for observers (the window's Qt adapter, the CLI's progress printer). No Qt here.

The engine calls `observer(event)` (or `observer.on_event(event)`) from the thread that runs the pipeline. A Qt
adapter runs `run_pipeline` in a QThreadPool worker and re-emits each event as a signal (queued connection).
Progress events are throttled (at most every 0.2 s or 2 %) so an observer never floods the GUI thread.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Protocol, Union

from ..tasks import TaskState

EVENT_KINDS = (
    "run_started",      # data: run_id, steps (the steps in scope, in order)
    "stage_started",    # step, stage; data: units (per-batch work units to compute), reused_units
    "progress",         # step, fraction (0..1), message
    "reused",           # step, stage; data: key — the stored result was reused, nothing computed
    "stage_finished",   # step, stage; data: key, seconds, units_computed, units_reused
    "stage_failed",     # step, stage, message (one line); nothing of the stage was registered
    "cancelled",        # step (where it stopped), message
    "notice",           # step, message (e.g. a corrupted cache file that will be recomputed)
    "run_finished",     # data: run_id, status (done / failed / cancelled), seconds
)


@dataclass(frozen=True)
class RunEvent:
    kind: str
    pipeline: str
    step: str | None = None
    stage: str | None = None
    fraction: float | None = None
    message: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class RunObserver(Protocol):
    def on_event(self, event: RunEvent) -> None: ...


Observer = Union[RunObserver, Callable[[RunEvent], None], None]


def make_emitter(observer: Observer) -> Callable[[RunEvent], None]:
    if observer is None:
        return lambda e: None
    fn = getattr(observer, "on_event", None) or observer
    if not callable(fn):
        raise TypeError("observer must be callable or have on_event(event)")
    return fn  # type: ignore[return-value]

