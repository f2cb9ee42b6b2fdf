"""Fault-injecting generator for the checks benchmarks and tests.

Takes a real data set bundled with scikit-learn (no network), adds two synthetic categorical
columns ('sex' random, 'island' correlated with the class), and injects recorded faults:

* class-conditional label flips (default 10% of rows; per-class rates vary, flips go mostly to the
  most similar class),
* out-of-range cells (default 1% of numeric cells): x1000, sign flip (only in never-negative
  columns) and the -999 sentinel; a fault is only injected where the new value falls outside the
  clean column's observed range (otherwise it would not be an error),
* missing cells (1% of feature cells),
* type-corrupted cells ('n/a', '?', 'NULL', '#VALUE!', decimal comma) in numeric columns — a
  column holding one becomes a string column, as the importer would hand it over,
* misspelled categories ('mael', 'biscoe', 'male ', ...),
* duplicated rows (0.5%), inserted after their source; a third are near duplicates (case changed
  in 'island', which is also recorded as a category fault).

Duplicate copies inherit the faults of their source row (same values, same wrong label).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

DATASETS = ("iris", "wine", "breast_cancer", "digits")
CELL_KINDS = ("missing", "type", "out_of_range", "category")
TYPE_TOKENS = ("n/a", "?", "NULL", "#VALUE!")
SEX = ("male", "female")
ISLANDS = ("Biscoe", "Dream", "Torgersen")


@dataclass
class FaultRecord:
    cells: dict[tuple[int, str], str] = field(default_factory=dict)  # (row, column) -> kind
    label_flips: dict[int, str] = field(default_factory=dict)  # row -> true label
    duplicates: dict[int, int] = field(default_factory=dict)  # copy row -> source row

    def cells_of(self, kind: str) -> set[tuple[int, str]]:
        return {k for k, v in self.cells.items() if v == kind}

    def faulty_rows(self) -> set[int]:
        return {r for r, _ in self.cells} | set(self.label_flips) | set(self.duplicates)


@dataclass
class Faulty:
    name: str
    clean: pd.DataFrame
    df: pd.DataFrame
    infos: dict[str, str]
    label: str
    record: FaultRecord


def load_base(name: str, seed: int = 0, max_rows: int | None = None) -> tuple[pd.DataFrame, dict[str, str], str]:
    """Clean frame (features + 'sex' + 'island' + 'label'), logical types, label column name."""
    from sklearn import datasets

    loader = {"iris": datasets.load_iris, "wine": datasets.load_wine,
              "breast_cancer": datasets.load_breast_cancer, "digits": datasets.load_digits}[name]
    b = loader()
    X, y = np.asarray(b.data, dtype=float), np.asarray(b.target)
    names = [str(n).replace(" ", "_") for n in getattr(b, "feature_names", [f"x{i}" for i in range(X.shape[1])])]
    targets = [str(t) for t in getattr(b, "target_names", np.unique(y))]
    rng = np.random.default_rng(seed)
    integer = name == "digits"
    df = pd.DataFrame({n: (X[:, i].astype(np.int64) if integer else X[:, i]) for i, n in enumerate(names)})
    df["sex"] = np.array(SEX, dtype=object)[rng.integers(0, 2, len(df))]
    isl = np.where(rng.random(len(df)) < 0.7, y % 3, rng.integers(0, 3, len(df)))
    df["island"] = np.array(ISLANDS, dtype=object)[isl]
    df["label"] = np.array(targets, dtype=object)[y]
    df = df.drop_duplicates(ignore_index=True)
    if max_rows is not None and len(df) > max_rows:
        df = df.sample(max_rows, random_state=seed).reset_index(drop=True)
    infos = {n: ("integer" if integer else "float") for n in names}
    infos.update(sex="text", island="text", label="text")
    return df, infos, "label"


def _misspell(v: str, rng: np.random.Generator, cats: tuple[str, ...]) -> str:
    for _ in range(20):
        mode = rng.integers(0, 5)
        if mode == 0 and len(v) > 2:  # swap adjacent letters: male -> mael
            i = int(rng.integers(0, len(v) - 1))
            out = v[:i] + v[i + 1] + v[i] + v[i + 2:]
        elif mode == 1:
            out = v.lower() if v != v.lower() else v.capitalize()  # Biscoe -> biscoe
        elif mode == 2:
            out = v + " "  # trailing blank
        elif mode == 3 and len(v) > 3:  # drop a letter: female -> femal
            i = int(rng.integers(1, len(v)))
            out = v[:i] + v[i + 1:]
        else:
            out = v.upper()
        if out != v and out not in cats:
            return out
    return v + " "


def inject(
    clean: pd.DataFrame,
    infos: dict[str, str],
    label: str,
    seed: int = 0,
    flip_rate: float = 0.10,
    range_rate: float = 0.01,
    missing_rate: float = 0.01,
    dup_rate: float = 0.005,
    type_rate: float = 0.002,
    category_rate: float = 0.01,
    name: str = "data",
) -> Faulty:
    rng = np.random.default_rng(seed)
    df = clean.copy()
    n = len(df)
    rec = FaultRecord()
    num_cols = [c for c, t in infos.items() if t in ("float", "integer") and c != label]
    cat_cols = [c for c, t in infos.items() if t == "text" and c != label]
    feat_cols = num_cols + cat_cols

    # 1. class-conditional label flips
    y = df[label].to_numpy(dtype=object)
    classes = np.unique(y)
    if flip_rate > 0 and len(classes) > 1:
        X = clean[num_cols].to_numpy(dtype=float)
        Xs = (X - X.mean(0)) / (X.std(0) + 1e-12)
        cent = np.array([Xs[y == c].mean(0) for c in classes])
        rates = rng.uniform(0.5, 1.5, len(classes))
        rates = rates / rates.mean() * flip_rate
        new_y = y.copy()
        for i, c in enumerate(classes):
            members = np.flatnonzero(y == c)
            m = int(round(min(rates[i], 0.3) * len(members)))
            if m == 0:
                continue
            d = np.linalg.norm(cent - cent[i], axis=1)
            d[i] = np.inf
            others = [j for j in range(len(classes)) if j != i]
            p = np.array([0.7 if j == int(np.argmin(d)) else 0.0 for j in others])
            rest = p == 0
            if rest.any():
                p[rest] = 0.3 / rest.sum()
            p = p / p.sum()
            for r in rng.choice(members, m, replace=False):
                new_y[r] = classes[others[rng.choice(len(others), p=p)]]
                rec.label_flips[int(r)] = str(c)
        df[label] = new_y

    # 2. cell faults on a shared, non-overlapping cell budget
    taken: set[tuple[int, int]] = set()
    values = {c: df[c].to_numpy(dtype=float).copy() for c in num_cols}
    texts = {c: df[c].to_numpy(dtype=object).copy() for c in cat_cols}
    strings: dict[str, np.ndarray] = {}  # numeric columns turned into text columns
    lo = {c: np.nanmin(values[c]) for c in num_cols}
    hi = {c: np.nanmax(values[c]) for c in num_cols}

    def pick(cols: list[str], k: int, ok=None) -> list[tuple[int, str]]:
        out: list[tuple[int, str]] = []
        tries = 0
        while len(out) < k and tries < 50 * k + 100:
            tries += 1
            r, j = int(rng.integers(0, n)), int(rng.integers(0, len(cols)))
            key = (r, feat_cols.index(cols[j]))
            if key in taken or (ok is not None and not ok(r, cols[j])):
                continue
            taken.add(key)
            out.append((r, cols[j]))
        return out

    def range_modes(r: int, c: str) -> list[str]:
        v = values[c][r]
        modes = []
        if v != 0 and not (lo[c] <= v * 1000 <= hi[c]):
            modes.append("x1000")
        if lo[c] >= 0 and v > 0:
            modes.append("sign")
        if lo[c] > -999:
            modes.append("sentinel")
        return modes

    for r, c in pick(num_cols, int(round(range_rate * n * len(num_cols))), lambda r, c: bool(range_modes(r, c))):
        mode = rng.choice(range_modes(r, c))
        v = values[c][r]
        values[c][r] = v * 1000 if mode == "x1000" else (-v if mode == "sign" else -999.0)
        rec.cells[(r, c)] = "out_of_range"
    for r, c in pick(feat_cols, int(round(missing_rate * n * len(feat_cols)))):
        if c in values:
            values[c][r] = np.nan
        else:
            texts[c][r] = None
        rec.cells[(r, c)] = "missing"
    n_type = max(5, int(round(type_rate * n * len(num_cols)))) if type_rate > 0 else 0
    for r, c in pick(num_cols, n_type):
        if c not in strings:
            strings[c] = np.array([None] * n, dtype=object)
        v = values[c][r]
        if rng.random() < 0.3 and v != round(v):
            tok = repr(float(v)).replace(".", ",")
        else:
            tok = str(rng.choice(TYPE_TOKENS))
        strings[c][r] = tok
        values[c][r] = np.nan
        rec.cells[(r, c)] = "type"
    for r, c in pick(cat_cols, int(round(category_rate * n * len(cat_cols))) if cat_cols else 0,
                     lambda r, c: texts[c][r] is not None):
        cats = tuple(sorted(set(clean[c])))
        texts[c][r] = _misspell(str(texts[c][r]), rng, cats)
        rec.cells[(r, c)] = "category"

    for c in num_cols:
        integer = infos[c] == "integer"
        if c in strings:
            fmt = (lambda v: str(int(v))) if integer else repr
            col = np.array([None if v != v else fmt(float(v)) for v in values[c]], dtype=object)
            tok = strings[c]
            col = np.where(tok != None, tok, col)  # noqa: E711
            df[c] = pd.Series(col, dtype="str")
        elif integer:
            df[c] = pd.array(np.where(np.isnan(values[c]), 0, values[c]).astype(np.int64), dtype="Int64")
            df.loc[np.isnan(values[c]), c] = pd.NA
        else:
            df[c] = values[c]
    for c in cat_cols:
        df[c] = pd.Series(texts[c], dtype="str")

    # 3. duplicated rows, inserted after their source
    n_dup = max(1, int(round(dup_rate * n))) if dup_rate > 0 else 0
    sources = rng.choice(n, n_dup, replace=False) if n_dup else np.array([], dtype=int)
    order = list(range(n))
    copies: list[tuple[int, bool]] = []
    for s in sources.tolist():
        near = bool(rng.random() < 0.33) and "island" in df.columns and df.at[s, "island"] is not None \
            and isinstance(df.at[s, "island"], str)
        copies.append((s, near))
    extra = df.iloc[[s for s, _ in copies]].copy() if copies else df.iloc[[]].copy()
    for k, (s, near) in enumerate(copies):
        if near:
            v = str(extra.iat[k, extra.columns.get_loc("island")])
            extra.iat[k, extra.columns.get_loc("island")] = v.upper() if v != v.upper() else v.lower()
    # new positions: each copy goes somewhere after its source
    for k, (s, _) in enumerate(copies):
        pos = order.index(s)
        at = int(rng.integers(pos + 1, len(order) + 1))
        order.insert(at, n + k)
    full = pd.concat([df, extra.set_axis(range(n, n + len(copies)))], axis=0)
    for c in df.columns:  # keep dtypes
        if c in df and str(full[c].dtype) != str(df[c].dtype):
            full[c] = full[c].astype(df[c].dtype)
    full = full.loc[order].reset_index(drop=True)
    newpos = {old: new for new, old in enumerate(order)}
    out = FaultRecord()
    for (r, c), kind in rec.cells.items():
        out.cells[(newpos[r], c)] = kind
    for r, t in rec.label_flips.items():
        out.label_flips[newpos[r]] = t
    for k, (s, near) in enumerate(copies):
        cp = newpos[n + k]
        out.duplicates[cp] = newpos[s]
        for (r, c), kind in rec.cells.items():
            if r == s:
                out.cells[(cp, c)] = kind
        if s in rec.label_flips:
            out.label_flips[cp] = rec.label_flips[s]
        if near:
            out.cells[(cp, "island")] = "category"
    return Faulty(name, clean, full, infos, label, out)


def make_faulty(name: str, seed: int = 0, max_rows: int | None = None, **rates: float) -> Faulty:
    clean, infos, label = load_base(name, seed, max_rows)
    return inject(clean, infos, label, seed=seed, name=name, **rates)
