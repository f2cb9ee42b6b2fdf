"""Built-in stages: validate, clean, featurize, train, evaluate, export.

`validate` runs the cell checks of `hitl_desktop.core.checks` per batch (`check_batch`); `duplicates` and `labels`
(whole project, in checks_stages.py) add duplicate rows and likely label errors. `featurize`, `train`, `evaluate` and
`export` live in model_stages.py (docs/models.md).
"""
from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pandas as pd

from .checks_stages import (FLAG_COLUMNS, ROW_FLAG_KINDS, Duplicates, Labels, checks_context, empty_flags,
                            exact_row_hash, flags_to_frame, run_cell_checks_batch, value_key, value_keys,
                            _value_text)
from .model_stages import Evaluate, Export, Featurize, Train  # the model stages (docs/models.md)
from .context import StageContext
from .registry import register_builtin_stages
from .stage import Param, Stage

_ARROW_STR = pd.StringDtype("pyarrow")
SEVERITY_SCORE = {"high": 1.0, "medium": 0.6, "low": 0.3}


# --- checks slot ------------------------------------------------------------------------------------------------


def check_batch(df: pd.DataFrame, columns: list[Any], label: str | None, params: dict[str, Any],
                context: dict[str, Any] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(flags, fingerprints) of one batch: the cell checks of `hitl_desktop.core.checks` (missing, type,
    out_of_range, category, rules) against the project's profile, and row fingerprints for `duplicates`."""
    return run_cell_checks_batch(df, columns, label, params, context)


def _empty_flags() -> pd.DataFrame:
    return empty_flags()


# --- stages -----------------------------------------------------------------------------------------------------


class Validate(Stage):
    """Check every batch and store its flags (replacing the open machine flags of re-checked batches).

    Reads the project's column profile (pinned schema over the auto profile) and rules; both are in the cache
    key, so pinning, refreshing or a rule change re-checks every batch, an edit only its batch."""

    name = "validate"
    version = "2"
    per_batch = True
    inputs = ("batch",)
    outputs = {"flags": "table", "fingerprints": "table"}
    params = {
        "check_missing": Param(bool, True, help="flag missing values"),
        "check_types": Param(bool, True, help="flag values that do not parse as the column's type"),
        "check_ranges": Param(bool, True, help="flag values outside the profile's robust fences (out_of_range)"),
        "check_categories": Param(bool, True, help="flag text outside the column's categories (near-misses)"),
        "missing_severity": Param(str, "low", choices=("low", "medium", "high"),
                                  help="severity of a missing value (a missing label is always high)"),
        "k": Param(float, 7.0, min=0.5, max=100.0,
                   help="fence width in robust spreads for the auto profile; lower = more out_of_range flags"),
        "category_max": Param(int, 50, min=1, max=10000, help="most categories a text column may have"),
        "duplicate_exclude": Param(list, [], help="columns left out of the duplicate fingerprint (e.g. an id)"),
    }
    code_deps = (check_batch, value_key, value_keys, _value_text, run_cell_checks_batch, flags_to_frame, exact_row_hash)
    stores_flags = True
    flag_kinds_exclude = ROW_FLAG_KINDS  # duplicates and labels are stored by their whole-project steps

    def plan_context(self, project: Any, source: Any, params: dict[str, Any]) -> dict[str, Any]:
        return checks_context(project, source, params)

    def run_batch(self, ctx: StageContext, inputs: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        meta = inputs["meta"]
        flags, fps = check_batch(inputs["batch"], meta["columns"], meta["label"], params, inputs.get("context"))
        return {"flags": flags, "fingerprints": fps}


class Clean(Stage):
    """Typed, tidied copy of each batch: raw numeric columns as numbers, text stripped, unusable rows dropped."""

    name = "clean"
    version = "1"
    per_batch = True
    inputs = ("batch", "flags")
    outputs = {"table": "table"}
    params = {
        "coerce_numeric": Param(bool, True, help="turn raw-stored numeric columns into numbers (strays -> missing)"),
        "strip_text": Param(bool, True, help="strip spaces around text values"),
        "drop_missing_label": Param(bool, True, help="drop rows whose label is missing"),
        "drop_type_errors": Param(bool, False, help="drop rows with a value that does not parse as its type"),
    }

    def run_batch(self, ctx: StageContext, inputs: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        meta = inputs["meta"]
        df = inputs["batch"].copy()
        flags = inputs["flags"]
        label = meta["label"]
        for info in meta["columns"]:
            c = info.name
            if c not in df.columns:
                continue
            if params["coerce_numeric"] and info.raw and info.logical in ("integer", "float"):
                df[c] = pd.to_numeric(df[c].astype("string").str.strip(), errors="coerce").astype("float64")
            elif params["strip_text"] and (df[c].dtype == object or pd.api.types.is_string_dtype(df[c].dtype)):
                t = df[c].astype(_ARROW_STR).str.strip()  # Arrow-backed: stored without conversion
                df[c] = t.mask(t == "")
        keep = np.ones(len(df), dtype=bool)
        if params["drop_missing_label"] and label and label in df.columns:
            keep &= df[label].notna().to_numpy()
        if params["drop_type_errors"] and len(flags):
            bad = set(flags.loc[flags["kind"] == "type", "row_id"].tolist())
            keep &= ~df.index.isin(list(bad))
        return {"table": df[keep]}


BUILTIN_STAGES: list[Stage] = [Validate(), Clean(), Duplicates(), Labels(), Featurize(), Train(), Evaluate(),
                               Export()]
register_builtin_stages(BUILTIN_STAGES)
