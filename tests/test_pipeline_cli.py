"""Issue 4 from the command line: hitl pipeline / status / run / runs / lineage, --json shapes, one-line errors."""
from __future__ import annotations

import json

import pytest

from hitl_desktop.cli.main import main

PW = "s3cret-enough"
CSV = "x,n,color,label\n" + "".join(
    f"{i * 0.7:.1f},{'n/a' if i == 4 else i % 5},{'red' if i % 3 else 'blue'},{'ab'[(i * 7 // 3) % 2]}\n"
    for i in range(40))


@pytest.fixture(autouse=True)
def env(monkeypatch):
    monkeypatch.setenv("HITL_PASSWORD", PW)
    monkeypatch.setenv("HITL_NEW_PASSWORD", PW)
    monkeypatch.setenv("HITL_PIPELINE_INPROCESS", "1")


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def ok(capsys, *argv):
    code, out, err = run(capsys, "--as", "alice", *argv)
    assert code == 0, err
    return out


def fails(capsys, *argv) -> str:
    code, out, err = run(capsys, "--as", "alice", *argv)
    assert code == 2, (code, out, err)
    lines = [x for x in err.strip().splitlines() if x.startswith("hitl: ")]  # progress lines are "STEP: ..."
    assert len(lines) == 1 and lines[0].startswith("hitl: error: ") and err.strip().endswith(lines[0]), err
    return lines[0]


@pytest.fixture
def proj(tmp_path, capsys):
    d = tmp_path / "proj"
    ok(capsys, "init", d)
    f = tmp_path / "d.csv"
    f.write_text(CSV)
    ok(capsys, "import", d, f, "--label", "label", "--batch-size", "10")
    ok(capsys, "pipeline", d, "settings", "settings.joblib_n_jobs", "1")
    ok(capsys, "pipeline", d, "set-param", "featurize", "select", "all")
    return d


def test_pipeline_show_and_stages(proj, capsys):
    data = json.loads(ok(capsys, "pipeline", proj, "show", "--json"))
    assert [p["name"] for p in data] == ["default"]
    steps = {s["step"]: s for s in data[0]["steps"]}
    assert list(steps) == ["validate", "clean", "duplicates", "labels", "featurize", "train", "evaluate"]
    assert steps["featurize"]["params"]["select"] == {"value": "all", "default": "approved", "set": True,
                                                      "type": "str one of approved, not_rejected, all"}
    assert steps["evaluate"]["needs"] == ["featurize", "train"]
    text = ok(capsys, "pipeline", proj, "show", "default")
    assert "train [train v1] after featurize" in text and "C = 1.0" in text
    stages = json.loads(ok(capsys, "pipeline", proj, "stages", "--json"))
    assert {s["name"] for s in stages} >= {"validate", "clean", "featurize", "train", "evaluate", "export"}


def test_run_status_runs_lineage_flow(proj, capsys):
    st = json.loads(ok(capsys, "status", proj, "--json"))
    assert st[0]["pipeline"] == "default" and {s["state"] for s in st[0]["steps"]} == {"never run"}
    code, out, err = run(capsys, "--as", "alice", "run", proj)
    assert code == 0, err
    assert "run 1 of pipeline default: done" in out and "validate: running" in err
    rep = json.loads(ok(capsys, "run", proj, "--json"))
    assert rep["status"] == "done" and {s["outcome"] for s in rep["steps"]} == {"reused"}
    assert set(rep) >= {"run", "pipeline", "status", "user", "seconds", "steps", "error"}
    ok(capsys, "pipeline", proj, "set-param", "train", "C", "0.5")
    st = json.loads(ok(capsys, "status", proj, "--json"))
    train = next(s for s in st[0]["steps"] if s["step"] == "train")
    assert train["state"] == "stale" and train["reasons"] == ["parameter C changed: 1.0 -> 0.5"]
    text = ok(capsys, "status", proj)
    assert "train        stale" in text and "- parameter C changed: 1.0 -> 0.5" in text
    rep = json.loads(ok(capsys, "run", proj, "--stage", "train", "--json"))
    assert [s["step"] for s in rep["steps"]] == ["validate", "clean", "featurize", "train"]
    assert rep["steps"][-1]["outcome"] == "computed"
    runs = json.loads(ok(capsys, "runs", proj, "--json"))
    assert [r["status"] for r in runs] == ["done", "done", "done"]
    assert runs[0]["user"] == "alice" and len(runs[0]["computed"]) == 7 and runs[1]["computed"] == []
    assert "done" in ok(capsys, "runs", proj)
    lin = json.loads(ok(capsys, "lineage", proj, "default:train", "--json"))
    assert lin["stage"] == "train" and lin["params"]["C"] == 0.5
    assert lin["upstream"][0]["stage"] == "featurize" and lin["upstream"][0]["source"]["file"] == "d.csv"
    text = ok(capsys, "lineage", proj, lin["key"][:12])
    assert text.startswith("train [train v1") and "featurize [featurize v1" in text


def test_add_variant_shares_results(proj, capsys):
    ok(capsys, "run", proj)
    ok(capsys, "pipeline", proj, "add-variant", "wide", "--set", "evaluate.folds=5")
    rep = json.loads(ok(capsys, "run", proj, "--pipeline", "wide", "--json"))
    assert {s["step"]: s["outcome"] for s in rep["steps"]} == {
        "validate": "reused", "clean": "reused", "duplicates": "reused", "labels": "reused", "featurize": "reused",
        "train": "reused", "evaluate": "computed"}


def test_one_line_errors(proj, capsys, tmp_path):
    assert "unknown pipeline 'nope'" in fails(capsys, "run", proj, "--pipeline", "nope")
    assert "no step 'nope'" in fails(capsys, "run", proj, "--stage", "nope")
    assert "unknown stage 'magic'" in fails(capsys, "pipeline", proj, "add-step", "m", "--stage", "magic",
                                            "--needs", "clean")
    assert "must be float" in fails(capsys, "pipeline", proj, "set-param", "train", "C", "lots")
    assert "must be >= 1e-06" in fails(capsys, "pipeline", proj, "set-param", "train", "C", "-3")
    assert "must be one of" in fails(capsys, "pipeline", proj, "set-param", "featurize", "select", "some")
    assert "has no parameter 'zeta'" in fails(capsys, "pipeline", proj, "set-param", "train", "zeta", "1")
    assert "no step 'trian'" in fails(capsys, "pipeline", proj, "set-param", "trian", "C", "1")
    assert "needs 'later'" in fails(capsys, "pipeline", proj, "add-step", "x", "--stage", "export", "--needs", "later")
    assert "already exists" in fails(capsys, "pipeline", proj, "add-variant", "default")
    assert "STEP.PARAM=VALUE" in fails(capsys, "pipeline", proj, "add-variant", "v", "--set", "C=1")
    assert "no result" in fails(capsys, "lineage", proj, "abcdef0123")
    assert "has no result yet" in fails(capsys, "lineage", proj, "default:train")
    assert "must be one of" in fails(capsys, "pipeline", proj, "settings", "settings.joblib_backend", "spark")
    bad = tmp_path / "bad.py"
    bad.write_text("raise ImportError('missing dependency foo')\n")
    line = fails(capsys, "pipeline", proj, "settings", "settings.stage_paths", json.dumps([str(bad)]))
    assert "failed to import: ImportError: missing dependency foo" in line
    assert "failed to import" in fails(capsys, "run", proj)
    data = json.loads(ok(capsys, "runs", proj, "--json"))
    assert data == []


def test_failed_stage_exit_code_and_record(proj, capsys, tmp_path):
    f = tmp_path / "st.py"
    f.write_text("from hitl_desktop.core.pipeline import stage\n"
                 "@stage('oops', inputs=('features',), outputs={'m': 'metrics'})\n"
                 "def oops(ctx, inputs, params):\n    return {'m': 1/0}\n")
    ok(capsys, "pipeline", proj, "settings", "settings.stage_paths", json.dumps([str(f)]))
    ok(capsys, "pipeline", proj, "add-step", "oops", "--stage", "oops", "--needs", "featurize")
    line = fails(capsys, "run", proj, "--stage", "oops")
    assert line == "hitl: error: stage 'oops' (step 'oops') failed: ZeroDivisionError: division by zero"
    runs = json.loads(ok(capsys, "runs", proj, "--json"))
    assert runs[-1]["status"] == "failed" and runs[-1]["failed"] == ["oops"]
    st = json.loads(ok(capsys, "status", proj, "--json"))
    oops = next(s for s in st[0]["steps"] if s["step"] == "oops")
    assert oops["state"] == "failed" and "ZeroDivisionError" in oops["error"]
