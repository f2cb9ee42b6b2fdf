"""File > Export for Offline Review / Import Reviewed Bundle and the conflict dialog (issue 8), offscreen."""
from __future__ import annotations

import pytest
from PySide6.QtWidgets import QDialogButtonBox

from hitl_desktop.core import integrity
from hitl_desktop.core import batches as B
from hitl_desktop.core.project import Project
from hitl_desktop.gui import dialogs
from hitl_desktop.gui.main_window import MainWindow

from gui_helpers import ANN_PW, make_review_project


@pytest.fixture(autouse=True)
def fast_kdf(monkeypatch):
    monkeypatch.setenv("HITL_SCRYPT_N", "1024")


@pytest.fixture
def errors():
    seen: list[tuple[str, str]] = []
    dialogs.set_error_sink(lambda title, msg: seen.append((title, msg)))
    yield seen
    dialogs.set_error_sink(None)


def open_window(qtbot, path, user="ann") -> MainWindow:
    win = MainWindow(None, user=user, ask_user=False)
    qtbot.addWidget(win)
    win.show()
    qtbot.waitExposed(win)
    with qtbot.waitSignal(win.batchLoaded, timeout=10000):
        assert win.open_project(path)
    return win


def test_file_menu_has_the_bundle_actions(qtbot, tmp_path):
    path, _ = make_review_project(tmp_path)
    win = open_window(qtbot, path)
    file_menu = win.menuBar().actions()[0].menu()
    texts = [a.text() for a in file_menu.actions()]
    assert "Export for &Offline Review…" in texts and "Import Reviewed &Bundle…" in texts


def test_export_then_import_with_conflict_dialog(qtbot, tmp_path, errors):
    path, ids = make_review_project(tmp_path)
    b1 = ids["b1"]
    win = open_window(qtbot, path)
    out = tmp_path / "away.hitlreview"

    dlg = win.bundle_actions.export_for_review(path=str(out))
    assert dlg is not None and dlg.batch_ids() == [win.batch_id]  # the open batch is preselected
    ok = dlg.buttons.button(QDialogButtonBox.StandardButton.Ok)
    ok.click()
    qtbot.waitUntil(lambda: dlg.error.isVisible(), timeout=5000)  # no password yet: asks, exports nothing
    assert not out.exists()
    dlg.password.setText(ANN_PW)
    ok.click()
    qtbot.waitUntil(lambda: win.bundle_actions.last_export is not None, timeout=10000)
    assert out.exists() and win.bundle_actions.last_export.batches == [b1]

    # away (another computer): ann edits row 0; at home meanwhile row 0 is edited too -> a conflict
    with Project.open(out) as bp:
        first = B.load_batch(bp, b1).index[0]
        B.set_cell(bp, b1, int(first), "island", "AwayIsland", "ann")
        B.set_cell(bp, b1, int(first) + 2, "island", "OnlyAway", "ann")
    with Project.open(path) as hp:
        B.set_cell(hp, b1, int(first), "island", "HomeIsland", "ann")

    win.bundle_actions.import_reviewed_bundle(str(out))
    cd = win.bundle_actions.conflict_dialog
    assert cd is not None and cd.table.rowCount() == 1
    assert "HomeIsland" in cd.table.item(0, 1).text() and "AwayIsland" in cd.table.item(0, 2).text()
    assert cd.resolutions() == {}  # nothing chosen = decide later
    cd.set_choice(f"cell:{b1}:{first}:island", "away")
    cd.buttons.button(QDialogButtonBox.StandardButton.Ok).click()
    qtbot.waitUntil(lambda: win.bundle_actions.last_import is not None, timeout=10000)
    res = win.bundle_actions.last_import
    assert res.resolved == {f"cell:{b1}:{first}:island": "away"} and res.edits == 2 and not res.pending
    assert not errors
    with Project.open(path) as hp:
        df = B.load_batch(hp, b1)
        assert df.loc[first, "island"] == "AwayIsland" and df.loc[first + 2, "island"] == "OnlyAway"
        assert integrity.verify_project(hp).ok

    # the same bundle again: nothing new, nothing changed
    win.bundle_actions.last_import = None
    win.bundle_actions.import_reviewed_bundle(str(out))
    assert win.bundle_actions.conflict_dialog is None
    qtbot.waitUntil(lambda: win.bundle_actions.last_import is not None, timeout=10000)
    assert win.bundle_actions.last_import.nothing_new
    assert "Nothing new" in win.bundle_actions.last_message


def test_import_of_a_foreign_bundle_shows_one_line_reason(qtbot, tmp_path, errors):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    path, _ = make_review_project(tmp_path / "a")
    other, ids = make_review_project(tmp_path / "b")
    from hitl_desktop.core import bundle as BD

    with Project.open(other) as op:
        BD.export(op, [ids["b1"]], "ann", tmp_path / "foreign.hitlreview", "ann", password=ANN_PW)
    win = open_window(qtbot, path)
    win.bundle_actions.import_reviewed_bundle(str(tmp_path / "foreign.hitlreview"))
    assert errors and "another project" in errors[-1][1] and "\n" not in errors[-1][1]
    assert win.bundle_actions.conflict_dialog is None


def test_conflict_dialog_keep_all_home(qtbot, tmp_path):
    from hitl_desktop.core.bundle import Conflict, ImportPlan
    from hitl_desktop.gui.bundle_dialogs import ConflictDialog

    plan = ImportPlan("b", "p", "ann", "t", "bob", [1], 0, 0, 0, conflicts=[
        Conflict("cell:1:0:x", "cell", 1, "h", "a", "o", row=0, column="x", home_detail="ann", away_detail="bob"),
        Conflict("batch:2", "batch", 2, "approved", "in_review", "in_review", home_detail="approved by ann",
                 away_detail="3 edit(s)")])
    dlg = ConflictDialog(None, plan)
    qtbot.addWidget(dlg)
    dlg.all_home.click()
    assert dlg.resolutions() == {"cell:1:0:x": "home", "batch:2": "home"}
    dlg.all_away.click()
    assert set(dlg.resolutions().values()) == {"away"}
    assert dlg.table.item(1, 1).text() == "approved by ann"
    assert dlg.table.horizontalHeaderItem(1).text().startswith("Home")


def test_window_opens_a_bundle_as_a_project(qtbot, tmp_path):
    from hitl_desktop.core import bundle as BD

    path, ids = make_review_project(tmp_path)
    with Project.open(path) as hp:
        BD.export(hp, [ids["b2"]], "ann", tmp_path / "r.hitlreview", "ann", password=ANN_PW)
    win = open_window(qtbot, str(tmp_path / "r.hitlreview"))  # what `hitl-desktop r.hitlreview` does
    assert win.project.is_bundle and win.batch_id == ids["b2"] and win.model.total_row_count() == 3
