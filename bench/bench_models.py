"""Issue 7 figures: training overhead over a bare scikit-learn fit, and export + verified re-load of a 50 MB model.

Run: python bench/bench_models.py [--rows 250000] [--model logreg,hgb] [--rounds 5] [--scenario both]
1. for each model (default: logreg — `hitl train`'s default estimator, the one the figure is quoted for — and hgb),
   `hitl train`'s work (featurize + train steps with validate/clean cached, model file and registration) on the
   approved batches vs a bare `Pipeline.fit` of the same scikit-learn Pipeline on the same 200,000 training rows
   (250,000 rows minus the 20 % held out). Target: at most 1.15x. Fairness: the bare fit uses the very Pipeline
   (`make_estimator` with the registered model's parameters) and the very training rows featurize produced, with
   the same BLAS/OpenMP thread cap hitl's fit had (`fit_threads`: one thread for a short logistic regression, which
   `hitl train` fits in its own process; the libraries' default, all cores, for the others, fitted in the worker
   process). hitl and the bare fit alternate over --rounds rounds; the best of each side is compared (and the
   medians printed), so both get the same tries and the same warm memory. The bare fit runs twice per round: the
   figure uses the first (one fit each per round, like for like); the better of the two (the second reuses the
   memory the first warmed, which hitl's single fit cannot) is printed too, as a stricter baseline. Two scenarios (see `measure`): the
   project kept open as in the window (the held-out seed changes before each round so that every training step is
   redone; one uncounted round first), and a freshly opened copy of the project per round. Before measuring, both
   of hitl's fit paths are warmed with a 300-row fit (worker started, first-use code paths run).
2. export (files, hashes, Ed25519-signed manifest) + `load_bundle` (signature, trust, hashes, unpickle) of a
   ~50 MB random forest. Target: under 2 s.
Each figure is printed with its baseline and the ratio.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

os.environ.setdefault("HITL_SCRYPT_N", "1024")  # signatures are not what is measured here

from hitl_desktop.core import batches as B  # noqa: E402
from hitl_desktop.core import identity, models as M  # noqa: E402
from hitl_desktop.core.ingest import ImportOptions  # noqa: E402
from hitl_desktop.core.pipeline import registry_for, run_pipeline, set_param  # noqa: E402
from hitl_desktop.core.pipeline.model_stages import fit_threads, make_estimator, thread_limits  # noqa: E402
from hitl_desktop.core.pipeline.parallel import call_in_process, call_in_thread  # noqa: E402
from hitl_desktop.core.project import Project  # noqa: E402
from hitl_desktop.core.sources import import_file  # noqa: E402

PW = {"alice": "alice-secret", "bob": "bob-secret1"}


def data(n: int, seed: int = 0, noise: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 6))
    city = rng.choice([f"c{i}" for i in range(12)], size=n)
    kind = rng.choice(["a", "b", "c", "d"], size=n)
    s = X[:, 0] - 0.5 * X[:, 1] + (kind == "a") + rng.normal(scale=0.7, size=n)
    label = rng.choice(["p", "q", "r"], size=n) if noise else np.where(s > 0.8, "high", np.where(s < -0.5, "low", "mid"))
    df = pd.DataFrame(X.round(4), columns=[f"x{i}" for i in range(6)])
    df["city"], df["kind"], df["label"] = city, kind, label
    df.loc[rng.random(n) < 0.02, "x2"] = np.nan
    return df


def project_with(tmp: Path, name: str, df: pd.DataFrame, batch: int) -> Project:
    csv = tmp / f"{name}.csv"
    df.to_csv(csv, index=False)
    p = Project.init(tmp / name, user="alice", password=PW["alice"])
    identity.add_user(p, "alice", "bob", "approver", PW["bob"])
    import_file(p, csv, ImportOptions(label="label", batch_size=batch), user="alice")
    with p.write() as conn:
        p.set_meta(conn, "settings.joblib_n_jobs", "2")
    bob = identity.authenticate(p, "bob", PW["bob"])
    for b in B.list_batches(p):
        B.decide(p, b.id, "approve", "bob", signer=identity.session_signer(bob))
    return p


def hitl_round(pc: Project, kind: str) -> tuple[float, tuple, Any]:
    t0 = time.perf_counter()
    res = M.train(pc, "alice", "label", kind, {"max_iter": 300})
    t_train_all = time.perf_counter() - t0
    assert not res.reused and all(s.outcome == "computed" for s in res.run.steps
                                  if s.step in ("featurize", "train", "evaluate")), "nothing may come from the cache"
    steps = {s.step: s.seconds for s in res.run.steps}
    # everything `hitl train` does except evaluation: scope and approval checks, planning, featurize, the fit,
    # cache writes, model file, lineage and registration
    detail = (steps["featurize"], steps["train"], t_train_all - res.run.seconds, steps["evaluate"])
    return t_train_all - steps["evaluate"], detail, res


def bare_round(pc: Project, res: Any) -> tuple[list[float], int | None, int]:
    f = M._load_result(pc, res.run.step("featurize").key)["features"]
    X, y = f["X"][~f["holdout"]], f["y"][~f["holdout"]]
    params = res.model.params
    threads = fit_threads(f["schema"], params, len(y))  # the cap hitl's fit had: same for the bare fit
    tries = []
    for _ in range(2):  # the second try reuses the memory the first one warmed: a stricter baseline
        with thread_limits(threads):
            t0 = time.perf_counter()
            make_estimator(f["schema"], params).fit(X, y)
            tries.append(time.perf_counter() - t0)
    return tries, threads, len(y)


def measure(tmp: Path, kind: str, scenario: str, rounds: int) -> None:
    """Rounds alternate `hitl train` and a bare fit of the same Pipeline on the same rows. Both sides get the same
    number of tries and the best (and the median) of each is compared, so neither profits alone from memory or
    caches warmed by the other. Every hitl round redoes featurize, the fit, the model file and the registration
    (validate/clean are cached, as after review), in one of two scenarios:

    * open: the reviewed project stays open, as in the window; before each round the held-out split's seed (a
      featurize parameter; not timed) changes, so every training step is recomputed and a new model version is
      registered and compared with the one before. One round first, not counted: a window that has trained.
    * fresh: each round opens a fresh copy of the reviewed project (cold database statement cache and pages, no
      earlier model), as the first training after opening a project.
    """
    hitl_times, bare_times, detail = [], [], []
    if scenario == "open":
        path = tmp / f"p-{kind}-open"
        shutil.copytree(tmp / "p", path)
        pc = Project.open(path)
        reg = registry_for(pc)
        for r in range(rounds + 1):
            set_param(pc, None, "featurize", "seed", r + 1, "alice", reg)
            h, d, res = hitl_round(pc, kind)
            b, threads, n = bare_round(pc, res)
            if r:  # the first round warms the window
                hitl_times.append(h)
                detail.append(d)
                bare_times.append(b)
        pc.close()
    else:
        for r in range(rounds):
            copy = tmp / f"p-{kind}-{r}"
            shutil.copytree(tmp / "p", copy)
            pc = Project.open(copy)
            # as in the reviewed project itself: its cache has vouched for the copied validate/clean files once
            # (the copy's files have new inodes and times, which would make the first check re-hash them all)
            assert run_pipeline(pc, user="alice", stage="clean").status == "done"
            h, d, res = hitl_round(pc, kind)
            b, threads, n = bare_round(pc, res)
            hitl_times.append(h)
            detail.append(d)
            bare_times.append(b)
            pc.close()
            shutil.rmtree(copy)
    best = min(range(len(hitl_times)), key=hitl_times.__getitem__)
    feat, train_s, registration, evaluate = detail[best]
    h_min, h_med = min(hitl_times), statistics.median(hitl_times)
    first = [b[0] for b in bare_times]  # like for like: one fit each per round, each after the other side's work
    both = [min(b) for b in bare_times]  # the better of two back-to-back bare fits
    how = "1 thread, in this process" if threads == 1 else "all cores, worker process"
    what = "project kept open (window)" if scenario == "open" else "freshly opened project copy"
    verdict = "met" if h_min / min(first) <= 1.15 else "NOT met"
    print(f"1. [{kind}, {what}] training, best of {rounds}: {h_min:.3f} s (featurize {feat:.3f} s, train "
          f"{train_s:.3f} s, register {registration:.3f} s, rest: checks, planning, records) | bare Pipeline.fit on "
          f"the same {n:,} rows (fits: {how}), best of {rounds}: {min(first):.3f} s | ratio "
          f"{h_min / min(first):.3f}x (target <= 1.15x: {verdict}); medians {h_med:.3f} s vs "
          f"{statistics.median(first):.3f} s = {h_med / statistics.median(first):.3f}x | stricter baseline, the "
          f"better of two back-to-back bare fits: {min(both):.3f} s, ratio {h_min / min(both):.3f}x (medians "
          f"{h_med / statistics.median(both):.3f}x) | evaluate (CV + held-out, not training) {evaluate:.2f} s")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=250_000)
    ap.add_argument("--model", default="logreg,hgb", help="comma-separated: logreg, forest, hgb")
    ap.add_argument("--rounds", type=int, default=5, help="alternating hitl/bare rounds per model and scenario")
    ap.add_argument("--scenario", default="both", choices=("open", "fresh", "both"),
                    help="open: the project kept open (window); fresh: a freshly opened copy per round")
    ap.add_argument("--big-trees", type=int, default=17, help="trees of the ~50 MB forest")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        os.environ[M.TRUST_ENV] = str(tmp / "trust.json")
        p = project_with(tmp, "p", data(args.rows), 5000)
        kinds = [k.strip() for k in args.model.split(",") if k.strip()]
        assert kinds and all(k in ("logreg", "forest", "hgb") for k in kinds), args.model
        print(f"project: {args.rows:,} rows x 9 columns in {-(-args.rows // 5000)} approved batches; "
              f"{os.cpu_count()} cores; models {', '.join(kinds)}")
        rep = run_pipeline(p, user="alice", stage="clean")  # per-batch checks/cleaning: cached, as after review
        assert rep.status == "done", rep.error
        # warm both fit paths, as in a window that has trained before: the worker process (started, scikit-learn
        # imported; a window keeps it between trainings) and fits in this process (first-use code paths, the scan
        # of the thread pools)
        tiny = data(300, 5)
        from hitl_desktop.core.pipeline.model_stages import _fit, model_frame

        schema0 = {"columns": [{"name": c, "type": "category" if c in ("city", "kind") else "number"}
                               for c in tiny.columns if c != "label"], "max_categories": 20}
        params0 = {"model": kinds[0], "C": 1.0, "max_iter": 300, "class_weight": "none", "impute": "median",
                   "seed": 0, "hyper": {}}
        warm = (schema0, params0, model_frame(tiny, schema0), tiny["label"].to_numpy(str))
        call_in_process(_fit, warm, {}, threading.Event())
        call_in_thread(_fit, (*warm, 1), {}, threading.Event())

        # --- 1. training overhead -------------------------------------------------------------------------------
        # Rounds alternate `hitl train` and a bare fit of the same Pipeline on the same rows (see `measure`).
        p.close()
        scenarios = ["open", "fresh"] if args.scenario == "both" else [args.scenario]
        for kind in kinds:
            for scenario in scenarios:
                measure(tmp, kind, scenario, args.rounds)

        # --- 2. export + verified re-load of a ~50 MB model ----------------------------------------------------
        q = project_with(tmp, "q", data(60_000, 1, noise=True), 10_000)
        res = M.train(q, "alice", "label", "forest", {"n_estimators": args.big_trees, "n_jobs": 2})
        m = res.model
        size = (q.path / m.model_file).stat().st_size
        M.decide_model(q, m.id, "approve_model", "bob", signer=identity.signer(q, "bob", PW["bob"]))
        bob = identity.authenticate(q, "bob", PW["bob"])
        t0 = time.perf_counter()
        M.export_model(q, m.id, tmp / "bundle", bob, onnx=False)
        t_export = time.perf_counter() - t0
        t0 = time.perf_counter()
        b = M.load_bundle(tmp / "bundle")
        t_load = time.perf_counter() - t0
        t0 = time.perf_counter()
        import joblib

        joblib.load(q.path / m.model_file)
        t_plain = time.perf_counter() - t0
        total = t_export + t_load
        print(f"2. export + verified re-load of a {size / 1e6:.1f} MB model: {total:.2f} s (export {t_export:.2f} s, "
              f"verify + load {t_load:.2f} s) | baseline plain joblib.load {t_plain:.2f} s | ratio "
              f"{total / t_plain:.2f}x; target < 2 s: {'met' if total < 2 else 'NOT met'}")
        assert b.model is not None
        q.close()


if __name__ == "__main__":
    sys.exit(main())
