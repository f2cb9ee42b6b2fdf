"""The hash-chained audit trail.

Every state change appends one entry inside the same transaction as the change. Each entry's hash covers its id,
time, user, action, target, payload and the previous entry's hash, so changing, deleting, inserting or re-ordering
any entry breaks the chain from that point on.
"""
from __future__ import annotations

import hashlib
import json
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from json.encoder import encode_basestring  # the C encoder json.dumps uses with ensure_ascii=False
from typing import Any, Iterator, NamedTuple

from sqlalchemy import and_, func, select
from sqlalchemy.engine import Connection

from . import db
from .util import canonical_json, utc_now

GENESIS = "0" * 64


def entry_hash(entry_id: int, ts: str, user: str, action: str, target: str | None, payload: str, prev: str) -> str:
    """sha256 of canonical_json({id, ts, user, action, target, payload, prev}), built by hand (4x faster: verify
    hashes every entry). `test_entry_hash_equals_canonical_json` keeps the bytes identical."""
    e = encode_basestring
    body = '{"action":%s,"id":%d,"payload":%s,"prev":%s,"target":%s,"ts":%s,"user":%s}' % (
        e(action), entry_id, e(payload), e(prev), "null" if target is None else e(target), e(ts), e(user))
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


def head(conn: Connection) -> tuple[int, str]:
    row = conn.execute(select(db.audit.c.id, db.audit.c.hash).order_by(db.audit.c.id.desc()).limit(1)).first()
    return (row.id, row.hash) if row else (0, GENESIS)


def append(
    conn: Connection,
    user: str,
    action: str,
    target: str | None,
    payload: dict[str, Any],
    ts: str | None = None,
) -> int:
    """Append one entry; must run inside the caller's write transaction. Returns the entry id."""
    last_id, prev = head(conn)
    entry_id = last_id + 1
    ts = ts or utc_now()
    body = canonical_json(payload)
    h = entry_hash(entry_id, ts, user, action, target, body, prev)
    conn.execute(
        db.audit.insert().values(
            id=entry_id, ts=ts, user=user, action=action, target=target, payload=body, prev_hash=prev, hash=h
        )
    )
    return entry_id


@dataclass
class AuditEntry:
    id: int
    ts: str
    user: str
    action: str
    target: str | None
    payload: dict[str, Any]
    hash: str

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "ts": self.ts,
            "user": self.user,
            "action": self.action,
            "target": self.target,
            "payload": self.payload,
            "hash": self.hash,
        }


def entries(conn: Connection, target: str | None = None, limit: int | None = None) -> list[AuditEntry]:
    q = select(db.audit).order_by(db.audit.c.id)
    if target is not None:
        q = q.where(db.audit.c.target == target)
    if limit:
        q = q.limit(limit)
    return [
        AuditEntry(r.id, r.ts, r.user, r.action, r.target, json.loads(r.payload), r.hash) for r in conn.execute(q)
    ]


def count(conn: Connection) -> int:
    return conn.execute(select(func.count()).select_from(db.audit)).scalar_one()


def verify_chain(conn: Connection) -> tuple[bool, str, int]:
    """Walk the chain. Returns (ok, message, entries checked)."""
    prev = GENESIS
    expected_id = 1
    n = 0
    res = conn.execute(
        select(
            db.audit.c.id, db.audit.c.ts, db.audit.c.user, db.audit.c.action, db.audit.c.target,
            db.audit.c.payload, db.audit.c.prev_hash, db.audit.c.hash,
        ).order_by(db.audit.c.id)
    )
    for r in res:
        if r.id != expected_id:
            return False, f"audit entry {expected_id} is missing (next present is {r.id})", n
        if r.prev_hash != prev:
            return False, f"audit entry {r.id} does not link to its predecessor (chain broken)", n
        if entry_hash(r.id, r.ts, r.user, r.action, r.target, r.payload, r.prev_hash) != r.hash:
            return False, f"audit entry {r.id} ({r.action}) was altered: its hash does not match its content", n
        prev = r.hash
        expected_id += 1
        n += 1
    return True, f"{n} audit entries chained correctly", n


# --- whole-project verification -------------------------------------------------------------------------------


@dataclass
class VerifyReport:
    """Outcome of `verify_project`. `problems` are (position in the chain, message), first problem first."""

    entries: int
    signatures: int
    head_id: int
    head_hash: str
    problems: list[tuple[int, str]]

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        if self.ok:
            return (f"ok: {self.entries} audit entries chained, {self.signatures} signatures valid, edits, "
                    f"decisions, users, batches, models and originals files match the trail "
                    f"(head {self.head_id}:{self.head_hash[:16]})")
        first = self.problems[0][1]
        more = f" (and {len(self.problems) - 1} more problems)" if len(self.problems) > 1 else ""
        return f"TAMPERED: {first}{more}"

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "entries": self.entries, "signatures": self.signatures,
                "head": {"id": self.head_id, "hash": self.head_hash},
                "problems": [m for _, m in self.problems], "summary": self.summary()}


_BIG = 1 << 62


class _Entry(NamedTuple):
    id: int
    ts: str
    user: str
    action: str
    target: str | None
    payload: str


def verify_project(project: Any) -> VerifyReport:
    """Check the chain, every signature, and that edits, overrides, batches, decisions, users, policy and sources
    agree with the audit entries that recorded them (both ways), and that every originals file under data/ still
    has the sha256 recorded at import. Read-only; one consistent snapshot."""
    with project.read() as conn:
        report = verify_conn(conn)
        if not getattr(project, "is_bundle", False):
            files = conn.execute(select(db.sources.c.id, db.sources.c.file_name, db.sources.c.data_file,
                                        db.sources.c.data_sha256).order_by(db.sources.c.id)).all()
            report.problems.extend((_BIG, msg) for msg in _check_data_files(project.data_dir, files))
    return report


def _check_data_files(data_dir: Any, files: list[Any]) -> list[str]:
    """The originals files under data/ must still be the bytes whose sha256 the import recorded (and chained)."""
    import hashlib

    problems = []
    for sid, name, data_file, want in files:
        h = hashlib.sha256()
        try:
            with open(data_dir / data_file, "rb") as fh:
                while chunk := fh.read(8 << 20):
                    h.update(chunk)
        except FileNotFoundError:
            problems.append(f"the originals file of source {sid} ({name}) is missing: data/{data_file}")
            continue
        except OSError as exc:
            problems.append(f"the originals file of source {sid} ({name}) cannot be read: {exc.strerror or exc}")
            continue
        if h.hexdigest() != want:
            problems.append(f"the originals file of source {sid} ({name}) was altered: its sha256 does not match "
                            f"the one recorded at import")
    return problems


def verify_conn(conn: Connection) -> VerifyReport:
    from . import identity
    from .batches import batch_content_hash
    from .sources import base_key

    problems: list[tuple[int, str]] = []

    def bad(pos: int | None, msg: str) -> None:
        problems.append((_BIG if pos is None else pos, msg))

    # 1. the chain
    hashes: list[str] = [GENESIS]
    cells: dict[int, Any] = {}
    decisions_e: dict[int, Any] = {}
    users_e: list[Any] = []
    sources_e: dict[str, Any] = {}
    prev = GENESIS
    expected_id = 1
    a = db.audit.c
    for rid, ts, user, action, target, body, prev_hash, h in conn.execute(
            select(a.id, a.ts, a.user, a.action, a.target, a.payload, a.prev_hash, a.hash).order_by(a.id)):
        if rid != expected_id:
            bad(expected_id, f"audit entry {expected_id} is missing (next present is {rid})")
            hashes.extend([""] * max(0, rid - expected_id))
            expected_id = rid
        if prev_hash != prev:
            bad(rid, f"audit entry {rid} ({action}) does not link to its predecessor (chain broken)")
        if entry_hash(rid, ts, user, action, target, body, prev_hash) != h:
            bad(rid, f"audit entry {rid} ({action} by {user}) was altered: its hash does not match its content")
        prev = h
        hashes.append(h)
        expected_id += 1
        if action.startswith("cell."):
            cells[rid] = _Entry(rid, ts, user, action, target, body)
        elif action.startswith(("batch.", "model.")):
            decisions_e[rid] = _Entry(rid, ts, user, action, target, body)
        elif action in ("project.init", "policy.set") or action.startswith("user."):
            users_e.append(_Entry(rid, ts, user, action, target, body))
        elif action == "source.import":
            sources_e[target] = _Entry(rid, ts, user, action, target, body)
    n_entries = expected_id - 1
    head_id, head_hash = n_entries, hashes[-1] if n_entries else GENESIS

    def hash_of(i: int) -> str | None:
        return hashes[i] if 0 < i < len(hashes) else None

    def payload(r: _Entry) -> dict[str, Any]:
        try:
            return json.loads(r.payload)
        except ValueError:
            bad(r.id, f"audit entry {r.id} has an unreadable payload")
            return {}

    # 2. edits <-> cell.* entries, and the overrides they imply
    expected_ov: dict[tuple[int, int, str], tuple[str | None, str | None, int]] = {}
    e = db.edits.c
    for row in conn.execute(select(e.id, e.batch_id, e.row_id, e.column, e.old_value, e.new_value, e.kind, e.undoes,
                                   e.reason, e.user, e.ts, e.audit_id).order_by(e.id)):
        eid, batch_id, row_id, column, old_v, new_v, kind, undoes, reason, user, ts, audit_id = row
        entry = cells.pop(audit_id, None) if audit_id is not None else None
        if entry is None:
            bad(audit_id, f"edit {eid} (batch {batch_id} row {row_id} '{column}') has no audit "
                          f"entry: it was inserted or re-pointed by hand")
            continue
        p = payload(entry)
        g = p.get
        if not (g("batch") == batch_id and g("row") == row_id and g("column") == column and g("old") == old_v
                and g("new") == new_v and g("kind") == kind and g("reason") == reason and g("undoes") == undoes
                and entry.user == user and entry.ts == ts and entry.action == "cell." + kind):
            want = {"batch": batch_id, "row": row_id, "column": column, "old": old_v, "new": new_v, "kind": kind,
                    "reason": reason, "undoes": undoes}
            diff = [k for k, v in want.items() if g(k) != v]
            for k, mine in (("user", user), ("ts", ts), ("action", "cell." + kind)):
                if getattr(entry, k) != mine:
                    want[k] = mine
                    diff.append(k)
            k = diff[0]
            trail = g(k) if k in p else getattr(entry, k, None)
            bad(entry.id, f"edit {eid} does not match audit entry {entry.id} ({', '.join(diff)} changed: "
                          f"e.g. {k} is {want[k]!r} in edits, {trail!r} in the trail)")
        expected_ov[(g("batch"), g("row"), g("column"))] = (g("new"), g("original"), eid)
    for aid, entry in cells.items():
        bad(aid, f"audit entry {aid} ({entry.action} by {entry.user}) has no row in edits: the edit was deleted")

    ov_by_batch: dict[int, list[tuple[int, str, str | None]]] = {}
    want_ov = {k: (new, eid) for k, (new, orig, eid) in expected_ov.items() if new != orig}
    for k, (new, _eid) in want_ov.items():
        ov_by_batch.setdefault(k[0], []).append((k[1], k[2], new))
    o = db.overrides.c
    seen = set()
    for row in conn.execute(select(o.batch_id, o.row_id, o.column, o.value, o.edit_id)):
        k = (row.batch_id, row.row_id, row.column)
        seen.add(k)
        w = want_ov.get(k)
        if w is None:
            bad(None, f"batch {k[0]} row {k[1]} '{k[2]}' holds {row.value!r}, but no recorded edit changed it "
                      f"(overrides altered by hand)")
        elif w[0] != row.value:
            bad(None, f"batch {k[0]} row {k[1]} '{k[2]}' holds {row.value!r}, but the recorded edits give "
                      f"{w[0]!r} (value altered by hand)")
    for k in want_ov.keys() - seen:
        bad(None, f"batch {k[0]} row {k[1]} '{k[2]}' lost its edited value {want_ov[k][0]!r} (overrides altered "
                  f"by hand)")

    # 3. decisions <-> batch.* / model.* entries, and signatures
    project_id = conn.execute(select(db.meta.c.value).where(db.meta.c.key == "project_id")).scalar() or ""
    history = identity.key_history(conn)
    n_sigs = 0
    last_decision: dict[int, str] = {}
    last_model_decision: dict[int, str] = {}
    for d in conn.execute(select(db.decisions).order_by(db.decisions.c.id)):
        entry = decisions_e.pop(d.audit_id, None) if d.audit_id is not None else None
        if entry is None:
            bad(d.audit_id, f"decision {d.id} ({d.action} by {d.user}) has no audit entry: inserted or re-pointed "
                            f"by hand")
            continue
        p = payload(entry)
        want = {"action": d.action, "meaning": d.meaning, "content_hash": d.content_hash, "comment": d.comment,
                "full_name": d.full_name, "signature": d.signature}
        if d.batch_id is not None:
            want["batch"] = d.batch_id
            last_decision[d.batch_id] = d.action
        if d.model_id is not None:
            want["model"] = d.model_id
            last_model_decision[d.model_id] = d.action
        diff = [k for k, v in want.items() if p.get(k) != v]
        if entry.user != d.user:
            diff.insert(0, "user")
        if entry.ts != d.ts:
            diff.append("ts")
        if diff:
            k = diff[0]
            rec = getattr(d, k, None) if k in ("user", "ts") else want[k]
            trail = getattr(entry, k) if k in ("user", "ts") else p.get(k)
            bad(entry.id, f"decision {d.id} does not match audit entry {entry.id} ({', '.join(diff)} changed: "
                          f"{k} is {rec!r} in decisions, {trail!r} in the trail)")
        if d.action in identity.SIGNED_ACTIONS or d.signature:
            why = check_decision_signature(d, p, project_id, history, hash_of)
            subject = f"batch {d.batch_id}" if d.batch_id is not None else f"model {d.model_id}"
            if why:
                bad(entry.id, f"signature of decision {d.id} ({d.action} of {subject} by {d.user}, audit entry "
                              f"{entry.id}) {why}")
            else:
                n_sigs += 1
    for aid, entry in decisions_e.items():
        if entry.action.startswith("batch.") or entry.action in ("model.approve", "model.reject"):
            bad(aid, f"audit entry {aid} ({entry.action} by {entry.user}) has no row in decisions: the decision "
                     f"was deleted")

    # 3b. models <-> model.train entries (file hash, lineage, metrics, trainer) and status <-> model decisions
    trained = {e.target: e for e in decisions_e.values() if e.action == "model.train"}
    for m in conn.execute(select(db.models).order_by(db.models.c.id)):
        entry = trained.pop(f"model:{m.id}", None)
        if entry is None:
            bad(None, f"model {m.id} has no model.train entry in the trail (inserted by hand)")
            continue
        p = payload(entry)
        have = {"pipeline": m.pipeline, "version": m.version, "model_sha256": m.model_sha256,
                "lineage_sha256": hashlib.sha256((m.lineage_json or "").encode("utf-8")).hexdigest(),
                "metrics_sha256": hashlib.sha256((m.metrics_json or "").encode("utf-8")).hexdigest(),
                "trained_at": m.trained_at}
        diff = [k for k, v in have.items() if p.get(k) != v] + (["trained_by"] if entry.user != m.trained_by else [])
        if diff:
            bad(entry.id, f"model {m.id} does not match its model.train entry {entry.id} ({', '.join(diff)} "
                          f"altered by hand)")
        want_action = {"approved": "approve_model", "rejected": "reject_model"}.get(m.status)
        if last_model_decision.get(m.id) != want_action:
            bad(None, f"model {m.id} is {m.status} but its last recorded decision is "
                      f"{last_model_decision.get(m.id) or 'none'} (status altered by hand)")
    for target, entry in trained.items():
        bad(entry.id, f"audit entry {entry.id} (model.train) has no row in models: {target} was deleted")

    # 4. batches: originals key, content hash, status
    srcs = {r.id: r for r in conn.execute(select(db.sources))}
    for b in conn.execute(select(db.batches).order_by(db.batches.c.id)):
        s = srcs.get(b.source_id)
        if s is not None and base_key(s.sha256, s.options_key, b.start_row, b.n_rows) != b.base_key:
            bad(None, f"batch {b.id} no longer points at its imported originals (base key altered)")
        h = batch_content_hash(b.base_key, ov_by_batch.get(b.id, []))
        if h != b.content_hash:
            bad(None, f"batch {b.id}'s content hash does not match its recorded edits (altered by hand)")
        want_action = {"approved": "approve", "rejected": "reject"}.get(b.status)
        if want_action and last_decision.get(b.id) != want_action:
            bad(None, f"batch {b.id} is {b.status} but its last recorded decision is "
                      f"{last_decision.get(b.id) or 'none'} (status altered by hand)")

    # 5. sources <-> source.import entries
    for s in srcs.values():
        entry = sources_e.pop(f"source:{s.id}", None)
        if entry is None:
            bad(None, f"source {s.id} ({s.file_name}) has no import entry in the trail (inserted by hand)")
            continue
        p = payload(entry)
        if (p.get("sha256"), p.get("data_sha256"), p.get("rows"), entry.user, entry.ts) != (
                s.sha256, s.data_sha256, s.row_count, s.imported_by, s.imported_at):
            bad(entry.id, f"source {s.id} does not match its import entry {entry.id} (altered by hand)")
    for target, entry in sources_e.items():
        bad(entry.id, f"audit entry {entry.id} (source.import) has no row in sources: {target} was deleted")

    # 6. users and policy <-> user.* / project.init / policy.set entries
    state: dict[str, dict[str, Any]] = {}
    four_eyes = "on"
    for entry in users_e:
        p = payload(entry)
        if entry.action == "project.init":
            state[p.get("admin")] = {"full_name": p.get("full_name", p.get("admin")), "role": "admin",
                                     "disabled": False, "public_key": None}
        elif entry.action == "user.add":
            state[p.get("user")] = {"full_name": p.get("full_name"), "role": p.get("role"), "disabled": False,
                                    "public_key": p.get("public_key")}
        elif entry.action in ("user.disable", "user.enable") and p.get("user") in state:
            state[p["user"]]["disabled"] = entry.action == "user.disable"
        elif entry.action == "user.password" and p.get("user") in state:
            state[p["user"]]["public_key"] = p.get("public_key")
        elif entry.action == "user.role" and p.get("user") in state:
            state[p["user"]]["role"] = p.get("new")
        elif entry.action == "policy.set" and p.get("policy") == "four_eyes":
            four_eyes = p.get("new")
    for u in conn.execute(select(db.users).order_by(db.users.c.id)):
        want = state.pop(u.name, None)
        if want is None:
            bad(None, f"user '{u.name}' was never added through the trail (inserted by hand)")
            continue
        have = {"full_name": u.full_name, "role": u.role, "disabled": bool(u.disabled), "public_key": u.public_key}
        diff = [k for k in have if have[k] != want[k]]
        if diff:
            bad(None, f"user '{u.name}' does not match the trail ({', '.join(diff)} altered by hand)")
    for name in state:
        bad(None, f"user '{name}' is in the trail but missing from the users table (deleted by hand)")
    meta_fe = conn.execute(select(db.meta.c.value).where(db.meta.c.key == "policy.four_eyes")).scalar() or "on"
    if meta_fe != four_eyes:
        bad(None, f"policy four_eyes is '{meta_fe}' but the trail last set it to '{four_eyes}' (altered by hand)")

    problems.sort(key=lambda t: t[0])
    return VerifyReport(n_entries, n_sigs, head_id, head_hash, problems)


# --- approval validity (for training and the window) -----------------------------------------------------------


def check_decision_signature(d: Any, entry_payload: dict[str, Any], project_id: str, history: dict,
                             hash_of: Any) -> str | None:
    """Why decision row `d`'s signature is not valid, or None. A decision signed away in a review bundle and merged
    by `hitl bundle import` carries an "away" record in its audit entry (see `bundle.check_merged_signature`)."""
    from . import identity

    if isinstance(entry_payload.get("away"), dict):
        from .bundle import check_merged_signature

        return check_merged_signature(d, entry_payload["away"], project_id, history)
    return identity.check_signed_decision(d, project_id, history, hash_of)


def approval_check(conn: Connection, batch: Any, _history: dict | None = None) -> tuple[str, str]:
    """('valid'|'invalid'|'none', reason) for a batch id or BatchInfo.

    valid: the batch is approved, by a signed decision whose signature verifies, and its data (content hash,
    recomputed from the current overrides) is exactly what was approved. invalid: it claims to be approved but one
    of those fails (e.g. data changed after approval). none: it is not approved.
    """
    from . import identity
    from .batches import current_overrides

    batch_id = batch if isinstance(batch, int) else batch.id
    b = conn.execute(select(db.batches).where(db.batches.c.id == batch_id)).first()
    dc = db.decisions.c
    d = None if b is None else conn.execute(
        select(db.decisions).where(and_(dc.batch_id == batch_id, dc.action.in_(_APPROVAL_ACTIONS)))
        .order_by(dc.id.desc()).limit(1)).first()

    def hash_of(i: int) -> str | None:
        return conn.execute(select(db.audit.c.hash).where(db.audit.c.id == i)).scalar()

    return _approval_of(
        batch_id, b, d, lambda: current_overrides(conn, batch_id),
        lambda: conn.execute(select(db.meta.c.value).where(db.meta.c.key == "project_id")).scalar() or "",
        lambda: _history if _history is not None else identity.key_history(conn),
        lambda: conn.execute(select(db.audit.c.payload).where(db.audit.c.id == d.audit_id)).scalar(), hash_of)


_APPROVAL_ACTIONS = ("approve", "reject", "reopen")


def _approval_of(batch_id: int, b: Any, d: Any, overrides: Any, project_id: Any, history: Any, entry_payload: Any,
                 hash_of: Any) -> tuple[str, str]:
    """The approval verdict of batch row `b` whose latest approve/reject/reopen decision is `d` (the callables
    fetch what only an approved batch needs): shared by `approval_check` (one batch) and `approval_states`."""
    from .batches import batch_content_hash

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
    why = check_decision_signature(d, p, project_id(), history(), hash_of)
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
    from . import identity

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
        for d in conn.execute(select(D).where(and_(D.c.batch_id.in_(part), D.c.action.in_(_APPROVAL_ACTIONS)))
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
