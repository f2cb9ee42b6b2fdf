"""Built-in stages: validate, clean, featurize, train, evaluate, export.

`validate` runs the cell checks of `hitl_desktop.core.checks` per batch (`check_batch`); `duplicates` and `labels`
(whole project, in checks_stages.py) add duplicate rows and likely label errors. `train`, `evaluate` and `export` are minimal
scikit-learn versions (logistic regression, cross-validated accuracy) so a pipeline runs end to end.
"""
from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pandas as pd

from .checks_stages import (FLAG_COLUMNS, ROW_FLAG_KINDS, Duplicates, Labels, checks_context, empty_flags,
                            exact_row_hash, flags_to_frame, run_cell_checks_batch, value_key)
from .stage import Param, Stage, StageContext

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
    code_deps = (check_batch, value_key, run_cell_checks_batch, flags_to_frame, exact_row_hash)
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


class Featurize(Stage):
    """Numeric matrix (imputed numbers + one-hot categoricals) and target of the selected batches."""

    name = "featurize"
    version = "1"
    inputs = ("table",)
    outputs = {"features": "object"}
    params = {
        "select": Param(str, "approved", choices=("approved", "not_rejected", "all"),
                        help="which batches to train on (by review status)"),
        "target": Param(str, None, nullable=True, help="target column (default: the source's label column)"),
        "max_categories": Param(int, 20, min=1, max=1000, help="one-hot the most frequent N values per text column"),
        "impute": Param(str, "median", choices=("median", "mean", "zero")),
    }
    selects_batches = "select"

    def run(self, ctx: StageContext, inputs: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        from .errors import StageFailed

        meta = inputs["meta"]
        tables: dict[int, pd.DataFrame] = inputs["table"]
        if not tables:
            raise StageFailed(f"no batches to featurize (select={params['select']}): approve batches for training "
                              "or set the step's 'select' parameter")
        target = params["target"] or meta["label"]
        if not target:
            raise StageFailed("no target column: import with --label COLUMN or set featurize's 'target' parameter")
        ctx.report(0.05, f"combining {len(tables)} batches")
        df = pd.concat([tables[b] for b in sorted(tables)])
        if target not in df.columns:
            raise StageFailed(f"target column '{target}' is not in the data (columns: {', '.join(map(str, df.columns))})")
        df = df[df[target].notna()]
        if len(df) == 0:
            raise StageFailed(f"every selected row has a missing target '{target}'")
        y = df[target].astype(str).to_numpy(dtype=object)
        parts: list[np.ndarray] = []
        names: list[str] = []
        numeric_cols = [c for c in df.columns if c != target and pd.api.types.is_numeric_dtype(df[c].dtype)
                        and not pd.api.types.is_bool_dtype(df[c].dtype)]
        other_cols = [c for c in df.columns if c != target and c not in numeric_cols]
        n = len(df)
        for i, c in enumerate(numeric_cols):
            ctx.check_cancelled()
            v = df[c].to_numpy(dtype="float64", na_value=np.nan)
            mask = np.isnan(v)
            if mask.any():
                fill = {"median": np.nanmedian, "mean": np.nanmean}.get(params["impute"], lambda a: 0.0)(v) \
                    if (~mask).any() else 0.0
                v = np.where(mask, fill, v)
            parts.append(v.reshape(n, 1))
            names.append(str(c))
        ctx.report(0.5, "encoding categoricals")
        k = params["max_categories"]
        for c in other_cols:
            ctx.check_cancelled()
            s = df[c].astype("string").fillna("(missing)")
            top = s.value_counts().index[:k].tolist()
            codes = pd.Categorical(s, categories=top).codes
            onehot = np.zeros((n, len(top) + 1), dtype="float64")
            onehot[np.arange(n), np.where(codes < 0, len(top), codes)] = 1.0
            parts.append(onehot)
            names += [f"{c}={t}" for t in top] + [f"{c}=(other)"]
        X = np.hstack(parts) if parts else np.zeros((n, 0))
        ctx.report(1.0, f"{n} rows x {X.shape[1]} features")
        return {"features": {"X": X, "y": y, "feature_names": names, "classes": sorted(set(y.tolist())),
                             "row_ids": df.index.to_numpy(dtype="int64"), "target": target,
                             "batches": sorted(tables)}}


def _fit_logreg(X: np.ndarray, y: np.ndarray, params: dict[str, Any]) -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(
        C=params["C"], max_iter=params["max_iter"],
        class_weight=None if params["class_weight"] == "none" else params["class_weight"],
        random_state=params["seed"]))
    return model.fit(X, y)


def _cross_validate(model: Any, X: np.ndarray, y: np.ndarray, folds: int, seed: int, scoring: str) -> dict:
    from sklearn.base import clone
    from sklearn.metrics import accuracy_score, balanced_accuracy_score
    from sklearn.model_selection import StratifiedKFold

    score = accuracy_score if scoring == "accuracy" else balanced_accuracy_score
    kf = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    scores = []
    for tr, te in kf.split(X, y):
        m = clone(model).fit(X[tr], y[tr])
        scores.append(float(score(y[te], m.predict(X[te]))))
    return {"scores": scores}


class Train(Stage):
    """Fit a model on the featurized rows (minimal version: standardised logistic regression)."""

    name = "train"
    version = "1"
    inputs = ("features",)
    outputs = {"model": "object"}
    params = {
        "C": Param(float, 1.0, min=1e-6, max=1e6, help="inverse regularisation strength"),
        "max_iter": Param(int, 200, min=1, max=100000),
        "class_weight": Param(str, "none", choices=("none", "balanced")),
        "seed": Param(int, 0, min=0),
    }
    code_deps = (_fit_logreg,)

    def run(self, ctx: StageContext, inputs: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        from .errors import StageFailed

        f = inputs["features"]
        if len(set(f["y"].tolist())) < 2:
            raise StageFailed("training needs at least two classes in the target; the selected rows have one")
        ctx.report(0.1, f"fitting on {f['X'].shape[0]} rows")
        model = ctx.call_in_process(_fit_logreg, f["X"], f["y"], params)
        ctx.report(1.0, "fitted")
        return {"model": model}


class Evaluate(Stage):
    """Cross-validated score of the trained model's recipe on the featurized rows."""

    name = "evaluate"
    version = "1"
    inputs = ("features", "model")
    outputs = {"metrics": "metrics"}
    params = {
        "folds": Param(int, 3, min=2, max=20),
        "seed": Param(int, 0, min=0),
        "scoring": Param(str, "accuracy", choices=("accuracy", "balanced_accuracy")),
    }
    code_deps = (_cross_validate,)

    def run(self, ctx: StageContext, inputs: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        from .errors import StageFailed

        f = inputs["features"]
        y = f["y"]
        smallest = min(pd.Series(y).value_counts().tolist())
        if smallest < params["folds"]:
            raise StageFailed(f"{params['folds']}-fold cross-validation needs at least {params['folds']} rows per "
                              f"class; the rarest class has {smallest}")
        ctx.report(0.1, f"{params['folds']}-fold cross-validation")
        out = ctx.call_in_process(_cross_validate, inputs["model"], f["X"], y, params["folds"], params["seed"],
                                  params["scoring"])
        s = np.asarray(out["scores"])
        return {"metrics": {params["scoring"]: float(s.mean()), f"{params['scoring']}_std": float(s.std()),
                            "folds": params["folds"], "fold_scores": out["scores"], "rows": int(len(y)),
                            "features": int(f["X"].shape[1]), "classes": list(f["classes"])}}


class Export(Stage):
    """Bundle the model with what is needed to use it (feature names, classes, target). Slot for the model issue."""

    name = "export"
    version = "1"
    inputs = ("model", "features")
    outputs = {"artifact": "object"}
    params = {"format": Param(str, "joblib", choices=("joblib",))}

    def run(self, ctx: StageContext, inputs: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        f = inputs["features"]
        return {"artifact": {"model": inputs["model"], "feature_names": f["feature_names"],
                             "classes": f["classes"], "target": f["target"], "format": params["format"]}}


BUILTIN_STAGES: list[Stage] = [Validate(), Clean(), Duplicates(), Labels(), Featurize(), Train(), Evaluate(),
                               Export()]
