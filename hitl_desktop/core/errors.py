"""Errors the core raises for things the user can fix.

Every `HitlError` carries a one-line message meant for a person: what was wrong and what to do.
The CLI prints it on stderr and exits 2; the window shows it in a dialog.
"""
from __future__ import annotations


class HitlError(Exception):
    """A refusal or user error. `str(err)` is a single line."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


class NotAProject(HitlError):
    pass


class ImportRefused(HitlError):
    pass


class TransitionRefused(HitlError):
    pass


class EditRefused(HitlError):
    pass


class PermissionRefused(HitlError):
    pass


class NotFound(HitlError):
    pass
