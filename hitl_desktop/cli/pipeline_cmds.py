"""Pipeline commands: pipeline (show / set-param / add-variant / add-step / remove-step / set-source / stages /
settings), status, run, runs, lineage."""
from __future__ import annotations

import argparse
import json
import sys
import threading
from typing import Any

from ..core.errors import HitlError
from ._lazy import lazy
from .choices import PARALLEL_BACKENDS as BACKENDS
from .choices import STAGE_PATHS_KEY
from .context import open_project, require
from .main import command, emit, table

E = lazy("hitl_desktop.core.pipeline.engine")
S = lazy("hitl_desktop.core.pipeline.spec")
_perrors = lazy("hitl_desktop.core.pipeline.errors")
_events = lazy("hitl_desktop.core.pipeline.events")
_tasks = lazy("hitl_desktop.core.tasks")
_registry = lazy("hitl_desktop.core.pipeline.registry")

SETTINGS = {
    "settings.joblib_backend": "joblib backend for per-batch stages: " + ", ".join(BACKENDS),
    "settings.joblib_n_jobs": "workers for per-batch stages (default: all cores)",
    "settings.dask_address": "Dask scheduler address when the backend is dask (tcp://host:8786)",
    STAGE_PATHS_KEY: "JSON list of Python files defining user stages (relative to the project folder)",
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pipeline", help="show and edit pipelines (named DAGs of stages)",
                       description="show and edit pipelines (named DAGs of stages)")
    p.add_argument("dir", metavar="DIR", help="project folder")
    acts = p.add_subparsers(dest="action", metavar="ACTION", parser_class=p.__class__)
    acts.required = True

    def act(name: str, help: str) -> argparse.ArgumentParser:
        a = acts.add_parser(name, help=help, description=help)
        a.add_argument("--json", action="store_true", help="machine-readable output")
        return a

    a = act("show", "list pipelines, or show one with its steps and parameters")
    a.add_argument("name", nargs="?", metavar="PIPELINE")
    a = act("stages", "list the available stages (built-in and user stages)")
    a = act("set-param", "set a parameter of a step (value as JSON: 0.5, true, \"text\"; bare text is a string)")
    a.add_argument("step", metavar="STEP")
    a.add_argument("param", metavar="PARAM")
    a.add_argument("value", metavar="VALUE")
    a.add_argument("--pipeline", metavar="NAME", help="pipeline to edit (default: 'default')")
    a = act("add-variant", "copy a pipeline under a new name (shared steps reuse results)")
    a.add_argument("new", metavar="NEW")
    a.add_argument("--from", dest="base", metavar="NAME", help="pipeline to copy (default: 'default')")
    a.add_argument("--set", action="append", default=[], metavar="STEP.PARAM=VALUE", help="change a parameter")
    a = act("add-step", "add a step running STAGE after the --needs steps")
    a.add_argument("step", metavar="STEP")
    a.add_argument("--stage", required=True, metavar="STAGE")
    a.add_argument("--needs", default="", metavar="A,B", help="upstream steps, comma-separated")
    a.add_argument("--pipeline", metavar="NAME")
    a = act("remove-step", "remove a step no other step needs")
    a.add_argument("step", metavar="STEP")
    a.add_argument("--pipeline", metavar="NAME")
    a = act("set-source", "which source version the pipeline reads: 'latest' or a source id")
    a.add_argument("source", metavar="latest|ID")
    a.add_argument("--pipeline", metavar="NAME")
    a = act("settings", "show pipeline settings, or set one: settings KEY VALUE")
    a.add_argument("key", nargs="?", metavar="KEY")
    a.add_argument("value", nargs="?", metavar="VALUE")

    p = sub.add_parser("status", help="per pipeline and step: fresh / stale (and why) / never run / failed",
                       description="per pipeline and step: fresh / stale (and why) / never run / failed")
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--pipeline", metavar="NAME")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("run", help="run what is stale (or one step and what it needs)",
                       description="run what is stale in a pipeline (or --stage STEP and what it needs); Ctrl-C "
                                   "cancels between work units")
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--pipeline", metavar="NAME", help="default: 'default'")
    p.add_argument("--stage", metavar="STEP", help="run only this step and the steps it needs")
    p.add_argument("--jobs", type=int, metavar="N", help="workers for per-batch stages (default: setting or cores)")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("runs", help="list pipeline runs", description="list pipeline runs (who, when, outcome)")
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--limit", type=int, metavar="N")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("lineage", help="where a result came from",
                       description="walk back from a result to stage versions, parameters, upstream results, "
                                   "batches (content hashes, decisions) and source versions")
    p.add_argument("dir", metavar="DIR")
    p.add_argument("result", metavar="RESULT", help="result key or prefix, or [PIPELINE:]STEP")
    p.add_argument("--json", action="store_true")


# --- pipeline ---------------------------------------------------------------------------------------------------


def _spec_json(spec: S.PipelineSpec, reg) -> dict[str, Any]:
    steps = []
    for st in spec.steps:
        try:
            stage = reg.get(st.stage)
            params = {k: {"value": st.params.get(k, p.default), "default": p.default, "set": k in st.params,
                          "type": p.describe()} for k, p in stage.params.items()}
            version = stage.version
        except HitlError:
            params, version = {k: {"value": v, "set": True} for k, v in st.params.items()}, None
        steps.append({"step": st.name, "stage": st.stage, "version": version, "needs": st.needs, "params": params})
    return {"name": spec.name, "source": spec.source, "updated_at": spec.updated_at, "steps": steps}


def _spec_text(d: dict[str, Any]) -> str:
    lines = [f"pipeline {d['name']} (source: {d['source']})"]
    for s in d["steps"]:
        needs = f" after {', '.join(s['needs'])}" if s["needs"] else ""
        lines.append(f"  {s['step']} [{s['stage']} v{s['version']}]{needs}")
        for k, p in s["params"].items():
            mark = "" if not p.get("set") else "  (set)"
            lines.append(f"      {k} = {json.dumps(p['value'])}{mark}")
    return "\n".join(lines)


def _parse_set(item: str) -> tuple[str, str, Any]:
    if "=" not in item or "." not in item.split("=", 1)[0]:
        raise _perrors.ParamError(f"--set expects STEP.PARAM=VALUE, got '{item}'")
    lhs, value = item.split("=", 1)
    step, param = lhs.split(".", 1)
    return step, param, S.parse_value(value)


@command("pipeline")
def cmd_pipeline(args: argparse.Namespace) -> int:
    with open_project(args) as project:
        a = args.action
        if a == "show":
            reg = _registry.registry_for(project)
            if args.name:
                d = _spec_json(S.get_pipeline(project, args.name), reg)
                emit(args, d, lambda: _spec_text(d))
            else:
                specs = [_spec_json(s, reg) for s in S.list_pipelines(project)]
                emit(args, specs, lambda: "\n\n".join(_spec_text(d) for d in specs))
            return 0
        if a == "stages":
            reg = _registry.registry_for(project)
            data = [s.to_json() for s in reg.all()]
            emit(args, data, lambda: table(
                [[s["name"], s["version"], "yes" if s["per_batch"] else "", ",".join(s["inputs"]),
                  ",".join(s["outputs"]), s["origin"]] for s in data],
                ["stage", "version", "per-batch", "inputs", "outputs", "from"], max_width=40))
            return 0
        if a == "settings":
            return _settings(project, args)
        user = require(project, args, "edit")
        reg = _registry.registry_for(project)
        if a == "set-param":
            spec = S.set_param(project, args.pipeline, args.step, args.param, S.parse_value(args.value), user, reg)
            d = _spec_json(spec, reg)
            emit(args, d, f"pipeline {spec.name}: {args.step}.{args.param} = "
                          f"{json.dumps(spec.step(args.step).params[args.param])}")
        elif a == "add-variant":
            sets = [_parse_set(x) for x in args.set]
            spec = S.add_variant(project, args.new, args.base, user, reg, sets)
            d = _spec_json(spec, reg)
            emit(args, d, f"created pipeline {spec.name} from {args.base or S.DEFAULT_PIPELINE}"
                          + (f" ({', '.join(args.set)})" if args.set else ""))
        elif a == "add-step":
            needs = [n.strip() for n in args.needs.split(",") if n.strip()]
            spec = S.add_step(project, args.pipeline, args.step, args.stage, needs, user, reg)
            emit(args, _spec_json(spec, reg), f"pipeline {spec.name}: added step {args.step} ({args.stage})")
        elif a == "remove-step":
            spec = S.remove_step(project, args.pipeline, args.step, user, reg)
            emit(args, _spec_json(spec, reg), f"pipeline {spec.name}: removed step {args.step}")
        elif a == "set-source":
            src: Any = args.source
            if src != "latest":
                try:
                    src = int(src)
                except ValueError:
                    raise _perrors.PipelineError(f"source must be 'latest' or a source id, got '{args.source}'") from None
            spec = S.set_source(project, args.pipeline, src, user, reg)
            emit(args, _spec_json(spec, reg), f"pipeline {spec.name} reads source {src}")
    return 0


def _settings(project, args) -> int:
    if args.key is None:
        data = {k: project.meta(k) for k in SETTINGS}
        emit(args, data, lambda: "\n".join(f"{k} = {v if v is not None else '(not set)'}    # {SETTINGS[k]}"
                                           for k, v in data.items()))
        return 0
    if args.key not in SETTINGS:
        raise _perrors.PipelineError(f"unknown pipeline setting '{args.key}' (known: {', '.join(SETTINGS)})")
    if args.value is None:
        emit(args, {args.key: project.meta(args.key)}, f"{args.key} = {project.meta(args.key)}")
        return 0
    v = args.value
    if args.key == "settings.joblib_backend" and v not in BACKENDS:
        raise _perrors.PipelineError(f"settings.joblib_backend must be one of {', '.join(BACKENDS)}, got '{v}'")
    if args.key == "settings.joblib_n_jobs":
        try:
            int(v)
        except ValueError:
            raise _perrors.PipelineError(f"settings.joblib_n_jobs must be a whole number, got '{v}'") from None
    if args.key == STAGE_PATHS_KEY:
        try:
            parsed = json.loads(v)
        except ValueError:
            parsed = [v]
        if isinstance(parsed, str):
            parsed = [parsed]
        if not isinstance(parsed, list) or not all(isinstance(x, str) for x in parsed):
            raise _perrors.PipelineError(f"{STAGE_PATHS_KEY} must be a JSON list of file paths")
        v = json.dumps(parsed)
    user = require(project, args, "edit")
    from ..core import audit

    with project.write() as conn:
        project.set_meta(conn, args.key, v)
        audit.append(conn, user, "settings.set", args.key, {"key": args.key, "value": v})
    if args.key == STAGE_PATHS_KEY:
        _registry.registry_for(project)  # refuse nothing, but report a broken module now rather than at the next run
    emit(args, {args.key: v}, f"{args.key} = {v}")
    return 0


# --- status -----------------------------------------------------------------------------------------------------


@command("status")
def cmd_status(args: argparse.Namespace) -> int:
    with open_project(args) as project:
        data = E.pipeline_status(project, args.pipeline)

    def text() -> str:
        lines = []
        for p in data:
            lines.append(f"pipeline {p['pipeline']}")
            if p["error"]:
                lines.append(f"  cannot plan: {p['error']}")
            for s in p["steps"]:
                extra = ""
                if "batches" in s and s["state"] == "stale" and s["batches"]["stale"]:
                    extra = f" ({s['batches']['stale']}/{s['batches']['total']} batches)"
                lines.append(f"  {s['step']:<12} {s['state']}{extra}")
                for r in s["reasons"]:
                    lines.append(f"      - {r}")
        return "\n".join(lines)

    emit(args, data, text)
    return 0


# --- run --------------------------------------------------------------------------------------------------------


class _Printer:
    def __init__(self) -> None:
        self.last: dict[str, float] = {}

    def __call__(self, e: _events.RunEvent) -> None:
        w = sys.stderr.write
        if e.kind == "stage_started":
            units = e.data.get("units", 1)
            reused = e.data.get("reused_units", 0)
            extra = f" ({units} batches to compute, {reused} reused)" if reused or units > 1 else ""
            w(f"{e.step}: running{extra}\n")
        elif e.kind == "progress":
            f = e.fraction or 0.0
            if f - self.last.get(e.step or "", -1.0) >= 0.25 and 0 < f < 1:
                self.last[e.step or ""] = f
                w(f"{e.step}: {f:4.0%} {e.message}\n")
        elif e.kind == "reused":
            w(f"{e.step}: fresh, reused stored result {e.data.get('key', '')[:12]}\n")
        elif e.kind == "stage_finished":
            w(f"{e.step}: done in {e.data.get('seconds', 0):.2f} s -> {e.data.get('key', '')[:12]}\n")
        elif e.kind == "stage_failed":
            w(f"{e.step}: FAILED: {e.message}\n")
        elif e.kind == "notice":
            w(f"{e.step}: note: {e.message}\n")
        elif e.kind == "cancelled":
            w(f"{e.step}: cancelled\n")


@command("run")
def cmd_run(args: argparse.Namespace) -> int:
    with open_project(args) as project:
        user = require(project, args, "edit")
        token = _tasks.TaskState()
        box: dict[str, Any] = {}
        printer = None if args.json else _Printer()

        def work() -> None:
            try:
                box["report"] = E.run_pipeline(project, args.pipeline, args.stage, user=user, observer=printer,
                                               cancel=token, n_jobs=args.jobs)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
                box["error"] = exc

        t = threading.Thread(target=work, name="hitl-run", daemon=True)
        t.start()
        try:
            while t.is_alive():
                t.join(0.1)
        except KeyboardInterrupt:
            sys.stderr.write("hitl: cancelling (stops between work units)...\n")
            token.cancel()
            t.join()
        if "error" in box:
            raise box["error"]
        report: E.RunReport = box["report"]

    def text() -> str:
        lines = [f"run {report.run_id} of pipeline {report.pipeline}: {report.status} in {report.seconds:.2f} s"]
        for s in report.steps:
            u = f" ({s.units_computed} batches computed, {s.units_reused} reused)" if s.units_computed and \
                s.units_reused else ""
            lines.append(f"  {s.step:<12} {s.outcome}{u}")
        return "\n".join(lines)

    emit(args, report.to_json(), text)
    if report.status == "failed":
        sys.stderr.write(f"hitl: error: {report.error}\n")
        return _perrors.StageFailed.exit_code
    if report.status == "cancelled":
        sys.stderr.write(f"hitl: {report.error}\n")
        return _perrors.RunCancelled.exit_code
    return 0


@command("runs")
def cmd_runs(args: argparse.Namespace) -> int:
    with open_project(args) as project:
        runs = E.list_runs(project, args.limit)
    emit(args, runs, lambda: table(
        [[r["run"], r["pipeline"], r["user"], (r["started_at"] or "")[:19], r["status"],
          "" if r["seconds"] is None else f"{r['seconds']:.2f}", ",".join(r["computed"]) or "-",
          ",".join(r["reused"]) or "-", r["error"] or ""] for r in runs],
        ["run", "pipeline", "user", "started", "status", "secs", "computed", "reused", "error"], max_width=48)
        if runs else "no runs yet: `hitl run DIR`")
    return 0


# --- lineage ----------------------------------------------------------------------------------------------------


def _lineage_text(node: dict[str, Any], indent: int = 0) -> list[str]:
    pad = "  " * indent
    head = node.get("step") or node["stage"]
    key = (node.get("key") or "")[:12]
    lines = [f"{pad}{head} [{node['stage']} v{node['stage_version']}, code {node['code_hash'][:10]}] {key}"]
    if node.get("params"):
        lines.append(f"{pad}  params: {json.dumps(node['params'], sort_keys=True)}")
    if node.get("run"):
        r = node["run"]
        lines.append(f"{pad}  computed in run {r['run']} ({r['pipeline']}) by {r['user']} at {r['started_at'][:19]}")
    bs = node.get("batches") or []
    if bs and indent == 0:
        approved = sum(1 for b in bs if (b.get("decision") or {}).get("action") == "approve")
        lines.append(f"{pad}  batches: {len(bs)} ({approved} approved)")
        for b in bs[:10]:
            d = b.get("decision")
            dec = f"{d['action']} by {d['user']}" if d else "no decision"
            ch = " (changed since)" if b.get("changed_since") else ""
            lines.append(f"{pad}    batch {b['batch']}: {(b['content_hash'] or '')[:12]} {dec}{ch}")
        if len(bs) > 10:
            lines.append(f"{pad}    ... {len(bs) - 10} more (--json for all)")
    if node.get("source") and indent == 0:
        s = node["source"]
        lines.append(f"{pad}  source {s['id']}: {s.get('file')} sha256 {str(s.get('sha256'))[:12]} "
                     f"options {json.dumps({k: v for k, v in (s.get('options') or {}).items() if k != 'detected'})}")
    for up in node.get("upstream", []):
        if up.get("missing"):
            lines.append(f"{pad}  <- {up.get('step') or up.get('input')}: result {str(up.get('key'))[:12]} missing")
        else:
            lines += _lineage_text(up, indent + 1)
    return lines


@command("lineage")
def cmd_lineage(args: argparse.Namespace) -> int:
    with open_project(args) as project:
        node = E.lineage(project, args.result)
    emit(args, node, lambda: "\n".join(_lineage_text(node)))
    return 0
