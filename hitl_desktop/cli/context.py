"""Shared CLI plumbing: opening the project, the acting user, passwords, permissions and signatures.

The acting user is `--as NAME`, else the OS login. Passwords come from `HITL_PASSWORD` (scripts, tests) or an
interactive prompt; a new user's initial password from `HITL_NEW_PASSWORD` or a prompt. The rules themselves live
in `hitl_desktop.core.identity`; this module only gathers the inputs.
"""
from __future__ import annotations

import argparse
import getpass
import os
import sys

from ..core.errors import HitlError
from ..core.util import os_user
from ._lazy import lazy

identity = lazy("hitl_desktop.core.identity")
_batches = lazy("hitl_desktop.core.batches")
_project = lazy("hitl_desktop.core.project")

PASSWORD_ENV = "HITL_PASSWORD"
NEW_PASSWORD_ENV = "HITL_NEW_PASSWORD"


def actor(args: argparse.Namespace) -> str:
    return getattr(args, "as_user", None) or os_user()


def open_project(args: argparse.Namespace) -> _project.Project:
    return _project.Project.open(args.dir)


def _prompt(prompt: str, env: str, confirm: bool = False) -> str:
    if os.environ.get(env) is not None:
        return os.environ[env]
    if not sys.stdin.isatty():
        raise HitlError(f"a password is needed and there is no terminal to ask for it: set {env}")
    try:
        pw = getpass.getpass(prompt)
        if confirm and getpass.getpass("again: ") != pw:
            raise HitlError("the two passwords differ; nothing was changed")
    except EOFError:
        raise HitlError(f"no password given: set {env} or type it at the prompt") from None
    return pw


def password(user: str, purpose: str = "") -> str:
    """The acting user's password: HITL_PASSWORD, else a prompt."""
    return _prompt(f"password for {user}{' (' + purpose + ')' if purpose else ''}: ", PASSWORD_ENV)


def new_password(prompt: str, env: str = NEW_PASSWORD_ENV) -> str:
    return _prompt(prompt, env, confirm=True)


def init_project(args: argparse.Namespace) -> _project.Project:
    """Create a project with the acting user as admin; their password comes from HITL_PASSWORD or a prompt."""
    user = actor(args)
    pw = new_password(f"choose a password for {user} (admin of the new project): ", PASSWORD_ENV)
    identity.check_password_quality(pw)
    return _project.Project.init(args.dir, user=user, full_name=getattr(args, "full_name", None),
                        name=getattr(args, "name", None), password=pw)


def login(project: _project.Project, args: argparse.Namespace, purpose: str = "") -> identity.Session:
    user = actor(args)
    return identity.authenticate(project, user, password(user, purpose))


def require(project: _project.Project, args: argparse.Namespace, permission: str, batch: int | None = None) -> str:
    """Return the acting user once they hold `permission` (role checked first, then their password).

    Refusals name the role needed and are recorded in the audit trail by the core.
    """
    user = actor(args)
    identity.authorize(project, user, permission, batch_id=batch)
    identity.authenticate(project, user, password(user))
    return user


def signer_for(project: _project.Project, args: argparse.Namespace, action: str):
    """Return (user, signer) for a decision. Approve, reject and reopen ask for the password at that moment."""
    user = actor(args)
    batch = getattr(args, "batch", None)
    identity.authorize(project, user, action, batch_id=batch)
    if action not in identity.SIGNED_ACTIONS:
        identity.authenticate(project, user, password(user))
        return user, None
    meaning = _batches.MEANINGS.get(action, action)
    pw = password(user, f"signing: batch {batch} {meaning}" if batch is not None else f"signing: {meaning}")
    return user, identity.signer(project, user, pw)
