"""Speed of the checks through the pipeline (real projects, cold cache).

1. All checks except the label model — the `validate` step (profile of the project computed on first use, cell
   checks, rules, fingerprints, flags stored in the project) and the `duplicates` step (within and across
   batches) — over an imported N-row x 20-column project (default 1,000,000), against pandas.read_csv of the same
   file in the same run. Target: ratio <= 4.
2. The label model — the `labels` step alone (validate and clean already cached): gathering the cleaned tables,
   feature cleaning, 5-fold out-of-fold probabilities, confident learning, label flags stored — over an M-row
   project (default 200,000), against a bare cross_val_predict(method='predict_proba') with the same estimator
   on the same matrix. Target: ratio <= 1.2.

Usage: python bench/bench_checks_pipeline.py [--rows 1000000] [--label-rows 200000] [--batch-size 50000]
       [--jobs N] [--repeat 2]
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

import numpy as np
import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from datagen import make_frame  # noqa: E402

os.environ.setdefault("HITL_PIPELINE_INPROCESS", "1")

from hitl_desktop.core.ingest import ImportOptions  # noqa: E402
from hitl_desktop.core.pipeline import run_pipeline  # noqa: E402
from hitl_desktop.core.project import Project  # noqa: E402
from hitl_desktop.core.sources import import_file  # noqa: E402


def dirty(df: pd.DataFrame, seed: int = 0, missing: float = 0.001, oor: float = 0.0005) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    out = df.copy()
    for c in [c for c in df.columns if c[0] in "fi"]:
        v = out[c].to_numpy(dtype=float, copy=True)
        r = rng.random(len(v))
        v[r < missing] = np.nan
        v[(r >= missing) & (r < missing + oor)] *= 1000
        out[c] = v if c[0] == "f" else pd.Series(v).round().astype("Int64")
    return out


def project_of(tmp: str, name: str, csv: str, label: str | None, batch_size: int, jobs: int | None) -> Project:
    d = os.path.join(tmp, name)
    shutil.rmtree(d, ignore_errors=True)
    p = Project.init(d, user="bench")
    import_file(p, csv, ImportOptions(label=label, batch_size=batch_size), user="bench")
    if jobs:
        with p.write() as conn:
            p.set_meta(conn, "settings.joblib_n_jobs", str(jobs))
    return p


def cells(args, tmp: str) -> None:
    for what, make in (("clean", lambda df: df), ("0.1% missing + 0.05% x1000 cells", dirty)):
        csv = os.path.join(tmp, "cells.csv")
        make(make_frame(args.rows, seed=0)).to_csv(csv, index=False)
        t_read = min(_timed(lambda: pd.read_csv(csv))[0] for _ in range(args.repeat))
        best, best_detail = float("inf"), None
        for i in range(args.repeat):
            p = project_of(tmp, f"cells{i}", csv, None, args.batch_size, args.jobs)
            t0 = time.perf_counter()
            r1 = run_pipeline(p, user="bench", stage="validate")
            r2 = run_pipeline(p, user="bench", stage="duplicates")
            t = time.perf_counter() - t0
            assert r1.status == r2.status == "done", (r1.error, r2.error)
            with p.read() as conn:
                n_flags = conn.exec_driver_sql("select count(*) from flags").scalar()
            p.close()
            if t < best:
                best = t
                best_detail = (r1.step("validate").seconds, r2.step("duplicates").seconds, n_flags,
                               r1.step("validate").units_computed)
        v, dup, n_flags, units = best_detail
        print(f"checks (validate + duplicates) {args.rows:,} rows x 20 cols, {what}, {units} batches: "
              f"{best:.2f} s (validate {v:.2f}, duplicates {dup:.2f}; {n_flags:,} flags stored) | read_csv "
              f"{t_read:.2f} s | ratio {best / t_read:.2f}  [target <= 4]")


def labels(args, tmp: str) -> None:
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    from hitl_desktop.core.checks import default_label_model, label_features
    from hitl_desktop.core.pipeline.checks_stages import effective_profile
    from hitl_desktop.core.sources import list_sources

    lf = make_frame(args.label_rows, seed=1)
    rng = np.random.default_rng(1)
    score = (lf["f0"] - 50) / 10 - (lf["f1"] - 51) / 11
    lab = np.where(score > 0.6, "cat", np.where(score < -0.6, "dog", "bird")).astype(object)
    flip = rng.random(len(lf)) < 0.1
    lab[flip] = rng.choice(["cat", "dog", "bird"], int(flip.sum()))
    lf["label"] = lab
    csv = os.path.join(tmp, "labels.csv")
    lf.to_csv(csv, index=False)
    p = project_of(tmp, "labels", csv, "label", args.batch_size, args.jobs)
    r = run_pipeline(p, user="bench", stage="clean")
    assert r.status == "done", r.error
    source = list_sources(p)[-1]
    prof = effective_profile(p, source)
    infos = {c.name: c.logical for c in source.columns}
    from hitl_desktop.core.batches import load_source

    df = load_source(p, source.id)
    X = label_features(df, infos, "label", prof)
    # the step's own label codes (sorted classes), so the bare run does not pay for encoding string labels
    y = np.unique(df["label"].astype(str).to_numpy(), return_inverse=True)[1]
    t_bare = t_ours = float("inf")
    flags = None
    from hitl_desktop.core.pipeline import set_param
    from hitl_desktop.core.pipeline.registry import registry_for

    for i in range(args.repeat):  # interleaved, best of: the machine's load varies
        # same estimator, same folds as the step's run below (seed i), sequential like the step, same thread caps
        # (neither caps BLAS threads; both run in this process)
        folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=i)
        t0 = time.perf_counter()
        cross_val_predict(default_label_model(), X, y, cv=folds, method="predict_proba")
        t_bare = min(t_bare, time.perf_counter() - t0)
        set_param(p, None, "labels", "seed", i, "bench", registry_for(p))  # a new key: a cold labels step
        rep = run_pipeline(p, user="bench", stage="labels")
        assert rep.status == "done", rep.error
        s = rep.step("labels")
        assert s.outcome == "computed" and any("refitted" in n for n in s.notes), s.notes
        t_ours = min(t_ours, s.seconds)
        with p.read() as conn:
            flags = conn.exec_driver_sql("select count(*) from flags where kind='label'").scalar()
    p.close()
    print(f"label model (labels step) {args.label_rows:,} rows: {t_ours:.2f} s ({flags:,} label flags stored) | "
          f"bare cross_val_predict {t_bare:.2f} s | ratio {t_ours / t_bare:.2f}  [target <= 1.2]")


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--label-rows", type=int, default=200_000)
    ap.add_argument("--batch-size", type=int, default=50_000)
    ap.add_argument("--jobs", type=int, default=None)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--only", choices=("cells", "labels"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.only != "labels":
            cells(args, tmp)
        if args.only != "cells":
            labels(args, tmp)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
