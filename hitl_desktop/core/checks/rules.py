"""Declarative per-column user rules: not_null, min, max, allowed, regex, unique."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from typing import Any, Iterable

import numpy as np
import pandas as pd

from .cells import make_flags
from .parse import as_str, fmt_number, parse_column
from .types import NUMERIC_TYPES, SEVERITIES, Flag, normalize_infos

RULE_KINDS = ("not_null", "min", "max", "allowed", "regex", "unique")


@dataclass(frozen=True)
class Rule:
    """A user rule on one column. `value`: number for min/max, list of strings for allowed,
    pattern (whole value must match) for regex, unused for not_null/unique."""

    column: str
    kind: str
    value: Any = None
    name: str | None = None
    severity: str = "medium"
    message: str | None = field(default=None, compare=False)

    @property
    def flag_kind(self) -> str:
        return f"rule:{self.name or f'{self.column}_{self.kind}'}"


def _fail(rule: Any, why: str) -> ValueError:
    label = getattr(rule, "name", None) or f"{getattr(rule, 'column', '?')}/{getattr(rule, 'kind', '?')}"
    return ValueError(" ".join(f"rule {label}: {why}".split()))  # always one line


def validate_rule(rule: Rule, columns: Iterable[str] | None = None) -> Rule:
    """Check a rule at entry; return it normalised or raise ValueError with a one-line message."""
    if not isinstance(rule, Rule):
        raise ValueError(f"not a Rule: {type(rule).__name__}")
    if not rule.column or not isinstance(rule.column, str):
        raise _fail(rule, "needs a column name")
    if columns is not None and rule.column not in set(map(str, columns)):
        raise _fail(rule, f"unknown column {rule.column!r}")
    if rule.kind not in RULE_KINDS:
        raise _fail(rule, f"unknown kind {rule.kind!r} (one of {', '.join(RULE_KINDS)})")
    if rule.severity not in SEVERITIES:
        raise _fail(rule, f"severity must be one of {', '.join(SEVERITIES)}")
    if rule.name is not None and not re.fullmatch(r"[A-Za-z0-9_.\-]+", rule.name):
        raise _fail(rule, "name may hold only letters, digits, '_', '.', '-'")
    if rule.kind in ("min", "max"):
        try:
            v = float(rule.value)
        except (TypeError, ValueError):
            raise _fail(rule, f"{rule.kind} needs a number, got {rule.value!r}") from None
        if math.isnan(v):
            raise _fail(rule, f"{rule.kind} must not be NaN")
        return replace(rule, value=v)
    if rule.kind == "allowed":
        vals = rule.value
        if isinstance(vals, str) or not isinstance(vals, Iterable):
            raise _fail(rule, "allowed needs a list of values")
        vals = [str(v) for v in vals]
        if not vals:
            raise _fail(rule, "allowed needs at least one value")
        return replace(rule, value=tuple(vals))
    if rule.kind == "regex":
        if not isinstance(rule.value, str) or not rule.value:
            raise _fail(rule, "regex needs a pattern")
        try:
            re.compile(rule.value)
        except re.error as e:
            raise _fail(rule, f"invalid regex {rule.value!r}: {e}") from None
        return rule
    return replace(rule, value=None)


def apply_rules(df: pd.DataFrame, rules: Iterable[Rule], infos: Any = None) -> list[Flag]:
    """Evaluate rules (validated first) over df; one flag per violating cell, kind 'rule:<name>'."""
    types = normalize_infos(df, infos)
    flags: list[Flag] = []
    for rule in rules:
        rule = validate_rule(rule, df.columns)
        flags += _apply_one(df, rule, types[rule.column])
    return flags


def _apply_one(df: pd.DataFrame, rule: Rule, logical: str) -> list[Flag]:
    s = df[rule.column]
    rows = s.index.to_numpy()
    parsed = parse_column(s, logical)
    present = ~parsed.missing
    kind = rule.flag_kind
    if rule.kind == "not_null":
        bad = parsed.missing
        msg = rule.message or f"{rule.column} must not be empty"
        return make_flags(rows[bad], rule.column, kind, rule.severity, 1.0, msg)
    if rule.kind in ("min", "max"):
        vals = parsed.values if parsed.values is not None else pd.to_numeric(
            as_str(s).str.strip(), errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
        if parsed.fixed is not None:
            vals = np.where(np.isnan(vals), parsed.fixed, vals)
        lim = float(rule.value)
        with np.errstate(invalid="ignore"):
            bad = vals < lim if rule.kind == "min" else vals > lim
        idx = np.flatnonzero(bad)
        word = "below the minimum" if rule.kind == "min" else "above the maximum"
        msgs = [rule.message or f"{fmt_number(v)} is {word} {fmt_number(lim)}" for v in vals[idx].tolist()]
        return make_flags(rows[idx], rule.column, kind, rule.severity, 1.0, msgs, fmt_number(lim))
    if rule.kind == "allowed":
        if logical in NUMERIC_TYPES and parsed.values is not None:
            allowed = pd.to_numeric(pd.Series(list(rule.value)), errors="coerce").dropna().to_numpy()
            vals = parsed.values
            ok = np.isin(vals, allowed)
        else:
            st = as_str(s).str.strip()
            ok = st.isin(list(rule.value)).to_numpy(dtype=bool, na_value=False)
        bad = present & ~ok
        idx = np.flatnonzero(bad)
        shown = ", ".join(rule.value[:8]) + (", ..." if len(rule.value) > 8 else "")
        texts = as_str(s).iloc[idx].tolist()
        msgs = [rule.message or f"{t!r} is not one of: {shown}" for t in texts]
        return make_flags(rows[idx], rule.column, kind, rule.severity, 1.0, msgs)
    if rule.kind == "regex":
        st = as_str(s)
        try:
            m = st.str.fullmatch(rule.value)
        except Exception:  # pattern outside the engine's dialect: use Python's re
            m = st.astype(object).str.fullmatch(rule.value)
        ok = m.to_numpy(dtype=bool, na_value=False)
        bad = present & ~ok
        idx = np.flatnonzero(bad)
        msgs = [rule.message or f"{t!r} does not match {rule.value!r}" for t in st.iloc[idx].tolist()]
        return make_flags(rows[idx], rule.column, kind, rule.severity, 1.0, msgs)
    # unique
    if logical in NUMERIC_TYPES and parsed.values is not None:
        key = pd.Series(parsed.values)
    else:
        key = as_str(s).str.strip().reset_index(drop=True)
    dup = key.duplicated(keep="first").to_numpy(dtype=bool) & present
    idx = np.flatnonzero(dup)
    msg = rule.message or f"{rule.column} must be unique; value repeats an earlier row"
    return make_flags(rows[idx], rule.column, kind, rule.severity, 1.0, msg)
