"""Importing files as data source versions, split into review batches."""
from __future__ import annotations

import errno
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pyarrow as pa
from sqlalchemy import func, select

from . import audit, db
from .errors import HitlError, ImportRefused
from .filewrite import HashedFile
from .ingest import ColumnInfo, ImportOptions, read_file, read_source
from .project import Project
from .filewrite import fsync_dir
from .util import canonical_json, utc_now

Progress = Callable[[float, str], None]


@dataclass
class ImportReport:
    source_id: int
    reused: bool
    rows: int
    batches: list[int]
    columns: list[ColumnInfo]
    detected: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source_id,
            "reused": self.reused,
            "rows": self.rows,
            "batches": self.batches,
            "columns": [c.to_json() for c in self.columns],
            "detected": self.detected,
            "notes": self.notes,
        }


def base_key(source_sha: str, options_key: str, start_row: int, n_rows: int) -> str:
    """Content key of a batch's originals: determined by the source bytes, the options and the row range."""
    return hashlib.sha256(f"{source_sha}:{options_key}:{start_row}:{n_rows}".encode()).hexdigest()


def import_file(
    project: Project,
    path: str | os.PathLike,
    options: ImportOptions | None = None,
    user: str = "",
    progress: Progress | None = None,
) -> ImportReport:
    """Import a file as a new source version (or recognise identical bytes+options and add nothing)."""
    options = options or ImportOptions()
    if options.batch_size < 1:
        raise ImportRefused(f"batch size must be at least 1, got {options.batch_size}")
    report = progress or (lambda f, m: None)
    path = str(Path(path).expanduser().absolute())
    report(0.0, "reading file")
    result = read_file(path, options, read_source(path))
    options_key = hashlib.sha256(canonical_json(options.key_fields()).encode()).hexdigest()
    with project.read() as conn:
        existing = conn.execute(
            select(db.sources.c.id, db.sources.c.row_count).where(
                db.sources.c.sha256 == result.sha256, db.sources.c.options_key == options_key
            )
        ).first()
        if existing:
            ids = list(conn.execute(
                select(db.batches.c.id).where(db.batches.c.source_id == existing.id).order_by(db.batches.c.seq)
            ).scalars())
            return ImportReport(existing.id, True, existing.row_count, ids, result.columns, result.detected,
                                ["identical bytes and options were imported before: nothing added"])
    report(0.4, "writing originals")
    table = result.table
    n = table.num_rows
    bs = options.batch_size
    tmp = project.new_tmp_path(".arrow")
    try:
        data_sha = _write_arrow(tmp, table, bs)
        final_name = f"src-{result.sha256[:16]}-{options_key[:8]}-{os.getpid()}-{tmp.stem[-8:]}.arrow"
        final = project.data_dir / final_name
        os.replace(tmp, final)
        fsync_dir(str(project.data_dir))
    except OSError as exc:
        _unlink(tmp)
        if exc.errno == errno.ENOSPC:
            raise ImportRefused("the disk is full: free some space and import again; nothing was imported") from None
        raise ImportRefused(f"could not write the project's data file: {exc.strerror or exc}; nothing was imported") from None
    report(0.8, "registering batches")
    now = utc_now()
    schema = {"columns": [c.to_json() for c in result.columns], "label": options.label}
    try:
        with project.write() as conn:
            row_offset = conn.execute(
                select(func.coalesce(func.max(db.sources.c.row_offset + db.sources.c.row_count), 0))
            ).scalar_one()
            source_id = conn.execute(
                db.sources.insert().values(
                    path=path, file_name=os.path.basename(path), sha256=result.sha256, format=result.fmt,
                    options_json=canonical_json({**options.key_fields(), "detected": result.detected}),
                    options_key=options_key, schema_json=canonical_json(schema), row_count=n,
                    row_offset=row_offset, data_file=final_name, data_sha256=data_sha,
                    imported_by=user, imported_at=now,
                )
            ).inserted_primary_key[0]
            rows = []
            for seq, start in enumerate(range(0, n, bs)):
                size = min(bs, n - start)
                key = base_key(result.sha256, options_key, start, size)
                rows.append(dict(source_id=source_id, seq=seq, start_row=start, n_rows=size,
                                 row_id_start=row_offset + start, status="queued", base_key=key,
                                 content_hash=key, revision=0, updated_at=now))
            conn.execute(db.batches.insert(), rows)
            ids = list(conn.execute(
                select(db.batches.c.id).where(db.batches.c.source_id == source_id).order_by(db.batches.c.seq)
            ).scalars())
            audit.append(conn, user, "source.import", f"source:{source_id}", {
                "path": path, "sha256": result.sha256, "options": options.key_fields(),
                "detected": result.detected, "rows": n, "batches": [ids[0], ids[-1]],
                "columns": schema["columns"], "data_sha256": data_sha,
            }, ts=now)
    except BaseException:
        _unlink(final)
        raise
    report(1.0, "done")
    return ImportReport(source_id, False, n, ids, result.columns, result.detected, result.notes)


def _write_arrow(path: Path, table: pa.Table, batch_size: int) -> str:
    """Write one record batch per review batch, fsync, and return the file's sha256.

    The parsed table stays in its parser chunks (no full `combine_chunks` copy): each review batch is a slice, and
    only a slice that straddles two chunks is combined (one batch's rows). Arrow writes the file natively through
    a `HashedFile`, whose thread hashes what has been written while the rest is serialised.
    """
    out = HashedFile(path, expected_size=table.nbytes + (table.num_rows // batch_size + 2) * 4096)
    try:
        with pa.ipc.new_file(out.stream, table.schema) as writer:
            for start in range(0, table.num_rows, batch_size):
                part = table.slice(start, batch_size)
                rbs = part.to_batches()
                if len(rbs) != 1:
                    rbs = part.combine_chunks().to_batches()
                writer.write_batch(rbs[0])
                out.mark()
        return out.commit()
    except BaseException:
        out.abort()
        raise


def _unlink(p: Path) -> None:
    try:
        p.unlink()
    except OSError:
        pass


@dataclass
class SourceInfo:
    id: int
    path: str
    file_name: str
    sha256: str
    format: str
    options: dict[str, Any]
    columns: list[ColumnInfo]
    label: str | None
    row_count: int
    row_offset: int
    data_file: str
    data_sha256: str
    imported_by: str
    imported_at: str

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "path": self.path, "sha256": self.sha256, "format": self.format,
            "options": self.options, "columns": [c.to_json() for c in self.columns], "label": self.label,
            "rows": self.row_count, "imported_by": self.imported_by, "imported_at": self.imported_at,
        }


def _source_from_row(r: Any) -> SourceInfo:
    schema = json.loads(r.schema_json)
    return SourceInfo(r.id, r.path, r.file_name, r.sha256, r.format, json.loads(r.options_json),
                      [ColumnInfo.from_json(c) for c in schema["columns"]], schema.get("label"), r.row_count,
                      r.row_offset, r.data_file, r.data_sha256, r.imported_by, r.imported_at)


def list_sources(project: Project) -> list[SourceInfo]:
    with project.read() as conn:
        return [_source_from_row(r) for r in conn.execute(select(db.sources).order_by(db.sources.c.id))]


def get_source(project: Project, source_id: int) -> SourceInfo:
    cache = project.__dict__.setdefault("_source_cache", {})
    if source_id in cache:
        return cache[source_id]
    with project.read() as conn:
        r = conn.execute(select(db.sources).where(db.sources.c.id == source_id)).first()
    if r is None:
        raise HitlError(f"no source {source_id} in this project")
    info = _source_from_row(r)
    cache[source_id] = info  # sources are immutable once committed
    return info
