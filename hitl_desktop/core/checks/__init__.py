"""Data-quality checks (pure pandas/numpy/scikit-learn, no Qt, no database).

See docs/checks.md. The store calls these per batch and persists the flags.
"""
from __future__ import annotations

from .duplicates import find_duplicates, row_fingerprints
from .labels import confident_learning, default_label_model, find_label_issues, label_features
from .parse import MISSING_TOKENS, parse_column
from .profile import SENTINELS, profile_columns, profile_from_json, profile_to_json
from .risk import batch_risk, flags_frame, rank_rows, row_risk
from .rules import RULE_KINDS, Rule, apply_rules, validate_rule
from .run import run_cell_checks
from .types import DROP_DUPLICATE, SEVERITY_WEIGHT, ColumnInfo, Flag

__all__ = [
    "ColumnInfo", "DROP_DUPLICATE", "Flag", "MISSING_TOKENS", "RULE_KINDS", "Rule", "SENTINELS",
    "SEVERITY_WEIGHT", "apply_rules", "batch_risk", "confident_learning", "default_label_model",
    "find_duplicates", "find_label_issues", "flags_frame", "label_features", "parse_column", "profile_columns",
    "profile_from_json", "profile_to_json", "rank_rows", "row_fingerprints", "row_risk",
    "run_cell_checks", "validate_rule",
]
