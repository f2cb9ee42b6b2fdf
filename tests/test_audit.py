"""Issue 3: the tamper-evident audit trail. Each test edits hitl.db by hand, as an attacker with a SQLite tool
would, and checks that `hitl audit DIR verify` exits 1 naming what was broken."""
from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from hitl_desktop.cli.main import main
from hitl_desktop.core import approvals, audit, identity, integrity
from hitl_desktop.core.project import Project

CSV = "id,x,label\n" + "".join(f"{i},{i * 0.5},{'ab'[i % 2]}\n" for i in range(8))
PW = {"alice": "alice-secret", "bob": "bob-secret1", "carol": "carol-secret"}


@pytest.fixture(autouse=True)
def fast_kdf(monkeypatch):
    monkeypatch.setenv("HITL_SCRYPT_N", "1024")


def hitl(monkeypatch, capsys, user, *argv, new_password=None):
    monkeypatch.setenv("HITL_PASSWORD", PW.get(user, "whatever1"))
    if new_password:
        monkeypatch.setenv("HITL_NEW_PASSWORD", new_password)
    capsys.readouterr()
    rc = main(["--as", user, *argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.fixture
def proj(tmp_path, monkeypatch, capsys):
    """carol edits batch 1 twice (row 0 and row 1) and batch 2 once; bob approves batch 1; carol edits batch 2 again after.

    Audit ids: 1 init, 2 alice's key, 3 import, 4 add bob, 5 add carol, 6-7 edits b1, 8 edit b2, 9 approve b1,
    10 edit b2 (after the signature).
    """
    d = str(tmp_path / "p")
    assert hitl(monkeypatch, capsys, "alice", "init", d)[0] == 0
    (tmp_path / "d.csv").write_text(CSV)
    assert hitl(monkeypatch, capsys, "alice", "import", d, str(tmp_path / "d.csv"), "--batch-size", "4")[0] == 0
    hitl(monkeypatch, capsys, "alice", "users", d, "add", "bob", "--role", "approver", "--full-name", "Bob B",
         new_password=PW["bob"])
    hitl(monkeypatch, capsys, "alice", "users", d, "add", "carol", "--role", "reviewer", new_password=PW["carol"])
    for b, row, v in ((1, 0, "9"), (1, 1, "8"), (2, 4, "7")):
        assert hitl(monkeypatch, capsys, "carol", "edit", d, str(b), str(row), "x", v)[0] == 0
    assert hitl(monkeypatch, capsys, "bob", "approve", d, "1")[0] == 0
    assert hitl(monkeypatch, capsys, "carol", "edit", d, "2", "5", "x", "6")[0] == 0
    return d


def sql(d, *statements):
    con = sqlite3.connect(f"{d}/hitl.db")  # foreign keys off, as in any SQLite browser
    for s in statements:
        con.execute(s)
    con.commit()
    con.close()


def verify(monkeypatch, capsys, d):
    rc, out, err = hitl(monkeypatch, capsys, "carol", "audit", d, "verify")
    assert out.count("\n") == 1, out  # one line either way
    return rc, out


def recompute_chain(d, start=1):
    """What a knowledgeable attacker does after editing: rewrite every hash from `start` on so the chain links."""
    con = sqlite3.connect(f"{d}/hitl.db")
    prev = audit.GENESIS if start == 1 else con.execute("SELECT hash FROM audit WHERE id=?", (start - 1,)).fetchone()[0]
    rows = con.execute("SELECT id, ts, user, action, target, payload FROM audit WHERE id>=? ORDER BY id",
                       (start,)).fetchall()
    con.execute("UPDATE audit SET hash = 'tmp' || id WHERE id>=?", (start,))  # hash is UNIQUE
    for i, ts, user, action, target, payload in rows:
        h = audit.entry_hash(i, ts, user, action, target, payload, prev)
        con.execute("UPDATE audit SET prev_hash=?, hash=? WHERE id=?", (prev, h, i))
        prev = h
    con.commit()
    con.close()


# --- the untouched project -----------------------------------------------------------------------------------


def test_verify_untouched_project_exits_0_with_summary(proj, monkeypatch, capsys):
    rc, out = verify(monkeypatch, capsys, proj)
    assert rc == 0 and out.startswith("ok: 10 audit entries chained, 1 signatures valid")
    rc, out, _ = hitl(monkeypatch, capsys, "carol", "audit", proj, "verify", "--json")
    rep = json.loads(out)
    assert rep["ok"] and rep["head"]["id"] == 10 and rep["problems"] == []


def test_project_copied_to_another_folder_still_verifies(proj, tmp_path, monkeypatch, capsys):
    copy = tmp_path / "elsewhere" / "copy"
    shutil.copytree(proj, copy)
    rc, out = verify(monkeypatch, capsys, str(copy))
    assert rc == 0 and "1 signatures valid" in out
    with Project.open(copy) as p, p.read() as conn:
        assert approvals.approval_state(conn, 1) == "valid"


def test_audit_lists_every_state_change(proj, monkeypatch, capsys):
    rc, out, _ = hitl(monkeypatch, capsys, "carol", "audit", proj, "--json")
    entries = json.loads(out)
    assert [e["action"] for e in entries] == [
        "project.init", "user.password", "source.import", "user.add", "user.add",
        "cell.edit", "cell.edit", "cell.edit", "batch.approve", "cell.edit"]
    assert entries[5]["user"] == "carol" and entries[5]["payload"]["old"] == "0" and entries[5]["payload"]["new"] == "9"
    rc, out, _ = hitl(monkeypatch, capsys, "carol", "audit", proj, "--target", "batch:1")
    assert rc == 0 and "approved for training [signed]" in out and "4 of 10" not in out


# --- attacks ---------------------------------------------------------------------------------------------------


def test_changing_a_cell_value_is_detected(proj, monkeypatch, capsys):
    sql(proj, "UPDATE overrides SET value='1000' WHERE batch_id=2 AND row_id=4")
    rc, out = verify(monkeypatch, capsys, proj)
    assert rc == 1 and "batch 2 row 4 'x' holds '1000'" in out and "recorded edits give '7'" in out


def test_changing_an_original_in_the_data_file_is_detected(proj, monkeypatch, capsys):
    """The originals live in an Arrow file beside hitl.db: its bytes must still hash to what the import recorded."""
    data = next((Path(proj) / "data").glob("*.arrow"))
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0x01  # one bit of one byte
    data.write_bytes(bytes(raw))
    rc, out = verify(monkeypatch, capsys, proj)
    assert rc == 1 and "the originals file of source 1" in out and "was altered" in out


def test_deleting_the_data_file_is_detected(proj, monkeypatch, capsys):
    next((Path(proj) / "data").glob("*.arrow")).unlink()
    rc, out = verify(monkeypatch, capsys, proj)
    assert rc == 1 and "the originals file of source 1" in out and "is missing" in out


def test_changing_an_edit_record_is_detected(proj, monkeypatch, capsys):
    sql(proj, "UPDATE edits SET new_value='5' WHERE id=1")
    rc, out = verify(monkeypatch, capsys, proj)
    assert rc == 1 and "edit 1 does not match audit entry 6" in out


def test_deleting_an_edit_is_detected(proj, monkeypatch, capsys):
    sql(proj, "DELETE FROM overrides WHERE edit_id=3", "DELETE FROM edits WHERE id=3")
    rc, out = verify(monkeypatch, capsys, proj)
    assert rc == 1 and "audit entry 8 (cell.edit by carol) has no row in edits" in out


def test_inserting_an_edit_is_detected(proj, monkeypatch, capsys):
    sql(proj, "INSERT INTO edits (batch_id,row_id,\"column\",old_value,new_value,kind,user,ts) "
              "VALUES (2,6,'x','3.0','99','edit','carol','2020-01-01T00:00:00Z')")
    rc, out = verify(monkeypatch, capsys, proj)
    assert rc == 1 and "edit 5" in out and "has no audit entry" in out


def test_rewriting_a_decisions_signer_is_detected(proj, monkeypatch, capsys):
    sql(proj, "UPDATE decisions SET user='carol', full_name='carol' WHERE batch_id=1")
    rc, out = verify(monkeypatch, capsys, proj)
    assert rc == 1 and "decision 1 does not match audit entry 9" in out and "user" in out


def test_rewriting_signer_in_decision_and_trail_is_detected_by_the_signature(proj, monkeypatch, capsys):
    con = sqlite3.connect(f"{proj}/hitl.db")
    payload = json.loads(con.execute("SELECT payload FROM audit WHERE id=9").fetchone()[0])
    payload.update(user="alice", full_name="alice")
    con.execute("UPDATE audit SET user='alice', payload=? WHERE id=9", (json.dumps(payload, sort_keys=True),))
    con.execute("UPDATE decisions SET user='alice', full_name='alice' WHERE id=1")
    con.commit()
    con.close()
    recompute_chain(proj, 9)
    rc, out = verify(monkeypatch, capsys, proj)
    assert rc == 1 and "signature of decision 1" in out and "does not match what was signed" in out


def test_reordering_the_chain_is_detected(proj, monkeypatch, capsys):
    sql(proj, "UPDATE audit SET id=-7 WHERE id=7", "UPDATE audit SET id=7 WHERE id=6", "UPDATE audit SET id=6 WHERE id=-7")
    rc, out = verify(monkeypatch, capsys, proj)
    assert rc == 1 and "audit entry 6" in out and ("altered" in out or "does not link" in out)


def test_deleting_an_audit_entry_is_detected(proj, monkeypatch, capsys):
    sql(proj, "DELETE FROM audit WHERE id=4")
    rc, out = verify(monkeypatch, capsys, proj)
    assert rc == 1 and "audit entry 4 is missing" in out


def test_recomputed_chain_after_an_edit_is_detected_through_the_signature(proj, monkeypatch, capsys):
    """The attacker changes carol's first edit everywhere (edit, override, trail, content hash) and rewrites
    every chain hash: the chain links again, but bob's signature bound the old chain head."""
    from hitl_desktop.core.batches import batch_content_hash

    con = sqlite3.connect(f"{proj}/hitl.db")
    payload = json.loads(con.execute("SELECT payload FROM audit WHERE id=6").fetchone()[0])
    payload["new"] = "5"
    con.execute("UPDATE audit SET payload=? WHERE id=6", (json.dumps(payload, sort_keys=True, separators=(",", ":")),))
    con.execute("UPDATE edits SET new_value='5' WHERE id=1")
    con.execute("UPDATE overrides SET value='5' WHERE edit_id=1")
    base = con.execute("SELECT base_key FROM batches WHERE id=1").fetchone()[0]
    ov = con.execute("SELECT row_id, \"column\", value FROM overrides WHERE batch_id=1").fetchall()
    h = batch_content_hash(base, ov)
    con.execute("UPDATE batches SET content_hash=? WHERE id=1", (h,))
    con.execute("UPDATE decisions SET content_hash=? WHERE id=1", (h,))
    a9 = json.loads(con.execute("SELECT payload FROM audit WHERE id=9").fetchone()[0])
    a9["content_hash"] = h
    con.execute("UPDATE audit SET payload=? WHERE id=9", (json.dumps(a9, sort_keys=True, separators=(",", ":")),))
    con.commit()
    con.close()
    recompute_chain(proj, 6)
    rc, out = verify(monkeypatch, capsys, proj)
    assert rc == 1 and "signature of decision 1" in out and "bob" in out
    with Project.open(proj) as p:
        rep = integrity.verify_project(p)
        assert not any("chain" in m or "altered: its hash" in m for _, m in rep.problems)  # the chain itself links
        with p.read() as conn:
            assert approvals.approval_state(conn, 1) == "invalid"


def test_swapping_a_users_key_to_forge_a_signature_is_detected(proj, monkeypatch, capsys):
    """An attacker makes their own key pair for bob and signs a new approval of batch 2 with it."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    creds = identity.credential_columns("bob", "attacker-pw", private_key=key)
    sql(proj, f"UPDATE users SET public_key='{creds['public_key']}', private_key_enc='{creds['private_key_enc']}', "
              f"pw_hash='{creds['pw_hash']}', kdf='{creds['kdf']}' WHERE name='bob'")
    rc, out = verify(monkeypatch, capsys, proj)
    assert rc == 1 and "user 'bob' does not match the trail (public_key" in out
    # Even when the attacker also signs with it, the trail's key for bob decides.
    monkeypatch.setenv("HITL_PASSWORD", "attacker-pw")
    with Project.open(proj) as p:
        from hitl_desktop.core import batches as B

        B.decide(p, 2, "approve", "bob", signer=identity.signer(p, "bob", "attacker-pw"))
        rep = integrity.verify_project(p)
        with p.read() as conn:
            assert approvals.approval_state(conn, 2) == "invalid"
    assert any("was not made with the key recorded for bob" in m for _, m in rep.problems)


def test_appending_an_unsigned_approval_with_valid_hashes_is_detected(proj, monkeypatch, capsys):
    con = sqlite3.connect(f"{proj}/hitl.db")
    prev = con.execute("SELECT hash FROM audit WHERE id=10").fetchone()[0]
    ch = con.execute("SELECT content_hash FROM batches WHERE id=2").fetchone()[0]
    ts = "2030-01-01T00:00:00.000000Z"
    payload = json.dumps({"batch": 2, "action": "approve", "meaning": "approved for training", "content_hash": ch,
                          "comment": None, "full_name": "Bob B", "signature": None}, sort_keys=True)
    h = audit.entry_hash(11, ts, "bob", "batch.approve", "batch:2", payload, prev)
    con.execute("INSERT INTO audit VALUES (11,?,?,?,?,?,?,?)", (ts, "bob", "batch.approve", "batch:2", payload, prev, h))
    con.execute("INSERT INTO decisions (batch_id, action, user, full_name, ts, meaning, content_hash, audit_id) "
                "VALUES (2,'approve','bob','Bob B',?,'approved for training',?,11)", (ts, ch))
    con.execute("UPDATE batches SET status='approved' WHERE id=2")
    con.commit()
    con.close()
    rc, out = verify(monkeypatch, capsys, proj)
    assert rc == 1 and "signature of decision 2 (approve of batch 2 by bob, audit entry 11) is not signed" in out


def test_status_policy_and_role_changes_by_hand_are_detected(proj, monkeypatch, capsys):
    sql(proj, "UPDATE batches SET status='approved' WHERE id=2")
    rc, out = verify(monkeypatch, capsys, proj)
    assert rc == 1 and "batch 2 is approved but its last recorded decision is none" in out
    sql(proj, "UPDATE batches SET status='in_review' WHERE id=2", "UPDATE meta SET value='off' WHERE key='policy.four_eyes'")
    rc, out = verify(monkeypatch, capsys, proj)
    assert rc == 1 and "policy four_eyes is 'off'" in out
    sql(proj, "UPDATE meta SET value='on' WHERE key='policy.four_eyes'", "UPDATE users SET role='admin' WHERE name='carol'")
    rc, out = verify(monkeypatch, capsys, proj)
    assert rc == 1 and "user 'carol' does not match the trail (role" in out
    sql(proj, "UPDATE users SET role='reviewer' WHERE name='carol'")
    assert verify(monkeypatch, capsys, proj)[0] == 0


def test_first_problem_in_chain_order_is_named(proj, monkeypatch, capsys):
    sql(proj, "UPDATE edits SET new_value='5' WHERE id=4", "UPDATE audit SET user='x' WHERE id=7")
    rc, out = verify(monkeypatch, capsys, proj)
    assert rc == 1 and out.startswith("TAMPERED: audit entry 7") and "more problems" in out


def test_recomputed_chain_after_an_earlier_edit_elsewhere_breaks_the_bound_chain_head(proj, monkeypatch, capsys):
    """Rewriting an edit of batch 2 made before bob signed batch 1 leaves batch 1's content alone, but bob's
    signature bound the chain head at signing, which no longer exists."""
    from hitl_desktop.core.batches import batch_content_hash

    con = sqlite3.connect(f"{proj}/hitl.db")
    payload = json.loads(con.execute("SELECT payload FROM audit WHERE id=8").fetchone()[0])
    payload["new"] = "70"
    con.execute("UPDATE audit SET payload=? WHERE id=8", (json.dumps(payload, sort_keys=True, separators=(",", ":")),))
    con.execute("UPDATE edits SET new_value='70' WHERE id=3")
    con.execute("UPDATE overrides SET value='70' WHERE edit_id=3")
    base = con.execute("SELECT base_key FROM batches WHERE id=2").fetchone()[0]
    ov = con.execute("SELECT row_id, \"column\", value FROM overrides WHERE batch_id=2").fetchall()
    con.execute("UPDATE batches SET content_hash=? WHERE id=2", (batch_content_hash(base, ov),))
    con.commit()
    con.close()
    recompute_chain(proj, 8)
    rc, out = verify(monkeypatch, capsys, proj)
    assert rc == 1 and "signature of decision 1" in out and "signed over a different audit history (entry 8" in out


@pytest.mark.parametrize("target", [None, "batch:1", 'q"uote\\', "ünï\u2028\x01"])
def test_entry_hash_equals_canonical_json(target):
    import hashlib

    from hitl_desktop.core.util import canonical_json

    payload = canonical_json({"new": "é\n\t\"x\"", "old": None, "emoji": "🙂"})
    fields = {"id": 12345, "ts": "2026-01-01T00:00:00.000001Z", "user": "zoë", "action": "cell.edit",
              "target": target, "payload": payload, "prev": "ab" * 32}
    want = hashlib.sha256(canonical_json(fields).encode("utf-8")).hexdigest()
    assert audit.entry_hash(12345, fields["ts"], "zoë", "cell.edit", target, payload, "ab" * 32) == want
