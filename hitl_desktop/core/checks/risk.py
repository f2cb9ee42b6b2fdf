"""Risk ordering of rows and batches."""
from __future__ import annotations

from collections import defaultdict
from typing import Iterable

from .types import SEVERITY_WEIGHT, Flag


def row_risk(flags: Iterable[Flag]) -> dict[int, float]:
    """Row id -> risk = sum over its flags of severity weight (1..3) x score (0..1)."""
    risk: dict[int, float] = defaultdict(float)
    for f in flags:
        risk[f.row] += SEVERITY_WEIGHT[f.severity] * f.score
    return dict(risk)


def rank_rows(flags: Iterable[Flag]) -> list[int]:
    """Flagged row ids, riskiest first (ties by row id)."""
    risk = row_risk(flags)
    return sorted(risk, key=lambda r: (-risk[r], r))


def batch_risk(open_flags: Iterable[Flag]) -> float:
    """Batch risk = sum of the open flags' severity weights (low 1, medium 2, high 3)."""
    return float(sum(SEVERITY_WEIGHT[f.severity] for f in open_flags))
