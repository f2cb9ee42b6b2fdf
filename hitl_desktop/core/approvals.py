"""Approval validity: is a batch approved by a signed decision whose signature verifies, over exactly the data it
holds now? Used by training (its scope check), bundle import (warnings) and the window.

Layer: above `identity` (signatures) and `batches` (content hashes); below `flags`, `bundle`, `models`.
"""
from __future__ import annotations

import json
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Iterator

from sqlalchemy import and_, select
from sqlalchemy.engine import Connection

from . import db, identity
from .batches import batch_content_hash, current_overrides


def approval_check(conn: Connection, batch: Any, _history: dict | None = None) -> tuple[str, str]:
    """('valid'|'invalid'|'none', reason) for a batch id or BatchInfo.

    valid: the batch is approved, by a signed decision whose signature verifies, and its data (content hash,
    recomputed from the current overrides) is exactly what was approved. invalid: it claims to be approved but one
    of those fails (e.g. data changed after approval). none: it is not approved.
    """
    batch_id = batch if isinstance(batch, int) else batch.id
    b = conn.execute(select(db.batches).where(db.batches.c.id == batch_id)).first()
    dc = db.decisions.c
    d = None if b is None else conn.execute(
        select(db.decisions).where(and_(dc.batch_id == batch_id, dc.action.in_(APPROVAL_ACTIONS)))
        .order_by(dc.id.desc()).limit(1)).first()

    def hash_of(i: int) -> str | None:
        return conn.execute(select(db.audit.c.hash).where(db.audit.c.id == i)).scalar()

    return _approval_of(
        batch_id, b, d, lambda: current_overrides(conn, batch_id),
        lambda: conn.execute(select(db.meta.c.value).where(db.meta.c.key == "project_id")).scalar() or "",
        lambda: _history if _history is not None else identity.key_history(conn),
        lambda: conn.execute(select(db.audit.c.payload).where(db.audit.c.id == d.audit_id)).scalar(), hash_of)


APPROVAL_ACTIONS = ("approve", "reject", "reopen")


def _approval_of(batch_id: int, b: Any, d: Any, overrides: Any, project_id: Any, history: Any, entry_payload: Any,
                 hash_of: Any) -> tuple[str, str]:
    """The approval verdict of batch row `b` whose latest approve/reject/reopen decision is `d` (the callables
    fetch what only an approved batch needs): shared by `approval_check` (one batch) and `approval_states`."""
    if b is None:
        return "none", f"no batch {batch_id}"
    if d is None or d.action != "approve":
        if b.status == "approved":
            return "invalid", f"batch {batch_id} is marked approved but has no approval on record"
        return "none", f"batch {batch_id} is {b.status}"
    if b.status != "approved":
        return "invalid", f"batch {batch_id} was approved but is now {b.status}"
    current = batch_content_hash(b.base_key, overrides())
    if current != b.content_hash or current != d.content_hash:
        return "invalid", f"batch {batch_id}'s data changed after it was approved"
    text = entry_payload()
    try:
        p = json.loads(text) if text else {}
    except ValueError:
        p = {}
    why = identity.check_decision_signature(d, p, project_id(), history(), hash_of)
    if why:
        return "invalid", f"the approval of batch {batch_id} {why}"
    return "valid", f"approved by {d.full_name} at {d.ts}"


def approval_state(conn: Connection, batch: Any) -> str:
    """'valid', 'invalid' or 'none' (see `approval_check`)."""
    return approval_check(conn, batch)[0]


def approval_states(conn: Connection, batch_ids: list[int] | None = None) -> dict[int, tuple[str, str]]:
    """`approval_check` for many batches (all if None) in a few bulk queries (batches, latest decisions, overrides,
    audit entries), reading the key history once. Inside `approval_snapshot(states)` the batches it holds are
    answered from it (one operation sees one set of approval states, computed once)."""
    if batch_ids is None:
        batch_ids = list(conn.execute(select(db.batches.c.id).order_by(db.batches.c.id)).scalars())
    snap = _snapshot.get()
    out: dict[int, tuple[str, str]] = {}
    todo = []
    for bid in batch_ids:
        if snap is not None and bid in snap:
            out[bid] = snap[bid]
        else:
            todo.append(bid)
    if not todo:
        return out
    B, D, O, A = db.batches, db.decisions, db.overrides, db.audit
    rows: dict[int, Any] = {}
    last: dict[int, Any] = {}
    for i in range(0, len(todo), 500):
        part = todo[i:i + 500]
        rows.update((r.id, r) for r in conn.execute(select(B).where(B.c.id.in_(part))))
        for d in conn.execute(select(D).where(and_(D.c.batch_id.in_(part), D.c.action.in_(APPROVAL_ACTIONS)))
                              .order_by(D.c.id)):
            last[d.batch_id] = d  # ascending ids: the latest decision wins
    # what only an approved batch needs: its overrides, its decision's audit entry and the entry before it
    approved = [b for b in todo if b in rows and rows[b].status == "approved" and b in last
                and last[b].action == "approve"]
    overrides: dict[int, list[tuple[int, str, str | None]]] = {b: [] for b in approved}
    payloads: dict[int, str] = {}
    hashes: dict[int, str] = {}
    aids = sorted({last[b].audit_id for b in approved if last[b].audit_id is not None})
    heads = sorted({a - 1 for a in aids if a > 1})
    for i in range(0, len(approved), 500):
        part = approved[i:i + 500]
        for r in conn.execute(select(O.c.batch_id, O.c.row_id, O.c.column, O.c.value).where(O.c.batch_id.in_(part))):
            overrides[r.batch_id].append((r.row_id, r.column, r.value))
    for i in range(0, len(aids), 500):
        payloads.update(conn.execute(select(A.c.id, A.c.payload).where(A.c.id.in_(aids[i:i + 500]))).all())
    for i in range(0, len(heads), 500):
        hashes.update(conn.execute(select(A.c.id, A.c.hash).where(A.c.id.in_(heads[i:i + 500]))).all())
    cache: dict[str, Any] = {}

    def project_id() -> str:
        if "project_id" not in cache:
            cache["project_id"] = conn.execute(select(db.meta.c.value).where(db.meta.c.key == "project_id")).scalar() \
                or ""
        return cache["project_id"]

    def history() -> dict:
        if "history" not in cache:
            cache["history"] = identity.key_history(conn)
        return cache["history"]

    def hash_of(i: int) -> str | None:
        if i in hashes:
            return hashes[i]
        return conn.execute(select(A.c.hash).where(A.c.id == i)).scalar()

    for bid in todo:
        d = last.get(bid)
        out[bid] = _approval_of(bid, rows.get(bid), d, lambda bid=bid: overrides.get(bid, []), project_id, history,
                                lambda d=d: payloads.get(d.audit_id), hash_of)
    return out


_snapshot: ContextVar[dict[int, tuple[str, str]] | None] = ContextVar("hitl_approval_snapshot", default=None)


@contextmanager
def approval_snapshot(states: dict[int, tuple[str, str]]) -> Iterator[None]:
    """Within this block `approval_states` answers the batches in `states` from it: one operation (training: its
    scope check, then featurize's plan) judges approvals once and sees the same verdicts throughout."""
    token = _snapshot.set({**(_snapshot.get() or {}), **states})
    try:
        yield
    finally:
        _snapshot.reset(token)


__all__ = ["APPROVAL_ACTIONS", "approval_check", "approval_snapshot", "approval_state", "approval_states"]
