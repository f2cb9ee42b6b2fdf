"""Screenshot of the main window on the demo project (the one in README).

    python -m hitl_desktop.tools.screenshot docs/main-window.png [--tab Review|Charts|Pipeline|Models|Audit]
                                                                 [--size 1440x900] [--project DIR]

Runs offscreen unless a display is set. Without --project it builds the demo project in a temporary folder,
runs the checks on it, opens the riskiest batch and walks to its first open flag, so the picture shows flagged
cells, a suggestion in the side panel and the batch queue ordered by risk.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m hitl_desktop.tools.screenshot")
    ap.add_argument("out", help="PNG file to write")
    ap.add_argument("--tab", default="Review")
    ap.add_argument("--size", default="1440x900")
    ap.add_argument("--project", help="use this project instead of a fresh demo")
    ap.add_argument("--dialog", choices=["shortcuts", "import", "sign"], help="also grab this dialog next to OUT")
    args = ap.parse_args(argv)
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    tmp = Path(tempfile.mkdtemp(prefix="hitl-shot-"))
    os.environ["HITL_SETTINGS_FILE"] = str(tmp / "settings.ini")
    try:
        from PySide6.QtCore import QEventLoop

        from hitl_desktop.gui.app import ensure_demo, make_app
        from hitl_desktop.gui.main_window import MainWindow

        app = make_app([sys.argv[0]])
        user = "demo"
        if args.project:
            path = Path(args.project)
            user = None
        else:
            path, _ = ensure_demo(tmp / "demo", user)  # with its checks run

        def wait(pred, timeout=60.0):
            end = time.monotonic() + timeout
            while time.monotonic() < end and not pred():
                app.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 50)
                time.sleep(0.01)
            for _ in range(20):
                app.processEvents()
            return pred()

        w, h = (int(x) for x in args.size.split("x"))
        win = MainWindow(None, user=user, ask_user=False)
        win.resize(w, h)
        win.splitter.setSizes([int(w * 0.29), int(w * 0.49), int(w * 0.22)])
        win.show()
        loaded: list[int] = []
        win.batchLoaded.connect(loaded.append)
        win.open_project(path)
        if not wait(lambda: bool(loaded)):
            print("screenshot: the batch did not load", file=sys.stderr)
            return 1
        win.view.setCurrentIndex(win.model.index(0, 0))
        win.goto_flag(+1)
        for name in ("Review", "Charts", "Pipeline", "Models", "Audit"):
            if name.lower() == args.tab.lower():
                for i in range(win.tabs.count()):
                    if win.tabs.tabText(i) == name:
                        win.tabs.setCurrentIndex(i)
        wait(lambda: not win.tasks.running(include_hidden=True), 60)
        time.sleep(0.2)
        wait(lambda: not win.tasks.running(include_hidden=True), 30)
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        if not win.grab().save(str(out)):
            print(f"screenshot: could not write {out}", file=sys.stderr)
            return 1
        print(f"wrote {out} ({win.width()}x{win.height()})")
        if args.dialog:
            if args.dialog == "shortcuts":
                win.show_shortcuts()
                dlg = win.shortcuts_dialog
            elif args.dialog == "import":
                from hitl_desktop.core.demo import demo_data_path

                dlg = win.import_dialog(str(demo_data_path()))
                wait(lambda: dlg.ok.isEnabled(), 30)
            else:
                win.user = user or win.user
                win.decide("reject")
                dlg = win.signature_dialog
            wait(lambda: dlg.isVisible(), 5)
            dout = out.with_name(out.stem + f"-{args.dialog}.png")
            dlg.grab().save(str(dout))
            print(f"wrote {dout}")
            dlg.reject()
        win.close()
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
