"""Issue 7 (core): training on validly approved data only, the registry with lineage, signed model approval,
signed export bundles and verified prediction — every refusal and attack of the issue."""
from __future__ import annotations

import hashlib

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import select, update

from hitl_desktop.core import approvals, audit, db, identity, integrity
from hitl_desktop.core import batches as B
from hitl_desktop.core import flags as F
from hitl_desktop.core import models as M
from hitl_desktop.core.errors import PermissionRefused, TransitionRefused
from hitl_desktop.core.ingest import ImportOptions
from hitl_desktop.core.pipeline.errors import StageFailed
from hitl_desktop.core.project import Project
from hitl_desktop.core.sources import import_file

PW = {"alice": "alice-secret", "bob": "bob-secret1", "carol": "carol-secret"}
ROWS, BATCH = 240, 60


def make_rows(n: int, seed: int = 0, start: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    color = rng.choice(["red", "green", "blue"], size=n)
    score = x + (color == "red") * 1.5 + rng.normal(scale=0.4, size=n)
    label = np.where(score > 0.5, "yes", "no")
    df = pd.DataFrame({"id": np.arange(start, start + n), "x": np.round(x, 4), "color": color,
                       "size": rng.integers(1, 9, size=n), "label": label})
    df.loc[df.index % 17 == 3, "x"] = np.nan
    return df


@pytest.fixture(autouse=True)
def _env(monkeypatch, tmp_path):
    monkeypatch.setenv("HITL_SCRYPT_N", "1024")
    monkeypatch.setenv("HITL_PIPELINE_INPROCESS", "1")  # fits in this process: a fresh worker costs seconds
    monkeypatch.setenv(M.TRUST_ENV, str(tmp_path / "trust.json"))


@pytest.fixture
def proj(tmp_path):
    """alice (admin: trains), bob (approver), carol (reviewer); 4 batches of 60 rows, none approved."""
    p = Project.init(tmp_path / "p", user="alice", full_name="Alice Admin", password=PW["alice"])
    identity.add_user(p, "alice", "bob", "approver", PW["bob"], "Bob Approver")
    identity.add_user(p, "alice", "carol", "reviewer", PW["carol"], "Carol Reviewer")
    path = tmp_path / "d.csv"
    make_rows(ROWS).to_csv(path, index=False)
    import_file(p, path, ImportOptions(label="label", batch_size=BATCH), user="alice")
    with p.write() as conn:
        p.set_meta(conn, "settings.joblib_n_jobs", "1")
    yield p
    p.close()


def sign(p, user):
    return identity.signer(p, user, PW[user])


def approve_batches(p, ids=(1, 2, 3, 4), user="bob"):
    for b in ids:
        B.decide(p, b, "approve", user, signer=sign(p, user))


def train(p, **kw):
    kw.setdefault("target", "label")
    kw.setdefault("params", {"max_iter": 500})
    return M.train(p, "alice", **kw)


def accept_duplicate(proj, batch_id: int, row_id: int) -> None:
    """Record row `row_id` as a duplicate of the row before it and accept dropping it, as a reviewer would."""
    with proj.write() as conn:
        fid = conn.execute(db.flags.insert().values(
            batch_id=batch_id, row_id=row_id, column=None, kind="duplicate", severity="low", score=1.0,
            message=f"duplicate of row {row_id - 1}", suggestion=F.DROP_DUPLICATE, status="open", value_key="k")
        ).inserted_primary_key[0]
    F.accept(proj, fid, "alice")


def test_training_refuses_unapproved_batches_naming_them(proj):
    approve_batches(proj, (1, 2))
    with pytest.raises(M.TrainingRefused) as e:
        train(proj)
    msg = str(e.value)
    assert "not approved: batches 3, 4" in msg and "--approved-only" in msg and "\n" not in msg
    assert M.list_models(proj) == []


def test_approved_only_trains_on_the_subset_and_says_what_was_left_out(proj):
    approve_batches(proj, (1, 2, 3))
    res = train(proj, approved_only=True)
    assert not res.reused and res.left_out_rows == BATCH
    assert [i["batch"] for i in res.left_out] == [4]
    lin = res.model.lineage
    assert [b["batch"] for b in lin["batches"]] == [1, 2, 3]
    assert lin["rows"]["used"] == 3 * BATCH and lin["left_out"][0]["batch"] == 4


def test_train_registers_version_with_metrics_lineage_and_cache_reuse(proj):
    approve_batches(proj)
    res = train(proj)
    m = res.model
    assert m == M.get_model(proj, m.id)  # what training returns is what the registry reads back
    assert (m.id, m.version, m.status, m.trained_by, m.estimator) == (1, 1, "trained", "alice", "logreg")
    ho = m.metrics["holdout"]
    assert ho["rows"] == m.lineage["rows"]["holdout"] > 0
    assert set(ho) >= {"accuracy", "balanced_accuracy", "f1_macro", "roc_auc", "per_class", "confusion_matrix"}
    assert ho["roc_auc"] is not None and ho["accuracy"] > 0.7
    assert set(ho["per_class"]) == {"no", "yes"} and np.array(ho["confusion_matrix"]).sum() == ho["rows"]
    assert set(m.metrics["cv"]["accuracy"]) == {"mean", "std"} and m.metrics["folds"] == 3
    lin = m.lineage
    with proj.read() as conn:
        hashes = dict(conn.execute(select(db.batches.c.id, db.batches.c.content_hash)).all())
        sigs = {d.batch_id: d.signature for d in conn.execute(select(db.decisions))}
    assert [(b["batch"], b["content_hash"]) for b in lin["batches"]] == sorted(hashes.items())
    assert all(b["approval"]["signature"] == sigs[b["batch"]] and b["approval"]["full_name"] == "Bob Approver"
               for b in lin["batches"])
    assert lin["source"]["file"] == "d.csv" and len(lin["source"]["sha256"]) == 64
    steps = {s["step"]: s for s in lin["pipeline"]["steps"]}
    assert set(steps) >= {"validate", "clean", "featurize", "train", "evaluate"}
    assert steps["train"]["params"]["model"] == "logreg" and steps["train"]["version"] == "1"
    assert lin["code"]["hitl_desktop"] and len(lin["code"]["stages"]["train"]) == 64
    assert {c["name"]: c["type"] for c in lin["schema"]["columns"]} == {"id": "number", "x": "number",
                                                                          "color": "category", "size": "number"}
    # same inputs and parameters: the cache is reused and no new version appears
    again = train(proj)
    assert again.reused and again.model.id == 1 and len(M.list_models(proj)) == 1
    # a parameter change is a new version, compared with the previous one
    v2 = train(proj, model="forest", params={"n_estimators": 20}).model
    assert (v2.version, v2.estimator) == (2, "forest") and v2.params["hyper"] == {"n_estimators": 20}
    assert v2 == M.get_model(proj, v2.id)
    comp = v2.metrics["compared_with"]
    assert comp["version"] == 1 and comp["label"] == "default:v1" and comp["model"] == 1
    assert "holdout.accuracy" in comp["deltas"]
    d = comp["deltas"]["holdout.accuracy"]
    assert d["delta"] == pytest.approx(d["now"] - d["previous"])


def test_model_file_is_byte_identical_for_the_same_inputs(tmp_path, proj):
    approve_batches(proj)
    m1 = train(proj, model="hgb", params={"max_iter": 20}).model
    other = Project.init(tmp_path / "q", user="alice", password=PW["alice"])
    identity.add_user(other, "alice", "bob", "approver", PW["bob"])
    make_rows(ROWS).to_csv(tmp_path / "d2.csv", index=False)
    import_file(other, tmp_path / "d2.csv", ImportOptions(label="label", batch_size=BATCH), user="alice")
    approve_batches(other)
    m2 = M.train(other, "alice", target="label", model="hgb", params={"max_iter": 20}).model
    assert m1.model_sha256 == m2.model_sha256
    assert (proj.path / m1.model_file).read_bytes() == (other.path / m2.model_file).read_bytes()
    other.close()
    # registration takes the fitted model from the run; from the cache (a run that reused the train step) it is
    # the same bytes
    for model, kw in (("hgb", {"max_iter": 20}), ("logreg", {})):
        res = train(proj, model=model, params=kw)
        cached = M._load_result(proj, res.run.step("train").key, mmap=False)["model"]
        assert hashlib.sha256(M.model_bytes(cached)).hexdigest() == res.model.model_sha256


def test_target_missing_or_with_one_class_is_refused(proj, tmp_path):
    approve_batches(proj)
    with pytest.raises(M.TrainingRefused, match="target column 'nope' is not in the data"):
        train(proj, target="nope")
    one = Project.init(tmp_path / "one", user="alice", password=PW["alice"])
    identity.add_user(one, "alice", "bob", "approver", PW["bob"])
    df = make_rows(120)
    df["label"] = "same"
    df.to_csv(tmp_path / "one.csv", index=False)
    import_file(one, tmp_path / "one.csv", ImportOptions(label="label", batch_size=60), user="alice")
    approve_batches(one, (1, 2))
    with pytest.raises(StageFailed, match="has one class"):
        M.train(one, "alice", target="label")
    assert M.list_models(one) == []
    one.close()


def test_batch_edited_after_approval_refuses_training_and_shows_invalid(proj):
    approve_batches(proj)
    with proj.write() as conn:  # tamper: change an approved batch's data behind the review
        edit = conn.execute(db.edits.insert().values(batch_id=2, row_id=61, column="color", old_value="red",
                                                     new_value="blue", kind="edit", user="mallory", ts="t")).inserted_primary_key[0]
        conn.execute(db.overrides.insert().values(batch_id=2, row_id=61, column="color", value="blue",
                                                  edit_id=edit))
    with proj.read() as conn:
        assert approvals.approval_check(conn, 2)[0] == "invalid"
    with pytest.raises(M.TrainingRefused) as e:
        train(proj)
    assert "approval invalid: batch 2" in str(e.value) and "changed after it was approved" in str(e.value)
    res = train(proj, approved_only=True)
    assert [b["batch"] for b in res.model.lineage["batches"]] == [1, 3, 4]


def test_accepted_duplicates_are_dropped_from_training(proj):
    approve_batches(proj)
    base = train(proj).model
    accept_duplicate(proj, 1, 5)
    res = train(proj)
    assert not res.reused and res.model.version == 2
    assert res.model.lineage["rows"]["dropped_duplicates"] == 1
    assert res.model.lineage["rows"]["used"] == base.lineage["rows"]["used"] - 1


def test_model_approval_is_a_signature_with_four_eyes_and_roles(proj):
    approve_batches(proj)
    m = train(proj).model
    with pytest.raises(PermissionRefused, match="four-eyes"):
        M.decide_model(proj, m.id, "approve_model", "alice", signer=sign(proj, "alice"))
    with pytest.raises(PermissionRefused, match="approver role"):
        M.decide_model(proj, m.id, "approve_model", "carol", signer=sign(proj, "carol"))
    with pytest.raises(TransitionRefused, match="comment"):
        M.decide_model(proj, m.id, "reject_model", "bob", signer=sign(proj, "bob"))
    assert M.allowed_actions(proj, m.id, "alice")["approve_model"].startswith("four-eyes")
    assert M.allowed_actions(proj, m.id, "bob")["approve_model"] is None
    assert "not approved" in M.allowed_actions(proj, m.id, "bob")["export"]
    m = M.decide_model(proj, m.id, "approve_model", "bob", signer=sign(proj, "bob"))
    assert m.status == "approved" and m.decisions[-1]["full_name"] == "Bob Approver"
    assert M.allowed_actions(proj, m.id, "bob")["export"] is None
    assert "approver" in M.allowed_actions(proj, m.id, "alice")["export"]
    with pytest.raises(TransitionRefused, match="already approved"):
        M.decide_model(proj, m.id, "reject_model", "bob", "late", signer=sign(proj, "bob"))
    rep = integrity.verify_project(proj)
    assert rep.ok, rep.summary()
    assert rep.signatures == 5  # four batch approvals and the model approval
    with proj.read() as conn:
        acts = [e.action for e in audit.entries(conn)]
    assert "model.train" in acts and "model.approve" in acts and acts.count("auth.refused") == 2


def test_audit_verify_catches_model_tampering(proj):
    approve_batches(proj)
    m = train(proj).model
    M.decide_model(proj, m.id, "approve_model", "bob", signer=sign(proj, "bob"))
    with proj.write() as conn:  # a signed approval whose record was altered
        conn.execute(update(db.decisions).where(db.decisions.c.model_id == m.id).values(content_hash="0" * 64))
    rep = integrity.verify_project(proj)
    assert not rep.ok and rep.summary().startswith("TAMPERED: decision 5 does not match")
    assert any("signature of decision 5 (approve_model of model 1" in p for p in rep.to_json()["problems"])
    with proj.write() as conn:
        conn.execute(update(db.decisions).where(db.decisions.c.model_id == m.id).values(
            content_hash=m.model_sha256))
        conn.execute(update(db.models).where(db.models.c.id == m.id).values(model_sha256="f" * 64))
    rep = integrity.verify_project(proj)
    assert not rep.ok and any("model 1 does not match its model.train entry" in p for p in rep.to_json()["problems"])


def test_export_refused_unless_approved_and_into_empty_folder(proj, tmp_path):
    approve_batches(proj)
    m = train(proj).model
    bob = identity.authenticate(proj, "bob", PW["bob"])
    with pytest.raises(M.ExportRefused, match="is not approved"):
        M.export_model(proj, m.id, tmp_path / "out", bob)
    assert not (tmp_path / "out").exists()
    M.decide_model(proj, m.id, "reject_model", "bob", "leaks the id column", signer=sign(proj, "bob"))
    with pytest.raises(M.ExportRefused, match="rejected"):
        M.export_model(proj, m.id, tmp_path / "out", bob)
    m2 = train(proj, params={"max_iter": 500, "C": 0.5}).model
    M.decide_model(proj, m2.id, "approve_model", "bob", signer=sign(proj, "bob"))
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    with pytest.raises(M.ExportRefused, match="not empty"):
        M.export_model(proj, m2.id, busy, bob)
    assert [f.name for f in busy.iterdir()] == ["keep.txt"] and (busy / "keep.txt").read_text() == "mine"
    alice = identity.authenticate(proj, "alice", PW["alice"])
    with pytest.raises(M.ExportRefused, match="run the export as bob"):
        M.export_model(proj, m2.id, tmp_path / "out", alice)


@pytest.fixture
def bundle(proj, tmp_path):
    approve_batches(proj)
    m = train(proj).model
    M.decide_model(proj, m.id, "approve_model", "bob", signer=sign(proj, "bob"))
    out = tmp_path / "bundle"
    out.mkdir()  # an existing empty folder is fine
    res = M.export_model(proj, m.id, out, identity.authenticate(proj, "bob", PW["bob"]),
                         intended_use="Demo: screening rows in tests.", onnx=False)
    return out, res, m


def test_export_writes_signed_bundle_with_card_schema_and_manifest(bundle, proj):
    out, res, m = bundle
    names = {p.name for p in out.iterdir()}
    assert names >= {"model.joblib", "schema.json", "model_card.json", "MODEL_CARD.md", "manifest.json",
                     "manifest.sig"}
    man = json.loads((out / "manifest.json").read_text())
    assert set(man["files"]) == names - {"manifest.json", "manifest.sig"}
    assert man["signer"]["user"] == "bob" and man["model"]["sha256"] == m.model_sha256
    assert "model.onnx" not in names and man["onnx"] == "skipped: not requested"
    schema = json.loads((out / "schema.json").read_text())
    col = {c["name"]: c for c in schema["columns"]}
    assert col["color"]["type"] == "category" and set(col["color"]["categories"]) == {"red", "green", "blue"}
    assert schema["target"] == "label" and schema["classes"] == ["no", "yes"]
    card = json.loads((out / "model_card.json").read_text())
    assert card["intended_use"] == "Demo: screening rows in tests."
    assert card["approvals"][0]["full_name"] == "Bob Approver" and card["approvals"][0]["ts"]
    assert card["known_limits"] and card["metrics"]["holdout"]["accuracy"] > 0
    assert card["training_data"]["batches"] == 4
    md = (out / "MODEL_CARD.md").read_text()
    for heading in ("## Intended use", "## Training data", "## Metrics", "## Approvals", "## Lineage",
                    "## Known limits"):
        assert heading in md
    with proj.read() as conn:
        assert [e.action for e in audit.entries(conn)][-1] == "model.export"


def held_out_csv(tmp_path, n=40):
    df = make_rows(n, seed=7, start=10_000).drop(columns=["label"])
    path = tmp_path / "new.csv"
    df.to_csv(path, index=False)
    return path, df


def test_predict_verifies_then_predicts_with_probabilities(bundle, tmp_path):
    out, _res, _m = bundle
    path, df = held_out_csv(tmp_path)
    b = M.load_bundle(out)
    pred = M.predict(b, M.read_rows(path))
    assert list(pred.columns) == ["row", "prediction", "p_no", "p_yes"] and len(pred) == len(df)
    assert np.allclose(pred[["p_no", "p_yes"]].sum(axis=1), 1.0)
    assert set(pred["prediction"]) <= {"no", "yes"}


@pytest.mark.parametrize("attack, message", [
    ("model", "model.joblib was altered"),
    ("schema", "schema.json was altered"),
    ("manifest", "manifest signature does not verify"),
    ("missing", "model.joblib is missing"),
    ("unknown", "not a known signer"),
    ("resigned", "not a known signer"),
])
def test_tampered_bundle_is_refused_before_unpickling(bundle, tmp_path, monkeypatch, attack, message):
    out, _res, _m = bundle
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    if attack == "model":  # a model file replaced by a pickle that would run code when loaded
        import pickle

        class Boom:
            def __reduce__(self):
                return (exec, ("raise SystemExit('unpickled!')",))

        (bad / "model.joblib").write_bytes(pickle.dumps(Boom()))
    elif attack == "schema":
        s = json.loads((bad / "schema.json").read_text())
        s["columns"] = s["columns"][:1]
        (bad / "schema.json").write_text(json.dumps(s))
    elif attack == "manifest":
        man = json.loads((bad / "manifest.json").read_text())
        man["files"]["model.joblib"]["sha256"] = "0" * 64
        (bad / "manifest.json").write_text(json.dumps(man))
    elif attack == "missing":
        (bad / "model.joblib").unlink()
    elif attack == "unknown":
        monkeypatch.setenv(M.TRUST_ENV, str(tmp_path / "empty-trust.json"))
    elif attack == "resigned":  # an attacker re-signs an altered manifest with their own key
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        import base64

        from hitl_desktop.core.util import canonical_json

        key = Ed25519PrivateKey.generate()
        man = json.loads((bad / "manifest.json").read_text())
        man["signer"]["public_key"] = base64.b64encode(key.public_key().public_bytes_raw()).decode()
        body = canonical_json(man).encode()
        (bad / "manifest.json").write_bytes(body)
        (bad / "manifest.sig").write_bytes(base64.b64encode(key.sign(body)))
    with pytest.raises(M.BundleRefused, match=message):
        M.load_bundle(bad)


def test_predict_input_checked_against_schema(bundle, tmp_path):
    out, _res, _m = bundle
    b = M.load_bundle(out)
    _path, df = held_out_csv(tmp_path)
    rows = df.astype(str)
    with pytest.raises(M.BundleRefused, match="input refused: the input has no column 'color'"):
        M.predict(b, rows.drop(columns=["color"]))
    wrong = rows.copy()
    wrong.loc[2, "x"] = "tall"
    with pytest.raises(M.BundleRefused, match="column 'x' should hold numbers, but row 3 holds 'tall'"):
        M.predict(b, wrong)
    extra = rows.copy()
    extra["unused"] = "z"
    extra.loc[0, "color"] = "purple"  # unseen category: allowed (infrequent bucket), documented limit
    assert len(M.predict(b, extra)) == len(rows)


def test_trust_project_keys_allow_a_bundle_from_another_machine(bundle, tmp_path, monkeypatch, proj):
    out, _res, _m = bundle
    monkeypatch.setenv(M.TRUST_ENV, str(tmp_path / "fresh.json"))
    with pytest.raises(M.BundleRefused, match="not a known signer"):
        M.verify_bundle(out)
    assert M.verify_bundle(out, M.project_keys(proj))["signer"]["user"] == "bob"


def test_onnx_export_matches_the_model_where_skl2onnx_is_installed(proj, tmp_path):
    pytest.importorskip("skl2onnx")
    rt = pytest.importorskip("onnxruntime")
    approve_batches(proj)
    m = train(proj).model
    M.decide_model(proj, m.id, "approve_model", "bob", signer=sign(proj, "bob"))
    res = M.export_model(proj, m.id, tmp_path / "b", identity.authenticate(proj, "bob", PW["bob"]))
    assert res.onnx.startswith("written") and "model.onnx" in res.files
    b = M.load_bundle(tmp_path / "b")
    _p, df = held_out_csv(tmp_path)
    from hitl_desktop.core.pipeline.model_stages import model_frame

    X = model_frame(df.astype(str), b.schema, strict=True)
    sess = rt.InferenceSession(str(tmp_path / "b" / "model.onnx"))
    feeds = {c["name"]: (X[[c["name"]]].to_numpy(np.float32) if c["type"] != "category" else X[[c["name"]]].to_numpy())
             for c in b.schema["columns"]}
    proba = sess.run(None, feeds)[1]
    assert np.abs(proba - b.model.predict_proba(X)).max() < 1e-4


def test_bulk_approval_states_match_the_single_batch_check_and_a_snapshot_is_used_once(proj):
    approve_batches(proj, (1, 2, 3))
    B.decide(proj, 3, "reopen", "bob", comment="look again", signer=sign(proj, "bob"))
    with proj.write() as conn:  # 2: data changed behind the approval; 4: marked approved by hand
        edit = conn.execute(db.edits.insert().values(batch_id=2, row_id=61, column="color", old_value="red",
                                                     new_value="blue", kind="edit", user="mallory", ts="t")
                            ).inserted_primary_key[0]
        conn.execute(db.overrides.insert().values(batch_id=2, row_id=61, column="color", value="blue", edit_id=edit))
        conn.execute(update(db.batches).where(db.batches.c.id == 4).values(status="approved"))
    with proj.read() as conn:
        states = approvals.approval_states(conn)
        assert states == {b: approvals.approval_check(conn, b) for b in (1, 2, 3, 4)}
        assert [states[b][0] for b in (1, 2, 3, 4)] == ["valid", "invalid", "none", "invalid"]
        with approvals.approval_snapshot({1: ("invalid", "judged earlier")}):
            assert approvals.approval_states(conn, [1, 2])[1] == ("invalid", "judged earlier")
            assert approvals.approval_states(conn, [1, 2])[2] == states[2]
        assert approvals.approval_states(conn, [1]) == {1: states[1]}


def test_featurize_from_arrow_equals_the_prediction_contract_on_the_cleaned_rows(proj):
    """Featurize types the cleaned Arrow batches directly; the frame must be exactly `model_frame` (what predict
    uses) of the cleaned rows as DataFrames, with the same target text."""
    from hitl_desktop.core.pipeline import engine as E
    from hitl_desktop.core.pipeline.cache import ResultStore
    from hitl_desktop.core.pipeline.model_stages import model_frame
    from hitl_desktop.core.pipeline.registry import registry_for
    from hitl_desktop.core.pipeline.spec import get_pipeline

    B.set_cell(proj, 1, 7, "color", None, "alice")  # a missing text value: its own category
    B.set_cell(proj, 2, 70, "label", None, "alice")  # a missing target: dropped (by clean)
    accept_duplicate(proj, 3, 125)
    approve_batches(proj)
    res = train(proj)
    import joblib

    with proj.read() as conn:
        r = conn.execute(select(db.results).where(db.results.c.key == res.run.step("featurize").key)).first()
    f = joblib.load(proj.path / "cache" / r.path)["features"]  # not memory-mapped: compared exactly below
    plan = E.Plan(proj, get_pipeline(proj), registry_for(proj), ResultStore(proj.path, writable=False))
    plan.check(["clean"])
    frames = []
    for b, k in sorted(plan.steps["clean"].units.items()):
        r = plan.registered[k]
        df = plan.store.load(k, r.path, r.sha256, r.kind)["table"]
        frames.append(df[~((b == 3) & (df.index == 125))])
    df = pd.concat(frames)
    assert f["dropped_duplicates"] == 1 and len(df) == len(f["y"]) == ROWS - 2
    pd.testing.assert_frame_equal(f["X"], model_frame(df, f["schema"]), check_exact=True)
    expected_y = df["label"].astype(str).to_numpy(dtype=str)
    assert f["y"].dtype == expected_y.dtype and (f["y"] == expected_y).all()
    assert (f["row_ids"] == df.index.to_numpy()).all() and f["classes"] == sorted(set(expected_y.tolist()))
    assert "(missing)" in set(f["X"]["color"].astype(str))


def test_a_fit_in_a_thread_keeps_other_warning_filters(monkeypatch):
    """The short fit runs in a thread: it must not swap the process-wide warning filters (catch_warnings would
    restore, at its end, the list it saw at its start), and a fit that stops at max_iter does not warn."""
    import threading
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    from hitl_desktop.core.pipeline import model_stages as MS

    df = make_rows(300)
    schema = {"columns": [{"name": c, "type": "category" if df[c].dtype == object else "number"}
                          for c in df.columns if c != "label"], "max_categories": 20}
    params = {"model": "logreg", "C": 1.0, "max_iter": 1, "class_weight": "none", "impute": "median", "seed": 0,
              "hyper": {}}
    X, y = MS.model_frame(df, schema), df["label"].to_numpy(str)
    fitting, go_on = threading.Event(), threading.Event()
    real = MS.make_estimator

    class Paused:  # the real Pipeline, whose fit waits until the other thread has changed the filters
        def __init__(self, *a):
            self.inner = real(*a)

        def fit(self, X, y):
            fitting.set()
            go_on.wait(10)
            return self.inner.fit(X, y)

    monkeypatch.setattr(MS, "make_estimator", Paused)
    marker = ("ignore", None, DeprecationWarning, None, 12345)
    with warnings.catch_warnings(record=True) as seen:
        t = threading.Thread(target=MS._fit, args=(schema, params, X, y, 1))
        t.start()
        assert fitting.wait(10)
        warnings.filters.insert(0, marker)  # set by this thread while the fit runs
        go_on.set()
        t.join()
        assert marker in warnings.filters
        warnings.filters.remove(marker)
    assert not [w for w in seen if issubclass(w.category, ConvergenceWarning)]
