"""Each check on ordinary and awkward inputs (pandas 3 'str' dtype and object columns alike)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from hitl_desktop.core.checks import (
    DROP_DUPLICATE, ColumnInfo, Flag, Rule, apply_rules, batch_risk, find_duplicates,
    find_label_issues, profile_columns, profile_from_json, profile_to_json, rank_rows,
    row_fingerprints, row_risk, run_cell_checks, validate_rule,
)


def _penguins(n: int = 300, seed: int = 0) -> tuple[pd.DataFrame, dict[str, str]]:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({
        "mass": np.round(rng.normal(4000, 400, n), 1),
        "bill": np.round(rng.normal(40, 3, n), 1),
        "sex": rng.choice(["male", "female"], n),
        "island": rng.choice(["Biscoe", "Dream", "Torgersen"], n),
    })
    return df, {"mass": "float", "bill": "float", "sex": "text", "island": "text"}


def _by(flags, kind):
    return {(f.row, f.column): f for f in flags if f.kind == kind}


def test_type_faults_and_decimal_comma():
    df, infos = _penguins()
    bill = df["bill"].astype(str).astype(object)
    for r, tok in [(3, "n/a"), (4, "?"), (5, "NULL"), (6, "#VALUE!"), (7, "39,1")]:
        bill[r] = tok
    bill[8] = None
    df["bill"] = bill
    flags = run_cell_checks(df, infos)
    t = _by(flags, "type")
    assert set(t) == {(r, "bill") for r in (3, 4, 5, 6, 7)}
    assert t[(7, "bill")].suggestion == "39.1"
    assert t[(3, "bill")].suggestion is None
    assert set(_by(flags, "missing")) == {(8, "bill")}
    assert not _by(flags, "out_of_range")


def test_string_dtype_same_as_object():
    df, infos = _penguins()
    df.loc[10, "sex"] = "mael"
    a = run_cell_checks(df.astype({"sex": object}), infos)
    b = run_cell_checks(df.astype({"sex": "str"}), infos)
    assert sorted(map(repr, a)) == sorted(map(repr, b))


def test_category_near_misses():
    df, infos = _penguins()
    df.loc[1, "sex"] = "mael"
    df.loc[2, "sex"] = "male "
    df.loc[3, "island"] = "biscoe"
    df.loc[4, "island"] = "Atlantis"
    c = _by(run_cell_checks(df, infos), "category")
    assert set(c) == {(1, "sex"), (2, "sex"), (3, "island"), (4, "island")}
    assert c[(1, "sex")].suggestion == "male"
    assert c[(2, "sex")].suggestion == "male"
    assert c[(3, "island")].suggestion == "Biscoe"
    assert c[(4, "island")].suggestion is None


def test_out_of_range_sentinel_sign_scale():
    df, infos = _penguins()
    v = df["mass"].to_numpy(copy=True)
    v[[1, 2, 3]] = [v[1] * 1000, -v[2], -999.0]
    df["mass"] = v
    o = _by(run_cell_checks(df, infos), "out_of_range")
    assert set(o) == {(1, "mass"), (2, "mass"), (3, "mass")}
    assert float(o[(1, "mass")].suggestion) == pytest.approx(v[1] / 1000)
    assert float(o[(2, "mass")].suggestion) == pytest.approx(-v[2])
    assert o[(3, "mass")].suggestion is None


def test_heavy_tail_not_flagged():
    rng = np.random.default_rng(1)
    df = pd.DataFrame({"area": rng.lognormal(3, 0.8, 2000)})
    assert not run_cell_checks(df, {"area": "float"})


def test_duplicates_within_and_across_batches():
    df, infos = _penguins(50)
    dup = pd.concat([df, df.iloc[[3]], df.iloc[[4]].assign(sex=df.loc[4, "sex"].upper() + " ")],
                    ignore_index=True)
    d = [f for f in run_cell_checks(dup, infos) if f.kind == "duplicate"]
    assert {f.row for f in d} == {50, 51}
    assert all(f.column is None and f.suggestion == DROP_DUPLICATE for f in d)
    exact = {f.row: f for f in d}
    assert exact[50].score == 1.0 and exact[51].score < 1.0
    # cross-batch: fingerprints of batch 1 are all we keep
    fp1 = row_fingerprints(df, infos)
    batch2 = df.iloc[[7, 8]].copy().set_axis([100, 101])
    batch2["mass"] = batch2["mass"].map(lambda x: f"{x}".replace(".", ","))  # text + decimal comma
    cross = find_duplicates(batch2, infos, other_fingerprints=fp1)
    assert {f.row for f in cross} == {100, 101}


def test_fingerprint_ignores_representation_and_column_order():
    a = pd.DataFrame({"x": [1, 2], "y": ["a", "b"]})
    b = pd.DataFrame({"y": ["A ", "b"], "x": ["1.0", "2"]})
    ia, ib = {"x": "integer", "y": "text"}, {"x": "integer", "y": "text"}
    assert (row_fingerprints(a, ia) == row_fingerprints(b, ib)).all()
    assert row_fingerprints(a, ia).dtype == np.uint64


def test_rules_each_kind():
    df = pd.DataFrame({"id": ["A1", "A2", "A2", "b3", None], "v": [1.0, 5.0, 11.0, None, -2.0],
                       "c": ["x", "y", "z", "x", "x"]})
    rules = [Rule("id", "not_null"), Rule("id", "unique", name="id_unique"), Rule("id", "regex", r"[A-Z]\d"),
             Rule("v", "min", 0), Rule("v", "max", 10), Rule("c", "allowed", ["x", "y"])]
    flags = apply_rules(df, rules, {"id": "text", "v": "float", "c": "text"})
    got = {(f.kind, f.row) for f in flags}
    assert got == {("rule:id_not_null", 4), ("rule:id_unique", 2), ("rule:id_regex", 3),
                   ("rule:v_min", 4), ("rule:v_max", 2), ("rule:c_allowed", 2)}


def test_invalid_rules_raise_one_line():
    for bad in [Rule("c", "regex", "([a-z"), Rule("c", "min", "ten"), Rule("c", "nope"),
                Rule("c", "allowed", []), Rule("c", "not_null", severity="urgent")]:
        with pytest.raises(ValueError) as e:
            validate_rule(bad)
        assert "\n" not in str(e.value) and str(e.value)
    with pytest.raises(ValueError, match="invalid regex"):
        validate_rule(Rule("c", "regex", "([a-z"))
    with pytest.raises(ValueError, match="unknown column"):
        validate_rule(Rule("zz", "not_null"), columns=["c"])
    assert validate_rule(Rule("c", "min", "3")).value == 3.0


def test_profile_json_roundtrip_and_pinning():
    df, infos = _penguins()
    prof = profile_columns(df, [ColumnInfo(k, v) for k, v in infos.items()])
    text = profile_to_json(prof)
    back = profile_from_json(text)
    assert back == json.loads(text)
    assert back["columns"]["sex"]["categories"] == ["female", "male"]
    assert back["columns"]["mass"]["lo"] < 3000 < 5000 < back["columns"]["mass"]["hi"]
    back["columns"]["mass"]["hi"] = 4000.0  # the user pins a tighter maximum
    flags = run_cell_checks(df, infos, back)
    n_over = int((df["mass"] > 4000).sum())
    assert len([f for f in flags if f.kind == "out_of_range"]) == n_over
    with pytest.raises(ValueError):
        profile_from_json('{"version": 99, "columns": {}}')


def test_risk_ordering():
    flags = [Flag(1, "a", "missing", "low", 1.0, "m"), Flag(2, "a", "out_of_range", "high", 0.9, "o"),
             Flag(2, None, "duplicate", "medium", 1.0, "d", DROP_DUPLICATE), Flag(3, "b", "type", "medium", 1.0, "t")]
    risk = row_risk(flags)
    assert risk[2] == pytest.approx(3 * 0.9 + 2)
    assert rank_rows(flags) == [2, 3, 1]
    assert batch_risk(flags) == 1 + 3 + 2 + 2


# ---- bad inputs -------------------------------------------------------------------------------

def test_label_single_class():
    df, infos = _penguins(40)
    df["label"] = "a"
    flags, reason = find_label_issues(df, {**infos, "label": "text"}, "label")
    assert flags == [] and "single class" in reason


def test_label_class_of_one_member():
    df, infos = _penguins(40)
    df["label"] = ["a", "b"] * 20
    df.loc[5, "label"] = "c"
    flags, reason = find_label_issues(df, {**infos, "label": "text"}, "label")
    assert flags == [] and "one member" in reason


def test_all_missing_column():
    df, infos = _penguins(30)
    df["empty"] = np.nan
    df["empty_txt"] = pd.Series([None] * 30, dtype="str")
    infos = {**infos, "empty": "float", "empty_txt": "text"}
    prof = profile_columns(df, infos)
    json.dumps(prof)
    flags = run_cell_checks(df, infos, prof)
    miss = _by(flags, "missing")
    assert sum(1 for (_, c) in miss if c == "empty") == 30
    assert sum(1 for (_, c) in miss if c == "empty_txt") == 30
    df["label"] = np.where(df["mass"] > df["mass"].median(), "heavy", "light")
    flags, reason = find_label_issues(df, {**infos, "label": "text"}, "label")
    assert reason is None  # the empty columns are simply not used as features


def test_label_model_no_better_than_chance():
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"a": rng.normal(size=300), "label": rng.choice(["x", "y"], 300)})
    flags, reason = find_label_issues(df, None, "label")
    assert flags == [] and "no better than" in reason


def test_mixed_type_column():
    vals = [1, 2.5, "abc", None, True, "3", np.nan, "4,5", b"x", 7] * 5
    df = pd.DataFrame({"m": pd.Series(vals, dtype=object)})
    for logical in ("float", "integer", "text", "boolean", "datetime"):
        flags = run_cell_checks(df, {"m": logical})
        assert all(isinstance(f, Flag) for f in flags)
        assert len(_by(flags, "missing")) == 10
    t = _by(run_cell_checks(df, {"m": "float"}), "type")
    assert (2, "m") in t and (7, "m") in t and t[(7, "m")].suggestion == "4.5"


def test_five_thousand_columns():
    rng = np.random.default_rng(0)
    df = pd.DataFrame(rng.normal(size=(60, 5000)), columns=[f"c{i}" for i in range(5000)])
    df.iloc[3, 17] = 1e6
    flags = run_cell_checks(df)
    assert (3, "c17") in _by(flags, "out_of_range")
    assert len(profile_columns(df)["columns"]) == 5000


def test_empty_frames():
    for df in (pd.DataFrame(), pd.DataFrame({"a": pd.Series([], dtype=float), "b": pd.Series([], dtype="str")})):
        assert run_cell_checks(df) == []
        prof = profile_columns(df)
        json.dumps(prof)
        assert row_fingerprints(df).shape == (0,)
    flags, reason = find_label_issues(pd.DataFrame({"x": [], "y": pd.Series([], dtype="str")}), None, "y")
    assert flags == [] and reason
    with pytest.raises(ValueError):
        find_label_issues(pd.DataFrame({"x": [1.0]}), None, "nope")


def test_label_issue_found_with_cell_faults():
    rng = np.random.default_rng(0)
    n = 400
    y = rng.integers(0, 2, n)
    df = pd.DataFrame({"a": rng.normal(y * 4.0, 0.7), "b": rng.normal(-y * 4.0, 0.7)})
    df.loc[::40, "a"] *= 1000  # wild values must not blind the model
    lab = np.where(y == 1, "pos", "neg").astype(object)
    central = np.flatnonzero((np.abs(df["a"] - y * 4.0) < 0.5) & (np.abs(df["b"] + y * 4.0) < 0.5))
    flip = central[:3]
    lab[flip] = np.where(y[flip] == 1, "neg", "pos")
    df["label"] = lab
    flags, reason = find_label_issues(df, {"a": "float", "b": "float", "label": "text"}, "label")
    assert reason is None
    got = {f.row: f for f in flags}
    assert set(flip.tolist()) <= set(got)
    assert got[flip[0]].suggestion == ("pos" if y[flip[0]] == 1 else "neg")
    assert len(got) <= 8


def test_flags_frame():
    from hitl_desktop.core.checks import flags_frame

    fr = flags_frame([Flag(1, None, "duplicate", "medium", 1.0, "d", DROP_DUPLICATE)])
    assert list(fr.columns) == ["row_id", "column", "kind", "severity", "score", "message", "suggestion"]
    assert fr.iloc[0]["suggestion"] == DROP_DUPLICATE
    assert len(flags_frame([])) == 0


def test_quantiles_from_one_sort_equal_numpys():
    """The profile takes its quantiles and medians from one sorted copy; they equal np.quantile / np.median."""
    from hitl_desktop.core.checks.profile import _Q, sorted_median, sorted_quantiles

    rng = np.random.default_rng(0)
    qs = np.array([*_Q, 0.0, 0.05, 0.333, 1.0])
    for n in (1, 2, 3, 10, 999, 100_000, 255_187):
        for x in (rng.normal(size=n) * 1e4, rng.integers(-5, 5, n).astype(float), rng.lognormal(size=n)):
            s = np.sort(x)
            np.testing.assert_allclose(sorted_quantiles(s, qs), np.quantile(x, qs), rtol=1e-13, atol=0)
            assert sorted_median(s) == pytest.approx(float(np.median(x)), rel=1e-15, abs=0)


def test_first_occurrences_match_a_full_factorisation():
    """Duplicates find each repeat's first row with one hash pass (+ the repeated rows only): the same answer as
    factorising every fingerprint, across batches and within a batch."""
    from hitl_desktop.core.pipeline.checks_stages import _first_occurrences

    def reference(fp, batch):
        keys = fp if batch is None else pd.MultiIndex.from_arrays([batch, fp])
        codes = pd.factorize(keys)[0]
        _, first_pos = np.unique(codes, return_index=True)
        first = first_pos[codes]
        dup = np.flatnonzero(first != np.arange(len(fp)))
        return dup, first[dup]

    rng = np.random.default_rng(3)
    for n, distinct in ((1, 1), (10, 3), (1000, 50), (50_000, 49_000), (50_000, 50_000_000)):
        fp = rng.integers(0, distinct, n).astype(np.uint64)
        batch = np.repeat(np.arange(n // 7 + 1), 7)[:n]
        for b in (None, batch):
            got, want = _first_occurrences(fp, b), reference(fp, b)
            assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])
