"""Shared types of the data-quality checks: flags, severities, column descriptions."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, NamedTuple

import pandas as pd

# Severity is a string; SEVERITY_WEIGHT maps it to the 1..3 weight used for risk ordering.
SEVERITIES = ("low", "medium", "high")
SEVERITY_WEIGHT: dict[str, int] = {"low": 1, "medium": 2, "high": 3}

# Special suggestion: the row should be removed because it repeats an earlier row.
DROP_DUPLICATE = "drop duplicate"

LOGICAL_TYPES = ("integer", "float", "text", "boolean", "datetime")
NUMERIC_TYPES = ("integer", "float")

FLAG_KINDS = ("missing", "type", "out_of_range", "category", "duplicate", "label")  # plus "rule:<name>"


class Flag(NamedTuple):
    """One finding. `column` is None for a whole-row finding (duplicate, label is per label column).

    An immutable named tuple rather than a frozen dataclass: a dirty million-row table yields ~180,000 flags, and a
    frozen dataclass's `__init__` (one `object.__setattr__` per field) made building them ~40 % of the cell checks'
    time; `make_flags` builds them with `Flag._make` at tuple speed."""

    row: int
    column: str | None
    kind: str
    severity: str
    score: float
    message: str
    suggestion: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return self._asdict()

    @property
    def weight(self) -> int:
        return SEVERITY_WEIGHT[self.severity]


@dataclass(frozen=True, slots=True)
class ColumnInfo:
    """Minimal column description: name and logical type (integer|float|text|boolean|datetime)."""

    name: str
    logical: str


def normalize_infos(df: pd.DataFrame, infos: Any) -> dict[str, str]:
    """Return {column: logical type} for every column of df.

    Accepts a list of ColumnInfo-like objects (attribute `logical` or `type`, and `name`),
    a mapping name -> type, or None (then inferred from dtypes; string columns become 'text').
    Columns missing from `infos` are inferred too.
    """
    out: dict[str, str] = {}
    if infos is not None:
        items: Iterable[tuple[str, str]]
        if isinstance(infos, Mapping):
            items = ((str(k), v if isinstance(v, str) else _logical_attr(v)) for k, v in infos.items())
        else:
            items = ((str(getattr(i, "name")), _logical_attr(i)) for i in infos)
        for name, logical in items:
            if logical not in LOGICAL_TYPES:
                raise ValueError(f"column {name!r}: unknown logical type {logical!r}")
            out[name] = logical
    return {str(c): out.get(str(c)) or infer_logical(df[c]) for c in df.columns}


def _logical_attr(obj: Any) -> str:
    if isinstance(obj, Mapping):
        return str(obj.get("logical") or obj.get("type"))
    for attr in ("logical", "type", "logical_type"):
        v = getattr(obj, attr, None)
        if isinstance(v, str):
            return v
    raise ValueError(f"cannot read a logical type from {obj!r}")


def infer_logical(s: pd.Series) -> str:
    dt = s.dtype
    if pd.api.types.is_bool_dtype(dt):
        return "boolean"
    if pd.api.types.is_integer_dtype(dt):
        return "integer"
    if pd.api.types.is_float_dtype(dt):
        return "float"
    if pd.api.types.is_datetime64_any_dtype(dt):
        return "datetime"
    return "text"
