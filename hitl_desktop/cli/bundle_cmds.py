"""Offline review: `hitl bundle export|import|resolve|info` (see docs/offline.md; the rules live in core/bundle.py)."""
from __future__ import annotations

import argparse

from ..core.errors import HitlError
from ._lazy import lazy
from .choices import BUNDLE_TAKES
from .context import actor, login, open_project, require
from .main import _Parser, command, emit

BD = lazy("hitl_desktop.core.bundle")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bundle", help="offline review: export batches to a .hitlreview file, import it back",
                       description="offline review bundles (docs/offline.md)")
    bs = p.add_subparsers(dest="bundle_cmd", metavar="ACTION", parser_class=_Parser, required=True)

    a = bs.add_parser("export", help="write batches to a review bundle and mark them out for review (signed)")
    a.add_argument("dir", metavar="DIR", help="home project folder")
    a.add_argument("out", metavar="OUT.hitlreview", help="the bundle file to write (must not exist)")
    a.add_argument("--batch", type=int, action="append", required=True, metavar="ID", help="a batch (repeat)")
    a.add_argument("--to", metavar="USER", help="the reviewer who works on it away (default: you)")
    a.add_argument("--force", action="store_true", help="export batches already out for review in another bundle")
    a.add_argument("--json", action="store_true", help="machine-readable output")

    a = bs.add_parser("import", help="merge a reviewed bundle back (conflicts are listed, never overwritten)")
    a.add_argument("dir", metavar="DIR", help="home project folder")
    a.add_argument("file", metavar="FILE", help="the .hitlreview file")
    a.add_argument("--dry-run", action="store_true", help="check the bundle and list what would merge and the "
                                                          "conflicts; change nothing")
    a.add_argument("--take", choices=BUNDLE_TAKES, metavar="home|away",
                   help="resolve every open conflict this way (else resolve them one by one)")
    a.add_argument("--resolve", action="append", default=[], metavar="CONFLICT=home|away",
                   help="resolve one conflict (repeatable), e.g. --resolve cell:3:1207:species=away")
    a.add_argument("--json", action="store_true", help="machine-readable output")

    a = bs.add_parser("resolve", help="resolve one conflict of a bundle: keep home or take away")
    a.add_argument("dir", metavar="DIR", help="home project folder")
    a.add_argument("file", metavar="FILE", help="the .hitlreview file")
    a.add_argument("conflict", metavar="CONFLICT", help="conflict id as listed by `hitl bundle import --dry-run`")
    a.add_argument("take", choices=BUNDLE_TAKES, metavar="home|away")
    a.add_argument("--json", action="store_true", help="machine-readable output")

    a = bs.add_parser("info", help="show what a bundle holds (no checks)")
    a.add_argument("file", metavar="FILE", help="the .hitlreview file")
    a.add_argument("--json", action="store_true", help="machine-readable output")


def _conflicts_text(conflicts: list[BD.Conflict]) -> str:
    return "\n".join(f"  {c.id}\n      {c.describe()}" for c in conflicts)


def _export(args: argparse.Namespace) -> int:
    with open_project(args) as project:
        from ..core import identity

        user = actor(args)
        identity.authorize(project, user, "export")
        session = login(project, args, "signing the bundle")
        r = BD.export(project, args.batch, args.to, args.out, user, session=session, force=args.force)
    emit(args, r.to_json(), f"exported batches {', '.join(map(str, r.batches))} to {r.path} for {r.to} "
                            f"({r.role}); they are out for review (bundle {r.bundle_id[:8]})")
    return 0


def _resolutions(args: argparse.Namespace, plan: BD.ImportPlan) -> dict[str, str]:
    res: dict[str, str] = {}
    if args.take:
        res.update({c.id: args.take for c in plan.conflicts})
    for item in args.resolve:
        cid, sep, take = item.rpartition("=")
        if not sep or not cid:
            raise HitlError(f"--resolve takes CONFLICT=home|away, got {item!r}")
        res[cid] = take
    return res


def _import(args: argparse.Namespace, resolutions: dict[str, str] | None = None) -> int:
    with open_project(args) as project:
        plan = BD.plan_import(project, args.file)
        if getattr(args, "dry_run", False):
            def text() -> str:
                if plan.nothing_new:
                    return f"nothing new in bundle {plan.bundle_id[:8]}: everything in it is already here"
                head = (f"bundle {plan.bundle_id[:8]} from {plan.exported_by} for {plan.to}: would merge "
                        f"{plan.edits} edit(s), {plan.decisions} decision(s), {plan.flags} flag change(s)")
                notes = "".join(f"\nnote: {n}" for n in plan.notes)
                if not plan.conflicts:
                    return head + "; no conflicts" + notes
                return (head + f"; {len(plan.conflicts)} conflict(s) to resolve (`hitl bundle resolve DIR FILE "
                        f"CONFLICT home|away`):\n" + _conflicts_text(plan.conflicts) + notes)

            emit(args, plan.to_json(), text)
            return 0
        if resolutions is None:
            resolutions = _resolutions(args, plan)
        user = require(project, args, "edit")
        r = BD.apply_import(project, args.file, resolutions, user=user)

    def text() -> str:
        if r.nothing_new and not r.pending:
            return f"nothing new in bundle {r.bundle_id[:8]}: everything in it is already here; nothing was changed"
        lines = [f"merged {r.edits} edit(s), {r.decisions} decision(s), {r.flags} flag change(s) from bundle "
                 f"{r.bundle_id[:8]}" + (f"; resolved {len(r.resolved)} conflict(s)" if r.resolved else "")]
        lines += [f"warning: {w}" for w in r.warnings] + [f"note: {n}" for n in r.notes]
        if r.pending:
            lines.append(f"{len(r.pending)} conflict(s) left, not merged: resolve each with `hitl bundle resolve "
                         f"DIR FILE CONFLICT home|away`")
            lines.append(_conflicts_text(r.pending))
        return "\n".join(lines)

    emit(args, r.to_json(), text)
    return 1 if r.pending else 0


@command("bundle")
def cmd_bundle(args: argparse.Namespace) -> int:
    if args.bundle_cmd == "export":
        return _export(args)
    if args.bundle_cmd == "import":
        return _import(args)
    if args.bundle_cmd == "resolve":
        return _import(args, {args.conflict: args.take})
    info = BD.bundle_info(args.file)
    emit(args, info, f"bundle {info['bundle']} of project {info['project_name']!r}: batches "
                     f"{', '.join(map(str, info['batches']))} for {info['to']} ({info['role']}), exported by "
                     f"{info['exported_by']} at {info['exported_at'][:19]}")
    return 0

