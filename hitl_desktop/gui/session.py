"""`WindowSession`: what the window's parts share: the open project, the acting user, and a `changed` signal.

Undo commands and the bundle actions work on a session (plus a few callbacks) instead of the main window; they
announce what an operation changed by emitting `changed` with a `core.operations.Changes`, and the window, which
owns the session, redraws what that names.
"""
from __future__ import annotations

from typing import Any

from PySide6.QtCore import QObject, Signal

from ..core.operations import Changes
from ..core.project import Project


class WindowSession(QObject):
    #: carries a `hitl_desktop.core.operations.Changes`
    changed = Signal(object)

    def __init__(self, parent: QObject | None = None, *, project: Project | None = None, user: str = "") -> None:
        super().__init__(parent)
        self.project: Project | None = project
        self.user: str = user

    def announce(self, changes: Changes) -> None:
        """Emit `changed` unless `changes` is empty."""
        if not changes.empty:
            self.changed.emit(changes)

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        path: Any = self.project.path if self.project is not None else None
        return f"WindowSession(project={path!s}, user={self.user!r})"
