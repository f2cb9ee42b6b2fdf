"""Issue 2: a project made by every released schema opens (and is upgraded) in this release, data intact."""
from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from hitl_desktop.core import audit
from hitl_desktop.core import batches as B
from hitl_desktop.core.project import SCHEMA_HEAD, Project, known_revisions

FIXTURES = sorted((Path(__file__).parent / "fixtures" / "projects").glob("schema_*"))


def test_there_is_a_fixture_for_every_released_schema():
    assert FIXTURES, "keep a project made by each released schema under tests/fixtures/projects"
    for f in FIXTURES:
        assert f.name.removeprefix("schema_") in known_revisions()


@pytest.mark.parametrize("fixture", FIXTURES, ids=[f.name for f in FIXTURES])
def test_old_project_opens_upgraded_with_data_intact(fixture, tmp_path):
    proj = tmp_path / "proj"
    shutil.copytree(fixture, proj)
    with Project.open(proj) as p:
        con = sqlite3.connect(proj / "hitl.db")
        assert con.execute("SELECT version_num FROM alembic_version").fetchone()[0] == SCHEMA_HEAD
        con.close()
        bs = {b.id: b for b in B.list_batches(p)}
        assert {b.status for b in bs.values()} >= {"approved", "rejected"}
        df = B.load_batch(p, 1)
        assert df.loc[1, "x"] == 99.5
        assert B.load_batch(p, 1, original=True).loc[1, "x"] == 1.5
        assert list(df["code"])[:2] == ["0000", "0001"]
        with p.read() as conn:
            ok, msg, _ = audit.verify_chain(conn)
        assert ok, msg
        # The upgraded project keeps working: a new edit lands.
        B.set_cell(p, 3, 10, "label", "c", "alice")
        assert B.load_batch(p, 3).loc[10, "label"] == "c"
