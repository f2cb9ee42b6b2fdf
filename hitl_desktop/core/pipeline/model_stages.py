"""Model stages: featurize, train, evaluate, export (Qt-free; see docs/models.md).

* `featurize` gathers the cleaned rows of the selected batches — with `select=approved` only batches whose approval
  is *valid* (signed, data unchanged since: `approvals.approval_states`) — drops rows whose duplicate flag was accepted
  ("drop duplicate"), types every column for the model (number / boolean / category; dates are left out) and
  splits off a stratified held-out part with a fixed seed. Both the valid approvals and the dropped rows are part
  of its cache key (plan context), so an accepted duplicate or an invalidated approval makes it stale. It reads
  the cleaned batches as memory-mapped Arrow tables and types each column straight from them (the frame equals
  `model_frame` of the same rows); its result is written to the cache while `train` fits on it.
* `train` fits a scikit-learn `Pipeline` (a `ColumnTransformer` imputing, one-hot encoding and — for logistic
  regression — scaling, then the estimator) on the training part, in a worker process (cancellable), or — a short
  fit (`short_fit`) — in a thread of this process on one BLAS/OpenMP thread. Fixed seeds make the fit, and the
  pickled model, byte-identical for the same inputs.
* `evaluate` cross-validates the same recipe on the training part and scores the trained model on the held-out
  part: accuracy, balanced accuracy, macro F1, ROC AUC where defined, per-class precision/recall, confusion matrix.
* `export` is the pipeline's packaging slot (model + schema); the signed export bundle is `core.models.export`.

The raw-row contract shared with prediction lives here too: `model_frame(df, schema)` turns rows (from the
project, or a CSV a user hands to `hitl predict`) into exactly the frame the model was fitted on.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from .context import StageContext
from .stage import Param, Stage

ESTIMATORS = ("logreg", "forest", "hgb")
MISSING_CATEGORY = "(missing)"
_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f"}


# --- the raw-row contract ----------------------------------------------------------------------------------------


class SchemaError(ValueError):
    """Input rows do not fit a model's schema (one line: which column, which row, what was expected)."""


def _column_kind(logical: str | None, dtype: Any) -> str | None:
    """number | boolean | category, or None for columns a model does not use (dates)."""
    if logical in ("integer", "float"):
        return "number"
    if logical == "boolean" or pd.api.types.is_bool_dtype(dtype):
        return "boolean"
    if logical == "datetime" or pd.api.types.is_datetime64_any_dtype(dtype):
        return None
    if pd.api.types.is_numeric_dtype(dtype):
        return "number"
    return "category"


def _as_category(s: pd.Series, missing: Any = np.nan) -> np.ndarray:
    """Object array of str, `missing` where the value is missing."""
    mask = s.isna().to_numpy()
    out = s.astype(str).to_numpy(dtype=object)
    if mask.any():
        out[mask] = missing
    return out


def model_frame(df: pd.DataFrame, schema: dict[str, Any], strict: bool = False,
                row_labels: Any = None) -> pd.DataFrame:
    """The model's input frame from rows holding the schema's columns (extra columns are ignored).

    With `strict` (rows from outside the project, e.g. a CSV for `hitl predict`) values are parsed from text and
    anything that does not fit raises a one-line SchemaError naming the column and the first offending row.
    """
    cols = schema["columns"]
    missing = [c["name"] for c in cols if c["name"] not in df.columns]
    if missing:
        more = f" (and {len(missing) - 1} more: {', '.join(missing[1:4])})" if len(missing) > 1 else ""
        raise SchemaError(f"the input has no column '{missing[0]}'{more}; the model needs: "
                          f"{', '.join(c['name'] for c in cols)}")
    labels = np.asarray(row_labels if row_labels is not None else np.arange(len(df)) + 1)
    data = {c["name"]: _frame_column(df[c["name"]], c, strict, labels) for c in cols}
    return pd.DataFrame(data, index=df.index)


def _frame_column(s: pd.Series, c: dict[str, Any], strict: bool, labels: np.ndarray) -> Any:
    """One column of the model frame: float64 values for number/boolean, a pandas Categorical for category."""
    name, kind = c["name"], c["type"]
    if kind == "number":
        if strict and not pd.api.types.is_numeric_dtype(s.dtype) or pd.api.types.is_bool_dtype(s.dtype):
            text = s.astype("string").str.strip()
            v = pd.to_numeric(text, errors="coerce")
            bad = (v.isna() & text.notna() & (text != "")).to_numpy()
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise SchemaError(f"column '{name}' should hold numbers, but row {labels[i]} holds "
                                  f"{text.iloc[i]!r}" + (f" ({int(bad.sum())} such rows)" if bad.sum() > 1 else ""))
            s = v
        return pd.to_numeric(s, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    if kind == "boolean":
        if pd.api.types.is_bool_dtype(s.dtype) and not s.isna().any():
            return s.to_numpy(dtype="float64")
        text = s.astype("string").str.strip().str.lower()
        v = np.full(len(s), np.nan)
        t, f = text.isin(_TRUE).to_numpy(dtype=bool), text.isin(_FALSE).to_numpy(dtype=bool)
        v[t], v[f] = 1.0, 0.0
        bad = ~(t | f) & text.notna().to_numpy(dtype=bool) & (text != "").fillna(False).to_numpy(dtype=bool)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise SchemaError(f"column '{name}' should hold true/false, but row {labels[i]} holds "
                              f"{s.iloc[i]!r}")
        return v
    # a missing text value is its own category (the exported ONNX model expects this text too);
    # pandas Categorical: the one-hot encoder sees the same strings, and the frame pickles ~10x faster
    # to the fit worker and the cache than an object column
    return pd.Categorical(_as_category(s, MISSING_CATEGORY))


# --- the same frame straight from Arrow (featurize) ------------------------------------------------------------------


def _is_text(t: Any) -> bool:
    import pyarrow as pa

    return pa.types.is_string(t) or pa.types.is_large_string(t) or getattr(pa.types, "is_string_view", bool)(t)


def _is_number(t: Any) -> bool:
    import pyarrow as pa

    return pa.types.is_integer(t) or pa.types.is_floating(t)


def _isna(col: Any, dtype: Any) -> Any:
    """pandas' isna of an Arrow column as DataFrame conversion types it (NaN counts where that is a numpy float)."""
    import pyarrow.compute as pc

    nan = isinstance(dtype, np.dtype) and dtype.kind == "f" and _is_number(col.type)
    return pc.is_null(col, nan_is_null=nan)


def _count(mask: Any) -> int:
    import pyarrow.compute as pc

    return int(pc.sum(mask).as_py() or 0)


def _sorted_codes(col: Any) -> tuple[list[str], np.ndarray]:
    """(sorted distinct values, the code of each value in that list) of a text column without nulls."""
    import pyarrow.compute as pc

    enc = pc.dictionary_encode(col.combine_chunks() if hasattr(col, "combine_chunks") else col)
    values = enc.dictionary.to_pylist()
    order = sorted(range(len(values)), key=values.__getitem__)
    remap = np.empty(len(values), dtype=np.intp)
    remap[order] = np.arange(len(values))
    idx = enc.indices.to_numpy(zero_copy_only=False)
    return [values[i] for i in order], remap[idx] if len(values) else idx.astype(np.intp)


def _arrow_column(col: Any, c: dict[str, Any], dtype: Any, series: Any) -> Any:
    """`_frame_column` of an Arrow column: computed in Arrow for numbers, booleans and text (the frame is equal to
    the one `model_frame` makes from the DataFrame conversion); other types go through that conversion
    (`series()`)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    kind, t = c["type"], col.type
    if kind == "number" and _is_number(t) and not pd.api.types.is_bool_dtype(dtype):
        return np.asarray(pc.cast(col, pa.float64(), safe=False).to_numpy(), dtype="float64")
    if kind == "boolean" and pa.types.is_boolean(t):
        return np.asarray(pc.cast(col, pa.float64()).to_numpy(), dtype="float64")
    if kind == "category" and _is_text(t):
        values, codes = _sorted_codes(pc.fill_null(col, MISSING_CATEGORY))
        # the categories exactly as pd.Categorical(values) would type them
        cats = pd.Categorical(np.asarray(values, dtype=object)).categories
        return pd.Categorical.from_codes(codes, dtype=pd.CategoricalDtype(cats))
    return _frame_column(series(), c, False, np.arange(len(col)) + 1)


def _as_arrow(t: Any) -> Any:
    """(table without index columns, row ids, index name) of a cleaned batch: an Arrow table as the engine hands it
    (`arrow_inputs`), or a DataFrame indexed by row id from other callers."""
    import pyarrow as pa

    if not isinstance(t, pa.Table):
        t = pa.Table.from_pandas(t, preserve_index=True)
    meta = t.schema.pandas_metadata or {}
    idx = meta.get("index_columns") or []
    if len(idx) == 1 and isinstance(idx[0], str) and idx[0] in t.column_names:
        name = next((m.get("name") for m in meta.get("columns", []) if m.get("field_name") == idx[0]), idx[0])
        rows = t.column(idx[0]).to_numpy().astype(np.int64)  # a copy: no view of the cache file is kept
        return t.drop_columns([idx[0]]), rows, name
    df = t.to_pandas()  # any other index: as DataFrame conversion makes it
    return pa.Table.from_pandas(df, preserve_index=False), df.index.to_numpy(dtype="int64"), df.index.name


def _combine(tables: dict[int, Any], dropped: dict[int, list[int]]) -> tuple[Any, np.ndarray, Any, dict, int]:
    """The selected batches in batch order, rows whose duplicate was accepted dropped: (table, row ids, index
    name, {batch: rows used}, rows dropped)."""
    import pyarrow as pa

    parts, rows, used, n_dropped, name = [], [], {}, 0, None
    for b in sorted(tables):
        t, r, name = _as_arrow(tables[b])
        if b in dropped:
            keep = ~np.isin(r, dropped[b])
            n_dropped += int((~keep).sum())
            if not keep.all():
                t, r = t.filter(pa.array(keep)), r[keep]
        parts.append(t)
        rows.append(r)
        used[b] = t.num_rows
    try:
        table = pa.concat_tables(parts) if len(parts) > 1 else parts[0]
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # batches typed differently: as pandas would combine them
        table = pa.Table.from_pandas(pd.concat([t.to_pandas() for t in parts], ignore_index=True),
                                     preserve_index=False)
    return table, (np.concatenate(rows) if len(rows) > 1 else rows[0]), name, used, n_dropped


# --- featurize -----------------------------------------------------------------------------------------------------


def dropped_duplicate_rows(conn: Any, source_id: int) -> dict[int, list[int]]:
    """{batch: [row ids]} whose duplicate flag was accepted ("drop duplicate"): left out of training."""
    from sqlalchemy import and_, select

    from .. import db
    from ..flags import DROP_DUPLICATE

    F, B = db.flags, db.batches
    out: dict[int, list[int]] = {}
    for b, r in conn.execute(select(F.c.batch_id, F.c.row_id).join(B, B.c.id == F.c.batch_id).where(and_(
            B.c.source_id == source_id, F.c.status == "accepted", F.c.suggestion == DROP_DUPLICATE))
            .order_by(F.c.batch_id, F.c.row_id)):
        rows = out.setdefault(int(b), [])
        if not rows or rows[-1] != r:
            rows.append(int(r))
    return out


class _Soon:
    """fn(*args) started now, on a helper thread when `threaded`; `get()` waits for the value (or raises its
    error)."""

    def __init__(self, threaded: bool, fn: Any, args: tuple[Any, ...]) -> None:
        from .. import threads

        self._task = threads.start(fn, *args, name="hitl-featurize") if threaded else None
        self._value = None if threaded else fn(*args)

    def get(self) -> Any:
        return self._task.result() if self._task is not None else self._value


def _soon(threaded: bool, fn: Any, *args: Any) -> _Soon:
    return _Soon(threaded, fn, args)


def _stratified_holdout(codes: np.ndarray, n_classes: int, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of held-out rows: `fraction` of each class (a class keeps at least two training rows). `codes`
    index the sorted classes; classes are visited in that order."""
    hold = np.zeros(len(codes), dtype=bool)
    if fraction <= 0:
        return hold
    rng = np.random.default_rng(seed)
    for cls in range(n_classes):
        idx = np.flatnonzero(codes == cls)
        k = int(round(len(idx) * fraction))
        k = min(k, len(idx) - 2)
        if k > 0:
            hold[idx[rng.choice(len(idx), size=k, replace=False)]] = True
    return hold


class Featurize(Stage):
    """Rows of the validly approved batches (duplicates dropped), typed for the model, with a held-out split."""

    name = "featurize"
    version = "1"
    inputs = ("table",)
    outputs = {"features": "object"}
    params = {
        "select": Param(str, "approved", choices=("approved", "not_rejected", "all"),
                        help="which batches to train on: approved = validly approved only (signed, unchanged)"),
        "target": Param(str, None, nullable=True, help="target column (default: the source's label column)"),
        "exclude": Param(list, [], help="columns the model must not use (ids, free text)"),
        "max_categories": Param(int, 20, min=1, max=1000,
                                help="one-hot the most frequent N values per text column (rarer ones share one)"),
        "holdout": Param(float, 0.2, min=0.0, max=0.5, help="fraction of each class held out for evaluation"),
        "seed": Param(int, 0, min=0, help="seed of the held-out split"),
    }
    selects_batches = "select"
    #: the cleaned batches arrive as Arrow tables (memory-mapped), not DataFrames: see `_combine`, `_arrow_column`
    arrow_inputs = ("table",)
    #: the feature matrix (~80 bytes a row) is written to the cache while train fits on it
    store_in_background = True
    code_deps = (model_frame, _frame_column, _as_category, _column_kind, _is_text, _is_number, _isna, _count,
                 _sorted_codes, _arrow_column, _as_arrow, _combine, _stratified_holdout, dropped_duplicate_rows, _Soon,
                 _soon)

    def plan_context(self, project: Any, source: Any, params: dict[str, Any]) -> dict[str, Any]:
        from sqlalchemy import select

        from .. import approvals, db

        with project.read() as conn:
            ctx: dict[str, Any] = {"dropped_duplicates": {str(b): r for b, r in
                                                          dropped_duplicate_rows(conn, source.id).items()}}
            if params.get("select") == "approved":
                ids = list(conn.execute(select(db.batches.c.id).where(db.batches.c.source_id == source.id)
                                        .where(db.batches.c.status == "approved").order_by(db.batches.c.id))
                           .scalars())
                states = approvals.approval_states(conn, ids)
                ctx["valid_approvals"] = [b for b in ids if states[b][0] == "valid"]
        return ctx

    def run(self, ctx: StageContext, inputs: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        import pyarrow.compute as pc

        from .errors import StageFailed

        meta = inputs["meta"]
        context = inputs.get("context") or {}
        tables: dict[int, Any] = dict(inputs["table"])
        if params["select"] == "approved":
            valid = set(context.get("valid_approvals") or [])
            invalid = sorted(b for b in tables if b not in valid)
            if invalid:
                ctx.note(f"left out {len(invalid)} batch(es) marked approved whose approval is not valid "
                         f"(unsigned, or data changed since): {', '.join(map(str, invalid[:10]))}")
                for b in invalid:
                    tables.pop(b)
        if not tables:
            raise StageFailed(f"no batches to featurize (select={params['select']}): approve batches for training "
                              "or set the step's 'select' parameter")
        target = params["target"] or meta["label"]
        if not target:
            raise StageFailed("no target column: pass --target COLUMN (or import with --label COLUMN)")
        dropped = {int(b): r for b, r in (context.get("dropped_duplicates") or {}).items()}
        ctx.report(0.05, f"combining {len(tables)} batches")
        # the batches stay Arrow (memory-mapped cache files): columns are typed straight from them, one copy each
        table, row_ids, index_name, used, n_dropped = _combine(tables, dropped)
        if target not in table.column_names:
            raise StageFailed(f"target column '{target}' is not in the data (columns: "
                              f"{', '.join(map(str, table.column_names))})")
        dtypes = table.schema.empty_table().to_pandas().dtypes  # the types DataFrame conversion gives
        no_y = _isna(table.column(target), dtypes[target])
        missing_target = _count(no_y)
        if missing_target:
            has_y = pc.invert(no_y)
            table = table.filter(has_y)
            row_ids = row_ids[np.asarray(has_y.to_numpy(), dtype=bool)]
        n = table.num_rows
        if n == 0:
            raise StageFailed(f"every selected row has a missing target '{target}'")

        def series(name: str) -> pd.Series:
            return table.select([name]).to_pandas()[name]

        y_col = table.column(target)
        # dictionary encodings of text (the target, category columns) run in threads while this one types the
        # numbers: Arrow's kernels release the GIL (for large inputs only: a thread costs more than a small column)
        big = n >= 50_000
        label = _soon(big, _sorted_codes, y_col) if _is_text(y_col.type) else None
        infos = {c.name: c for c in meta["columns"]}
        exclude = set(params["exclude"] or [])
        columns, skipped, missing = [], [], {}
        for c in table.column_names:
            if c == target or c in exclude:
                if c != target:
                    skipped.append({"name": str(c), "why": "excluded"})
                continue
            info = infos.get(c)
            kind = _column_kind(info.logical if info else None, dtypes[c])
            if kind is None:
                skipped.append({"name": str(c), "why": "dates are not used by the model"})
                continue
            missing[c] = _count(_isna(table.column(c), dtypes[c]))
            if missing[c] == n:
                skipped.append({"name": str(c), "why": "every value is missing"})
                continue
            columns.append({"name": str(c), "type": kind, "logical": info.logical if info else str(dtypes[c])})

        def column(c: dict[str, Any]) -> Any:
            return _arrow_column(table.column(c["name"]), c, dtypes[c["name"]], lambda: series(c["name"]))

        later = {c["name"]: _soon(big, column, c) for c in columns if c["type"] == "category"}
        data = {c["name"]: later[c["name"]] if c["name"] in later else column(c) for c in columns}
        data = {k: v.get() if isinstance(v, _Soon) else v for k, v in data.items()}
        y, classes, codes = None, None, None
        if label is not None:
            classes, codes = label.get()
            y = np.asarray(classes, dtype=str)[codes]  # fixed-width text: pickles to the fit worker in one copy
            if np.asarray(classes, dtype=str).tolist() != classes:  # a value numpy text cannot hold as is
                y = None
        if y is None:
            y = series(target).astype(str).to_numpy(dtype=str)
            uniq, codes = np.unique(y, return_inverse=True)
            classes = uniq.tolist()
        if len(classes) < 2:
            raise StageFailed(f"target '{target}' has one class ({classes[0]!r}) in the {n} selected rows: "
                              "training needs at least two")
        if not columns:
            raise StageFailed(f"no usable feature columns besides the target '{target}'")
        ctx.report(0.3, "typing columns")
        schema = {"target": target, "classes": classes, "columns": columns}
        X = pd.DataFrame(data, index=pd.Index(row_ids, name=index_name))
        ctx.check_cancelled()
        for c in columns:
            s = X[c["name"]]
            c["missing"] = missing[c["name"]]
            if c["type"] == "category":
                vc = s.value_counts()
                c["categories"] = [str(v) for v in vc.index[: params["max_categories"]] if v != MISSING_CATEGORY]
                c["distinct"] = int(len(vc))
            else:
                v = s.to_numpy()
                ok = v[~np.isnan(v)]
                c["min"], c["max"] = (float(ok.min()), float(ok.max())) if len(ok) else (None, None)
        holdout = _stratified_holdout(codes, len(classes), params["holdout"], params["seed"])
        counts = np.bincount(codes, minlength=len(classes))
        by_count = sorted(range(len(classes)), key=lambda j: -counts[j])  # most frequent first, as value_counts
        ctx.report(1.0, f"{n} rows, {len(columns)} columns, {int(holdout.sum())} held out")
        return {"features": {
            "X": X, "y": y, "holdout": holdout, "row_ids": row_ids,
            "schema": {**schema, "skipped": skipped, "max_categories": params["max_categories"]},
            "target": target, "classes": classes, "feature_names": [c["name"] for c in columns],
            "batches": used, "dropped_duplicates": n_dropped, "missing_target": missing_target,
            "class_counts": {str(classes[j]): int(counts[j]) for j in by_count},
        }}


# --- train ---------------------------------------------------------------------------------------------------------


def make_estimator(schema: dict[str, Any], params: dict[str, Any]) -> Any:
    """The unfitted scikit-learn Pipeline for a schema and train parameters (raw model frame in, class out)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    kind = params["model"]
    cw = None if params["class_weight"] == "none" else params["class_weight"]
    num = [c["name"] for c in schema["columns"] if c["type"] in ("number", "boolean")]
    cat = [c["name"] for c in schema["columns"] if c["type"] == "category"]
    num_steps: list[tuple[str, Any]] = [("impute", SimpleImputer(strategy=params["impute"]))]
    if kind == "logreg":
        num_steps.append(("scale", StandardScaler()))
    parts = []
    if num:
        parts.append(("num", Pipeline(num_steps), num))
    if cat:
        # missing text arrives as its own category "(missing)" (model_frame), so no imputer is needed here
        parts.append(("cat", OneHotEncoder(handle_unknown="infrequent_if_exist",
                                           max_categories=int(schema.get("max_categories", 20)) + 1,
                                           sparse_output=False), cat))
    prep = ColumnTransformer(parts, remainder="drop", sparse_threshold=0.0)
    seed = params["seed"]
    if kind == "logreg":
        from sklearn.linear_model import LogisticRegression

        est = LogisticRegression(C=params["C"], max_iter=params["max_iter"], class_weight=cw, random_state=seed)
    elif kind == "forest":
        from sklearn.ensemble import RandomForestClassifier

        est = RandomForestClassifier(random_state=seed, class_weight=cw)
    else:
        from sklearn.ensemble import HistGradientBoostingClassifier

        est = HistGradientBoostingClassifier(random_state=seed, class_weight=cw)
    hyper = dict(params.get("hyper") or {})
    if hyper:
        known = est.get_params()
        bad = sorted(set(hyper) - set(known))
        if bad:
            raise ValueError(f"{kind} has no parameter '{bad[0]}' (known: {', '.join(sorted(known))})")
        est.set_params(**hyper)
    return Pipeline([("prep", prep), ("model", est)])


def _fit(schema: dict[str, Any], params: dict[str, Any], X: pd.DataFrame, y: np.ndarray,
         threads: int | None = None) -> Any:
    """Fit the Pipeline; `threads` caps BLAS and OpenMP threads during the fit (None: the libraries' default)."""
    _quiet_convergence()
    model = make_estimator(schema, params)
    with thread_limits(threads):
        return model.fit(X, y)


def _quiet_convergence() -> None:
    """Ignore scikit-learn's ConvergenceWarning in this process from now on (a fit stopping at `max_iter` is the
    user's choice of parameter, not an error). A filter added once rather than `warnings.catch_warnings()` around
    the fit: that context swaps the process-wide filter list on entry and exit, so in the thread a short fit runs
    in it could drop or resurrect filters another thread set meanwhile."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    if not any(f[0] == "ignore" and f[2] is ConvergenceWarning for f in warnings.filters):
        warnings.filterwarnings("ignore", category=ConvergenceWarning)


#: rows x encoded columns up to which a logistic regression is a short fit (~0.5 s per 4 million on one core)
SHORT_FIT_CELLS = 8_000_000


def short_fit(schema: dict[str, Any], params: dict[str, Any], rows: int) -> bool:
    """A fit short enough to run in a thread of this process on one core: logistic regression with default solver
    settings (no extra estimator parameters, at most 1000 iterations) on at most SHORT_FIT_CELLS encoded cells.

    In this process because handing 200,000 rows to the worker costs ~0.05 s next to a ~0.5 s fit; in exchange a
    cancel cannot stop the fit itself (the run stops at once, the fit finishes in the background). On one core
    because its matrix products are too small to gain from threads: on 2 cores one thread fitted 200,000 rows in
    0.51-0.55 s, the default two in 0.6-1.3 s (OpenBLAS threads spin while waiting for each other); the model file
    then no longer depends on the machine's core count (sums split across threads round differently)."""
    if params["model"] != "logreg" or params.get("hyper") or params["max_iter"] > 1000:
        return False
    top = int(schema.get("max_categories", 20)) + 1
    width = sum(min(int(c.get("distinct", top)), top) if c["type"] == "category" else 1 for c in schema["columns"])
    return rows * width <= SHORT_FIT_CELLS


def fit_threads(schema: dict[str, Any], params: dict[str, Any], rows: int) -> int | None:
    """The BLAS/OpenMP thread cap `Train` fits with: 1 for a short fit, else None (all cores)."""
    return 1 if short_fit(schema, params, rows) else None


_controller: Any = None


def thread_limits(threads: int | None) -> Any:
    """A context capping BLAS and OpenMP threads to `threads` (None: no cap). OpenMP's cap holds for the calling
    thread: enter it in the thread that fits. The libraries are scanned once per process."""
    global _controller
    if threads is None:
        import contextlib

        return contextlib.nullcontext()
    from threadpoolctl import ThreadpoolController

    if _controller is None:
        _controller = ThreadpoolController()
    return _controller.limit(limits=threads)


class Train(Stage):
    """Fit the scikit-learn Pipeline (ColumnTransformer + estimator) on the training part: in a worker process
    (cancellable), or for a short fit (`short_fit`) in a thread of this process."""

    name = "train"
    version = "1"
    inputs = ("features",)
    outputs = {"model": "object"}
    params = {
        "model": Param(str, "logreg", choices=ESTIMATORS,
                       help="logreg (scaled logistic regression), forest (random forest), hgb (gradient boosting)"),
        "C": Param(float, 1.0, min=1e-6, max=1e6, help="logreg: inverse regularisation strength"),
        "max_iter": Param(int, 200, min=1, max=100000, help="logreg: solver iterations"),
        "class_weight": Param(str, "none", choices=("none", "balanced")),
        "impute": Param(str, "median", choices=("median", "mean"), help="how missing numbers are filled"),
        "seed": Param(int, 0, min=0, help="random_state of the estimator"),
        "hyper": Param(dict, {}, help="more estimator parameters (hitl train --param K=V)"),
    }
    code_deps = (make_estimator, _fit, _quiet_convergence, short_fit, fit_threads, thread_limits)

    def run(self, ctx: StageContext, inputs: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        from .errors import StageFailed

        f = inputs["features"]
        train = ~np.asarray(f.get("holdout", np.zeros(len(f["y"]), dtype=bool)))
        y = f["y"][train]
        if not len(y) or (y[0] == y[-1] and not (y[1:] != y[0]).any()):  # ends differ: two classes, no scan
            raise StageFailed("training needs at least two classes in the target; the training rows have one")
        try:
            make_estimator(f["schema"], params)
        except ValueError as exc:
            raise StageFailed(str(exc)) from None
        ctx.report(0.1, f"fitting {params['model']} on {int(train.sum())} rows")
        X = f["X"] if train.all() else f["X"][train]
        threads = fit_threads(f["schema"], params, len(y))
        call = ctx.call_in_thread if short_fit(f["schema"], params, len(y)) else ctx.call_in_process
        model = call(_fit, f["schema"], params, X, y, threads)
        ctx.report(1.0, "fitted")
        return {"model": model}


# --- evaluate ------------------------------------------------------------------------------------------------------


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, proba: np.ndarray | None,
                           classes: list[str]) -> dict[str, Any]:
    """accuracy, balanced accuracy, macro F1, ROC AUC (None where undefined), per-class precision/recall/support,
    confusion matrix (rows: true class, columns: predicted; in `classes` order)."""
    import warnings

    from sklearn.metrics import (accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score,
                                 precision_recall_fscore_support, roc_auc_score)

    names = list(classes)
    # scikit-learn's metrics re-encode text labels in every call (np.unique over the strings): encode once to the
    # class positions and pass those (the same numbers; ~2.5x cheaper for 50,000 rows)
    codes_true = pd.Categorical(np.asarray(y_true, dtype=object), categories=names).codes
    codes_pred = pd.Categorical(np.asarray(y_pred, dtype=object), categories=names).codes
    if len(names) == len(set(names)) and (codes_true >= 0).all() and (codes_pred >= 0).all():
        y_true, y_pred = codes_true.astype(np.intp), codes_pred.astype(np.intp)
        classes = list(range(len(names)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out: dict[str, Any] = {
            "rows": int(len(y_true)),
            "accuracy": float(accuracy_score(y_true, y_pred)),
            "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)),
            "f1_macro": float(f1_score(y_true, y_pred, labels=classes, average="macro", zero_division=0)),
        }
        auc = None
        present = set(np.asarray(y_true).tolist())
        if proba is not None and len(present) >= 2:
            try:
                if len(classes) == 2:
                    auc = float(roc_auc_score(np.asarray(y_true) == classes[1], proba[:, 1]))
                elif present == set(classes):
                    auc = float(roc_auc_score(y_true, proba, multi_class="ovr", labels=classes))
            except ValueError:
                auc = None
        out["roc_auc"] = auc
        p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=classes, zero_division=0)
    out["per_class"] = {c: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
                        for i, c in enumerate(names)}
    out["confusion_matrix"] = confusion_matrix(y_true, y_pred, labels=classes).astype(int).tolist()
    return out


def _cross_validate(model: Any, X: pd.DataFrame, y: np.ndarray, folds: int, seed: int,
                    workers: int = 1) -> list[dict[str, Any]]:
    """Refit the trained model's recipe (`clone`: same preprocessing and parameters) per fold; with `workers` > 1
    the folds are fitted in that many threads (the caller caps BLAS threads). Metrics are computed afterwards, in
    this thread, in fold order."""
    from sklearn.base import clone
    from sklearn.model_selection import StratifiedKFold

    _quiet_convergence()
    classes = sorted(set(y.tolist()))
    splits = list(StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(np.zeros(len(y)), y))

    def fit_predict(split: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        tr, te = split
        m = clone(model).fit(X.iloc[tr], y[tr])
        proba = m.predict_proba(X.iloc[te])
        pred = np.asarray(m.classes_)[proba.argmax(axis=1)]
        full = np.zeros((len(te), len(classes)))
        for j, c in enumerate(m.classes_):
            full[:, classes.index(c)] = proba[:, j]
        return te, pred, full

    from .. import threads

    fitted = threads.map_ordered(fit_predict, splits, workers, name="hitl-cv")
    return [classification_metrics(y[te], pred, full, classes) for te, pred, full in fitted]


def _cv_workers(model: Any, rows: int) -> tuple[int, int | None]:
    """(fold threads, BLAS thread cap) for cross-validating `model` on `rows` rows: a short logistic regression (as
    `short_fit` judges the main fit) gains nothing from BLAS threads, so its folds run side by side on one BLAS
    thread each; anything else fits its folds one after another with the libraries' own threads."""
    import os

    from sklearn.linear_model import LogisticRegression

    est = model.steps[-1][1] if hasattr(model, "steps") else model
    if not isinstance(est, LogisticRegression) or getattr(est, "coef_", None) is None:
        return 1, None
    if rows * int(est.coef_.shape[1]) > SHORT_FIT_CELLS:
        return 1, None
    return max(1, min(2, os.cpu_count() or 1)), 1


def _holdout_metrics(model: Any, X: pd.DataFrame, y: np.ndarray, classes: list[str]) -> dict[str, Any]:
    proba = model.predict_proba(X)
    full = np.zeros((len(y), len(classes)))
    for j, c in enumerate(model.classes_):
        full[:, classes.index(c)] = proba[:, j]
    pred = np.asarray(classes, dtype=object)[full.argmax(axis=1)]
    return classification_metrics(y, pred, full, classes)


def _evaluate(model: Any, X: pd.DataFrame, y: np.ndarray, holdout: np.ndarray, folds: int, seed: int,
              classes: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    tr = ~holdout
    if folds:
        workers, blas = _cv_workers(model, int(tr.sum()))
        with thread_limits(blas):
            out["cv"] = _cross_validate(model, X[tr] if not tr.all() else X, y[tr], folds, seed, workers)
    if holdout.any():
        out["holdout"] = _holdout_metrics(model, X[holdout], y[holdout], classes)
    return out


SUMMARY = ("accuracy", "balanced_accuracy", "f1_macro", "roc_auc")


class Evaluate(Stage):
    """Cross-validated (training part) and held-out metrics of the trained model."""

    name = "evaluate"
    version = "1"
    inputs = ("features", "model")
    outputs = {"metrics": "metrics"}
    params = {
        "folds": Param(int, 3, min=2, max=20),
        "seed": Param(int, 0, min=0),
        "scoring": Param(str, "accuracy", choices=("accuracy", "balanced_accuracy"),
                         help="the headline score (all metrics are computed)"),
    }
    code_deps = (classification_metrics, _cross_validate, _cv_workers, _holdout_metrics, _evaluate, _quiet_convergence,
                 thread_limits)

    def run(self, ctx: StageContext, inputs: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        f = inputs["features"]
        model = inputs["model"]
        y, classes = f["y"], list(f["classes"])
        holdout = np.asarray(f.get("holdout", np.zeros(len(y), dtype=bool)))
        smallest = int(pd.Series(y[~holdout]).value_counts().min())
        folds = min(params["folds"], smallest)
        if folds < 2:
            ctx.note(f"no cross-validation: the rarest class has {smallest} training row(s)")
            folds = 0
        elif folds < params["folds"]:
            ctx.note(f"{folds}-fold cross-validation instead of {params['folds']}: the rarest class has "
                     f"{smallest} training rows")
        if not holdout.any():
            ctx.note("no held-out rows (featurize holdout is 0 or the data is too small): cross-validation only")
        ctx.report(0.1, f"{folds}-fold cross-validation" if folds else "held-out scoring")
        res = ctx.call_in_process(_evaluate, model, f["X"], y, holdout, folds, params["seed"], classes)
        m: dict[str, Any] = {"rows": int(len(y)), "train_rows": int((~holdout).sum()),
                             "holdout_rows": int(holdout.sum()), "features": len(f["schema"]["columns"]),
                             "classes": classes, "folds": folds, "scoring": params["scoring"]}
        cv = res.get("cv") or []
        if cv:
            m["cv"] = {k: _mean_std([r[k] for r in cv]) for k in SUMMARY}
            m["fold_scores"] = [r[params["scoring"]] for r in cv]
            m[params["scoring"]] = m["cv"][params["scoring"]]["mean"]
            m[f"{params['scoring']}_std"] = m["cv"][params["scoring"]]["std"]
        if "holdout" in res:
            m["holdout"] = res["holdout"]
        ctx.report(1.0, "evaluated")
        return {"metrics": m}


def _mean_std(xs: list[Any]) -> dict[str, Any]:
    vals = [x for x in xs if x is not None]
    if not vals:
        return {"mean": None, "std": None}
    a = np.asarray(vals, dtype=float)
    return {"mean": float(a.mean()), "std": float(a.std())}


# --- export (pipeline slot) -----------------------------------------------------------------------------------------


class Export(Stage):
    """The model with what is needed to use it (schema, classes, target). The signed, approved export bundle is
    `hitl export` (core.models.export_model)."""

    name = "export"
    version = "1"
    inputs = ("model", "features")
    outputs = {"artifact": "object"}
    params = {"format": Param(str, "joblib", choices=("joblib",))}

    def run(self, ctx: StageContext, inputs: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        f = inputs["features"]
        return {"artifact": {"model": inputs["model"], "schema": f["schema"], "feature_names": f["feature_names"],
                             "classes": f["classes"], "target": f["target"], "format": params["format"]}}


MODEL_STAGES: list[Stage] = [Featurize(), Train(), Evaluate(), Export()]
