"""Top-level entry: every cell/row check except the label model."""
from __future__ import annotations

from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from .cells import check_column
from .duplicates import find_duplicates, row_fingerprints
from .parse import parse_column
from .profile import DEFAULTS, profile_one
from .rules import Rule, apply_rules
from .types import Flag, normalize_infos


def check_columns(df: pd.DataFrame, types: dict[str, str], columns_profile: dict[str, Any],
                  opts: dict[str, Any]) -> tuple[list[Flag], dict[str, Any], dict[str, Any]]:
    """Per-column cell checks. Returns (flags, parsed columns by name, the column profiles used: given ones, and
    on-the-fly profiles for columns the given profile lacks)."""
    cols = dict(columns_profile)
    flags: list[Flag] = []
    parsed_all: dict[str, Any] = {}
    for name in df.columns:
        name_s = str(name)
        logical = types[name_s]
        parsed = parse_column(df[name], logical)
        parsed_all[name_s] = parsed
        prof = cols.get(name_s)
        if prof is None:
            prof = profile_one(df[name], logical, parsed, opts)
            cols[name_s] = prof
        flags += check_column(df[name], name_s, logical, parsed, prof)
    return flags, parsed_all, cols


def run_cell_checks(
    df: pd.DataFrame,
    infos: Any = None,
    profile: dict[str, Any] | None = None,
    rules: Iterable[Rule] = (),
    other_fingerprints: np.ndarray | None = None,
    duplicate_exclude: Sequence[str] = (),
) -> list[Flag]:
    """missing, type, out_of_range, category, duplicate and rule flags for one batch.

    `profile` (from profile_columns, possibly pinned/edited) supplies ranges and categories; when
    None it is profiled from df itself. Columns absent from the profile are profiled on the fly.
    """
    types = normalize_infos(df, infos)
    cols = dict((profile or {}).get("columns", {}))
    opts = {**DEFAULTS, **((profile or {}).get("params") or {})}
    flags, parsed_all, cols = check_columns(df, types, cols, opts)
    fp = row_fingerprints(df, types, duplicate_exclude, parsed_all)
    flags += find_duplicates(df, types, other_fingerprints, fp)
    rules = list(rules)
    if rules:
        flags += apply_rules(df, rules, types)
    return flags
