"""The review window end to end (offscreen): keyboard review, signatures, import refusal, geometry, shortcuts."""
from __future__ import annotations

import time

import pytest
from PySide6.QtCore import QRect, Qt
from PySide6.QtWidgets import QApplication
from sqlalchemy import func, select

from hitl_desktop.core import db
from hitl_desktop.core import flags as core_flags
from hitl_desktop.core.project import Project
from hitl_desktop.gui import dialogs
from hitl_desktop.gui.main_window import MainWindow

from gui_helpers import BOB_PW, make_review_project

CTRL = Qt.KeyboardModifier.ControlModifier
SHIFT = Qt.KeyboardModifier.ShiftModifier


@pytest.fixture
def errors():
    seen: list[tuple[str, str]] = []
    dialogs.set_error_sink(lambda title, msg: seen.append((title, msg)))
    yield seen
    dialogs.set_error_sink(None)


@pytest.fixture
def project(tmp_path):
    return make_review_project(tmp_path)


def open_window(qtbot, path, user="ann") -> MainWindow:
    win = MainWindow(None, user=user, ask_user=False)
    qtbot.addWidget(win)
    win.show()
    qtbot.waitExposed(win)
    win.activateWindow()
    with qtbot.waitSignal(win.batchLoaded, timeout=10000):
        assert win.open_project(path)
    return win


def flag_status(path, flag_id) -> str:
    with Project.open(path) as p, p.read() as conn:
        return core_flags.get_flag(conn, flag_id).status


def key(qtbot, win, k, mod=Qt.KeyboardModifier.NoModifier, wait_write=True):
    if wait_write:
        with qtbot.waitSignal(win.writeApplied, timeout=10000):
            qtbot.keyClick(win.view, k, mod)
    else:
        qtbot.keyClick(win.view, k, mod)


def test_keyboard_review_flow_end_to_end(qtbot, project, errors):
    path, ids = project
    win = open_window(qtbot, path)
    assert win.batch_id == ids["b1"], "the riskiest batch opens first"
    flags = {f.kind: f for f in win.flags}

    # next flag: F8 walks the open flags in review order, riskiest row first: the high type flag (row 2, bill),
    # then the medium category flag (row 1, island)
    win.view.setCurrentIndex(win.model.index(0, 0))
    key(qtbot, win, Qt.Key.Key_F8, wait_write=False)
    assert win.current_cell() == (2, "bill")
    key(qtbot, win, Qt.Key.Key_F8, wait_write=False)
    assert win.current_cell() == (1, "island")
    qtbot.waitUntil(lambda: "near-miss" in win.side.flag_list.item(0).text(), timeout=3000)

    # accept the suggestion: Ctrl+Return
    key(qtbot, win, Qt.Key.Key_Return, CTRL)
    assert win.model.value(1, "island") == "Biscoe"
    assert win.model.is_edited(1, "island")
    assert flag_status(path, flags["category"].id) == "accepted"

    # next flag, dismiss with a reason typed in the dialog
    key(qtbot, win, Qt.Key.Key_F8, wait_write=False)
    assert win.current_cell() == (2, "bill")
    key(qtbot, win, Qt.Key.Key_D, CTRL, wait_write=False)
    dlg = win.dismiss_dialog
    assert dlg is not None and dlg.isVisible()
    dlg.reason.setCurrentText("checked the field sheet")
    with qtbot.waitSignal(win.writeApplied, timeout=10000):
        dlg.accept()
    assert flag_status(path, flags["type"].id) == "dismissed"
    assert win.model.cell_flags(2, "bill") == []

    # undo (dismiss), undo (accept), redo, redo
    key(qtbot, win, Qt.Key.Key_Z, CTRL)
    assert flag_status(path, flags["type"].id) == "open"
    assert win.model.cell_flags(2, "bill")
    key(qtbot, win, Qt.Key.Key_Z, CTRL)
    assert win.model.value(1, "island") == "biscoe" and not win.model.is_edited(1, "island")
    assert flag_status(path, flags["category"].id) == "open"
    key(qtbot, win, Qt.Key.Key_Z, CTRL | SHIFT)
    assert win.model.value(1, "island") == "Biscoe"
    assert flag_status(path, flags["category"].id) == "accepted"
    key(qtbot, win, Qt.Key.Key_Z, CTRL | SHIFT)
    assert flag_status(path, flags["type"].id) == "dismissed"

    # edit a cell by typing: the value is stored through the core and shown as edited
    win.view.setCurrentIndex(win.model.index_of(0, "bill"))
    qtbot.keyClick(win.view, "3")  # typing opens the editor with that key
    editor = QApplication.focusWidget()
    assert editor is not win.view
    qtbot.keyClicks(editor, "9.5")
    with qtbot.waitSignal(win.writeApplied, timeout=10000):
        qtbot.keyClick(win.view.focusWidget(), Qt.Key.Key_Return)
    assert win.model.value(0, "bill") in ("39.5", 39.5)
    assert win.model.is_edited(0, "bill")
    assert not errors

    # approve: ann edited the batch, so four-eyes keeps her from approving (greyed out with the reason)
    qtbot.waitUntil(lambda: "four-eyes" in win.side.permission_note.text(), timeout=3000)
    assert not win.act_approve.isEnabled()

    # bob approves with the signature dialog: a wrong password is refused inside the dialog, then he signs
    win.user = "bob"
    win._show_batch_panel()
    win._update_actions()
    assert win.act_approve.isEnabled()
    key(qtbot, win, Qt.Key.Key_A, CTRL | SHIFT, wait_write=False)
    sig = win.signature_dialog
    assert sig is not None and sig.isVisible()
    sig.password.setText("wrong-password")
    sig.buttons.accepted.emit()
    qtbot.waitUntil(lambda: sig.error.isVisible(), timeout=10000)
    assert "wrong password" in sig.error.text()
    sig.password.setText(BOB_PW)
    with qtbot.waitSignal(win.writeApplied, timeout=10000):
        sig.buttons.accepted.emit()
    qtbot.waitUntil(lambda: win.batch is not None and win.batch.status == "approved", timeout=10000)
    with Project.open(path) as p, p.read() as conn:
        d = conn.execute(select(db.decisions).order_by(db.decisions.c.id.desc())).first()
    assert (d.action, d.full_name, d.signature is not None) == ("approve", "Bob Approver", True)
    qtbot.waitUntil(lambda: "approved for training" in win.side.decision_list.item(0).text(), timeout=10000)
    assert "Bob Approver" in win.side.decision_list.item(0).text() and "signed" in win.side.decision_list.item(0).text()
    assert not win.model.flags(win.model.index(0, 0)) & Qt.ItemFlag.ItemIsEditable, "approved batch is read-only"

    # next batch: Ctrl+PgDown
    with qtbot.waitSignal(win.batchLoaded, timeout=10000):
        qtbot.keyClick(win.view, Qt.Key.Key_PageDown, CTRL)
    assert win.batch_id != ids["b1"]
    assert not errors


def test_undo_survives_switching_batches(qtbot, project, errors):
    path, ids = project
    win = open_window(qtbot, path)
    win.view.setCurrentIndex(win.model.index_of(1, "island"))
    key(qtbot, win, Qt.Key.Key_Return, CTRL)
    with qtbot.waitSignal(win.batchLoaded, timeout=10000):
        win.open_batch(ids["b3"])
    assert win.undo_stack.canUndo()
    with qtbot.waitSignal(win.batchLoaded, timeout=10000):  # the undo brings its batch back into view
        win.undo_stack.undo()
    assert win.batch_id == ids["b1"]
    assert win.model.value(1, "island") == "biscoe"
    assert win.current_cell() == (1, "island")
    assert not errors


def test_import_dialog_with_bad_file_shows_reason_and_changes_nothing(qtbot, project, tmp_path, errors):
    path, _ = project
    win = open_window(qtbot, path)
    bad = tmp_path / "broken.csv"
    bad.write_bytes(b"")
    with Project.open(path) as p, p.read() as conn:
        before = conn.execute(select(func.count()).select_from(db.sources)).scalar_one()
    dlg = win.import_dialog(str(bad))
    qtbot.waitUntil(lambda: dlg.error.isVisible(), timeout=10000)
    assert "empty" in dlg.error.text() and "\n" not in dlg.error.text()
    assert not dlg.ok.isEnabled()
    # even forced, the import is refused with the core's one-line reason, and nothing is added
    with qtbot.waitSignal(win.tasks.taskEnded, timeout=10000):
        win.start_import(str(bad), dlg.options())
    qtbot.waitUntil(lambda: bool(errors), timeout=5000)
    assert errors[-1][0] == "Import refused" and "empty" in errors[-1][1]
    with Project.open(path) as p, p.read() as conn:
        assert conn.execute(select(func.count()).select_from(db.sources)).scalar_one() == before
    dlg.reject()


def test_import_dialog_preview_detects_and_imports(qtbot, project, tmp_path, errors):
    path, _ = project
    win = open_window(qtbot, path)
    f = tmp_path / "more.csv"
    f.write_text("a;b;label\n1;x;u\n2;y;v\n3;n/a;u\n")
    dlg = win.import_dialog(str(f))
    qtbot.waitUntil(lambda: dlg.ok.isEnabled(), timeout=10000)
    assert "semicolon" in dlg.detected.text()
    assert dlg.preview.rowCount() == 3 and dlg.preview.columnCount() == 3
    assert dlg.label_col.currentData() == "label"
    dlg.batch_size.setValue(2)
    n = win.queue.model.rowCount()
    with qtbot.waitSignal(win.queueRefreshed, timeout=10000):
        dlg.accept()
    qtbot.waitUntil(lambda: win.queue.model.rowCount() == n + 2, timeout=10000)
    assert not errors


def test_geometry_and_splitter_are_restored(qtbot, project):
    path, _ = project
    win = MainWindow(None, user="ann", ask_user=False)
    qtbot.addWidget(win)
    win.show()
    win.setGeometry(QRect(40, 50, 1111, 777))
    win.splitter.setSizes([200, 700, 211])
    sizes = win.splitter.sizes()
    win.close()
    win2 = MainWindow(None, user="ann", ask_user=False)
    qtbot.addWidget(win2)
    win2.show()
    # the offscreen platform adds a few pixels of pretend window frame on restore
    assert abs(win2.width() - 1111) <= 8 and abs(win2.height() - 777) <= 8
    assert (win2.width(), win2.height()) != (1420, 860), "not the default size"
    got = win2.splitter.sizes()
    assert (got[0], got[2]) == (sizes[0], sizes[2]) and abs(got[1] - sizes[1]) <= 8


def test_recent_projects_and_user_are_remembered(qtbot, project):
    path, _ = project
    win = open_window(qtbot, path, user=None)
    assert win.user == "ann"  # the project's only... remembered: none yet, two users, no dialog: first one
    win.close()
    from hitl_desktop.gui.settings import Prefs

    prefs = Prefs()
    assert prefs.recent()[0].endswith("proj")
    assert prefs.user() == "ann"


def test_shortcuts_sheet_lists_the_review_keys(qtbot, project):
    path, _ = project
    win = open_window(qtbot, path)
    win.show_shortcuts()
    t = win.shortcuts_dialog.table
    rows = {t.item(r, 1).text(): t.item(r, 0).text() for r in range(t.rowCount())}
    assert rows["Accept Suggestion"].startswith("Ctrl+Return")
    assert rows["Next Open Flag"].startswith("F8")
    for name in ("Dismiss Flag", "Revert Cell", "Undo", "Redo", "Approve Batch", "Reject Batch", "Next Batch", "Edit Cell"):
        assert name in rows, name
    win.shortcuts_dialog.close()


def test_closing_with_a_running_stage_asks_first(qtbot, project):
    path, _ = project
    win = open_window(qtbot, path)
    asked = []

    def slow(ctx):
        while not ctx.cancelled():
            ctx.report(0.5, "working")
            time.sleep(0.01)

    task = win.tasks.submit("Long stage", slow)
    win.confirm = lambda title, text: asked.append(text) or False
    win.close()
    assert asked and "Long stage" in asked[0]
    assert win.isVisible() and not task.done.is_set()
    win.confirm = lambda title, text: True
    win.close()
    assert task.done.wait(5) and task.outcome == "cancelled"
    assert not win.isVisible()


def test_audit_tab_verifies(qtbot, project):
    path, _ = project
    win = open_window(qtbot, path)
    win.tabs.setCurrentWidget(win.audit_tab)
    qtbot.waitUntil(lambda: win.audit_tab.table.rowCount() > 0, timeout=10000)
    win.audit_tab.verify_button.click()
    qtbot.waitUntil(lambda: win.audit_tab.result.text().startswith("✔"), timeout=10000)
    assert "ok" in win.audit_tab.result.text()


def test_charts_tab_draws(qtbot, project):
    path, _ = project
    win = open_window(qtbot, path)
    win.tabs.setCurrentWidget(win.charts)
    qtbot.waitUntil(lambda: win.charts.figure is not None and len(win.charts.figure.axes) == 4, timeout=15000)
    titles = [a.get_title() for a in win.charts.figure.axes]
    assert any("Class balance" in t for t in titles)
