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


def flags_frame(flags: Iterable[Flag]) -> "pd.DataFrame":
    """Flags as a DataFrame (row_id, column, kind, severity, score, message, suggestion)."""
    import pandas as pd

    fl = list(flags)
    return pd.DataFrame({
        "row_id": pd.Series([f.row for f in fl], dtype="int64"),
        "column": pd.Series([f.column for f in fl], dtype=object),
        "kind": pd.Series([f.kind for f in fl], dtype=object),
        "severity": pd.Series([f.severity for f in fl], dtype=object),
        "score": pd.Series([f.score for f in fl], dtype="float64"),
        "message": pd.Series([f.message for f in fl], dtype=object),
        "suggestion": pd.Series([f.suggestion for f in fl], dtype=object),
    })
