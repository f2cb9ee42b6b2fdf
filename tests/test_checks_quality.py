"""The quality bar on small real data sets with injected, recorded faults (fixed seeds)."""
from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))

from bench_checks_quality import BAR, evaluate, prf  # noqa: E402
from faults import make_faulty  # noqa: E402


@pytest.fixture(scope="module", params=[("iris", 0), ("wine", 1), ("breast_cancer", 0)])
def result(request):
    name, seed = request.param
    f = make_faulty(name, seed)
    return f, evaluate(f, with_peers=False, seed=seed)


@pytest.mark.parametrize("kind", sorted(BAR))
def test_cell_kinds_meet_bar(result, kind):
    f, res = result
    p, r, _ = prf(*res["ours"][kind])
    min_p, min_r = BAR[kind]
    assert p >= min_p and r >= min_r, (f.name, kind, res["ours"][kind])


def test_review_effort(result):
    f, res = result
    assert res["effort"] >= 0.9, (f.name, res["effort"])


def test_label_flips_found(result):
    f, res = result
    assert res["reason"] is None
    _, _, f1 = prf(*res["ours"]["label"])
    assert f1 >= 0.7, (f.name, res["ours"]["label"])


def test_faults_are_recorded():
    f = make_faulty("iris", 3)
    rec = f.record
    assert len(rec.label_flips) >= 10
    assert rec.cells_of("type") and rec.cells_of("missing") and rec.cells_of("out_of_range")
    assert rec.duplicates
    for copy, src in rec.duplicates.items():
        assert copy > src
