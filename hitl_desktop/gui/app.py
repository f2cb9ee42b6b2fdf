"""`hitl-desktop`: the review window.

    hitl-desktop [PROJECT] [--batch ID] [--user NAME]
    hitl-desktop --demo          create (once) and open the demo project in the user data folder
    hitl-desktop --self-test     open the demo in a temporary folder offscreen, run the checks, close; exit 0
    hitl-desktop --version
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

from .. import __version__


def demo_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("hitl-desktop", appauthor=False)) / "demo"


def ensure_demo(path: Path, user: str | None, run_checks: bool = True) -> tuple[Path, bool]:
    """Create the demo project at `path` unless it is already there, with its checks run. Returns (path, created)."""
    
    from ..core import db
    from ..core.demo import create_demo_project
    from . import services

    if (path / db.DB_FILE).is_file():
        return path, False
    path.parent.mkdir(parents=True, exist_ok=True)
    project = create_demo_project(path, user)
    try:
        if run_checks and services.checks_runner() is not None:
            services.run_checks(project, user or project.meta("created_by") or "")
    finally:
        project.close()
    return path, True


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hitl-desktop", description="Review ML training data in batches.")
    p.add_argument("project", nargs="?", help="project folder to open")
    p.add_argument("--batch", type=int, metavar="ID", help="open this batch")
    p.add_argument("--user", metavar="NAME", help="act as this project user (default: remembered, or asked)")
    p.add_argument("--demo", action="store_true", help="create (once) and open the demo project")
    p.add_argument("--self-test", action="store_true", help="open the demo offscreen, run the checks, exit 0 if all is well")
    p.add_argument("--version", action="version", version=f"hitl-desktop {__version__}")
    return p


def make_app(argv: Sequence[str]):
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QGuiApplication
    from PySide6.QtWidgets import QApplication

    from .icons import app_icon

    app = QApplication.instance()
    if app is None:
        QGuiApplication.setHighDpiScaleFactorRoundingPolicy(Qt.HighDpiScaleFactorRoundingPolicy.PassThrough)
        app = QApplication(list(argv))
    app.setApplicationName("hitl-desktop")
    app.setOrganizationName("hitl-desktop")
    app.setApplicationVersion(__version__)
    app.setWindowIcon(app_icon())
    return app


def self_test(user: str | None = None, keep: bool = False) -> int:
    """Open the demo in a temporary folder offscreen, run the checks, exercise one edit + undo, close."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    tmp = Path(tempfile.mkdtemp(prefix="hitl-selftest-"))
    os.environ["HITL_SETTINGS_FILE"] = str(tmp / "settings.ini")
    os.environ["MPLCONFIGDIR"] = str(tmp / "matplotlib")  # the charts' font cache must not land in the user's config
    t0 = time.monotonic()
    try:
        app = make_app([sys.argv[0]])
        from PySide6.QtCore import QEventLoop, QTimer

        from . import services
        from .main_window import MainWindow

        path, _ = ensure_demo(tmp / "demo", user, run_checks=False)  # the checks run below, through the window
        win = MainWindow(None, user=user, ask_user=False)
        win.show()

        def wait(pred, timeout=120.0) -> bool:
            end = time.monotonic() + timeout
            while time.monotonic() < end:
                if pred():
                    return True
                app.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 50)
                time.sleep(0.005)
            return pred()

        loaded = []
        win.batchLoaded.connect(loaded.append)
        if not win.open_project(path):
            print("hitl-desktop self-test: FAILED: could not open the demo project", file=sys.stderr)
            return 1
        if not wait(lambda: bool(loaded)):
            print("hitl-desktop self-test: FAILED: the first batch did not load", file=sys.stderr)
            return 1
        checks = "skipped (no checks stage in this build)"
        if services.checks_runner() is not None:
            outcome = []
            win.tasks.taskEnded.connect(lambda t: outcome.append(t) if t.name == "Checks" else None)
            win.run_checks()
            if not wait(lambda: bool(outcome), 300):
                print("hitl-desktop self-test: FAILED: checks did not finish", file=sys.stderr)
                return 1
            if outcome[0].outcome != "finished":
                print(f"hitl-desktop self-test: FAILED: checks: {outcome[0].error}", file=sys.stderr)
                return 1
            checks = "ran"
        rows = win.model.total_row_count()
        if rows <= 0:
            print("hitl-desktop self-test: FAILED: the batch table is empty", file=sys.stderr)
            return 1
        verified = services.verify(win.project)
        if not verified.ok:
            print(f"hitl-desktop self-test: FAILED: audit: {verified.message}", file=sys.stderr)
            return 1
        QTimer.singleShot(0, win.close)
        wait(lambda: win.project is None, 30)
        n_batches = win.queue.model.rowCount()
        print(f"hitl-desktop self-test: OK ({n_batches} batches, first batch {rows} rows, checks {checks}, "
              f"audit: {verified.message}; {time.monotonic() - t0:.1f} s)")
        return 0
    except Exception as exc:  # noqa: BLE001 - the self-test reports, never raises
        import traceback

        traceback.print_exc()
        print(f"hitl-desktop self-test: FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else list(argv))
    if args.self_test:
        return self_test(args.user)
    app = make_app([sys.argv[0]])
    from .dialogs import install_excepthook, show_error
    from .main_window import MainWindow

    install_excepthook()
    project = args.project
    if args.demo:
        from ..core.errors import HitlError
        from .settings import Prefs

        try:
            project, _created = ensure_demo(demo_dir(), args.user or Prefs().user())
        except HitlError as exc:
            show_error(None, "Demo project", str(exc))
            return 2
    win = MainWindow(project, user=args.user, batch=args.batch)
    win.show()
    return app.exec()


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
