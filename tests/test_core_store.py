"""Issue 2: the project store: init/open, refusals, WAL + foreign keys, crash safety, edits, lifecycle, loading."""
from __future__ import annotations

import os
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
import time

import pandas as pd
import pytest
from sqlalchemy import func, select

from hitl_desktop.core import batches as B
from hitl_desktop.core import db
from hitl_desktop.core.errors import EditRefused, HitlError, NotAProject, TransitionRefused
from hitl_desktop.core.ingest import ImportOptions
from hitl_desktop.core.project import SCHEMA_HEAD, Project, known_revisions
from hitl_desktop.core.sources import import_file

CSV = "id,code,x,n,label\n" + "".join(f"{i},{i:05d},{i * 0.5},{i},{'ab'[i % 2]}\n" for i in range(10))


PW = "correct horse battery"


def sign(project, user="alice", password=PW):
    from hitl_desktop.core import identity

    return identity.signer(project, user, password)


@pytest.fixture
def project(tmp_path):
    p = Project.init(tmp_path / "proj", user="alice", password=PW)
    f = tmp_path / "d.csv"
    f.write_text(CSV)
    import_file(p, f, ImportOptions(label="label", batch_size=4), user="alice")
    yield p
    p.close()


def counts(project):
    with project.read() as conn:
        return {t.name: conn.execute(select(func.count()).select_from(t)).scalar_one() for t in db.metadata.sorted_tables}


def test_init_makes_sqlite_wal_with_foreign_keys_and_schema_version(tmp_path):
    p = Project.init(tmp_path / "p", user="alice")
    p.close()
    con = sqlite3.connect(tmp_path / "p" / "hitl.db")
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert con.execute("SELECT version_num FROM alembic_version").fetchone()[0] == SCHEMA_HEAD
    con.close()
    with Project.open(tmp_path / "p") as q:
        with q.engine.connect() as c:
            assert c.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert q.meta("created_by") == "alice" and len(q.project_id) == 36


def test_schema_head_matches_newest_migration():
    from alembic.config import Config  # noqa: F401
    from alembic.script import ScriptDirectory

    from hitl_desktop.core.project import _alembic_config

    assert ScriptDirectory.from_config(_alembic_config()).get_current_head() == SCHEMA_HEAD
    assert SCHEMA_HEAD in known_revisions()


def test_init_refuses_existing_project_and_non_empty_folder(tmp_path):
    Project.init(tmp_path / "p", user="a").close()
    with pytest.raises(HitlError, match="already a hitl project"):
        Project.init(tmp_path / "p", user="a")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.txt").write_text("x")
    with pytest.raises(HitlError, match="not empty"):
        Project.init(tmp_path / "full", user="a")


def test_open_refusals(tmp_path):
    with pytest.raises(NotAProject, match="no project at"):
        Project.open(tmp_path / "missing")
    (tmp_path / "plain").mkdir()
    with pytest.raises(NotAProject, match="not a hitl project"):
        Project.open(tmp_path / "plain")
    (tmp_path / "garbage").mkdir()
    (tmp_path / "garbage" / "hitl.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(NotAProject, match="not a hitl project"):
        Project.open(tmp_path / "garbage")
    (tmp_path / "other").mkdir()
    sqlite3.connect(tmp_path / "other" / "hitl.db").execute("CREATE TABLE t(x)").connection.commit()
    with pytest.raises(NotAProject, match="no hitl schema"):
        Project.open(tmp_path / "other")


def test_open_refuses_project_from_newer_release(tmp_path):
    Project.init(tmp_path / "p", user="a").close()
    con = sqlite3.connect(tmp_path / "p" / "hitl.db")
    con.execute("UPDATE alembic_version SET version_num='9999_future'")
    con.commit()
    con.close()
    with pytest.raises(NotAProject, match="newer release"):
        Project.open(tmp_path / "p")


def test_read_only_database_reads_but_refuses_writes(project, tmp_path):
    path = project.path
    project.close()
    dbfile = path / "hitl.db"
    # Checkpoint so the read-only open needs no WAL replay, then drop write permission.
    sqlite3.connect(dbfile).execute("PRAGMA wal_checkpoint(TRUNCATE)").connection.close()
    mode = dbfile.stat().st_mode
    os.chmod(dbfile, stat.S_IRUSR | stat.S_IRGRP)
    try:
        ro = Project.open(path)
        assert ro.read_only
        assert len(B.list_batches(ro)) == 3
        before = counts(ro)
        with pytest.raises(HitlError, match="read-only"):
            B.set_cell(ro, 1, 0, "x", "9", "alice")
        with pytest.raises(HitlError, match="read-only"):
            import_file(ro, tmp_path / "d.csv", ImportOptions(batch_size=3), user="alice")
        assert counts(ro) == before
        ro.close()
    finally:
        os.chmod(dbfile, mode)


def test_edit_layer_keeps_originals_and_records_who_when_why(project):
    r = B.set_cell(project, 1, 2, "x", "7.25", "alice", reason="typo in field sheet")
    assert (r.old_value, r.new_value, r.original) == ("1", "7.25", "1")
    assert B.load_batch(project, 1).loc[2, "x"] == 7.25
    assert B.load_batch(project, 1, original=True).loc[2, "x"] == 1.0
    [e] = B.edit_history(project, 1)
    assert (e.user, e.reason, e.old_value, e.new_value) == ("alice", "typo in field sheet", "1", "7.25")
    assert e.ts.endswith("Z")
    with project.read() as conn:
        assert B.get_batch(conn, 1).status == "in_review", "the first edit claims the batch implicitly"


def test_edit_checks_column_type(project):
    before = counts(project)
    with pytest.raises(EditRefused, match="not a whole number"):
        B.set_cell(project, 1, 0, "n", "1.5", "alice")
    with pytest.raises(EditRefused, match="decimal separator"):
        B.set_cell(project, 1, 0, "x", "39,1", "alice")
    with pytest.raises(EditRefused, match="no column 'nope'"):
        B.set_cell(project, 1, 0, "nope", "1", "alice")
    with pytest.raises(EditRefused, match="not in batch 1"):
        B.set_cell(project, 1, 9, "x", "1", "alice")
    with pytest.raises(HitlError, match="no batch 99"):
        B.set_cell(project, 99, 0, "x", "1", "alice")
    assert counts(project) == before
    # Text keeps leading zeros, and an empty value means missing.
    B.set_cell(project, 1, 0, "code", "00042", "alice")
    B.set_cell(project, 1, 1, "x", "", "alice")
    df = B.load_batch(project, 1)
    assert df.loc[0, "code"] == "00042" and pd.isna(df.loc[1, "x"])


def test_revert_and_undo(project):
    B.set_cell(project, 1, 0, "n", "5", "alice")
    B.set_cell(project, 1, 0, "n", "6", "alice")
    B.set_cell(project, 1, 1, "label", "zzz", "alice")
    B.undo_last(project, 1, "alice")
    assert B.load_batch(project, 1).loc[1, "label"] == "b"
    B.undo_last(project, 1, "alice")
    assert B.load_batch(project, 1).loc[0, "n"] == 5
    B.revert_cell(project, 1, 0, "n", "alice")
    assert B.load_batch(project, 1).loc[0, "n"] == 0
    with pytest.raises(EditRefused, match="nothing to revert"):
        B.revert_cell(project, 1, 0, "n", "alice")
    with project.read() as conn:
        b = B.get_batch(conn, 1)
    assert b.content_hash == b.base_key, "back to the originals: the content hash is the originals' key again"
    kinds = [e.kind for e in B.edit_history(project, 1)]
    assert kinds == ["edit", "edit", "edit", "undo", "undo", "revert"]


def test_content_hash_follows_data(project):
    with project.read() as conn:
        h0 = B.get_batch(conn, 1).content_hash
    B.set_cell(project, 1, 0, "x", "3.5", "alice")
    with project.read() as conn:
        h1 = B.get_batch(conn, 1).content_hash
        h_other = B.get_batch(conn, 2).content_hash
    assert h1 != h0
    B.set_cell(project, 1, 0, "x", "0.0", "alice")
    with project.read() as conn:
        assert B.get_batch(conn, 1).content_hash == h0
        assert B.get_batch(conn, 2).content_hash == h_other


def test_lifecycle_transitions_and_refusals(project):
    B.decide(project, 1, "claim", "alice")
    with pytest.raises(TransitionRefused, match="only a queued batch"):
        B.decide(project, 1, "claim", "alice")
    with pytest.raises(TransitionRefused, match="needs a comment"):
        B.decide(project, 1, "reject", "alice", signer=sign(project))
    B.decide(project, 1, "approve", "alice", comment="looks right", signer=sign(project))
    with pytest.raises(EditRefused, match="reopen it before editing"):
        B.set_cell(project, 1, 0, "x", "1", "alice")
    with pytest.raises(TransitionRefused, match="reopen it first"):
        B.decide(project, 1, "reject", "alice", comment="x", signer=sign(project))
    B.decide(project, 1, "reopen", "alice", signer=sign(project))
    B.decide(project, 1, "reject", "alice", comment="bad units", signer=sign(project))
    # A queued batch that needs no edit may be approved directly.
    d = B.decide(project, 2, "approve", "alice", signer=sign(project))
    assert d.meaning == "approved for training"
    with pytest.raises(TransitionRefused, match="only an approved or rejected"):
        B.decide(project, 3, "reopen", "alice", signer=sign(project))
    with project.read() as conn:
        assert [d.action for d in B.decisions_for(conn, 1)] == ["claim", "approve", "reopen", "reject"]
        assert B.get_batch(conn, 1).status == "rejected"


def test_load_source_applies_edits_across_batches(project):
    B.set_cell(project, 1, 1, "x", "100.5", "alice")
    B.set_cell(project, 3, 9, "label", "c", "alice")
    df = B.load_source(project, 1)
    assert len(df) == 10 and df.loc[1, "x"] == 100.5 and df.loc[9, "label"] == "c"
    part = B.load_source(project, 1, batch_ids=[3])
    assert list(part.index) == [8, 9] and part.loc[9, "label"] == "c"
    assert B.load_source(project, 1, original=True).loc[9, "label"] == "b"


def test_every_action_appends_a_chained_audit_entry(project):
    from hitl_desktop.core import audit

    B.set_cell(project, 1, 0, "x", "2.5", "alice")
    B.decide(project, 2, "approve", "alice", signer=sign(project))
    with project.read() as conn:
        actions = [e.action for e in audit.entries(conn)]
        ok, msg, n = audit.verify_chain(conn)
    assert actions == ["project.init", "user.password", "source.import", "cell.edit", "batch.approve"]
    assert ok, msg


KILL_SCRIPT = textwrap.dedent("""
    import sys, time
    from hitl_desktop.core import sources
    from hitl_desktop.core.project import Project
    from hitl_desktop.core.ingest import ImportOptions
    real = sources._write_arrow
    def slow(path, table, bs):
        digest = real(path, table, bs)
        print("WRITTEN", flush=True)
        time.sleep(60)
        return digest
    sources._write_arrow = slow
    p = Project.open(sys.argv[1])
    sources.import_file(p, sys.argv[2], ImportOptions(batch_size=3), user="alice")
""")


def test_kill_9_during_import_leaves_project_as_before(project, tmp_path):
    before = counts(project)
    files_before = sorted(p.name for p in project.data_dir.glob("*.arrow"))
    f = tmp_path / "other.csv"
    f.write_text(CSV + "99,00099,1.0,99,a\n")
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(project.path), str(f)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "WRITTEN"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    reopened = Project.open(project.path)
    assert counts(reopened) == before
    assert not list((project.path / "data" / "tmp").iterdir()), "the dead import's temp file is cleaned up"
    assert sorted(p.name for p in reopened.data_dir.glob("*.arrow")) == files_before
    reopened.close()


def test_committed_edit_survives_kill_9(project):
    script = textwrap.dedent("""
        import os, signal, sys
        from hitl_desktop.core import batches as B
        from hitl_desktop.core.project import Project
        p = Project.open(sys.argv[1])
        B.set_cell(p, 1, 0, "x", "42.5", "alice")
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    subprocess.run([sys.executable, "-c", script, str(project.path)])
    with Project.open(project.path) as p:
        assert B.load_batch(p, 1).loc[0, "x"] == 42.5
