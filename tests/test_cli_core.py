"""Issue 2: the `hitl` command: exit codes, one-line errors, --json shapes, the whole review flow."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from hitl_desktop import __version__
from hitl_desktop.cli.main import main

PW = "s3cret-enough"
CSV = "id,code,x,label\n" + "".join(f"{i},{i:04d},{i * 1.5},{'ab'[i % 2]}\n" for i in range(7))


@pytest.fixture(autouse=True)
def passwords(monkeypatch):
    monkeypatch.setenv("HITL_PASSWORD", PW)
    monkeypatch.setenv("HITL_NEW_PASSWORD", PW)


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def proj(tmp_path, capsys):
    d = tmp_path / "proj"
    assert run(capsys, "--as", "alice", "init", d)[0] == 0
    f = tmp_path / "d.csv"
    f.write_text(CSV)
    code, out, err = run(capsys, "--as", "alice", "import", d, f, "--label", "label", "--batch-size", "3")
    assert code == 0, err
    return d


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and __version__ in capsys.readouterr().out


def test_import_json_and_batches_json(proj, tmp_path, capsys):
    code, out, _ = run(capsys, "--as", "alice", "batches", proj, "--json")
    data = json.loads(out)
    assert code == 0 and [b["id"] for b in data] == [1, 2, 3]
    assert set(data[0]) >= {"id", "status", "rows", "source", "open_flags"}
    assert data[0]["status"] == "queued" and data[0]["rows"] == 3 and data[0]["source"] == "d.csv"
    f = tmp_path / "d.csv"
    code, out, _ = run(capsys, "--as", "alice", "import", proj, f, "--label", "label", "--batch-size", "3", "--json")
    assert code == 0 and json.loads(out)["reused"] is True


def test_show_json_has_row_source_row_values(proj, capsys):
    code, out, _ = run(capsys, "--as", "alice", "show", proj, "2", "--json")
    data = json.loads(out)
    assert code == 0 and data["batch"] == 2
    first = data["rows"][0]
    assert first["row"] == 3 and first["source_row"] == 3
    assert first["values"] == {"id": 3, "code": "0003", "x": 4.5, "label": "b"}


def test_edit_revert_undo_history_flow(proj, capsys):
    assert run(capsys, "--as", "alice", "edit", proj, "1", "1", "x", "9.75", "--reason", "unit")[0] == 0
    code, out, _ = run(capsys, "--as", "alice", "show", proj, "1", "--json")
    row = json.loads(out)["rows"][1]
    assert row["values"]["x"] == 9.75 and row["edited"] == ["x"]
    assert run(capsys, "--as", "alice", "edit", proj, "1", "2", "label", "c")[0] == 0
    assert run(capsys, "--as", "alice", "undo", proj, "1")[0] == 0
    assert run(capsys, "--as", "alice", "revert", proj, "1", "1", "x")[0] == 0
    code, out, _ = run(capsys, "--as", "alice", "history", proj, "1", "--json")
    items = json.loads(out)
    edits = [i for i in items if i["type"] == "edit"]
    assert [e["kind"] for e in edits] == ["edit", "edit", "undo", "revert"]
    assert edits[0]["user"] == "alice" and edits[0]["reason"] == "unit" and edits[0]["old"] == "1.5"


def test_user_errors_exit_2_with_one_line(proj, tmp_path, capsys):
    cases = [
        (["--as", "alice", "edit", proj, "1", "1", "x", "abc"], "is not a number"),
        (["--as", "alice", "edit", proj, "1", "1", "nope", "1"], "no column 'nope'"),
        (["--as", "alice", "show", proj, "42"], "no batch 42"),
        (["--as", "alice", "batches", tmp_path / "nowhere"], "no project at"),
        (["--as", "alice", "batches", tmp_path], "not a hitl project"),
        (["--as", "alice", "import", proj, tmp_path / "missing.csv"], "file not found"),
        (["--as", "alice", "reopen", proj, "1"], "cannot reopen"),
        (["--as", "alice", "reject", proj, "1"], "needs a comment"),
        (["--as", "alice", "edit", proj, "1"], "required"),
        (["--as", "alice", "frobnicate"], "invalid choice"),
    ]
    for argv, needle in cases:
        with pytest.raises(SystemExit) if "required" in needle or "invalid" in needle else _null():
            code, out, err = run(capsys, *argv)
            assert code == 2, (argv, err)
            assert needle in err and err.count("\n") == 1 and "Traceback" not in err, (argv, err)
        if "required" in needle or "invalid" in needle:
            err = capsys.readouterr().err
            assert needle in err and err.count("\n") == 1


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def test_approved_batch_refuses_edits_until_reopened(proj, capsys):
    code, _, err = run(capsys, "--as", "alice", "approve", proj, "3")
    assert code == 0, err
    code, _, err = run(capsys, "--as", "alice", "edit", proj, "3", "6", "x", "1")
    assert code == 2 and "reopen it before editing" in err
    assert run(capsys, "--as", "alice", "reopen", proj, "3")[0] == 0
    assert run(capsys, "--as", "alice", "edit", proj, "3", "6", "x", "1")[0] == 0


def test_installed_console_script_runs(proj):
    exe = shutil.which("hitl") or os.path.join(os.path.dirname(sys.executable), "hitl")
    env = {**os.environ, "HITL_PASSWORD": PW}
    out = subprocess.run([exe, "--as", "alice", "batches", str(proj), "--json"], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert len(json.loads(out.stdout)) == 3
    bad = subprocess.run([exe, "show", str(proj) + "-missing", "1"], capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr
