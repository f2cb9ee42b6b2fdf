"""Label-error detection: confident learning on out-of-fold predicted probabilities.

Features are cleaned first, robustly and vectorised: decimal commas are repaired, cells that do
not parse or fall outside the profile's fences (x1000 slips, sign flips, sentinels) become missing,
missing numbers are imputed with the column median, categories are mapped to their nearest known
category and one-hot encoded. A handful of wild values therefore cannot blind the model.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from .cells import make_flags, out_of_range_mask
from .parse import as_str, fmt_number, parse_column
from .profile import nearest_category, profile_columns
from .types import NUMERIC_TYPES, Flag, normalize_infos

CL_METHODS = ("prune_by_noise_rate", "confident_joint", "both")


def default_label_model() -> Any:
    """Standardised multinomial logistic regression: fast, calibrated enough for confident learning."""
    from sklearn.linear_model import LogisticRegression  # scikit-learn is imported on first use: the cell
    from sklearn.pipeline import make_pipeline  # checks (and the pipeline's batch workers) never need it
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=500, C=1.0))


def label_features(
    df: pd.DataFrame, infos: Any, label_column: str, profile: dict[str, Any] | None = None
) -> np.ndarray:
    """Cleaned numeric feature matrix (float64, no NaN) from every usable non-label column."""
    types = normalize_infos(df, infos)
    if profile is None:
        profile = profile_columns(df, infos)
    cols_prof = profile.get("columns", {})
    n = len(df)
    plan: list[tuple[str, str, dict[str, Any], int]] = []
    width = 0
    for name in map(str, df.columns):
        logical, prof = types[name], cols_prof.get(name) or {}
        if name == label_column:
            continue
        if logical in NUMERIC_TYPES or logical == "boolean":
            plan.append((name, logical, prof, 1))
            width += 1
        elif logical == "text" and prof.get("categories"):
            plan.append((name, logical, prof, len(prof["categories"])))
            width += len(prof["categories"])
    X = np.zeros((n, width))
    keep = np.ones(width, dtype=bool)
    at = 0
    for name, logical, prof, w in plan:
        s = df[name]
        if logical == "text":
            _one_hot(s, prof["categories"], X[:, at:at + w])
        else:
            x = _clean_numeric(s, logical, prof)
            if x is None:
                keep[at] = False
            else:
                X[:, at] = x
        at += w
    return X if keep.all() else X[:, keep]


def _clean_numeric(s: pd.Series, logical: str, prof: dict[str, Any]) -> np.ndarray | None:
    """Parsed values; unparseable, out-of-fence and sentinel cells imputed; robustly scaled."""
    p = parse_column(s, logical)
    x = p.values
    if x is None:
        return None
    if p.fixed is not None:
        x = np.where(np.isnan(x), p.fixed, x)
    bad = out_of_range_mask(x, prof)[0] | np.isnan(x)
    if bad.all():
        return None
    med = prof.get("median")
    if med is None:
        med = float(np.median(x[~bad]))
    if bad.any():
        x = np.where(bad, med, x)
    if logical == "boolean":
        return x
    q25, q75 = prof.get("q25"), prof.get("q75")
    iqr = (q75 - q25) if (q25 is not None and q75 is not None) else 0.0
    return (x - med) / (iqr if iqr and iqr > 0 else (float(np.std(x)) or 1.0))


def _one_hot(s: pd.Series, cats: list[str], out: np.ndarray) -> None:
    codes, uniques = pd.factorize(as_str(s), use_na_sentinel=True)
    index = {c: i for i, c in enumerate(cats)}
    umap = np.full(len(uniques) + 1, -1, dtype=np.int64)  # last slot: missing
    for k, u in enumerate(uniques[:10_000]):
        u = str(u)
        j = index.get(u)
        if j is None:
            best, _ = nearest_category(u, cats)
            j = index.get(best, -1) if best is not None else -1
        umap[k] = j
    mapped = umap[codes]
    ok = mapped >= 0
    out[np.flatnonzero(ok), mapped[ok]] = 1.0


def _labels(s: pd.Series, logical: str, prof: dict[str, Any]) -> tuple[np.ndarray, list[str]]:
    """Label codes (-1 where missing/unusable) and the sorted class names."""
    if logical in NUMERIC_TYPES:
        p = parse_column(s, logical)
        v = p.values if p.fixed is None else np.where(np.isnan(p.values), p.fixed, p.values)
        ok = np.isfinite(v)
        uniq, inv = np.unique(v[ok], return_inverse=True)
        codes = np.full(len(v), -1, dtype=np.int64)
        codes[ok] = inv
        return codes, [fmt_number(u, logical == "integer") for u in uniq.tolist()]
    st = as_str(s).str.strip()
    st = st.where(st != "")
    cats = prof.get("categories")
    raw_codes, uniq = pd.factorize(st, use_na_sentinel=True)
    names = [str(u) for u in uniq]
    if cats:
        known = set(cats)
        names = [u if u in known or i >= 10_000 else (nearest_category(u, cats)[0] or u)
                 for i, u in enumerate(names)]
    classes = sorted(set(names))
    pos = {c: i for i, c in enumerate(classes)}
    table = np.array([pos[u] for u in names] + [-1], dtype=np.int64)
    return table[raw_codes], classes


def confident_learning(
    probs: np.ndarray, y: np.ndarray, method: str = "prune_by_noise_rate"
) -> np.ndarray:
    """Boolean mask of likely label errors (Northcutt et al., confident learning).

    Per-class thresholds t_j = mean self-confidence of class j. The confident joint counts examples
    whose given label is i and whose most probable class above its threshold is j. 'confident_joint'
    flags its off-diagonal; 'prune_by_noise_rate' calibrates the joint to the class counts and, for
    each (i, j), flags the round(C[i, j]) examples of given label i with the largest margin
    p_j - p_i; 'both' intersects the two. Examples whose given label is the argmax are never flagged.
    """
    if method not in CL_METHODS:
        raise ValueError(f"method must be one of {CL_METHODS}")
    n, k = probs.shape
    counts = np.bincount(y, minlength=k)
    self_conf = probs[np.arange(n), y]
    thr = np.bincount(y, weights=self_conf, minlength=k) / np.maximum(counts, 1)
    above = probs >= thr[None, :] - 1e-12
    masked = np.where(above, probs, -1.0)
    jstar = masked.argmax(axis=1)
    has = above.any(axis=1)
    off = has & (jstar != y)
    pred = probs.argmax(axis=1)
    if method == "confident_joint":
        return off & (pred != y)
    cj = np.zeros((k, k))
    np.add.at(cj, (y[has], jstar[has]), 1.0)
    row = cj.sum(axis=1, keepdims=True)
    cal = np.where(row > 0, cj / np.maximum(row, 1) * counts[:, None], 0.0)
    n_remove = np.rint(cal).astype(np.int64)
    np.fill_diagonal(n_remove, 0)
    mask = np.zeros(n, dtype=bool)
    for i in range(k):
        members = np.flatnonzero(y == i)
        if len(members) == 0 or n_remove[i].sum() == 0:
            continue
        for j in np.flatnonzero(n_remove[i]):
            m = min(int(n_remove[i, j]), len(members))
            margin = probs[members, j] - probs[members, i]
            top = members[np.argpartition(-margin, m - 1)[:m]] if m < len(members) else members
            mask[top] = True
    mask &= pred != y
    if method == "both":
        mask &= off
    return mask


def find_label_issues(
    df: pd.DataFrame,
    infos: Any,
    label_column: str,
    profile: dict[str, Any] | None = None,
    estimator: Any = None,
    cv: int = 5,
    method: str = "prune_by_noise_rate",
    random_state: int = 0,
    n_jobs: int | None = None,
    return_probs: bool = False,
    min_lift: float = 3.0,
) -> tuple[list[Flag], str | None] | tuple[list[Flag], str | None, np.ndarray | None]:
    """Flag rows whose given label is unlikely. Returns (flags, reason); reason explains why
    nothing was checked (single class, class of one member, no features, or a model no better than
    always predicting the majority class: its accuracy must beat the majority share by min_lift
    binomial standard errors), else None.

    With return_probs=True a third item is the (n_rows, n_classes) out-of-fold probability matrix
    (NaN rows where the label is missing), columns in sorted class order.
    """
    def done(flags: list[Flag], reason: str | None, probs: np.ndarray | None = None):
        return (flags, reason, probs) if return_probs else (flags, reason)

    if label_column not in df.columns:
        raise ValueError(f"no column {label_column!r}")
    types = normalize_infos(df, infos)
    if profile is None:
        profile = profile_columns(df, infos)
    lprof = profile.get("columns", {}).get(label_column) or {}
    codes, class_names = _labels(df[label_column], types[label_column], lprof)
    have = codes >= 0
    if not have.any():
        return done([], "label column is empty")
    used, y = np.unique(codes[have], return_inverse=True)
    classes = np.array([class_names[c] for c in used], dtype=object)
    if len(classes) < 2:
        return done([], f"label column has a single class ({classes[0]!r}); nothing to compare")
    counts = np.bincount(y, minlength=len(classes))
    if counts.min() < 2:
        lone = ", ".join(repr(c) for c in classes[counts < 2][:5])
        return done([], f"class {lone} has only one member; label check needs at least two per class")
    X = label_features(df, infos, label_column, profile)[have]
    if X.shape[1] == 0:
        return done([], "no usable feature columns for a label model")
    n_splits = int(max(2, min(cv, counts.min())))
    from sklearn.base import clone
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    est = clone(estimator) if estimator is not None else default_label_model()
    folds = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=random_state)
    probs = cross_val_predict(est, X, y, cv=folds, method="predict_proba", n_jobs=n_jobs)
    pred = probs.argmax(axis=1)
    acc = float((pred == y).mean())
    base = float(counts.max() / counts.sum())
    if acc - base <= min_lift * math.sqrt(base * (1 - base) / len(y)):
        return done([], f"the label model predicts no better than the majority class "
                        f"(accuracy {acc:.2f} vs {base:.2f}); labels not checked", None)
    issues = confident_learning(probs, y, method)
    rows = df.index.to_numpy()[have]
    idx = np.flatnonzero(issues)
    p_given = probs[idx, y[idx]]
    alt = probs[idx].copy()
    alt[np.arange(len(idx)), y[idx]] = -1.0
    best = alt.argmax(axis=1)
    p_best = alt[np.arange(len(idx)), best]
    msgs = [
        f"label {classes[g]!r} is unlikely (p={pg:.2f}); the model prefers {classes[b]!r} (p={pb:.2f})"
        for g, b, pg, pb in zip(y[idx].tolist(), best.tolist(), p_given.tolist(), p_best.tolist())
    ]
    sugg = [str(classes[b]) for b in best.tolist()]
    flags = make_flags(rows[idx], label_column, "label", "high", 1.0 - p_given, msgs, sugg)
    full = None
    if return_probs:
        full = np.full((len(df), len(classes)), np.nan)
        full[have] = probs
    return done(flags, None, full)
