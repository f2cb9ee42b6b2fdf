"""Issue 3: users, roles, passwords, lockout, permissions, four-eyes and electronic signatures (core and CLI)."""
from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import select

from hitl_desktop.cli.main import main
from hitl_desktop.core import approvals, audit, db, identity, integrity
from hitl_desktop.core import batches as B
from hitl_desktop.core.errors import PermissionRefused
from hitl_desktop.core.project import Project

CSV = "id,x,label\n" + "".join(f"{i},{i * 0.5},{'ab'[i % 2]}\n" for i in range(8))
PW = {"alice": "alice-secret", "bob": "bob-secret1", "carol": "carol-secret", "dave": "dave-secret"}


@pytest.fixture(autouse=True)
def fast_kdf(monkeypatch):
    monkeypatch.setenv("HITL_SCRYPT_N", "1024")  # production is 2**16; tests need speed, not cost
    monkeypatch.delenv("HITL_PASSWORD", raising=False)
    monkeypatch.delenv("HITL_NEW_PASSWORD", raising=False)


def hitl(monkeypatch, capsys, user, *argv, password=None, new_password=None):
    """Run the real CLI as `user`; returns (exit code, stdout, stderr)."""
    monkeypatch.setenv("HITL_PASSWORD", PW.get(user, "x" * 8) if password is None else password)
    if new_password is not None:
        monkeypatch.setenv("HITL_NEW_PASSWORD", new_password)
    else:
        monkeypatch.delenv("HITL_NEW_PASSWORD", raising=False)
    capsys.readouterr()
    rc = main(["--as", user, *argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.fixture
def proj(tmp_path, monkeypatch, capsys):
    """alice (admin, created by init), bob (approver), carol (reviewer), dave (approver); 2 batches of 4 rows."""
    d = str(tmp_path / "p")
    assert hitl(monkeypatch, capsys, "alice", "init", d, "--full-name", "Alice Admin")[0] == 0
    (tmp_path / "d.csv").write_text(CSV)
    assert hitl(monkeypatch, capsys, "alice", "import", d, str(tmp_path / "d.csv"), "--batch-size", "4")[0] == 0
    for name, role, full in (("bob", "approver", "Bob Approver"), ("carol", "reviewer", "Carol Reviewer"),
                             ("dave", "approver", "Dave Second")):
        rc, _, err = hitl(monkeypatch, capsys, "alice", "users", d, "add", name, "--role", role, "--full-name", full,
                          new_password=PW[name])
        assert rc == 0, err
    return d


def actions(d):
    with Project.open(d) as p, p.read() as conn:
        return [e.action for e in audit.entries(conn)]


def batch_status(d, b=1):
    with Project.open(d) as p, p.read() as conn:
        return B.get_batch(conn, b).status


# --- users and passwords ---------------------------------------------------------------------------------------


def test_init_makes_creator_admin_with_hashed_password_and_key(proj):
    with Project.open(proj) as p, p.read() as conn:
        r = conn.execute(select(db.users).where(db.users.c.name == "alice")).first()
    assert r.role == "admin" and r.full_name == "Alice Admin"
    assert PW["alice"] not in (r.pw_hash + r.kdf + r.private_key_enc)
    assert json.loads(r.kdf)["alg"] == "scrypt" and len(bytes.fromhex(r.pw_hash)) == 32
    assert r.public_key and "ct" in json.loads(r.private_key_enc)


def test_users_list_json_and_roles(proj, monkeypatch, capsys):
    rc, out, _ = hitl(monkeypatch, capsys, "carol", "users", proj, "list", "--json")
    assert rc == 0
    users = {u["name"]: u for u in json.loads(out)}
    assert {n: u["role"] for n, u in users.items()} == {"alice": "admin", "bob": "approver", "carol": "reviewer",
                                                         "dave": "approver"}
    assert users["bob"]["full_name"] == "Bob Approver" and users["bob"]["key"]
    assert "pw_hash" not in out and "private" not in out


def test_only_admins_manage_users_and_the_refusal_is_recorded(proj, monkeypatch, capsys):
    rc, _, err = hitl(monkeypatch, capsys, "bob", "users", proj, "add", "eve", "--role", "admin",
                      new_password="eve-secret")
    assert rc == 2
    assert err.count("\n") == 1 and "managing users needs the admin role" in err and "bob is an approver" in err
    with Project.open(proj) as p:
        assert [u.name for u in identity.list_users(p)] == ["alice", "bob", "carol", "dave"]
    assert actions(proj)[-1] == "auth.refused"


def test_init_without_password_source_refuses_in_one_line(tmp_path, monkeypatch, capsys):
    rc = main(["--as", "zed", "init", str(tmp_path / "q")])  # no HITL_PASSWORD, no terminal under pytest
    err = capsys.readouterr().err
    assert rc == 2 and "HITL_PASSWORD" in err and not (tmp_path / "q" / "hitl.db").exists()


def test_short_password_refused(tmp_path, monkeypatch, capsys):
    rc, _, err = hitl(monkeypatch, capsys, "zed", "init", str(tmp_path / "q"), password="short")
    assert rc == 2 and "at least 8 characters" in err


def test_passwd_changes_own_password_and_old_signatures_still_verify(proj, monkeypatch, capsys):
    assert hitl(monkeypatch, capsys, "bob", "approve", proj, "1")[0] == 0
    rc, out, err = hitl(monkeypatch, capsys, "bob", "users", proj, "passwd", new_password="bob-new-secret")
    assert rc == 0, err
    assert hitl(monkeypatch, capsys, "bob", "reopen", proj, "1")[0] == 2  # old password no longer works
    assert hitl(monkeypatch, capsys, "bob", "reopen", proj, "1", password="bob-new-secret")[0] == 0
    rc, out, _ = hitl(monkeypatch, capsys, "bob", "audit", proj, "verify")
    assert rc == 0 and "2 signatures valid" in out


# --- attacks: wrong password, lockout, unknown and disabled users ------------------------------------------------


def test_wrong_password_is_refused_counted_and_locks_after_five(proj, monkeypatch, capsys):
    for i in range(1, 5):
        rc, _, err = hitl(monkeypatch, capsys, "bob", "approve", proj, "1", password="guess-wrong")
        assert rc == 2 and f"wrong password for 'bob' ({i} of 5" in err
    rc, _, err = hitl(monkeypatch, capsys, "bob", "approve", proj, "1", password="guess-wrong")
    assert rc == 2 and "locked for 60 seconds" in err
    # Even the right password is refused during the lockout.
    rc, _, err = hitl(monkeypatch, capsys, "bob", "approve", proj, "1")
    assert rc == 2 and "locked" in err
    assert batch_status(proj) == "queued"
    with Project.open(proj) as p, p.read() as conn:
        fails = [e.payload for e in audit.entries(conn) if e.action == "auth.failed"]
    assert [f.get("failures") for f in fails[:5]] == [1, 2, 3, 4, 5]
    assert fails[4]["locked_until"] and fails[5]["reason"] == "locked"
    # A minute later the right password works again.
    later = identity._now() + timedelta(seconds=61)
    monkeypatch.setattr(identity, "_now", lambda: later)
    rc, out, err = hitl(monkeypatch, capsys, "bob", "approve", proj, "1")
    assert rc == 0, err


def test_success_resets_the_failure_count(proj, monkeypatch, capsys):
    for _ in range(4):
        hitl(monkeypatch, capsys, "bob", "claim", proj, "1", password="nope-nope")
    assert hitl(monkeypatch, capsys, "bob", "claim", proj, "1")[0] == 0
    with Project.open(proj) as p, p.read() as conn:
        assert identity.get_user(conn, "bob").failed_logins == 0


def test_unknown_user_is_refused_in_one_line_and_recorded(proj, monkeypatch, capsys):
    rc, _, err = hitl(monkeypatch, capsys, "mallory", "edit", proj, "1", "0", "x", "9")
    assert rc == 2 and err.count("\n") == 1 and "'mallory' is not a user of this project" in err
    with Project.open(proj) as p:
        assert B.edit_history(p, 1) == []
        with pytest.raises(PermissionRefused, match="not a user"):
            B.set_cell(p, 1, 0, "x", "9", "mallory")  # the core refuses too (same rules for the window)
    assert actions(proj)[-1] == "auth.refused"


def test_disabled_user_cannot_act_and_history_stays(proj, monkeypatch, capsys):
    assert hitl(monkeypatch, capsys, "carol", "edit", proj, "1", "0", "x", "9")[0] == 0
    rc, out, _ = hitl(monkeypatch, capsys, "alice", "users", proj, "disable", "carol")
    assert rc == 0 and "disabled" in out
    rc, _, err = hitl(monkeypatch, capsys, "carol", "edit", proj, "1", "1", "x", "9")
    assert rc == 2 and "user 'carol' is disabled" in err
    with Project.open(proj) as p:
        assert [e.user for e in B.edit_history(p, 1)] == ["carol"]
        assert {u.name: u.disabled for u in identity.list_users(p)}["carol"] is True
        with pytest.raises(PermissionRefused, match="disabled"):
            identity.authenticate(p, "carol", PW["carol"])
    assert hitl(monkeypatch, capsys, "bob", "audit", proj, "verify")[0] == 0


def test_last_admin_cannot_be_disabled(proj, monkeypatch, capsys):
    rc, _, err = hitl(monkeypatch, capsys, "alice", "users", proj, "disable", "alice")
    assert rc == 2 and "last active admin" in err


# --- permissions and four-eyes -------------------------------------------------------------------------------


def test_reviewer_cannot_approve_and_the_refusal_names_the_role(proj, monkeypatch, capsys):
    rc, _, err = hitl(monkeypatch, capsys, "carol", "approve", proj, "1")
    assert rc == 2 and err.count("\n") == 1
    assert "approving a batch needs the approver role; carol is a reviewer" in err
    assert batch_status(proj) == "queued"
    with Project.open(proj) as p, p.read() as conn:
        last = audit.entries(conn)[-1]
    assert (last.action, last.user, last.payload["needs"]) == ("auth.refused", "carol", "approver")


def test_reviewer_may_import_and_edit_but_not_set_policy(proj, monkeypatch, capsys, tmp_path):
    (tmp_path / "e.csv").write_text("a\n1\n")
    assert hitl(monkeypatch, capsys, "carol", "import", proj, str(tmp_path / "e.csv"))[0] == 0
    assert hitl(monkeypatch, capsys, "carol", "edit", proj, "1", "0", "x", "9")[0] == 0
    rc, _, err = hitl(monkeypatch, capsys, "carol", "policy", proj, "four-eyes", "off")
    assert rc == 2 and "needs the admin role" in err


def test_editor_cannot_approve_own_batch_four_eyes(proj, monkeypatch, capsys):
    assert hitl(monkeypatch, capsys, "bob", "edit", proj, "1", "0", "x", "9")[0] == 0
    assert hitl(monkeypatch, capsys, "bob", "undo", proj, "1")[0] == 0  # any edit counts, even undone
    rc, _, err = hitl(monkeypatch, capsys, "bob", "approve", proj, "1")
    assert rc == 2 and err.count("\n") == 1 and "four-eyes policy: bob edited batch 1" in err
    assert batch_status(proj) == "in_review"
    assert hitl(monkeypatch, capsys, "dave", "approve", proj, "1")[0] == 0  # a second person may


def test_admin_can_switch_four_eyes_off_and_it_is_recorded(proj, monkeypatch, capsys):
    hitl(monkeypatch, capsys, "bob", "edit", proj, "1", "0", "x", "9")
    rc, out, _ = hitl(monkeypatch, capsys, "alice", "policy", proj, "four-eyes", "off")
    assert rc == 0 and "recorded" in out
    with Project.open(proj) as p, p.read() as conn:
        e = audit.entries(conn)[-1]
    assert (e.action, e.user, e.payload["old"], e.payload["new"]) == ("policy.set", "alice", "on", "off")
    assert hitl(monkeypatch, capsys, "bob", "approve", proj, "1")[0] == 0
    rc, out, _ = hitl(monkeypatch, capsys, "bob", "policy", proj, "--json")
    assert json.loads(out) == {"four-eyes": "off"}
    assert hitl(monkeypatch, capsys, "bob", "audit", proj, "verify")[0] == 0


def test_core_decide_requires_a_signature_and_checks_roles(proj):
    with Project.open(proj) as p:
        with pytest.raises(PermissionRefused, match="electronic signature"):
            B.decide(p, 1, "approve", "bob")
        with pytest.raises(PermissionRefused, match="needs the approver role"):
            B.decide(p, 1, "approve", "carol", signer=identity.signer(p, "carol", PW["carol"]))
        with pytest.raises(PermissionRefused, match="cannot sign for"):
            B.decide(p, 1, "approve", "dave", signer=identity.signer(p, "bob", PW["bob"]))
        with p.read() as conn:
            assert B.get_batch(conn, 1).status == "queued"
        s = identity.signer(p, "bob", PW["bob"])
        B.decide(p, 1, "approve", "bob", signer=s)
        B.decide(p, 1, "reopen", "dave", signer=identity.signer(p, "dave", PW["dave"]))
        with pytest.raises(PermissionRefused, match="already used"):
            B.decide(p, 1, "approve", "bob", signer=s)  # one password, one signature


def test_model_four_eyes_helper(proj):
    with Project.open(proj) as p, p.read() as conn:
        assert "trained this model" in identity.check_four_eyes_model(conn, "bob", "bob")
        assert identity.check_four_eyes_model(conn, "dave", "bob") is None


def test_project_created_in_core_without_password_sets_it_later(tmp_path, monkeypatch):
    p = Project.init(tmp_path / "p", user="tess")
    with pytest.raises(PermissionRefused, match="no password yet"):
        identity.signer(p, "tess", "whatever1")
    identity.set_password(p, "tess", "tess-secret")
    with pytest.raises(PermissionRefused, match="current password"):
        identity.set_password(p, "tess", "other-secret")
    identity.signer(p, "tess", "tess-secret")
    assert integrity.verify_project(p).ok
    p.close()


# --- signatures ----------------------------------------------------------------------------------------------


def test_approval_is_a_signature_with_name_time_meaning(proj, monkeypatch, capsys):
    rc, out, err = hitl(monkeypatch, capsys, "bob", "approve", proj, "1", password="not-bobs-pw")
    assert rc == 2 and batch_status(proj) == "queued"
    rc, out, _ = hitl(monkeypatch, capsys, "bob", "approve", proj, "1", "--json")
    d = json.loads(out)
    assert rc == 0 and d["full_name"] == "Bob Approver" and d["meaning"] == "approved for training" and d["signed"]
    assert d["ts"].endswith("Z")
    rc, _, _ = hitl(monkeypatch, capsys, "bob", "reject", proj, "2", "--comment", "units wrong")
    with Project.open(proj) as p, p.read() as conn:
        row = conn.execute(select(db.decisions).where(db.decisions.c.batch_id == 2)).first()
        assert row.meaning == "rejected: units wrong" and row.signature
        body = json.loads(row.signed_payload)
        assert body["content_hash"] == B.get_batch(conn, 2).content_hash
        assert body["chain_head"]["id"] == row.audit_id - 1 and body["project"] == p.project_id
        assert approvals.approval_state(conn, 1) == "valid" and approvals.approval_state(conn, 2) == "none"


def test_approval_becomes_invalid_when_content_changes_by_any_route(proj, monkeypatch, capsys):
    hitl(monkeypatch, capsys, "carol", "edit", proj, "1", "0", "x", "9")
    hitl(monkeypatch, capsys, "bob", "approve", proj, "1")
    import sqlite3

    con = sqlite3.connect(f"{proj}/hitl.db")
    con.execute("UPDATE overrides SET value='10' WHERE batch_id=1")
    con.commit()
    con.close()
    with Project.open(proj) as p, p.read() as conn:
        state, why = approvals.approval_check(conn, 1)
    assert state == "invalid" and "changed after it was approved" in why


def test_unauthenticated_tools_cannot_forge_a_signature(proj):
    """A key made up by whoever edits the database is not the key the chain recorded for the signer."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    with Project.open(proj) as p:
        forged = identity.Session("bob", "Bob Approver", "approver", identity._b64(
            Ed25519PrivateKey.generate().public_key().public_bytes_raw()), Ed25519PrivateKey.generate())
        with pytest.raises(PermissionRefused, match="can no longer sign"):
            B.decide(p, 1, "approve", "bob", signer=identity.session_signer(forged))


def test_signature_cost_with_production_kdf_is_under_300ms(proj, monkeypatch):
    import time

    monkeypatch.delenv("HITL_SCRYPT_N")
    with Project.open(proj) as p:
        identity.set_password(p, "dave", "dave-production", old_password=PW["dave"])
        t = time.perf_counter()
        B.decide(p, 1, "approve", "dave", signer=identity.signer(p, "dave", "dave-production"))
        took = time.perf_counter() - t
        with p.read() as conn:
            assert json.loads(identity._row(conn, "dave").kdf)["n"] == identity.PRODUCTION_KDF.n
    assert took < 0.6  # 300 ms target, measured by bench/bench_audit.py; slack for loaded CI machines
