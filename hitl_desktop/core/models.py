"""The model registry: training on validly approved data, versions with lineage and metrics, signed model approval,
signed export bundles and verified prediction. Qt-free; see docs/models.md.

* `train` refuses while a batch in scope is unreviewed or its approval is invalid (or, with `approved_only`, trains
  on the valid subset and says what was left out), runs the pipeline's featurize -> train -> evaluate steps (the
  cache reuses an unchanged model) and registers a version: the model file (joblib of the fitted scikit-learn
  Pipeline), metrics compared with the previous version of the same pipeline, and the lineage.
* `decide_model` approves or rejects a version: an electronic signature like a batch decision (approver role,
  four-eyes: not the person who trained it), recorded in `decisions` (model_id) and the audit chain.
* `export_model` writes a bundle folder — model.joblib, schema.json, MODEL_CARD.md, model_card.json, optional
  model.onnx — and manifest.json (sha256 of every file) signed by the approver's Ed25519 key (manifest.sig).
* `load_bundle` verifies the manifest signature, that the signer is trusted and every file's hash *before*
  unpickling anything; `predict` then checks the input rows against the schema.
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import and_, select

from . import approvals, audit, db, identity
from .errors import HitlError, NotFound, PermissionRefused, TransitionRefused
from .project import Project
from .filewrite import fsync_dir
from .util import canonical_json, sha256_text, utc_now

MODELS_DIR = "models"
BUNDLE_FORMAT = "hitl-model-bundle"
TRUST_ENV = "HITL_TRUST_FILE"
MEANINGS = {"approve_model": "approved for export", "reject_model": "rejected"}
AUDIT_ACTION = {"approve_model": "model.approve", "reject_model": "model.reject"}
HEADLINE = ("accuracy", "balanced_accuracy", "f1_macro", "roc_auc")


class TrainingRefused(HitlError):
    pass


class ExportRefused(HitlError):
    pass


class BundleRefused(HitlError):
    """A bundle failed verification (nothing was unpickled) or the input does not fit its schema."""


# --- records ---------------------------------------------------------------------------------------------------


@dataclass
class ModelInfo:
    id: int
    pipeline: str
    version: int
    result_key: str | None
    target: str
    estimator: str
    params: dict[str, Any]
    metrics: dict[str, Any]
    lineage: dict[str, Any]
    model_file: str | None
    model_sha256: str | None
    trained_by: str
    trained_at: str
    status: str
    decisions: list[dict[str, Any]] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.pipeline}:v{self.version}"

    def headline(self) -> dict[str, Any]:
        """Held-out metrics where there are held-out rows, else the cross-validated means."""
        h = self.metrics.get("holdout")
        if h:
            return {k: h.get(k) for k in HEADLINE}
        cv = self.metrics.get("cv") or {}
        return {k: (cv.get(k) or {}).get("mean") for k in HEADLINE}

    def to_json(self, full: bool = True) -> dict[str, Any]:
        d = {"id": self.id, "label": self.label, "pipeline": self.pipeline, "version": self.version,
             "status": self.status, "target": self.target, "estimator": self.estimator,
             "trained_by": self.trained_by, "trained_at": self.trained_at, "model_sha256": self.model_sha256,
             "rows": self.metrics.get("rows"), "headline": self.headline(),
             "compared_with": self.metrics.get("compared_with"), "decisions": self.decisions}
        if full:
            d.update(params=self.params, metrics=self.metrics, lineage=self.lineage, model_file=self.model_file,
                     result_key=self.result_key)
        return d


def _decisions(conn: Any, model_id: int) -> list[dict[str, Any]]:
    return [{"id": d.id, "action": d.action, "user": d.user, "full_name": d.full_name, "ts": d.ts,
             "meaning": d.meaning, "comment": d.comment, "signed": d.signature is not None}
            for d in conn.execute(select(db.decisions).where(db.decisions.c.model_id == model_id)
                                  .order_by(db.decisions.c.id))]


def _info(conn: Any, r: Any) -> ModelInfo:
    return ModelInfo(r.id, r.pipeline, r.version, r.result_key, r.target, r.estimator, json.loads(r.params_json),
                     json.loads(r.metrics_json or "{}"), json.loads(r.lineage_json or "{}"), r.model_file,
                     r.model_sha256, r.trained_by, r.trained_at, r.status, _decisions(conn, r.id))


def _row(conn: Any, ref: Any) -> Any:
    """A model by id ("3"), or PIPELINE:vN / PIPELINE:N."""
    M = db.models.c
    text = str(ref).strip()
    if text.isdigit():
        r = conn.execute(select(db.models).where(M.id == int(text))).first()
    else:
        name, _, ver = text.rpartition(":")
        ver = ver[1:] if ver.lower().startswith("v") else ver
        r = None
        if name and ver.isdigit():
            r = conn.execute(select(db.models).where(and_(M.pipeline == name, M.version == int(ver)))).first()
    if r is None:
        raise NotFound(f"no model '{ref}' in this project: list them with `hitl models DIR` (give an id or "
                       f"PIPELINE:vN)")
    return r


def list_models(project: Project) -> list[ModelInfo]:
    with project.read() as conn:
        return [_info(conn, r) for r in conn.execute(select(db.models).order_by(db.models.c.id))]


def get_model(project: Project, ref: Any) -> ModelInfo:
    with project.read() as conn:
        return _info(conn, _row(conn, ref))


# --- training --------------------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    model: ModelInfo
    reused: bool
    left_out_rows: int = 0
    left_out: list[dict[str, Any]] = field(default_factory=list)
    run: Any = None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model.to_json(), "reused": self.reused, "left_out_rows": self.left_out_rows,
                "left_out": self.left_out, "run": self.run.run_id if self.run is not None else None,
                "notes": self.notes}


def _steps_by_stage(spec: Any, registry: Any) -> dict[str, str]:
    from .pipeline.spec import resolve

    resolved = resolve(spec, registry)
    out: dict[str, str] = {}
    for name, rs in resolved.items():
        out.setdefault(rs.stage.name, name)
    missing = [s for s in ("featurize", "train", "evaluate") if s not in out]
    if missing:
        raise TrainingRefused(f"pipeline '{spec.name}' has no {missing[0]} step: training needs featurize, train and "
                              f"evaluate steps (see `hitl pipeline DIR show {spec.name}`)")
    return out


def training_scope(project: Project, pipeline: str | None = None) -> dict[str, Any]:
    """Batches of the pipeline's source version and why each is (not) usable for training."""
    from .pipeline.engine import _scope
    from .pipeline.spec import get_pipeline

    spec = get_pipeline(project, pipeline)
    sc = _scope(project, spec)
    with project.read() as conn:
        states = approvals.approval_states(conn, [b.id for b in sc.batches])
    usable, blocking, rejected = [], [], []
    for b in sc.batches:
        state, why = states[b.id]
        item = {"batch": b.id, "rows": b.rows, "status": b.status, "approval": state, "why": why}
        if state == "valid":
            usable.append(item)
        elif b.status == "rejected" and state == "none":
            rejected.append(item)
        else:
            blocking.append(item)
    return {"source": sc.source, "spec": spec, "usable": usable, "blocking": blocking, "rejected": rejected,
            "states": states}


def _describe_blocking(items: list[dict[str, Any]]) -> str:
    unapproved = [i["batch"] for i in items if i["approval"] == "none"]
    invalid = [i for i in items if i["approval"] == "invalid"]

    def ids(xs: list[int]) -> str:
        return ", ".join(map(str, xs[:12])) + (f", … ({len(xs)} in all)" if len(xs) > 12 else "")

    parts = []
    if unapproved:
        parts.append(f"not approved: batch{'es' if len(unapproved) > 1 else ''} {ids(unapproved)}")
    if invalid:
        why = invalid[0]["why"]
        parts.append(f"approval invalid: batch{'es' if len(invalid) > 1 else ''} "
                     f"{ids([i['batch'] for i in invalid])} ({why})")
    return "; ".join(parts)


def _train_params(model: str, params: dict[str, Any], registry: Any) -> dict[str, Any]:
    st = registry.get("train")
    named = {k: v for k, v in params.items() if k in st.params and k not in ("model", "hyper")}
    hyper = {k: v for k, v in params.items() if k not in st.params}
    out = {k: p.default for k, p in st.params.items()}
    out.update(named)
    out["model"] = model
    out["hyper"] = hyper
    for k, v in out.items():
        out[k] = st.params[k].validate("train", k, v)
    from .pipeline.model_stages import make_estimator

    try:
        make_estimator({"columns": []}, out)
    except ValueError as exc:
        raise TrainingRefused(f"--param: {exc}") from None
    return out


def train(project: Project, user: str, target: str | None = None, model: str = "logreg",
          params: dict[str, Any] | None = None, pipeline: str | None = None, approved_only: bool = False,
          observer: Any = None, cancel: Any = None, registry: Any = None) -> TrainResult:
    """Train a model version on validly approved batches (see the module doc). Blocking: call off the GUI thread."""
    from .pipeline import engine as E
    from .pipeline import spec as S
    from .pipeline.errors import RunCancelled, StageFailed
    from .pipeline.model_stages import ESTIMATORS
    from .pipeline.registry import registry_for

    if model not in ESTIMATORS:
        raise TrainingRefused(f"unknown model '{model}': choose one of {', '.join(ESTIMATORS)}")
    identity.authorize(project, user, "train")
    registry = registry or registry_for(project)
    name = pipeline or S.DEFAULT_PIPELINE
    if name not in {s.name for s in S.list_pipelines(project)}:
        S.add_variant(project, name, None, user, registry)
    scope = training_scope(project, name)
    spec, source = scope["spec"], scope["source"]
    steps = _steps_by_stage(spec, registry)
    target = target or source.label
    cols = [c.name for c in source.columns]
    if not target:
        raise TrainingRefused("no target column: pass --target COLUMN")
    if target not in cols:
        raise TrainingRefused(f"target column '{target}' is not in the data (columns: {', '.join(cols)})")
    if scope["blocking"] and not approved_only:
        raise TrainingRefused(f"training refused: {_describe_blocking(scope['blocking'])}; approve them (or reopen "
                              f"and approve again), or pass --approved-only to train on the "
                              f"{len(scope['usable'])} validly approved batch(es)")
    if not scope["usable"]:
        raise TrainingRefused(f"no batch of {source.file_name} is validly approved: approve batches before training"
                              + (f" ({_describe_blocking(scope['blocking'])})" if scope["blocking"] else ""))
    left = scope["blocking"] + scope["rejected"]
    left_rows = sum(i["rows"] for i in left)
    # the pipeline records exactly what the model is trained with
    feat = spec.step(steps["featurize"])
    wanted = {(steps["featurize"], "select"): "approved", (steps["featurize"], "target"): target}
    tp = _train_params(model, dict(params or {}), registry)
    for k, v in tp.items():
        wanted[(steps["train"], k)] = v
    changes = []
    for (step, k), v in wanted.items():
        st = spec.step(step)
        cur = st.params.get(k, registry.get(st.stage).params[k].default)
        if cur != v or (step == feat.name and k == "target" and k not in st.params):
            changes.append((step, k, v))
    if changes:  # one transaction: the training parameters change together or not at all
        spec = S.set_params(project, name, changes, user, registry)
    # featurize's plan reads the valid approvals too: it sees the verdicts this scope check judged (once per run)
    with approvals.approval_snapshot(scope["states"]):
        report = E.run_pipeline(project, name, steps["evaluate"], user=user, observer=observer, cancel=cancel,
                                registry=registry, keep_outputs=True)
    if report.status == "cancelled":
        raise RunCancelled(f"training cancelled (run {report.run_id}); nothing was registered")
    if report.status == "failed":
        raise StageFailed(report.error or "the training run failed")
    notes = [n for s in report.steps for n in s.notes]
    train_key = report.step(steps["train"]).key
    with project.read() as conn:
        r = conn.execute(select(db.models).where(and_(db.models.c.pipeline == name,
                                                      db.models.c.result_key == train_key))
                         .order_by(db.models.c.id.desc())).first()
        if r is not None:
            report.outputs.clear()
            return TrainResult(_info(conn, r), True, left_rows, left, report, notes)
    try:
        info = _register(project, user, name, spec, report, steps, left, registry)
    finally:
        report.outputs.clear()  # the training matrix and model: not kept alive by the returned report
    return TrainResult(info, False, left_rows, left, report, notes)


def _load_result(project: Project, key: str, mmap: bool = True) -> dict[str, Any]:
    """A verified cache result; joblib files are memory-mapped unless `mmap` is False (the features matrix is read
    only in part)."""
    import joblib

    from .pipeline.cache import ResultStore
    from .pipeline.errors import CorruptResult

    with project.read() as conn:
        r = conn.execute(select(db.results).where(db.results.c.key == key)).first()
    if r is None:
        raise HitlError(f"internal: result {key[:12]} is not registered")
    store = ResultStore(project.path, writable=False)
    if r.kind != "object":
        return store.load(key, r.path, r.sha256, r.kind)
    bad = store.check(r.path, r.sha256)
    if bad:
        raise CorruptResult(key, f"result {key[:12]}: {bad}; train again to recompute it")
    return joblib.load(store.path(r.path), mmap_mode="r" if mmap else None)


def model_bytes(model: Any) -> bytes:
    """The model file: joblib of the fitted Pipeline, uncompressed (deterministic for equal models)."""
    import joblib

    buf = io.BytesIO()
    joblib.dump(model, buf, compress=0)
    return buf.getvalue()


def _write_durable(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(str(path.parent))


def _compare(now: dict[str, Any], prev: Any) -> dict[str, Any] | None:
    """Headline metrics against the previous version (a `models` row, or None)."""
    if prev is None:
        return None
    before = json.loads(prev.metrics_json or "{}")
    out: dict[str, Any] = {"model": prev.id, "version": prev.version, "label": f"{prev.pipeline}:v{prev.version}",
                           "deltas": {}}
    for part in ("holdout", "cv"):
        a = now.get(part) or {}
        b = before.get(part) or {}
        for k in HEADLINE:
            x = a.get(k)
            y = b.get(k)
            if part == "cv":
                x, y = (x or {}).get("mean"), (y or {}).get("mean")
            if x is not None and y is not None:
                out["deltas"][f"{part}.{k}"] = {"now": x, "previous": y, "delta": x - y}
    return out


def _register(project: Project, user: str, name: str, spec: Any, report: Any, steps: dict[str, str],
              left: list[dict[str, Any]], registry: Any) -> ModelInfo:
    import sklearn

    from .. import __version__

    keys = {s.step: s.key for s in report.steps}

    def result(step: str) -> dict[str, Any]:  # what the run just produced, else from the verified cache
        return report.outputs.get(keys[steps[step]]) or _load_result(project, keys[steps[step]])

    features = result("featurize")["features"]
    # the model as stored in the cache, read into memory (not memory-mapped): joblib records each array's class and
    # pickling can differ before and after a round trip, so the model file is made from the one form every path
    # (in-process fit, worker fit, a train step reused from the cache) shares
    fitted = _load_result(project, keys[steps["train"]], mmap=False)["model"]
    metrics = dict(result("evaluate")["metrics"])
    data = model_bytes(fitted)
    sha = hashlib.sha256(data).hexdigest()
    with project.read() as conn:
        results = {r.key: r for r in conn.execute(select(db.results).where(db.results.c.key.in_(list(keys.values()))))}
        dec = _approvals(conn, sorted(int(b) for b in features["batches"]))
        feat_row = results[keys[steps["featurize"]]]
        hashes = json.loads(feat_row.inputs_json).get("selected", {})
    stage_info = []
    for s in report.steps:
        r = results.get(s.key)
        stage_info.append({"step": s.step, "stage": s.stage, "key": s.key,
                           "version": r.stage_version if r else None, "code_hash": r.code_hash if r else None,
                           "params": json.loads(r.params_json) if r else None})
    src = json.loads(feat_row.inputs_json).get("source", {})
    from .sources import get_source

    source = get_source(project, int(src["id"]))
    tp = json.loads(results[keys[steps["train"]]].params_json)  # resolved: defaults included
    trained_at = utc_now()
    lineage = {
        "pipeline": {"name": name, "source": spec.source, "steps": stage_info},
        "batches": [{"batch": int(b), "rows_used": int(n), "content_hash": hashes.get(str(b)),
                     "approval": dec.get(int(b))} for b, n in sorted(features["batches"].items())],
        "left_out": [{k: i[k] for k in ("batch", "rows", "status", "approval", "why")} for i in left],
        "rows": {"used": int(len(features["y"])), "train": int((~features["holdout"]).sum()),
                 "holdout": int(features["holdout"].sum()), "dropped_duplicates": int(features["dropped_duplicates"]),
                 "missing_target": int(features.get("missing_target", 0)), "classes": features["class_counts"]},
        "source": {"id": source.id, "file": source.file_name, "path": source.path, "sha256": source.sha256,
                   "data_sha256": source.data_sha256 if hasattr(source, "data_sha256") else None,
                   "options": {k: v for k, v in source.options.items() if k != "detected"}},
        "schema": features["schema"],
        "code": {"hitl_desktop": __version__, "scikit_learn": sklearn.__version__,
                 "stages": {s["stage"]: s["code_hash"] for s in stage_info}},
        "trained_by": user, "trained_at": trained_at, "model_sha256": sha,
    }
    lineage_json = canonical_json(lineage)
    with project.write() as conn:
        M = db.models.c
        prev = conn.execute(select(M.id, M.pipeline, M.version, M.metrics_json).where(M.pipeline == name)
                            .order_by(M.version.desc()).limit(1)).first()
        version = (prev.version if prev is not None else 0) + 1
        metrics["compared_with"] = _compare(metrics, prev)
        metrics_json = canonical_json(metrics)
        params_json = canonical_json(tp)
        rel = f"{MODELS_DIR}/{name}-v{version}-{sha[:12]}.joblib"
        _write_durable(project.path / rel, data)
        mid = conn.execute(db.models.insert().values(
            pipeline=name, version=version, result_key=keys[steps["train"]], target=features["target"],
            estimator=tp.get("model", "logreg"), params_json=params_json, metrics_json=metrics_json,
            lineage_json=lineage_json, model_file=rel, model_sha256=sha, trained_by=user, trained_at=trained_at,
            status="trained")).inserted_primary_key[0]
        audit.append(conn, user, "model.train", f"model:{mid}", {
            "model": mid, "pipeline": name, "version": version, "model_sha256": sha,
            "lineage_sha256": sha256_text(lineage_json), "metrics_sha256": sha256_text(metrics_json),
            "trained_at": trained_at, "run": report.run_id, "batches": len(lineage["batches"]),
            "rows": lineage["rows"]["used"]}, ts=trained_at)
        # as `_info` reads it back (JSON-typed), without reading it back
        return ModelInfo(mid, name, version, keys[steps["train"]], features["target"], tp.get("model", "logreg"),
                         json.loads(params_json), json.loads(metrics_json), json.loads(lineage_json), rel, sha,
                         user, trained_at, "trained", [])


def _approvals(conn: Any, batch_ids: list[int]) -> dict[int, dict[str, Any]]:
    """The approving decision of each batch (name, time, signature) as lineage records it."""
    out: dict[int, dict[str, Any]] = {}
    D = db.decisions.c
    for i in range(0, len(batch_ids), 500):
        for d in conn.execute(select(db.decisions).where(and_(D.batch_id.in_(batch_ids[i:i + 500]),
                                                              D.action == "approve")).order_by(D.id)):
            out[d.batch_id] = {"decision": d.id, "user": d.user, "full_name": d.full_name, "ts": d.ts,
                               "meaning": d.meaning, "content_hash": d.content_hash, "signature": d.signature,
                               "audit_entry": d.audit_id}
    return out


# --- approval --------------------------------------------------------------------------------------------------


def file_sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _model_file_problem(project: Project, r: Any) -> str | None:
    if not r.model_file:
        return f"model {r.id} has no model file"
    p = project.path / r.model_file
    if not p.is_file():
        return f"the file of model {r.id} ({r.model_file}) is missing"
    if file_sha256(p) != r.model_sha256:
        return f"the file of model {r.id} ({r.model_file}) changed since it was trained (sha256 differs)"
    return None


def model_approval(conn: Any, r: Any) -> tuple[str, str, Any]:
    """('valid'|'invalid'|'none'|'rejected', reason, decision row) of a model row's latest decision."""
    D = db.decisions.c
    d = conn.execute(select(db.decisions).where(D.model_id == r.id).order_by(D.id.desc()).limit(1)).first()
    if d is None:
        if r.status != "trained":
            return "invalid", f"model {r.id} is marked {r.status} but has no decision on record", None
        return "none", f"model {r.id} is not approved yet", None
    if d.action == "reject_model":
        return "rejected", f"model {r.id} was rejected by {d.full_name} at {d.ts[:19]}: {d.comment}", d
    if r.status != "approved":
        return "invalid", f"model {r.id} was approved but is now {r.status}", d
    if d.content_hash != r.model_sha256:
        return "invalid", f"the approval of model {r.id} signed a different model file", d
    project_id = conn.execute(select(db.meta.c.value).where(db.meta.c.key == "project_id")).scalar() or ""
    history = identity.key_history(conn)

    def hash_of(i: int) -> str | None:
        return conn.execute(select(db.audit.c.hash).where(db.audit.c.id == i)).scalar()

    why = identity.check_signed_decision(d, project_id, history, hash_of)
    if why:
        return "invalid", f"the approval of model {r.id} {why}", d
    return "valid", f"approved by {d.full_name} at {d.ts[:19]}", d


def allowed_actions(project: Project, ref: Any, user: str) -> dict[str, str | None]:
    """For the window: why `user` may not approve / reject / export this model now (None = allowed)."""
    with project.read() as conn:
        r = _row(conn, ref)
        out: dict[str, str | None] = {}
        for action in ("approve_model", "reject_model"):
            why = identity.check(conn, user, action)
            if why is None and r.status != "trained":
                why = f"model {r.id} is already {r.status}"
            if why is None:
                why = identity.check_four_eyes_model(conn, user, r.trained_by)
            out[action] = why
        state, reason, d = model_approval(conn, r)
        why = identity.check(conn, user, "export")
        if why is None and state != "valid":
            why = reason if state in ("invalid", "rejected") else f"model {r.id} is not approved: an approver " \
                                                                  f"must sign it first"
        if why is None and d is not None and d.user != user:
            why = f"the export is signed by the model's approver, {d.full_name} ({d.user})"
        out["export"] = why
    if project.read_only:
        out = {k: v or "the project is read-only" for k, v in out.items()}
    return out


def decide_model(project: Project, ref: Any, action: str, user: str, comment: str | None = None,
                 signer: identity.Signer | None = None) -> ModelInfo:
    """Approve (`approve_model`) or reject (`reject_model`) a trained model version: a signed decision."""
    if action not in MEANINGS:
        raise ValueError(f"unknown model action {action!r}")
    if action == "reject_model" and not (comment and comment.strip()):
        raise TransitionRefused("rejecting a model needs a comment saying why: pass --comment TEXT")
    if signer is None:
        raise PermissionRefused(f"to {action.replace('_', ' ')} is an electronic signature: it needs the signer's "
                                f"password")
    with project.read() as conn:
        mid = _row(conn, ref).id
    identity.authorize(project, user, action, target=f"model:{mid}")
    with project.read() as conn:
        r = _row(conn, mid)
        why = identity.check_four_eyes_model(conn, user, r.trained_by)
    if why:
        identity.record_event(project, user, "auth.refused", f"model:{mid}", {
            "user": user, "permission": action, "model": mid, "reason": why})
        raise PermissionRefused(why + "; nothing was changed")
    problem = _model_file_problem(project, r)
    if problem:
        raise TransitionRefused(problem + ": it cannot be signed")
    with project.write() as conn:
        r = _row(conn, mid)
        if r.status != "trained":
            raise TransitionRefused(f"model {mid} ({r.pipeline}:v{r.version}) is already {r.status}: train a new "
                                    f"version to change it")
        refused = identity.check(conn, user, action) or identity.check_four_eyes_model(conn, user, r.trained_by)
        if refused:
            raise PermissionRefused(refused + "; nothing was changed")
        now = utc_now()
        meaning = MEANINGS[action] + (f": {comment.strip()}" if action == "reject_model" else "")
        comment = comment.strip() if comment else None
        payload = {"model": mid, "action": action, "meaning": meaning, "content_hash": r.model_sha256,
                   "from": r.status, "to": "approved" if action == "approve_model" else "rejected",
                   "comment": comment, "ts": now, "user": user, "project": project.project_id}
        full_name, signed_payload, signature = signer(conn, payload)
        audit_id = audit.append(conn, user, AUDIT_ACTION[action], f"model:{mid}",
                                {**payload, "full_name": full_name, "signature": signature}, ts=now)
        conn.execute(db.decisions.insert().values(
            batch_id=None, model_id=mid, action=action, user=user, full_name=full_name, ts=now, meaning=meaning,
            comment=comment, content_hash=r.model_sha256, signed_payload=signed_payload, signature=signature,
            audit_id=audit_id))
        conn.execute(db.models.update().where(db.models.c.id == mid).values(status=payload["to"]))
        return _info(conn, _row(conn, mid))


# --- trust store -----------------------------------------------------------------------------------------------


def trust_file() -> Path:
    """Where this machine keeps the public keys it trusts for bundles: $HITL_TRUST_FILE, else the user config."""
    env = os.environ.get(TRUST_ENV)
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_config_dir("hitl-desktop", appauthor=False)) / "trusted_signers.json"


def trusted_keys() -> dict[str, dict[str, Any]]:
    try:
        items = json.loads(trust_file().read_text(encoding="utf-8")).get("keys", [])
    except (OSError, ValueError):
        return {}
    return {k["public_key"]: k for k in items if isinstance(k, dict) and k.get("public_key")}


def trust_key(public_key: str, user: str, full_name: str, project_id: str) -> None:
    keys = trusted_keys()
    if public_key in keys:
        return
    keys[public_key] = {"public_key": public_key, "fingerprint": identity.key_fingerprint(public_key), "user": user,
                        "full_name": full_name, "project": project_id, "added_at": utc_now()}
    path = trust_file()
    _write_durable(path, json.dumps({"keys": list(keys.values())}, indent=1).encode("utf-8"))


def project_keys(project: Project) -> dict[str, dict[str, Any]]:
    """Public keys the project's audit trail records (for `hitl predict --trust-project DIR`)."""
    with project.read() as conn:
        hist = identity.key_history(conn)
    return {k: {"public_key": k, "user": u, "project": project.project_id} for u, ks in hist.items() for _, k in ks}


# --- export ----------------------------------------------------------------------------------------------------


@dataclass
class ExportResult:
    out_dir: Path
    files: dict[str, str]
    signer: str
    onnx: str

    def to_json(self) -> dict[str, Any]:
        return {"out_dir": str(self.out_dir), "files": self.files, "signer": self.signer, "onnx": self.onnx}


def _onnx(model: Any, schema: dict[str, Any]) -> tuple[bytes | None, str]:
    try:
        from skl2onnx import to_onnx
        from skl2onnx.common.data_types import FloatTensorType, StringTensorType
    except ImportError:
        return None, "skipped: skl2onnx is not installed (pip install 'hitl-desktop[onnx]')"
    try:
        types = [(c["name"], FloatTensorType([None, 1]) if c["type"] != "category" else StringTensorType([None, 1]))
                 for c in schema["columns"]]
        onx = to_onnx(model, initial_types=types, options={"zipmap": False}, target_opset=None)
        return onx.SerializeToString(), "written: model.onnx (inputs: one tensor per column; probabilities without zipmap)"
    except Exception as exc:  # a converter limitation for this model: skipped, never fatal
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        return None, f"skipped: skl2onnx cannot convert this model ({type(exc).__name__}: {first})"


def model_card(info: ModelInfo, project_name: str, intended_use: str | None) -> dict[str, Any]:
    lin, m = info.lineage, info.metrics
    schema = lin.get("schema", {})
    rows = lin.get("rows", {})
    limits = [
        f"Trained only on {rows.get('train', 0):,} reviewed rows of {lin.get('source', {}).get('file')} "
        f"(source sha256 {str(lin.get('source', {}).get('sha256'))[:16]}…); data from elsewhere or later may differ.",
        f"Text values not among the {schema.get('max_categories', 20)} most frequent of a column in training share "
        "one 'infrequent' category; values never seen are treated the same way.",
        "Numbers outside the training range (see schema.json min/max) are extrapolated without warning.",
    ]
    if rows.get("holdout", 0) < 100:
        limits.append(f"Held-out metrics come from {rows.get('holdout', 0)} rows: expect wide uncertainty.")
    if (m.get("holdout") or {}).get("roc_auc") is None:
        limits.append("ROC AUC is undefined for these held-out rows (a class is absent or no probabilities).")
    if schema.get("skipped"):
        limits.append("Columns not used: " + ", ".join(f"{s['name']} ({s['why']})" for s in schema["skipped"]) + ".")
    if lin.get("left_out"):
        limits.append(f"{len(lin['left_out'])} batch(es) of the source were not approved and were left out.")
    approvals = [d for d in info.decisions if d["action"] in MEANINGS]
    return {
        "format": "hitl-model-card", "version": 1,
        "model": {"id": info.id, "label": info.label, "pipeline": info.pipeline, "version": info.version,
                  "estimator": info.estimator, "params": info.params, "target": info.target,
                  "classes": schema.get("classes"), "sha256": info.model_sha256, "project": project_name},
        "intended_use": intended_use or "Not stated by the exporter.",
        "training_data": {"source": lin.get("source"), "rows": rows, "batches": len(lin.get("batches", [])),
                          "left_out_batches": lin.get("left_out", [])},
        "lineage": lin,
        "metrics": {k: m.get(k) for k in ("cv", "holdout", "folds", "scoring", "compared_with")},
        "approvals": [{"action": d["action"], "user": d["user"], "full_name": d["full_name"], "ts": d["ts"],
                       "meaning": d["meaning"], "comment": d["comment"], "signed": d["signed"]} for d in approvals],
        "trained_by": info.trained_by, "trained_at": info.trained_at,
        "known_limits": limits,
    }


def _fmt(x: Any) -> str:
    return "—" if x is None else (f"{x:.3f}" if isinstance(x, float) else str(x))


def model_card_markdown(card: dict[str, Any]) -> str:
    mo, td, me = card["model"], card["training_data"], card["metrics"]
    L = [f"# Model card: {mo['label']} ({mo['estimator']})", "",
         f"Project **{mo['project']}**, model id {mo['id']}, target **{mo['target']}**, classes "
         f"{', '.join(map(str, mo['classes'] or []))}.", f"Model file sha256 `{mo['sha256']}`.", "",
         "## Intended use", "", card["intended_use"], "",
         "## Training data", "",
         f"- Source: {td['source'].get('file')} (sha256 `{td['source'].get('sha256')}`)",
         f"- {td['batches']} approved batches; {td['rows'].get('used', 0):,} rows used "
         f"({td['rows'].get('train', 0):,} for training, {td['rows'].get('holdout', 0):,} held out); "
         f"{td['rows'].get('dropped_duplicates', 0):,} duplicate rows dropped",
         f"- Class counts: {', '.join(f'{k}: {v:,}' for k, v in (td['rows'].get('classes') or {}).items())}",
         f"- Trained by {card['trained_by']} at {card['trained_at']}", "",
         "## Metrics", "", "| metric | cross-validated (mean ± sd) | held-out |", "|---|---|---|"]
    cv, ho = me.get("cv") or {}, me.get("holdout") or {}
    for k in HEADLINE:
        c = cv.get(k) or {}
        L.append(f"| {k} | {_fmt(c.get('mean'))} ± {_fmt(c.get('std'))} | {_fmt(ho.get(k))} |")
    if ho.get("per_class"):
        L += ["", "| class | precision | recall | support |", "|---|---|---|---|"]
        L += [f"| {c} | {_fmt(v['precision'])} | {_fmt(v['recall'])} | {v['support']} |"
              for c, v in ho["per_class"].items()]
    if ho.get("confusion_matrix"):
        L += ["", "Confusion matrix (rows: true class, columns: predicted, order as the classes above):", "", "```"]
        L += ["  ".join(f"{n:>6}" for n in row) for row in ho["confusion_matrix"]]
        L += ["```"]
    comp = me.get("compared_with")
    if comp:
        L += ["", f"Compared with {comp['label']}: " + ", ".join(
            f"{k} {d['delta']:+.3f}" for k, d in comp["deltas"].items())]
    L += ["", "## Approvals", ""]
    L += [f"- {a['meaning']} — {a['full_name']} ({a['user']}) at {a['ts']}"
          + (" (electronically signed)" if a["signed"] else "") for a in card["approvals"]]
    L += ["", "## Lineage", "", "| step | stage | version | code | key |", "|---|---|---|---|---|"]
    L += [f"| {s['step']} | {s['stage']} | {s['version']} | `{str(s['code_hash'])[:12]}` | `{s['key'][:12]}` |"
          for s in card["lineage"]["pipeline"]["steps"]]
    L += ["", "| batch | rows used | content hash | approved by | at |", "|---|---|---|---|---|"]
    for b in card["lineage"]["batches"]:
        a = b.get("approval") or {}
        L.append(f"| {b['batch']} | {b['rows_used']} | `{str(b['content_hash'])[:16]}` | {a.get('full_name', '—')} "
                 f"| {a.get('ts', '—')} |")
    code = card["lineage"].get("code", {})
    L += ["", f"Code: hitl-desktop {code.get('hitl_desktop')}, scikit-learn {code.get('scikit_learn')}.", "",
          "## Known limits", ""]
    L += [f"- {x}" for x in card["known_limits"]]
    return "\n".join(L) + "\n"


def export_model(project: Project, ref: Any, out_dir: str | os.PathLike, session: identity.Session,
                 intended_use: str | None = None, onnx: bool = True) -> ExportResult:
    """Write the signed bundle folder. Refused unless the model's approval is valid and `session` is its approver;
    refused if `out_dir` exists and is not empty (nothing is written then)."""
    out = Path(out_dir).expanduser().absolute()
    identity.authorize(project, session.user, "export")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExportRefused(f"{out} exists and is not empty: choose a new or empty folder (nothing was written)")
    with project.read() as conn:
        r = _row(conn, ref)
        state, reason, d = model_approval(conn, r)
        info = _info(conn, r)
    if state == "rejected":
        raise ExportRefused(f"{reason}: a rejected model cannot be exported")
    if state == "none":
        raise ExportRefused(f"model {r.id} ({info.label}) is not approved: an approver other than the trainer must "
                            f"sign it first (`hitl approve-model DIR {r.id}`)")
    if state != "valid":
        raise ExportRefused(f"{reason}: export refused (run `hitl audit DIR verify`)")
    if d.user != session.user:
        raise ExportRefused(f"the bundle's manifest is signed with the approver's key: run the export as "
                            f"{d.user} ({d.full_name}), who approved model {r.id}")
    problem = _model_file_problem(project, r)
    if problem:
        raise ExportRefused(problem + ": export refused")
    data = (project.path / r.model_file).read_bytes()
    if hashlib.sha256(data).hexdigest() != r.model_sha256:
        raise ExportRefused(f"the file of model {r.id} changed while it was read: export refused")
    schema = {"format": "hitl-model-schema", "version": 1, **info.lineage.get("schema", {})}
    card = model_card(info, project.meta("name") or project.path.name, intended_use)
    files: dict[str, bytes] = {
        "model.joblib": data,
        "schema.json": (json.dumps(schema, indent=1, ensure_ascii=False) + "\n").encode("utf-8"),
        "model_card.json": (json.dumps(card, indent=1, ensure_ascii=False) + "\n").encode("utf-8"),
        "MODEL_CARD.md": model_card_markdown(card).encode("utf-8"),
    }
    note = "skipped: not requested"
    if onnx:
        import joblib

        blob, note = _onnx(joblib.load(io.BytesIO(data)), schema)
        if blob is not None:
            files["model.onnx"] = blob
    manifest = {
        "format": BUNDLE_FORMAT, "version": 1, "created_at": utc_now(),
        "project": {"id": project.project_id, "name": project.meta("name") or project.path.name},
        "model": {"id": r.id, "label": info.label, "sha256": r.model_sha256, "approval_decision": d.id,
                  "approved_by": d.user, "approved_at": d.ts},
        "files": {n: {"sha256": hashlib.sha256(b).hexdigest(), "bytes": len(b)} for n, b in sorted(files.items())},
        "onnx": note,
        "signer": {"user": session.user, "full_name": session.full_name, "public_key": session.public_key,
                   "key": identity.key_fingerprint(session.public_key)},
    }
    mbytes = canonical_json(manifest).encode("utf-8")
    sig = base64.b64encode(session.private_key.sign(mbytes))
    files["manifest.json"] = mbytes
    files["manifest.sig"] = sig + b"\n"
    tmp = out.parent / f".{out.name}.{uuid.uuid4().hex}.tmp"
    try:
        tmp.mkdir(parents=True)
        for n, b in files.items():
            with open(tmp / n, "wb") as fh:
                fh.write(b)
                fh.flush()
                os.fsync(fh.fileno())
        fsync_dir(str(tmp))
        if out.exists():
            out.rmdir()  # empty (checked above); a file appearing meanwhile makes this fail: nothing overwritten
        os.rename(tmp, out)
        fsync_dir(str(out.parent))
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ExportRefused(f"could not write the bundle to {out}: {exc.strerror or exc}") from None
    with project.write() as conn:
        audit.append(conn, session.user, "model.export", f"model:{r.id}", {
            "model": r.id, "out_dir": str(out), "manifest_sha256": hashlib.sha256(mbytes).hexdigest(),
            "files": manifest["files"], "onnx": note, "key": manifest["signer"]["key"]})
    trust_key(session.public_key, session.user, session.full_name, project.project_id)
    return ExportResult(out, {n: v["sha256"] for n, v in manifest["files"].items()}, session.user, note)


# --- bundles and prediction --------------------------------------------------------------------------------------


@dataclass
class Bundle:
    path: Path
    manifest: dict[str, Any]
    schema: dict[str, Any]
    model: Any

    @property
    def signer(self) -> dict[str, Any]:
        return self.manifest["signer"]


def verify_bundle(path: str | os.PathLike, trusted: dict[str, Any] | None = None) -> dict[str, Any]:
    """Check a bundle folder without unpickling anything; return its manifest or raise BundleRefused."""
    root = Path(path)
    if not root.is_dir():
        raise BundleRefused(f"{root} is not a model bundle folder")
    for n in ("manifest.json", "manifest.sig"):
        if not (root / n).is_file():
            raise BundleRefused(f"bundle refused: {n} is missing from {root}")
    mbytes = (root / "manifest.json").read_bytes()
    try:
        manifest = json.loads(mbytes)
        signer = manifest["signer"]
        pub = signer["public_key"]
    except (ValueError, KeyError, TypeError):
        raise BundleRefused("bundle refused: manifest.json is not a readable bundle manifest") from None
    if manifest.get("format") != BUNDLE_FORMAT:
        raise BundleRefused(f"bundle refused: manifest.json is not a {BUNDLE_FORMAT} manifest")
    sig = (root / "manifest.sig").read_text(encoding="ascii", errors="replace").strip()
    if not identity.verify_signature(pub, mbytes.decode("utf-8", errors="replace"), sig):
        raise BundleRefused("bundle refused: the manifest signature does not verify (manifest.json or manifest.sig "
                            "was altered)")
    trusted = trusted_keys() if trusted is None else trusted
    if pub not in trusted:
        raise BundleRefused(f"bundle refused: signed by {signer.get('full_name')} ({signer.get('user')}, key "
                            f"{identity.key_fingerprint(pub)}), who is not a known signer here; trust their project "
                            f"with --trust-project DIR")
    files = manifest.get("files") or {}
    for need in ("model.joblib", "schema.json"):
        if need not in files:
            raise BundleRefused(f"bundle refused: the manifest lists no {need}")
    for n, meta in sorted(files.items()):
        p = root / n
        if Path(n).name != n or not p.is_file():
            raise BundleRefused(f"bundle refused: {n} is missing")
        if p.stat().st_size != meta.get("bytes") or file_sha256(p) != meta.get("sha256"):
            raise BundleRefused(f"bundle refused: {n} was altered (its sha256 differs from the signed manifest)")
    return manifest


def load_bundle(path: str | os.PathLike, trusted: dict[str, Any] | None = None) -> Bundle:
    """Verify (signature, trust, every file's hash), then read the schema and unpickle the model."""
    import joblib

    manifest = verify_bundle(path, trusted)
    root = Path(path)
    schema = json.loads((root / "schema.json").read_text(encoding="utf-8"))
    data = (root / "model.joblib").read_bytes()
    if hashlib.sha256(data).hexdigest() != manifest["files"]["model.joblib"]["sha256"]:
        raise BundleRefused("bundle refused: model.joblib changed while it was read")
    return Bundle(root, manifest, schema, joblib.load(io.BytesIO(data)))


def read_rows(path: str | os.PathLike) -> pd.DataFrame:
    """Rows to predict on, every value read as text (the schema decides the types)."""
    p = Path(path)
    if not p.is_file():
        raise BundleRefused(f"no input file {p}")
    try:
        if p.suffix.lower() == ".parquet":
            return pd.read_parquet(p).astype("string")
        sep = "\t" if p.suffix.lower() in (".tsv", ".tab") else None
        return pd.read_csv(p, dtype=str, keep_default_na=False, na_values=[""], sep=sep, engine="python"
                           if sep is None else "c")
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise BundleRefused(f"cannot read {p.name}: {str(exc).splitlines()[0][:200]}") from None


def predict(bundle: Bundle, rows: pd.DataFrame) -> pd.DataFrame:
    """Predictions with one probability column per class; raises BundleRefused for rows that do not fit."""
    from .pipeline.model_stages import SchemaError, model_frame

    try:
        X = model_frame(rows, bundle.schema, strict=True, row_labels=np.arange(len(rows)) + 1)
    except SchemaError as exc:
        raise BundleRefused(f"input refused: {exc}") from None
    out = pd.DataFrame({"row": np.arange(len(rows)) + 1})
    if len(rows) == 0:
        out["prediction"] = []
        return out
    proba = bundle.model.predict_proba(X)
    classes = [str(c) for c in bundle.model.classes_]
    out["prediction"] = np.asarray(classes, dtype=object)[proba.argmax(axis=1)]
    for j, c in enumerate(classes):
        out[f"p_{c}"] = proba[:, j]
    return out


def predict_file(bundle_path: str | os.PathLike, rows_path: str | os.PathLike, out: str | os.PathLike,
                 trusted: dict[str, Any] | None = None) -> dict[str, Any]:
    """Verify the bundle, check the rows against its schema, predict, and write the predictions CSV to `out`
    atomically (a temporary file beside it, fsynced, then renamed: a refusal or a crash leaves no partial file).
    Returns a summary (what `hitl predict --out` prints and the window shows)."""
    out = Path(out)
    if out.is_dir():
        raise BundleRefused(f"{out} is a folder: give a file name for the predictions")
    if not out.parent.is_dir():
        raise BundleRefused(f"the folder {out.parent} does not exist")
    bundle = load_bundle(bundle_path, trusted)
    pred = predict(bundle, read_rows(rows_path))
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            pred.to_csv(fh, index=False)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, out)
        fsync_dir(str(out.parent))
    except OSError as exc:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise BundleRefused(f"could not write {out}: {exc.strerror or exc}") from None
    return {"bundle": str(bundle.path), "model": bundle.manifest["model"], "rows": len(pred), "out": str(out),
            "signer": {k: bundle.signer[k] for k in ("user", "full_name", "key")},
            "predicted": {str(k): int(v) for k, v in pred["prediction"].value_counts().items()}}


__all__ = ["BundleRefused", "ExportRefused", "ModelInfo", "TrainResult", "TrainingRefused", "allowed_actions",
           "decide_model", "export_model", "get_model", "list_models", "load_bundle", "model_approval",
           "predict", "predict_file", "project_keys", "read_rows", "train", "training_scope", "trust_key",
           "trusted_keys", "verify_bundle"]
