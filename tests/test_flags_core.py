"""core.flags: accept / dismiss / edit / revert / undo resolve and reopen flags in one transaction with the cell."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from hitl_desktop.core import audit, db
from hitl_desktop.core import flags as F
from hitl_desktop.core.batches import list_batches, load_batch
from hitl_desktop.core.errors import EditRefused
from hitl_desktop.core.ingest import ImportOptions
from hitl_desktop.core.project import Project
from hitl_desktop.core.sources import import_file


def make_project(tmp_path):
    csv = tmp_path / "d.csv"
    csv.write_text("name,x,island\na,1.5,Biscoe\nb,39,biscoe\nc,n/a,Dream\nd,4.0,Dream\n")
    p = Project.init(tmp_path / "proj", user="ann")
    import_file(p, csv, ImportOptions(batch_size=10), user="ann")
    bid = list_batches(p)[0].id
    with p.write() as conn:
        rows = [
            dict(batch_id=bid, row_id=1, column="island", kind="category", severity="medium", score=0.8,
                 message="near-miss of Biscoe", suggestion="Biscoe", status="open"),
            dict(batch_id=bid, row_id=1, column="island", kind="rule:caps", severity="low", score=0.5,
                 message="lower case", suggestion=None, status="open"),
            dict(batch_id=bid, row_id=2, column="x", kind="type", severity="high", score=1.0,
                 message="not a number", suggestion=None, status="open"),
            dict(batch_id=bid, row_id=3, column=None, kind="duplicate", severity="low", score=0.9,
                 message="repeats row 0", suggestion=F.DROP_DUPLICATE, status="open"),
        ]
        conn.execute(db.flags.insert(), rows)
    return p, bid


def flag_id(p, kind):
    return next(f.id for f in F.list_flags(p) if f.kind == kind)


def test_accept_sets_cell_and_resolves_every_open_flag_on_it(tmp_path):
    p, bid = make_project(tmp_path)
    res = F.accept(p, flag_id(p, "category"), "ann")
    assert res.edit is not None and res.edit.new_value == "Biscoe" and res.edit.kind == "accept"
    assert {f.kind: f.status for f in res.flags} == {"category": "accepted", "rule:caps": "resolved"}
    assert load_batch(p, bid).loc[1, "island"] == "Biscoe"
    assert list_batches(p)[0].flags == {"high": 1, "low": 1}
    with p.read() as conn:
        assert audit.verify_chain(conn)[0]


def test_undo_of_accept_restores_value_and_reopens_flags(tmp_path):
    p, bid = make_project(tmp_path)
    res = F.accept(p, flag_id(p, "category"), "ann")
    undo = F.undo_edit(p, bid, res.edit.edit_id, "ann")
    assert undo.edit.new_value == "biscoe"
    assert sorted(f.status for f in undo.flags) == ["open", "open"]
    assert load_batch(p, bid).loc[1, "island"] == "biscoe"
    with pytest.raises(EditRefused, match="already undone"):
        F.undo_edit(p, bid, res.edit.edit_id, "ann")


def test_dismiss_needs_reason_and_records_who_and_why(tmp_path):
    p, _ = make_project(tmp_path)
    fid = flag_id(p, "type")
    with pytest.raises(EditRefused, match="reason"):
        F.dismiss(p, fid, "ann", "  ")
    res = F.dismiss(p, fid, "ann", "checked the sheet")
    f = res.flags[0]
    assert (f.status, f.resolved_by, f.resolution["reason"]) == ("dismissed", "ann", "checked the sheet")
    with pytest.raises(EditRefused, match="already dismissed"):
        F.dismiss(p, fid, "ann", "again")
    assert F.reopen(p, fid, "ann").flags[0].status == "open"
    with p.read() as conn:
        actions = [e.action for e in audit.entries(conn)]
    assert actions[-2:] == ["flag.dismiss", "flag.reopen"]


def test_edit_resolves_flags_and_revert_reopens_them(tmp_path):
    p, bid = make_project(tmp_path)
    res = F.edit_cell(p, bid, 2, "x", "3.5", "ann")
    assert [f.status for f in res.flags] == ["resolved"]
    rev = F.revert(p, bid, 2, "x", "ann")
    assert rev.edit.new_value == "n/a" and [f.status for f in rev.flags] == ["open"]


def test_accept_drop_duplicate_changes_no_cell(tmp_path):
    p, bid = make_project(tmp_path)
    before = load_batch(p, bid)
    res = F.accept(p, flag_id(p, "duplicate"), "ann")
    assert res.edit is None and res.flags[0].status == "accepted"
    assert load_batch(p, bid).equals(before)
    assert F.reopen(p, res.flags[0].id, "ann").flags[0].status == "open"


def test_refused_accept_changes_nothing(tmp_path):
    p, bid = make_project(tmp_path)
    with pytest.raises(EditRefused, match="no suggestion"):
        F.accept(p, flag_id(p, "rule:caps"), "ann")
    with p.read() as conn:
        assert conn.execute(select(db.edits)).first() is None
    assert all(f.status == "open" for f in F.list_flags(p))


def test_unknown_user_is_refused_and_nothing_changes(tmp_path):
    from hitl_desktop.core.errors import PermissionRefused

    p, bid = make_project(tmp_path)
    with pytest.raises(PermissionRefused):
        F.accept(p, flag_id(p, "category"), "mallory")
    with pytest.raises(PermissionRefused):
        F.dismiss(p, flag_id(p, "type"), "mallory", "fine")
    assert all(f.status == "open" for f in F.list_flags(p))
