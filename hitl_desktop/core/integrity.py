"""Whole-project verification: the audit chain, every signature, and the tables cross-checked against the trail.

`verify_project` (what `hitl audit DIR verify` runs) checks that edits, overrides, batches, decisions, models,
users, policy and sources agree with the audit entries that recorded them (both ways), and that the originals files
still have the sha256 recorded at import. `verify_conn` is the same check on one connection (a bundle's trail).

Layer: above `audit` (the chain), `identity` (signatures), `sources` and `batches` (content keys); `bundle` and the
window and CLI call it.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy import select
from sqlalchemy.engine import Connection

from . import audit, db, identity
from .batches import batch_content_hash
from .sources import base_key


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


BIG = 1 << 62


class TrailEntry(NamedTuple):
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
            report.problems.extend((BIG, msg) for msg in check_data_files(project.data_dir, files))
    return report


def check_data_files(data_dir: Any, files: list[Any]) -> list[str]:
    """The originals files under data/ must still be the bytes whose sha256 the import recorded (and chained)."""
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
    problems: list[tuple[int, str]] = []

    def bad(pos: int | None, msg: str) -> None:
        problems.append((BIG if pos is None else pos, msg))

    # 1. the chain
    hashes: list[str] = [audit.GENESIS]
    cells: dict[int, Any] = {}
    decisions_e: dict[int, Any] = {}
    users_e: list[Any] = []
    sources_e: dict[str, Any] = {}
    prev = audit.GENESIS
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
        if audit.entry_hash(rid, ts, user, action, target, body, prev_hash) != h:
            bad(rid, f"audit entry {rid} ({action} by {user}) was altered: its hash does not match its content")
        prev = h
        hashes.append(h)
        expected_id += 1
        if action.startswith("cell."):
            cells[rid] = TrailEntry(rid, ts, user, action, target, body)
        elif action.startswith(("batch.", "model.")):
            decisions_e[rid] = TrailEntry(rid, ts, user, action, target, body)
        elif action in ("project.init", "policy.set") or action.startswith("user."):
            users_e.append(TrailEntry(rid, ts, user, action, target, body))
        elif action == "source.import":
            sources_e[target] = TrailEntry(rid, ts, user, action, target, body)
    n_entries = expected_id - 1
    head_id, head_hash = n_entries, hashes[-1] if n_entries else audit.GENESIS

    def hash_of(i: int) -> str | None:
        return hashes[i] if 0 < i < len(hashes) else None

    def payload(r: TrailEntry) -> dict[str, Any]:
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
            why = identity.check_decision_signature(d, p, project_id, history, hash_of)
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


__all__ = ["BIG", "TrailEntry", "VerifyReport", "check_data_files", "verify_conn", "verify_project"]
