"""The window's preferences (QSettings): user name, recent projects, geometry, splitter state.

Tests and the self-test point the settings at a private INI file by setting ``HITL_SETTINGS_FILE`` (or calling
:func:`use_settings_file`), so they never read or write the real user's preferences.
"""
from __future__ import annotations

import os
from pathlib import Path

from PySide6.QtCore import QByteArray, QSettings

ORG = "hitl-desktop"
APP = "hitl-desktop"
MAX_RECENT = 8

_override: str | None = None


def use_settings_file(path: str | os.PathLike | None) -> None:
    """Store preferences in this INI file (None: back to the platform's normal place)."""
    global _override
    _override = None if path is None else str(path)


def settings() -> QSettings:
    path = _override or os.environ.get("HITL_SETTINGS_FILE")
    if path:
        return QSettings(path, QSettings.Format.IniFormat)
    return QSettings(ORG, APP)


class Prefs:
    """Typed accessors over :func:`settings`."""

    def __init__(self) -> None:
        self.s = settings()

    # user
    def user(self) -> str | None:
        v = self.s.value("user/name")
        return str(v) if v else None

    def set_user(self, name: str) -> None:
        self.s.setValue("user/name", name)

    # recent projects
    def recent(self) -> list[str]:
        v = self.s.value("projects/recent") or []
        if isinstance(v, str):
            v = [v]
        return [str(p) for p in v if p]

    def add_recent(self, path: str | os.PathLike) -> None:
        p = str(Path(path).expanduser().absolute())
        items = [p] + [r for r in self.recent() if r != p]
        self.s.setValue("projects/recent", items[:MAX_RECENT])

    def remove_recent(self, path: str) -> None:
        self.s.setValue("projects/recent", [r for r in self.recent() if r != path])

    # window state
    def bytes(self, key: str) -> QByteArray | None:
        v = self.s.value(key)
        return v if isinstance(v, QByteArray) and not v.isEmpty() else None

    def set_bytes(self, key: str, value: QByteArray) -> None:
        self.s.setValue(key, value)

    def sync(self) -> None:
        self.s.sync()
