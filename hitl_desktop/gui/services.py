"""The window's single doorway into the core: every call the window makes to the store goes through here.

Nothing here decides anything: each function forwards to one core API and returns its value. Some core parts
(identity, the pipeline engine) may be missing from an older build; the probes below say so, and the window
greys out what needs them with the reason, instead of re-implementing them.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

from ..core import audit, batches, flags
from ..core.errors import HitlError
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
    fn = getattr(audit, "verify_project", None)
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


def checks_runner() -> Callable[..., Any] | None:
    """The core function that runs the checks and stores their flags, or None when this build has none."""
    pl = pipeline()
    if pl is not None:
        for name in ("run_checks", "run_validate"):
            fn = getattr(pl, name, None)
            if fn is not None:
                return fn
    for modname in ("checks.store", "checks.persist", "checks.project"):
        m = _module(modname)
        if m is not None:
            for name in ("run_checks", "check_project", "run_project_checks"):
                fn = getattr(m, name, None)
                if fn is not None:
                    return fn
    return None


def run_checks(project: Project, user: str, report: Callable[[float, str], None],
               cancelled: Callable[[], bool]) -> Any:
    fn = checks_runner()
    if fn is None:
        raise HitlError("this build has no checks stage yet: flags cannot be computed from the window")
    try:
        return fn(project, user=user, progress=report, cancelled=cancelled)
    except TypeError:
        return fn(project, user)


# re-exported for the window's convenience
list_batches = batches.list_batches
load_batch = batches.load_batch
edit_history = batches.edit_history
list_flags = flags.list_flags
