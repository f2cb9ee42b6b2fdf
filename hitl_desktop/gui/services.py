"""The window's single doorway into the core: every call the window makes to the store goes through here.

Nothing here decides anything: each function forwards to one core API and returns its value. Some core parts
(identity, the pipeline engine) may be missing from a build; the probes below say whether each is present, and
the window greys out what needs a missing one with the reason, instead of re-implementing it.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

from ..core import audit, batches, flags, integrity, review
from ..core.errors import HitlError
from ..core.tasks import TaskState
from ..core.project import Project


def _module(name: str):
    try:
        return importlib.import_module(f"hitl_desktop.core.{name}")
    except Exception:  # noqa: BLE001 - an absent or half-installed part is reported as unavailable
        return None


def identity():
    m = _module("identity")
    return m if m is not None and hasattr(m, "signer") else None


def pipeline():
    m = _module("pipeline")
    return m if m is not None and any(hasattr(m, n) for n in ("run", "run_pipeline", "status")) else None


# --- users & signatures -------------------------------------------------------------------------------------


@dataclass
class UserChoice:
    name: str
    full_name: str
    role: str
    has_password: bool
    disabled: bool = False


def project_users(project: Project) -> list[UserChoice]:
    ident = identity()
    if ident is not None and hasattr(ident, "list_users"):
        return [UserChoice(u.name, u.full_name, u.role, u.has_password, u.disabled) for u in ident.list_users(project)]
    from sqlalchemy import select

    from ..core import db

    with project.read() as conn:
        return [UserChoice(r.name, r.full_name, r.role, r.pw_hash is not None, bool(r.disabled))
                for r in conn.execute(select(db.users).order_by(db.users.c.id))]


def signatures_available() -> bool:
    return identity() is not None


def set_password(project: Project, user: str, new_password: str) -> None:
    ident = identity()
    if ident is None:
        raise HitlError("this build has no identity module: passwords cannot be set")
    ident.set_password(project, user, new_password)


def decide(project: Project, batch_id: int, action: str, user: str, password: str | None,
           comment: str | None = None) -> batches.Decision:
    """Approve / reject / reopen, signed with the user's password when identity is available."""
    ident = identity()
    signer = None
    if ident is not None:
        signer = ident.signer(project, user, password or "")
    return batches.decide(project, batch_id, action, user, comment, signer=signer)


def check_permission(project: Project, user: str, permission: str, batch_id: int | None = None) -> str | None:
    """Why `user` may not do `permission` now (None: allowed, or no identity module to ask)."""
    ident = identity()
    if ident is None or not hasattr(ident, "check"):
        return None
    try:
        with project.read() as conn:
            return ident.check(conn, user, permission, batch_id)
    except (ValueError, HitlError):
        return None


# --- audit --------------------------------------------------------------------------------------------------


@dataclass
class VerifyOutcome:
    ok: bool
    message: str


def verify(project: Project) -> VerifyOutcome:
    """Verify the audit chain and, where identity provides it, every signature."""
    fn = getattr(integrity, "verify_project", None)
    if fn is not None:
        r = fn(project)
    else:
        with project.read() as conn:
            r = audit.verify_chain(conn)
    if isinstance(r, tuple):
        return VerifyOutcome(bool(r[0]), str(r[1]))
    ok = getattr(r, "ok", None)
    msg = getattr(r, "summary", None) or getattr(r, "message", None) or str(r)
    if callable(msg):
        msg = msg()
    return VerifyOutcome(bool(ok), str(msg))


def audit_entries(project: Project, limit: int | None = None, newest_first: bool = True) -> list[audit.AuditEntry]:
    with project.read() as conn:
        items = audit.entries(conn)
    if newest_first:
        items.reverse()
    return items[:limit] if limit else items


# --- checks / pipeline -----------------------------------------------------------------------------------------


def pipeline():
    """The pipeline engine module, or None when this build has none."""
    m = _module("pipeline")
    return m if m is not None and hasattr(m, "run_pipeline") else None


def checks_runner() -> Callable[..., Any] | None:
    """What runs the checks and stores their flags (the pipeline's `validate` stage), or None."""
    return run_checks if pipeline() is not None else None


def run_stages(project: Project, user: str, task: TaskState, pipeline_name: str | None = None,
               stage: str | None = None, checks: bool = False) -> Any:
    """Run the pipeline (or one stage and what it needs) with progress for the window; blocking, off the GUI thread.

    The engine's run events become overall progress on `task` (steps done + the current step's fraction); the
    window's Cancel cancels that same `task`, which the engine sees (it stops between work units, within a second).
    """
    pl = pipeline()
    if pl is None:
        raise HitlError("this build has no pipeline engine")
    report = task.report
    steps: list[str] = []

    def observer(ev) -> None:
        nonlocal steps
        if ev.kind == "run_started":
            steps = list(ev.data.get("steps") or [])
            report(0.0, "starting")
            return
        n = max(1, len(steps))
        i = steps.index(ev.step) if ev.step in steps else 0
        if ev.kind == "progress":
            report((i + (ev.fraction or 0.0)) / n, f"{ev.step}: {ev.message}" if ev.message else f"{ev.step}")
        elif ev.kind == "stage_started":
            report(i / n, f"{ev.step}: started")
        elif ev.kind == "reused":
            report((i + 1) / n, f"{ev.step}: stored result reused")
        elif ev.kind == "stage_finished":
            report((i + 1) / n, f"{ev.step}: done")
        elif ev.kind == "stage_failed":
            report((i + 1) / n, f"{ev.step}: failed: {ev.message}")

    if checks:
        result = review.run_checks(project, user, pipeline_name, observer=observer, cancel=task)[-1]
    else:
        result = pl.run_pipeline(project, pipeline_name, stage, user=user, observer=observer, cancel=task)
    if task.cancelled():
        return result
    return result.raise_for_status() if checks else result


def run_checks(project: Project, user: str, task: TaskState | None = None) -> Any:
    """The automatic checks, exactly as `hitl checks`: core.review.run_checks (validate, duplicates, labels)."""
    return run_stages(project, user, task if task is not None else TaskState(), checks=True)


def pipeline_status(project: Project) -> tuple[list[list[str]], list[list[str]]]:
    """(stage rows, recent run rows) for the Pipeline tab."""
    pl = pipeline()
    rows: list[list[str]] = []
    for p in pl.pipeline_status(project):
        if p.get("error"):
            rows.append([p["pipeline"], "", "failed", p["error"], ""])
        for st in p["steps"]:
            why = "; ".join(st.get("reasons") or [])
            if st.get("error"):
                why = (why + "; " if why else "") + st["error"]
            if st.get("batches") and st["state"] == "stale":
                why = (why + "; " if why else "") + f"{st['batches']['stale']} of {st['batches']['total']} batches to (re)compute"
            rows.append([p["pipeline"], st["step"], st["state"], why, str(st.get("last_run") or "")])
    runs = []
    for r in pl.list_runs(project, limit=20):
        detail = ", ".join(x for x in (
            ("computed: " + " ".join(r["computed"])) if r.get("computed") else "",
            ("reused: " + " ".join(r["reused"])) if r.get("reused") else "",
            ("failed: " + " ".join(r["failed"])) if r.get("failed") else "",
            r.get("error") or "") if x)
        secs = f" ({r['seconds']:.1f} s)" if r.get("seconds") is not None else ""
        runs.append([f"#{r['run']} {r['pipeline']}", r["user"], (r["started_at"] or "")[:19].replace("T", " "),
                     r["status"] + secs, detail])
    return rows, runs


# re-exported for the window's convenience
list_batches = batches.list_batches
load_batch = batches.load_batch
edit_history = batches.edit_history
list_flags = flags.list_flags
