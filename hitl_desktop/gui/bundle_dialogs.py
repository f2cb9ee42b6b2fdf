"""File > Export for Offline Review… / Import Reviewed Bundle… and the conflict dialog (docs/offline.md).

The rules live in `hitl_desktop.core.bundle`; this module only gathers choices and shows results. The actions work
on a `WindowSession` (project and user) and a `run_write` callback (the window runs it on its single writer thread);
the check-and-plan of an import is read-only. What a finished export or import changed goes out as
`session.changed` (a `core.operations.Changes`), and the window redraws from that.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from PySide6.QtCore import QObject, Qt
from PySide6.QtGui import QAction
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMainWindow,
    QListWidget,
    QListWidgetItem,
    QMenu,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..core import bundle as core_bundle
from ..core.batches import list_batches
from ..core.errors import HitlError
from ..core.identity import list_users
from ..core.operations import Changes
from .dialogs import show_error
from .session import WindowSession

#: `run_write(name, fn, on_done, on_error)`: run `fn` on the writer thread, then call back on the GUI thread
RunWrite = Callable[[str, Callable[[], Any], Callable[[Any], None], Callable[[str], None]], None]

FILE_FILTER = "Review bundles (*.hitlreview);;All files (*)"
TAKE_LABELS = (("home", "Keep home"), ("away", "Take away"), (None, "Decide later"))


class ExportBundleDialog(QDialog):
    """Pick batches (queued or in review, not already out), the reviewer, the file; sign with your password."""

    def __init__(self, parent: QWidget | None, batches: list[Any], users: list[Any], me: str,
                 current_batch: int | None, default_path: str) -> None:
        super().__init__(parent)
        self.setWindowTitle("Export for Offline Review")
        lay = QVBoxLayout(self)
        lay.addWidget(QLabel("Batches to take away (they are marked out for review here):"))
        self.batch_list = QListWidget()
        for b in batches:
            if b.status not in ("queued", "in_review"):
                continue
            item = QListWidgetItem(f"batch {b.id}  ·  {b.status}  ·  {b.rows} rows  ·  {b.source}"
                                   + ("  ·  already out for review" if b.out_for_review else ""))
            item.setData(Qt.ItemDataRole.UserRole, b.id)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Checked if b.id == current_batch and not b.out_for_review
                               else Qt.CheckState.Unchecked)
            if b.out_for_review:
                item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsEnabled)
            self.batch_list.addItem(item)
        lay.addWidget(self.batch_list)
        form = QFormLayout()
        self.reviewer = QComboBox()
        for u in users:
            if not u.disabled and u.has_password:
                self.reviewer.addItem(f"{u.full_name} ({u.name}, {u.role})", u.name)
        i = self.reviewer.findData(me)
        if i >= 0:
            self.reviewer.setCurrentIndex(i)
        form.addRow("Reviewer:", self.reviewer)
        row = QHBoxLayout()
        self.path = QLineEdit(default_path)
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        row.addWidget(self.path, 1)
        row.addWidget(browse)
        form.addRow("Bundle file:", row)
        self.password = QLineEdit()
        self.password.setEchoMode(QLineEdit.EchoMode.Password)
        self.password.setPlaceholderText(f"password of {me}: the bundle is signed")
        form.addRow("Your password:", self.password)
        lay.addLayout(form)
        self.error = QLabel()
        self.error.setStyleSheet("color: #b00020")
        self.error.setWordWrap(True)
        self.error.hide()
        lay.addWidget(self.error)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Export")
        self.buttons.rejected.connect(self.reject)
        lay.addWidget(self.buttons)
        self.resize(560, 420)

    def _browse(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export for offline review", self.path.text(), FILE_FILTER)
        if path:
            if not path.endswith(core_bundle.SUFFIX):
                path += core_bundle.SUFFIX
            self.path.setText(path)

    def batch_ids(self) -> list[int]:
        return [self.batch_list.item(i).data(Qt.ItemDataRole.UserRole) for i in range(self.batch_list.count())
                if self.batch_list.item(i).checkState() == Qt.CheckState.Checked]

    def check(self) -> str | None:
        if not self.batch_ids():
            return "Tick at least one batch."
        if self.reviewer.currentData() is None:
            return "No user with a password to review it."
        if not self.path.text().strip():
            return "Choose where to write the bundle."
        if not self.password.text():
            return "Enter your password to sign the bundle."
        return None

    def show_error(self, message: str) -> None:
        self.error.setText(message)
        self.error.show()


class ConflictDialog(QDialog):
    """Home and away side by side, one row per conflict; choose Keep home / Take away / Decide later for each."""

    def __init__(self, parent: QWidget | None, plan: core_bundle.ImportPlan) -> None:
        super().__init__(parent)
        self.plan = plan
        self.setWindowTitle("Import Reviewed Bundle — Conflicts")
        lay = QVBoxLayout(self)
        lay.addWidget(QLabel(
            f"Bundle from {plan.exported_by} for {plan.to}: {plan.edits} edit(s), {plan.decisions} decision(s) and "
            f"{plan.flags} flag change(s) merge as they are.\n{len(plan.conflicts)} change(s) were made both here "
            f"and away: choose for each. Nothing is overwritten without your choice; 'Decide later' keeps it "
            f"pending (import the bundle again to decide)."))
        self.table = QTableWidget(len(plan.conflicts), 5)
        self.table.setHorizontalHeaderLabels(["Where", "Home (here)", "Away (bundle)", "Was", "Take"])
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.choices: dict[str, QComboBox] = {}
        for r, c in enumerate(plan.conflicts):
            where = {"cell": f"batch {c.batch}, row {c.row}, {c.column}", "flag": f"flag {c.flag} (batch {c.batch})",
                     "batch": f"batch {c.batch} (whole batch)"}[c.kind]
            show = lambda v: "(missing)" if v is None else str(v)  # noqa: E731
            home = show(c.home) if c.kind != "batch" else c.home_detail
            away = show(c.away) if c.kind != "batch" else c.away_detail
            cells = [where, f"{home}\n{c.home_detail}" if c.kind != "batch" else home,
                     f"{away}\n{c.away_detail}" if c.kind != "batch" else away, show(c.base)]
            for col, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setToolTip(c.describe())
                self.table.setItem(r, col, item)
            box = QComboBox()
            for take, label in TAKE_LABELS:
                box.addItem(label, take)
            box.setCurrentIndex(len(TAKE_LABELS) - 1)
            self.table.setCellWidget(r, 4, box)
            self.choices[c.id] = box
        hh = self.table.horizontalHeader()
        hh.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        hh.setStretchLastSection(False)
        for col, w in enumerate((200, 180, 180, 90, 120)):
            self.table.setColumnWidth(col, w)
        self.table.resizeRowsToContents()
        lay.addWidget(self.table)
        row = QHBoxLayout()
        self.all_home = QPushButton("Keep All Home")
        self.all_away = QPushButton("Take All Away")
        self.all_home.clicked.connect(lambda: self.set_all("home"))
        self.all_away.clicked.connect(lambda: self.set_all("away"))
        row.addWidget(self.all_home)
        row.addWidget(self.all_away)
        row.addStretch(1)
        lay.addLayout(row)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Import")
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        lay.addWidget(self.buttons)
        self.resize(860, 420)

    def set_choice(self, conflict_id: str, take: str | None) -> None:
        box = self.choices[conflict_id]
        box.setCurrentIndex(box.findData(take))

    def set_all(self, take: str | None) -> None:
        for cid in self.choices:
            self.set_choice(cid, take)

    def resolutions(self) -> dict[str, str]:
        return {cid: box.currentData() for cid, box in self.choices.items() if box.currentData() is not None}


class BundleActions(QObject):
    """The two File menu actions and their flows, for one window's session.

    `window` parents the dialogs and shows status messages; `current_batch()` is the batch shown (pre-ticked in
    the export dialog).
    """

    def __init__(self, session: WindowSession, window: QMainWindow, run_write: RunWrite,
                 current_batch: Callable[[], int | None]) -> None:
        super().__init__(window)
        self.session = session
        self.w = window
        self.run_write = run_write
        self.current_batch = current_batch
        self.act_export = QAction("Export for &Offline Review…", window)
        self.act_export.setStatusTip("Write batches to a .hitlreview file to review on another computer")
        self.act_export.triggered.connect(lambda _c=False: self.export_for_review())
        self.act_import = QAction("Import Reviewed &Bundle…", window)
        self.act_import.setStatusTip("Merge the work done away in a .hitlreview file back into this project")
        self.act_import.triggered.connect(lambda _c=False: self.import_reviewed_bundle())
        self.export_dialog: ExportBundleDialog | None = None
        self.conflict_dialog: ConflictDialog | None = None
        self.last_export: core_bundle.ExportResult | None = None
        self.last_import: core_bundle.ImportResult | None = None
        self.last_message = ""

    def _usable(self, title: str) -> bool:
        p = self.session.project
        if p is None:
            show_error(self.w, title, "Open a project first.")
            return False
        if p.is_bundle:
            show_error(self.w, title, "This is a review bundle: export and import happen in the home project.")
            return False
        return True

    def _status(self, text: str) -> None:
        self.last_message = text
        self.w.statusBar().showMessage(text, 10000)

    # -- export --

    def export_for_review(self, path: str | None = None) -> ExportBundleDialog | None:
        title = "Export for offline review"
        if not self._usable(title):
            return None
        project, user = self.session.project, self.session.user
        default = path or str(Path(project.path).parent / f"{project.path.name}-review{core_bundle.SUFFIX}")
        dlg = ExportBundleDialog(self.w, list_batches(project), list_users(project), user, self.current_batch(),
                                  default)
        self.export_dialog = dlg

        def submit() -> None:
            why = dlg.check()
            if why:
                dlg.show_error(why)
                return
            ids, to, out, pw = dlg.batch_ids(), dlg.reviewer.currentData(), dlg.path.text().strip(), \
                dlg.password.text()
            dlg.buttons.setEnabled(False)

            def done(res: core_bundle.ExportResult) -> None:
                self.last_export = res
                dlg.accept()
                self.export_dialog = None
                self._status(f"Exported batches {', '.join(map(str, res.batches))} to {res.path} for {res.to}")
                self.session.announce(Changes(batch_list=True, result=res))

            def failed(msg: str) -> None:
                dlg.buttons.setEnabled(True)
                dlg.show_error(msg)

            self.run_write("Export for offline review",
                           lambda: core_bundle.export(project, ids, to, out, user, password=pw), done, failed)

        dlg.buttons.accepted.connect(submit)
        dlg.rejected.connect(lambda: setattr(self, "export_dialog", None))
        dlg.open()
        return dlg

    # -- import --

    def import_reviewed_bundle(self, path: str | None = None) -> None:
        title = "Import reviewed bundle"
        if not self._usable(title):
            return
        if path is None:
            path, _ = QFileDialog.getOpenFileName(self.w, title, str(Path(self.session.project.path).parent), FILE_FILTER)
            if not path:
                return
        try:
            plan = core_bundle.plan_import(self.session.project, path)  # read-only checks, well under a second
        except HitlError as exc:
            show_error(self.w, title, str(exc))
            return
        if plan.nothing_new:
            self._apply(path, {})  # may still return batches out for review; changes nothing the second time
            return
        if not plan.conflicts:
            self._apply(path, {})
            return
        dlg = ConflictDialog(self.w, plan)
        self.conflict_dialog = dlg
        dlg.accepted.connect(lambda: (setattr(self, "conflict_dialog", None), self._apply(path, dlg.resolutions())))
        dlg.rejected.connect(lambda: setattr(self, "conflict_dialog", None))
        dlg.open()

    def _apply(self, path: str, resolutions: dict[str, str]) -> None:
        project, user = self.session.project, self.session.user

        def done(res: core_bundle.ImportResult) -> None:
            self.last_import = res
            if res.nothing_new and not res.pending:
                self._status("Nothing new in that bundle: everything in it is already here.")
            else:
                text = (f"Merged {res.edits} edit(s), {res.decisions} decision(s), {res.flags} flag change(s)"
                        + (f"; resolved {len(res.resolved)} conflict(s)" if res.resolved else "")
                        + (f"; {len(res.pending)} conflict(s) left for later" if res.pending else ""))
                self._status(text)
            for warning in res.warnings:
                show_error(self.w, "Import reviewed bundle", warning)
            self.session.announce(Changes(batches=frozenset(res.changed_batches), batch_list=True, result=res))

        self.run_write("Import reviewed bundle",
                       lambda: core_bundle.apply_import(project, path, resolutions, user=user), done,
                       lambda msg: show_error(self.w, "Import reviewed bundle", msg))


def install_bundle_menu(menu: QMenu, session: WindowSession, window: QMainWindow, run_write: RunWrite,
                        current_batch: Callable[[], int | None]) -> BundleActions:
    """Add the two actions to `menu` (the File menu); returns the controller (kept on the window)."""
    actions = BundleActions(session, window, run_write, current_batch)
    menu.addSeparator()
    menu.addActions([actions.act_export, actions.act_import])
    return actions
