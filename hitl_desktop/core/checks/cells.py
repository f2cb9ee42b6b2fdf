"""Per-cell checks: missing, type, out_of_range, category."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

from ..util import gc_paused
from .parse import MISSING_TOKENS, Parsed, as_str, fmt_number
from .profile import SENTINELS, nearest_category
from .types import NUMERIC_TYPES, Flag


def make_flags(
    rows: np.ndarray,
    column: str | None,
    kind: str,
    severity: str | Sequence[str],
    score: float | np.ndarray,
    message: str | Sequence[str],
    suggestion: str | None | Sequence[str | None] = None,
) -> list[Flag]:
    """Build many flags at once (scalars broadcast)."""
    n = len(rows)
    if n == 0:
        return []
    rl = rows.tolist()
    sev = [severity] * n if isinstance(severity, str) else list(severity)
    sc = ([float(score)] * n if np.isscalar(score)
          else np.clip(np.asarray(score, dtype=float), 0.0, 1.0).round(4).tolist())
    msg = [message] * n if isinstance(message, str) else list(message)
    sug = [suggestion] * n if suggestion is None or isinstance(suggestion, str) else list(suggestion)
    with gc_paused():
        return list(map(Flag._make, zip(rl, [column] * n, [kind] * n, sev, sc, msg, sug)))


def check_column(
    s: pd.Series, name: str, logical: str, parsed: Parsed, prof: dict[str, Any] | None
) -> list[Flag]:
    rows = s.index.to_numpy()
    flags = make_flags(rows[parsed.missing], name, "missing", "low", 1.0, "missing value")
    flags += _type_flags(rows, name, logical, parsed)
    if prof:
        if logical in NUMERIC_TYPES and parsed.values is not None:
            flags += _range_flags(rows, name, logical, parsed, prof)
        cats = prof.get("categories")
        if logical == "text" and cats:
            flags += _category_flags(s, rows, name, parsed, cats)
    return flags


def _type_flags(rows: np.ndarray, name: str, logical: str, parsed: Parsed) -> list[Flag]:
    if not parsed.bad.any():
        return []
    idx = np.flatnonzero(parsed.bad)
    if parsed.stripped is not None:
        raw = parsed.stripped.iloc[idx].tolist()
    else:  # native float column with a non-integral value in an integer column
        raw = [fmt_number(v) for v in parsed.values[idx]]
    fixed = parsed.fixed[idx] if parsed.fixed is not None else np.full(len(idx), np.nan)
    integer = logical == "integer"
    msgs, sugs, sevs, scores = [], [], [], []
    for r, f in zip(raw, fixed.tolist()):
        if f == f:  # repaired decimal comma
            sug = fmt_number(f, integer)
            msgs.append(f"{r!r} uses a decimal comma; {logical} expected")
            sugs.append(sug)
            sevs.append("low")
            scores.append(0.9)
        elif r.casefold() in MISSING_TOKENS:
            msgs.append(f"{r!r} is a missing-value marker, not {'an' if logical[0] in 'aeiou' else 'a'} {logical}")
            sugs.append(None)
            sevs.append("medium")
            scores.append(1.0)
        else:
            msgs.append(f"{r!r} does not parse as {logical}")
            sugs.append(None)
            sevs.append("medium")
            scores.append(1.0)
    return make_flags(rows[idx], name, "type", sevs, np.array(scores), msgs, sugs)


def _range_flags(
    rows: np.ndarray, name: str, logical: str, parsed: Parsed, prof: dict[str, Any]
) -> list[Flag]:
    x = parsed.values
    if parsed.fixed is not None:
        x = np.where(np.isnan(x), parsed.fixed, x)
    out, sent = out_of_range_mask(x, prof)
    lo, hi = prof.get("lo"), prof.get("hi")
    lo = -np.inf if lo is None else float(lo)
    hi = np.inf if hi is None else float(hi)
    q01, q99 = prof.get("q01"), prof.get("q99")
    if not out.any():
        return []
    idx = np.flatnonzero(out)
    v = x[idx]
    sv = sent[idx]
    med = prof.get("median")
    med = float(med) if med is not None else 0.0
    integer = bool(prof.get("integer")) or logical == "integer"
    nonneg = bool(prof.get("nonneg"))
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        up = v > hi
        width = np.where(up, max(hi - med, 1e-12), max(med - lo, 1e-12))
        excess = np.where(up, v - hi, lo - v) / width
        excess = np.where(np.isfinite(excess), excess, 1e6)
        score = 0.5 + 0.5 * excess / (1.0 + excess)
    score = np.where(sv, 0.95, score)
    lo_s, hi_s = fmt_number(lo, integer), fmt_number(hi, integer)
    q_lo = float(q01) if q01 is not None else lo  # a rescaled value must land in the bulk
    q_hi = float(q99) if q99 is not None else hi
    msgs, sugs = [], []
    for val, is_sent, is_up in zip(v.tolist(), sv.tolist(), up.tolist()):
        vs = fmt_number(val, integer)
        sug = None
        if is_sent:
            msg = f"{vs} looks like a missing-value sentinel"
        elif is_up:
            msg = f"{vs} is above the expected range [{lo_s}, {hi_s}]"
            for factor in (1000.0, 100.0):
                cand = val / factor
                if q_lo <= cand <= q_hi and (not integer or float(cand).is_integer()):
                    sug = fmt_number(cand, integer)
                    msg += f" (looks scaled x{int(factor)})"
                    break
        else:
            msg = f"{vs} is below the expected range [{lo_s}, {hi_s}]"
            if nonneg and val < 0 and lo <= -val <= hi:
                sug = fmt_number(-val, integer)
                msg += " (sign flipped? column is never negative)"
        msgs.append(msg)
        sugs.append(sug)
    sev = ["medium" if s_ else "high" for s_ in sv.tolist()]
    return make_flags(rows[idx], name, "out_of_range", sev, score, msgs, sugs)


def out_of_range_mask(x: np.ndarray, prof: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(out, sentinel) masks: outside the profile's [lo, hi] (or infinite), or a known sentinel
    value lying beyond q01/q99 by more than half their distance."""
    lo, hi = prof.get("lo"), prof.get("hi")
    with np.errstate(invalid="ignore"):
        out = np.isinf(x)
        if lo is not None:
            out |= x < float(lo)
        if hi is not None:
            out |= x > float(hi)
        q01, q99 = prof.get("q01"), prof.get("q99")
        if q01 is not None and q99 is not None:
            w = 0.5 * (float(q99) - float(q01))
            sent = np.isin(x, SENTINELS) & ((x < q01 - w) | (x > q99 + w))
            out |= sent
        else:
            sent = np.zeros(len(x), dtype=bool)
    return out, sent


def _category_flags(
    s: pd.Series, rows: np.ndarray, name: str, parsed: Parsed, cats: list[str]
) -> list[Flag]:
    st = as_str(s)
    ok = st.isin(cats).to_numpy(dtype=bool, na_value=False)
    bad = ~ok & ~parsed.missing
    if not bad.any():
        return []
    idx = np.flatnonzero(bad)
    vals = st.iloc[idx]
    uniq = pd.unique(vals)
    sugmap: dict[str, tuple[str | None, int]] = {}
    for u in uniq[:10_000]:
        sugmap[u] = nearest_category(u, cats)
    msgs, sugs, scores = [], [], []
    for v in vals.tolist():
        best, d = sugmap.get(v, (None, 1 << 30))
        if best is not None:
            msgs.append(f"{v!r} is not a known category; did you mean {best!r}?")
            sugs.append(best)
            scores.append(0.95 if d == 0 else 0.85)
        else:
            msgs.append(f"{v!r} is not a known category")
            sugs.append(None)
            scores.append(0.6)
    return make_flags(rows[idx], name, "category", "medium", np.array(scores), msgs, sugs)
