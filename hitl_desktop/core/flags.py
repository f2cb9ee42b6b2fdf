"""Resolving flags: accept a suggestion, dismiss as correct, or fix the cell by editing it; and undoing each.

Qt-free. Every function is one write transaction: the cell edit (through `batches.set_cell(..., conn=conn)`), the
flag's status and its audit entry commit together or not at all.

A resolved flag records how in `resolution` (JSON): ``{"action": "accept"|"edit"|"dismiss", "edit": EDIT_ID or
null, "reason": TEXT or null}``. Undoing an edit reopens exactly the flags that edit resolved.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, select
from sqlalchemy.engine import Connection

from . import audit, db, identity
from .batches import EditResult, get_batch, original_value, set_cell
from .errors import EditRefused, HitlError, NotFound
from .project import Project
from .sources import get_source
from .util import utc_now

#: Suggestion meaning "this row repeats another: leave it out of training" (no cell changes).
DROP_DUPLICATE = "drop duplicate"


@dataclass
class FlagRecord:
    id: int
    batch_id: int
    row_id: int
    column: str | None
    kind: str
    severity: str
    score: float
    message: str
    suggestion: str | None
    status: str
    resolved_by: str | None = None
    resolved_at: str | None = None
    resolution: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "batch": self.batch_id, "row": self.row_id, "column": self.column, "kind": self.kind,
            "severity": self.severity, "score": self.score, "message": self.message, "suggestion": self.suggestion,
            "status": self.status, "resolved_by": self.resolved_by, "resolved_at": self.resolved_at,
            "resolution": self.resolution,
        }


@dataclass
class Resolution:
    """What a resolving action changed: the cell edit (if any) and the flags whose status changed."""

    edit: EditResult | None
    flags: list[FlagRecord] = field(default_factory=list)
    batch_id: int = 0


def _record(r: Any) -> FlagRecord:
    res = None
    if r.resolution:
        try:
            res = json.loads(r.resolution)
        except ValueError:
            res = {"action": "other", "text": r.resolution}
    return FlagRecord(r.id, r.batch_id, r.row_id, r.column, r.kind, r.severity, float(r.score), r.message,
                      r.suggestion, r.status, r.resolved_by, r.resolved_at, res)


def list_flags(project: Project, batch_id: int | None = None, status: str | None = None) -> list[FlagRecord]:
    """Flags of a batch (or the project), riskiest first within a row order."""
    with project.read() as conn:
        q = select(db.flags)
        if batch_id is not None:
            q = q.where(db.flags.c.batch_id == batch_id)
        if status is not None:
            q = q.where(db.flags.c.status == status)
        return [_record(r) for r in conn.execute(q.order_by(db.flags.c.batch_id, db.flags.c.row_id, db.flags.c.id))]


def get_flag(conn: Connection, flag_id: int) -> FlagRecord:
    r = conn.execute(select(db.flags).where(db.flags.c.id == flag_id)).first()
    if r is None:
        raise NotFound(f"no flag {flag_id} in this project: list them with `hitl flags DIR`")
    return _record(r)


def _open(flag: FlagRecord) -> None:
    if flag.status != "open":
        raise EditRefused(f"flag {flag.id} is already {flag.status}")


def _resolve(conn: Connection, flag_ids: list[int], user: str, status: str, resolution: dict[str, Any],
             now: str) -> None:
    if flag_ids:
        conn.execute(db.flags.update().where(db.flags.c.id.in_(flag_ids)).values(
            status=status, resolved_by=user, resolved_at=now, resolution=json.dumps(resolution, sort_keys=True)))


def _fetch(conn: Connection, ids: list[int]) -> list[FlagRecord]:
    if not ids:
        return []
    return [_record(r) for r in conn.execute(select(db.flags).where(db.flags.c.id.in_(ids)).order_by(db.flags.c.id))]


def _open_on_cell(conn: Connection, batch_id: int, row_id: int, column: str) -> list[int]:
    return list(conn.execute(select(db.flags.c.id).where(and_(
        db.flags.c.batch_id == batch_id, db.flags.c.row_id == row_id, db.flags.c.column == column,
        db.flags.c.status == "open"))).scalars())


def _batch_of(project: Project, flag_id: int) -> int:
    with project.read() as conn:
        return get_flag(conn, flag_id).batch_id


def accept(project: Project, flag_id: int, user: str) -> Resolution:
    """Apply a flag's suggestion: the cell takes the suggested value (or, for "drop duplicate", the row is marked
    for leaving out) and every open flag on that cell is resolved."""
    identity.authorize(project, user, "edit", _batch_of(project, flag_id))
    with project.write() as conn:
        flag = get_flag(conn, flag_id)
        _open(flag)
        if flag.suggestion is None:
            raise EditRefused(f"flag {flag.id} ({flag.kind}) has no suggestion to accept: edit the cell or dismiss it")
        now = utc_now()
        if flag.column is None or flag.suggestion == DROP_DUPLICATE:
            get_batch(conn, flag.batch_id)
            res = {"action": "accept", "edit": None, "suggestion": flag.suggestion}
            _resolve(conn, [flag.id], user, "accepted", res, now)
            audit.append(conn, user, "flag.accept", f"batch:{flag.batch_id}",
                         {"flag": flag.id, "row": flag.row_id, "column": flag.column, "kind": flag.kind,
                          "suggestion": flag.suggestion}, ts=now)
            return Resolution(None, _fetch(conn, [flag.id]), flag.batch_id)
        edit = set_cell(project, flag.batch_id, flag.row_id, flag.column, flag.suggestion, user,
                        reason=f"accepted suggestion of flag {flag.id} ({flag.kind})", kind="accept",
                        extra_audit={"flag": flag.id}, conn=conn)
        ids = sorted(set(_open_on_cell(conn, flag.batch_id, flag.row_id, flag.column)) | {flag.id})
        _resolve(conn, [flag.id], user, "accepted", {"action": "accept", "edit": edit.edit_id}, now)
        _resolve(conn, [i for i in ids if i != flag.id], user, "resolved", {"action": "edit", "edit": edit.edit_id}, now)
        return Resolution(edit, _fetch(conn, ids), flag.batch_id)


def dismiss(project: Project, flag_id: int, user: str, reason: str) -> Resolution:
    """Mark a flag "correct as is", recording who and why."""
    if not (reason and reason.strip()):
        raise EditRefused("dismissing a flag needs a reason (for example: correct as is, checked the field sheet)")
    identity.authorize(project, user, "dismiss_flag", _batch_of(project, flag_id))
    with project.write() as conn:
        flag = get_flag(conn, flag_id)
        _open(flag)
        batch = get_batch(conn, flag.batch_id)
        if batch.status in ("approved", "rejected"):
            raise EditRefused(f"batch {batch.id} is {batch.status}: reopen it before dismissing its flags")
        now = utc_now()
        _resolve(conn, [flag.id], user, "dismissed", {"action": "dismiss", "edit": None, "reason": reason.strip()}, now)
        audit.append(conn, user, "flag.dismiss", f"batch:{flag.batch_id}",
                     {"flag": flag.id, "row": flag.row_id, "column": flag.column, "kind": flag.kind,
                      "reason": reason.strip()}, ts=now)
        return Resolution(None, _fetch(conn, [flag.id]), flag.batch_id)


def reopen(project: Project, flag_id: int, user: str, reason: str = "undo") -> Resolution:
    """Reopen a dismissed (or cell-less accepted) flag."""
    identity.authorize(project, user, "dismiss_flag", _batch_of(project, flag_id))
    with project.write() as conn:
        flag = get_flag(conn, flag_id)
        if flag.status == "open":
            raise EditRefused(f"flag {flag.id} is already open")
        if flag.resolution and flag.resolution.get("edit"):
            raise EditRefused(f"flag {flag.id} was resolved by edit {flag.resolution['edit']}: undo that edit instead")
        now = utc_now()
        conn.execute(db.flags.update().where(db.flags.c.id == flag.id).values(
            status="open", resolved_by=None, resolved_at=None, resolution=None))
        audit.append(conn, user, "flag.reopen", f"batch:{flag.batch_id}",
                     {"flag": flag.id, "was": flag.status, "reason": reason}, ts=now)
        return Resolution(None, _fetch(conn, [flag.id]), flag.batch_id)


def edit_cell(project: Project, batch_id: int, row_id: int, column: str, value: str | None, user: str,
              reason: str | None = None, resolve_ids: list[int] | None = None) -> Resolution:
    """Edit a cell and resolve the open flags on it (the reviewer fixed the value by hand).

    `resolve_ids` (used by redo) resolves those flags instead of the ones open on the cell.
    """
    identity.authorize(project, user, "edit", batch_id)
    with project.write() as conn:
        edit = set_cell(project, batch_id, row_id, column, value, user, reason=reason, conn=conn)
        ids = _open_on_cell(conn, batch_id, row_id, column) if resolve_ids is None else list(resolve_ids)
        _resolve(conn, ids, user, "resolved", {"action": "edit", "edit": edit.edit_id}, utc_now())
        return Resolution(edit, _fetch(conn, ids), batch_id)


def _reopen_resolved_by(conn: Connection, batch_id: int, edit_ids: set[int]) -> list[int]:
    ids = []
    for r in conn.execute(select(db.flags.c.id, db.flags.c.resolution).where(and_(
            db.flags.c.batch_id == batch_id, db.flags.c.status != "open", db.flags.c.resolution.is_not(None)))):
        try:
            e = json.loads(r.resolution).get("edit")
        except (ValueError, AttributeError):
            continue
        if e in edit_ids:
            ids.append(r.id)
    if ids:
        conn.execute(db.flags.update().where(db.flags.c.id.in_(ids)).values(
            status="open", resolved_by=None, resolved_at=None, resolution=None))
    return ids


def undo_edit(project: Project, batch_id: int, edit_id: int, user: str) -> Resolution:
    """Undo one edit (it must still be its cell's latest change) and reopen the flags it resolved."""
    identity.authorize(project, user, "edit", batch_id)
    with project.write() as conn:
        e = conn.execute(select(db.edits).where(and_(db.edits.c.id == edit_id, db.edits.c.batch_id == batch_id))).first()
        if e is None:
            raise NotFound(f"no edit {edit_id} in batch {batch_id}")
        if conn.execute(select(db.edits.c.id).where(db.edits.c.undoes == edit_id)).first() is not None:
            raise EditRefused(f"edit {edit_id} was already undone")
        latest = conn.execute(select(db.edits.c.id).where(and_(
            db.edits.c.batch_id == batch_id, db.edits.c.row_id == e.row_id, db.edits.c.column == e.column))
            .order_by(db.edits.c.id.desc()).limit(1)).scalar()
        if latest != e.id:
            raise EditRefused(f"edit {e.id} is no longer the latest change of row {e.row_id} column '{e.column}'")
        edit = set_cell(project, batch_id, e.row_id, e.column, e.old_value, user, f"undo edit {e.id}",
                        kind="undo", undoes=e.id, conn=conn)
        ids = _reopen_resolved_by(conn, batch_id, {e.id})
        return Resolution(edit, _fetch(conn, ids), batch_id)


def revert(project: Project, batch_id: int, row_id: int, column: str, user: str,
           reason: str | None = None) -> Resolution:
    """Put a cell back to its imported value and reopen flags that edits of this cell had resolved."""
    identity.authorize(project, user, "edit", batch_id)
    with project.write() as conn:
        batch = get_batch(conn, batch_id)
        source = get_source(project, batch.source_id)
        if column not in {c.name for c in source.columns}:
            raise EditRefused(f"no column '{column}'")
        cur = conn.execute(select(db.overrides.c.value).where(and_(
            db.overrides.c.batch_id == batch_id, db.overrides.c.row_id == row_id,
            db.overrides.c.column == column))).first()
        if cur is None:
            raise EditRefused(f"row {row_id} column '{column}' already holds its original value: nothing to revert")
        original = original_value(project, batch, source, row_id, column)
        edit = set_cell(project, batch_id, row_id, column, original, user, reason or "revert to original",
                        kind="revert", conn=conn)
        cell_edits = set(conn.execute(select(db.edits.c.id).where(and_(
            db.edits.c.batch_id == batch_id, db.edits.c.row_id == row_id, db.edits.c.column == column))).scalars())
        ids = _reopen_resolved_by(conn, batch_id, cell_edits)
        return Resolution(edit, _fetch(conn, ids), batch_id)


def open_flag_counts(project: Project) -> dict[int, dict[str, int]]:
    """{batch: {severity: open flags}} (list_batches carries the same per batch)."""
    from sqlalchemy import func

    out: dict[int, dict[str, int]] = {}
    with project.read() as conn:
        for b, sev, n in conn.execute(select(db.flags.c.batch_id, db.flags.c.severity, func.count())
                                      .where(db.flags.c.status == "open")
                                      .group_by(db.flags.c.batch_id, db.flags.c.severity)):
            out.setdefault(b, {})[sev] = n
    return out


__all__ = ["DROP_DUPLICATE", "FlagRecord", "Resolution", "accept", "dismiss", "edit_cell", "get_flag", "list_flags",
           "open_flag_counts", "reopen", "revert", "undo_edit", "HitlError"]
