"""Shared CLI plumbing: opening the project and resolving the acting user."""
from __future__ import annotations

import argparse

from ..core.project import Project
from ..core.util import os_user


def actor(args: argparse.Namespace) -> str:
    return getattr(args, "as_user", None) or os_user()


def open_project(args: argparse.Namespace) -> Project:
    return Project.open(args.dir)


def init_project(args: argparse.Namespace) -> Project:
    """Create a project with the acting user as admin. (Identity adds the password step.)"""
    return Project.init(args.dir, user=actor(args), full_name=getattr(args, "full_name", None),
                        name=getattr(args, "name", None))


def require(project: Project, args: argparse.Namespace, permission: str, batch: int | None = None) -> str:
    """Return the acting user allowed to do `permission` (identity adds roles and refusals)."""
    return actor(args)


def signer_for(project: Project, args: argparse.Namespace, action: str):
    """Return (user, signer) for a decision; identity supplies password-checked signatures."""
    return actor(args), None
