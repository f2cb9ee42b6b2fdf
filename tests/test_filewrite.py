"""DurableHashingFile: the import's writer of the originals file (hashing and writing in threads while Arrow fills)."""
from __future__ import annotations

import errno
import hashlib
import os

import pyarrow as pa
import pytest

from hitl_desktop.core import filewrite
from hitl_desktop.core.filewrite import DurableHashingFile


def _payload(n: int) -> bytes:
    return (hashlib.sha256(str(n).encode()).digest() * (n // 32 + 1))[:n]


@pytest.mark.parametrize("sizes", [[1], [4095], [4096], [3, 5000, 12_000_000, 7], [filewrite._STAGE, 1], [filewrite._STAGE * 3 + 5]])
def test_writes_exact_bytes_and_returns_their_sha256(tmp_path, sizes):
    path = tmp_path / "f.bin"
    out = DurableHashingFile(path, expected_size=sum(sizes) + 10_000)
    parts = [_payload(n) for n in sizes]
    for p in parts:
        assert out.write(p) == len(p)
    digest = out.commit()
    data = path.read_bytes()
    assert data == b"".join(parts)  # trimmed to the exact size, nothing padded or reserved left over
    assert digest == hashlib.sha256(data).hexdigest()


def test_arrow_ipc_through_it_reads_back(tmp_path):
    table = pa.table({"a": list(range(100_000)), "b": [f"v{i}" for i in range(100_000)]})
    path = tmp_path / "t.arrow"
    out = DurableHashingFile(path)
    stream = pa.BufferedOutputStream(pa.PythonFile(out, mode="w"), buffer_size=1 << 16)
    with pa.ipc.new_file(stream, table.schema) as w:
        for rb in table.to_batches(max_chunksize=500):
            w.write_batch(rb)
    stream.close()
    digest = out.commit()
    assert pa.ipc.open_file(pa.memory_map(str(path))).read_all().equals(table)
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()


def test_disk_full_in_the_writer_thread_reaches_the_caller(tmp_path, monkeypatch):
    real_write = os.write

    def full(fd, data):
        if len(data) > 1000:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(filewrite.os, "write", full)
    out = DurableHashingFile(tmp_path / "f.bin")
    with pytest.raises(OSError) as info:
        for _ in range(5):
            out.write(_payload(filewrite._STAGE))
        out.commit()
    assert info.value.errno == errno.ENOSPC
    out.abort()  # safe after a failure; the caller then removes the file
    with pytest.raises(OSError):
        out.commit()  # the error stays: a failed file can never be committed


def test_disk_full_at_reservation(tmp_path, monkeypatch):
    if not hasattr(os, "posix_fallocate"):
        pytest.skip("no posix_fallocate here")

    def full(fd, off, n):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(filewrite.os, "posix_fallocate", full)
    with pytest.raises(OSError) as info:
        DurableHashingFile(tmp_path / "f.bin", expected_size=10 << 20)
    assert info.value.errno == errno.ENOSPC


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
