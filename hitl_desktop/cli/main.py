"""The `hitl` command: a thin shell over hitl_desktop.core. Every command is `hitl COMMAND DIR ...`.

Exit codes: 0 success; 1 a check failed (e.g. `audit verify` found tampering); 2 a user error, printed as one line
on stderr. `--json` output is stable and documented in README.md.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Callable, Sequence

from .. import __version__
from ..core.errors import HitlError

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")
        raise SystemExit(2)


def command(name: str):
    def deco(fn: Callable[[argparse.Namespace], int]):
        COMMANDS[name] = fn
        return fn
    return deco


def emit(args: argparse.Namespace, data: Any, text: Callable[[], str] | str) -> None:
    if getattr(args, "json", False):
        sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")
    else:
        out = text() if callable(text) else text
        if out:
            sys.stdout.write(out.rstrip("\n") + "\n")


def table(rows: list[list[Any]], headers: list[str], max_width: int = 24) -> str:
    def cell(v: Any) -> str:
        s = "" if v is None else str(v)
        s = s.replace("\n", " ")
        return s if len(s) <= max_width else s[: max_width - 1] + "…"

    body = [[cell(v) for v in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in body]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in body]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    from . import commands  # noqa: F401  (registers the sub-commands)

    p = _Parser(prog="hitl", description="hitl-desktop: review ML training data in batches, from the command line.")
    p.add_argument("--version", action="version", version=f"hitl-desktop {__version__}")
    p.add_argument("--as", dest="as_user", metavar="NAME", help="act as this project user (default: your OS login)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for register in commands.REGISTRARS:
        register(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    if list(sys.argv[1:] if argv is None else argv) == ["--version"]:  # the common probe: skip building the parser
        sys.stdout.write(f"hitl-desktop {__version__}\n")
        raise SystemExit(0)  # what argparse's version action does
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    fn = COMMANDS[args.command]
    try:
        return int(fn(args) or 0)
    except HitlError as exc:
        sys.stderr.write(f"hitl: error: {exc}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("hitl: interrupted\n")
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # a bug, not bad input: one line, traceback on request
        if os.environ.get("HITL_DEBUG"):
            raise
        first = str(exc).splitlines()[0] if str(exc) else ""
        sys.stderr.write(f"hitl: internal error: {type(exc).__name__}: {first} (set HITL_DEBUG=1 for details)\n")
        return 1


if __name__ == "__main__":  # pragma: no cover
    # `python -m hitl_desktop.cli.main`: run the imported module's main, whose COMMANDS the command modules fill
    # (this file also runs as __main__, a second module with its own, empty COMMANDS).
    from hitl_desktop.cli.main import main as _main

    raise SystemExit(_main())
