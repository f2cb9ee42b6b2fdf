"""Offline review bundles: take batches to another workstation, review there, merge the work back safely.

A bundle (`NAME.hitlreview`) is a small hitl project in ONE SQLite file (see docs/offline.md):

* the same schema (same Alembic migrations), so `Project.open(FILE)`, every `hitl COMMAND FILE ...` and the window
  work on it unchanged: edits, flag dismissals, suggestions, signed decisions, its own chained audit trail;
* `bundle_data`: the Arrow originals of the exported batches only (one blob per source, `seqs` maps back);
* `bundle_manifest`: what was exported (home project id, batches with their base revision and content hash, flag
  states, blob hashes, users' public keys, reviewer and role, the home audit entry recording the export and the
  bundle's own audit head when it was sealed), signed with the exporter's Ed25519 key.

Everything in the bundle's audit trail after the seal is "work done away". `plan_import` checks the bundle (refusing
it with a one-line reason, the home project unchanged) and lists what would merge and what conflicts;
`apply_import` merges it into the home project in one transaction: edits, flag changes and decisions keep their
authors, times and signatures and are appended to the home audit trail, each entry marked with the bundle id and
the away audit id (which makes re-importing a no-op). A decision signed away carries the away chain head it was
bound to; `integrity.verify_conn` checks it with `identity.check_merged_signature`.

Qt-free. The window calls `export`, `plan_import`, `apply_import`; the CLI is `hitl bundle ...`.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import pyarrow as pa
from sqlalchemy import and_, func, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DatabaseError

from . import approvals, audit, db, identity, integrity
from .batches import batch_content_hash, current_overrides
from .errors import HitlError, NotFound, PermissionRefused
from .project import SCHEMA_HEAD, Project, run_migrations
from .sources import get_source
from .filewrite import fsync_dir
from .identity import check_merged_signature  # re-exported: it moved to identity
from .util import canonical_json, os_user, utc_now

SUFFIX = ".hitlreview"
FORMAT = "hitlreview"
VERSION = 1
TAKES = ("home", "away")
#: Actions that may not happen away: identity and policy are managed at home (a bundle doing them is refused).
_FORBIDDEN_AWAY = ("user.add", "user.role", "user.disable", "user.enable", "policy.set", "source.import",
                   "bundle.export", "bundle.import", "bundle.resolve")
_DECIDED = ("approve", "reject", "reopen")

_DDL = (
    "CREATE TABLE bundle_data (name TEXT PRIMARY KEY, seqs TEXT NOT NULL, total INTEGER NOT NULL, "
    "sha256 TEXT NOT NULL, data BLOB NOT NULL)",
    "CREATE TABLE bundle_manifest (id INTEGER PRIMARY KEY CHECK (id = 1), manifest TEXT NOT NULL, "
    "signature TEXT NOT NULL)",
)


class BundleRefused(HitlError):
    """A bundle that cannot be exported or imported; the message is one line and nothing was changed."""


# --- results ---------------------------------------------------------------------------------------------------


@dataclass
class ExportResult:
    bundle_id: str
    path: str
    batches: list[int]
    to: str
    role: str
    edits: int
    flags: int
    size: int

    def to_json(self) -> dict[str, Any]:
        return {"bundle": self.bundle_id, "path": self.path, "batches": self.batches, "to": self.to,
                "role": self.role, "edits": self.edits, "flags": self.flags, "bytes": self.size}


@dataclass
class Conflict:
    """One thing changed both at home (since the export) and away. `take` it from "home" or "away".

    kind "cell": one cell edited on both sides to different values (home/away/base are the values, None = missing).
    kind "batch": a decision on one side while the other side changed the batch; resolving it takes or discards
    everything done away to that batch (its cell and flag conflicts included).
    kind "flag": one flag resolved differently on both sides (home/away/base are statuses).
    """

    id: str
    kind: str
    batch: int
    home: str | None
    away: str | None
    base: str | None = None
    row: int | None = None
    column: str | None = None
    flag: int | None = None
    home_detail: str = ""
    away_detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "batch": self.batch, "row": self.row, "column": self.column,
                "flag": self.flag, "home": self.home, "away": self.away, "base": self.base,
                "home_detail": self.home_detail, "away_detail": self.away_detail}

    def describe(self) -> str:
        show = lambda v: "(missing)" if v is None else repr(v)  # noqa: E731
        if self.kind == "cell":
            where = f"batch {self.batch} row {self.row} '{self.column}'"
            return (f"{where}: home {show(self.home)} ({self.home_detail}) vs away {show(self.away)} "
                    f"({self.away_detail}); was {show(self.base)}")
        if self.kind == "flag":
            return (f"flag {self.flag} (batch {self.batch}): home {self.home} ({self.home_detail}) vs away "
                    f"{self.away} ({self.away_detail})")
        return f"batch {self.batch}: home {self.home_detail}; away {self.away_detail}"


@dataclass
class ImportPlan:
    """What `apply_import` would do now. `conflicts` are the ones not resolved yet."""

    bundle_id: str
    project_name: str
    exported_by: str
    exported_at: str
    to: str
    batches: list[int]
    edits: int
    decisions: int
    flags: int
    conflicts: list[Conflict] = field(default_factory=list)
    resolved: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def nothing_new(self) -> bool:
        return not (self.edits or self.decisions or self.flags or self.conflicts)

    def to_json(self) -> dict[str, Any]:
        return {"bundle": self.bundle_id, "project": self.project_name, "exported_by": self.exported_by,
                "exported_at": self.exported_at, "to": self.to, "batches": self.batches,
                "to_merge": {"edits": self.edits, "decisions": self.decisions, "flags": self.flags},
                "conflicts": [c.to_json() for c in self.conflicts], "resolved": self.resolved,
                "nothing_new": self.nothing_new, "notes": self.notes}


@dataclass
class ImportResult:
    """What `apply_import` changed (`changed_batches` for a window to reload) and what is still pending."""

    bundle_id: str
    edits: int
    decisions: int
    flags: int
    resolved: dict[str, str]
    pending: list[Conflict]
    changed_batches: list[int]
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def nothing_new(self) -> bool:
        return not (self.edits or self.decisions or self.flags or self.resolved or self.changed_batches)

    def to_json(self) -> dict[str, Any]:
        return {"bundle": self.bundle_id, "merged": {"edits": self.edits, "decisions": self.decisions,
                                                     "flags": self.flags},
                "resolved": self.resolved, "pending": [c.to_json() for c in self.pending],
                "changed_batches": self.changed_batches, "nothing_new": self.nothing_new,
                "warnings": self.warnings, "notes": self.notes}


# --- small helpers ---------------------------------------------------------------------------------------------


class _Chain:
    """Appends audit entries in memory (same hashes as `audit.append`), inserted in one executemany by `flush`."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.id, self.hash = audit.head(conn)
        self.rows: list[dict[str, Any]] = []

    def add(self, user: str, action: str, target: str | None, payload: dict[str, Any], ts: str) -> int:
        self.id += 1
        body = canonical_json(payload)
        h = audit.entry_hash(self.id, ts, user, action, target, body, self.hash)
        self.rows.append(dict(id=self.id, ts=ts, user=user, action=action, target=target, payload=body,
                              prev_hash=self.hash, hash=h))
        self.hash = h
        return self.id

    def flush(self) -> None:
        if self.rows:
            self.conn.execute(db.audit.insert(), self.rows)
            self.rows = []


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def _rowdict(r: Any) -> dict[str, Any]:
    return dict(r._mapping)


def _flag_state(r: Any) -> list[Any]:
    return [r.status, r.resolved_by, r.resolved_at]


def _resolving_edit(r: Any) -> int | None:
    try:
        obj = json.loads(r.resolution) if r.resolution else None
    except ValueError:
        return None
    return obj.get("edit") if isinstance(obj, dict) else None


# --- export ----------------------------------------------------------------------------------------------------


def export(project: Project, batch_ids: Iterable[int], to_user: str | None, out_path: str | os.PathLike,
           user: str, *, password: str | None = None, session: identity.Session | None = None,
           force: bool = False) -> ExportResult:
    """Write the batches to a new review bundle for `to_user` (default: `user`) and mark them out for review.

    The exporter signs the bundle's manifest: pass their `password` (or an authenticated `session`). Only queued or
    in-review batches travel; a batch already out for review needs `force`. One home transaction: the export is
    recorded in the home audit trail and the file appears only if it commits.
    """
    if project.is_bundle:
        raise BundleRefused("this is a review bundle: export batches from the home project")
    ids = sorted({int(b) for b in batch_ids})
    if not ids:
        raise BundleRefused("choose at least one batch to export (--batch ID)")
    out = Path(out_path).expanduser().absolute()
    if out.exists():
        raise BundleRefused(f"{out} already exists: choose a new file name")
    if not out.parent.is_dir():
        raise BundleRefused(f"{out.parent} is not a folder")
    identity.authorize(project, user, "export")
    if session is None:
        if password is None:
            raise PermissionRefused("exporting a bundle signs it: it needs the exporter's password")
        session = identity.authenticate(project, user, password)
    if session.user != user:
        raise PermissionRefused(f"{session.user} cannot sign a bundle for {user}")
    to_user = to_user or user
    tmp = out.with_name(f".{out.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    renamed = False
    try:
        with project.write() as home:
            res = _export_tx(project, home, ids, to_user, out, tmp, user, session, force)
            os.replace(tmp, out)
            renamed = True
            fsync_dir(str(out.parent))
        return res
    except BaseException:
        # nothing half-done: no temp file, and no bundle the home project has no record of
        for p in ([tmp, out] if renamed else [tmp]):
            try:
                p.unlink()
            except OSError:
                pass
        raise


def _export_tx(project: Project, home: Connection, ids: list[int], to_user: str, out: Path, tmp: Path, user: str,
               session: identity.Session, force: bool) -> ExportResult:
    b = db.batches.c
    rows = {r.id: r for r in home.execute(select(db.batches).where(b.id.in_(ids)))}
    for bid in ids:
        r = rows.get(bid)
        if r is None:
            raise NotFound(f"no batch {bid} in this project: list them with `hitl batches DIR`")
        if r.status not in ("queued", "in_review"):
            raise BundleRefused(f"batch {bid} is {r.status}: only queued or in-review batches go out for review "
                                f"(reopen it first)")
        if r.out_for_review and not force:
            raise BundleRefused(f"batch {bid} is already out for review in bundle {r.out_for_review}: import that "
                                f"bundle first, or export again with --force")
    reviewer = home.execute(select(db.users).where(db.users.c.name == to_user)).first()
    if reviewer is None:
        raise NotFound(f"no user '{to_user}' in this project (see `hitl users DIR list`)")
    if reviewer.disabled:
        raise BundleRefused(f"user '{to_user}' is disabled")
    if reviewer.pw_hash is None or reviewer.private_key_enc is None:
        raise BundleRefused(f"user '{to_user}' has no password yet, so could not sign in the bundle: set one first")
    now = utc_now()
    bundle_id = str(uuid.uuid4())
    meta = {r.key: r.value for r in home.execute(select(db.meta))}
    users = home.execute(select(db.users).order_by(db.users.c.id)).all()
    src_ids = sorted({rows[i].source_id for i in ids})
    sources = home.execute(select(db.sources).where(db.sources.c.id.in_(src_ids)).order_by(db.sources.c.id)).all()
    e = db.edits.c
    edits = home.execute(select(db.edits, db.audit.c.payload.label("entry"))
                         .join(db.audit, db.audit.c.id == e.audit_id)
                         .where(e.batch_id.in_(ids)).order_by(e.id)).all()
    overrides = home.execute(select(db.overrides).where(db.overrides.c.batch_id.in_(ids))).all()
    flags = home.execute(select(db.flags).where(db.flags.c.batch_id.in_(ids)).order_by(db.flags.c.id)).all()
    rules = home.execute(select(db.rules).order_by(db.rules.c.id)).all()
    hwm = {"edit": home.execute(select(func.coalesce(func.max(e.id), 0))).scalar_one(),
           "decision": home.execute(select(func.coalesce(func.max(db.decisions.c.id), 0))).scalar_one()}

    # The home side: record the export, mark the batches (a change: their revision moves on).
    export_id = audit.append(home, user, "bundle.export", f"bundle:{bundle_id}", {
        "bundle": bundle_id, "batches": ids, "to": to_user, "role": reviewer.role, "file": out.name,
        "exported_by": user}, ts=now)
    home.execute(db.batches.update().where(b.id.in_(ids)).values(
        out_for_review=bundle_id, revision=b.revision + 1, updated_at=now))
    export_hash = home.execute(select(db.audit.c.hash).where(db.audit.c.id == export_id)).scalar_one()
    base_batches = {r.id: r for r in home.execute(select(db.batches).where(b.id.in_(ids)))}

    # The bundle side.
    engine = db.make_engine(f"sqlite:///{tmp}", journal_mode="DELETE", synchronous="OFF")
    try:
        with db.write_tx(engine) as bc:
            run_migrations(bc)
            for ddl in _DDL:
                bc.exec_driver_sql(ddl)
            chain = _Chain(bc)
            chain.add(user, "bundle.init", f"bundle:{bundle_id}", {
                "bundle": bundle_id, "project": meta.get("project_id"), "name": meta.get("name"), "to": to_user,
                "batches": ids, "exported_by": user, "export_entry": export_id}, ts=now)
            for u in users:
                chain.add(user, "user.add", f"user:{u.name}", {"user": u.name, "full_name": u.full_name,
                                                                "role": u.role, "public_key": u.public_key,
                                                                "copied": True}, ts=now)
                if u.disabled:
                    chain.add(user, "user.disable", f"user:{u.name}", {"user": u.name, "copied": True}, ts=now)
            if (meta.get("policy.four_eyes") or "on") != "on":
                chain.add(user, "policy.set", "policy:four_eyes", {"policy": "four_eyes", "old": "on", "new": "off",
                                                                   "copied": True}, ts=now)
            blobs: dict[str, dict[str, Any]] = {}
            for s in sources:
                seqs = sorted(base_batches[i].seq for i in ids if base_batches[i].source_id == s.id)
                reader = project.reader(s.data_file)
                sink = pa.BufferOutputStream()
                with pa.ipc.new_file(sink, reader.schema) as w:
                    for seq in seqs:
                        w.write_batch(reader.get_batch(seq))
                data = sink.getvalue().to_pybytes()
                sha = _sha(data)
                bc.exec_driver_sql("INSERT INTO bundle_data (name, seqs, total, sha256, data) VALUES (?, ?, ?, ?, ?)",
                                   (s.data_file, json.dumps(seqs), reader.num_record_batches, sha, data))
                blobs[s.data_file] = {"sha256": sha, "size": len(data), "seqs": seqs}
                chain.add(s.imported_by, "source.import", f"source:{s.id}", {
                    "path": s.path, "sha256": s.sha256, "data_sha256": s.data_sha256, "rows": s.row_count,
                    "columns": json.loads(s.schema_json).get("columns"), "copied": True}, ts=s.imported_at)
            edit_rows = []
            for r in edits:
                aid = chain.add(r.user, f"cell.{r.kind}", f"batch:{r.batch_id}", json.loads(r.entry), ts=r.ts)
                d = _rowdict(r)
                d.pop("entry")
                d["audit_id"] = aid
                edit_rows.append(d)
            chain.flush()
            # only the reviewer can log in and sign away: the others travel as names, roles and public keys
            secret = ("pw_hash", "kdf", "private_key_enc")
            bc.execute(db.users.insert(), [{
                **_rowdict(u), "failed_logins": 0, "locked_until": None,
                **{k: (getattr(u, k) if u.name == to_user else None) for k in secret}} for u in users])
            bc.execute(db.meta.insert(), [{"key": k, "value": v} for k, v in meta.items()]
                       + [{"key": "bundle_id", "value": bundle_id}])
            bc.execute(db.sources.insert(), [_rowdict(s) for s in sources])
            bc.execute(db.batches.insert(), [{**_rowdict(base_batches[i]), "out_for_review": None} for i in ids])
            if edit_rows:
                bc.execute(db.edits.insert(), edit_rows)
            if overrides:
                bc.execute(db.overrides.insert(), [_rowdict(o) for o in overrides])
            if flags:
                bc.execute(db.flags.insert(), [_rowdict(f) for f in flags])
            if rules:
                bc.execute(db.rules.insert(), [_rowdict(r) for r in rules])
            seal_id, seal_hash = audit.head(bc)
            manifest = {
                "format": FORMAT, "version": VERSION, "schema": SCHEMA_HEAD, "bundle": bundle_id,
                "project": meta.get("project_id"), "project_name": meta.get("name"),
                "exported_by": user, "exported_at": now, "to": to_user, "role": reviewer.role,
                "export_entry": {"id": export_id, "hash": export_hash}, "hwm": hwm,
                "seal": {"id": seal_id, "hash": seal_hash},
                "batches": [{"id": i, "source": base_batches[i].source_id, "seq": base_batches[i].seq,
                             "start_row": base_batches[i].start_row, "rows": base_batches[i].n_rows,
                             "row_id_start": base_batches[i].row_id_start, "base_key": base_batches[i].base_key,
                             "content_hash": base_batches[i].content_hash, "revision": base_batches[i].revision,
                             "status": base_batches[i].status, "assignee": base_batches[i].assignee} for i in ids],
                "flags": {str(f.id): _flag_state(f) for f in flags},
                "blobs": blobs,
                "keys": {u.name: u.public_key for u in users if u.public_key},
                "key": identity.key_fingerprint(session.public_key),
            }
            text = canonical_json(manifest)
            sig = _b64(session.private_key.sign(text.encode("utf-8")))
            bc.exec_driver_sql("INSERT INTO bundle_manifest (id, manifest, signature) VALUES (1, ?, ?)", (text, sig))
    finally:
        engine.dispose()
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    return ExportResult(bundle_id, str(out), ids, to_user, reviewer.role, len(edits), len(flags),
                        tmp.stat().st_size)


# --- reading a bundle ------------------------------------------------------------------------------------------


@dataclass
class _Bundle:
    path: Path
    engine: Any
    manifest: dict[str, Any]
    text: str
    signature: str

    def close(self) -> None:
        self.engine.dispose()


def _open_bundle(path: str | os.PathLike) -> _Bundle:
    p = Path(path).expanduser().absolute()
    if not p.is_file():
        raise BundleRefused(f"no bundle file at {p}")
    with open(p, "rb") as fh:
        if fh.read(16) != b"SQLite format 3\x00":
            raise BundleRefused(f"{p.name} is not a review bundle (not a hitlreview file)")
    engine = db.make_engine(f"sqlite:///{p}", read_only=True)
    try:
        with engine.connect() as c:
            c.exec_driver_sql("PRAGMA trusted_schema=OFF")
            if not (c.dialect.has_table(c, "bundle_manifest") and c.dialect.has_table(c, "bundle_data")):
                raise BundleRefused(f"{p.name} is not a review bundle (no manifest)")
            row = c.exec_driver_sql("SELECT manifest, signature FROM bundle_manifest WHERE id = 1").first()
        if row is None:
            raise BundleRefused(f"{p.name} is not a review bundle (empty manifest)")
        try:
            manifest = json.loads(row.manifest)
        except ValueError:
            raise BundleRefused(f"{p.name}: the bundle's manifest is unreadable (damaged or altered)") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise BundleRefused(f"{p.name} is not a review bundle (unknown manifest)")
        if manifest.get("version") != VERSION:
            raise BundleRefused(f"{p.name} was made by another release of hitl-desktop (bundle version "
                                f"{manifest.get('version')}); use the release that made it")
        return _Bundle(p, engine, manifest, row.manifest, row.signature)
    except DatabaseError:
        engine.dispose()
        raise BundleRefused(f"{p.name} is not a review bundle (damaged or not a database)") from None
    except BaseException:
        engine.dispose()
        raise


def bundle_info(path: str | os.PathLike) -> dict[str, Any]:
    """The manifest summary of a bundle (no checks against a home project)."""
    b = _open_bundle(path)
    try:
        m = b.manifest
        return {"bundle": m["bundle"], "project": m.get("project"), "project_name": m.get("project_name"),
                "exported_by": m.get("exported_by"), "exported_at": m.get("exported_at"), "to": m.get("to"),
                "role": m.get("role"), "batches": [x["id"] for x in m.get("batches", [])]}
    finally:
        b.close()


def _check_bundle(home: Connection, b: _Bundle, bconn: Connection, home_pid: str) -> dict[str, Any]:
    """Every refusal of point 4. Returns the home key history. Raises BundleRefused (one line)."""
    m = b.manifest
    name = b.path.name
    try:
        if m["project"] != home_pid:
            raise BundleRefused(f"{name} comes from another project ({m.get('project_name')!r}, id "
                                f"{str(m['project'])[:8]}…): a bundle can only be imported into the project it "
                                f"was exported from")
        exporter, export_entry, seal = m["exported_by"], m["export_entry"], m["seal"]
        int(export_entry["id"]), int(seal["id"])
    except (KeyError, TypeError, ValueError):
        raise BundleRefused(f"{name}: the bundle's manifest is incomplete (damaged or altered)") from None
    history = identity.key_history(home)
    home_users = {r.name for r in home.execute(select(db.users.c.name))}
    key = identity.key_at(history, exporter, export_entry["id"]) if exporter in home_users else None
    if key is None:
        raise BundleRefused(f"{name} is signed by '{exporter}', who is not a user of this project (or had no "
                            f"signing key at the export): refused")
    if m.get("key") != identity.key_fingerprint(key) or not identity.verify_signature(key, b.text, b.signature):
        raise BundleRefused(f"{name} fails its signature check: the manifest was altered after export, or "
                            f"signed with a key this project does not know for '{exporter}'")
    entry = home.execute(select(db.audit).where(db.audit.c.id == export_entry["id"])).first()
    if entry is None or entry.action != "bundle.export" or entry.hash != export_entry.get("hash"):
        raise BundleRefused(f"{name}: this project has no record of exporting bundle {m['bundle'][:8]}… (it was "
                            f"exported from a copy of this project, or this project's history was rewritten)")
    # blobs
    want = m.get("blobs") or {}
    have = {r.name: r for r in bconn.exec_driver_sql("SELECT name, sha256, length(data) AS size FROM bundle_data")}
    if set(have) != set(want):
        raise BundleRefused(f"{name} fails its hash check: its data files differ from the manifest")
    for n, w in want.items():
        if have[n].size != w.get("size"):
            raise BundleRefused(f"{name} fails its hash check: data {n} has {have[n].size} bytes, the manifest "
                                f"says {w.get('size')}")
        data = bconn.exec_driver_sql("SELECT data FROM bundle_data WHERE name = ?", (n,)).scalar_one()
        if _sha(data) != w.get("sha256"):
            raise BundleRefused(f"{name} fails its hash check: data {n} was altered after export")
    # the bundle's own trail: sealed prefix, then everything checked like a project
    sealed = bconn.execute(select(db.audit.c.hash).where(db.audit.c.id == seal["id"])).scalar()
    if sealed != seal.get("hash"):
        raise BundleRefused(f"{name} fails its hash check: the records exported with it were altered")
    rep = integrity.verify_conn(bconn)
    if not rep.ok:
        raise BundleRefused(f"{name} fails its hash check: {rep.problems[0][1]}")
    bb = {r.id: r for r in bconn.execute(select(db.batches))}
    if set(bb) != {x["id"] for x in m["batches"]}:
        raise BundleRefused(f"{name} fails its hash check: its batches differ from the manifest")
    for x in m["batches"]:
        r = bb[x["id"]]
        if (r.source_id, r.seq, r.start_row, r.n_rows, r.row_id_start, r.base_key) != (
                x["source"], x["seq"], x["start_row"], x["rows"], x["row_id_start"], x["base_key"]):
            raise BundleRefused(f"{name} fails its hash check: batch {x['id']} no longer matches the manifest")
    # work done away: by people known at home, with the keys home knows, no identity or policy changes
    bhist = identity.key_history(bconn)
    for r in bconn.execute(select(db.audit.c.id, db.audit.c.user, db.audit.c.action, db.audit.c.payload)
                           .where(db.audit.c.id > seal["id"]).order_by(db.audit.c.id)):
        if r.action.startswith("auth."):
            continue
        if r.user not in home_users:
            raise BundleRefused(f"{name} holds work by '{r.user}', who is not a user of this project: refused")
        if r.action in _FORBIDDEN_AWAY or (r.action.startswith("project.") and r.action != "project.upgrade"):
            raise BundleRefused(f"{name}: {r.action} by {r.user} was done away (users, policy and data are "
                                f"managed at home): refused")
        if r.action == "user.password":
            p = json.loads(r.payload)
            if identity.key_at(bhist, p.get("user"), r.id) != p.get("public_key"):
                raise BundleRefused(f"{name}: a new signing key for {p.get('user')} was made away: refused")
    for d in bconn.execute(select(db.decisions).where(db.decisions.c.audit_id > seal["id"])):
        if d.signature is None:
            continue
        if identity.key_at(bhist, d.user, d.audit_id) != identity.key_at(history, d.user, export_entry["id"]):
            raise BundleRefused(f"{name}: the {d.action} of batch {d.batch_id} is signed by '{d.user}' with a key "
                                f"this project does not know for them: refused")
    return history


# --- planning --------------------------------------------------------------------------------------------------


@dataclass
class _Item:
    """One piece of away work: an edit, a decision or a flag.* entry, in away audit order."""

    aid: int
    kind: str  # edit | decision | flag
    batch: int
    row: Any  # the bundle row (edits/decisions) or audit row (flag)
    entry: Any  # the bundle audit row


@dataclass
class _Plan:
    manifest: dict[str, Any]
    items: dict[int, list[_Item]]  # batch -> pending items
    flag_changes: dict[int, dict[int, Any]]  # batch -> {flag id: bundle flags row}
    conflicts: list[Conflict]
    resolved: dict[str, str]
    edit_map: dict[int, int]  # away edit id -> home edit id (merged before)
    home_flags: dict[int, Any]
    home_batches: dict[int, Any]
    bundle_batches: dict[int, Any]
    away_head: tuple[int, str]
    notes: list[str]


def _handled(home: Connection, bundle_id: str, since: int) -> tuple[set[int], dict[str, str], set[tuple], dict[int, int], set[int]]:
    """From the home trail: away audit ids already merged or discarded, resolved conflicts, discarded flag states,
    away edit id -> home audit id, and the home audit ids this bundle produced."""
    done: set[int] = set()
    resolved: dict[str, str] = {}
    flags_done: set[tuple] = set()
    edit_aids: dict[int, int] = {}
    own: set[int] = set()
    a = db.audit.c
    for r in home.execute(select(a.id, a.action, a.payload).where(and_(
            a.id > since, a.payload.like(f'%"bundle":"{bundle_id}"%')))):
        p = json.loads(r.payload)
        if p.get("bundle") != bundle_id:
            continue
        own.add(r.id)
        away = p.get("away")
        if isinstance(away, dict) and "audit_id" in away:
            done.add(int(away["audit_id"]))
            if away.get("edit") is not None:
                edit_aids[int(away["edit"])] = r.id
        if r.action == "bundle.resolve":
            resolved[p["conflict"]] = p["take"]
            done.update(int(x) for x in p.get("discarded", []))
            flags_done.update(tuple(x) for x in p.get("discarded_flags", []))
        if r.action == "bundle.flags":
            flags_done.update(tuple(x) for x in p.get("flags", []))
    return done, resolved, flags_done, edit_aids, own


def _plan(home: Connection, b: _Bundle, bconn: Connection) -> _Plan:
    m = b.manifest
    bundle_id = m["bundle"]
    ids = [x["id"] for x in m["batches"]]
    base = {x["id"]: x for x in m["batches"]}
    seal = m["seal"]["id"]
    export_id = m["export_entry"]["id"]
    done, resolved, flags_done, edit_aids, own = _handled(home, bundle_id, export_id)
    edit_map: dict[int, int] = {}
    if edit_aids:
        by_aid = {r.audit_id: r.id for r in home.execute(
            select(db.edits.c.id, db.edits.c.audit_id).where(db.edits.c.audit_id.in_(list(edit_aids.values()))))}
        edit_map = {k: by_aid[v] for k, v in edit_aids.items() if v in by_aid}

    entries = {r.id: r for r in bconn.execute(select(db.audit).where(db.audit.c.id > seal).order_by(db.audit.c.id))}
    away_head = audit.head(bconn)
    items: dict[int, list[_Item]] = {i: [] for i in ids}
    notes: list[str] = []
    for r in bconn.execute(select(db.edits).where(db.edits.c.audit_id > seal).order_by(db.edits.c.id)):
        if r.audit_id not in done:
            items[r.batch_id].append(_Item(r.audit_id, "edit", r.batch_id, r, entries[r.audit_id]))
    for r in bconn.execute(select(db.decisions).where(db.decisions.c.audit_id > seal).order_by(db.decisions.c.id)):
        if r.batch_id is None or r.batch_id not in items:
            continue
        if r.audit_id not in done:
            items[r.batch_id].append(_Item(r.audit_id, "decision", r.batch_id, r, entries[r.audit_id]))
    base_flags = {int(k): v for k, v in (m.get("flags") or {}).items()}
    new_flags = 0
    for e in entries.values():
        if e.action.startswith("flag.") and e.id not in done:
            p = json.loads(e.payload)
            if p.get("flag") in base_flags:
                batch = int(str(e.target).split(":", 1)[1]) if str(e.target).startswith("batch:") else None
                if batch in items:
                    items[batch].append(_Item(e.id, "flag", batch, p, e))
            else:
                new_flags += 1
    for lst in items.values():
        lst.sort(key=lambda it: it.aid)

    bflags = {r.id: r for r in bconn.execute(select(db.flags).where(db.flags.c.batch_id.in_(ids)))}
    home_flags = {r.id: r for r in home.execute(select(db.flags).where(db.flags.c.id.in_(list(base_flags))))}
    extra = len(set(bflags) - set(base_flags))
    if extra or new_flags:
        notes.append(f"{extra} flag(s) raised away are not merged: run the checks again at home")
    flag_changes: dict[int, dict[int, Any]] = {i: {} for i in ids}
    for fid, st in base_flags.items():
        r = bflags.get(fid)
        if r is None or fid not in home_flags:
            continue
        away = _flag_state(r)
        if away != st and _flag_state(home_flags[fid]) != away and (fid, r.status, r.resolved_at) not in flags_done:
            flag_changes[r.batch_id][fid] = r

    # what changed at home since the export (not counting what this bundle merged)
    hwm = m.get("hwm") or {}
    home_cells: dict[tuple[int, int, str], Any] = {}
    for r in home.execute(select(db.edits).where(and_(db.edits.c.batch_id.in_(ids), db.edits.c.id > hwm.get("edit", 0)))
                          .order_by(db.edits.c.id)):
        if r.audit_id not in own:
            home_cells[(r.batch_id, r.row_id, r.column)] = r
    home_dec: dict[int, list[Any]] = {}
    for r in home.execute(select(db.decisions).where(and_(db.decisions.c.batch_id.in_(ids),
                                                          db.decisions.c.id > hwm.get("decision", 0)))
                          .order_by(db.decisions.c.id)):
        if r.audit_id not in own:
            home_dec.setdefault(r.batch_id, []).append(r)
    home_ov = {(r.batch_id, r.row_id, r.column): r.value for r in home.execute(
        select(db.overrides).where(db.overrides.c.batch_id.in_(ids)))}
    home_batches = {r.id: r for r in home.execute(select(db.batches).where(db.batches.c.id.in_(ids)))}
    bundle_batches = {r.id: r for r in bconn.execute(select(db.batches))}

    conflicts: list[Conflict] = []
    for bid in ids:
        its = items[bid]
        fch = flag_changes[bid]
        changed_away = any(it.kind in ("edit", "decision") for it in its) or bool(fch)
        if not changed_away:
            continue
        hd = home_dec.get(bid, [])
        home_decided = [d for d in hd if d.action in _DECIDED]
        home_edits = [k for k in home_cells if k[0] == bid]
        away_decided = [it.row for it in its if it.kind == "decision" and it.row.action in _DECIDED]
        if home_decided or (away_decided and home_edits):
            cid = f"batch:{bid}"
            if cid in resolved:
                continue
            hb, ab = home_batches[bid], bundle_batches[bid]
            hdesc = (f"{hb.status}" + (f", {home_decided[-1].action} by {home_decided[-1].user} at "
                                       f"{home_decided[-1].ts[:19]}" if home_decided else "")
                     + (f", {len(home_edits)} cell(s) edited" if home_edits else ""))
            n_edits = sum(1 for it in its if it.kind == "edit")
            adesc = (f"{ab.status}" + (f", {away_decided[-1].action} by {away_decided[-1].user} at "
                                       f"{away_decided[-1].ts[:19]}" if away_decided else "")
                     + (f", {n_edits} edit(s)" if n_edits else "") + (f", {len(fch)} flag(s)" if fch else ""))
            conflicts.append(Conflict(cid, "batch", bid, hb.status, ab.status, base[bid]["status"],
                                      home_detail=hdesc, away_detail=adesc))
            continue
        cells: dict[tuple[int, int, str], list[Any]] = {}
        for it in its:
            if it.kind == "edit":
                cells.setdefault((bid, it.row.row_id, it.row.column), []).append(it.row)
        for key, eds in cells.items():
            h = home_cells.get(key)
            if h is None:
                continue
            original = json.loads(entries[eds[0].audit_id].payload).get("original")
            home_val = home_ov.get(key, original)
            away_val = eds[-1].new_value
            if home_val == away_val:
                continue
            cid = f"cell:{bid}:{key[1]}:{key[2]}"
            if cid in resolved:
                continue
            conflicts.append(Conflict(cid, "cell", bid, home_val, away_val, eds[0].old_value, row=key[1],
                                      column=key[2], home_detail=f"{h.user} at {h.ts[:19]}",
                                      away_detail=f"{eds[-1].user} at {eds[-1].ts[:19]}"))
        for fid, r in fch.items():
            hf = home_flags[fid]
            if _flag_state(hf) == base_flags[fid]:
                continue
            cid = f"flag:{fid}"
            if hf.status == r.status or cid in resolved:
                continue
            conflicts.append(Conflict(cid, "flag", bid, hf.status, r.status, base_flags[fid][0], flag=fid,
                                      home_detail=f"{hf.resolved_by or '-'} at {(hf.resolved_at or '-')[:19]}",
                                      away_detail=f"{r.resolved_by or '-'} at {(r.resolved_at or '-')[:19]}"))
    return _Plan(m, items, flag_changes, conflicts, resolved, edit_map, home_flags, home_batches, bundle_batches,
                 away_head, notes)


def _open_for_import(project: Project, path: str | os.PathLike) -> _Bundle:
    if project.is_bundle:
        raise BundleRefused("this is a review bundle: import bundles into the home project")
    return _open_bundle(path)


def plan_import(project: Project, path: str | os.PathLike) -> ImportPlan:
    """Check a bundle against the home project and list what would merge and what conflicts. Changes nothing.

    Raises BundleRefused (one line) for a bundle from another project, one failing its hash or signature checks,
    or one holding work by a user unknown at home.
    """
    b = _open_for_import(project, path)
    try:
        with project.read() as home, b.engine.connect() as bconn:
            bconn.exec_driver_sql("PRAGMA trusted_schema=OFF")
            _check_bundle(home, b, bconn, project.project_id)
            plan = _plan(home, b, bconn)
    finally:
        b.close()
    return _to_public_plan(plan, b.manifest)


def _to_public_plan(plan: _Plan, m: dict[str, Any]) -> ImportPlan:
    blocked = {c.batch for c in plan.conflicts if c.kind == "batch"}
    n = {"edit": 0, "decision": 0}
    for bid, its in plan.items.items():
        if bid in blocked:
            continue
        for it in its:
            if it.kind in n:
                n[it.kind] += 1
    nf = sum(len(v) for k, v in plan.flag_changes.items() if k not in blocked)
    return ImportPlan(m["bundle"], m.get("project_name") or "", m["exported_by"], m["exported_at"], m["to"],
                      [x["id"] for x in m["batches"]], n["edit"], n["decision"], nf, plan.conflicts,
                      plan.resolved, plan.notes)


# --- applying --------------------------------------------------------------------------------------------------


def apply_import(project: Project, path: str | os.PathLike, resolutions: dict[str, str] | None = None,
                 user: str | None = None) -> ImportResult:
    """Merge a bundle's away work into the home project (one transaction).

    `resolutions` maps conflict ids (from `plan_import`) to "home" or "away"; conflicts left out stay pending (what
    they hold is not merged; import again later to resolve them). Everything else is merged. Importing the same
    bundle again changes nothing.
    """
    resolutions = dict(resolutions or {})
    for cid, take in resolutions.items():
        if take not in TAKES:
            raise BundleRefused(f"resolve conflict {cid} with 'home' or 'away', not {take!r}")
    user = user or os_user()
    identity.authorize(project, user, "edit")
    b = _open_for_import(project, path)
    try:
        with project.write() as home, b.engine.connect() as bconn:
            bconn.exec_driver_sql("PRAGMA trusted_schema=OFF")
            _check_bundle(home, b, bconn, project.project_id)
            plan = _plan(home, b, bconn)
            known = {c.id for c in plan.conflicts}
            for cid, take in list(resolutions.items()):
                if cid in known:
                    continue
                if cid not in plan.resolved:
                    raise BundleRefused(f"no open conflict {cid} in this bundle (see `hitl bundle import DIR FILE "
                                        f"--dry-run`)")
                if plan.resolved[cid] != take:
                    was = "kept home" if plan.resolved[cid] == "home" else "took away"
                    raise BundleRefused(f"conflict {cid} was already resolved ({was}); nothing was changed")
                del resolutions[cid]
            res = _Merger(project, home, bconn, plan, resolutions, user, b.path.name).run()
    finally:
        b.close()
    return res


class _Merger:
    def __init__(self, project: Project, home: Connection, bconn: Connection, plan: _Plan,
                 resolutions: dict[str, str], user: str, file_name: str) -> None:
        self.project, self.home, self.bconn, self.plan = project, home, bconn, plan
        self.res = resolutions
        self.user = user
        self.file_name = file_name
        self.m = plan.manifest
        self.bundle_id = self.m["bundle"]
        self.chain = _Chain(home)
        self.now = utc_now()
        self.next_edit = home.execute(select(func.coalesce(func.max(db.edits.c.id), 0))).scalar_one() + 1
        self.next_dec = home.execute(select(func.coalesce(func.max(db.decisions.c.id), 0))).scalar_one() + 1
        self.edit_map = dict(plan.edit_map)
        self.edit_rows: list[dict[str, Any]] = []
        self.dec_rows: list[dict[str, Any]] = []
        self.cell_final: dict[tuple[int, int, str], tuple[str | None, str | None, int]] = {}
        self.flag_updates: dict[int, dict[str, Any]] = {}
        self.status_updates: dict[int, dict[str, Any]] = {}
        self.merged = {"edit": 0, "decision": 0, "flag": 0}
        self.resolved: dict[str, str] = {}
        self.changed: set[int] = set()
        self.pending: list[Conflict] = []
        self.warnings: list[str] = []

    # -- pieces --

    def _mark(self, payload: dict[str, Any], it: _Item, **away: Any) -> dict[str, Any]:
        return {**payload, "bundle": self.bundle_id, "away": {"audit_id": it.aid, **away}}

    def _merge_edit(self, it: _Item) -> None:
        e = it.row
        p = json.loads(it.entry.payload)
        undoes = e.undoes
        if undoes is not None:
            undoes = self.edit_map.get(undoes, undoes)  # an away edit merged, or a home edit copied (same id)
        p["undoes"] = undoes
        aid = self.chain.add(e.user, it.entry.action, it.entry.target, self._mark(p, it, edit=e.id), ts=e.ts)
        hid = self.next_edit
        self.next_edit += 1
        self.edit_map[e.id] = hid
        self.edit_rows.append(dict(id=hid, batch_id=e.batch_id, row_id=e.row_id, column=e.column,
                                   old_value=e.old_value, new_value=e.new_value, kind=e.kind, undoes=undoes,
                                   reason=e.reason, user=e.user, ts=e.ts, audit_id=aid))
        self.cell_final[(e.batch_id, e.row_id, e.column)] = (e.new_value, p.get("original"), hid)
        self.merged["edit"] += 1
        self.changed.add(e.batch_id)

    def _merge_decision(self, it: _Item) -> None:
        d = it.row
        p = json.loads(it.entry.payload)
        away = {"chain_head": {"id": it.aid - 1, "hash": it.entry.prev_hash},
                "export_entry": self.m["export_entry"]["id"]}
        aid = self.chain.add(d.user, it.entry.action, it.entry.target, self._mark(p, it, **away), ts=d.ts)
        self.dec_rows.append(dict(id=self.next_dec, batch_id=d.batch_id, model_id=None, action=d.action,
                                  user=d.user, full_name=d.full_name, ts=d.ts, meaning=d.meaning,
                                  comment=d.comment, content_hash=d.content_hash, signed_payload=d.signed_payload,
                                  signature=d.signature, audit_id=aid))
        self.next_dec += 1
        self.merged["decision"] += 1
        self.changed.add(d.batch_id)

    def _merge_flag_entry(self, it: _Item) -> None:
        self.chain.add(it.entry.user, it.entry.action, it.entry.target, self._mark(it.row, it), ts=it.entry.ts)

    def _flag_update(self, r: Any) -> bool:
        """Take the away state of flag `r`; False when it was resolved by an away edit that is not merged."""
        res = r.resolution
        if res:
            try:
                obj = json.loads(res)
            except ValueError:
                obj = None
            if isinstance(obj, dict) and obj.get("edit") is not None:
                e = obj["edit"]
                if e in self.edit_map:
                    obj["edit"] = self.edit_map[e]
                elif self._is_away_edit(e):
                    return False
                res = json.dumps(obj, sort_keys=True)
        self.flag_updates[r.id] = dict(status=r.status, resolved_by=r.resolved_by, resolved_at=r.resolved_at,
                                       resolution=res)
        self.merged["flag"] += 1
        self.changed.add(r.batch_id)
        return True

    def _is_away_edit(self, edit_id: int) -> bool:
        aid = self.bconn.execute(select(db.edits.c.audit_id).where(db.edits.c.id == edit_id)).scalar()
        return aid is not None and aid > self.m["seal"]["id"]

    def _resolve_entry(self, c: Conflict, take: str, discarded: list[int], discarded_flags: list[list[Any]]) -> None:
        self.chain.add(self.user, "bundle.resolve", f"batch:{c.batch}", {
            "bundle": self.bundle_id, "conflict": c.id, "take": take, "kind": c.kind, "home": c.home,
            "away": c.away, "home_detail": c.home_detail, "away_detail": c.away_detail,
            "discarded": discarded, "discarded_flags": discarded_flags}, ts=self.now)
        self.resolved[c.id] = take
        self.changed.add(c.batch)

    # -- per batch --

    def _batch(self, bid: int, conflicts: dict[str, Conflict]) -> None:
        its = self.plan.items[bid]
        fch = self.plan.flag_changes[bid]
        bc = conflicts.get(f"batch:{bid}")
        if bc is not None:
            take = self.res.get(bc.id)
            if take is None:
                self.pending.append(bc)
                return
            if take == "home":
                self._resolve_entry(bc, "home", [it.aid for it in its],
                                    [[f, r.status, r.resolved_at] for f, r in fch.items()])
                return
            hb, ab = self.plan.home_batches[bid], self.plan.bundle_batches[bid]
            if hb.status in ("approved", "rejected") and ab.status not in ("approved", "rejected"):
                raise BundleRefused(f"batch {bid} is {hb.status} at home: to take the work done away, reopen it at "
                                    f"home first (`hitl reopen DIR {bid}`), or keep home")
            self._resolve_entry(bc, "away", [], [])
            for it in its:
                self._merge_item(it)
            for r in fch.values():
                self._flag_update(r)
            self._take_status(bid, force=True)
            return
        held_cells: set[tuple[int, str]] = set()
        discard_for: dict[str, list[int]] = {}
        for c in conflicts.values():
            if c.kind != "cell":
                continue
            take = self.res.get(c.id)
            if take is None:
                self.pending.append(c)
                held_cells.add((c.row, c.column))
            elif take == "home":
                held_cells.add((c.row, c.column))
                discard_for[c.id] = [it.aid for it in its if it.kind == "edit"
                                     and (it.row.row_id, it.row.column) == (c.row, c.column)]
            else:
                self._resolve_entry(c, "away", [], [])
        held_flags: set[int] = set()
        for c in conflicts.values():
            if c.kind != "flag":
                continue
            take = self.res.get(c.id)
            if take is None:
                self.pending.append(c)
                held_flags.add(c.flag)
            elif take == "home":
                r = fch[c.flag]
                self._resolve_entry(c, "home", [it.aid for it in its if it.kind == "flag"
                                                and it.row.get("flag") == c.flag],
                                    [[c.flag, r.status, r.resolved_at]])
                held_flags.add(c.flag)
            else:
                self._resolve_entry(c, "away", [], [])
        for cid, aids in discard_for.items():
            c = conflicts[cid]
            away_edits = {it.row.id for it in its if it.aid in aids}
            gone = [f for f, r in fch.items() if _resolving_edit(r) in away_edits]
            held_flags.update(gone)
            self._resolve_entry(c, "home", aids, [[f, fch[f].status, fch[f].resolved_at] for f in gone])
        merged_decision = False
        for it in its:
            if it.kind == "edit" and (it.row.row_id, it.row.column) in held_cells:
                continue
            if it.kind == "flag" and it.row.get("flag") in held_flags:
                continue
            self._merge_item(it)
            merged_decision |= it.kind == "decision"
        for fid, r in fch.items():
            if fid in held_flags:
                continue
            hf = self.plan.home_flags[fid]
            if hf.status == r.status and _flag_state(hf) != (self.m.get("flags") or {}).get(str(fid)):
                # both sides resolved it the same way: keep home's record, remember it is settled
                self.chain.add(self.user, "bundle.flags", f"batch:{bid}", {
                    "bundle": self.bundle_id, "flags": [[fid, r.status, r.resolved_at]], "kept": "home"},
                    ts=self.now)
                continue
            self._flag_update(r)
        self._take_status(bid, force=merged_decision)

    def _merge_item(self, it: _Item) -> None:
        if it.kind == "edit":
            self._merge_edit(it)
        elif it.kind == "decision":
            self._merge_decision(it)
        else:
            self._merge_flag_entry(it)

    def _take_status(self, bid: int, force: bool) -> None:
        hb, ab = self.plan.home_batches[bid], self.plan.bundle_batches[bid]
        base = next(x for x in self.m["batches"] if x["id"] == bid)
        away = (ab.status, ab.assignee)
        if away == (hb.status, hb.assignee):
            return
        if force or ((hb.status, hb.assignee) == (base["status"], base["assignee"])
                     and away != (base["status"], base["assignee"])):
            self.status_updates.setdefault(bid, {}).update(status=ab.status, assignee=ab.assignee)
            self.changed.add(bid)

    # -- all --

    def run(self) -> ImportResult:
        by_batch: dict[int, dict[str, Conflict]] = {}
        for c in self.plan.conflicts:
            by_batch.setdefault(c.batch, {})[c.id] = c
        ids = [x["id"] for x in self.m["batches"]]
        for bid in ids:
            self._batch(bid, by_batch.get(bid, {}))
        home = self.home
        pending_batches = {c.batch for c in self.pending}
        clear = [bid for bid in ids if bid not in pending_batches
                 and self.plan.home_batches[bid].out_for_review == self.bundle_id]
        if not (self.chain.rows or clear):
            return ImportResult(self.bundle_id, 0, 0, 0, {}, self.pending, [], [], self.plan.notes)
        self.changed.update(clear)
        self.chain.add(self.user, "bundle.import", f"bundle:{self.bundle_id}", {
            "bundle": self.bundle_id, "file": self.file_name, "edits": self.merged["edit"],
            "decisions": self.merged["decision"], "flags": self.merged["flag"], "resolved": self.resolved,
            "pending": [c.id for c in self.pending], "returned": clear,
            "away_head": {"id": self.plan.away_head[0], "hash": self.plan.away_head[1]}}, ts=self.now)
        self.chain.flush()
        if self.edit_rows:
            home.execute(db.edits.insert(), self.edit_rows)
        o = db.overrides.c
        for (bid, row, col), (new, original, eid) in self.cell_final.items():
            where = and_(o.batch_id == bid, o.row_id == row, o.column == col)
            home.execute(db.overrides.delete().where(where))
            if new != original:
                home.execute(db.overrides.insert().values(batch_id=bid, row_id=row, column=col, value=new,
                                                          edit_id=eid))
        if self.dec_rows:
            home.execute(db.decisions.insert(), self.dec_rows)
        for fid, values in self.flag_updates.items():
            home.execute(db.flags.update().where(db.flags.c.id == fid).values(**values))
        for bid in sorted(self.changed):
            hb = self.plan.home_batches[bid]
            values: dict[str, Any] = dict(self.status_updates.get(bid, {}))
            values["content_hash"] = batch_content_hash(hb.base_key, current_overrides(home, bid))
            if bid in clear:
                values["out_for_review"] = None
            home.execute(db.batches.update().where(db.batches.c.id == bid).values(
                revision=db.batches.c.revision + 1, updated_at=self.now, **values))
        if self.dec_rows:
            for bid in sorted({d["batch_id"] for d in self.dec_rows}):
                state, why = approvals.approval_check(home, bid)
                if state == "invalid":
                    self.warnings.append(f"{why}: the approval made away does not cover what batch {bid} holds "
                                         f"at home now; re-approve it")
        return ImportResult(self.bundle_id, self.merged["edit"], self.merged["decision"], self.merged["flag"],
                            self.resolved, self.pending, sorted(self.changed), self.warnings, self.plan.notes)


__all__ = ["BundleRefused", "Conflict", "ExportResult", "ImportPlan", "ImportResult", "SUFFIX", "apply_import",
           "bundle_info", "check_merged_signature", "export", "plan_import"]
