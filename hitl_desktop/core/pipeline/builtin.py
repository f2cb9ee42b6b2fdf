"""Built-in stages: validate, clean, featurize, train, evaluate, export.

`validate` and `clean` are slots: validate computes flags with a minimal check set (`check_batch`: missing values,
and values that do not parse as their column's type in raw-stored columns). Pointing validate at the full check
suite (`hitl_desktop.core.checks`) is a change to `check_batch` alone. `train`, `evaluate` and `export` are minimal
scikit-learn versions (logistic regression, cross-validated accuracy) so a pipeline runs end to end.
"""
from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pandas as pd

from .stage import Param, Stage, StageContext

_ARROW_STR = pd.StringDtype("pyarrow")
FLAG_COLUMNS = ["row_id", "column", "kind", "severity", "score", "message", "suggestion", "value_key"]
SEVERITY_SCORE = {"high": 1.0, "medium": 0.6, "low": 0.3}


# --- checks slot ------------------------------------------------------------------------------------------------


def value_key(kind: str, column: str | None, row_id: int, value: Any) -> str:
    """Identity of a flagged value: a dismissed flag stays dismissed while this key is unchanged."""
    text = "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)
    return hashlib.sha256(f"{kind}\x1f{column}\x1f{row_id}\x1f{text}".encode()).hexdigest()


def check_batch(df: pd.DataFrame, columns: list[Any], label: str | None, params: dict[str, Any]) -> pd.DataFrame:
    """Flags for one batch (one row per flagged cell, columns FLAG_COLUMNS). The swap point for core.checks."""
    rows: list[tuple] = []
    sev_missing = params.get("missing_severity", "medium")
    for info in columns:
        name = info.name
        if name not in df.columns:
            continue
        s = df[name]
        missing = s.isna().to_numpy()
        if s.dtype == object or pd.api.types.is_string_dtype(s.dtype):
            text = s.astype("string").str.strip()
            missing = missing | (text == "").fillna(False).to_numpy(dtype=bool)
        else:
            text = None
        if params.get("check_missing", True) and missing.any():
            sev = "high" if name == label else sev_missing
            for rid in df.index[missing]:
                rows.append((int(rid), name, "missing", sev, SEVERITY_SCORE[sev],
                             f"missing value in '{name}'" + (" (the label)" if name == label else ""), None,
                             value_key("missing", name, int(rid), None)))
        if params.get("check_types", True) and info.raw and info.logical in ("integer", "float") and text is not None:
            num = pd.to_numeric(text, errors="coerce")
            bad = (num.isna().to_numpy() & ~missing)
            if bad.any():
                for rid, v in zip(df.index[bad], s[bad]):
                    hint = None
                    vv = str(v).strip()
                    if "," in vv and vv.replace(",", "", 1).replace("-", "", 1).isdigit():
                        hint = vv.replace(",", ".")
                    rows.append((int(rid), name, "type", "high", SEVERITY_SCORE["high"],
                                 f"'{v}' is not a number, and column '{name}' holds {info.logical}s", hint,
                                 value_key("type", name, int(rid), v)))
    return pd.DataFrame.from_records(rows, columns=FLAG_COLUMNS).astype(
        {"row_id": "int64", "score": "float64"}) if rows else _empty_flags()


def _empty_flags() -> pd.DataFrame:
    return pd.DataFrame({"row_id": pd.Series([], dtype="int64"), "column": pd.Series([], dtype=object),
                         "kind": pd.Series([], dtype=object), "severity": pd.Series([], dtype=object),
                         "score": pd.Series([], dtype="float64"), "message": pd.Series([], dtype=object),
                         "suggestion": pd.Series([], dtype=object), "value_key": pd.Series([], dtype=object)})


# --- stages -----------------------------------------------------------------------------------------------------


class Validate(Stage):
    """Check every batch and store its flags (replacing the open machine flags of re-checked batches)."""

    name = "validate"
    version = "1"
    per_batch = True
    inputs = ("batch",)
    outputs = {"flags": "table"}
    params = {
        "check_missing": Param(bool, True, help="flag missing values"),
        "check_types": Param(bool, True, help="flag values that do not parse as the column's type"),
        "missing_severity": Param(str, "medium", choices=("low", "medium", "high")),
    }
    code_deps = (check_batch, value_key)
    stores_flags = True

    def run_batch(self, ctx: StageContext, inputs: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        meta = inputs["meta"]
        return {"flags": check_batch(inputs["batch"], meta["columns"], meta["label"], params)}


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


BUILTIN_STAGES: list[Stage] = [Validate(), Clean(), Featurize(), Train(), Evaluate(), Export()]
