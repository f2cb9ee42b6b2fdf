"""Batches: listing, lifecycle, cell edits (a separate layer over the immutable originals) and loading.

Edits are an append-only log (`edits`). The `overrides` table holds the current value of every cell that differs
from its original; it is derived from the log inside the same transaction and is what loading applies. A batch's
content hash is its originals' key when nothing is overridden, else the hash of that key and its overrides, so it
changes exactly when the batch's data changes.
"""
from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
import pandas as pd
import pyarrow as pa
from sqlalchemy import and_, case, func, select
from sqlalchemy.engine import Connection

from . import audit, db, identity
from .errors import EditRefused, HitlError, NotFound, PermissionRefused, TransitionRefused
from .ingest import ColumnInfo
from .project import Project
from .sources import SourceInfo, get_source
from .util import canonical_json, utc_now

STATUSES = ("queued", "in_review", "approved", "rejected")
SEVERITY_WEIGHT = {"high": 3.0, "medium": 2.0, "low": 1.0}
_INT_RE = re.compile(r"^\s*[+-]?\d+\s*$")


# --- values ----------------------------------------------------------------------------------------------------


def value_to_text(v: Any) -> str | None:
    """Canonical text of a cell value (None for missing). Edits and overrides store this."""
    if v is None:
        return None
    if isinstance(v, float):
        if math.isnan(v):
            return None
        return repr(int(v)) if v.is_integer() and abs(v) < 2**53 else repr(v)
    if isinstance(v, (bool, np.bool_)):
        return "true" if v else "false"
    if isinstance(v, (np.integer,)):
        return str(int(v))
    if isinstance(v, np.floating):
        return value_to_text(float(v))
    if v is pd.NA or v is pd.NaT:
        return None
    if isinstance(v, pd.Timestamp):
        return v.isoformat()
    return str(v)


def parse_for_column(info: ColumnInfo, text: str | None) -> Any:
    """Check an edited value against the column's type; return the typed value or raise EditRefused."""
    if text is None or text == "":
        return None
    if info.logical == "integer":
        if not _INT_RE.match(text):
            raise EditRefused(f"'{text}' is not a whole number, and column '{info.name}' holds integers")
        return int(text.strip())
    if info.logical == "float":
        try:
            v = float(text.strip())
        except ValueError:
            hint = " (use '.' as the decimal separator)" if re.match(r"^\s*[+-]?\d+,\d+\s*$", text) else ""
            raise EditRefused(f"'{text}' is not a number{hint}, and column '{info.name}' holds numbers") from None
        if math.isnan(v):
            return None
        return v
    if info.logical == "boolean":
        low = text.strip().lower()
        if low in ("true", "1", "yes"):
            return True
        if low in ("false", "0", "no"):
            return False
        raise EditRefused(f"'{text}' is not true/false, and column '{info.name}' holds booleans")
    if info.logical == "datetime":
        try:
            return pd.Timestamp(text)
        except (ValueError, TypeError):
            raise EditRefused(f"'{text}' is not a date/time, and column '{info.name}' holds dates") from None
    return text


def canonical_edit_text(info: ColumnInfo, text: str | None) -> str | None:
    v = parse_for_column(info, text)
    if v is None:
        return None
    if info.logical == "float":
        return value_to_text(float(v))
    if info.logical == "datetime":
        return v.isoformat()
    return value_to_text(v)


# --- batches ---------------------------------------------------------------------------------------------------


@dataclass
class BatchInfo:
    id: int
    source_id: int
    seq: int
    status: str
    rows: int
    row_id_start: int
    start_row: int
    assignee: str | None
    content_hash: str
    base_key: str
    revision: int
    out_for_review: str | None
    updated_at: str
    source: str = ""
    edits: int = 0
    flags: dict[str, int] = field(default_factory=dict)
    risk: float = 0.0
    decision: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "status": self.status, "rows": self.rows, "source": self.source,
            "source_id": self.source_id, "first_source_row": self.start_row, "assignee": self.assignee,
            "content_hash": self.content_hash, "revision": self.revision, "out_for_review": self.out_for_review,
            "edits": self.edits, "open_flags": self.flags, "risk": round(self.risk, 4), "decision": self.decision,
        }


def _batch_from_row(r: Any) -> BatchInfo:
    return BatchInfo(r.id, r.source_id, r.seq, r.status, r.n_rows, r.row_id_start, r.start_row, r.assignee,
                     r.content_hash, r.base_key, r.revision, r.out_for_review, r.updated_at)


def get_batch(conn: Connection, batch_id: int) -> BatchInfo:
    r = conn.execute(select(db.batches).where(db.batches.c.id == batch_id)).first()
    if r is None:
        raise NotFound(f"no batch {batch_id} in this project: list them with `hitl batches DIR`")
    return _batch_from_row(r)


def list_batches(project: Project, status: str | None = None) -> list[BatchInfo]:
    """All batches with source name, edit counts, open flags by severity and risk; ordered by risk, then id."""
    with project.read() as conn:
        q = select(db.batches, db.sources.c.file_name).join(db.sources, db.sources.c.id == db.batches.c.source_id)
        if status:
            q = q.where(db.batches.c.status == status)
        out = {}
        for r in conn.execute(q.order_by(db.batches.c.id)):
            b = _batch_from_row(r)
            b.source = r.file_name
            out[b.id] = b
        for bid, n in conn.execute(
            select(db.overrides.c.batch_id, func.count()).group_by(db.overrides.c.batch_id)
        ):
            if bid in out:
                out[bid].edits = n
        for bid, sev, n in conn.execute(
            select(db.flags.c.batch_id, db.flags.c.severity, func.count())
            .where(db.flags.c.status == "open")
            .group_by(db.flags.c.batch_id, db.flags.c.severity)
        ):
            if bid in out:
                out[bid].flags[sev] = n
                out[bid].risk += SEVERITY_WEIGHT.get(sev, 1.0) * n
        last = (
            select(func.max(db.decisions.c.id).label("id"))
            .where(db.decisions.c.batch_id.is_not(None))
            .group_by(db.decisions.c.batch_id)
            .subquery()
        )
        for d in conn.execute(select(db.decisions).where(db.decisions.c.id.in_(select(last.c.id)))):
            if d.batch_id in out:
                out[d.batch_id].decision = {
                    "action": d.action, "user": d.user, "full_name": d.full_name, "ts": d.ts, "meaning": d.meaning,
                    "signed": d.signature is not None,
                }
    return sorted(out.values(), key=lambda b: (-b.risk, b.id))


def batch_content_hash(base: str, overrides: Iterable[tuple[int, str, str | None]]) -> str:
    items = sorted(overrides, key=lambda t: (t[0], t[1]))
    if not items:
        return base
    body = canonical_json([[r, c, v] for r, c, v in items])
    return hashlib.sha256(f"{base}:{body}".encode("utf-8")).hexdigest()


def current_overrides(conn: Connection, batch_id: int) -> list[tuple[int, str, str | None]]:
    return [
        (r.row_id, r.column, r.value)
        for r in conn.execute(
            select(db.overrides.c.row_id, db.overrides.c.column, db.overrides.c.value).where(
                db.overrides.c.batch_id == batch_id
            )
        )
    ]


def _touch(conn: Connection, batch: BatchInfo, now: str, **values: Any) -> str:
    h = batch_content_hash(batch.base_key, current_overrides(conn, batch.id))
    conn.execute(
        db.batches.update().where(db.batches.c.id == batch.id).values(
            content_hash=h, revision=db.batches.c.revision + 1, updated_at=now, **values
        )
    )
    return h


# --- lifecycle -------------------------------------------------------------------------------------------------

_TRANSITIONS = {
    "claim": ({"queued"}, "in_review"),
    "approve": ({"queued", "in_review"}, "approved"),
    "reject": ({"queued", "in_review"}, "rejected"),
    "reopen": ({"approved", "rejected"}, "in_review"),
}
MEANINGS = {
    "approve": "approved for training",
    "reject": "rejected",
    "reopen": "reopened for review",
    "claim": "claimed for review",
}


def check_transition(batch: BatchInfo, action: str) -> str:
    allowed, target = _TRANSITIONS[action]
    if batch.status not in allowed:
        hint = {
            "claim": "only a queued batch can be claimed",
            "approve": "reopen it first" if batch.status in ("approved", "rejected") else "",
            "reject": "reopen it first" if batch.status in ("approved", "rejected") else "",
            "reopen": "only an approved or rejected batch can be reopened",
        }[action]
        raise TransitionRefused(f"batch {batch.id} is {batch.status}: cannot {action} it" + (f"; {hint}" if hint else ""))
    return target


@dataclass
class Decision:
    id: int
    batch_id: int | None
    action: str
    user: str
    full_name: str
    ts: str
    meaning: str
    comment: str | None
    content_hash: str | None
    signed: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "batch": self.batch_id, "action": self.action, "user": self.user,
            "full_name": self.full_name, "ts": self.ts, "meaning": self.meaning, "comment": self.comment,
            "content_hash": self.content_hash, "signed": self.signed,
        }


def decide(project: Project, batch_id: int, action: str, user: str, comment: str | None = None,
           signer: Any = None) -> Decision:
    """Claim, approve, reject or reopen a batch: one transaction with its decision record and audit entry.

    `signer` is called as signer(conn, payload: dict) -> (full_name, signed_payload, signature) inside the
    transaction. Approve, reject and reopen are electronic signatures and need one (`identity.signer`); a claim is
    recorded unsigned. The user's role and the four-eyes policy are checked first (refusals are recorded).
    """
    if action == "reject" and not (comment and comment.strip()):
        raise TransitionRefused("a rejection needs a comment saying what is wrong: pass --comment TEXT")
    if action in identity.SIGNED_ACTIONS and signer is None:
        raise PermissionRefused(f"to {action} is an electronic signature: it needs the signer's password "
                                f"(pass signer=identity.signer(project, user, password))")
    identity.authorize(project, user, action, batch_id)
    with project.write() as conn:
        batch = get_batch(conn, batch_id)
        target = check_transition(batch, action)
        refused = identity.check(conn, user, action, batch_id)  # changed since the check above?
        if refused:
            raise PermissionRefused(refused + "; nothing was changed")
        now = utc_now()
        meaning = MEANINGS[action] + (f": {comment}" if action == "reject" else "")
        payload = {
            "batch": batch.id, "action": action, "meaning": meaning, "content_hash": batch.content_hash,
            "from": batch.status, "to": target, "comment": comment, "ts": now, "user": user,
            "project": project.project_id,
        }
        full_name, signed_payload, signature = user, None, None
        if signer is not None:
            full_name, signed_payload, signature = signer(conn, payload)
        audit_id = audit.append(conn, user, f"batch.{action}", f"batch:{batch.id}",
                                {**payload, "full_name": full_name, "signature": signature}, ts=now)
        did = conn.execute(db.decisions.insert().values(
            batch_id=batch.id, action=action, user=user, full_name=full_name, ts=now, meaning=meaning,
            comment=comment, content_hash=batch.content_hash, signed_payload=signed_payload, signature=signature,
            audit_id=audit_id,
        )).inserted_primary_key[0]
        values: dict[str, Any] = {"status": target}
        if action == "claim" or (action == "reopen"):
            values["assignee"] = user
        conn.execute(db.batches.update().where(db.batches.c.id == batch.id).values(
            revision=db.batches.c.revision + 1, updated_at=now, **values))
    return Decision(did, batch.id, action, user, full_name, now, meaning, comment, batch.content_hash,
                    signature is not None)


def decisions_for(conn: Connection, batch_id: int) -> list[Decision]:
    return [
        Decision(d.id, d.batch_id, d.action, d.user, d.full_name, d.ts, d.meaning, d.comment, d.content_hash,
                 d.signature is not None)
        for d in conn.execute(select(db.decisions).where(db.decisions.c.batch_id == batch_id).order_by(db.decisions.c.id))
    ]


# --- edits -----------------------------------------------------------------------------------------------------


@dataclass
class EditResult:
    """What an edit changed: enough for a window to repaint one cell."""

    edit_id: int
    batch_id: int
    row_id: int
    column: str
    old_value: str | None
    new_value: str | None
    original: str | None
    content_hash: str
    status: str
    kind: str

    def to_json(self) -> dict[str, Any]:
        return {
            "edit": self.edit_id, "batch": self.batch_id, "row": self.row_id, "column": self.column,
            "old": self.old_value, "new": self.new_value, "original": self.original, "kind": self.kind,
            "content_hash": self.content_hash, "status": self.status,
        }


def _column_info(source: SourceInfo, column: str) -> ColumnInfo:
    for c in source.columns:
        if c.name == column:
            return c
    raise EditRefused(f"no column '{column}'; columns are: {', '.join(c.name for c in source.columns)}")


def original_value(project: Project, batch: BatchInfo, source: SourceInfo, row_id: int, column: str) -> str | None:
    rb = project.reader(source.data_file).get_batch(batch.seq)
    return value_to_text(rb.column(column)[row_id - batch.row_id_start].as_py())


def _check_row(batch: BatchInfo, row_id: int) -> None:
    if not (batch.row_id_start <= row_id < batch.row_id_start + batch.rows):
        raise EditRefused(
            f"row {row_id} is not in batch {batch.id} (its rows are {batch.row_id_start}..{batch.row_id_start + batch.rows - 1})"
        )


def _editable(batch: BatchInfo) -> None:
    if batch.status in ("approved", "rejected"):
        raise EditRefused(f"batch {batch.id} is {batch.status}: reopen it before editing (`hitl reopen DIR {batch.id}`)")


def set_cell(project: Project, batch_id: int, row_id: int, column: str, value: str | None, user: str,
             reason: str | None = None, kind: str = "edit", undoes: int | None = None,
             extra_audit: dict[str, Any] | None = None, conn: Connection | None = None) -> EditResult:
    """Set one cell (validated against its column type). One transaction: edit log, override, hash, audit.

    Without `conn` the user's role is checked first (`identity.authorize`); a caller passing its own `conn` has
    already authorized the user (as `revert_cell` and `undo_last` do).
    """
    if conn is None:
        identity.authorize(project, user, "edit", batch_id)
        with project.write() as c:
            return set_cell(project, batch_id, row_id, column, value, user, reason, kind, undoes, extra_audit, c)
    batch = get_batch(conn, batch_id)
    _editable(batch)
    _check_row(batch, row_id)
    source = get_source(project, batch.source_id)
    info = _column_info(source, column)
    new = canonical_edit_text(info, value) if kind in ("edit", "accept") else value
    original = original_value(project, batch, source, row_id, column)
    cur = conn.execute(select(db.overrides.c.value).where(and_(
        db.overrides.c.batch_id == batch_id, db.overrides.c.row_id == row_id, db.overrides.c.column == column))).first()
    old = cur.value if cur is not None else original
    if new == old and kind in ("edit", "accept"):
        raise EditRefused(f"row {row_id} column '{column}' already holds {_show(new)}: nothing to change")
    now = utc_now()
    entry = {"batch": batch_id, "row": row_id, "column": column, "old": old, "new": new, "kind": kind,
             "reason": reason, "undoes": undoes, "original": original, **(extra_audit or {})}
    audit_id = audit.append(conn, user, f"cell.{kind}", f"batch:{batch_id}", entry, ts=now)
    edit_id = conn.execute(db.edits.insert().values(
        batch_id=batch_id, row_id=row_id, column=column, old_value=old, new_value=new, kind=kind, undoes=undoes,
        reason=reason, user=user, ts=now, audit_id=audit_id)).inserted_primary_key[0]
    where = and_(db.overrides.c.batch_id == batch_id, db.overrides.c.row_id == row_id, db.overrides.c.column == column)
    if new == original:
        conn.execute(db.overrides.delete().where(where))
    elif cur is not None:
        conn.execute(db.overrides.update().where(where).values(value=new, edit_id=edit_id))
    else:
        conn.execute(db.overrides.insert().values(batch_id=batch_id, row_id=row_id, column=column, value=new,
                                                  edit_id=edit_id))
    extra = {}
    status = batch.status
    if batch.status == "queued":
        status = "in_review"
        extra = {"status": "in_review", "assignee": batch.assignee or user}
    h = _touch(conn, batch, now, **extra)
    return EditResult(edit_id, batch_id, row_id, column, old, new, original, h, status, kind)


def revert_cell(project: Project, batch_id: int, row_id: int, column: str, user: str,
                reason: str | None = None) -> EditResult:
    identity.authorize(project, user, "edit", batch_id)
    with project.write() as conn:
        batch = get_batch(conn, batch_id)
        _editable(batch)
        _check_row(batch, row_id)
        source = get_source(project, batch.source_id)
        _column_info(source, column)
        cur = conn.execute(select(db.overrides.c.value).where(and_(
            db.overrides.c.batch_id == batch_id, db.overrides.c.row_id == row_id,
            db.overrides.c.column == column))).first()
        if cur is None:
            raise EditRefused(f"row {row_id} column '{column}' already holds its original value: nothing to revert")
        original = original_value(project, batch, source, row_id, column)
        return set_cell(project, batch_id, row_id, column, original, user, reason or "revert to original",
                        kind="revert", conn=conn)


def undo_last(project: Project, batch_id: int, user: str, edit_id: int | None = None) -> EditResult:
    """Undo the newest edit of the batch not yet undone (or a given one, which must be the cell's latest change)."""
    identity.authorize(project, user, "edit", batch_id)
    with project.write() as conn:
        batch = get_batch(conn, batch_id)
        _editable(batch)
        undone = select(db.edits.c.undoes).where(and_(db.edits.c.batch_id == batch_id, db.edits.c.undoes.is_not(None)))
        q = select(db.edits).where(and_(db.edits.c.batch_id == batch_id, db.edits.c.kind != "undo",
                                        db.edits.c.id.not_in(undone)))
        if edit_id is not None:
            q = q.where(db.edits.c.id == edit_id)
        e = conn.execute(q.order_by(db.edits.c.id.desc()).limit(1)).first()
        if e is None:
            raise EditRefused(f"batch {batch_id} has no edit to undo")
        latest = conn.execute(select(db.edits.c.id).where(and_(
            db.edits.c.batch_id == batch_id, db.edits.c.row_id == e.row_id, db.edits.c.column == e.column))
            .order_by(db.edits.c.id.desc()).limit(1)).scalar()
        if latest != e.id:
            raise EditRefused(f"edit {e.id} is no longer the latest change of row {e.row_id} column '{e.column}'")
        return set_cell(project, batch_id, e.row_id, e.column, e.old_value, user, f"undo edit {e.id}",
                        kind="undo", undoes=e.id, conn=conn)


@dataclass
class EditRecord:
    id: int
    batch_id: int
    row_id: int
    column: str
    old_value: str | None
    new_value: str | None
    kind: str
    undoes: int | None
    reason: str | None
    user: str
    ts: str

    def to_json(self) -> dict[str, Any]:
        return {"edit": self.id, "batch": self.batch_id, "row": self.row_id, "column": self.column,
                "old": self.old_value, "new": self.new_value, "kind": self.kind, "undoes": self.undoes,
                "reason": self.reason, "user": self.user, "ts": self.ts}


def edit_history(project: Project, batch_id: int, row_id: int | None = None, column: str | None = None) -> list[EditRecord]:
    with project.read() as conn:
        get_batch(conn, batch_id)
        q = select(db.edits).where(db.edits.c.batch_id == batch_id)
        if row_id is not None:
            q = q.where(db.edits.c.row_id == row_id)
        if column is not None:
            q = q.where(db.edits.c.column == column)
        return [EditRecord(e.id, e.batch_id, e.row_id, e.column, e.old_value, e.new_value, e.kind, e.undoes,
                           e.reason, e.user, e.ts) for e in conn.execute(q.order_by(db.edits.c.id))]


def _show(v: str | None) -> str:
    return "a missing value" if v is None else f"'{v}'"


# --- loading ---------------------------------------------------------------------------------------------------

_INT_MAPPER = {pa.int64(): pd.Int64Dtype(), pa.int32(): pd.Int64Dtype(), pa.int16(): pd.Int64Dtype(),
               pa.int8(): pd.Int64Dtype()}


def _to_pandas(table: pa.Table | pa.RecordBatch) -> pd.DataFrame:
    return table.to_pandas(types_mapper=_INT_MAPPER.get)


def _apply_overrides(df: pd.DataFrame, source: SourceInfo, rows: list[tuple[int, str, str | None]]) -> None:
    """Overlay current values on originals, column by column (text stays text, typed columns get typed values)."""
    if not rows:
        return
    infos = {c.name: c for c in source.columns}
    by_col: dict[str, tuple[list[int], list[Any]]] = {}
    for r, c, v in rows:
        ids, vals = by_col.setdefault(c, ([], []))
        ids.append(r)
        vals.append(v)
    for col, (ids, vals) in by_col.items():
        info = infos[col]
        dtype = df[col].dtype
        if info.raw or info.logical == "text":
            df.loc[ids, col] = vals
            continue
        typed = [parse_for_column(info, v) for v in vals]
        if pd.api.types.is_float_dtype(dtype):
            typed = [np.nan if v is None else v for v in typed]
        df.loc[ids, col] = pd.array(typed, dtype=dtype)


def load_batch(project: Project, batch_id: int, original: bool = False) -> pd.DataFrame:
    """One batch as a DataFrame (index = row id), edits applied unless `original`."""
    with project.read() as conn:
        batch = get_batch(conn, batch_id)
        rows = [] if original else current_overrides(conn, batch_id)
    source = get_source(project, batch.source_id)
    df = _to_pandas(project.reader(source.data_file).get_batch(batch.seq))
    df.index = pd.RangeIndex(batch.row_id_start, batch.row_id_start + batch.rows, name="row")
    _apply_overrides(df, source, rows)
    return df


def load_source(project: Project, source_id: int, batch_ids: Iterable[int] | None = None,
                original: bool = False) -> pd.DataFrame:
    """All rows of a source (or the given batches of it) with edits applied: what training and checks read."""
    source = get_source(project, source_id)
    reader = project.reader(source.data_file)
    with project.read() as conn:
        q = select(db.batches.c.id, db.batches.c.seq).where(db.batches.c.source_id == source_id)
        wanted = None if batch_ids is None else set(batch_ids)
        seqs = [(r.id, r.seq) for r in conn.execute(q.order_by(db.batches.c.seq)) if wanted is None or r.id in wanted]
        ov = [] if original else [
            (r.row_id, r.column, r.value) for r in conn.execute(
                select(db.overrides.c.row_id, db.overrides.c.column, db.overrides.c.value)
                .join(db.batches, db.batches.c.id == db.overrides.c.batch_id)
                .where(db.batches.c.source_id == source_id))
        ]
    if wanted is None and len(seqs) == reader.num_record_batches:
        table = reader.read_all()
        index = pd.RangeIndex(source.row_offset, source.row_offset + source.row_count, name="row")
    else:
        parts = [reader.get_batch(s) for _, s in seqs]
        table = pa.Table.from_batches(parts, schema=reader.schema)
        index = None
    df = _to_pandas(table)
    if index is None:
        with project.read() as conn:
            ranges = {r.id: (r.row_id_start, r.n_rows) for r in conn.execute(
                select(db.batches.c.id, db.batches.c.row_id_start, db.batches.c.n_rows)
                .where(db.batches.c.source_id == source_id))}
        ids = np.concatenate([np.arange(ranges[b][0], ranges[b][0] + ranges[b][1]) for b, _ in seqs]) if seqs else np.array([], dtype=np.int64)
        index = pd.Index(ids, name="row")
        if wanted is not None:
            ov = [o for o in ov if o[0] in set(ids.tolist())]
    df.index = index
    _apply_overrides(df, source, ov)
    return df


def typed_view(df: pd.DataFrame, columns: list[ColumnInfo]) -> pd.DataFrame:
    """Numbers for logically numeric columns stored raw (strays become NaN here only, never in the store)."""
    out = df.copy()
    for c in columns:
        if c.raw and c.logical in ("integer", "float") and c.name in out:
            out[c.name] = pd.to_numeric(out[c.name].astype("str").str.strip(), errors="coerce")
    return out
