"""Identity commands: users, policy, audit (list and verify)."""
from __future__ import annotations

import argparse
import sys

from ._lazy import lazy
from .choices import ROLES
from .context import actor, login, new_password, open_project, password, require
from .main import _Parser, command, emit, table

audit = lazy("hitl_desktop.core.audit")
identity = lazy("hitl_desktop.core.identity")
integrity = lazy("hitl_desktop.core.integrity")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("users", help="manage the project's users (admin)", description="manage the project's users")
    p.add_argument("dir", metavar="DIR", help="project folder")
    us = p.add_subparsers(dest="users_cmd", metavar="ACTION", parser_class=_Parser, required=True)
    a = us.add_parser("add", help="add a user (password from HITL_NEW_PASSWORD or a prompt)")
    a.add_argument("name", metavar="NAME")
    a.add_argument("--role", required=True, choices=ROLES)
    a.add_argument("--full-name", help="full name shown on their signatures (default: NAME)")
    a.add_argument("--json", action="store_true", help="machine-readable output")
    a = us.add_parser("list", help="list users and their roles")
    a.add_argument("--json", action="store_true", help="machine-readable output")
    a = us.add_parser("disable", help="disable a user (their history stays)")
    a.add_argument("name", metavar="NAME")
    a = us.add_parser("enable", help="re-enable a disabled user")
    a.add_argument("name", metavar="NAME")
    us.add_parser("passwd", help="change your own password (new one from HITL_NEW_PASSWORD or a prompt)")

    p = sub.add_parser("policy", help="show or set project policy (admin)", description="show or set project policy")
    p.add_argument("dir", metavar="DIR", help="project folder")
    p.add_argument("policy", nargs="?", choices=["four-eyes"], metavar="POLICY", help="four-eyes")
    p.add_argument("value", nargs="?", choices=["on", "off"], metavar="on|off")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = sub.add_parser("audit", help="list the audit trail, or `verify` it",
                       description="list the audit trail; `hitl audit DIR verify` checks chain, signatures and "
                                   "records (exit 0 ok, 1 tampering found)")
    p.add_argument("dir", metavar="DIR", help="project folder")
    p.add_argument("what", nargs="?", choices=["list", "verify"], default="list", metavar="verify")
    p.add_argument("--target", metavar="T", help="only entries about T, e.g. batch:3 or user:alice")
    p.add_argument("--last", type=int, metavar="N", help="only the last N entries")
    p.add_argument("--json", action="store_true", help="machine-readable output")


@command("users")
def cmd_users(args: argparse.Namespace) -> int:
    with open_project(args) as project:
        if args.users_cmd == "list":
            users = identity.list_users(project)
            emit(args, [u.to_json() for u in users], lambda: table(
                [[u.name, u.full_name, u.role, "disabled" if u.disabled else "active",
                  "yes" if u.has_password else "no", u.created_at[:19]] for u in users],
                ["name", "full name", "role", "state", "password", "created"]))
            return 0
        if args.users_cmd == "passwd":
            user = actor(args)
            old = password(user, "current password")
            new = new_password(f"new password for {user}: ")
            identity.set_password(project, user, new, old_password=old)
            emit(args, {"user": user}, f"password of {user} changed")
            return 0
        admin = require(project, args, "users")
        if args.users_cmd == "add":
            pw = new_password(f"initial password for {args.name}: ")
            u = identity.add_user(project, admin, args.name, args.role, pw, full_name=args.full_name)
            emit(args, u.to_json(), f"added {u.name} ({u.full_name}) as {u.role}")
        else:
            u = identity.set_disabled(project, admin, args.name, disabled=args.users_cmd == "disable")
            emit(args, u.to_json(), f"{u.name} is now {'disabled' if u.disabled else 'enabled'}")
    return 0


@command("policy")
def cmd_policy(args: argparse.Namespace) -> int:
    with open_project(args) as project:
        if args.value is None:
            with project.read() as conn:
                state = {"four-eyes": "on" if identity.policy_value(conn, "four_eyes") else "off"}
            emit(args, state, "\n".join(f"{k}: {v}" for k, v in state.items()))
            return 0
        admin = require(project, args, "policy")
        identity.set_policy(project, admin, args.policy.replace("-", "_"), args.value == "on")
    emit(args, {args.policy: args.value}, f"policy {args.policy} is now {args.value} (recorded)")
    return 0


@command("audit")
def cmd_audit(args: argparse.Namespace) -> int:
    with open_project(args) as project:
        if args.what == "verify":
            rep = integrity.verify_project(project)
            emit(args, rep.to_json(), rep.summary())
            return 0 if rep.ok else 1
        with project.read() as conn:
            total = audit.count(conn)
            items = audit.entries(conn, target=args.target)
    if args.last:
        items = items[-args.last:]
    if args.json:
        emit(args, [e.to_json() for e in items], "")
        return 0
    out = sys.stdout
    out.write(f"{len(items)} of {total} audit entries\n")
    for e in items:
        out.write(f"{e.id:>7}  {e.ts[:19]}  {e.user:<12} {e.action:<14} {e.target or '':<14} {_brief(e)}\n")
    return 0


def _brief(e: audit.AuditEntry) -> str:
    p = e.payload
    if e.action.startswith("cell."):
        return f"row {p.get('row')} {p.get('column')}: {p.get('old')!r} -> {p.get('new')!r}"
    if e.action.startswith("batch."):
        return f"{p.get('meaning')}" + (" [signed]" if p.get("signature") else "")
    if e.action.startswith("auth."):
        return str(p.get("reason", ""))
    if e.action == "policy.set":
        return f"{p.get('policy')}: {p.get('old')} -> {p.get('new')}"
    if e.action == "user.add":
        return f"{p.get('user')} as {p.get('role')}"
    keys = [k for k in ("user", "path", "rows", "name") if k in p]
    return ", ".join(f"{k}={p[k]}" for k in keys)
