"""Exact and near-duplicate rows, within a batch and against fingerprints of other batches."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

from .cells import make_flags
from .parse import Parsed, as_str, parse_column
from .types import DROP_DUPLICATE, NUMERIC_TYPES, Flag, normalize_infos

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser (wrapping uint64 arithmetic)."""
    x = x ^ (x >> np.uint64(30))
    x = x * _M1
    x = x ^ (x >> np.uint64(27))
    x = x * _M2
    return x ^ (x >> np.uint64(31))


def _hash_strings(values: Any) -> np.ndarray:
    return pd.util.hash_array(np.asarray(values, dtype=object), categorize=False)


def _text_hash(s: pd.Series) -> np.ndarray:
    codes, uniques = pd.factorize(as_str(s), use_na_sentinel=True)
    norm = pd.Series(uniques, dtype="str").str.split().str.join(" ").str.casefold()
    uh = _hash_strings(norm.to_numpy(dtype=object, na_value=None))
    table = np.append(uh, np.uint64(0x9E3779B97F4A7C15))  # code -1 (missing) -> last slot
    return table[codes]


def column_hash(s: pd.Series, logical: str, parsed: Parsed | None = None) -> np.ndarray:
    """Per-cell uint64 hash of the normalised value: numbers by value (39, 39.0, '39', '39,0' agree),
    text up to case and runs of blanks, missing cells all alike."""
    if logical == "text":
        return _text_hash(s)
    if logical == "datetime" and pd.api.types.is_datetime64_any_dtype(s.dtype):
        v = s.to_numpy(dtype="datetime64[ns]").view("int64").astype("float64")
        return pd.util.hash_array(v)
    if parsed is None:
        parsed = parse_column(s, logical)
    if parsed.values is None:  # datetime stored as text
        return _text_hash(s)
    v = parsed.values
    if parsed.fixed is not None:
        v = np.where(np.isnan(v), parsed.fixed, v)
    v = np.where(parsed.missing, np.nan, v) + 0.0  # -0.0 -> 0.0
    h = pd.util.hash_array(v)
    strays = parsed.bad & np.isnan(v)
    if strays.any() and parsed.stripped is not None:
        h = h.copy()
        h[strays] = _hash_strings(parsed.stripped.iloc[np.flatnonzero(strays)].str.casefold().tolist())
    return h


def row_fingerprints(
    df: pd.DataFrame,
    infos: Any = None,
    exclude: Sequence[str] = (),
    parsed: dict[str, Parsed] | None = None,
) -> np.ndarray:
    """uint64 content fingerprint per row, independent of column order and of the batch.

    Two rows get the same fingerprint when every column holds the same normalised value. Store it
    per row; pass the fingerprints of earlier batches to `find_duplicates` for cross-batch checks.
    """
    types = normalize_infos(df, infos)
    acc = np.zeros(len(df), dtype=np.uint64)
    skip = set(exclude)
    for name in df.columns:
        if str(name) in skip:
            continue
        p = parsed.get(str(name)) if parsed else None
        h = column_hash(df[name], types[str(name)], p)
        salt = _hash_strings([f"col:{name}"])[0]
        acc += _mix(h ^ salt)
    return acc


def find_duplicates(
    df: pd.DataFrame,
    infos: Any = None,
    other_fingerprints: np.ndarray | None = None,
    fingerprints: np.ndarray | None = None,
    exclude: Sequence[str] = (),
) -> list[Flag]:
    """Flag rows that repeat an earlier row of this batch, or any row of other batches.

    The first occurrence within the batch stays unflagged; later ones get a whole-row `duplicate`
    flag with the suggestion DROP_DUPLICATE. Exact repeats score 1.0, near ones (same up to case,
    blanks or number formatting) 0.9.
    """
    if len(df) == 0:
        return []
    fp = row_fingerprints(df, infos, exclude) if fingerprints is None else np.asarray(fingerprints, dtype=np.uint64)
    codes, uniq = pd.factorize(fp)
    _, first_pos = np.unique(codes, return_index=True)
    first = first_pos[codes]
    pos = np.arange(len(fp))
    within = first != pos
    cross = np.zeros(len(fp), dtype=bool)
    if other_fingerprints is not None and len(other_fingerprints):
        cross = np.isin(fp, np.asarray(other_fingerprints, dtype=np.uint64)) & ~within
    if not (within.any() or cross.any()):
        return []
    rows = df.index.to_numpy()
    flags: list[Flag] = []
    if within.any():
        dpos = np.flatnonzero(within)
        fpos = first[dpos]
        a = df.iloc[dpos].reset_index(drop=True)
        b = df.iloc[fpos].reset_index(drop=True)
        exact = _rows_equal(a, b)
        first_ids = rows[fpos].tolist()
        msgs = [
            f"{'exact' if e else 'near-'} duplicate of row {fr}".replace("near- ", "near-")
            for e, fr in zip(exact.tolist(), first_ids)
        ]
        flags += make_flags(rows[dpos], None, "duplicate", "medium", np.where(exact, 1.0, 0.9),
                            msgs, DROP_DUPLICATE)
    if cross.any():
        flags += make_flags(rows[cross], None, "duplicate", "medium", 0.95,
                            "duplicate of a row in another batch", DROP_DUPLICATE)
    return flags


def _rows_equal(a: pd.DataFrame, b: pd.DataFrame) -> np.ndarray:
    eq = np.ones(len(a), dtype=bool)
    for c in a.columns:
        x, y = a[c], b[c]
        same = (x == y).to_numpy(dtype=bool, na_value=False) | (x.isna() & y.isna()).to_numpy(dtype=bool)
        eq &= same
    return eq
