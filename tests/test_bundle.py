"""Issue 8: offline review bundles: export, review away, import back (conflicts, duplicates, refusals)."""
from __future__ import annotations

import json
import shutil
import sqlite3

import pytest
from sqlalchemy import select

from hitl_desktop.cli.main import main
from hitl_desktop.core import approvals, audit, db, identity, integrity
from hitl_desktop.core import batches as B
from hitl_desktop.core import bundle as BD
from hitl_desktop.core import flags as F
from hitl_desktop.core.errors import HitlError
from hitl_desktop.core.ingest import ImportOptions
from hitl_desktop.core.project import Project
from hitl_desktop.core.sources import import_file

CSV = "id,x,label\n" + "".join(f"{i},{i * 0.5},{'ab'[i % 2]}\n" for i in range(12))
PW = {"alice": "alice-secret", "bob": "bob-secret1", "carol": "carol-secret", "dave": "dave-secret"}


@pytest.fixture(autouse=True)
def fast_kdf(monkeypatch):
    monkeypatch.setenv("HITL_SCRYPT_N", "1024")
    monkeypatch.delenv("HITL_PASSWORD", raising=False)
    monkeypatch.delenv("HITL_NEW_PASSWORD", raising=False)


def hitl(monkeypatch, capsys, user, *argv):
    monkeypatch.setenv("HITL_PASSWORD", PW[user])
    capsys.readouterr()
    rc = main(["--as", user, *argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def make_home(path, tmp_path):
    """alice admin, bob approver, carol reviewer, dave approver; 3 batches of 4 rows; one flag per batch."""
    p = Project.init(path, user="alice", password=PW["alice"])
    (tmp_path / "d.csv").write_text(CSV)
    import_file(p, tmp_path / "d.csv", ImportOptions(batch_size=4), user="alice")
    for name, role in (("bob", "approver"), ("carol", "reviewer"), ("dave", "approver")):
        identity.add_user(p, "alice", name, role, PW[name])
    with p.write() as c:
        for b, row in ((1, 1), (2, 5), (3, 9)):
            c.execute(db.flags.insert().values(batch_id=b, row_id=row, column="x", kind="outlier", severity="high",
                                               score=1.0, message="odd value", suggestion="9", status="open"))
    return p


@pytest.fixture
def home(tmp_path):
    p = make_home(tmp_path / "home", tmp_path)
    yield p
    p.close()


def export(p, tmp_path, ids=(1, 2), to="carol", name="out.hitlreview"):
    out = tmp_path / name
    BD.export(p, ids, to, out, "alice", password=PW["alice"])
    return out


def snapshot(p):
    """Everything an import could change."""
    with p.read() as c:
        return {t.name: sorted(map(tuple, c.execute(select(t)).all()), key=repr)
                for t in (db.audit, db.batches, db.edits, db.overrides, db.decisions, db.flags, db.users)}


def verify_ok(p):
    rep = integrity.verify_project(p)
    assert rep.ok, rep.summary()
    return rep


def signer(p, user):
    return identity.signer(p, user, PW[user])


# --- export and the bundle as a project ------------------------------------------------------------------------


def test_export_marks_batches_and_bundle_opens_as_a_project(home, tmp_path):
    out = export(home, tmp_path)
    with home.read() as c:
        b1 = B.get_batch(c, 1)
        assert b1.out_for_review and B.get_batch(c, 3).out_for_review is None
        assert audit.entries(c)[-1].action == "bundle.export"
    verify_ok(home)
    assert not list(tmp_path.glob(".out.hitlreview*"))  # no temp file left
    with Project.open(out) as bp:
        assert bp.is_bundle
        assert [b.id for b in B.list_batches(bp)] == [1, 2]  # only the exported batches travel
        assert B.load_batch(bp, 2)["label"].tolist() == B.load_batch(home, 2)["label"].tolist()
        assert [f.batch_id for f in F.list_flags(bp)] == [1, 2]
        verify_ok(bp)
        users = {u.name: u for u in identity.list_users(bp)}
        assert set(users) == {"alice", "bob", "carol", "dave"}
        assert users["carol"].has_password and not users["alice"].has_password  # only the reviewer signs in
        with pytest.raises(HitlError, match="review bundle"):
            bp.new_tmp_path(".arrow")


def test_export_refusals(home, tmp_path):
    B.decide(home, 3, "approve", "bob", signer=signer(home, "bob"))
    with pytest.raises(BD.BundleRefused, match="batch 3 is approved"):
        export(home, tmp_path, ids=(3,))
    export(home, tmp_path, ids=(1,))
    with pytest.raises(BD.BundleRefused, match="already out for review"):
        export(home, tmp_path, ids=(1,), name="again.hitlreview")
    with pytest.raises(BD.BundleRefused, match="already exists"):
        export(home, tmp_path, ids=(2,))
    with pytest.raises(identity.PermissionRefused):
        BD.export(home, [2], "carol", tmp_path / "x.hitlreview", "alice", password="wrong-password")
    assert not (tmp_path / "again.hitlreview").exists() and not (tmp_path / "x.hitlreview").exists()
    BD.export(home, [1], "carol", tmp_path / "forced.hitlreview", "alice", password=PW["alice"], force=True)


# --- the round trip ---------------------------------------------------------------------------------------------


def test_round_trip_end_to_end_cli(home, tmp_path, monkeypatch, capsys):
    d = str(home.path)
    out = str(tmp_path / "trip.hitlreview")
    assert hitl(monkeypatch, capsys, "alice", "bundle", "export", d, out, "--batch", "1", "--batch", "2",
                "--to", "bob")[0] == 0
    # away: bob reviews in the bundle with the ordinary commands
    assert hitl(monkeypatch, capsys, "bob", "edit", out, "1", "0", "label", "q", "--reason", "field sheet")[0] == 0
    assert hitl(monkeypatch, capsys, "bob", "edit", out, "1", "2", "label", "r")[0] == 0
    assert hitl(monkeypatch, capsys, "bob", "undo", out, "1")[0] == 0  # undoes the 'r'
    with Project.open(out) as bp:
        F.accept(bp, 1, "bob")  # batch 1 row 1 x := 9
        F.dismiss(bp, 2, "bob", "checked the field sheet")
    assert hitl(monkeypatch, capsys, "bob", "approve", out, "2")[0] == 0
    rc, outp, _ = hitl(monkeypatch, capsys, "bob", "audit", out, "verify")
    assert rc == 0, outp
    with Project.open(out) as bp, bp.read() as c:
        away_edits = sorted((e.row_id, e.column, e.kind, e.new_value, e.user, e.ts) for e in c.execute(select(db.edits)))
        away_decision = c.execute(select(db.decisions)).one()

    before = snapshot(home)
    rc, outp, _ = hitl(monkeypatch, capsys, "alice", "bundle", "import", d, out, "--dry-run", "--json")
    assert rc == 0
    plan = json.loads(outp)
    assert plan["to_merge"] == {"edits": 4, "decisions": 1, "flags": 2} and plan["conflicts"] == []
    assert snapshot(home) == before  # a dry run changes nothing

    rc, outp, err = hitl(monkeypatch, capsys, "alice", "bundle", "import", d, out, "--json")
    assert rc == 0, err
    res = json.loads(outp)
    assert res["merged"] == {"edits": 4, "decisions": 1, "flags": 2} and res["pending"] == []
    assert res["changed_batches"] == [1, 2] and res["warnings"] == []
    rc, outp, _ = hitl(monkeypatch, capsys, "alice", "audit", d, "verify")
    assert rc == 0, outp
    assert "2 signatures valid" in outp or "1 signatures valid" in outp

    df = B.load_batch(home, 1)
    assert df.loc[0, "label"] == "q" and df.loc[2, "label"] == "a" and df.loc[1, "x"] == 9.0
    with home.read() as c:
        # authors and times kept
        assert sorted((e.row_id, e.column, e.kind, e.new_value, e.user, e.ts)
                      for e in c.execute(select(db.edits))) == away_edits
        d2 = c.execute(select(db.decisions).where(db.decisions.c.batch_id == 2)).one()
        assert (d2.user, d2.ts, d2.signature) == (away_decision.user, away_decision.ts, away_decision.signature)
        assert approvals.approval_state(c, 2) == "valid"
        assert B.get_batch(c, 2).status == "approved" and B.get_batch(c, 1).status == "in_review"
        assert B.get_batch(c, 1).out_for_review is None and B.get_batch(c, 2).out_for_review is None
        undo = c.execute(select(db.edits).where(db.edits.c.kind == "undo")).one()
        undone = c.execute(select(db.edits).where(db.edits.c.id == undo.undoes)).one()
        assert (undone.row_id, undone.new_value) == (2, "r")  # undo points at the merged edit, not a home one
    fl = {f.id: f for f in F.list_flags(home)}
    assert fl[1].status == "accepted" and fl[2].status == "dismissed" and fl[2].resolved_by == "bob"
    assert fl[2].resolution["reason"] == "checked the field sheet"


def test_duplicate_import_changes_nothing(home, tmp_path, monkeypatch, capsys):
    out = export(home, tmp_path)
    with Project.open(out) as bp:
        B.set_cell(bp, 1, 0, "label", "q", "carol")
    r = BD.apply_import(home, out, user="alice")
    assert r.edits == 1
    before = snapshot(home)
    again = BD.apply_import(home, out, user="alice")
    assert again.nothing_new and again.pending == []
    assert snapshot(home) == before
    assert BD.plan_import(home, out).nothing_new
    rc, outp, _ = hitl(monkeypatch, capsys, "alice", "bundle", "import", str(home.path), str(out))
    assert rc == 0 and "nothing new" in outp
    assert snapshot(home) == before
    verify_ok(home)


def test_work_continued_away_after_an_import_merges_only_the_new_part(home, tmp_path):
    out = export(home, tmp_path)
    with Project.open(out) as bp:
        B.set_cell(bp, 1, 0, "label", "q", "carol")
    BD.apply_import(home, out, user="alice")
    with Project.open(out) as bp:
        B.set_cell(bp, 1, 3, "label", "z", "carol")
    r = BD.apply_import(home, out, user="alice")
    assert r.edits == 1
    assert B.load_batch(home, 1)["label"].tolist() == ["q", "b", "a", "z"]
    verify_ok(home)


# --- conflicts --------------------------------------------------------------------------------------------------


def test_cell_conflicts_listed_then_resolved_one_by_one(home, tmp_path, monkeypatch, capsys):
    out = export(home, tmp_path)
    with Project.open(out) as bp:
        B.set_cell(bp, 1, 0, "label", "away0", "carol")
        B.set_cell(bp, 1, 2, "label", "away2", "carol")
        B.set_cell(bp, 1, 3, "label", "away3", "carol")  # only changed away: merges
    B.set_cell(home, 1, 0, "label", "home0", "alice")
    B.set_cell(home, 1, 2, "label", "home2", "alice")
    plan = BD.plan_import(home, out)
    assert sorted(c.id for c in plan.conflicts) == ["cell:1:0:label", "cell:1:2:label"]
    c0 = next(c for c in plan.conflicts if c.row == 0)
    assert (c0.home, c0.away, c0.base) == ("home0", "away0", "a")

    r = BD.apply_import(home, out, user="alice")  # nothing resolved: the rest merges, conflicts wait
    assert r.edits == 1 and len(r.pending) == 2
    assert B.load_batch(home, 1)["label"].tolist() == ["home0", "b", "home2", "away3"]
    with home.read() as c:
        assert B.get_batch(c, 1).out_for_review  # still out: conflicts pending
    verify_ok(home)

    d, f = str(home.path), str(out)
    rc, outp, _ = hitl(monkeypatch, capsys, "alice", "bundle", "resolve", d, f, "cell:1:0:label", "home")
    assert rc == 1 and "cell:1:2:label" in outp  # one left
    rc, outp, _ = hitl(monkeypatch, capsys, "alice", "bundle", "resolve", d, f, "cell:1:2:label", "away")
    assert rc == 0, outp
    assert B.load_batch(home, 1)["label"].tolist() == ["home0", "b", "away2", "away3"]
    with home.read() as c:
        assert B.get_batch(c, 1).out_for_review is None
        resolves = [e.payload for e in audit.entries(c) if e.action == "bundle.resolve"]
    assert {(p["conflict"], p["take"]) for p in resolves} == {("cell:1:0:label", "home"), ("cell:1:2:label", "away")}
    kept = next(p for p in resolves if p["take"] == "home")
    assert kept["away"] == "away0" and kept["discarded"]  # the discarded away work stays on record
    verify_ok(home)
    assert BD.plan_import(home, out).nothing_new
    rc, _, err = hitl(monkeypatch, capsys, "alice", "bundle", "resolve", d, f, "cell:1:0:label", "away")
    assert rc == 2 and "already resolved (kept home)" in err
    rc, _, err = hitl(monkeypatch, capsys, "alice", "bundle", "resolve", d, f, "cell:9:9:label", "away")
    assert rc == 2 and "no open conflict" in err


def test_same_value_on_both_sides_is_no_conflict(home, tmp_path):
    out = export(home, tmp_path)
    with Project.open(out) as bp:
        B.set_cell(bp, 1, 0, "label", "same", "carol")
    B.set_cell(home, 1, 0, "label", "same", "alice")
    assert BD.plan_import(home, out).conflicts == []
    BD.apply_import(home, out, user="alice")
    verify_ok(home)


def test_batch_decided_at_home_meanwhile_is_a_conflict(home, tmp_path):
    out = export(home, tmp_path)
    with Project.open(out) as bp:
        B.set_cell(bp, 2, 4, "label", "away", "carol")
        F.dismiss(bp, 2, "carol", "fine")
    B.decide(home, 2, "approve", "bob", signer=signer(home, "bob"))
    plan = BD.plan_import(home, out)
    assert [c.id for c in plan.conflicts] == ["batch:2"]
    assert "approve by bob" in plan.conflicts[0].home_detail
    # taking away onto an approved batch would edit approved data: refused, home unchanged
    before = snapshot(home)
    with pytest.raises(BD.BundleRefused, match="reopen it at home first"):
        BD.apply_import(home, out, {"batch:2": "away"}, user="alice")
    assert snapshot(home) == before
    r = BD.apply_import(home, out, {"batch:2": "home"}, user="alice")
    assert r.resolved == {"batch:2": "home"} and r.edits == 0
    with home.read() as c:
        assert approvals.approval_state(c, 2) == "valid"
    assert B.load_batch(home, 2).loc[4, "label"] == "a"
    assert F.get_flag.__name__  # flag 2 stays as home has it
    assert {f.id: f.status for f in F.list_flags(home)}[2] == "open"
    verify_ok(home)
    assert BD.plan_import(home, out).nothing_new


def test_decided_away_on_data_changed_at_home_is_a_conflict_take_away(home, tmp_path):
    out = export(home, tmp_path, to="bob")
    with Project.open(out) as bp:
        B.decide(bp, 2, "reject", "bob", comment="wrong site", signer=signer(bp, "bob"))
    B.set_cell(home, 2, 5, "label", "home", "alice")
    plan = BD.plan_import(home, out)
    assert [c.id for c in plan.conflicts] == ["batch:2"]
    r = BD.apply_import(home, out, {"batch:2": "away"}, user="alice")
    assert r.decisions == 1
    with home.read() as c:
        assert B.get_batch(c, 2).status == "rejected"
    verify_ok(home)


def test_approved_away_then_changed_at_home_warns(home, tmp_path):
    out = export(home, tmp_path, to="bob")
    with Project.open(out) as bp:
        B.decide(bp, 1, "approve", "bob", signer=signer(bp, "bob"))
    B.set_cell(home, 1, 3, "label", "home", "alice")
    r = BD.apply_import(home, out, {"batch:1": "away"}, user="alice")
    assert r.decisions == 1 and any("re-approve" in w for w in r.warnings)
    with home.read() as c:
        assert approvals.approval_state(c, 1) == "invalid"  # honest: the approval covers other data
    verify_ok(home)


def test_flag_resolved_differently_on_both_sides(home, tmp_path):
    out = export(home, tmp_path)
    with Project.open(out) as bp:
        F.dismiss(bp, 1, "carol", "correct as is")
    F.accept(home, 1, "alice")
    plan = BD.plan_import(home, out)
    assert [(c.id, c.home, c.away) for c in plan.conflicts] == [("flag:1", "accepted", "dismissed")]
    BD.apply_import(home, out, {"flag:1": "home"}, user="alice")
    assert {f.id: f.status for f in F.list_flags(home)}[1] == "accepted"
    assert BD.plan_import(home, out).nothing_new
    verify_ok(home)


# --- refusals ---------------------------------------------------------------------------------------------------


def _refused(home, path, match):
    before = snapshot(home)
    with pytest.raises(BD.BundleRefused, match=match) as exc:
        BD.plan_import(home, path)
    with pytest.raises(BD.BundleRefused, match=match):
        BD.apply_import(home, path, user="alice")
    assert "\n" not in str(exc.value)
    assert snapshot(home) == before


def _sql(path, *stmts):
    con = sqlite3.connect(path)
    for s, args in stmts:
        con.execute(s, args)
    con.commit()
    con.close()


def test_bundle_from_another_project_is_refused(home, tmp_path, monkeypatch, capsys):
    other = make_home(tmp_path / "other", tmp_path)
    out = export(other, tmp_path, name="other.hitlreview")
    other.close()
    _refused(home, out, "comes from another project")
    rc, _, err = hitl(monkeypatch, capsys, "alice", "bundle", "import", str(home.path), str(out))
    assert rc == 2 and err.count("\n") == 1 and "another project" in err


def test_bundle_from_a_copy_of_the_project_is_refused(home, tmp_path):
    home.close()
    shutil.copytree(home.path, tmp_path / "copy")
    copy = Project.open(tmp_path / "copy")
    out = export(copy, tmp_path, name="copy.hitlreview")
    copy.close()
    h = Project.open(home.path)
    try:
        _refused(h, out, "no record of exporting")
    finally:
        h.close()


@pytest.mark.parametrize("how, match", [
    ("blob", "fails its hash check: data"),
    ("edit", "fails its hash check"),
    ("sealed", "fails its hash check"),
    ("manifest", "fails its signature check"),
])
def test_tampered_bundle_is_refused(home, tmp_path, how, match):
    out = export(home, tmp_path)
    with Project.open(out) as bp:
        B.set_cell(bp, 1, 0, "label", "q", "carol")
    if how == "blob":
        con = sqlite3.connect(out)
        name, data = con.execute("SELECT name, data FROM bundle_data").fetchone()
        data = bytearray(data)
        data[len(data) // 2] ^= 0xFF
        con.execute("UPDATE bundle_data SET data = ? WHERE name = ?", (bytes(data), name))
        con.commit()
        con.close()
    elif how == "edit":
        _sql(out, ("UPDATE edits SET new_value = 'forged' WHERE new_value = 'q'", ()),
             ("UPDATE overrides SET value = 'forged' WHERE value = 'q'", ()))
    elif how == "sealed":
        _sql(out, ("UPDATE flags SET suggestion = 'forged'", ()))
        _sql(out, ("UPDATE audit SET user = 'mallory' WHERE id = 2", ()))
    else:
        con = sqlite3.connect(out)
        m = json.loads(con.execute("SELECT manifest FROM bundle_manifest").fetchone()[0])
        m["batches"][0]["revision"] += 5
        con.execute("UPDATE bundle_manifest SET manifest = ?", (json.dumps(m),))
        con.commit()
        con.close()
    _refused(home, out, match)


def test_bundle_signed_by_a_user_unknown_at_home_is_refused(home, tmp_path):
    out = export(home, tmp_path)
    con = sqlite3.connect(out)
    m = json.loads(con.execute("SELECT manifest FROM bundle_manifest").fetchone()[0])
    m["exported_by"] = "mallory"
    con.execute("UPDATE bundle_manifest SET manifest = ?", (json.dumps(m),))
    con.commit()
    con.close()
    _refused(home, out, "signed by 'mallory', who is not a user of this project")


def test_users_added_away_are_refused(home, tmp_path):
    out = export(home, tmp_path, to="alice")  # an admin reviewer could add users away: their work is refused
    with Project.open(out) as bp:
        identity.add_user(bp, "alice", "eve", "approver", "eve-secret1")
        B.decide(bp, 1, "approve", "eve", signer=identity.signer(bp, "eve", "eve-secret1"))
    _refused(home, out, "user.add by alice was done away")


def test_not_a_bundle_is_refused(home, tmp_path):
    junk = tmp_path / "junk.hitlreview"
    junk.write_bytes(b"PK\x03\x04 not sqlite")
    _refused(home, junk, "not a review bundle")
    with pytest.raises(HitlError):
        Project.open(junk)
