"""The review workflow shared by the CLI and the window: running the checks, and the order flags are met in.

* `run_checks` runs the check steps of a pipeline (labels, which needs validate and clean; then duplicates; then
  validate if still needed): exactly what `hitl checks DIR` and the window's Run Checks do.
* `ordered_flags` / `sort_flags`: batches riskiest first (open flags weighted by severity, as `list_batches`), rows
  by risk within a batch (sum of severity weight x score of the row's open flags), flags within a row by weight.
"""
from __future__ import annotations

from typing import Any, Iterable

from sqlalchemy import func, select

from . import db
from . import flags as F
from .batches import SEVERITY_WEIGHT, list_batches
from .errors import HitlError
from .project import Project
from .sources import get_source

CHECK_STEPS = ("labels", "duplicates", "validate")


def run_checks(project: Project, user: str, pipeline: str | None = None, *, observer: Any = None,
               cancel: Any = None, n_jobs: int | None = None) -> list[Any]:
    """Run the check steps of `pipeline` (only what is stale); returns the run reports, stopping at a failure."""
    from .pipeline import engine as E
    from .pipeline import spec as S

    spec = S.get_pipeline(project, pipeline)
    names = spec.step_names()
    targets = [t for t in CHECK_STEPS if t in names]
    if not targets:
        raise HitlError(f"pipeline '{spec.name}' has no check steps (validate, duplicates, labels)")
    done: set[str] = set()
    reports = []
    for t in targets:
        if t in done:
            continue
        rep = E.run_pipeline(project, spec.name, t, user=user, observer=observer, cancel=cancel, n_jobs=n_jobs)
        reports.append(rep)
        done.update(s.step for s in rep.steps)
        if rep.status != "done":
            break
    return reports


def open_flag_counts(project: Project) -> dict[str, int]:
    with project.read() as conn:
        return {k: n for k, n in conn.execute(
            select(db.flags.c.kind, func.count()).where(db.flags.c.status == "open").group_by(db.flags.c.kind))}


def _weight(r: Any) -> float:
    return SEVERITY_WEIGHT.get(r.severity, 1.0) * float(r.score)


def row_risks(recs: Iterable[Any]) -> dict[tuple[int, int], tuple[float, float]]:
    """(batch, row) -> (risk of its open flags, risk of all its flags)."""
    risk: dict[tuple[int, int], tuple[float, float]] = {}
    for r in recs:
        w = _weight(r)
        o, a = risk.get((r.batch_id, r.row_id), (0.0, 0.0))
        risk[(r.batch_id, r.row_id)] = (o + (w if r.status == "open" else 0.0), a + w)
    return risk


def sort_flags(recs: list[Any], batch_order: dict[int, int] | None = None) -> list[Any]:
    """Flag records in review order (see the module docstring)."""
    risk = row_risks(recs)
    border = batch_order or {}

    def key(r: Any):
        o, a = risk[(r.batch_id, r.row_id)]
        return (border.get(r.batch_id, 1 << 30), r.batch_id, -o, -a, r.row_id, -_weight(r), r.id)

    return sorted(recs, key=key)


def ordered_flags(project: Project, batch: int | None = None, open_only: bool = False,
                  kind: str | None = None) -> list[dict[str, Any]]:
    """Flags as JSON-ready dicts in review order, with `source_row` and `row_risk`."""
    recs = F.list_flags(project, batch, "open" if open_only else None)
    if kind:
        recs = [r for r in recs if r.kind == kind]
    with project.read() as conn:
        starts = {r.id: r.source_id for r in conn.execute(select(db.batches.c.id, db.batches.c.source_id))}
    offsets: dict[int, int] = {}
    for sid in set(starts.values()):
        try:
            offsets[sid] = get_source(project, sid).row_offset
        except HitlError:
            offsets[sid] = 0
    border = {b.id: i for i, b in enumerate(list_batches(project))}
    risk = row_risks(recs)
    out = []
    for r in sort_flags(recs, border):
        d = r.to_json()
        d["source_row"] = r.row_id - offsets.get(starts.get(r.batch_id), 0)
        d["row_risk"] = round(risk[(r.batch_id, r.row_id)][0], 4)
        out.append({k: d[k] for k in ("id", "batch", "row", "source_row", "column", "kind", "severity", "score",
                                      "message", "suggestion", "status", "row_risk", "resolved_by", "resolved_at",
                                      "resolution")})
    return out
