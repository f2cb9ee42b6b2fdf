"""Vectorised parsing of columns into their logical type, recording what did not parse."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

# Strings that mean "no value" in spreadsheets and exports. In a typed column they are a `type`
# finding (the cell is not a value of the column's type), reported with this explanation.
MISSING_TOKENS = frozenset(
    {"n/a", "na", "nan", "null", "none", "nil", "?", "-", "--", ".", "missing", "#value!", "#n/a",
     "#div/0!", "#ref!", "#num!", "#name?", "#null!"}
)
_TRUE = frozenset({"true", "t", "yes", "y", "1", "1.0"})
_FALSE = frozenset({"false", "f", "no", "n", "0", "0.0"})
_DECIMAL_COMMA_RE = r"[+-]?\d*,\d+"


@dataclass(slots=True)
class Parsed:
    """Result of parsing one column.

    values: float64 (numeric/boolean), datetime64[ns] as int64-view float, or None for text.
    missing: cell empty (None/NaN/blank string).
    bad: non-empty cell that does not parse as the logical type.
    fixed: for bad cells with an unambiguous repair (decimal comma), the repaired value, else NaN.
    """

    values: np.ndarray | None
    missing: np.ndarray
    bad: np.ndarray
    fixed: np.ndarray | None = None
    stripped: pd.Series | None = None


def is_stringlike(s: pd.Series) -> bool:
    return pd.api.types.is_object_dtype(s.dtype) or pd.api.types.is_string_dtype(s.dtype)


def as_str(s: pd.Series) -> pd.Series:
    """The column as pandas 'str' dtype (missing stays missing)."""
    if isinstance(s.dtype, pd.StringDtype):
        return s
    return s.astype("str")


def missing_mask(s: pd.Series) -> np.ndarray:
    """None/NaN/NaT, and blank strings in string columns."""
    m = s.isna().to_numpy(dtype=bool, copy=True)
    if is_stringlike(s) and len(s):
        st = as_str(s)
        blank = (st.str.strip() == "").to_numpy(dtype=bool, na_value=False)
        m |= blank
    return m


def parse_column(s: pd.Series, logical: str) -> Parsed:
    n = len(s)
    if logical in ("integer", "float"):
        return _parse_numeric(s, logical)
    if logical == "boolean":
        return _parse_bool(s)
    if logical == "datetime":
        return _parse_datetime(s)
    miss = missing_mask(s)
    return Parsed(None, miss, np.zeros(n, dtype=bool))


def _parse_numeric(s: pd.Series, logical: str) -> Parsed:
    n = len(s)
    if pd.api.types.is_bool_dtype(s.dtype):
        vals = s.to_numpy(dtype="float64", na_value=np.nan)
        return Parsed(vals, np.isnan(vals), np.zeros(n, dtype=bool))
    if pd.api.types.is_numeric_dtype(s.dtype):
        vals = s.to_numpy(dtype="float64", na_value=np.nan)
        miss = np.isnan(vals)
        bad = np.zeros(n, dtype=bool)
        if logical == "integer" and pd.api.types.is_float_dtype(s.dtype):
            with np.errstate(invalid="ignore"):
                bad = ~miss & np.isfinite(vals) & (vals != np.round(vals))
        return Parsed(vals, miss, bad)
    st = as_str(s).str.strip()
    miss = (st.isna() | (st == "")).to_numpy(dtype=bool, na_value=True)
    num = pd.to_numeric(st.where(~miss), errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    bad = ~miss & np.isnan(num)
    fixed = np.full(n, np.nan)
    if bad.any():
        idx = np.flatnonzero(bad)
        cand = st.iloc[idx]
        dc = cand.str.fullmatch(_DECIMAL_COMMA_RE).to_numpy(dtype=bool, na_value=False)
        if dc.any():
            rep = pd.to_numeric(cand[dc].str.replace(",", ".", regex=False), errors="coerce")
            fixed[idx[dc]] = rep.to_numpy(dtype="float64", na_value=np.nan)
    if logical == "integer":
        with np.errstate(invalid="ignore"):
            frac = ~miss & np.isfinite(num) & (num != np.round(num))
        bad |= frac
    return Parsed(num, miss, bad, fixed, st)


def _parse_bool(s: pd.Series) -> Parsed:
    n = len(s)
    if pd.api.types.is_bool_dtype(s.dtype) or pd.api.types.is_numeric_dtype(s.dtype):
        vals = s.to_numpy(dtype="float64", na_value=np.nan)
        miss = np.isnan(vals)
        bad = ~miss & ~np.isin(vals, (0.0, 1.0))
        return Parsed(vals, miss, bad)
    st = as_str(s).str.strip()
    low = st.str.lower()
    miss = (st.isna() | (st == "")).to_numpy(dtype=bool, na_value=True)
    is_t = low.isin(_TRUE).to_numpy(dtype=bool, na_value=False)
    is_f = low.isin(_FALSE).to_numpy(dtype=bool, na_value=False)
    vals = np.where(is_t, 1.0, np.where(is_f, 0.0, np.nan))
    bad = ~miss & ~is_t & ~is_f
    return Parsed(vals, miss, bad, None, st)


def _parse_datetime(s: pd.Series) -> Parsed:
    n = len(s)
    if pd.api.types.is_datetime64_any_dtype(s.dtype):
        miss = s.isna().to_numpy(dtype=bool)
        return Parsed(None, miss, np.zeros(n, dtype=bool))
    st = as_str(s).str.strip()
    miss = (st.isna() | (st == "")).to_numpy(dtype=bool, na_value=True)
    dt = pd.to_datetime(st.where(~miss), errors="coerce", format="mixed")
    bad = ~miss & dt.isna().to_numpy(dtype=bool)
    return Parsed(None, miss, bad, None, st)


def fmt_number(v: float, integer: bool = False) -> str:
    """Shortest faithful text for a suggested value."""
    if integer and np.isfinite(v) and float(v).is_integer():
        return str(int(v))
    return f"{float(v):.12g}"
