"""HashedFile: the import's writer of the originals file (Arrow writes natively, a thread hashes what was written)."""
from __future__ import annotations

import errno
import hashlib
import os
import subprocess
import sys
import textwrap

import pyarrow as pa
import pytest

from hitl_desktop.core import filewrite
from hitl_desktop.core.filewrite import HashedFile


def _payload(n: int) -> bytes:
    return (hashlib.sha256(str(n).encode()).digest() * (n // 32 + 1))[:n]


@pytest.mark.parametrize("sizes", [[1], [4095], [4096], [3, 5000, 12_000_000, 7], [1 << 16, 1], [(1 << 16) * 3 + 5] * 40])
def test_writes_exact_bytes_and_returns_their_sha256(tmp_path, sizes):
    path = tmp_path / "f.bin"
    out = HashedFile(path, expected_size=sum(sizes), buffer_size=1 << 16)  # small buffer: the follower hashes early
    parts = [_payload(n) for n in sizes]
    for p in parts:
        out.stream.write(p)
        out.mark()
    digest = out.commit()
    data = path.read_bytes()
    assert data == b"".join(parts)
    assert digest == hashlib.sha256(data).hexdigest()


def test_the_follower_never_reads_past_the_watermark(tmp_path, monkeypatch):
    """Bytes held in Arrow's buffer are not in the file yet: the follower waits for mark() or commit()."""
    path = tmp_path / "f.bin"
    out = HashedFile(path, buffer_size=1 << 16)
    out.stream.write(_payload(50_000))  # less than one buffer: nothing is certainly written yet
    out.mark()
    assert out._watermark == 0 and out._hashed == 0
    out.stream.write(_payload(300_000))
    out.mark()
    assert 0 < out._watermark <= 350_000 - (1 << 16)
    assert out.commit() == hashlib.sha256(path.read_bytes()).hexdigest()


def test_arrow_ipc_through_it_reads_back(tmp_path):
    table = pa.table({"a": list(range(100_000)), "b": [f"v{i}" for i in range(100_000)]})
    path = tmp_path / "t.arrow"
    out = HashedFile(path, buffer_size=1 << 16)
    with pa.ipc.new_file(out.stream, table.schema) as w:
        for rb in table.to_batches(max_chunksize=500):
            w.write_batch(rb)
            out.mark()
    digest = out.commit()
    assert pa.ipc.open_file(pa.memory_map(str(path))).read_all().equals(table)
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_failing_native_write_reaches_the_caller(tmp_path):
    """A real write error inside Arrow's C++ writer (here: the file-size limit, EFBIG) is an OSError at the caller,
    and the writer can be aborted. Run in a child process: the limit applies to the whole process."""
    resource = pytest.importorskip("resource")
    del resource
    code = textwrap.dedent(f"""
        import errno, resource, sys
        from hitl_desktop.core.filewrite import HashedFile
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
        out = HashedFile({str(tmp_path / "f.bin")!r}, buffer_size=1 << 16)
        try:
            for _ in range(40):
                out.stream.write(b"x" * 100_000)
                out.mark()
            out.commit()
        except OSError as exc:
            out.abort()
            print("refused", exc.errno in (errno.EFBIG, errno.ENOSPC))
            sys.exit(0)
        print("written")
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "refused True"


def test_disk_full_is_found_before_writing(tmp_path, monkeypatch):
    monkeypatch.setattr(filewrite.shutil, "disk_usage", lambda p: _Usage(10))
    with pytest.raises(OSError) as info:
        HashedFile(tmp_path / "f.bin", expected_size=10 << 20)
    assert info.value.errno == errno.ENOSPC
    assert not (tmp_path / "f.bin").exists()


class _Usage:
    def __init__(self, free: int) -> None:
        self.total = self.used = 0
        self.free = free


# --- reading the source: bytes and their sha256 in one pass ----------------------------------------------------------


def test_read_source_hash_matches_bytes_read(tmp_path, monkeypatch):
    from hitl_desktop.core import ingest

    monkeypatch.setattr(ingest, "_READ_CHUNK", 4096)  # many chunks, so the hashing thread follows the reader
    f = tmp_path / "d.csv"
    f.write_bytes(_payload(1_000_003))
    src = ingest.read_source(str(f))
    assert bytes(src.data) == f.read_bytes()
    assert src.sha256() == hashlib.sha256(f.read_bytes()).hexdigest()


def test_read_source_of_a_file_that_shrinks_or_grows_while_read(tmp_path, monkeypatch):
    """What was read is what is imported, and the hash is of exactly that."""
    from hitl_desktop.core import ingest

    monkeypatch.setattr(ingest, "_READ_CHUNK", 4096)
    f = tmp_path / "d.csv"
    f.write_bytes(_payload(100_000))
    real_fstat = os.fstat

    def claims(size):
        def fstat(fd):
            st = real_fstat(fd)
            return os.stat_result((st.st_mode, st.st_ino, st.st_dev, st.st_nlink, st.st_uid, st.st_gid, size,
                                   st.st_atime, st.st_mtime, st.st_ctime))
        return fstat

    monkeypatch.setattr(ingest.os, "fstat", claims(60_000))  # the file was 60 kB when opened, 100 kB when read
    src = ingest.read_source(str(f))
    assert bytes(src.data) == f.read_bytes() and src.sha256() == hashlib.sha256(f.read_bytes()).hexdigest()
    monkeypatch.setattr(ingest.os, "fstat", claims(150_000))  # 150 kB when opened, cut to 100 kB while read
    src = ingest.read_source(str(f))
    assert bytes(src.data) == f.read_bytes() and src.sha256() == hashlib.sha256(f.read_bytes()).hexdigest()
