"""Issue 4: the pipeline engine — stages, cache keys, reuse, status with reasons, runs, failures, lineage."""
from __future__ import annotations

import json
import os
import textwrap

import pytest
from sqlalchemy import select, update

from hitl_desktop.core import batches as B
from hitl_desktop.core import db
from hitl_desktop.core.ingest import ImportOptions
from hitl_desktop.core.pipeline import (Param, ParamError, PipelineError, PipelineSpec, PluginError,
                                        Stage, Step, UnknownPipeline, UnknownStage, add_step, add_variant,
                                        get_pipeline, lineage, list_runs, pipeline_status, registry_for,
                                        run_pipeline, save_spec, set_param, stage, step_status)
from hitl_desktop.core.pipeline.cache import ResultStore
from hitl_desktop.core.pipeline.registry import STAGE_PATHS_KEY
from hitl_desktop.core.tasks import TaskState
from hitl_desktop.core.project import Project
from hitl_desktop.core.sources import import_file

ROWS = 60
BATCH = 10


def make_csv(path, rows=ROWS, bad_rows=(3, 17)):
    lines = ["x,y,n,color,label"]
    for i in range(rows):
        n = "n/a" if i in bad_rows else str(i % 7)
        x = "" if i == 25 else f"{(i * 37 % 11) / 3:.3f}"
        lines.append(f"{x},{i * 0.5:.1f},{n},{'red' if i % 3 else 'blue'},{'ab'[(i * 7 // 3) % 2]}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(autouse=True)
def _inprocess(monkeypatch):
    # Model fits run in this process (a fresh worker process costs seconds of imports); one test below checks
    # the worker-process path and its cancellation explicitly.
    monkeypatch.setenv("HITL_PIPELINE_INPROCESS", "1")


@pytest.fixture
def proj(tmp_path):
    p = Project.init(tmp_path / "proj", user="ann")
    import_file(p, make_csv(tmp_path / "d.csv"), ImportOptions(label="label", batch_size=BATCH), user="ann")
    with p.write() as conn:
        p.set_meta(conn, "settings.joblib_n_jobs", "1")
    set_param(p, None, "featurize", "select", "all", "ann", registry_for(p))
    yield p
    p.close()


def outcomes(report):
    return {s.step: s.outcome for s in report.steps}


def status_of(p, pipeline="default"):
    return {s.step: s for s in step_status(p, get_pipeline(p, pipeline))}


def test_default_pipeline_created_lazily_and_runs_end_to_end(proj):
    spec = get_pipeline(proj)
    assert spec.name == "default"
    assert [s.name for s in spec.steps] == ["validate", "clean", "duplicates", "labels", "featurize", "train",
                                            "evaluate"]
    assert {s.state for s in status_of(proj).values()} == {"never run"}
    events = []
    rep = run_pipeline(proj, user="ann", observer=events.append)
    assert rep.status == "done", rep.error
    assert set(outcomes(rep).values()) == {"computed"}
    kinds = [e.kind for e in events]
    assert kinds[0] == "run_started" and kinds[-1] == "run_finished"
    assert kinds.count("stage_started") == 7 and kinds.count("stage_finished") == 7 and "progress" in kinds
    assert {s.state for s in status_of(proj).values()} == {"fresh"}
    # the metrics are a real cross-validated accuracy
    node = lineage(proj, "default:evaluate")
    from hitl_desktop.core.pipeline.engine import _Run  # noqa: F401  (import check only)
    store = ResultStore(proj.path)
    m = store.load(node["key"], node["path"].split("/", 1)[1], node["sha256"], node["kind"])["metrics"]
    assert 0.0 <= m["accuracy"] <= 1.0 and m["folds"] == 3 and m["rows"] == ROWS
    # the run is recorded with its user and an audit entry
    runs = list_runs(proj)
    assert runs[-1]["status"] == "done" and runs[-1]["user"] == "ann" and len(runs[-1]["computed"]) == 7
    with proj.read() as conn:
        actions = [r.action for r in conn.execute(select(db.audit.c.action))]
    assert "pipeline.run" in actions


def test_unchanged_rerun_reuses_everything(proj):
    run_pipeline(proj, user="ann")
    events = []
    rep = run_pipeline(proj, user="ann", observer=events.append)
    assert set(outcomes(rep).values()) == {"reused"}
    assert [e.step for e in events if e.kind == "reused"] == ["validate", "clean", "duplicates", "labels", "featurize",
                                                             "train", "evaluate"]
    assert not [e for e in events if e.kind == "stage_started"]


def test_edit_reruns_only_that_batch_and_status_says_which(proj):
    run_pipeline(proj, user="ann")
    B.set_cell(proj, 2, 12, "y", "99.5", "ann")
    st = status_of(proj)
    assert st["validate"].state == "stale"
    assert any("batches changed" in r and "1 changed (edited): 2" in r for r in st["validate"].reasons)
    assert st["validate"].batches_stale == 1 and st["validate"].batches_total == ROWS // BATCH
    assert st["featurize"].state == "stale"
    assert any("upstream result of step 'clean' changed for 1 batch" in r for r in st["featurize"].reasons)
    rep = run_pipeline(proj, user="ann")
    v, c = rep.step("validate"), rep.step("clean")
    assert (v.outcome, v.units_computed, v.units_reused) == ("computed", 1, ROWS // BATCH - 1)
    assert (c.outcome, c.units_computed) == ("computed", 1)
    assert rep.step("featurize").outcome == "computed"


def test_last_stage_param_change_reruns_only_that_stage(proj):
    run_pipeline(proj, user="ann")
    set_param(proj, None, "evaluate", "folds", 4, "ann", registry_for(proj))
    st = status_of(proj)
    assert [n for n, s in st.items() if s.state != "fresh"] == ["evaluate"]
    assert st["evaluate"].reasons == ["parameter folds changed: 3 -> 4"]
    rep = run_pipeline(proj, user="ann")
    assert outcomes(rep) == {"validate": "reused", "clean": "reused", "duplicates": "reused", "labels": "reused",
                             "featurize": "reused", "train": "reused", "evaluate": "computed"}


def test_several_params_change_in_one_transaction_or_not_at_all(proj):
    from hitl_desktop.core.pipeline import set_params

    reg = registry_for(proj)
    before = get_pipeline(proj).to_json()
    with proj.read() as conn:
        entries = conn.execute(select(db.audit.c.id)).all()
    with pytest.raises(ParamError) as e:
        set_params(proj, None, [("evaluate", "folds", 4), ("train", "no_such", 1)], "ann", reg)
    assert "step 'train' (stage train) has no parameter 'no_such'" in one_line(e)
    assert get_pipeline(proj).to_json() == before  # the valid first change was not applied either
    with proj.read() as conn:
        assert conn.execute(select(db.audit.c.id)).all() == entries
    spec = set_params(proj, None, [("evaluate", "folds", 4), ("train", "C", 0.5)], "ann", reg)
    assert spec.step("evaluate").params["folds"] == 4 and get_pipeline(proj).step("train").params["C"] == 0.5
    with proj.read() as conn:
        new = conn.execute(select(db.audit.c.action, db.audit.c.payload).where(
            db.audit.c.id > max(i for (i,) in entries))).all()
    assert [(a, json.loads(p)["step"], json.loads(p)["param"]) for a, p in new] == [
        ("pipeline.set_param", "evaluate", "folds"), ("pipeline.set_param", "train", "C")]


def test_two_variants_share_upstream_results(proj):
    run_pipeline(proj, user="ann")
    add_variant(proj, "strong-reg", None, "ann", registry_for(proj), [("train", "C", 0.01)])
    st = status_of(proj, "strong-reg")
    assert st["validate"].state == st["clean"].state == st["featurize"].state == "fresh"
    assert st["train"].state == "stale" and "parameter C changed: 1.0 -> 0.01" in st["train"].reasons
    rep = run_pipeline(proj, "strong-reg", user="ann")
    assert outcomes(rep) == {"validate": "reused", "clean": "reused", "duplicates": "reused", "labels": "reused",
                             "featurize": "reused", "train": "computed", "evaluate": "computed"}
    assert rep.step("featurize").key == status_of(proj)["featurize"].key
    assert rep.step("train").key != status_of(proj)["train"].key


def test_reimport_with_new_options_marks_downstream_stale_with_reason(proj, tmp_path):
    run_pipeline(proj, user="ann")
    import_file(proj, tmp_path / "d.csv", ImportOptions(label="label", batch_size=15), user="ann")
    st = status_of(proj)
    for name in ("validate", "clean", "featurize", "train", "evaluate"):
        assert st[name].state == "stale", name
    r = " | ".join(st["validate"].reasons)
    assert "source version changed: source 1 (d.csv) -> source 2 (d.csv)" in r
    assert "same file contents" in r and "batch_size 10 -> 15" in r
    assert any("upstream result of step 'featurize' changed" in x for x in st["train"].reasons)
    rep = run_pipeline(proj, user="ann")
    assert rep.status == "done" and rep.step("validate").units_computed == 4


def test_open_tables_never_serve_an_old_mapping_of_a_rewritten_cache_file(tmp_path):
    import numpy as np
    import pandas as pd

    from hitl_desktop.core.pipeline.cache import OpenTables

    store = ResultStore(tmp_path, tables=OpenTables())
    df = pd.DataFrame({"v": np.arange(100_000, dtype="float64")})
    info = store.write("k" * 64, "table", {"t": df})
    first = store.load("k", info["path"], info["sha256"], "table", arrow=True)["t"]
    assert store.load("k", info["path"], info["sha256"], "table", arrow=True)["t"] is first  # mapped once
    path = store.path(info["path"])
    size = path.stat().st_size
    with open(path, "r+b") as fh:  # the mapped file damaged in place...
        fh.seek(size // 3)
        fh.write(b"\xab" * (size // 3))
    with pytest.raises(Exception):
        store.load("k", info["path"], info["sha256"], "table")
    again = store.write("k" * 64, "table", {"t": df})  # ...and recomputed: same path, same sha256, a new file
    assert (again["path"], again["sha256"]) == (info["path"], info["sha256"])
    out = store.load("k", info["path"], info["sha256"], "table")["t"]
    assert out["v"].equals(df["v"])
    store.forget(info["path"])
    assert len(store.tables) == 0


def test_corrupted_and_deleted_cache_files_are_recomputed(proj):
    rep = run_pipeline(proj, user="ann")
    with proj.read() as conn:
        rows = {r.key: r for r in conn.execute(select(db.results))}
    train = rows[rep.step("train").key]
    path = proj.path / "cache" / train.path
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, different content
    path.write_bytes(bytes(data))
    unit_key = next(k for k, r in rows.items() if r.stage == "clean" and r.kind == "table")
    (proj.path / "cache" / rows[unit_key].path).unlink()
    st = status_of(proj)
    assert st["train"].state == "stale" and any("corrupted" in r for r in st["train"].reasons)
    assert st["clean"].state == "stale" and any("deleted" in r for r in st["clean"].reasons)
    events = []
    rep2 = run_pipeline(proj, user="ann", observer=events.append)
    assert rep2.status == "done"
    assert rep2.step("train").outcome == "computed" and rep2.step("train").key == train.key
    assert rep2.step("clean").units_computed == 1
    assert rep2.step("featurize").outcome == "reused"
    notices = [e.message for e in events if e.kind == "notice"]
    assert any("corrupted" in m for m in notices) and any("deleted" in m for m in notices)
    assert {s.state for s in status_of(proj).values()} == {"fresh"}


def test_result_store_load_checks_sha(tmp_path):
    from hitl_desktop.core.pipeline.errors import CorruptResult

    store = ResultStore(tmp_path)
    info = store.write("ab" * 32, "object", {"v": [1, 2, 3]})
    assert store.load("ab" * 32, info["path"], info["sha256"], "object") == {"v": [1, 2, 3]}
    p = store.path(info["path"])
    p.write_bytes(p.read_bytes()[:-3] + b"xyz")
    with pytest.raises(CorruptResult, match="corrupted"):
        ResultStore(tmp_path).load("ab" * 32, info["path"], info["sha256"], "object")
    assert not list((tmp_path / "cache" / "tmp").iterdir())  # nothing half-written left behind


def test_flags_stored_replaced_and_dismissed_kept(proj):
    run_pipeline(proj, user="ann", stage="validate")
    with proj.read() as conn:
        flags = conn.execute(select(db.flags)).all()
    kinds = {(f.row_id, f.column, f.kind) for f in flags}
    assert (3, "n", "type") in kinds and (17, "n", "type") in kinds and (25, "x", "missing") in kinds
    assert all(f.status == "open" and f.run_id for f in flags)
    # a reviewer dismisses the flag on row 3; an unrelated edit in the same batch re-checks the batch
    with proj.write() as conn:
        conn.execute(update(db.flags).where(db.flags.c.row_id == 3).values(status="dismissed"))
    B.set_cell(proj, 1, 5, "y", "1.5", "ann")
    run_pipeline(proj, user="ann", stage="validate")
    with proj.read() as conn:
        row3 = conn.execute(select(db.flags).where(db.flags.c.row_id == 3)).all()
    assert [f.status for f in row3] == ["dismissed"]
    # the flagged value changes (to missing): the new value is flagged again
    B.set_cell(proj, 1, 3, "n", "", "ann")
    run_pipeline(proj, user="ann", stage="validate")
    with proj.read() as conn:
        row3 = conn.execute(select(db.flags).where(db.flags.c.row_id == 3)).all()
    assert sorted((f.kind, f.status) for f in row3) == [("missing", "open"), ("type", "dismissed")]
    # batches not re-checked keep their flags untouched (same ids)
    with proj.read() as conn:
        b2 = conn.execute(select(db.flags.c.id).where(db.flags.c.row_id == 17)).scalars().all()
    assert b2 == [f.id for f in flags if f.row_id == 17]


def test_featurize_selects_approved_batches(proj, monkeypatch):
    from hitl_desktop.core import identity

    monkeypatch.setenv("HITL_SCRYPT_N", "1024")
    identity.set_password(proj, "ann", "ann-secret")

    def approve(b):
        B.decide(proj, b, "approve", "ann", signer=identity.signer(proj, "ann", "ann-secret"))

    set_param(proj, None, "featurize", "select", "approved", "ann", registry_for(proj))
    rep = run_pipeline(proj, user="ann", stage="featurize")
    assert rep.status == "failed" and "no batches to featurize" in rep.error
    with proj.write() as conn:  # marked approved by hand, without a signed approval: not trained on
        conn.execute(update(db.batches).where(db.batches.c.id == 5).values(status="approved"))
    for b in (1, 2, 3):
        approve(b)
    rep = run_pipeline(proj, user="ann", stage="featurize")
    assert rep.status == "done"
    assert any("approval is not valid" in n and "5" in n for n in rep.step("featurize").notes)
    node = lineage(proj, "featurize")
    assert [b["batch"] for b in node["batches"]] == [1, 2, 3, 5]
    approve(4)
    st = status_of(proj)["featurize"]
    assert st.state == "stale" and any("1 added: 4" in r for r in st.reasons)


def test_lineage_walks_back_to_batches_and_source(proj):
    run_pipeline(proj, user="ann")
    node = lineage(proj, "default:evaluate")
    assert node["stage"] == "evaluate" and node["params"] == {"folds": 3, "seed": 0, "scoring": "accuracy"}
    assert node["run"]["user"] == "ann"
    ups = {u["input"]: u for u in node["upstream"]}
    assert set(ups) == {"features", "model"}
    train = ups["model"]
    assert train["stage"] == "train" and train["params"]["C"] == 1.0
    feat = train["upstream"][0]
    assert feat["stage"] == "featurize" and len(feat["batches"]) == ROWS // BATCH
    with proj.read() as conn:
        hashes = dict(conn.execute(select(db.batches.c.id, db.batches.c.content_hash)).all())
    assert all(b["content_hash"] == hashes[b["batch"]] for b in feat["batches"])
    assert feat["source"]["file"] == "d.csv" and feat["source"]["options"]["batch_size"] == BATCH
    clean = feat["upstream"][0]
    assert clean["stage"] == "clean" and clean["kind"] == "units" and len(clean["units"]) == ROWS // BATCH
    assert clean["upstream"][0]["stage"] == "validate"
    # a key prefix works too
    assert lineage(proj, node["key"][:10])["key"] == node["key"]


# --- bad input -------------------------------------------------------------------------------------------------


def one_line(exc) -> str:
    s = str(exc.value)
    assert "\n" not in s and s
    return s


def test_bad_definitions_are_one_line_errors_and_change_nothing(proj):
    reg = registry_for(proj)
    before = get_pipeline(proj).to_json()
    with pytest.raises(UnknownPipeline) as e:
        run_pipeline(proj, "nope", user="ann")
    assert "unknown pipeline 'nope'" in one_line(e)
    with pytest.raises(UnknownStage) as e:
        add_step(proj, None, "x", "no-such-stage", ["clean"], "ann", reg)
    assert "unknown stage 'no-such-stage'" in one_line(e)
    with pytest.raises(ParamError) as e:
        set_param(proj, None, "train", "C", "strong", "ann", reg)
    assert "parameter 'C' of step 'train' must be float" in one_line(e)
    with pytest.raises(ParamError) as e:
        set_param(proj, None, "train", "C", -1, "ann", reg)
    assert ">= 1e-06" in one_line(e)
    with pytest.raises(ParamError) as e:
        set_param(proj, None, "evaluate", "folds", 2.5, "ann", reg)
    assert "must be int" in one_line(e)
    with pytest.raises(ParamError) as e:
        set_param(proj, None, "train", "gamma", 1, "ann", reg)
    assert "has no parameter 'gamma'" in one_line(e)
    with pytest.raises(PipelineError) as e:
        run_pipeline(proj, user="ann", stage="nope")
    assert "no step 'nope'" in one_line(e)
    cyc = PipelineSpec("loop", [Step("a", "validate", needs=["c"]), Step("b", "clean", needs=["a"]),
                                Step("c", "clean", needs=["b"])])
    with pytest.raises(PipelineError) as e:
        save_spec(proj, cyc, "ann", reg)
    assert "has a cycle" in one_line(e) and "a -> b -> c -> a" in one_line(e)
    assert get_pipeline(proj).to_json() == before
    with proj.read() as conn:
        assert conn.execute(select(db.runs)).first() is None
        assert conn.execute(select(db.pipelines.c.name)).scalars().all() == ["default"]


PLUGIN = '''
from hitl_desktop.core.pipeline import Param, Stage, stage

class Double(Stage):
    name = "double"
    version = "1"
    inputs = ("metrics",)
    outputs = {"metrics": "metrics"}
    params = {"factor": Param(float, 2.0, min=0.0)}

    def run(self, ctx, inputs, params):
        return {"metrics": {"acc2": inputs["metrics"]["accuracy"] * params["factor"]}}

@stage("flaky", inputs=("features",), outputs={"report": "metrics"})
def flaky(ctx, inputs, params):
    raise ValueError("boom in user code")

@stage("liar", inputs=("features",), outputs={"report": "metrics"})
def liar(ctx, inputs, params):
    return {"something_else": 1}
'''


def use_plugin(p, tmp_path, text=PLUGIN):
    f = tmp_path / "my_stages.py"
    f.write_text(textwrap.dedent(text))
    with p.write() as conn:
        p.set_meta(conn, STAGE_PATHS_KEY, json.dumps([str(f)]))
    return f


def test_user_stage_from_project_file_runs_and_code_edit_invalidates(proj, tmp_path):
    f = use_plugin(proj, tmp_path)
    reg = registry_for(proj)
    assert {"double", "flaky", "liar"} <= set(reg.names()) and reg.get("double").origin.startswith("file ")
    add_step(proj, None, "double", "double", ["evaluate"], "ann", reg)
    rep = run_pipeline(proj, user="ann")
    assert rep.status == "done" and rep.step("double").outcome == "computed"
    f.write_text(f.read_text().replace('* params["factor"]', '* params["factor"] + 0'))
    st = status_of(proj)
    assert st["double"].state == "stale" and st["double"].reasons == ["code of stage 'double' changed"]
    assert st["evaluate"].state == "fresh"


def test_user_stage_that_raises_or_lies_fails_and_registers_nothing(proj, tmp_path):
    use_plugin(proj, tmp_path)
    reg = registry_for(proj)
    add_step(proj, None, "flaky", "flaky", ["featurize"], "ann", reg)
    rep = run_pipeline(proj, user="ann", stage="flaky")
    assert rep.status == "failed"
    assert rep.error == "stage 'flaky' (step 'flaky') failed: ValueError: boom in user code"
    with proj.read() as conn:
        assert conn.execute(select(db.results).where(db.results.c.stage == "flaky")).first() is None
        run = conn.execute(select(db.runs).order_by(db.runs.c.id.desc())).first()
    assert run.status == "failed" and "boom" in json.loads(run.detail_json)["error"]
    assert status_of(proj)["flaky"].state == "failed"
    assert status_of(proj)["featurize"].state == "fresh"  # what completed before the failure is kept
    add_step(proj, None, "liar", "liar", ["featurize"], "ann", reg)
    rep = run_pipeline(proj, user="ann", stage="liar")
    assert rep.status == "failed" and "returned outputs ['something_else'] but declares ['report']" in rep.error
    with pytest.raises(Exception) as e:
        rep.raise_for_status()
    assert "\n" not in str(e.value)


def test_user_stage_module_that_fails_to_import(proj, tmp_path):
    use_plugin(proj, tmp_path, "import math\nraise RuntimeError('cannot start')\n")
    with pytest.raises(PluginError) as e:
        registry_for(proj)
    assert "failed to import: RuntimeError: cannot start" in one_line(e)
    with pytest.raises(PluginError):
        run_pipeline(proj, user="ann")
    use_plugin(proj, tmp_path, "def broken(:\n")
    with pytest.raises(PluginError) as e:
        registry_for(proj)
    assert "SyntaxError" in one_line(e)
    with proj.read() as conn:
        assert conn.execute(select(db.runs)).first() is None


def _install_plugin(site, name, body):
    """A distribution installed into folder `site` (on sys.path): a module and its hitl_desktop.stages entry point."""
    (site / f"{name}.py").write_text(textwrap.dedent(body))
    info = site / f"{name}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[hitl_desktop.stages]\n{name} = {name}\n")
    return info


def test_user_stages_from_entry_points_follow_installs_and_removals(tmp_path, monkeypatch):
    import shutil

    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    assert "tripled" not in registry_for().names()
    info = _install_plugin(site, "hitl_ep_plugin", """
        from hitl_desktop.core.pipeline import stage

        @stage("tripled", inputs=("features",), outputs={"n": "metrics"})
        def tripled(ctx, inputs, params):
            return {"n": {"rows": 3 * len(inputs["features"]["y"])}}
        """)
    reg = registry_for()  # installing changed the folder: the entry points are read again
    assert "tripled" in reg.names() and reg.get("tripled").origin.startswith("entry point hitl_ep_plugin")
    assert "tripled" in registry_for().names()  # and kept while nothing changes
    shutil.rmtree(info)
    assert "tripled" not in registry_for().names()
    _install_plugin(site, "hitl_ep_broken", "raise RuntimeError('no such thing')\n")
    with pytest.raises(PluginError) as e:
        registry_for()
    assert one_line(e) == ("user stage entry point hitl_ep_broken (hitl_ep_broken) failed to load: "
                           "RuntimeError: no such thing")


def test_per_batch_user_stage_failure_registers_nothing(proj):
    @stage("picky", per_batch=True, inputs=("batch",), outputs={"t": "table"})
    def picky(ctx, inputs, params):
        if inputs["meta"]["batch_id"] == 4:
            raise KeyError("batch four")
        return {"t": inputs["batch"].head(1)}

    reg = registry_for(proj, extra=[picky])
    spec = PipelineSpec("p", [Step("picky", "picky")])
    save_spec(proj, spec, "ann", reg)
    rep = run_pipeline(proj, "p", user="ann", registry=reg)
    assert rep.status == "failed" and "failed on batch 4: KeyError" in rep.error
    with proj.read() as conn:
        assert conn.execute(select(db.results).where(db.results.c.stage == "picky")).first() is None
    assert not [f for f in (proj.path / "cache").rglob("*") if f.is_file() and f.suffix == ".arrow"]


# --- cancellation and interruption ---------------------------------------------------------------------------------


def test_cancel_between_batches_keeps_project_consistent(proj):
    token = TaskState()

    def obs(e):
        if e.kind == "progress" and e.step == "validate" and (e.fraction or 0) > 0:
            token.cancel()

    rep = run_pipeline(proj, user="ann", observer=obs, cancel=token)
    assert rep.status == "cancelled" and rep.step("validate").outcome == "cancelled"
    with proj.read() as conn:
        assert conn.execute(select(db.results)).first() is None
        assert conn.execute(select(db.runs.c.status)).scalars().all() == ["cancelled"]
    assert not [f for f in (proj.path / "cache").rglob("*.arrow")]
    assert run_pipeline(proj, user="ann").status == "done"


def test_cancel_kills_a_long_unit_running_in_a_worker_process(proj, tmp_path, monkeypatch):
    monkeypatch.delenv("HITL_PIPELINE_INPROCESS")
    pidfile = tmp_path / "pid"

    @stage("slow", inputs=("batch",), per_batch=True, outputs={"t": "table"})
    def noop(ctx, inputs, params):
        return {"t": inputs["batch"].head(0)}

    @stage("sleeper", inputs=("t",), outputs={"m": "metrics"})
    def sleeper(ctx, inputs, params):
        return {"m": ctx.call_in_process(_sleep_forever, str(pidfile))}

    reg = registry_for(proj, extra=[noop, sleeper])
    save_spec(proj, PipelineSpec("s", [Step("slow", "slow"), Step("sleeper", "sleeper", needs=["slow"])]), "ann", reg)
    token = TaskState()

    def obs(e):
        if e.kind == "stage_started" and e.step == "sleeper":
            import threading
            import time

            def later():
                while not pidfile.exists():
                    time.sleep(0.02)
                token.cancel()
            threading.Thread(target=later, daemon=True).start()

    rep = run_pipeline(proj, "s", user="ann", observer=obs, cancel=token, registry=reg)
    assert rep.status == "cancelled" and rep.step("sleeper").outcome == "cancelled"
    pid = int(pidfile.read_text())
    import time
    for _ in range(100):  # the worker is killed, not left running
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the worker process still runs after cancel")


def _sleep_forever(pidfile):
    import time
    from pathlib import Path

    Path(pidfile).write_text(str(os.getpid()))
    time.sleep(600)
    return {}


HANG = '''
import time
from hitl_desktop.core.pipeline import stage

@stage("hang", per_batch=True, inputs=("batch",), outputs={"t": "table"})
def hang(ctx, inputs, params):
    if inputs["meta"]["batch_id"] == 3:
        time.sleep(600)
    return {"t": inputs["batch"]}
'''

KILLER = '''
import sys
from hitl_desktop.core.project import Project
from hitl_desktop.core.pipeline import run_pipeline, registry_for, save_spec, PipelineSpec, Step

p = Project.open(sys.argv[1])
reg = registry_for(p)
save_spec(p, PipelineSpec("k", [Step("hang", "hang")]), "ann", reg)
run_pipeline(p, "k", user="ann", registry=reg, n_jobs=1)
'''


def test_kill_9_mid_run_shows_interrupted_and_nothing_half_written(proj, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    use_plugin(proj, tmp_path, HANG)
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    proc = subprocess.Popen([sys.executable, str(script), str(proj.path)])
    try:
        for _ in range(600):
            with proj.read() as conn:
                r = conn.execute(select(db.runs.c.status)).first()
            if r is not None and list((proj.path / "cache").rglob("*.arrow")):
                break
            time.sleep(0.05)
        else:
            pytest.fail("the run did not start")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    runs = list_runs(proj)
    assert [r["status"] for r in runs] == ["interrupted"]
    with proj.read() as conn:
        assert conn.execute(select(db.results)).first() is None
    assert status_of(proj, "k")["hang"].state == "never run"
    rep = run_pipeline(proj, user="ann")  # the next run sweeps the unregistered files
    assert rep.status == "done"
    with proj.read() as conn:
        registered = set(conn.execute(select(db.results.c.path)).scalars())
    on_disk = {f"{f.parent.name}/{f.name}" for f in (proj.path / "cache").glob("??/*")}
    assert on_disk == registered


# --- parallel backends -------------------------------------------------------------------------------------------


def test_loky_workers_give_the_same_results_as_one_worker(proj, tmp_path):
    rep1 = run_pipeline(proj, user="ann", stage="clean", n_jobs=1)
    p2 = Project.init(tmp_path / "p2", user="ann")
    import_file(p2, tmp_path / "d.csv", ImportOptions(label="label", batch_size=BATCH), user="ann")
    rep2 = run_pipeline(p2, user="ann", stage="clean", n_jobs=2, backend="loky")
    assert rep2.status == "done", rep2.error
    assert rep1.step("clean").key == rep2.step("clean").key
    assert rep2.step("validate").units_computed == ROWS // BATCH
    with proj.read() as c1, p2.read() as c2:
        q = select(db.results.c.key, db.results.c.sha256).order_by(db.results.c.key)
        assert c1.execute(q).all() == c2.execute(q).all()  # byte-identical results
    p2.close()


def test_dask_backend_against_a_local_cluster(proj):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=None) as cluster:
        with proj.write() as conn:
            proj.set_meta(conn, "settings.joblib_backend", "dask")
            proj.set_meta(conn, "settings.dask_address", cluster.scheduler_address)
        rep = run_pipeline(proj, user="ann", stage="clean", n_jobs=2)
        assert rep.status == "done", rep.error
        assert rep.step("validate").units_computed == ROWS // BATCH
        from hitl_desktop.core.pipeline import parallel
        parallel.shutdown()


def test_dask_backend_without_address_is_a_clear_error(proj):
    with proj.write() as conn:
        proj.set_meta(conn, "settings.joblib_backend", "dask")
    with pytest.raises(PipelineError) as e:
        run_pipeline(proj, user="ann")
    assert "settings.dask_address is not set" in one_line(e)


def test_status_lists_every_pipeline(proj):
    add_variant(proj, "v2", None, "ann", registry_for(proj))
    data = pipeline_status(proj)
    assert [d["pipeline"] for d in data] == ["default", "v2"]
    assert all(s["state"] == "never run" for d in data for s in d["steps"])


def test_stage_param_declaration_is_checked():
    class Bad(Stage):
        name = "bad"
        outputs = {"x": "tables"}

    from hitl_desktop.core.pipeline.stage import validate_stage_definition
    with pytest.raises(TypeError, match="unknown kind 'tables'"):
        validate_stage_definition(Bad, "test")
    p = Param(int, 3, min=1, max=5)
    assert p.validate("s", "k", 5) == 5
    with pytest.raises(ParamError):
        p.validate("s", "k", True)


def test_cancel_reaches_loky_workers_between_units(proj):
    token = TaskState()
    seen = []

    def obs(e):
        if e.kind == "progress" and e.step == "validate" and (e.fraction or 0) > 0:
            seen.append(e.fraction)
            token.cancel()

    rep = run_pipeline(proj, user="ann", observer=obs, cancel=token, n_jobs=2, backend="loky")
    assert rep.status == "cancelled" and rep.step("validate").outcome == "cancelled"
    with proj.read() as conn:
        assert conn.execute(select(db.results)).first() is None
    assert not list((proj.path / "cache" / "tmp").glob("*cancel*"))


def _background_pipeline(proj, after):
    """slow (per batch) -> big (stored in the background) -> `after`."""
    @stage("slow", inputs=("batch",), per_batch=True, outputs={"t": "table"})
    def noop(ctx, inputs, params):
        return {"t": inputs["batch"].head(0)}

    @stage("big", inputs=("t",), outputs={"m": "object"})
    def big(ctx, inputs, params):
        return {"m": {"rows": list(range(1000))}}

    big.store_in_background = True
    reg = registry_for(proj, extra=[noop, big, after])
    save_spec(proj, PipelineSpec("bg", [Step("slow", "slow"), Step("big", "big", needs=["slow"]),
                                        Step(after.name, after.name, needs=["big"])]), "ann", reg)
    return reg


def test_result_stored_in_background_is_registered_in_step_order_and_kept_on_cancel(proj):
    token = TaskState()

    @stage("stopper", inputs=("m",), outputs={"n": "metrics"})
    def stopper(ctx, inputs, params):
        assert inputs["m"]["rows"][-1] == 999  # the next step gets the result while it is being stored
        token.cancel()
        ctx.check_cancelled()

    reg = _background_pipeline(proj, stopper)
    events = []
    rep = run_pipeline(proj, "bg", user="ann", cancel=token, registry=reg, observer=events.append)
    assert rep.status == "cancelled" and [(s.step, s.outcome) for s in rep.steps] == [
        ("slow", "computed"), ("big", "computed"), ("stopper", "cancelled")]
    assert [(e.kind, e.step) for e in events if e.kind in ("stage_started", "stage_finished")][2:] == [
        ("stage_started", "big"), ("stage_finished", "big"), ("stage_started", "stopper")]
    with proj.read() as conn:
        assert conn.execute(select(db.results.c.stage).where(db.results.c.key == rep.step("big").key)).scalar() == "big"
    assert ResultStore(proj.path).check(*_path_sha(proj, rep.step("big").key)) is None  # complete, intact
    again = run_pipeline(proj, "bg", "big", user="ann", registry=reg)
    assert outcomes(again) == {"slow": "reused", "big": "reused"}


def test_result_stored_in_background_begins_when_the_next_step_hands_over_its_unit(proj, monkeypatch):
    import threading

    writing = threading.Event()
    real = ResultStore.write

    def write(self, key, kind, outputs):
        if "m" in outputs:
            writing.set()
        return real(self, key, kind, outputs)

    monkeypatch.setattr(ResultStore, "write", write)

    def unit():
        return writing.wait(10)  # the store runs while the unit does

    @stage("fitter", inputs=("m",), outputs={"n": "metrics"})
    def fitter(ctx, inputs, params):
        set_up = writing.is_set()  # the Python set-up before the unit does not share the GIL with the store
        return {"n": {"before": set_up, "during": ctx.call_in_thread(unit)}}

    reg = _background_pipeline(proj, fitter)
    rep = run_pipeline(proj, "bg", user="ann", registry=reg, keep_outputs=True)
    assert rep.status == "done"
    assert rep.outputs[rep.step("fitter").key]["n"] == {"before": False, "during": True}
    assert ResultStore(proj.path).check(*_path_sha(proj, rep.step("big").key)) is None


def test_result_stored_in_background_that_cannot_be_written_fails_its_step_and_registers_nothing_after(
        proj, monkeypatch):
    @stage("after", inputs=("m",), outputs={"n": "metrics"})
    def after(ctx, inputs, params):
        return {"n": {"rows": len(inputs["m"]["rows"])}}

    reg = _background_pipeline(proj, after)
    real = ResultStore.write

    def write(self, key, kind, outputs):
        if "m" in outputs:
            raise OSError(28, "No space left on device")
        return real(self, key, kind, outputs)

    monkeypatch.setattr(ResultStore, "write", write)
    rep = run_pipeline(proj, "bg", user="ann", registry=reg)
    assert rep.status == "failed" and "could not store the result of step 'big'" in rep.error
    assert [(s.step, s.outcome) for s in rep.steps] == [("slow", "computed"), ("big", "failed")]
    with proj.read() as conn:
        assert set(conn.execute(select(db.results.c.stage)).scalars()) == {"slow"}


def _path_sha(proj, key):
    with proj.read() as conn:
        r = conn.execute(select(db.results.c.path, db.results.c.sha256).where(db.results.c.key == key)).first()
    return r.path, r.sha256


def test_stage_code_source_is_what_inspect_reads():
    """Code hashes read class sources with one parse per module (`_class_source`); the text must stay exactly
    inspect.getsource's, or every cached result would look stale after an upgrade."""
    import importlib
    import inspect

    from hitl_desktop.core.pipeline.builtin import BUILTIN_STAGES

    S = importlib.import_module("hitl_desktop.core.pipeline.stage")
    from hitl_desktop.core.pipeline.context import StageContext

    objs = [o for st in BUILTIN_STAGES for o in (type(st), *st.code_deps)]
    objs += [S.Stage, S.Param, StageContext, S.ProgressThrottle, json.JSONDecoder, textwrap.TextWrapper]
    for o in objs:
        assert S._source_of(o) == inspect.getsource(o), o


def test_short_fits_run_in_this_process_on_one_core_and_others_in_the_worker():
    from hitl_desktop.core.pipeline.model_stages import fit_threads, short_fit

    schema = {"max_categories": 20, "columns": [{"name": "x", "type": "number"},
                                                {"name": "c", "type": "category", "distinct": 400}]}
    p = {"model": "logreg", "max_iter": 300, "hyper": {}}
    assert short_fit(schema, p, 200_000) and fit_threads(schema, p, 200_000) == 1  # 200,000 x 22 cells
    assert not short_fit(schema, p, 1_000_000) and fit_threads(schema, p, 1_000_000) is None
    assert not short_fit(schema, {**p, "model": "hgb"}, 1000)
    assert not short_fit(schema, {**p, "hyper": {"solver": "saga"}}, 1000)
    assert not short_fit(schema, {**p, "max_iter": 5000}, 1000)


def test_cancel_during_a_short_fit_in_this_process_stops_the_run_without_waiting_for_the_fit(proj, monkeypatch):
    import importlib
    import threading

    MS = importlib.import_module("hitl_desktop.core.pipeline.model_stages")
    started, release = threading.Event(), threading.Event()
    where = []

    def slow_fit(*args):
        where.append(threading.current_thread().name)
        started.set()
        release.wait(30)
        return None

    real = MS._fit
    monkeypatch.setattr(MS, "_fit", slow_fit)
    token = TaskState()
    threading.Thread(target=lambda: started.wait(30) and token.cancel(), daemon=True).start()
    rep = run_pipeline(proj, user="ann", stage="train", cancel=token)
    still_fitting = not release.is_set()
    release.set()
    assert rep.status == "cancelled" and rep.step("train").outcome == "cancelled"
    assert still_fitting and where == ["hitl-unit"]  # the run did not wait for the fit, which ran in a thread here
    with proj.read() as conn:
        stages = set(conn.execute(select(db.results.c.stage)).scalars())
    assert "featurize" in stages and "train" not in stages
    monkeypatch.setattr(MS, "_fit", real)
    assert run_pipeline(proj, user="ann", stage="train").status == "done"
