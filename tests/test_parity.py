"""The window and the CLI are shells over the same operations: one review scenario, done once with `hitl` commands
and once in the window, leaves the same rows in the project (times, hashes and signatures aside)."""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys

from PySide6.QtCore import Qt

from gui_helpers import ANN_PW, make_review_project
from hitl_desktop.gui import dialogs
from hitl_desktop.gui.main_window import MainWindow

VOLATILE = {"ts", "resolved_at", "hash", "prev_hash", "signature", "created_at", "updated_at"}


def _rows(path: str) -> dict[str, list[tuple]]:
    """Every table's rows, with the columns that hold times or hashes of times left out."""
    con = sqlite3.connect(os.path.join(path, "hitl.db"))
    out = {}
    try:
        tables = [r[0] for r in con.execute("select name from sqlite_master where type='table'")]
        for t in sorted(tables):
            if t in ("alembic_version", "runs", "sqlite_sequence"):
                continue
            cols = [r[1] for r in con.execute(f'pragma table_info("{t}")')]
            keep = [c for c in cols if c not in VOLATILE]
            rows = []
            for r in con.execute(f'select {", ".join(chr(34) + c + chr(34) for c in keep)} from "{t}" order by 1'):
                row = dict(zip(keep, r))
                if t == "meta" and str(row.get("key", "")).startswith("checks.profile."):
                    continue  # a memo of a column profile, a pure function of the data, stored by whoever reads it first
                if t == "audit" and row.get("payload"):
                    payload = json.loads(row["payload"])
                    row["payload"] = {k: v for k, v in payload.items() if k not in VOLATILE}
                if t == "flags" and row.get("resolution"):
                    row["resolution"] = json.loads(row["resolution"])
                rows.append(json.dumps(row, sort_keys=True, default=str))
            out[t] = rows
    finally:
        con.close()
    return out


def _hitl(*args: str) -> None:
    res = subprocess.run([sys.executable, "-m", "hitl_desktop.cli.main", "--as", "ann", *args],
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "HITL_PASSWORD": ANN_PW})
    assert res.returncode == 0, res.stderr


def test_cli_and_window_leave_the_same_rows(qtbot, tmp_path):
    path, ids = make_review_project(tmp_path)
    cli_path, win_path = str(tmp_path / "via_cli"), str(tmp_path / "via_window")
    shutil.copytree(path, cli_path)
    shutil.copytree(path, win_path)
    assert _rows(cli_path) == _rows(win_path)
    b1 = ids["b1"]
    with sqlite3.connect(os.path.join(path, "hitl.db")) as con:
        flag = {k: i for i, k in con.execute("select id, kind from flags where batch_id = ?", (b1,))}

    # the CLI: claim by editing, accept a suggestion, dismiss a flag, revert the accepted cell, undo the revert
    _hitl("edit", cli_path, str(b1), "0", "bill", "39.5")
    _hitl("accept", cli_path, str(flag["category"]))
    _hitl("dismiss", cli_path, str(flag["type"]), "--reason", "checked the field sheet")
    _hitl("revert", cli_path, str(b1), "1", "island")
    _hitl("undo", cli_path, str(b1))

    # the window: the same five actions, as a reviewer does them
    errors: list = []
    dialogs.set_error_sink(lambda title, msg: errors.append((title, msg)))
    try:
        win = MainWindow(None, user="ann", ask_user=False)
        qtbot.addWidget(win)
        win.show()
        with qtbot.waitSignal(win.batchLoaded, timeout=10000):
            assert win.open_project(win_path)
        assert win.batch_id == b1
        with qtbot.waitSignal(win.writeApplied, timeout=10000):
            win._on_edit_requested(0, "bill", "39.5")
        win.view.setCurrentIndex(win.model.index_of(1, "island"))
        with qtbot.waitSignal(win.writeApplied, timeout=10000):
            win.accept_suggestion()
        win.view.setCurrentIndex(win.model.index_of(2, "bill"))
        win.dismiss_flag()
        dlg = win.dismiss_dialog
        dlg.reason.setCurrentText("checked the field sheet")
        with qtbot.waitSignal(win.writeApplied, timeout=10000):
            dlg.accept()
        win.view.setCurrentIndex(win.model.index_of(1, "island"))
        with qtbot.waitSignal(win.writeApplied, timeout=10000):
            win.revert_current()
        with qtbot.waitSignal(win.writeApplied, timeout=10000):
            qtbot.keyClick(win.view, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
        win.close()
    finally:
        dialogs.set_error_sink(None)
    assert not errors

    cli_rows, win_rows = _rows(cli_path), _rows(win_path)
    assert cli_rows["edits"] and len(cli_rows["edits"]) == 4
    for table in sorted(set(cli_rows) | set(win_rows)):
        assert cli_rows.get(table) == win_rows.get(table), table
