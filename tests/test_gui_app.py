"""Start-up: --demo creates (once) and opens the demo; --self-test passes in a clean environment; --version."""
from __future__ import annotations

import os
import subprocess
import sys

from PySide6.QtWidgets import QApplication

from hitl_desktop.core import db
from hitl_desktop.core.project import Project
from hitl_desktop.gui import app as gui_app
from hitl_desktop.gui.main_window import MainWindow


def _run_main(qtbot, monkeypatch, argv):
    """Run app.main() in-process; instead of the event loop, wait for the first batch and close the window."""
    seen: dict = {}

    def fake_exec(self=None):
        wins = [w for w in QApplication.topLevelWidgets() if isinstance(w, MainWindow) and w.isVisible()]
        win = wins[-1]
        qtbot.addWidget(win)
        qtbot.waitUntil(lambda: win.batch_id is not None, timeout=20000)
        qtbot.waitUntil(lambda: not win.tasks.running(include_hidden=True), timeout=60000)
        seen["win"] = win
        seen["batch"] = win.batch_id
        seen["path"] = win.project.path
        seen["flags"] = sum(1 for f in win.flags if f.status == "open")
        win.close()
        return 0

    monkeypatch.setattr(QApplication, "exec", fake_exec)
    rc = gui_app.main(argv)
    return rc, seen


def test_demo_creates_the_project_once_in_the_user_data_folder_and_opens_it(qtbot, monkeypatch, tmp_path):
    rc, seen = _run_main(qtbot, monkeypatch, ["--demo", "--user", "demo"])
    assert rc == 0
    demo = gui_app.demo_dir()
    assert str(demo).startswith(str(tmp_path)), "tests keep the user data folder in tmp"
    assert (demo / db.DB_FILE).is_file() and seen["path"] == demo
    with Project.open(demo) as p, p.read() as conn:
        n_sources = conn.execute(db.sources.select()).all()
        assert len(n_sources) == 1
        flags = conn.execute(db.flags.select()).all()
    assert flags, "the demo opens with its checks already run"
    rc, seen2 = _run_main(qtbot, monkeypatch, ["--demo", "--user", "demo"])  # second time: opens, no re-import
    assert rc == 0 and seen2["path"] == demo
    with Project.open(demo) as p, p.read() as conn:
        assert len(conn.execute(db.sources.select()).all()) == 1


def test_project_and_batch_arguments_open_that_batch(qtbot, monkeypatch, tmp_path):
    from gui_helpers import make_review_project

    path, ids = make_review_project(tmp_path)
    rc, seen = _run_main(qtbot, monkeypatch, [path, "--batch", str(ids["b3"]), "--user", "ann"])
    assert rc == 0 and seen["batch"] == ids["b3"]


def _clean_env(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "HITL_"))}
    env.update(QT_QPA_PLATFORM="offscreen", HOME=str(tmp_path / "home"), XDG_DATA_HOME=str(tmp_path / "data"),
               XDG_CONFIG_HOME=str(tmp_path / "config"), XDG_CACHE_HOME=str(tmp_path / "cache"),
               XDG_RUNTIME_DIR=str(tmp_path / "run"))
    for d in ("home", "data", "config", "cache", "run"):
        (tmp_path / d).mkdir(mode=0o700, exist_ok=True)
    return env


def test_self_test_exits_zero_in_a_clean_environment(tmp_path):
    env = _clean_env(tmp_path)
    r = subprocess.run([sys.executable, "-m", "hitl_desktop", "--self-test"], env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "self-test: OK" in r.stdout and "checks ran" in r.stdout
    assert not any((tmp_path / "data").iterdir()), "the self-test leaves the user data folder alone"
    assert not any((tmp_path / "config").iterdir()), "... and the user's settings"


def test_version(tmp_path):
    r = subprocess.run([sys.executable, "-m", "hitl_desktop", "--version"], env=_clean_env(tmp_path),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.startswith("hitl-desktop ")
