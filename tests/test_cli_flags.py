"""Issue 5 from the command line: hitl checks / flags / accept / dismiss / profile / rules on real projects."""
from __future__ import annotations

import json
import os
import sys

import numpy as np
import pandas as pd
import pytest

from hitl_desktop.cli.main import main

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
from faults import make_faulty  # noqa: E402

PW = "correct horse battery"


@pytest.fixture(autouse=True)
def env(monkeypatch):
    monkeypatch.setenv("HITL_PASSWORD", PW)
    monkeypatch.setenv("HITL_NEW_PASSWORD", PW)
    monkeypatch.setenv("HITL_SCRYPT_N", "1024")
    monkeypatch.setenv("HITL_PIPELINE_INPROCESS", "1")


def run(capsys, *argv, user="ann"):
    capsys.readouterr()
    rc = main(["--as", user, *map(str, argv)])
    out = capsys.readouterr()
    return rc, out.out, out.err


def ok(capsys, *argv, **kw) -> str:
    rc, out, err = run(capsys, *argv, **kw)
    assert rc == 0, err
    return out


def make(tmp_path, capsys, df: pd.DataFrame, label: str | None, batch_size: int = 50) -> str:
    d = str(tmp_path / "proj")
    path = tmp_path / "d.csv"
    df.to_csv(path, index=False)
    ok(capsys, "init", d)
    ok(capsys, "import", d, path, *(["--label", label] if label else []), "--batch-size", batch_size)
    ok(capsys, "pipeline", d, "settings", "settings.joblib_backend", "sequential")
    return d


@pytest.fixture
def wine(tmp_path, capsys):
    f = make_faulty("wine", 0)
    d = make(tmp_path, capsys, f.df, f.label)
    ok(capsys, "checks", d)
    return f, d


def test_flags_json_fields_and_risk_order(wine, capsys):
    f, d = wine
    data = json.loads(ok(capsys, "flags", d, "--json"))
    assert data and set(data[0]) >= {"id", "batch", "row", "source_row", "column", "kind", "severity", "score",
                                     "message", "suggestion", "status"}
    kinds = {x["kind"] for x in data}
    assert kinds >= {"missing", "type", "out_of_range", "category", "duplicate", "label"}
    assert all(x["column"] is None for x in data if x["kind"] == "duplicate")
    assert all(x["suggestion"] == "drop duplicate" for x in data if x["kind"] == "duplicate")
    # batches in `hitl batches` order (risk), rows by risk within a batch
    batches = [b["id"] for b in json.loads(ok(capsys, "batches", d, "--json"))]
    seen = list(dict.fromkeys(x["batch"] for x in data))
    assert seen == [b for b in batches if b in seen]
    one = json.loads(ok(capsys, "flags", d, str(seen[0]), "--json"))
    risks = list(dict.fromkeys((x["row"], x["row_risk"]) for x in one))
    assert [r for _, r in risks] == sorted([r for _, r in risks], reverse=True)
    assert all(x["source_row"] == x["row"] for x in one)  # first source: row id = data row of the file
    text = ok(capsys, "flags", d, "--limit", "5")
    assert "kind" in text and "more" in text


def test_accept_dismiss_and_rerun(wine, capsys):
    f, d = wine
    data = json.loads(ok(capsys, "flags", d, "--json", "--open"))
    lab = next(x for x in data if x["kind"] == "label")
    out = ok(capsys, "accept", d, lab["id"])
    assert f"flag {lab['id']} accepted" in out
    oor = next(x for x in data if x["kind"] == "out_of_range" and x["suggestion"] is None)
    rc, _, err = run(capsys, "accept", d, oor["id"])
    assert rc == 2 and "no suggestion" in err
    with pytest.raises(SystemExit) as exc:  # --reason is required
        run(capsys, "dismiss", d, oor["id"])
    assert exc.value.code == 2
    ok(capsys, "dismiss", d, oor["id"], "--reason", "checked the lab sheet")
    out = ok(capsys, "checks", d, "--json")
    rep = json.loads(out)
    v = next(s for r in rep["runs"] for s in r["steps"] if s["step"] == "validate")
    assert v["units_computed"] == 1  # only the batch with the accepted label
    now = {x["id"]: x for x in json.loads(ok(capsys, "flags", d, "--json"))}
    assert now[lab["id"]]["status"] == "accepted" and now[oor["id"]]["status"] == "dismissed"
    assert now[oor["id"]]["resolution"]["reason"] == "checked the lab sheet"
    assert not [x for x in now.values() if x["row"] == lab["row"] and x["kind"] == "label" and x["status"] == "open"]
    opened = json.loads(ok(capsys, "flags", d, "--json", "--open"))
    assert all(x["status"] == "open" for x in opened)
    # a reviewer may dismiss; a stranger may not
    ok(capsys, "users", d, "add", "rita", "--role", "reviewer", "--full-name", "Rita")
    ok(capsys, "dismiss", d, opened[0]["id"], "--reason", "fine", user="rita")


def test_rules_cli_and_invalid_regex_refused(wine, capsys):
    f, d = wine
    rc, out, err = run(capsys, "rules", d, "add", "code", "island", "regex", "([A-Z")
    assert rc == 2 and err.count("\n") == 1 and "invalid regex" in err
    rc, _, err = run(capsys, "rules", d, "add", "x", "nosuch", "not_null")
    assert rc == 2 and "unknown column" in err
    ok(capsys, "rules", d, "add", "alc_max", "alcohol", "max", "14", "--severity", "high")
    ok(capsys, "rules", d, "add", "isl", "island", "allowed", "Biscoe,Dream,Torgersen")
    rules = json.loads(ok(capsys, "rules", d, "list", "--json"))
    assert [r["name"] for r in rules] == ["alc_max", "isl"] and rules[1]["value"] == ["Biscoe", "Dream", "Torgersen"]
    st = json.loads(ok(capsys, "status", d, "--json"))
    v = next(s for s in st[0]["steps"] if s["step"] == "validate")
    assert v["state"] == "stale" and "rules changed" in v["reasons"]
    ok(capsys, "checks", d)
    data = json.loads(ok(capsys, "flags", d, "--json", "--kind", "rule:alc_max"))
    assert data and all(x["severity"] == "high" for x in data)
    ok(capsys, "rules", d, "remove", "alc_max")
    audit = ok(capsys, "audit", d, "--json")
    assert "rule.add" in audit and "rule.remove" in audit


def test_profile_show_pin_set_unpin(wine, capsys):
    f, d = wine
    prof = json.loads(ok(capsys, "profile", d, "--json"))
    assert prof["columns"]["sex"]["categories"] == ["female", "male"] and not prof.get("pinned")
    assert "categories" in ok(capsys, "profile", d)
    ok(capsys, "profile", d, "pin")
    assert json.loads(ok(capsys, "profile", d, "--json"))["pinned"]
    ok(capsys, "profile", d, "set", "alcohol", "hi", "12")
    st = json.loads(ok(capsys, "status", d, "--json"))
    v = next(s for s in st[0]["steps"] if s["step"] == "validate")
    assert "profile changed" in v["reasons"]
    ok(capsys, "checks", d)
    oor = json.loads(ok(capsys, "flags", d, "--json", "--kind", "out_of_range"))
    assert sum(1 for x in oor if x["column"] == "alcohol") > 20
    rc, _, err = run(capsys, "profile", d, "set", "sex", "hi", "3")
    assert rc == 2 and "only numeric" in err
    ok(capsys, "profile", d, "unpin")
    audit = ok(capsys, "audit", d, "--json")
    assert "schema.pin" in audit and "schema.set" in audit and "schema.unpin" in audit


def test_single_class_label_says_why(tmp_path, capsys):
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"a": rng.normal(size=30).round(3), "y": ["same"] * 30})
    d = make(tmp_path, capsys, df, "y", batch_size=10)
    out = ok(capsys, "checks", d)
    assert "single class" in out
    text = ok(capsys, "flags", d)
    assert text.startswith("note: labels not checked: the label column has a single class")
