"""Core commands: init, import, sources, batches, show, lifecycle, edits, history."""
from __future__ import annotations

import argparse
import math
import sys
from typing import Any

from ..core.errors import HitlError
from ._lazy import lazy
from .choices import BATCH_STATUSES
from .context import actor, open_project
from .main import command, emit, table

B = lazy("hitl_desktop.core.batches")
_ingest = lazy("hitl_desktop.core.ingest")
_sources = lazy("hitl_desktop.core.sources")
_edits = lazy("hitl_desktop.core.operations.edits")


def register(sub: argparse._SubParsersAction) -> None:
    def add(name: str, help: str, json_flag: bool = True, dir_arg: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        if dir_arg:
            p.add_argument("dir", metavar="DIR", help="project folder")
        if json_flag:
            p.add_argument("--json", action="store_true", help="machine-readable output")
        return p

    p = add("init", "create a project in DIR (you become its admin)")
    p.add_argument("--name", help="project name (default: the folder name)")
    p.add_argument("--full-name", help="your full name, shown on your signatures")

    p = add("import", "import a CSV/TSV, Excel, Parquet or JSON Lines file as batches for review")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--label", metavar="COLUMN", help="the label (target) column")
    p.add_argument("--batch-size", type=int, default=500, metavar="N", help="rows per batch (default 500)")
    p.add_argument("--delimiter", metavar="C", help="CSV delimiter (default: detected; use '\\t' for tab)")
    p.add_argument("--encoding", metavar="E", help="text encoding (default: detected)")
    p.add_argument("--sheet", metavar="NAME", help="Excel sheet (default: the first)")

    add("sources", "list imported data source versions")

    p = add("batches", "list batches, riskiest first")
    p.add_argument("--status", choices=BATCH_STATUSES, help="only batches in this state")

    p = add("show", "print a batch's current values")
    p.add_argument("batch", type=int, metavar="BATCH")
    p.add_argument("--original", action="store_true", help="show the imported originals instead")

    for name, help in (("claim", "take a queued batch into review"),
                       ("approve", "approve a batch for training (a signature)"),
                       ("reject", "reject a batch (a signature; needs --comment)"),
                       ("reopen", "take an approved or rejected batch back into review (a signature)")):
        p = add(name, help)
        p.add_argument("batch", type=int, metavar="BATCH")
        p.add_argument("--comment", metavar="TEXT", help="comment recorded with the decision")

    p = add("edit", "set one cell (checked against the column type)")
    p.add_argument("batch", type=int, metavar="BATCH")
    p.add_argument("row", type=int, metavar="ROW", help="row id as printed by `hitl show` (field `row`)")
    p.add_argument("column", metavar="COLUMN")
    p.add_argument("value", metavar="VALUE", help="new value; an empty string means missing")
    p.add_argument("--reason", metavar="TEXT")

    p = add("revert", "restore a cell's original value")
    p.add_argument("batch", type=int, metavar="BATCH")
    p.add_argument("row", type=int, metavar="ROW")
    p.add_argument("column", metavar="COLUMN")
    p.add_argument("--reason", metavar="TEXT")

    p = add("undo", "undo the last edit in a batch")
    p.add_argument("batch", type=int, metavar="BATCH")

    p = add("history", "list a batch's edits and decisions")
    p.add_argument("batch", type=int, metavar="BATCH")


@command("init")
def cmd_init(args: argparse.Namespace) -> int:
    from .context import init_project

    project = init_project(args)
    with project:
        emit(args, {"project": str(project.path), "id": project.project_id, "admin": actor(args)},
             f"created project {project.path} (admin: {actor(args)})")
    return 0


@command("import")
def cmd_import(args: argparse.Namespace) -> int:
    opts = _ingest.ImportOptions(label=args.label, batch_size=args.batch_size, delimiter=args.delimiter,
                         encoding=args.encoding, sheet=args.sheet)
    with open_project(args) as project:
        from .context import require

        user = require(project, args, "edit")
        rep = _sources.import_file(project, args.file, opts, user=user)
    for note in rep.notes:
        if not args.json:
            sys.stderr.write(f"hitl: note: {note}\n")

    def text() -> str:
        if rep.reused:
            return f"already imported as source {rep.source_id} ({rep.rows} rows, {len(rep.batches)} batches): nothing added"
        cols = ", ".join(f"{c.name}:{c.logical}{'*' if c.raw else ''}" for c in rep.columns)
        det = ", ".join(f"{k}={v!r}" for k, v in rep.detected.items())
        return (f"imported source {rep.source_id}: {rep.rows} rows in {len(rep.batches)} batches "
                f"({rep.batches[0]}..{rep.batches[-1]})" + (f"; detected {det}" if det else "")
                + f"\ncolumns: {cols}" + ("\n(* = some values do not parse as the type; kept as typed)"
                                          if any(c.raw for c in rep.columns) else ""))

    emit(args, rep.to_json(), text)
    return 0


@command("sources")
def cmd_sources(args: argparse.Namespace) -> int:
    with open_project(args) as project:
        srcs = _sources.list_sources(project)
    emit(args, [s.to_json() for s in srcs], lambda: table(
        [[s.id, s.file_name, s.row_count, s.sha256[:12], s.imported_by, s.imported_at[:19]] for s in srcs],
        ["id", "file", "rows", "sha256", "by", "at"]) if srcs else "no sources yet: `hitl import DIR FILE`")
    return 0


def _flags_text(flags: dict[str, int]) -> str:
    return " ".join(f"{k}:{flags[k]}" for k in ("high", "medium", "low") if flags.get(k)) or "-"


@command("batches")
def cmd_batches(args: argparse.Namespace) -> int:
    with open_project(args) as project:
        bs = B.list_batches(project, args.status)
    emit(args, [b.to_json() for b in bs], lambda: table(
        [[b.id, b.status, b.rows, b.source, b.edits, _flags_text(b.flags), b.assignee or "",
          (f"{b.decision['action']} by {b.decision['user']}" if b.decision and b.decision["action"] != "claim" else "")]
         for b in bs],
        ["id", "status", "rows", "source", "edits", "open flags", "assignee", "decision"])
        if bs else "no batches")
    return 0


def json_value(v: Any) -> Any:
    if v is None:
        return None
    if isinstance(v, float):
        return None if math.isnan(v) else v
    text = B.value_to_text(v)
    if text is None:
        return None
    if hasattr(v, "item"):
        return v.item()
    return v if isinstance(v, (int, str, bool)) else text


@command("show")
def cmd_show(args: argparse.Namespace) -> int:
    with open_project(args) as project:
        with project.read() as conn:
            batch = B.get_batch(conn, args.batch)
            edited = {(r, c) for r, c, _ in B.current_overrides(conn, args.batch)}
        df = B.load_batch(project, args.batch, original=args.original)
    cols = list(df.columns)
    records = df.to_dict("split")["data"]
    rows = []
    for i, (row_id, values) in enumerate(zip(df.index, records)):
        rows.append({
            "row": int(row_id),
            "source_row": batch.start_row + i,
            "values": {c: json_value(v) for c, v in zip(cols, values)},
            "edited": sorted(c for c in cols if (int(row_id), c) in edited),
        })
    data = {"batch": batch.id, "status": batch.status, "columns": cols, "content_hash": batch.content_hash,
            "rows": rows}

    def text() -> str:
        body = [[r["row"], r["source_row"]] + [
            ("" if r["values"][c] is None else B.value_to_text(r["values"][c])) + ("*" if c in r["edited"] else "")
            for c in cols] for r in rows]
        return (f"batch {batch.id} ({batch.status}, {len(rows)} rows; * = edited)\n"
                + table(body, ["row", "src"] + cols, max_width=16))

    emit(args, data, text)
    return 0


def _decide(args: argparse.Namespace, action: str) -> int:
    with open_project(args) as project:
        from .context import signer_for

        user, signer = signer_for(project, args, action)
        d = B.decide(project, args.batch, action, user, args.comment, signer=signer)
    emit(args, d.to_json(), f"batch {args.batch}: {d.meaning} by {d.full_name} at {d.ts}")
    return 0


@command("claim")
def cmd_claim(args: argparse.Namespace) -> int:
    return _decide(args, "claim")


@command("approve")
def cmd_approve(args: argparse.Namespace) -> int:
    return _decide(args, "approve")


@command("reject")
def cmd_reject(args: argparse.Namespace) -> int:
    return _decide(args, "reject")


@command("reopen")
def cmd_reopen(args: argparse.Namespace) -> int:
    return _decide(args, "reopen")


def _edit_text(r: B.EditResult) -> str:
    show = lambda v: "(missing)" if v is None else repr(v)  # noqa: E731
    return f"batch {r.batch_id} row {r.row_id} {r.column}: {show(r.old_value)} -> {show(r.new_value)} (edit {r.edit_id})"


@command("edit")
def cmd_edit(args: argparse.Namespace) -> int:
    with open_project(args) as project:
        from .context import require

        user = require(project, args, "edit", batch=args.batch)
        r = _edits.edit_cell(project, user, args.batch, args.row, args.column, args.value, args.reason).result.edit
    emit(args, r.to_json(), _edit_text(r))
    return 0


@command("revert")
def cmd_revert(args: argparse.Namespace) -> int:
    with open_project(args) as project:
        from .context import require

        user = require(project, args, "edit", batch=args.batch)
        r = _edits.revert_cell(project, user, args.batch, args.row, args.column, args.reason).result.edit
    emit(args, r.to_json(), _edit_text(r))
    return 0


@command("undo")
def cmd_undo(args: argparse.Namespace) -> int:
    with open_project(args) as project:
        from .context import require

        user = require(project, args, "edit", batch=args.batch)
        r = _edits.undo_edit(project, user, args.batch).result.edit
    emit(args, r.to_json(), "undid: " + _edit_text(r))
    return 0


@command("history")
def cmd_history(args: argparse.Namespace) -> int:
    with open_project(args) as project:
        edits = B.edit_history(project, args.batch)
        with project.read() as conn:
            decisions = B.decisions_for(conn, args.batch)
    items = [{"type": "edit", **e.to_json()} for e in edits] + [{"type": "decision", **d.to_json()} for d in decisions]
    items.sort(key=lambda x: x["ts"])

    def text() -> str:
        if not items:
            return f"batch {args.batch} has no edits or decisions yet"
        lines = []
        for it in items:
            if it["type"] == "edit":
                lines.append(f"{it['ts'][:19]}  {it['user']:<12} {it['kind']:<7} row {it['row']} {it['column']}: "
                             f"{it['old']!r} -> {it['new']!r}" + (f"  ({it['reason']})" if it["reason"] else ""))
            else:
                lines.append(f"{it['ts'][:19]}  {it['user']:<12} {it['action']:<7} {it['meaning']}"
                             + (" [signed]" if it["signed"] else ""))
        return "\n".join(lines)

    emit(args, items, text)
    return 0
