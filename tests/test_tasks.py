"""core.tasks.TaskState: one progress sink and cancel flag for all background work."""
from __future__ import annotations

import pytest

from hitl_desktop.core.tasks import Cancelled, TaskState


def test_reports_are_throttled_but_the_last_always_arrives():
    seen = []
    task = TaskState(lambda f, m: seen.append((f, m)), min_interval=3600)
    for i in range(100):
        task.report(i / 100, f"unit {i}")
    task.report(1.0, "done")
    assert seen == [(0.0, "unit 0"), (1.0, "done")]
    assert task.reported == 2 and task.fraction == 1.0 and task.message == "done"


def test_span_maps_onto_the_parent_range_and_clamps():
    seen = []
    task = TaskState(lambda f, m: seen.append(f), min_interval=0)
    half = task.span(0.5, 1.0)
    half.report(0.5)
    half.span(0.0, 0.5).report(2.0)  # clamped to its own end
    assert seen == [0.75, 0.75]


def test_cancel_runs_hooks_once_and_check_raises_everywhere():
    task = TaskState()
    calls = []
    remove = task.on_cancel(lambda: calls.append("a"))
    task.on_cancel(lambda: calls.append("b"))
    remove()
    cb = task.span(0.0, 0.5).progress_callback()
    cb(0.1, "fine")
    task.cancel()
    assert calls == ["b"] and task.cancelled() and task.cancel_event.is_set()
    with pytest.raises(Cancelled):
        cb(0.2, "stopped")
    with pytest.raises(Cancelled):
        task.check()
    late = []
    task.on_cancel(lambda: late.append(1))  # registered after the cancel: runs at once
    assert late == [1]
