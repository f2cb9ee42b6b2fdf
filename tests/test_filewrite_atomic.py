"""The one durable writer: a file or folder appears whole or not at all."""
from __future__ import annotations

import pytest

from hitl_desktop.core.filewrite import atomic_file, publish_dir, write_durably


def test_write_durably_replaces_whole(tmp_path):
    target = tmp_path / "sub" / "f.bin"
    write_durably(target, b"one")
    write_durably(target, b"two")
    assert target.read_bytes() == b"two"
    assert [p.name for p in target.parent.iterdir()] == ["f.bin"]


def test_atomic_file_failure_leaves_old_content_and_no_temp(tmp_path):
    target = tmp_path / "f.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_file(target) as fh:
            fh.write(b"half")
            raise RuntimeError("disk full")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_publish_dir_all_or_nothing(tmp_path):
    out = tmp_path / "bundle"
    with pytest.raises(RuntimeError):
        with publish_dir(out) as d:
            (d / "a").write_text("x")
            raise RuntimeError("boom")
    assert not out.exists() and list(tmp_path.iterdir()) == []
    with publish_dir(out) as d:
        (d / "a").write_text("x")
        (d / "sub").mkdir()
        (d / "sub" / "b").write_text("y")
    assert (out / "a").read_text() == "x" and (out / "sub" / "b").read_text() == "y"
    with pytest.raises(FileExistsError):
        with publish_dir(out):
            pass
