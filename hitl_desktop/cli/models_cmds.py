"""Model commands: train, models, model, approve-model, reject-model, export, predict (docs/models.md)."""
from __future__ import annotations

import argparse
import sys
import threading
from typing import Any

from ..core.errors import HitlError
from ._lazy import lazy
from .context import actor, login, open_project, password
from .main import command, emit, table

identity = lazy("hitl_desktop.core.identity")
M = lazy("hitl_desktop.core.models")
_perrors = lazy("hitl_desktop.core.pipeline.errors")
_tasks = lazy("hitl_desktop.core.tasks")
_spec = lazy("hitl_desktop.core.pipeline.spec")
_project = lazy("hitl_desktop.core.project")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model version on validly approved batches",
                       description="train a model version (featurize -> train -> evaluate) on the batches whose "
                                   "approval is valid; refused while a batch in scope is unapproved or its approval "
                                   "is invalid, unless --approved-only")
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--target", required=True, metavar="COLUMN", help="the column to predict")
    p.add_argument("--model", default="logreg", choices=("logreg", "forest", "hgb"))
    p.add_argument("--param", action="append", default=[], metavar="K=V",
                   help="an estimator parameter (C, max_iter, class_weight, impute, seed, or any parameter of the "
                        "scikit-learn estimator); VALUE as JSON or text; repeat")
    p.add_argument("--pipeline", metavar="NAME", help="pipeline to train with (default: 'default'; a new name "
                                                        "copies the default)")
    p.add_argument("--approved-only", action="store_true",
                   help="train on the validly approved batches and leave the others out (says how many rows)")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("models", help="list model versions with their headline metrics",
                       description="list model versions with status and held-out metrics")
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("model", help="one model version: metrics and lineage",
                       description="one model version: metrics (cross-validated, held-out, per class, confusion "
                                   "matrix, change from the previous version) and lineage")
    p.add_argument("dir", metavar="DIR")
    p.add_argument("model", metavar="MODEL", help="model id or PIPELINE:vN")
    p.add_argument("--json", action="store_true")

    for name, help_ in (("approve-model", "approve a model version for export (a signature; not its trainer)"),
                        ("reject-model", "reject a model version (a signature with a comment)")):
        p = sub.add_parser(name, help=help_, description=help_)
        p.add_argument("dir", metavar="DIR")
        p.add_argument("model", metavar="MODEL")
        p.add_argument("--comment", metavar="TEXT", required=name == "reject-model")
        p.add_argument("--json", action="store_true")

    p = sub.add_parser("export", help="write an approved model as a signed bundle folder",
                       description="write an approved model to a new (or empty) folder: model.joblib, schema.json, "
                                   "MODEL_CARD.md, model_card.json, optional model.onnx, manifest.json signed by the "
                                   "approver's key (manifest.sig); run it as the approver")
    p.add_argument("dir", metavar="DIR")
    p.add_argument("model", metavar="MODEL")
    p.add_argument("out", metavar="OUT_DIR")
    p.add_argument("--intended-use", metavar="TEXT", help="the model card's intended use")
    p.add_argument("--no-onnx", action="store_true", help="do not try to write model.onnx")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("predict", help="predict with a verified model bundle",
                       description="verify a bundle (manifest signature, trusted signer, every file's sha256) before "
                                   "loading it, check the rows against its schema, write predictions with "
                                   "probabilities (CSV)")
    p.add_argument("bundle", metavar="BUNDLE", help="the exported folder")
    p.add_argument("file", metavar="FILE", help="rows to predict (CSV, TSV or Parquet)")
    p.add_argument("--out", metavar="FILE", help="write the predictions here (default: standard output)")
    p.add_argument("--trust-project", metavar="DIR", help="also trust the signing keys recorded in this project")
    p.add_argument("--json", action="store_true", help="print a summary as JSON (with --out)")


# --- train ------------------------------------------------------------------------------------------------------


def _params(items: list[str]) -> dict[str, Any]:
    out = {}
    for it in items:
        k, sep, v = it.partition("=")
        if not sep or not k.strip():
            raise HitlError(f"--param takes KEY=VALUE, got '{it}'")
        out[k.strip()] = _spec.parse_value(v)
    return out


def _pct(x: Any) -> str:
    return "—" if x is None else f"{x:.3f}"


@command("train")
def cmd_train(args: argparse.Namespace) -> int:
    from .pipeline_cmds import _Printer

    params = _params(args.param)
    with open_project(args) as project:
        user = actor(args)
        identity.authorize(project, user, "train")
        identity.authenticate(project, user, password(user))
        token = _tasks.TaskState()
        box: dict[str, Any] = {}

        def work() -> None:
            try:
                box["res"] = M.train(project, user, args.target, args.model, params, args.pipeline,
                                     args.approved_only, observer=None if args.json else _Printer(), cancel=token)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
                box["error"] = exc

        t = threading.Thread(target=work, name="hitl-train", daemon=True)
        t.start()
        try:
            while t.is_alive():
                t.join(0.1)
        except KeyboardInterrupt:
            sys.stderr.write("hitl: cancelling training...\n")
            token.cancel()
            t.join()
        if "error" in box:
            if isinstance(box["error"], _perrors.RunCancelled):
                sys.stderr.write(f"hitl: {box['error']}\n")
                return _perrors.RunCancelled.exit_code
            raise box["error"]
        res: M.TrainResult = box["res"]

    def text() -> str:
        m = res.model
        h = m.headline()
        lines = []
        if res.left_out:
            lines.append(f"left out {res.left_out_rows:,} rows of {len(res.left_out)} batch(es) not validly approved: "
                         + ", ".join(str(i["batch"]) for i in res.left_out[:20]))
        if res.reused:
            lines.append(f"model {m.id} ({m.label}) is up to date: same data, code and parameters; the cached "
                         f"result was reused, nothing new was registered")
        else:
            r = m.lineage.get("rows", {})
            lines.append(f"model {m.id} ({m.label}): {m.estimator} trained on {r.get('train', 0):,} rows of "
                         f"{len(m.lineage.get('batches', []))} approved batches ({r.get('holdout', 0):,} held out, "
                         f"{r.get('dropped_duplicates', 0):,} duplicates dropped)")
        part = "held-out" if m.metrics.get("holdout") else "cross-validated"
        lines.append(f"  {part}: accuracy {_pct(h['accuracy'])}, balanced accuracy {_pct(h['balanced_accuracy'])}, "
                     f"macro F1 {_pct(h['f1_macro'])}, ROC AUC {_pct(h['roc_auc'])}")
        comp = m.metrics.get("compared_with")
        if comp and not res.reused:
            d = comp["deltas"]
            shown = [f"{k.split('.', 1)[1]} {v['delta']:+.3f}" for k, v in d.items() if k.startswith(part[:4]) or
                     (part == "cross-validated" and k.startswith("cv."))]
            lines.append(f"  vs {comp['label']}: " + (", ".join(shown) or "no comparable metrics"))
        for n in res.notes:
            lines.append(f"  note: {n}")
        lines.append(f"  status: {m.status}; an approver other than {m.trained_by} signs it with "
                     f"`hitl approve-model DIR {m.id}`")
        return "\n".join(lines)

    emit(args, res.to_json(), text)
    return 0


# --- registry ---------------------------------------------------------------------------------------------------


@command("models")
def cmd_models(args: argparse.Namespace) -> int:
    with open_project(args) as project:
        items = M.list_models(project)

    def text() -> str:
        if not items:
            return "no models yet: train one with `hitl train DIR --target COLUMN`"
        rows = []
        for m in items:
            h = m.headline()
            rows.append([m.id, m.label, m.status, m.estimator, m.target, m.metrics.get("rows"), _pct(h["accuracy"]),
                         _pct(h["balanced_accuracy"]), _pct(h["f1_macro"]), _pct(h["roc_auc"]), m.trained_by,
                         m.trained_at[:19]])
        return table(rows, ["id", "model", "status", "estimator", "target", "rows", "acc", "bal_acc", "f1", "auc",
                            "trained by", "trained at (UTC)"])

    emit(args, [m.to_json(full=False) for m in items], text)
    return 0


def model_text(m: M.ModelInfo) -> str:
    lin, me = m.lineage, m.metrics
    L = [f"model {m.id} ({m.label}) — {m.status}", f"  estimator {m.estimator}, target {m.target}, parameters "
         f"{ {k: v for k, v in m.params.items() if v not in ({}, None)} }",
         f"  trained by {m.trained_by} at {m.trained_at}; file {m.model_file} (sha256 {m.model_sha256})"]
    cv, ho = me.get("cv") or {}, me.get("holdout") or {}
    L.append(f"  metrics ({me.get('folds')}-fold CV on {me.get('train_rows')} rows | held-out {me.get('holdout_rows')} "
             f"rows):")
    for k in M.HEADLINE:
        c = cv.get(k) or {}
        L.append(f"    {k:<18} {_pct(c.get('mean'))} ± {_pct(c.get('std'))} | {_pct(ho.get(k))}")
    if ho.get("per_class"):
        L.append("  per class (held-out): " + "; ".join(
            f"{c}: precision {_pct(v['precision'])}, recall {_pct(v['recall'])} (n={v['support']})"
            for c, v in ho["per_class"].items()))
        L.append("  confusion matrix (rows true, columns predicted: " + ", ".join(me.get("classes", [])) + "):")
        L += ["    " + " ".join(f"{n:>6}" for n in row) for row in ho["confusion_matrix"]]
    comp = me.get("compared_with")
    if comp:
        L.append(f"  compared with {comp['label']}: " + ", ".join(
            f"{k} {v['delta']:+.3f}" for k, v in comp["deltas"].items()))
    L.append("  lineage:")
    L.append(f"    pipeline {lin['pipeline']['name']} (source: {lin['pipeline']['source']})")
    for s in lin["pipeline"]["steps"]:
        L.append(f"      {s['step']:<11} [{s['stage']} v{s['version']}, code {str(s['code_hash'])[:10]}] "
                 f"{s['key'][:12]} {s['params']}")
    src = lin["source"]
    L.append(f"    source {src['id']}: {src['file']} sha256 {src['sha256']}")
    r = lin["rows"]
    L.append(f"    rows: {r['used']:,} used ({r['train']:,} train, {r['holdout']:,} held out), "
             f"{r['dropped_duplicates']:,} duplicates dropped")
    for b in lin["batches"]:
        a = b.get("approval") or {}
        L.append(f"    batch {b['batch']}: {b['rows_used']} rows, content {str(b['content_hash'])[:16]}, approved by "
                 f"{a.get('full_name')} ({a.get('user')}) at {a.get('ts')}, signature {str(a.get('signature'))[:16]}…")
    for b in lin.get("left_out", []):
        L.append(f"    left out: batch {b['batch']} ({b['rows']} rows): {b['why']}")
    code = lin["code"]
    L.append(f"    code: hitl-desktop {code['hitl_desktop']}, scikit-learn {code['scikit_learn']}; stage code "
             + ", ".join(f"{k} {v[:10]}" for k, v in code["stages"].items()))
    for d in m.decisions:
        L.append(f"  {d['meaning']} by {d['full_name']} ({d['user']}) at {d['ts']}"
                 + (" [signed]" if d["signed"] else ""))
    return "\n".join(L)


@command("model")
def cmd_model(args: argparse.Namespace) -> int:
    with open_project(args) as project:
        m = M.get_model(project, args.model)
    emit(args, m.to_json(), lambda: model_text(m))
    return 0


def _decide(args: argparse.Namespace, action: str) -> int:
    with open_project(args) as project:
        user = actor(args)
        m = M.get_model(project, args.model)
        identity.authorize(project, user, action, target=f"model:{m.id}")
        pw = password(user, f"signing: model {m.id} ({m.label}) {M.MEANINGS[action]}")
        info = M.decide_model(project, m.id, action, user, args.comment, signer=identity.signer(project, user, pw))
    d = info.decisions[-1]
    emit(args, info.to_json(full=False), f"model {info.id} ({info.label}): {d['meaning']} by {d['full_name']} at "
                                         f"{d['ts']}")
    return 0


@command("approve-model")
def cmd_approve_model(args: argparse.Namespace) -> int:
    return _decide(args, "approve_model")


@command("reject-model")
def cmd_reject_model(args: argparse.Namespace) -> int:
    return _decide(args, "reject_model")


@command("export")
def cmd_export(args: argparse.Namespace) -> int:
    with open_project(args) as project:
        identity.authorize(project, actor(args), "export")
        session = login(project, args, "signing the bundle manifest")
        res = M.export_model(project, args.model, args.out, session, args.intended_use, onnx=not args.no_onnx)

    def text() -> str:
        lines = [f"exported to {res.out_dir} (manifest signed by {res.signer})"]
        lines += [f"  {n:<16} {h[:16]}…" for n, h in res.files.items()]
        lines.append(f"  onnx: {res.onnx}")
        return "\n".join(lines)

    emit(args, res.to_json(), text)
    return 0


@command("predict")
def cmd_predict(args: argparse.Namespace) -> int:
    trusted = M.trusted_keys()
    if args.trust_project:
        with _project.Project.open(args.trust_project) as p:
            trusted.update(M.project_keys(p))
    if args.out:
        summary = M.predict_file(args.bundle, args.file, args.out, trusted)
        emit(args, summary, f"{summary['rows']:,} predictions written to {summary['out']} (model "
                            f"{summary['model']['label']}, signed by {summary['signer']['full_name']})")
    else:
        bundle = M.load_bundle(args.bundle, trusted)
        pred = M.predict(bundle, M.read_rows(args.file))
        pred.to_csv(sys.stdout, index=False)
    return 0
