"""Quality of the checks against recorded injected faults (see bench/faults.py).

Prints, per data set and fault kind, precision / recall / F1 of our checks and of a peer:
  label:        cleanlab.find_label_issues on the same out-of-fold probabilities (optional
                import; cleanlab is AGPL and used only here), plus naive confident learning on the
                raw file (naive prep: coerce to number, mean-impute, no outlier handling).
  out_of_range: 3 x IQR fences per column.
  others:       naive pandas (isna / to_numeric failures / DataFrame.duplicated / rare values).
And the review effort: share of faulty rows met within the first 1.3 x n_faulty rows in risk order.

Usage: python bench/bench_checks_quality.py [--seeds 3] [--datasets iris,wine,breast_cancer,digits]
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections import defaultdict

import numpy as np
import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from faults import CELL_KINDS, DATASETS, Faulty, make_faulty  # noqa: E402

from hitl_desktop.core.checks import (  # noqa: E402
    confident_learning, default_label_model, find_label_issues, profile_columns, row_risk,
    run_cell_checks,
)
from hitl_desktop.core.checks.labels import _labels  # noqa: E402

BAR = {"missing": (0.95, 0.98), "type": (0.95, 0.98), "duplicate": (0.95, 0.98),
       "category": (0.95, 0.98), "out_of_range": (0.8, 0.9)}


def prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    p = tp / (tp + fp) if tp + fp else 1.0
    r = tp / (tp + fn) if tp + fn else 1.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return p, r, f


def counts(found: set, truth: set) -> tuple[int, int, int]:
    return len(found & truth), len(found - truth), len(truth - found)


def evaluate(f: Faulty, with_peers: bool = True, seed: int = 0) -> dict:
    """Counts (tp, fp, fn) per kind for ours and peers, plus review effort. Pure function of f."""
    df, infos, rec = f.df, f.infos, f.record
    prof = profile_columns(df, infos)
    cell_flags = run_cell_checks(df, infos, prof)
    lab_flags, reason, probs = find_label_issues(df, infos, f.label, prof, random_state=seed, return_probs=True)
    res: dict = {"ours": {}, "peer": {}, "reason": reason}
    for kind in CELL_KINDS:
        found = {(fl.row, fl.column) for fl in cell_flags if fl.kind == kind}
        res["ours"][kind] = counts(found, rec.cells_of(kind))
    found_dup = {fl.row for fl in cell_flags if fl.kind == "duplicate"}
    res["ours"]["duplicate"] = counts(found_dup, set(rec.duplicates))
    found_lab = {fl.row for fl in lab_flags}
    res["ours"]["label"] = counts(found_lab, set(rec.label_flips))

    # review effort
    risk = row_risk(cell_flags + lab_flags)
    rng = np.random.default_rng(seed)
    rest = [r for r in rng.permutation(len(df)).tolist() if r not in risk]
    order = sorted(risk, key=lambda r: (-risk[r], r)) + rest
    faulty = rec.faulty_rows()
    budget = int(math.ceil(1.3 * len(faulty)))
    res["effort"] = len(set(order[:budget]) & faulty) / max(1, len(faulty))

    if with_peers:
        res["peer"] = peers(f, probs, seed)
    return res


def naive_numeric(df: pd.DataFrame, cols: list[str]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.to_numeric(df[c], errors="coerce").astype("float64") for c in cols}, index=df.index)


def peers(f: Faulty, probs: np.ndarray, seed: int) -> dict:
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    df, infos, rec = f.df, f.infos, f.record
    out: dict = {}
    num_cols = [c for c, t in infos.items() if t in ("float", "integer") and c != f.label]
    cat_cols = [c for c, t in infos.items() if t == "text" and c != f.label]
    num = naive_numeric(df, num_cols)
    # missing: isna; type: to_numeric failures
    out["missing"] = counts({(r, c) for c in df.columns for r in np.flatnonzero(df[c].isna())},
                            rec.cells_of("missing"))
    out["type"] = counts({(r, c) for c in num_cols for r in np.flatnonzero((num[c].isna() & df[c].notna()).to_numpy(dtype=bool))},
                         rec.cells_of("type"))
    # out_of_range: 3 x IQR
    found = set()
    for c in num_cols:
        x = num[c]
        q1, q3 = x.quantile(0.25), x.quantile(0.75)
        iqr = q3 - q1
        bad = (x < q1 - 3 * iqr) | (x > q3 + 3 * iqr)
        found |= {(r, c) for r in np.flatnonzero(bad.to_numpy(dtype=bool, na_value=False))}
    out["out_of_range"] = counts(found, rec.cells_of("out_of_range"))
    # category: values seen in < 1% of rows
    found = set()
    for c in cat_cols:
        vc = df[c].value_counts()
        rare = vc[vc < 0.01 * len(df)].index
        found |= {(r, c) for r in np.flatnonzero(df[c].isin(rare).to_numpy())}
    out["category"] = counts(found, rec.cells_of("category"))
    out["duplicate"] = counts(set(np.flatnonzero(df.duplicated().to_numpy())), set(rec.duplicates))

    # label: cleanlab on our out-of-fold probabilities, and on naive probabilities from the raw file
    codes, _ = _labels(df[f.label], "text", {})
    have = codes >= 0
    _, y = np.unique(codes[have], return_inverse=True)
    truth = set(rec.label_flips)
    Xn = pd.concat([num.fillna(num.mean()), pd.get_dummies(df[cat_cols], dtype=float)], axis=1)
    Xn = Xn.fillna(0.0).to_numpy(dtype=float)[have]
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    naive_probs = cross_val_predict(default_label_model(), Xn, y, cv=folds, method="predict_proba")
    rows = np.flatnonzero(have)
    out["label_ours_on_naive"] = counts(set(rows[confident_learning(naive_probs, y)]), truth)
    try:
        from cleanlab.filter import find_label_issues as cl_find
    except ImportError:  # optional peer
        out["label"] = None
        out["label_naive"] = None
        return out
    p = probs[have]
    out["label"] = counts(set(rows[cl_find(y, p)]), truth)
    out["label_naive"] = counts(set(rows[cl_find(y, naive_probs)]), truth)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--datasets", default=",".join(DATASETS))
    args = ap.parse_args()
    kinds = ["missing", "type", "out_of_range", "category", "duplicate", "label"]
    all_ok = {}
    for name in args.datasets.split(","):
        t0 = time.perf_counter()
        tot = {"ours": defaultdict(lambda: np.zeros(3, int)), "peer": defaultdict(lambda: np.zeros(3, int))}
        efforts = []
        for seed in range(args.seeds):
            f = make_faulty(name, seed)
            res = evaluate(f, True, seed)
            efforts.append(res["effort"])
            for side in ("ours", "peer"):
                for k, v in res[side].items():
                    if v is not None:
                        tot[side][k] += np.array(v)
        dt = time.perf_counter() - t0
        print(f"\n== {name}  ({len(f.df)} rows x {f.df.shape[1]} cols, {args.seeds} seeds, {dt:.1f}s)")
        print(f"{'kind':<14}{'P':>7}{'R':>7}{'F1':>7}   {'peer':<24}{'P':>7}{'R':>7}{'F1':>7}  bar")
        ok_all = True
        for k in kinds:
            p, r, f1 = prf(*tot["ours"][k])
            peer_name = {"label": "cleanlab (same probs)", "out_of_range": "3xIQR"}.get(k, "naive pandas")
            pk = tot["peer"].get(k)
            ps = "%7.3f%7.3f%7.3f" % prf(*pk) if pk is not None and k in tot["peer"] else "      -      -      -"
            if k in BAR:
                ok = p >= BAR[k][0] and r >= BAR[k][1]
            else:
                cl = tot["peer"].get("label")
                ok = cl is None or f1 >= prf(*cl)[2] - 1e-9
            ok_all &= ok
            print(f"{k:<14}{p:7.3f}{r:7.3f}{f1:7.3f}   {peer_name:<24}{ps}  {'ok' if ok else 'MISS'}")
        for extra, label in (("label_naive", "cleanlab, naive raw prep"), ("label_ours_on_naive", "our CL, naive raw prep")):
            if extra in tot["peer"]:
                print(f"{'':<14}{'':>21}   {label:<24}" + "%7.3f%7.3f%7.3f" % prf(*tot["peer"][extra]))
        eff = float(np.mean(efforts))
        ok_eff = min(efforts) >= 0.9
        ok_all &= ok_eff
        print(f"review effort: faulty rows met within 1.3 x n_faulty = {eff:.3f} (min {min(efforts):.3f})  "
              f"{'ok' if ok_eff else 'MISS'}")
        all_ok[name] = ok_all
    print("\nbar met on:", ", ".join(n for n, ok in all_ok.items() if ok) or "none")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
