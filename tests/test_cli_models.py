"""Issue 7 (CLI): approve batches -> train -> evaluate -> approve model (second person) -> export -> predict on a
held-out CSV, and the refusals along the way, through the real `hitl` command."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import update

from hitl_desktop.cli.main import main
from hitl_desktop.core import db
from hitl_desktop.core import models as M
from hitl_desktop.core.project import Project

PW = {"alice": "alice-secret", "bob": "bob-secret1", "carol": "carol-secret", "dave": "dave-secret"}


def rows(n, seed, start=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    kind = rng.choice(["a", "b", "c"], size=n)
    y = np.where(x + (kind == "a") > 0.3, "good", "bad")
    return pd.DataFrame({"x": np.round(x, 3), "kind": kind, "w": rng.integers(0, 5, size=n), "label": y})


@pytest.fixture(autouse=True)
def _env(monkeypatch, tmp_path):
    monkeypatch.setenv("HITL_SCRYPT_N", "1024")
    monkeypatch.setenv("HITL_PIPELINE_INPROCESS", "1")
    monkeypatch.setenv(M.TRUST_ENV, str(tmp_path / "trust.json"))
    monkeypatch.delenv("HITL_NEW_PASSWORD", raising=False)


def hitl(monkeypatch, capsys, user, *argv, new_password=None):
    monkeypatch.setenv("HITL_PASSWORD", PW[user])
    if new_password:
        monkeypatch.setenv("HITL_NEW_PASSWORD", new_password)
    capsys.readouterr()
    rc = main(["--as", user, *argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.fixture
def proj(tmp_path, monkeypatch, capsys):
    d = str(tmp_path / "p")
    assert hitl(monkeypatch, capsys, "alice", "init", d, "--full-name", "Alice Admin")[0] == 0
    rows(200, 1).to_csv(tmp_path / "d.csv", index=False)
    assert hitl(monkeypatch, capsys, "alice", "import", d, str(tmp_path / "d.csv"), "--batch-size", "50")[0] == 0
    for name, role, full in (("bob", "approver", "Bob Approver"), ("carol", "reviewer", "Carol Reviewer"),
                             ("dave", "approver", "Dave Second")):
        rc, _, err = hitl(monkeypatch, capsys, "alice", "users", d, "add", name, "--role", role, "--full-name", full,
                          new_password=PW[name])
        assert rc == 0, err
    return d


def test_end_to_end_train_evaluate_approve_export_predict(proj, tmp_path, monkeypatch, capsys):
    run = lambda user, *a: hitl(monkeypatch, capsys, user, *a)  # noqa: E731
    for b in (1, 2, 3):
        assert run("bob", "approve", proj, str(b))[0] == 0
    rc, out, err = run("alice", "train", proj, "--target", "label")
    assert rc == 2 and err.startswith("hitl: error: training refused: not approved: batch 4") and "--approved-only" in err
    rc, out, err = run("alice", "train", proj, "--target", "label", "--approved-only")
    assert rc == 0, err
    assert "left out 50 rows of 1 batch(es) not validly approved: 4" in out and "model 1 (default:v1)" in out
    assert run("bob", "approve", proj, "4")[0] == 0
    rc, out, err = run("carol", "train", proj, "--target", "label", "--json")
    assert rc == 0, err
    res = json.loads(out)
    m = res["model"]
    assert res["reused"] is False and m["id"] == 2 and m["trained_by"] == "carol"
    assert m["metrics"]["holdout"]["confusion_matrix"] and m["metrics"]["cv"]["f1_macro"]["mean"] is not None
    assert m["compared_with"]["version"] == 1
    assert len(m["lineage"]["batches"]) == 4 and all(b["approval"]["user"] == "bob" for b in m["lineage"]["batches"])
    # unchanged inputs: the cache is reused, no new version
    rc, out, _ = run("carol", "train", proj, "--target", "label")
    assert rc == 0 and "model 2 (default:v2) is up to date" in out
    rc, out, _ = run("carol", "models", proj)
    assert rc == 0 and "default:v2" in out and "trained" in out and "auc" in out
    rc, out, _ = run("carol", "model", proj, "default:v2")
    assert "lineage:" in out and "approved by Bob Approver (bob)" in out and "confusion matrix" in out
    assert "compared with default:v1" in out and "code: hitl-desktop" in out
    # four-eyes: the trainer cannot approve; a reviewer lacks the role; a second person signs
    rc, _, err = run("bob", "approve-model", proj, "1")
    assert rc == 0, err  # alice trained v1: bob may approve it
    rc, _, err = run("alice", "approve-model", proj, "2")
    assert rc == 0  # alice is admin and did not train v2 (carol did)
    rc, _, err = run("dave", "reject-model", proj, "2", "--comment", "too late")
    assert rc == 2 and "already approved" in err
    out_dir = tmp_path / "bundle"
    rc, _, err = run("bob", "export", proj, "2", str(out_dir))
    assert rc == 2 and "run the export as alice" in err and not out_dir.exists()
    rc, out, err = run("alice", "export", proj, "2", str(out_dir), "--intended-use", "triage", "--no-onnx")
    assert rc == 0, err
    assert "manifest signed by alice" in out and (out_dir / "manifest.sig").is_file()
    rows(30, 9).drop(columns=["label"]).to_csv(tmp_path / "new.csv", index=False)
    rc, out, err = run("dave", "predict", str(out_dir), str(tmp_path / "new.csv"), "--out", str(tmp_path / "p.csv"),
                       "--json")
    assert rc == 0, err
    assert json.loads(out)["rows"] == 30
    pred = pd.read_csv(tmp_path / "p.csv")
    assert list(pred.columns) == ["row", "prediction", "p_bad", "p_good"] and len(pred) == 30
    rc, out, _ = run("dave", "predict", str(out_dir), str(tmp_path / "new.csv"))
    assert rc == 0 and out.splitlines()[0] == "row,prediction,p_bad,p_good"
    rc, out, err = run("dave", "audit", proj, "verify")
    assert rc == 0 and out.startswith("ok:"), out + err


@pytest.fixture
def approved(proj, monkeypatch, capsys):
    for b in (1, 2, 3, 4):
        assert hitl(monkeypatch, capsys, "bob", "approve", proj, str(b))[0] == 0
    rc, _, err = hitl(monkeypatch, capsys, "alice", "train", proj, "--target", "label", "--model", "forest",
                      "--param", "n_estimators=15")
    assert rc == 0, err
    return proj


def test_model_refusals(approved, tmp_path, monkeypatch, capsys):
    d = approved
    run = lambda user, *a: hitl(monkeypatch, capsys, user, *a)  # noqa: E731
    rc, _, err = run("alice", "train", d, "--target", "nope")
    assert rc == 2 and "target column 'nope' is not in the data" in err
    rc, _, err = run("alice", "train", d, "--target", "label", "--param", "bogus=1")
    assert rc == 2 and "logreg has no parameter 'bogus'" in err
    rc, _, err = run("alice", "approve-model", d, "1")
    assert rc == 2 and "four-eyes policy: alice trained this model" in err
    rc, _, err = run("carol", "approve-model", d, "1")
    assert rc == 2 and "needs the approver role" in err
    rc, _, err = run("bob", "export", d, "1", str(tmp_path / "o"))
    assert rc == 2 and "is not approved" in err and not (tmp_path / "o").exists()
    rc, _, err = run("bob", "reject-model", d, "1", "--comment", "uses a leaky column")
    assert rc == 0, err
    rc, _, err = run("bob", "export", d, "1", str(tmp_path / "o"))
    assert rc == 2 and "rejected by Bob Approver" in err and not (tmp_path / "o").exists()
    rc, _, err = run("bob", "model", d, "9")
    assert rc == 2 and "no model '9'" in err


def test_export_folder_not_empty_and_predict_attacks(approved, tmp_path, monkeypatch, capsys):
    d = approved
    run = lambda user, *a: hitl(monkeypatch, capsys, user, *a)  # noqa: E731
    assert run("bob", "approve-model", d, "1")[0] == 0
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("keep")
    rc, _, err = run("bob", "export", d, "1", str(busy))
    assert rc == 2 and "exists and is not empty" in err and [p.name for p in busy.iterdir()] == ["notes.txt"]
    out_dir = tmp_path / "b"
    assert run("bob", "export", d, "1", str(out_dir), "--no-onnx")[0] == 0
    new = rows(10, 5).drop(columns=["label"])
    new.drop(columns=["kind"]).to_csv(tmp_path / "missing.csv", index=False)
    rc, _, err = run("dave", "predict", str(out_dir), str(tmp_path / "missing.csv"))
    assert rc == 2 and err.strip() == ("hitl: error: input refused: the input has no column 'kind'; the model needs: "
                                       "x, kind, w")
    bad = new.astype(str)
    bad.loc[4, "w"] = "many"
    bad.to_csv(tmp_path / "types.csv", index=False)
    rc, _, err = run("dave", "predict", str(out_dir), str(tmp_path / "types.csv"))
    assert rc == 2 and "column 'w' should hold numbers, but row 5 holds 'many'" in err
    # an unknown signer: a fresh machine refuses until the project's keys are trusted
    monkeypatch.setenv(M.TRUST_ENV, str(tmp_path / "other.json"))
    new.to_csv(tmp_path / "ok.csv", index=False)
    rc, _, err = run("dave", "predict", str(out_dir), str(tmp_path / "ok.csv"))
    assert rc == 2 and "not a known signer" in err
    rc, out, err = run("dave", "predict", str(out_dir), str(tmp_path / "ok.csv"), "--trust-project", d)
    assert rc == 0, err
    # --out: a folder, a missing folder and refused rows are one-line errors and leave no file
    rc, _, err = run("dave", "predict", str(out_dir), str(tmp_path / "ok.csv"), "--trust-project", d, "--out",
                     str(tmp_path))
    assert rc == 2 and "is a folder: give a file name" in err
    rc, _, err = run("dave", "predict", str(out_dir), str(tmp_path / "ok.csv"), "--trust-project", d, "--out",
                     str(tmp_path / "nowhere" / "p.csv"))
    assert rc == 2 and "does not exist" in err
    rc, _, err = run("dave", "predict", str(out_dir), str(tmp_path / "types.csv"), "--trust-project", d, "--out",
                     str(tmp_path / "p.csv"))
    assert rc == 2 and not (tmp_path / "p.csv").exists()
    assert not [f for f in tmp_path.iterdir() if f.name.endswith(".tmp")]
    (out_dir / "schema.json").write_text((out_dir / "schema.json").read_text().replace('"w"', '"v"'))
    rc, _, err = run("dave", "predict", str(out_dir), str(tmp_path / "ok.csv"), "--trust-project", d)
    assert rc == 2 and "schema.json was altered" in err


def test_batch_edited_after_approval_blocks_training_and_audit_verify_sees_model_tampering(
        approved, monkeypatch, capsys):
    d = approved
    run = lambda user, *a: hitl(monkeypatch, capsys, user, *a)  # noqa: E731
    with Project.open(d) as p, p.write() as conn:
        conn.execute(update(db.batches).where(db.batches.c.id == 3).values(content_hash="0" * 64))
    rc, _, err = run("alice", "train", d, "--target", "label", "--model", "forest", "--param", "n_estimators=15")
    assert rc == 2 and "approval invalid: batch 3" in err
    rc, out, _ = run("alice", "audit", d, "verify")
    assert rc == 1 and "batch 3" in out
    with Project.open(d) as p, p.write() as conn:
        conn.execute(update(db.models).where(db.models.c.id == 1).values(status="approved"))
    rc, out, _ = run("alice", "audit", d, "verify", "--json")
    assert rc == 1
    assert any("model 1 is approved but its last recorded decision is none" in x for x in json.loads(out)["problems"])
