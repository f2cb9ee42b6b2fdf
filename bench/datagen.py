"""Synthetic data for the benchmarks: N rows x 20 columns (12 float, 4 int, 3 short text, 1 label)."""
from __future__ import annotations

import numpy as np
import pandas as pd


def make_frame(n_rows: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    cols: dict[str, object] = {}
    for i in range(12):
        cols[f"f{i}"] = np.round(rng.normal(50 + i, 10 + i, n_rows), 3)
    for i in range(4):
        cols[f"i{i}"] = rng.integers(0, 10_000 * (i + 1), n_rows)
    words = np.array(["alpha", "beta", "gamma", "delta", "eps", "zeta", "eta", "theta"])
    for i in range(3):
        cols[f"t{i}"] = words[rng.integers(0, len(words), n_rows)]
    cols["label"] = np.array(["cat", "dog", "bird"])[rng.integers(0, 3, n_rows)]
    return pd.DataFrame(cols)


def write_csv(path, n_rows: int, seed: int = 0) -> None:
    make_frame(n_rows, seed).to_csv(path, index=False)
