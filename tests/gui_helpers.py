"""Shared fixtures for window tests: a small project with users, batches and flags."""
from __future__ import annotations

from hitl_desktop.core import db, identity
from hitl_desktop.core.batches import list_batches
from hitl_desktop.core.ingest import ImportOptions
from hitl_desktop.core.project import Project
from hitl_desktop.core.sources import import_file

ANN_PW = "ann-password-1"
BOB_PW = "bob-password-1"

CSV = """tag,island,bill,species
A1,Biscoe,39.1,Adelie
A2,biscoe,40.2,Adelie
A3,Dream,n/a,Gentoo
A4,Dream,41.0,Gentoo
A5,Torgersen,38.0,Adelie
A6,Dream,45.5,Chinstrap
A7,Biscoe,47.1,Gentoo
A8,Dream,46.0,Chinstrap
A9,Torgersen,36.6,Adelie
"""


def make_review_project(tmp_path) -> tuple[str, dict]:
    """Project with 3 batches of 3 rows; ann is admin (reviewer), bob an approver; flags in batch 1 and 2."""
    csv = tmp_path / "penguins.csv"
    csv.write_text(CSV)
    path = tmp_path / "proj"
    p = Project.init(path, user="ann", full_name="Ann Analyst", password=ANN_PW)
    identity.add_user(p, "ann", "bob", "approver", BOB_PW, full_name="Bob Approver")
    import_file(p, csv, ImportOptions(label="species", batch_size=3), user="ann")
    ids = sorted(b.id for b in list_batches(p))
    b1, b2 = ids[0], ids[1]
    with p.write() as conn:
        conn.execute(db.flags.insert(), [
            dict(batch_id=b1, row_id=1, column="island", kind="category", severity="medium", score=0.8,
                 message="near-miss of 'Biscoe'", suggestion="Biscoe", status="open"),
            dict(batch_id=b1, row_id=2, column="bill", kind="type", severity="high", score=1.0,
                 message="'n/a' is not a number", suggestion=None, status="open"),
            dict(batch_id=b2, row_id=4, column="bill", kind="out_of_range", severity="low", score=0.4,
                 message="unusually low", suggestion=None, status="open"),
        ])
    p.close()
    return str(path), {"b1": b1, "b2": b2, "b3": ids[2]}
