"""Check commands: checks (run them), flags, accept, dismiss, profile (show / pin / unpin / refresh / set), rules.

The checks run as pipeline steps (validate, duplicates, labels; docs/checks.md). `hitl checks DIR` runs exactly
those steps (and `clean`, which the label model reads) of the default pipeline; `hitl run DIR --stage labels` etc.
does the same step by step.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..core.errors import HitlError, NotFound
from ._lazy import lazy
from .context import open_project, require
from .main import command, emit, table

_sa = lazy("sqlalchemy")
audit = lazy("hitl_desktop.core.audit")
db = lazy("hitl_desktop.core.db")
F = lazy("hitl_desktop.core.flags")
_edits = lazy("hitl_desktop.core.operations.edits")
_checks = lazy("hitl_desktop.core.checks")
CS = lazy("hitl_desktop.core.pipeline.checks_stages")
_review = lazy("hitl_desktop.core.review")
_sources = lazy("hitl_desktop.core.sources")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("checks", help="run the automatic checks (validate, duplicates, labels) and store flags",
                       description="run the check steps of a pipeline: validate (cell checks and rules per batch), "
                                   "duplicates (within and across batches) and labels (label model); only what is "
                                   "stale is recomputed")
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--pipeline", metavar="NAME")
    p.add_argument("--jobs", type=int, metavar="N")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("flags", help="list flags: batches riskiest first, rows by risk within a batch",
                       description="list flags: batches riskiest first (open flags weighted by severity), rows "
                                   "ordered by risk within a batch")
    p.add_argument("dir", metavar="DIR")
    p.add_argument("batch", nargs="?", type=int, metavar="BATCH")
    p.add_argument("--open", action="store_true", help="only open flags")
    p.add_argument("--kind", metavar="KIND", help="only this kind (missing, type, out_of_range, category, "
                                                  "duplicate, label, rule:NAME)")
    p.add_argument("--limit", type=int, metavar="N")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("accept", help="accept a flag's suggestion (the cell takes the suggested value)",
                       description="accept a flag's suggestion: the cell takes the suggested value (or a duplicate "
                                   "row is marked to drop); other open flags on the cell are resolved")
    p.add_argument("dir", metavar="DIR")
    p.add_argument("flag", type=int, metavar="FLAG")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("dismiss", help="dismiss a flag as correct as is (recorded with who and why)",
                       description="dismiss a flag as correct as is; it does not come back while the value is "
                                   "unchanged")
    p.add_argument("dir", metavar="DIR")
    p.add_argument("flag", type=int, metavar="FLAG")
    p.add_argument("--reason", required=True, metavar="TEXT")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("profile", help="the column profile (types, ranges, categories); pin it as the schema",
                       description="show the column profile the checks use (pinned schema over the profile "
                                   "computed from the data); pin / unpin it as the project's schema, refresh it "
                                   "from the current data, or edit a pinned column")
    p.add_argument("dir", metavar="DIR")
    p.add_argument("action", nargs="?", default="show", choices=("show", "pin", "unpin", "refresh", "set"))
    p.add_argument("args", nargs="*", metavar="ARG", help="for set: COLUMN lo|hi|categories VALUE "
                                                          "(categories: comma-separated or JSON list; 'null' clears)")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("rules", help="user rules per column: list, add, remove",
                       description="declarative user rules per column (not_null, min, max, allowed, regex, "
                                   "unique); checked by validate, flags of kind rule:NAME")
    p.add_argument("dir", metavar="DIR")
    acts = p.add_subparsers(dest="action", metavar="ACTION", parser_class=p.__class__)
    acts.required = True
    a = acts.add_parser("list", help="list the rules")
    a.add_argument("--json", action="store_true")
    a = acts.add_parser("add", help="add a rule: NAME COLUMN KIND [VALUE]",
                        description="add a rule. VALUE: a number for min/max, comma-separated values (or a JSON "
                                    "list) for allowed, a pattern for regex (the whole value must match)")
    a.add_argument("name", metavar="NAME")
    a.add_argument("column", metavar="COLUMN")
    a.add_argument("kind", metavar="KIND", help="not_null, min, max, allowed, regex, unique")
    a.add_argument("value", nargs="?", metavar="VALUE")
    a.add_argument("--severity", default="medium", choices=("low", "medium", "high"))
    a.add_argument("--message", metavar="TEXT", help="flag message (default: generated)")
    a.add_argument("--json", action="store_true")
    a = acts.add_parser("remove", help="remove a rule by name")
    a.add_argument("name", metavar="NAME")
    a.add_argument("--json", action="store_true")


# --- checks -----------------------------------------------------------------------------------------------------


@command("checks")
def cmd_checks(args: argparse.Namespace) -> int:
    from .pipeline_cmds import _Printer

    with open_project(args) as project:
        user = require(project, args, "run")
        printer = None if args.json else _Printer()
        reports = _review.run_checks(project, user, args.pipeline, observer=printer, n_jobs=args.jobs)
        notes = [n for r in reports for s in r.steps for n in s.notes]
        counts = _review.open_flag_counts(project)
    data = {"runs": [r.to_json() for r in reports], "notes": notes, "open_flags": counts}

    def text() -> str:
        lines = []
        for r in reports:
            lines.append(f"run {r.run_id}: {r.status} in {r.seconds:.2f} s (" + ", ".join(
                f"{s.step} {s.outcome}" for s in r.steps) + ")")
        for n in notes:
            lines.append(f"note: {n}")
        lines.append("open flags: " + (", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"))
        return "\n".join(lines)

    emit(args, data, text)
    bad = next((r for r in reports if r.status != "done"), None)
    if bad is not None:
        sys.stderr.write(f"hitl: error: {bad.error}\n")
        return 130 if bad.status == "cancelled" else 2
    return 0


# --- flags ------------------------------------------------------------------------------------------------------


@command("flags")
def cmd_flags(args: argparse.Namespace) -> int:
    with open_project(args) as project:
        if args.batch is not None:
            with project.read() as conn:
                if conn.execute(_sa.select(db.batches.c.id).where(db.batches.c.id == args.batch)).first() is None:
                    raise NotFound(f"no batch {args.batch} in this project: list them with `hitl batches DIR`")
        data = _review.ordered_flags(project, args.batch, args.open, args.kind)
        label_note = CS.label_check_note(project)
    shown = data[: args.limit] if args.limit else data

    def text() -> str:
        lines = []
        if label_note:
            lines.append(f"note: {label_note}")
        if not data:
            lines.append("no flags" + (" open" if args.open else "") + ": run the checks with `hitl checks DIR`")
            return "\n".join(lines)
        lines.append(table([[f["id"], f["batch"], f["row"], f["source_row"], f["column"] or "(row)", f["kind"],
                             f["severity"], f"{f['score']:.2f}", f["status"], f["suggestion"] or "", f["message"]]
                            for f in shown],
                           ["id", "batch", "row", "src_row", "column", "kind", "sev", "score", "status",
                            "suggestion", "message"], max_width=60))
        if len(shown) < len(data):
            lines.append(f"... {len(data) - len(shown)} more (--limit, --json)")
        return "\n".join(lines)

    emit(args, shown, text)
    return 0


def _flag_batch(project, flag_id: int) -> int:
    with project.read() as conn:
        return F.get_flag(conn, flag_id).batch_id


@command("accept")
def cmd_accept(args: argparse.Namespace) -> int:
    with open_project(args) as project:
        user = require(project, args, "edit", _flag_batch(project, args.flag))
        res = _edits.accept_flag(project, user, args.flag).result
    data = {"batch": res.batch_id, "edit": None if res.edit is None else res.edit.edit_id,
            "flags": [f.to_json() for f in res.flags]}
    main = next((f for f in res.flags if f.id == args.flag), None)
    emit(args, data, f"flag {args.flag} accepted" + (f": set to {main.suggestion!r}" if main and res.edit else
                                                     f" ({main.suggestion})" if main else "")
         + (f"; {len(res.flags) - 1} other flag(s) on the cell resolved" if len(res.flags) > 1 else ""))
    return 0


@command("dismiss")
def cmd_dismiss(args: argparse.Namespace) -> int:
    with open_project(args) as project:
        user = require(project, args, "dismiss_flag", _flag_batch(project, args.flag))
        res = _edits.dismiss_flag(project, user, args.flag, args.reason).result
    emit(args, {"batch": res.batch_id, "flags": [f.to_json() for f in res.flags]},
         f"flag {args.flag} dismissed by {user}: {args.reason.strip()}")
    return 0


# --- profile ----------------------------------------------------------------------------------------------------


def _latest_source(project):
    with project.read() as conn:
        sid = conn.execute(_sa.select(_sa.func.max(db.sources.c.id))).scalar()
    if sid is None:
        raise HitlError("the project has no data yet: import a file first (`hitl import DIR FILE`)")
    return _sources.get_source(project, sid)


def _validate_params(project) -> dict[str, Any]:
    from ..core.pipeline import spec as S

    try:
        return dict(S.get_pipeline(project, None).step("validate").params)
    except HitlError:
        return {}


def _profile_text(prof: dict[str, Any]) -> str:
    rows = []
    for name, c in prof.get("columns", {}).items():
        rng = ""
        if c.get("lo") is not None or c.get("hi") is not None:
            rng = f"[{_num(c.get('lo'))}, {_num(c.get('hi'))}]"
        cats = c.get("categories")
        rows.append([name, c.get("type"), c.get("missing"), c.get("strays"), rng,
                     "yes" if c.get("nonneg") else "", "" if not cats else ", ".join(map(str, cats)),
                     "pinned" if c.get("pinned") else ""])
    head = f"profile of source {prof.get('source')} ({prof.get('n_rows')} rows sampled)" + (
        "; schema pinned" if prof.get("pinned") else "; not pinned (`hitl profile DIR pin`)")
    return head + "\n" + table(rows, ["column", "type", "missing", "strays", "range", "never<0", "categories",
                                      ""], max_width=48)


def _num(v: Any) -> str:
    return "-" if v is None else f"{v:.6g}"


@command("profile")
def cmd_profile(args: argparse.Namespace) -> int:
    with open_project(args) as project:
        source = _latest_source(project)
        params = _validate_params(project)
        a = args.action
        if a == "show":
            prof = CS.effective_profile(project, source, params)
            emit(args, prof, lambda: _profile_text(prof))
            return 0
        user = require(project, args, "edit")
        if a == "refresh":
            CS.auto_profile(project, source, params, refresh=True)
            with project.write() as conn:
                audit.append(conn, user, "schema.refresh", f"source:{source.id}", {"source": source.id})
            prof = CS.effective_profile(project, source, params)
            emit(args, prof, f"profile of source {source.id} recomputed from the current data; the next check "
                             "run re-checks every batch")
            return 0
        if a == "pin":
            prof = CS.effective_profile(project, source, params)
            schema = {"version": prof.get("version", 1), "params": prof.get("params"), "source": source.id,
                      "columns": {k: {**v, "pinned": True} for k, v in prof["columns"].items()}}
            CS.save_schema(project, schema, user, "schema.pin", {"source": source.id,
                                                                  "columns": len(schema["columns"])})
            emit(args, schema, f"pinned the profile of {len(schema['columns'])} columns as the project's schema")
            return 0
        if a == "unpin":
            if CS.pinned_schema(project) is None:
                raise HitlError("no schema is pinned")
            with project.write() as conn:
                conn.execute(_sa.delete(db.meta).where(db.meta.c.key == CS.SCHEMA_KEY))
                project._meta_cache.pop(CS.SCHEMA_KEY, None)
                audit.append(conn, user, "schema.unpin", "schema", {})
            emit(args, {"pinned": False}, "schema unpinned: the checks use the profile computed from the data")
            return 0
        # set COLUMN KEY VALUE
        if len(args.args) != 3:
            raise HitlError("usage: hitl profile DIR set COLUMN lo|hi|categories VALUE")
        col, k, v = args.args
        schema = CS.pinned_schema(project)
        if schema is None:
            prof = CS.effective_profile(project, source, params)
            schema = {"version": prof.get("version", 1), "params": prof.get("params"), "source": source.id,
                      "columns": {n: {**c, "pinned": True} for n, c in prof["columns"].items()}}
        if col not in schema["columns"]:
            raise HitlError(f"no column '{col}' in the profile (columns: {', '.join(schema['columns'])})")
        c = schema["columns"][col]
        if k in ("lo", "hi"):
            if v.lower() in ("null", "none", ""):
                val = None
            else:
                try:
                    val = float(v)
                except ValueError:
                    raise HitlError(f"{k} needs a number or null, got '{v}'") from None
            if c.get("type") not in ("integer", "float"):
                raise HitlError(f"column '{col}' is {c.get('type')}: only numeric columns have lo/hi")
        elif k == "categories":
            if v.lower() in ("null", "none"):
                val = None
            else:
                try:
                    val = json.loads(v)
                except ValueError:
                    val = [x.strip() for x in v.split(",") if x.strip()]
                if not isinstance(val, list) or not val:
                    raise HitlError("categories needs a non-empty list (comma-separated or JSON) or null")
                val = [str(x) for x in val]
        else:
            raise HitlError(f"cannot set '{k}': use lo, hi or categories")
        c[k] = val
        CS.save_schema(project, schema, user, "schema.set", {"column": col, "key": k, "value": val})
        emit(args, schema["columns"][col], f"schema: {col}.{k} = {json.dumps(val)} (pinned)")
    return 0


# --- rules ------------------------------------------------------------------------------------------------------


def _rule_value(kind: str, value: str | None) -> Any:
    if value is None:
        return None
    if kind == "allowed":
        try:
            v = json.loads(value)
            if isinstance(v, list):
                return [str(x) for x in v]
        except ValueError:
            pass
        return [x.strip() for x in value.split(",") if x.strip()]
    return value


@command("rules")
def cmd_rules(args: argparse.Namespace) -> int:
    with open_project(args) as project:
        if args.action == "list":
            rules = CS.stored_rules(project)
            emit(args, rules, lambda: table(
                [[r["name"], r["column"], r["kind"], "" if r["value"] is None else json.dumps(r["value"]),
                  r["severity"], r["created_by"]] for r in rules],
                ["name", "column", "kind", "value", "severity", "by"], max_width=48)
                if rules else "no rules: add one with `hitl rules DIR add NAME COLUMN KIND [VALUE]`")
            return 0
        if args.action == "add":
            source = _latest_source(project)
            value = _rule_value(args.kind, args.value)
            if args.kind in ("min", "max", "allowed", "regex") and value is None:
                raise HitlError(f"rule {args.name}: {args.kind} needs a VALUE")
            try:
                rule = _checks.validate_rule(_checks.Rule(args.column, args.kind, value, args.name, args.severity, args.message),
                                     [c.name for c in source.columns])
            except ValueError as exc:
                raise HitlError(str(exc)) from None
            user = require(project, args, "edit")
            stored_value = list(rule.value) if isinstance(rule.value, tuple) else rule.value
            with project.write() as conn:
                if conn.execute(_sa.select(db.rules.c.id).where(db.rules.c.name == args.name)).first():
                    raise HitlError(f"a rule named '{args.name}' exists: remove it first")
                from ..core.util import utc_now

                params = {"value": stored_value, "severity": rule.severity, "message": rule.message}
                conn.execute(db.rules.insert().values(name=args.name, column=rule.column, kind=rule.kind,
                                                      params_json=json.dumps(params, sort_keys=True),
                                                      created_by=user, created_at=utc_now()))
                audit.append(conn, user, "rule.add", f"rule:{args.name}",
                             {"name": args.name, "column": rule.column, "kind": rule.kind, **params})
            emit(args, {"name": args.name, "column": rule.column, "kind": rule.kind, **params},
                 f"rule {args.name} added ({rule.column} {rule.kind}"
                 + (f" {json.dumps(stored_value)}" if stored_value is not None else "")
                 + "); the next check run re-checks every batch")
            return 0
        user = require(project, args, "edit")
        with project.write() as conn:
            r = conn.execute(_sa.select(db.rules).where(db.rules.c.name == args.name)).first()
            if r is None:
                raise NotFound(f"no rule named '{args.name}' (list them with `hitl rules DIR list`)")
            conn.execute(_sa.delete(db.rules).where(db.rules.c.id == r.id))
            audit.append(conn, user, "rule.remove", f"rule:{args.name}",
                         {"name": r.name, "column": r.column, "kind": r.kind, "params": json.loads(r.params_json)})
        emit(args, {"removed": args.name}, f"rule {args.name} removed")
    return 0


__all__ = ["ordered_flags", "register"]


def __getattr__(name: str) -> Any:  # `ordered_flags` stays importable from here (see __all__), loaded on use
    if name == "ordered_flags":
        return _review.ordered_flags
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
