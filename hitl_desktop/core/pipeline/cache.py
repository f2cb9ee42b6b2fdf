"""The result cache: content-addressed files under `<project>/cache/`, registered in the `results` table.

Writing: a result is serialised in memory, hashed, written to `cache/tmp/<pid>-<uuid>` and renamed to
`cache/<k2>/<key>.<ext>`; before a stage is registered (one transaction) its files are made durable — with one
`syncfs` of the cache's file system on Linux when there are many (a per-file fsync costs ~5 ms, more than a batch's
work), else with an fsync per file and folder. Only then is anything registered, so a registered key always names a
complete, durable file. A crash leaves temp files of a dead process or unregistered files; the next run deletes both
(`sweep`).

Reading: a registered file is trusted only if it exists and its sha256 matches the registered one. Hashing every
file on every run would cost as much as the work on big projects, so a verified file's (size, mtime, ctime,
inode) is remembered in `cache/stat-cache.json`; any write to the file changes its stat and makes the next use
hash it again. A missing or mismatching file is reported and its result recomputed, never used.

Formats: a single table output -> Arrow IPC file (`.arrow`, read back memory-mapped); anything else -> joblib
(`.joblib`); a per-batch stage's manifest -> JSON (`.json`).
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa

from ..filewrite import fsync_dir
from .errors import CorruptResult

CACHE_DIR = "cache"
EXT = {"table": ".arrow", "object": ".joblib", "manifest": ".json"}
STAT_CACHE = "stat-cache.json"


def result_kind(outputs: dict[str, str]) -> str:
    return "table" if len(outputs) == 1 and next(iter(outputs.values())) == "table" else "object"


def rel_path(key: str, kind: str) -> str:
    return f"{key[:2]}/{key}{EXT[kind]}"


def _file_sha(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _stat_sig(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


class _HashingWriter:
    """A binary file that hashes what is written to it (one pass: no read-back)."""

    def __init__(self, fh) -> None:
        self.fh = fh
        self.h = hashlib.sha256()

    def write(self, b) -> int:
        self.h.update(b)
        return self.fh.write(b)

    def tell(self) -> int:
        return self.fh.tell()

    def flush(self) -> None:
        self.fh.flush()


def write_result(root: str | Path, key: str, kind: str, outputs: dict[str, Any], sync: bool = False) -> dict[str, Any]:
    """Write one result atomically (tmp, rename; fsync when `sync`). Safe to call from worker processes.

    Returns {"path", "sha256", "stat", "seconds"} (seconds spent serialising, hashing and writing).
    """
    t0 = time.perf_counter()
    root = Path(root)
    tmpdir = root / "tmp"
    tmpdir.mkdir(parents=True, exist_ok=True)
    rel = rel_path(key, kind)
    final = root / rel
    tmp = tmpdir / f"{os.getpid()}-{uuid.uuid4().hex}{EXT[kind]}"
    try:
        if kind == "table":
            (name, df), = outputs.items()
            table = pa.Table.from_pandas(df, preserve_index=True)
            table = table.replace_schema_metadata({**(table.schema.metadata or {}), b"hitl.output": name.encode()})
            sink = pa.BufferOutputStream()
            with pa.ipc.new_file(sink, table.schema) as w:
                w.write_table(table)
            buf = sink.getvalue()
            sha = hashlib.sha256(buf).hexdigest()
            with open(tmp, "wb") as fh:
                fh.write(buf)
                if sync:
                    fh.flush()
                    os.fsync(fh.fileno())
        else:
            with open(tmp, "wb") as fh:
                hw = _HashingWriter(fh)
                if kind == "manifest":
                    hw.write(json.dumps(outputs, sort_keys=True, separators=(",", ":")).encode("utf-8"))
                else:
                    import joblib

                    joblib.dump(outputs, hw, compress=0)
                sha = hw.h.hexdigest()
                if sync:
                    fh.flush()
                    os.fsync(fh.fileno())
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, final)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise
    st = final.stat()
    return {"path": rel, "sha256": sha, "stat": _stat_sig(st), "seconds": time.perf_counter() - t0}


def read_result(root: str | Path, rel: str, kind: str, arrow: bool = False) -> Any:
    """A stored result; a table as a DataFrame, or with `arrow` as the memory-mapped pyarrow Table itself."""
    path = Path(root) / rel
    if kind == "table":
        table = pa.ipc.open_file(pa.memory_map(str(path), "r")).read_all()
        name = (table.schema.metadata or {}).get(b"hitl.output", b"table").decode()
        return {name: table if arrow else table.to_pandas()}
    if kind == "manifest":
        return json.loads(path.read_text(encoding="utf-8"))
    import joblib

    # numpy arrays are memory-mapped read-only (no copy, no load time); the file was verified before this
    return joblib.load(path, mmap_mode="r")


class OpenTables:
    """Memory-mapped tables of cache files kept open between runs of one open project: a step that reads the
    cleaned batches again (featurize on each training) maps and parses each file once. A table is found by (path,
    sha256, the file's stat signature when mapped: size, times, inode), and only for a file that has just passed
    `ResultStore.check`: a file rewritten in place or replaced by a recomputed copy is mapped afresh, never read
    through an old mapping. A file the store forgets (swept) is dropped."""

    def __init__(self, limit: int = 4096) -> None:
        from collections import OrderedDict

        self._limit = limit
        self._lock = threading.Lock()
        self._tables: OrderedDict[tuple[str, str, tuple[int, ...]], pa.Table] = OrderedDict()

    def get(self, rel: str, sha: str, sig: tuple[int, ...]) -> pa.Table | None:
        with self._lock:
            t = self._tables.get((rel, sha, sig))
            if t is not None:
                self._tables.move_to_end((rel, sha, sig))
            return t

    def put(self, rel: str, sha: str, sig: tuple[int, ...], table: pa.Table) -> None:
        with self._lock:
            self._tables[(rel, sha, sig)] = table
            while len(self._tables) > self._limit:
                self._tables.popitem(last=False)

    def drop(self, rel: str) -> None:
        with self._lock:
            for k in [k for k in self._tables if k[0] == rel]:
                del self._tables[k]

    def clear(self) -> None:
        with self._lock:
            self._tables.clear()

    def __len__(self) -> int:
        return len(self._tables)


class ResultStore:
    """Per-project access to cache files, with sha256 verification and the stat cache of verified files."""

    def __init__(self, project_path: Path, writable: bool = True, tables: OpenTables | None = None) -> None:
        self.root = Path(project_path) / CACHE_DIR
        self.writable = writable
        self.tables = tables
        self._lock = threading.Lock()
        self._stat: dict[str, list] = {}
        self._dirty = False
        try:
            self._stat = json.loads((self.root / STAT_CACHE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            self._stat = {}

    def path(self, rel: str) -> Path:
        return self.root / rel

    def remember(self, rel: str, sha: str, stat: list[int]) -> None:
        with self._lock:
            self._stat[rel] = [*stat, sha]
            self._dirty = True

    def check(self, rel: str, sha: str) -> str | None:
        """None when the file is present and intact; else a reason ("deleted", "corrupted")."""
        p = self.root / rel
        try:
            st = p.stat()
        except OSError:
            return "cache file deleted"
        sig = _stat_sig(st)
        with self._lock:
            known = self._stat.get(rel)
        if known is not None and known[:4] == sig and known[4] == sha:
            return None
        try:
            actual = _file_sha(p)
        except OSError:
            return "cache file unreadable"
        if actual != sha:
            return "cache file corrupted (its sha256 differs from the registered one)"
        self.remember(rel, sha, sig)
        return None

    def load(self, key: str, rel: str, sha: str, kind: str, arrow: bool = False) -> Any:
        bad = self.check(rel, sha)
        if bad:
            raise CorruptResult(key, f"result {key[:12]}: {bad}; run again to recompute it")
        if kind == "table" and self.tables is not None:
            with self._lock:
                sig = tuple(self._stat.get(rel, [])[:4])  # what `check` just vouched for
            table = self.tables.get(rel, sha, sig)
            if table is None:
                self.tables.drop(rel)  # an older mapping of this path (a rewritten or recomputed file)
                table = next(iter(read_result(self.root, rel, kind, arrow=True).values()))
                self.tables.put(rel, sha, sig, table)
            name = (table.schema.metadata or {}).get(b"hitl.output", b"table").decode()
            return {name: table if arrow else table.to_pandas()}
        return read_result(self.root, rel, kind, arrow)

    def write(self, key: str, kind: str, outputs: dict[str, Any]) -> dict[str, Any]:
        info = write_result(self.root, key, kind, outputs)
        self.remember(info["path"], info["sha256"], info["stat"])
        return info

    def make_durable(self, rels: list[str]) -> None:
        """Flush written files and their folder entries to disk before they are registered: many files (a per-batch
        step's units) with one syncfs, a few (a whole step's result) each with fsync — syncfs would also wait for
        every other dirty file on that disk."""
        if not rels:
            return
        if len(rels) > 4 and _syncfs(self.root):
            return
        for r in rels:
            try:
                fd = os.open(self.root / r, os.O_RDONLY)
            except OSError:
                continue
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        for d in sorted({str((self.root / r).parent) for r in rels}):
            fsync_dir(d)

    def forget(self, rel: str) -> None:
        if self.tables is not None:
            self.tables.drop(rel)
        with self._lock:
            if self._stat.pop(rel, None) is not None:
                self._dirty = True

    def save(self) -> None:
        """Persist the stat cache (best effort, atomic)."""
        if not self._dirty or not self.writable:
            return
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            tmp = self.root / f"{STAT_CACHE}.{os.getpid()}.tmp"
            with self._lock:
                data = json.dumps(self._stat, separators=(",", ":"))
                self._dirty = False
            tmp.write_text(data, encoding="utf-8")
            os.replace(tmp, self.root / STAT_CACHE)
        except OSError:
            pass

    def sweep(self, registered: set[str], pid_alive) -> int:
        """Delete temp files of dead processes and files no registered result points at. Returns files removed."""
        removed = 0
        tmpdir = self.root / "tmp"
        if tmpdir.is_dir():
            for f in tmpdir.iterdir():
                pid = f.name.split("-", 1)[0]
                if not pid.isdigit() or not pid_alive(int(pid)):
                    removed += _unlink(f)
        if not self.root.is_dir():
            return removed
        for d in self.root.iterdir():
            if d.is_dir() and len(d.name) == 2:
                for f in d.iterdir():
                    if f"{d.name}/{f.name}" not in registered:
                        self.forget(f"{d.name}/{f.name}")  # first: no mapping of ours keeps it (Windows)
                        removed += _unlink(f)
        return removed


def _syncfs(path: Path) -> bool:
    """Linux syncfs(2) on the file system holding `path`: one call instead of an fsync per file."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(path, os.O_RDONLY)
        try:
            return libc.syncfs(fd) == 0
        finally:
            os.close(fd)
    except (OSError, AttributeError):
        return False


def _unlink(p: Path) -> int:
    try:
        p.unlink()
        return 1
    except OSError:
        return 0
