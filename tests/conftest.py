"""Shared test setup: Qt tests run headless and never touch the real user's settings or data folder."""
import os

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


@pytest.fixture(autouse=True)
def _private_settings(tmp_path, monkeypatch):
    """Window preferences (QSettings) go to a per-test INI file; the user data folder to tmp."""
    monkeypatch.setenv("HITL_SETTINGS_FILE", str(tmp_path / "hitl-settings.ini"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    yield
