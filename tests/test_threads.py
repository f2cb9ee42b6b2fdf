"""core/threads.py: reusable helper threads (results, errors, reuse, abandoned work, ordered maps)."""
from __future__ import annotations

import threading

import pytest

from hitl_desktop.core import threads


def test_a_task_returns_its_value_and_raises_its_error_in_the_caller():
    assert threads.start(lambda a, b=0: a + b, 2, b=3).result() == 5
    t = threads.start(lambda: 1 / 0)
    assert t.join(5) and t.done()
    with pytest.raises(ZeroDivisionError):
        t.result()


def test_sequential_tasks_of_a_lane_run_on_the_same_helper():
    first = threads.start(threading.get_ident, lane="test-lane").result()
    again = [threads.start(threading.get_ident, lane="test-lane").result() for _ in range(5)]
    assert set(again) == {first}
    assert first != threading.get_ident()
    # another lane does not take that helper
    assert threads.start(threading.get_ident, lane="other-lane").result() != first


def test_a_helper_is_named_after_its_task_while_it_runs():
    assert threads.start(lambda: threading.current_thread().name, name="hitl-unit").result() == "hitl-unit"


def test_an_abandoned_task_does_not_hold_up_new_work():
    release = threading.Event()
    stuck = threads.start(release.wait, 30, lane="test-stuck")
    assert not stuck.join(0.05)
    # the lane's only helper is busy: new work gets a new helper at once
    assert threads.start(lambda: "done", lane="test-stuck").result() == "done"
    release.set()
    assert stuck.result() is True


def test_idle_helpers_are_bounded_per_lane_and_a_burst_does_not_retire_another_lanes_helper():
    unit = threads.start(threading.get_ident, lane="test-unit").result()
    gate = threading.Event()
    tasks = [threads.start(gate.wait, 30, lane="test-burst") for _ in range(threads.MAX_IDLE + 4)]
    gate.set()
    for t in tasks:
        t.result()
    assert threads.idle_helpers("test-burst") <= threads.MAX_IDLE
    assert threads.start(threading.get_ident, lane="test-unit").result() == unit


def test_map_ordered_keeps_the_order_and_uses_several_threads():
    seen = set()
    lock = threading.Lock()
    gate = threading.Barrier(4)

    def f(x):
        with lock:
            seen.add(threading.get_ident())
        if x < 4:
            gate.wait(5)  # the first four items meet: four threads at work
        return x * x

    assert threads.map_ordered(f, range(23), 4) == [x * x for x in range(23)]
    assert len(seen) == 4 and threading.get_ident() in seen
    assert threads.map_ordered(f, [], 4) == []
    assert threads.map_ordered(lambda x: x + 1, [3], 4) == [4]


def test_map_ordered_raises_the_first_error_once_every_thread_stopped():
    active = []
    lock = threading.Lock()
    gate = threading.Barrier(3)

    def f(x):
        with lock:
            active.append(x)
        try:
            if x < 3:
                gate.wait(5)  # the three threads are all busy when items 1 and 2 fail
            if x in (1, 2):
                raise ValueError(f"bad {x}")
            return x
        finally:
            with lock:
                active.remove(x)

    with pytest.raises(ValueError, match="bad 1"):
        threads.map_ordered(f, range(40), 3)
    assert active == []  # nothing still running when the error reached the caller


def test_gc_paused_nests_and_restores_the_collector_as_it_was():
    import gc

    from hitl_desktop.core.util import gc_paused

    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the outer pause still holds
    assert gc.isenabled()
    with pytest.raises(ValueError):
        with gc_paused():
            raise ValueError("boom")
    assert gc.isenabled()  # on again after an error too
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()  # a collector someone else turned off stays off
    finally:
        gc.enable()


def test_flags_are_immutable_named_records():
    from hitl_desktop.core.checks import Flag
    from hitl_desktop.core.checks.cells import make_flags

    import numpy as np

    flags = make_flags(np.array([3, 7]), "x", "missing", "low", 1.0, "missing value")
    assert flags == [Flag(3, "x", "missing", "low", 1.0, "missing value"),
                     Flag(7, "x", "missing", "low", 1.0, "missing value", None)]
    f = flags[0]
    assert (f.row, f.column, f.weight) == (3, "x", 1)
    assert f.to_dict() == {"row": 3, "column": "x", "kind": "missing", "severity": "low", "score": 1.0,
                           "message": "missing value", "suggestion": None}
    with pytest.raises(AttributeError):
        f.row = 4
