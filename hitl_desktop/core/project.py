"""A project: one folder holding `hitl.db` (SQLite, WAL) and `data/` (immutable Arrow files of imported originals).

A review bundle (`OUT.hitlreview`, see `core/bundle.py` and docs/offline.md) is a project in one SQLite file: same
schema, its originals stored as blobs in `bundle_data`. `Project.open` opens either; `project.is_bundle` tells.

Transaction discipline for files beside the database: a data file is written under `data/tmp/`, fsynced, renamed
into `data/`, and only then referenced by a committed row. A crash before the commit leaves an unreferenced file,
which the next writable open deletes; a committed row always points at a complete file.
"""
from __future__ import annotations

import json
import os
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import pyarrow as pa
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DatabaseError, OperationalError

from . import audit, db, identity
from .errors import HitlError, NotAProject
from .util import os_user, utc_now

SCHEMA_HEAD = "0001"  # kept equal to the newest migration by a test
DATA_DIR = "data"
TMP_DIR = os.path.join(DATA_DIR, "tmp")


def _alembic_config(conn: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).with_name("migrations")))
    if conn is not None:
        cfg.attributes["connection"] = conn
    return cfg


def known_revisions() -> set[str]:
    script = ScriptDirectory.from_config(_alembic_config())
    return {rev.revision for rev in script.walk_revisions()}


def db_error_message(exc: Exception) -> str:
    """Turn a database failure into one line a person can act on."""
    text = str(getattr(exc, "orig", exc) or exc).lower()
    if "readonly" in text or "read-only" in text:
        return "the project is read-only (check the permissions of hitl.db and its folder); nothing was changed"
    if "disk is full" in text or "no space" in text:
        return "the disk is full: free some space and try again; nothing was changed"
    if "locked" in text or "busy" in text:
        return "the project is busy in another program: try again in a moment; nothing was changed"
    if "not a database" in text or "malformed" in text:
        return "hitl.db is damaged or not a database; restore it from a backup"
    return f"database error: {str(getattr(exc, 'orig', exc)).splitlines()[0][:160]}"


class Project:
    """An open project. Thread-safe for reads; writes are serialised by SQLite (`BEGIN IMMEDIATE`)."""

    def __init__(self, path: Path, engine, read_only: bool, is_bundle: bool = False) -> None:
        self.path = path
        self.engine = engine
        self.read_only = read_only
        self.is_bundle = is_bundle
        self._readers: dict[str, pa.ipc.RecordBatchFileReader] = {}
        self._readers_lock = threading.Lock()
        self._meta_cache: dict[str, str] = {}
        self._resources: dict[str, Any] = {}

    # --- opening ---------------------------------------------------------------------------------------------

    @property
    def db_path(self) -> Path:
        return self.path if self.is_bundle else self.path / db.DB_FILE

    @property
    def data_dir(self) -> Path:
        return self.path / DATA_DIR

    @classmethod
    def init(cls, path: str | os.PathLike, user: str | None = None, full_name: str | None = None,
             name: str | None = None, password: str | None = None) -> "Project":
        """Create a new project folder. The creator becomes its admin.

        `password` sets the admin's password and signing key (the CLI always passes one). None means "set later"
        with `identity.set_password` (convenient for tests that never sign).
        """
        p = Path(path).expanduser().absolute()
        if (p / db.DB_FILE).exists():
            raise HitlError(f"{p} is already a hitl project")
        if p.exists() and not p.is_dir():
            raise HitlError(f"{p} exists and is not a folder")
        if p.exists() and any(p.iterdir()):
            raise HitlError(f"{p} is not empty: choose a new or empty folder for the project")
        user = user or os_user()
        creds = identity.credential_columns(user, password) if password is not None else {}
        created_dir = not p.exists()
        try:
            p.mkdir(parents=True, exist_ok=True)
            (p / TMP_DIR).mkdir(parents=True, exist_ok=True)
            engine = db.make_engine(f"sqlite:///{p / db.DB_FILE}")
            with db.write_tx(engine) as conn:
                run_migrations(conn)
                now = utc_now()
                project_id = str(uuid.uuid4())
                for k, v in {
                    "project_id": project_id,
                    "name": name or p.name,
                    "created_at": now,
                    "created_by": user,
                    "policy.four_eyes": "on",
                    "settings.joblib_backend": "loky",
                }.items():
                    conn.execute(db.meta.insert().values(key=k, value=v))
                conn.execute(
                    db.users.insert().values(
                        name=user, full_name=full_name or user, role="admin", disabled=False, failed_logins=0,
                        created_at=now, created_by=user, **creds,
                    )
                )
                audit.append(conn, user, "project.init", f"project:{project_id}",
                             {"name": name or p.name, "admin": user, "full_name": full_name or user,
                              "schema": SCHEMA_HEAD}, ts=now)
                if creds:
                    audit.append(conn, user, "user.password", f"user:{user}",
                                 {"user": user, "public_key": creds["public_key"], "new_key": True}, ts=now)
        except (OSError, DatabaseError) as exc:
            _remove_partial_project(p, created_dir)
            if isinstance(exc, DatabaseError):
                raise HitlError(db_error_message(exc)) from None
            raise HitlError(f"could not create the project at {p}: {exc.strerror or exc}") from None
        except BaseException:
            _remove_partial_project(p, created_dir)
            raise
        return cls(p, engine, read_only=False)

    @classmethod
    def open(cls, path: str | os.PathLike, *, upgrade: bool = True) -> "Project":
        p = Path(path).expanduser().absolute()
        dbfile = p / db.DB_FILE
        is_bundle = p.is_file()
        if is_bundle:  # a review bundle: the file is the database
            dbfile = p
        if not p.exists():
            raise NotAProject(f"no project at {p}: create one with `hitl init {path}`")
        if not dbfile.is_file():
            raise NotAProject(f"{p} is not a hitl project (no {db.DB_FILE}); create one with `hitl init DIR`")
        read_only = db.is_read_only(str(dbfile)) or not os.access(dbfile.parent, os.W_OK)
        engine = db.make_engine(f"sqlite:///{dbfile}", read_only=read_only,
                                journal_mode="DELETE" if is_bundle else "WAL")
        try:
            with engine.connect() as conn:
                rev = MigrationContext.configure(conn).get_current_revision()
                has_meta = conn.dialect.has_table(conn, "meta")
                if is_bundle and not conn.dialect.has_table(conn, "bundle_data"):
                    has_meta = False
        except DatabaseError as exc:
            engine.dispose()
            raise NotAProject(f"{p} is not a hitl project: {db_error_message(exc)}") from None
        if rev is None or not has_meta:
            engine.dispose()
            raise NotAProject(f"{p} is not a hitl project (its database has no hitl schema)")
        if rev != SCHEMA_HEAD:
            if rev not in known_revisions():
                engine.dispose()
                raise NotAProject(
                    f"{p} was made by a newer release of hitl-desktop (schema {rev}); install the newer release to open it"
                )
            if read_only:
                engine.dispose()
                raise NotAProject(f"{p} needs a schema upgrade ({rev} -> {SCHEMA_HEAD}) but is read-only")
            if not upgrade:
                engine.dispose()
                raise NotAProject(f"{p} uses an older schema ({rev}); open it with upgrade enabled")
            try:
                with db.write_tx(engine) as conn:
                    run_migrations(conn)
                    audit.append(conn, os_user(), "project.upgrade", None, {"from": rev, "to": SCHEMA_HEAD})
            except DatabaseError as exc:
                engine.dispose()
                raise HitlError(db_error_message(exc)) from None
        project = cls(p, engine, read_only, is_bundle)
        if not read_only and not is_bundle:
            project._cleanup_orphans()
        return project

    def close(self) -> None:
        with self._readers_lock:
            self._readers.clear()
        with self._readers_lock:
            resources, self._resources = list(self._resources.values()), {}
        for res in resources:
            res.clear()
        self.engine.dispose()

    def resource(self, key: str, factory: Callable[[], Any]) -> Any:
        """An object kept while the project is open (made by `factory` on first use, e.g. the pipeline cache's
        memory-mapped tables); its `clear()` is called when the project closes. Higher layers keep their state
        here so the project needs to know nothing of them."""
        res = self._resources.get(key)
        if res is None:
            with self._readers_lock:
                res = self._resources.get(key)
                if res is None:
                    res = self._resources[key] = factory()
        return res

    def __enter__(self) -> "Project":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # --- transactions ----------------------------------------------------------------------------------------

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            with conn.begin():
                yield conn

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """One user action. Database failures become a one-line HitlError after rollback."""
        if self.read_only:
            raise HitlError("the project is read-only (check the permissions of hitl.db and its folder); nothing was changed")
        try:
            with db.write_tx(self.engine) as conn:
                yield conn
        except OperationalError as exc:
            raise HitlError(db_error_message(exc)) from None

    # --- meta / settings -------------------------------------------------------------------------------------

    def meta(self, key: str, default: str | None = None) -> str | None:
        if key in self._meta_cache:
            return self._meta_cache[key]
        with self.read() as conn:
            v = conn.execute(select(db.meta.c.value).where(db.meta.c.key == key)).scalar()
        if v is not None and key in ("project_id", "name", "created_at", "created_by"):
            self._meta_cache[key] = v
        return v if v is not None else default

    def set_meta(self, conn: Connection, key: str, value: str) -> None:
        if conn.execute(select(db.meta.c.key).where(db.meta.c.key == key)).first():
            conn.execute(db.meta.update().where(db.meta.c.key == key).values(value=value))
        else:
            conn.execute(db.meta.insert().values(key=key, value=value))
        self._meta_cache.pop(key, None)

    @property
    def project_id(self) -> str:
        return self.meta("project_id") or ""

    # --- data files ------------------------------------------------------------------------------------------

    def new_tmp_path(self, suffix: str) -> Path:
        if self.is_bundle:
            raise HitlError("a review bundle holds only the batches it was exported with: import data at home")
        tmp = self.path / TMP_DIR
        tmp.mkdir(parents=True, exist_ok=True)
        return tmp / f"{os.getpid()}-{uuid.uuid4().hex}{suffix}"

    def reader(self, data_file: str) -> pa.ipc.RecordBatchFileReader:
        with self._readers_lock:
            r = self._readers.get(data_file)
            if r is None:
                if self.is_bundle:
                    r = self._bundle_reader(data_file)
                else:
                    path = self.data_dir / data_file
                    try:
                        r = pa.ipc.open_file(pa.memory_map(str(path), "r"))
                    except (OSError, pa.ArrowInvalid) as exc:
                        raise HitlError(f"the data file {data_file} of this project is missing or damaged ({exc})") from None
                self._readers[data_file] = r
            return r

    def _bundle_reader(self, data_file: str) -> "_SparseReader":
        """A bundle stores only its batches' record batches of a source; `seqs` maps them back to batch seqs."""
        with self.read() as conn:
            row = conn.exec_driver_sql("SELECT data, seqs, total FROM bundle_data WHERE name = ?", (data_file,)).first()
        try:
            if row is None:
                raise OSError("not in the bundle")
            r = pa.ipc.open_file(pa.BufferReader(row.data))
        except (OSError, pa.ArrowInvalid) as exc:
            raise HitlError(f"the data {data_file} of this review bundle is missing or damaged ({exc})") from None
        return _SparseReader(r, json.loads(row.seqs), row.total)

    def _cleanup_orphans(self) -> None:
        """Delete leftovers of interrupted imports: temp files of dead processes, unreferenced data files."""
        tmp = self.path / TMP_DIR
        if tmp.is_dir():
            for f in tmp.iterdir():
                pid = f.name.split("-", 1)[0]
                if not pid.isdigit() or not _pid_alive(int(pid)):
                    _unlink(f)
        if not self.data_dir.is_dir():
            return
        with self.read() as conn:
            referenced = set(conn.execute(select(db.sources.c.data_file)).scalars())
        now = time.time()
        for f in self.data_dir.glob("src-*.arrow"):
            if f.name not in referenced:
                # A concurrent import renames its file just before committing; leave young files alone.
                try:
                    young = now - f.stat().st_mtime < 30
                except OSError:
                    continue
                if not young:
                    _unlink(f)


class _SparseReader:
    """The part of a source's Arrow file a bundle holds: `get_batch(seq)` by the home seq, like a full reader."""

    def __init__(self, reader: pa.ipc.RecordBatchFileReader, seqs: list[int], total: int) -> None:
        self._reader = reader
        self._index = {s: i for i, s in enumerate(seqs)}
        self.schema = reader.schema
        self.num_record_batches = total

    def get_batch(self, seq: int) -> pa.RecordBatch:
        i = self._index.get(seq)
        if i is None:
            raise HitlError(f"this review bundle does not hold record batch {seq} of that source")
        return self._reader.get_batch(i)

    def read_all(self) -> pa.Table:
        if len(self._index) != self.num_record_batches:
            raise HitlError("this review bundle holds only some batches of that source")
        return self._reader.read_all()


def run_migrations(conn: Connection) -> None:
    from alembic import command

    command.upgrade(_alembic_config(conn), "head")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


def _remove_partial_project(p: Path, created_dir: bool) -> None:
    import shutil

    for name in (db.DB_FILE, db.DB_FILE + "-wal", db.DB_FILE + "-shm"):
        _unlink(p / name)
    shutil.rmtree(p / DATA_DIR, ignore_errors=True)
    if created_dir:
        try:
            p.rmdir()
        except OSError:
            pass
