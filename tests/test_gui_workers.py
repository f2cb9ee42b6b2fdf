"""Background work: progress arrives throttled on the GUI thread, Cancel stops the task, workers stay referenced."""
from __future__ import annotations

import threading
import time

import pytest

from hitl_desktop.core.errors import HitlError
from hitl_desktop.core.tasks import Cancelled, TaskState
from hitl_desktop.gui.run_panel import RunPanel
from hitl_desktop.gui.workers import TaskManager


def test_background_task_reports_progress_and_can_be_cancelled(qtbot):
    tm = TaskManager()
    panel = RunPanel(tm)
    qtbot.addWidget(panel)
    progress: list[float] = []
    started = threading.Event()

    def work(ctx):
        i = 0
        while True:  # a long stage: checks for cancellation between work units
            ctx.check()
            # one message while the fraction moves: core.tasks.TaskState passes every *changed* message on, and
            # throttles repeats to one per 50 ms (its one throttle; the window adds none of its own)
            ctx.report(min(0.99, i / 1e6), "unit of work")
            started.set()
            i += 1

    task = tm.submit("Long stage", work, on_progress=lambda f, m: progress.append(f))
    assert tm.running() == [task]  # kept referenced while it runs
    qtbot.waitUntil(lambda: len(progress) >= 3, timeout=5000)
    row = panel.row(task)
    assert panel.isVisible() and row is not None
    assert row.bar.value() > 0 and row.msg.text().startswith("unit")
    with qtbot.waitSignal(task.signals.cancelled, timeout=5000):
        row.cancel.click()  # the Cancel button of the run panel
    qtbot.waitUntil(lambda: not tm.running(), timeout=5000)
    assert task.outcome == "cancelled"
    assert panel.isHidden()
    # hundreds of thousands of reports became a few throttled signals (<= one per 50 ms)
    elapsed = time.monotonic() - task.started_at
    assert task.ctx.reported <= elapsed / 0.05 + 3
    assert isinstance(task.ctx, TaskState)


def test_a_cancelled_task_runs_the_task_states_cancel_hooks(qtbot):
    tm = TaskManager()
    hooked = threading.Event()
    started = threading.Event()

    def work(ctx):
        ctx.on_cancel(hooked.set)  # e.g. stop worker processes at once
        started.set()
        while not ctx.cancel_event.wait(0.01):
            pass
        ctx.check()

    task = tm.submit("Hooked", work)
    assert started.wait(5)
    with qtbot.waitSignal(task.signals.cancelled, timeout=5000):
        task.cancel()
    assert hooked.is_set() and task.outcome == "cancelled"
    with pytest.raises(Cancelled):
        task.ctx.check()


def test_failures_arrive_as_one_line(qtbot):
    tm = TaskManager()

    def bad(ctx):
        raise HitlError("the file is empty:\n nothing to import")

    with qtbot.waitSignal(tm.taskEnded, timeout=5000):
        task = tm.submit("Bad", bad)
    assert (task.outcome, task.error) == ("failed", "the file is empty: nothing to import")

    def bug(ctx):
        raise ZeroDivisionError("division by zero")

    with qtbot.waitSignal(tm.taskEnded, timeout=5000):
        task = tm.submit("Bug", bug)
    assert task.error.startswith("internal error: ZeroDivisionError") and "\n" not in task.error


def test_writer_runs_one_write_at_a_time_in_order(qtbot):
    tm = TaskManager()
    active, order, peak = [0], [], [0]
    lock = threading.Lock()

    def write(i):
        def fn(ctx):
            with lock:
                active[0] += 1
                peak[0] = max(peak[0], active[0])
            time.sleep(0.01)
            order.append(i)
            with lock:
                active[0] -= 1
        return fn

    for i in range(8):
        tm.submit(f"w{i}", write(i), writer=True, visible=False)
    qtbot.waitUntil(lambda: len(order) == 8 and not tm.running(include_hidden=True), timeout=5000)
    assert order == list(range(8)) and peak[0] == 1


def test_the_window_keeps_collector_pauses_short(qtbot):
    """Creating the task manager freezes the objects alive at start-up and makes full collections rarer (the
    collector's pauses froze the window during checks)."""
    import gc

    TaskManager()
    assert gc.get_freeze_count() > 0 and gc.get_threshold()[2] >= 100
