"""The project store's tables and database plumbing.

All domain code talks to these tables through SQLAlchemy Core expressions, so the same store can later point at
PostgreSQL by URL. The few SQLite-specific settings (WAL, foreign keys, `BEGIN IMMEDIATE`) live here, applied only
when the dialect is SQLite.
"""
from __future__ import annotations

import os
import stat
from contextlib import contextmanager
from typing import Iterator

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
)
from sqlalchemy.engine import Connection, Engine

metadata = MetaData()

meta = Table(
    "meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

users = Table(
    "users",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("full_name", String(200), nullable=False),
    Column("role", String(16), nullable=False),
    Column("disabled", Boolean, nullable=False, default=False),
    Column("pw_hash", Text),
    Column("kdf", Text),
    Column("public_key", Text),
    Column("private_key_enc", Text),
    Column("failed_logins", Integer, nullable=False, default=0),
    Column("locked_until", String(40)),
    Column("created_at", String(40), nullable=False),
    Column("created_by", String(64), nullable=False),
)

sources = Table(
    "sources",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("path", Text, nullable=False),
    Column("file_name", Text, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("format", String(16), nullable=False),
    Column("options_json", Text, nullable=False),
    Column("options_key", String(64), nullable=False),
    Column("schema_json", Text, nullable=False),
    Column("row_count", Integer, nullable=False),
    Column("row_offset", Integer, nullable=False),
    Column("data_file", Text, nullable=False),
    Column("data_sha256", String(64), nullable=False),
    Column("imported_by", String(64), nullable=False),
    Column("imported_at", String(40), nullable=False),
    UniqueConstraint("sha256", "options_key", name="uq_source_version"),
)

batches = Table(
    "batches",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("source_id", Integer, ForeignKey("sources.id"), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("start_row", Integer, nullable=False),
    Column("n_rows", Integer, nullable=False),
    Column("row_id_start", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("assignee", String(64)),
    Column("base_key", String(64), nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("revision", Integer, nullable=False, default=0),
    Column("out_for_review", String(64)),
    Column("updated_at", String(40), nullable=False),
    Index("ix_batches_status", "status"),
    Index("ix_batches_source", "source_id", "seq"),
)

edits = Table(
    "edits",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("batch_id", Integer, ForeignKey("batches.id"), nullable=False),
    Column("row_id", Integer, nullable=False),
    Column("column", Text, nullable=False),
    Column("old_value", Text),
    Column("new_value", Text),
    Column("kind", String(16), nullable=False),
    Column("undoes", Integer, ForeignKey("edits.id")),
    Column("reason", Text),
    Column("user", String(64), nullable=False),
    Column("ts", String(40), nullable=False),
    Column("audit_id", Integer, ForeignKey("audit.id")),
    Index("ix_edits_batch", "batch_id", "id"),
)

overrides = Table(
    "overrides",
    metadata,
    Column("batch_id", Integer, ForeignKey("batches.id"), primary_key=True),
    Column("row_id", Integer, primary_key=True),
    Column("column", Text, primary_key=True),
    Column("value", Text),
    Column("edit_id", Integer, ForeignKey("edits.id"), nullable=False),
)

decisions = Table(
    "decisions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("batch_id", Integer, ForeignKey("batches.id")),
    Column("model_id", Integer),
    Column("action", String(16), nullable=False),
    Column("user", String(64), nullable=False),
    Column("full_name", String(200), nullable=False),
    Column("ts", String(40), nullable=False),
    Column("meaning", Text, nullable=False),
    Column("comment", Text),
    Column("content_hash", String(64)),
    Column("signed_payload", Text),
    Column("signature", Text),
    Column("audit_id", Integer, ForeignKey("audit.id")),
    Index("ix_decisions_batch", "batch_id", "id"),
)

audit = Table(
    "audit",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("ts", String(40), nullable=False),
    Column("user", String(64), nullable=False),
    Column("action", String(40), nullable=False),
    Column("target", Text),
    Column("payload", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False, unique=True),
)

flags = Table(
    "flags",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("batch_id", Integer, ForeignKey("batches.id"), nullable=False),
    Column("row_id", Integer, nullable=False),
    Column("column", Text),
    Column("kind", String(40), nullable=False),
    Column("severity", String(8), nullable=False),
    Column("score", Float, nullable=False),
    Column("message", Text, nullable=False),
    Column("suggestion", Text),
    Column("status", String(16), nullable=False),
    Column("value_key", String(64)),
    Column("run_id", Integer),
    Column("resolved_by", String(64)),
    Column("resolved_at", String(40)),
    Column("resolution", Text),
    Index("ix_flags_batch", "batch_id", "status"),
)

rules = Table(
    "rules",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(100), nullable=False, unique=True),
    Column("column", Text, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("params_json", Text, nullable=False),
    Column("created_by", String(64), nullable=False),
    Column("created_at", String(40), nullable=False),
)

pipelines = Table(
    "pipelines",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(100), nullable=False, unique=True),
    Column("spec_json", Text, nullable=False),
    Column("updated_at", String(40), nullable=False),
)

runs = Table(
    "runs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("pipeline", String(100), nullable=False),
    Column("user", String(64), nullable=False),
    Column("started_at", String(40), nullable=False),
    Column("finished_at", String(40)),
    Column("status", String(16), nullable=False),
    Column("detail_json", Text, nullable=False, default="{}"),
    Column("pid", Integer),
)

results = Table(
    "results",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("stage", String(100), nullable=False),
    Column("stage_version", String(40), nullable=False),
    Column("code_hash", String(64), nullable=False),
    Column("params_json", Text, nullable=False),
    Column("inputs_json", Text, nullable=False),
    Column("path", Text, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("run_id", Integer, ForeignKey("runs.id")),
    Column("created_at", String(40), nullable=False),
    Column("seconds", Float),
)

models = Table(
    "models",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("pipeline", String(100), nullable=False),
    Column("version", Integer, nullable=False),
    Column("result_key", String(64)),
    Column("target", Text, nullable=False),
    Column("estimator", String(40), nullable=False),
    Column("params_json", Text, nullable=False),
    Column("metrics_json", Text, nullable=False, default="{}"),
    Column("lineage_json", Text, nullable=False, default="{}"),
    Column("model_file", Text),
    Column("model_sha256", String(64)),
    Column("trained_by", String(64), nullable=False),
    Column("trained_at", String(40), nullable=False),
    Column("status", String(16), nullable=False),
)


DB_FILE = "hitl.db"


def is_read_only(path: str) -> bool:
    """True when the database file's permission bits forbid writing (checked by mode, so it holds even for root)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not (mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def make_engine(url: str, *, read_only: bool = False, synchronous: str = "FULL", journal_mode: str = "WAL") -> Engine:
    """Create an engine. For SQLite: WAL, foreign keys, durable commits, and `BEGIN IMMEDIATE` for writers.

    `journal_mode="DELETE"` is for single-file review bundles (`core/bundle.py`): no -wal/-shm files beside them.
    """
    if not url.startswith("sqlite"):
        return create_engine(url, future=True)
    path = url.split("///", 1)[1]
    if read_only:
        engine = create_engine(
            "sqlite+pysqlite:///file:" + path + "?mode=ro&uri=true",
            future=True,
        )
    else:
        engine = create_engine(url, future=True)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):  # pragma: no cover - trivial
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=10000")
        if not read_only:
            cur.execute(f"PRAGMA journal_mode={journal_mode}")
            cur.execute(f"PRAGMA synchronous={synchronous}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection):
        if conn.get_execution_options().get("hitl_write"):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("BEGIN")

    return engine


@contextmanager
def write_tx(engine: Engine) -> Iterator[Connection]:
    """One user action = one write transaction (serialised with other writers)."""
    with engine.connect().execution_options(hitl_write=True) as conn:
        with conn.begin():
            yield conn
