"""Speed of the checks.

1. All checks except the label model (profiling + missing/type/range/category/duplicate) over
   N rows x 20 columns (default 1,000,000), against pandas.read_csv of the same data in the same
   run. Target: ratio <= 4.
2. The label model (find_label_issues, including profiling and feature cleaning) over M rows
   (default 200,000), against a bare cross_val_predict(method='predict_proba') with the same
   estimator on a plainly prepared matrix. Target: ratio <= 1.2.

Usage: python bench/bench_checks_speed.py [--rows 1000000] [--label-rows 200000] [--repeat 2]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np
import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from datagen import make_frame, write_csv  # noqa: E402

from hitl_desktop.core.checks import default_label_model, find_label_issues, run_cell_checks  # noqa: E402


def infos_of(df: pd.DataFrame) -> dict[str, str]:
    return {c: ("float" if c.startswith("f") else "integer" if c.startswith("i") else "text") for c in df.columns}


def dirty(df: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """1% of the numeric cells blanked, 0.1% multiplied by 1000."""
    rng = np.random.default_rng(seed)
    out = df.copy()
    for c in [c for c in df.columns if c[0] in "fi"]:
        v = out[c].to_numpy(dtype=float, copy=True)
        r = rng.random(len(v))
        v[r < 0.01] = np.nan
        v[(r >= 0.01) & (r < 0.011)] *= 1000
        out[c] = v if c[0] == "f" else pd.Series(v).round().astype("Int64")
    return out


def best_of(fn, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--label-rows", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    for faulty in (False, True):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "data.csv")
            if faulty:
                dirty(make_frame(args.rows, seed=0)).to_csv(path, index=False)
            else:
                write_csv(path, args.rows, seed=0)
            t_read, df = best_of(lambda: pd.read_csv(path), args.repeat)
        infos = infos_of(df)
        t_checks, flags = best_of(lambda: run_cell_checks(df, infos, None), args.repeat)
        what = "with 1% missing, 0.1% out-of-range cells" if faulty else "clean"
        print(f"cell checks  {args.rows:,} rows x {df.shape[1]} cols, {what}: {t_checks:.2f} s "
              f"(read_csv {t_read:.2f} s) ratio {t_checks / t_read:.2f}  [target <= 4]  flags={len(flags):,}")

    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    lf = make_frame(args.label_rows, seed=1)
    # make the label learnable (datagen's is random), with 10% of it flipped
    rng = np.random.default_rng(1)
    score = (lf["f0"] - 50) / 10 - (lf["f1"] - 51) / 11
    lab = np.where(score > 0.6, "cat", np.where(score < -0.6, "dog", "bird")).astype(object)
    flip = rng.random(len(lf)) < 0.1
    lab[flip] = rng.choice(["cat", "dog", "bird"], int(flip.sum()))
    lf["label"] = lab
    li = infos_of(lf)
    feats = [c for c in lf.columns if c != "label"]
    X = pd.get_dummies(lf[feats], dtype=float).to_numpy(dtype=float)
    y = lf["label"].to_numpy()
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=0)
    t_bare = t_ours = float("inf")
    for _ in range(args.repeat):  # interleaved, best of: the machine's load varies
        t0 = time.perf_counter()
        cross_val_predict(default_label_model(), X, y, cv=folds, method="predict_proba")
        t_bare = min(t_bare, time.perf_counter() - t0)
        t0 = time.perf_counter()
        lflags, reason = find_label_issues(lf, li, "label")  # profiles + cleans internally
        t_ours = min(t_ours, time.perf_counter() - t0)
    print(f"label model  {args.label_rows:,} rows: {t_ours:.2f} s (bare cross_val_predict {t_bare:.2f} s) "
          f"ratio {t_ours / t_bare:.2f}  [target <= 1.2]  flags={len(lflags)} reason={reason}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
