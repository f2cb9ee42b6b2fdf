"""The data-quality checks (`hitl_desktop.core.checks`) as pipeline stages, and the project state they read.

* `validate` (per batch, in builtin.py) runs the cell checks through `check_batch` below: missing, type,
  out_of_range, category and the user rules, against the project's column profile; it also emits row
  fingerprints. Its cache key includes the profile and the rules (`checks_context`), so an edit re-checks only the
  edited batch, while pinning a schema, refreshing the profile or changing a rule re-checks every batch.
* `duplicates` (whole project) reads every batch's fingerprints (16 bytes a row) and flags exact and near
  duplicates within and across batches. It is cheap, so it re-runs after any edit.
* `labels` (whole project) fits the label model on the *cleaned* tables (out-of-fold probabilities, confident
  learning). It keeps its fold models and refits only when at least `refit_fraction` of the rows changed (features
  or label) since the last fit; otherwise only the changed rows are re-predicted by the fold model that did not
  see them. Why nothing was checked (one class, a class of one member, ...) becomes a run note.

Project state: the auto profile of a source version in meta `checks.profile.<source id>` (computed from the data,
with edits, on first use; `hitl profile DIR refresh` recomputes it), the pinned schema in meta `checks.schema`
(`hitl profile DIR pin|unpin`), the rules in the `rules` table (`hitl rules DIR ...`).
"""
from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import select

from .. import db
from ..util import canonical_json, sha256_text
from .model_stages import _as_arrow, _combine
from .context import StageContext
from .stage import Param, Stage

SCHEMA_KEY = "checks.schema"
PROFILE_KEY = "checks.profile."
PROFILE_SAMPLE_ROWS = 200_000
FLAG_COLUMNS = ["row_id", "column", "kind", "severity", "score", "message", "suggestion", "value_key"]
ROW_FLAG_KINDS = ("duplicate", "label")  # stored by the whole-project stages


# --- profile and schema -----------------------------------------------------------------------------------------


def _profile_params(params: dict[str, Any] | None) -> dict[str, Any]:
    from ..checks.profile import DEFAULTS

    p = params or {}
    out = dict(DEFAULTS)
    for k in ("k", "category_max"):
        if p.get(k) is not None:
            out[k] = p[k]
    return out


def compute_profile(project, source, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Profile of a source version's current data (edits applied), from a fixed-seed sample of rows."""
    from ..checks import profile_columns

    df = _profile_sample(project, source)
    infos = {c.name: c.logical for c in source.columns}
    prof = profile_columns(df, infos, **_profile_params(params))
    prof["source"] = source.id
    return prof


def _profile_sample(project, source) -> pd.DataFrame:
    """The source's rows (edits applied), or a fixed-seed sample of PROFILE_SAMPLE_ROWS of them when larger. The
    sample is taken from the Arrow table before conversion, so a large source is never converted whole."""
    from ..batches import _apply_overrides, _to_pandas, load_source

    reader = project.reader(source.data_file)
    n = int(source.row_count or 0)
    with project.read() as conn:
        n_batches = conn.execute(select(db.batches.c.id).where(db.batches.c.source_id == source.id)).all()
    if n <= PROFILE_SAMPLE_ROWS or len(n_batches) != reader.num_record_batches:
        df = load_source(project, source.id)
        if len(df) > PROFILE_SAMPLE_ROWS:
            idx = np.sort(np.random.default_rng(0).choice(len(df), PROFILE_SAMPLE_ROWS, replace=False))
            df = df.iloc[idx]
        return df
    table = reader.read_all()
    if table.num_rows != n:
        return load_source(project, source.id).iloc[
            np.sort(np.random.default_rng(0).choice(table.num_rows, PROFILE_SAMPLE_ROWS, replace=False))]
    idx = np.sort(np.random.default_rng(0).choice(n, PROFILE_SAMPLE_ROWS, replace=False))
    df = _to_pandas(table.take(idx))
    df.index = pd.Index(source.row_offset + idx, name="row")
    with project.read() as conn:
        ov = [(r.row_id, r.column, r.value) for r in conn.execute(
            select(db.overrides.c.row_id, db.overrides.c.column, db.overrides.c.value)
            .join(db.batches, db.batches.c.id == db.overrides.c.batch_id)
            .where(db.batches.c.source_id == source.id))]
    if ov:
        ids = set(df.index.tolist())
        _apply_overrides(df, source, [o for o in ov if o[0] in ids])
    return df


def auto_profile(project, source, params: dict[str, Any] | None = None, refresh: bool = False) -> dict[str, Any]:
    """The stored auto profile of this source version (computed and stored on first use)."""
    opts = _profile_params(params)
    key = PROFILE_KEY + str(source.id)
    if not refresh:
        raw = project.meta(key)
        if raw:
            try:
                prof = json.loads(raw)
                if prof.get("params") == json.loads(canonical_json(opts)):
                    return prof
            except ValueError:
                pass
    prof = json.loads(canonical_json(compute_profile(project, source, opts)))
    if not project.read_only:
        with project.write() as conn:
            project.set_meta(conn, key, canonical_json(prof))
    return prof


def pinned_schema(project) -> dict[str, Any] | None:
    raw = project.meta(SCHEMA_KEY)
    return json.loads(raw) if raw else None


def effective_profile(project, source, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Pinned schema columns over the auto profile (a column the schema lacks is profiled from the data)."""
    prof = auto_profile(project, source, params)
    pinned = pinned_schema(project)
    if not pinned:
        return prof
    cols = dict(prof.get("columns", {}))
    for name, c in (pinned.get("columns") or {}).items():
        cols[name] = {**c, "pinned": True}
    return {**prof, "columns": cols, "pinned": True}


def save_schema(project, schema: dict[str, Any], user: str, action: str, payload: dict[str, Any]) -> None:
    """Store the pinned schema (meta `checks.schema`) with an audit entry; the next run re-checks every batch."""
    from .. import audit

    with project.write() as conn:
        project.set_meta(conn, SCHEMA_KEY, canonical_json(schema))
        audit.append(conn, user, action, "schema", payload)


def label_check_note(project, pipeline: str | None = None) -> str | None:
    """Why the last label check flagged nothing (or None when it ran, or never ran)."""
    from .cache import ResultStore
    from .spec import DEFAULT_PIPELINE, last_steps

    ok = last_steps(project, pipeline or DEFAULT_PIPELINE).get("labels", {}).get("ok")
    if not ok or not ok.get("key"):
        return None
    with project.read() as conn:
        r = conn.execute(select(db.results.c.path, db.results.c.sha256, db.results.c.kind)
                         .where(db.results.c.key == ok["key"])).first()
    if r is None:
        return None
    try:
        rep = ResultStore(project.path, writable=False).load(ok["key"], r.path, r.sha256, r.kind).get("report") or {}
    except Exception:
        return None
    return f"labels not checked: {rep['reason']}" if rep.get("reason") else None


# --- rules --------------------------------------------------------------------------------------------------------


def stored_rules(project) -> list[dict[str, Any]]:
    with project.read() as conn:
        rows = conn.execute(select(db.rules).order_by(db.rules.c.name)).all()
    out = []
    for r in rows:
        p = json.loads(r.params_json or "{}")
        out.append({"id": r.id, "name": r.name, "column": r.column, "kind": r.kind, "value": p.get("value"),
                    "severity": p.get("severity", "medium"), "message": p.get("message"),
                    "created_by": r.created_by, "created_at": r.created_at})
    return out


def _rule_objects(rules: list[dict[str, Any]], columns) -> list[Any]:
    from ..checks import Rule, validate_rule

    out = []
    cols = set(map(str, columns))
    for r in rules:
        if r["column"] not in cols:
            continue
        v = r.get("value")
        if isinstance(v, list):
            v = tuple(v)
        out.append(validate_rule(Rule(r["column"], r["kind"], v, r["name"], r.get("severity") or "medium",
                                      r.get("message"))))
    return out


def checks_context(project, source, params: dict[str, Any]) -> dict[str, Any]:
    """What `validate` reads besides the batch: the effective profile and the rules (both in its cache key)."""
    rules = [{k: r[k] for k in ("name", "column", "kind", "value", "severity", "message")}
             for r in stored_rules(project)]
    return {"profile": effective_profile(project, source, params), "rules": rules}


# --- validate: the per-batch cell checks ----------------------------------------------------------------------------


def value_key(kind: str, column: str | None, row_id: int, value: Any) -> str:
    """Identity of a flagged value: a dismissed flag stays dismissed while this key is unchanged."""
    text = "" if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA else str(value)
    return sha256_text(f"{kind}\x1f{column}\x1f{row_id}\x1f{text}")


def exact_row_hash(df: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """uint64 per row over the raw cell texts (distinguishes exact from near duplicates)."""
    acc = np.zeros(len(df), dtype=np.uint64)
    for i, c in enumerate(columns):
        s = df[c]
        if pd.api.types.is_numeric_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype):
            h = pd.util.hash_array(s.to_numpy(dtype="float64", na_value=np.nan) + 0.0)
        else:
            codes, uniq = pd.factorize(s, use_na_sentinel=True)
            uh = pd.util.hash_array(np.asarray([str(u) for u in uniq], dtype=object), categorize=False) \
                if len(uniq) else np.zeros(0, dtype=np.uint64)
            h = np.append(uh, np.uint64(0x9E3779B97F4A7C15))[codes]
        acc = acc * np.uint64(1000003) ^ (h + np.uint64(i))
    return acc


def _value_text(value: Any) -> str:
    return "" if value is None or (isinstance(value, float) and value != value) or value is pd.NA else str(value)


def value_keys(kind: Any, column: Any, row_ids: Any, values: Any) -> list[str]:
    """`value_key` of many flags at once (kind and column may be scalars or sequences)."""
    import hashlib

    n = len(row_ids)
    kinds = [kind] * n if isinstance(kind, str) else kind
    columns = [column] * n if column is None or isinstance(column, str) else column
    sha = hashlib.sha256
    return [sha(f"{k}\x1f{c}\x1f{int(r)}\x1f{_value_text(v)}".encode("utf-8")).hexdigest()
            for k, c, r, v in zip(kinds, columns, row_ids, values)]


def flags_to_frame(flags: list[Any], df: pd.DataFrame) -> pd.DataFrame:
    """Flag objects -> the stored table (FLAG_COLUMNS), with the value key of each flagged cell (built column-wise:
    the flagged values are taken per column by position, the keys hashed in one pass)."""
    if not flags:
        return empty_flags()
    n = len(flags)
    rows = np.fromiter((f.row for f in flags), dtype=np.int64, count=n)
    columns = [f.column for f in flags]
    kinds = [f.kind for f in flags]
    values = np.full(n, None, dtype=object)
    col_codes, col_uniq = pd.factorize(pd.Series(columns, dtype=object), use_na_sentinel=True)
    for code, col in enumerate(col_uniq):
        if col not in df.columns:
            continue
        idxs = np.flatnonzero(col_codes == code)
        pos = df.index.get_indexer(rows[idxs])
        s = df[col]
        vals = s.iloc[pos[pos >= 0]].tolist()
        if (pos < 0).any():  # a row missing from the frame: no value, as .loc would have failed anyway
            raise KeyError(f"flagged rows not in the batch: {rows[idxs][pos < 0][:5].tolist()}")
        values[idxs] = vals if len(vals) != 1 else [vals[0]]
    return pd.DataFrame({
        "row_id": rows, "column": columns, "kind": kinds, "severity": [f.severity for f in flags],
        "score": np.fromiter((float(f.score) for f in flags), dtype=np.float64, count=n),
        "message": [f.message for f in flags], "suggestion": [f.suggestion for f in flags],
        "value_key": value_keys(kinds, columns, rows.tolist(), values.tolist()),
    }, columns=FLAG_COLUMNS)


def empty_flags(with_batch: bool = False) -> pd.DataFrame:
    cols = {"row_id": pd.Series([], dtype="int64"), "column": pd.Series([], dtype=object),
            "kind": pd.Series([], dtype=object), "severity": pd.Series([], dtype=object),
            "score": pd.Series([], dtype="float64"), "message": pd.Series([], dtype=object),
            "suggestion": pd.Series([], dtype=object), "value_key": pd.Series([], dtype=object)}
    if with_batch:
        cols = {"batch_id": pd.Series([], dtype="int64"), **cols}
    return pd.DataFrame(cols)


def run_cell_checks_batch(df: pd.DataFrame, columns: list[Any], label: str | None, params: dict[str, Any],
                          context: dict[str, Any] | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(flags table, fingerprints table) of one batch: every check but duplicates and the label model."""
    from ..checks.duplicates import row_fingerprints
    from ..checks.rules import apply_rules
    from ..checks.run import check_columns
    from ..checks.types import normalize_infos

    context = context or {}
    prof = context.get("profile") or {}
    cols_prof = prof.get("columns") or {}
    opts = _profile_params(params)
    types = normalize_infos(df, {c.name: c.logical for c in columns if c.name in df.columns})
    skip = set()
    if not params.get("check_missing", True):
        skip.add("missing")
    if not params.get("check_types", True):
        skip.add("type")
    if not params.get("check_ranges", True):
        skip.add("out_of_range")
    if not params.get("check_categories", True):
        skip.add("category")
    sev_missing = params.get("missing_severity", "low")
    found, parsed_all, _ = check_columns(df, types, cols_prof, opts)
    flags: list[Any] = []
    for f in found:
        if f.kind in skip:
            continue
        if f.kind == "missing":
            sev = "high" if f.column == label else sev_missing
            msg = f"missing value in '{f.column}'" + (" (the label)" if f.column == label else "")
            f = type(f)(f.row, f.column, f.kind, sev, f.score, msg, f.suggestion)
        flags.append(f)
    rules = _rule_objects(context.get("rules") or [], df.columns)
    if rules:
        flags += apply_rules(df, rules, types)
    exclude = [c for c in (params.get("duplicate_exclude") or []) if c in df.columns]
    fp = row_fingerprints(df, types, exclude, parsed_all)
    ex = exact_row_hash(df, [c for c in df.columns if c not in set(exclude)])
    fps = pd.DataFrame({"row_id": df.index.to_numpy(dtype="int64"), "fp": fp, "exact": ex})
    return flags_to_frame(flags, df), fps


# --- duplicates: whole project ------------------------------------------------------------------------------------


def _first_occurrences(fp: np.ndarray, batch: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(positions whose fingerprint occurred before, the position of that first occurrence), positions
    ascending. With `batch`, only occurrences within the same batch count.

    One hash pass marks the repeats (`duplicated`, about 3x cheaper than factorising every fingerprint); only the
    rows holding a repeated value are then factorised to find each value's first row."""
    keys: Any = fp if batch is None else pd.MultiIndex.from_arrays([batch, fp])
    repeat = np.asarray(pd.Series(fp).duplicated() if batch is None else keys.duplicated(), dtype=bool)
    dup = np.flatnonzero(repeat)
    if len(dup) == 0:
        return dup, dup
    if batch is None:
        involved = np.flatnonzero(pd.Series(fp).isin(fp[dup]).to_numpy())
        codes = pd.factorize(fp[involved])[0]
    else:
        involved = np.flatnonzero(keys.isin(keys[dup]))
        codes = pd.factorize(keys[involved])[0]
    _, first_of_code = np.unique(codes, return_index=True)
    first = involved[first_of_code[codes[np.searchsorted(involved, dup)]]]
    return dup, first


class Duplicates(Stage):
    """Exact and near-duplicate rows within and across batches, from validate's row fingerprints."""

    name = "duplicates"
    version = "1"
    inputs = ("fingerprints",)
    outputs = {"flags": "table"}
    params = {
        "cross_batch": Param(bool, True, help="also flag rows repeating a row of an earlier batch"),
        "severity": Param(str, "medium", choices=("low", "medium", "high")),
    }
    stores_flags = True
    flag_kinds = ("duplicate",)
    code_deps = (value_key, value_keys, _value_text, empty_flags, _first_occurrences)

    def run(self, ctx: StageContext, inputs: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        from ..checks.types import DROP_DUPLICATE

        fps: dict[int, pd.DataFrame] = inputs["fingerprints"]
        order = [b for b in inputs["meta"]["batches"] if b in fps]
        if not order:
            return {"flags": empty_flags(True)}
        bid = np.concatenate([np.full(len(fps[b]), b, dtype=np.int64) for b in order])
        rows = np.concatenate([fps[b]["row_id"].to_numpy(dtype=np.int64) for b in order])
        fp = np.concatenate([fps[b]["fp"].to_numpy(dtype=np.uint64) for b in order])
        ex = np.concatenate([fps[b]["exact"].to_numpy(dtype=np.uint64) for b in order])
        if len(fp) == 0:
            return {"flags": empty_flags(True)}
        dup, f = _first_occurrences(fp, bid if not params["cross_batch"] else None)
        if len(dup) == 0:
            return {"flags": empty_flags(True)}
        same_batch = bid[f] == bid[dup]
        exact = ex[f] == ex[dup]
        score = np.where(same_batch, np.where(exact, 1.0, 0.9), 0.95)
        msgs = [(f"{'exact' if e else 'near-'} duplicate of row {r}".replace("near- ", "near-") if sb
                 else f"duplicate of row {r} in batch {b}")
                for e, sb, r, b in zip(exact.tolist(), same_batch.tolist(), rows[f].tolist(), bid[f].tolist())]
        out = pd.DataFrame({
            "batch_id": bid[dup], "row_id": rows[dup], "column": pd.Series([None] * len(dup), dtype=object),
            "kind": "duplicate", "severity": params["severity"], "score": score, "message": msgs,
            "suggestion": DROP_DUPLICATE,
            "value_key": value_keys("duplicate", None, rows[dup].tolist(), [f"{h:x}" for h in fp[dup].tolist()]),
        })
        ctx.report(1.0, f"{len(dup)} duplicate rows")
        return {"flags": out}


# --- labels: whole project ----------------------------------------------------------------------------------------


def _row_hash(X: np.ndarray) -> np.ndarray:
    if X.shape[1] == 0:
        return np.zeros(len(X), dtype=np.uint64)
    return pd.util.hash_pandas_object(pd.DataFrame(X), index=False).to_numpy(dtype=np.uint64)


class Labels(Stage):
    """Label errors: out-of-fold probabilities on the cleaned tables, confident learning (per-class thresholds)."""

    name = "labels"
    version = "1"
    inputs = ("table",)
    outputs = {"flags": "table", "state": "object", "report": "metrics"}
    params = {
        "folds": Param(int, 5, min=2, max=20, help="cross-validation folds for out-of-fold probabilities"),
        "method": Param(str, "prune_by_noise_rate", choices=("prune_by_noise_rate", "confident_joint", "both"),
                        help="confident-learning rule"),
        "min_lift": Param(float, 3.0, min=0.0, max=100.0,
                          help="the model must beat the majority class by this many standard errors"),
        "refit_fraction": Param(float, 0.05, min=0.0, max=1.0,
                                help="refit when at least this share of rows changed since the last fit "
                                     "(0: refit on every change)"),
        "C": Param(float, 1.0, min=1e-6, max=1e6, help="inverse regularisation of the logistic model"),
        "max_iter": Param(int, 500, min=10, max=100000),
        "seed": Param(int, 0, min=0),
        "enabled": Param(bool, True, help="run the label model at all"),
    }
    stores_flags = True
    flag_kinds = ("label",)
    wants_previous = True
    #: the cleaned batches arrive as Arrow tables (memory-mapped cache files), combined and converted to one
    #: DataFrame at once: with 2,000 batches, a DataFrame per batch cost 2.5 s and enough Python objects to make
    #: the garbage collector pause the window
    arrow_inputs = ("table",)
    code_deps = (_row_hash, empty_flags, value_key, value_keys, _value_text, _combine, _as_arrow)

    def plan_context(self, project, source, params: dict[str, Any]) -> dict[str, Any] | None:
        if not params.get("enabled", True) or not source.label:
            return None
        return {"profile": effective_profile(project, source, None)}

    def run(self, ctx: StageContext, inputs: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        meta = inputs["meta"]
        label = meta["label"]
        tables: dict[int, Any] = inputs["table"]  # Arrow tables (or DataFrames from other callers)
        order = [b for b in meta["batches"] if b in tables]

        def skip(reason: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
            ctx.note(f"labels not checked: {reason}")
            return {"flags": empty_flags(True), "state": None,
                    "report": {"reason": reason, "refitted": False, "rows": 0, **(extra or {})}}

        if not params["enabled"]:
            return skip("the label check is turned off (labels.enabled = false)")
        if not label:
            return skip("the source has no label column (import with --label COLUMN)")
        nonempty = {b: tables[b] for b in order if len(tables[b])}
        if not nonempty:
            return skip("no rows")
        table, row_ids, index_name, used, _ = _combine(nonempty, {})  # in batch id order
        df = table.to_pandas()
        df.index = pd.Index(row_ids, name=index_name)
        bids = np.concatenate([np.full(used[b], b, dtype=np.int64) for b in sorted(nonempty)])
        if label not in df.columns:
            return skip(f"label column '{label}' is not in the data")
        return _label_check(ctx, df, bids, meta, label, params, (inputs.get("context") or {}).get("profile"),
                            inputs.get("previous"))


def _label_check(ctx: StageContext, df: pd.DataFrame, bids: np.ndarray, meta: dict[str, Any], label: str,
                 params: dict[str, Any], profile: dict[str, Any] | None, previous: Any) -> dict[str, Any]:
    from sklearn.base import clone
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from ..checks import confident_learning, label_features, profile_columns
    from ..checks.labels import _labels
    from ..checks.types import normalize_infos

    def skip(reason: str) -> dict[str, Any]:
        ctx.note(f"labels not checked: {reason}")
        return {"flags": empty_flags(True), "state": None,
                "report": {"reason": reason, "refitted": False, "rows": int(len(df))}}

    infos = {c.name: c.logical for c in meta["columns"] if c.name in df.columns}
    types = normalize_infos(df, infos)
    if profile is None:
        profile = profile_columns(df, infos)
    lprof = (profile.get("columns") or {}).get(label) or {}
    codes, class_names = _labels(df[label], types[label], lprof)
    have = codes >= 0
    if not have.any():
        return skip("the label column is empty")
    used, y = np.unique(codes[have], return_inverse=True)
    classes = [str(class_names[c]) for c in used]
    if len(classes) < 2:
        return skip(f"the label column has a single class ({classes[0]!r}); nothing to compare")
    counts = np.bincount(y, minlength=len(classes))
    if counts.min() < 2:
        lone = ", ".join(repr(c) for c in np.asarray(classes, dtype=object)[counts < 2][:5])
        return skip(f"class {lone} has only one member; the label check needs at least two per class")
    ctx.report(0.05, "cleaning features")
    X = label_features(df, infos, label, profile)
    if X.shape[1] == 0:
        return skip("no usable feature columns for a label model")
    row_ids = df.index.to_numpy(dtype=np.int64)
    if not have.all():  # (no copy of the matrix when every row has a label)
        X, row_ids, bids = X[have], row_ids[have], bids[have]
    fh = _row_hash(X)
    sig = {"classes": classes, "width": int(X.shape[1]),
           "params": {k: params[k] for k in ("folds", "method", "C", "max_iter", "seed")}}
    state = previous.get("state") if isinstance(previous, dict) else None
    refit, changed = True, len(y)
    if isinstance(state, dict) and state.get("sig") == sig:
        pos = pd.Index(state["row_ids"]).get_indexer(row_ids)
        known = pos >= 0
        same_x = np.zeros(len(y), dtype=bool)
        same_x[known] = state["fh"][pos[known]] == fh[known]
        same_y = np.zeros(len(y), dtype=bool)
        same_y[known] = state["y"][pos[known]] == y[known]
        removed = len(state["row_ids"]) - int(known.sum())
        changed = int((~(same_x & same_y)).sum()) + removed
        refit = changed / max(1, len(state["row_ids"])) >= params["refit_fraction"] and changed > 0
    if refit:
        n_splits = int(max(2, min(params["folds"], counts.min())))
        est = make_pipeline(StandardScaler(), LogisticRegression(max_iter=params["max_iter"], C=params["C"]))
        kf = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=params["seed"])
        probs = np.zeros((len(y), len(classes)))
        fold = np.zeros(len(y), dtype=np.int16)
        models = []
        for i, (tr, te) in enumerate(kf.split(X, y)):
            ctx.check_cancelled()
            ctx.report(0.1 + 0.8 * i / n_splits, f"fold {i + 1}/{n_splits}")
            m = clone(est).fit(X[tr], y[tr])
            p = m.predict_proba(X[te])
            probs[np.ix_(te, m.classes_)] = p
            fold[te] = i
            models.append(m)
        state = {"sig": sig, "row_ids": row_ids, "fh": fh, "y": y.astype(np.int64), "probs": probs, "fold": fold,
                 "models": models}
        msg = f"refitted the label model on {len(y)} rows ({n_splits} folds)"
    else:
        probs = state["probs"][np.where(pos >= 0, pos, 0)].copy()
        redo = np.flatnonzero(~(known & same_x))
        if len(redo):
            models = state["models"]
            f_of = np.where(known[redo], state["fold"][pos[redo].clip(0)], -1)
            for i, m in enumerate(models):
                sel = redo[f_of == i]
                if len(sel):
                    probs[np.ix_(sel, m.classes_)] = m.predict_proba(X[sel])
            new = redo[f_of < 0]
            if len(new):
                acc_p = np.zeros((len(new), len(classes)))
                for m in models:
                    acc_p[:, m.classes_] += m.predict_proba(X[new])
                probs[new] = acc_p / len(models)
        msg = (f"kept the label model ({changed} of {len(state['row_ids'])} rows changed since the last fit, below "
               f"refit_fraction {params['refit_fraction']}); re-predicted {len(redo)} changed rows")
    ctx.note(msg)
    pred = probs.argmax(axis=1)
    acc = float((pred == y).mean())
    base = float(counts.max() / counts.sum())
    report = {"reason": None, "refitted": bool(refit), "changed": int(changed), "rows": int(len(y)),
              "classes": classes, "accuracy": round(acc, 4), "majority": round(base, 4)}
    if acc - base <= params["min_lift"] * math.sqrt(base * (1 - base) / len(y)):
        reason = (f"the label model predicts no better than the majority class (accuracy {acc:.2f} vs "
                  f"{base:.2f}); labels not checked")
        ctx.note(reason)
        return {"flags": empty_flags(True), "state": state, "report": {**report, "reason": reason}}
    issues = confident_learning(probs, y, params["method"])
    idx = np.flatnonzero(issues)
    p_given = probs[idx, y[idx]]
    alt = probs[idx].copy()
    alt[np.arange(len(idx)), y[idx]] = -1.0
    best = alt.argmax(axis=1)
    p_best = alt[np.arange(len(idx)), best]
    if len(idx) == 0:
        out = empty_flags(True)
    else:  # column-wise: no Flag object per row
        cls = np.asarray(classes, dtype=object)
        given, sugg = cls[y[idx]].tolist(), cls[best].tolist()
        msgs = [f"label {g!r} is unlikely (p={pg:.2f}); the model prefers {b!r} (p={pb:.2f})"
                for g, b, pg, pb in zip(given, sugg, p_given.tolist(), p_best.tolist())]
        rows = row_ids[idx]
        out = pd.DataFrame({
            "batch_id": bids[idx].astype(np.int64), "row_id": rows.astype(np.int64), "column": [label] * len(idx),
            "kind": ["label"] * len(idx), "severity": ["high"] * len(idx),
            "score": np.clip(1.0 - p_given, 0.0, 1.0).round(4), "message": msgs, "suggestion": sugg,
            "value_key": value_keys("label", label, rows.tolist(), given)}, columns=["batch_id"] + FLAG_COLUMNS)
    report["flagged"] = int(len(idx))
    ctx.report(1.0, f"{len(idx)} likely label errors")
    return {"flags": out, "state": state, "report": report}


Labels.code_deps = Labels.code_deps + (_label_check,)
CHECK_STEPS = ("validate", "duplicates", "labels")

__all__ = ["CHECK_STEPS", "Duplicates", "Labels", "SCHEMA_KEY", "auto_profile", "checks_context", "compute_profile",
           "effective_profile", "pinned_schema", "run_cell_checks_batch", "stored_rules", "value_key"]
