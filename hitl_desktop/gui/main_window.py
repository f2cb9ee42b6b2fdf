"""The review window.

Left: the batch queue (riskiest first). Centre: tabs Review (the batch table), Charts, Pipeline, Models, Audit.
Right: the side panel for the current cell and batch. Bottom: the run panel (progress + Cancel per running task).

Every change goes to the core through :mod:`hitl_desktop.gui.services` / :mod:`hitl_desktop.core.flags` on the
task manager's single writer thread; the window only repaints what the returned value names.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
from PySide6.QtCore import QModelIndex, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QCloseEvent, QIcon, QKeySequence, QUndoStack
from PySide6.QtWidgets import (
    QApplication,
    QCheckBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMainWindow,
    QMessageBox,
    QSplitter,
    QTabWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from .. import __version__
from ..core import batches as core_batches
from ..core import flags as core_flags
from ..core.operations import edits
from ..core import review
from ..core.operations import Changes
from ..core.errors import HitlError
from ..core.project import Project
from ..core.sources import get_source, import_file
from . import services
from .batch_queue import BatchQueue
from .review_view import ReviewTableView
from .bundle_dialogs import install_bundle_menu
from .dialogs import DismissDialog, ShortcutsDialog, SignatureDialog, UserDialog, show_error
from .import_dialog import FILE_FILTER, ImportDialog
from .run_panel import RunPanel
from .session import WindowSession
from .settings import Prefs
from .side_panel import CellInfo, SidePanel
from .table_model import BatchTableModel, Flag
from .models_tab import ModelsTab
from .tabs import AUDIT_SHOWN, AuditTab, ChartsTab, PipelineTab, chart_data
from .undo import AcceptCommand, CoreCommand, DismissCommand, EditCommand, RevertCommand
from .workers import TaskManager

SEV_RANK = {"high": 3, "medium": 2, "low": 1}


def app_icon() -> QIcon:
    from .icons import app_icon as _icon

    return _icon()


class MainWindow(QMainWindow):
    #: a batch finished loading into the table (batch id)
    batchLoaded = Signal(int)
    #: a write (edit, accept, dismiss, undo, decision) was applied to the window
    writeApplied = Signal(object)
    #: the batch queue was refreshed
    queueRefreshed = Signal()

    def __init__(self, project_path: str | os.PathLike | None = None, *, user: str | None = None,
                 batch: int | None = None, ask_user: bool = True) -> None:
        super().__init__()
        self.setWindowTitle("hitl-desktop")
        self.setWindowIcon(app_icon())
        self.prefs = Prefs()
        self.tasks = TaskManager(self)
        self.undo_stack = QUndoStack(self)
        self.session = WindowSession(self, user=user or "")
        self.session.changed.connect(self._on_session_changed)
        self._user_forced = user is not None
        self._ask_user = ask_user
        self.batch_id: int | None = None
        self.batch: Any = None
        self.source: Any = None
        self.col_info: dict[str, Any] = {}
        self.flags: list[core_flags.FlagRecord] = []
        self.decisions: list[Any] = []
        self._load_gen = 0
        self._pending_focus: tuple[int, str | None] | None = None
        self._pending_writes = 0
        self._panel_batch_dirty = False
        self._charts_dirty = True
        self._audit_dirty = True
        #: asks a yes/no question; tests replace it
        self.confirm: Callable[[str, str], bool] = self._confirm_dialog
        self.signature_dialog: SignatureDialog | None = None
        self.dismiss_dialog: DismissDialog | None = None

        self._build_ui()
        self._build_actions()
        self._build_menus()
        self._restore_state()
        self.setAcceptDrops(True)
        self._queue_timer = QTimer(self)
        self._queue_timer.setSingleShot(True)
        self._queue_timer.setInterval(150)
        self._queue_timer.timeout.connect(self.refresh_queue)
        # the side panel follows the current cell a moment later: the table repaints first, and moving quickly
        # through cells costs one panel refresh, not one per step
        self._panel_timer = QTimer(self)
        self._panel_timer.setSingleShot(True)
        self._panel_timer.setInterval(20)
        self._panel_timer.timeout.connect(self._refresh_panels)
        self._update_actions()
        if project_path:
            QTimer.singleShot(0, lambda: self.open_project(project_path, batch=batch))

    # ================================================================================================ layout
    def _build_ui(self) -> None:
        self.queue = BatchQueue()
        self.queue.batchActivated.connect(self.open_batch)

        self.model = BatchTableModel(pd.DataFrame())
        self.model.editRequested.connect(self._on_edit_requested)
        self.view = ReviewTableView()
        self.view.setModel(self.model)
        self.view.selectionModel().currentChanged.connect(self._current_changed)
        self.model.viewRowsChanged.connect(self._rows_changed)

        review = QWidget()
        rl = QVBoxLayout(review)
        rl.setContentsMargins(0, 4, 0, 0)
        bar = QHBoxLayout()
        self.batch_title = QLabel("Open a project: File > Open, File > New, or run `hitl-desktop --demo`")
        bar.addWidget(self.batch_title, 1)
        self.only_flagged = QCheckBox("Only flagged rows")
        self.only_flagged.toggled.connect(self.model.set_show_only_flagged)
        bar.addWidget(self.only_flagged)
        self.find_edit = QLineEdit()
        self.find_edit.setPlaceholderText("Find in batch (Ctrl+F)")
        self.find_edit.setClearButtonEnabled(True)
        self.find_edit.returnPressed.connect(lambda: self.find_next(False))
        self.find_edit.setMaximumWidth(220)
        bar.addWidget(self.find_edit)
        rl.addLayout(bar)
        rl.addWidget(self.view, 1)

        self.tabs = QTabWidget()
        self.tabs.addTab(review, "Review")
        self.charts = ChartsTab()
        self.charts.columnChanged.connect(lambda _c: self._mark_charts_dirty())
        self.tabs.addTab(self.charts, "Charts")
        self.pipeline_tab = PipelineTab()
        self.pipeline_tab.runRequested.connect(self.run_pipeline)
        self.tabs.addTab(self.pipeline_tab, "Pipeline")
        self.models_tab = ModelsTab(self)
        self.tabs.addTab(self.models_tab, "Models")
        self.audit_tab = AuditTab()
        self.audit_tab.verifyRequested.connect(self.verify_audit)
        self.tabs.addTab(self.audit_tab, "Audit")
        self.tabs.currentChanged.connect(self._tab_changed)

        self.side = SidePanel()

        self.splitter = QSplitter(Qt.Orientation.Horizontal)
        self.splitter.setObjectName("mainSplitter")
        self.splitter.addWidget(self.queue)
        self.splitter.addWidget(self.tabs)
        self.splitter.addWidget(self.side)
        self.splitter.setStretchFactor(0, 0)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setStretchFactor(2, 0)
        self.splitter.setSizes([360, 760, 300])

        self.run_panel = RunPanel(self.tasks)
        central = QWidget()
        cl = QVBoxLayout(central)
        cl.setContentsMargins(4, 4, 4, 0)
        cl.addWidget(self.splitter, 1)
        cl.addWidget(self.run_panel)
        self.setCentralWidget(central)

        sb = self.statusBar()
        self.status_project = QLabel("No project")
        self.status_user = QLabel("")
        self.status_rows = QLabel("")
        self.status_save = QLabel("")
        for w in (self.status_save, self.status_rows, self.status_user, self.status_project):
            sb.addPermanentWidget(w)
        self.resize(1420, 860)

    def _act(self, text: str, slot: Callable, shortcuts=(), tip: str = "", checkable: bool = False) -> QAction:
        a = QAction(text, self)
        if shortcuts:
            a.setShortcuts([QKeySequence(s) for s in shortcuts])
        if tip:
            a.setStatusTip(tip)
            a.setToolTip(tip)
        a.setCheckable(checkable)
        a.triggered.connect(lambda _checked=False: slot())
        a.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        self.addAction(a)
        return a

    def _build_actions(self) -> None:
        A = self._act
        self.act_new = A("&New Project…", self.new_project_dialog, [QKeySequence.StandardKey.New])
        self.act_open = A("&Open Project…", self.open_project_dialog, [QKeySequence.StandardKey.Open])
        self.act_import = A("&Import Data…", lambda: self.import_dialog(), ["Ctrl+I"],
                            "Import a CSV, Excel, Parquet or JSON Lines file as new batches")
        self.act_switch_user = A("Switch &User…", self.choose_user)
        self.act_quit = A("&Quit", self.close, [QKeySequence.StandardKey.Quit])

        self.act_next_flag = A("Next Open Flag", lambda: self.goto_flag(+1), ["F8", "Ctrl+."],
                               "Go to the next cell with an open flag")
        self.act_prev_flag = A("Previous Open Flag", lambda: self.goto_flag(-1), ["Shift+F8", "Ctrl+,"])
        self.act_accept = A("Accept Suggestion", self.accept_suggestion, ["Ctrl+Return", "Ctrl+Enter"],
                            "Put the flag's suggested value in the cell")
        self.act_dismiss = A("Dismiss Flag…", self.dismiss_flag, ["Ctrl+D"], "Mark the value correct as is, with a reason")
        self.act_edit = A("Edit Cell", self.edit_current, ["F2"], "Edit the current cell (or just start typing)")
        self.act_revert = A("Revert Cell", self.revert_current, ["Ctrl+R"], "Put the cell back to its imported value")
        self.act_undo = self.undo_stack.createUndoAction(self, "&Undo")
        self.act_undo.setShortcuts([QKeySequence("Ctrl+Z")])
        self.act_redo = self.undo_stack.createRedoAction(self, "&Redo")
        self.act_redo.setShortcuts([QKeySequence("Ctrl+Shift+Z"), QKeySequence("Ctrl+Y")])
        self.addAction(self.act_undo)
        self.addAction(self.act_redo)
        self.act_approve = A("Approve Batch…", lambda: self.decide("approve"), ["Ctrl+Shift+A"],
                             "Sign the batch off for training (asks for your password)")
        self.act_reject = A("Reject Batch…", lambda: self.decide("reject"), ["Ctrl+Shift+R"],
                            "Reject the batch with a comment (asks for your password)")
        self.act_reopen = A("Reopen Batch…", lambda: self.decide("reopen"), ["Ctrl+Shift+O"])
        self.act_next_batch = A("Next Batch", lambda: self.step_batch(+1), ["Ctrl+PgDown", "Alt+Down"])
        self.act_prev_batch = A("Previous Batch", lambda: self.step_batch(-1), ["Ctrl+PgUp", "Alt+Up"])
        self.act_find = A("Find…", self.focus_find, [QKeySequence.StandardKey.Find])
        self.act_find_next = A("Find Next", lambda: self.find_next(False), ["F3"])
        self.act_only_flagged = A("Only Flagged Rows", lambda: self.only_flagged.toggle(), ["Ctrl+Shift+F"])
        self.act_run_checks = A("Run Checks", self.run_checks, ["Ctrl+Shift+K"],
                                "Run the automatic checks in the background")
        self.act_refresh = A("Refresh", self.refresh_all, [QKeySequence.StandardKey.Refresh])
        self.act_shortcuts = A("Keyboard &Shortcuts", self.show_shortcuts, ["F1", "Ctrl+/"])
        self.act_about = A("&About hitl-desktop", self.about)

        self.side.set_actions([self.act_accept, self.act_dismiss, self.act_next_flag], [self.act_revert],
                              [self.act_approve, self.act_reject, self.act_reopen])
        self.undo_stack.cleanChanged.connect(lambda _c: self._update_actions())
        self.undo_stack.indexChanged.connect(lambda _i: self._update_actions())

    def _build_menus(self) -> None:
        mb = self.menuBar()
        m = mb.addMenu("&File")
        m.addActions([self.act_new, self.act_open])
        self.recent_menu = m.addMenu("Open &Recent")
        self.recent_menu.aboutToShow.connect(self._fill_recent)
        m.addSeparator()
        m.addAction(self.act_import)
        self.bundle_actions = install_bundle_menu(m, self.session, self, self.run_write, lambda: self.batch_id)
        m.addSeparator()
        m.addAction(self.act_switch_user)
        m.addSeparator()
        m.addAction(self.act_quit)
        m = mb.addMenu("&Edit")
        m.addActions([self.act_undo, self.act_redo])
        m.addSeparator()
        m.addActions([self.act_edit, self.act_revert, self.act_find, self.act_find_next])
        m = mb.addMenu("&Review")
        m.addActions([self.act_next_flag, self.act_prev_flag, self.act_accept, self.act_dismiss])
        m.addSeparator()
        m.addActions([self.act_approve, self.act_reject, self.act_reopen])
        m.addSeparator()
        m.addActions([self.act_next_batch, self.act_prev_batch, self.act_only_flagged])
        m = mb.addMenu("&Pipeline")
        m.addActions([self.act_run_checks, self.act_refresh])
        m = mb.addMenu("&Help")
        m.addActions([self.act_shortcuts, self.act_about])

    def shortcut_groups(self) -> list[tuple[str, list[QAction]]]:
        return [
            ("Review", [self.act_next_flag, self.act_prev_flag, self.act_accept, self.act_dismiss, self.act_edit,
                        self.act_revert, self.act_undo, self.act_redo]),
            ("Batch", [self.act_approve, self.act_reject, self.act_reopen, self.act_next_batch, self.act_prev_batch,
                       self.act_only_flagged, self.act_find, self.act_find_next]),
            ("Project", [self.act_new, self.act_open, self.act_import, self.act_run_checks, self.act_refresh,
                         self.act_quit, self.act_shortcuts]),
        ]

    # ============================================================================================= session
    @property
    def project(self) -> Project | None:
        return self.session.project

    @project.setter
    def project(self, project: Project | None) -> None:
        self.session.project = project

    @property
    def user(self) -> str:
        return self.session.user

    @user.setter
    def user(self, user: str) -> None:
        self.session.user = user

    def _on_session_changed(self, changes: Changes) -> None:
        """Redraw what an operation run outside the window (a bundle export or import) says it changed."""
        if changes.batch_list or changes.batches:
            self.refresh_queue()
        if self.batch_id is not None and self.batch_id in changes.batches:
            self.open_batch(self.batch_id)

    # ============================================================================================ settings
    def _restore_state(self) -> None:
        g = self.prefs.bytes("window/geometry")
        if g is not None:
            self.restoreGeometry(g)
        s = self.prefs.bytes("window/state")
        if s is not None:
            self.restoreState(s)
        sp = self.prefs.bytes("window/splitter")
        if sp is not None:
            self.splitter.restoreState(sp)

    def save_state(self) -> None:
        self.prefs.set_bytes("window/geometry", self.saveGeometry())
        self.prefs.set_bytes("window/state", self.saveState())
        self.prefs.set_bytes("window/splitter", self.splitter.saveState())
        self.prefs.sync()

    def _fill_recent(self) -> None:
        self.recent_menu.clear()
        recent = self.prefs.recent()
        for p in recent:
            a = self.recent_menu.addAction(p)
            a.triggered.connect(lambda _c=False, p=p: self.open_project(p))
        if not recent:
            a = self.recent_menu.addAction("(none yet)")
            a.setEnabled(False)

    # ============================================================================================ project
    def open_project_dialog(self) -> None:
        start = self.prefs.recent()[0] if self.prefs.recent() else str(Path.home())
        path = QFileDialog.getExistingDirectory(self, "Open project folder", start)
        if path:
            self.open_project(path)

    def new_project_dialog(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Choose an empty folder for the new project", str(Path.home()))
        if not path:
            return
        try:
            project = Project.init(path, user=self.user or self.prefs.user() or None)
        except HitlError as exc:
            show_error(self, "New project", str(exc))
            return
        self._set_project(project)
        self.import_dialog()

    def open_project(self, path: str | os.PathLike, batch: int | None = None) -> bool:
        if self.tasks.running() and not self.confirm(
                "Open another project", "A task is still running. Cancel it and open the other project?"):
            return False
        try:
            project = Project.open(path)
        except HitlError as exc:
            show_error(self, "Open project", str(exc))
            self.prefs.remove_recent(str(Path(path).expanduser().absolute()))
            return False
        self._set_project(project, batch)
        return True

    def _set_project(self, project: Project, batch: int | None = None) -> None:
        if self.project is not None:
            self.tasks.cancel_all()
            self.tasks.wait(10000)
            self.project.close()
        self.project = project
        self.prefs.add_recent(project.path)
        self.undo_stack.clear()
        self.batch_id = None
        self.batch = None
        self.flags = []
        self.model.set_frame(pd.DataFrame())
        self._pick_user()
        name = project.meta("name") or project.path.name
        self.setWindowTitle(f"{name} — hitl-desktop")
        self.status_project.setText(f"{name}  ({project.path})" + ("  [read-only]" if project.read_only else ""))
        self.status_user.setText(f"user: {self.user}")
        self._audit_dirty = self._charts_dirty = True
        self.refresh_queue(select=batch, open_first=batch is None)
        self._refresh_pipeline_tab()
        self._refresh_models_tab()
        self._tab_changed(self.tabs.currentIndex())

    def _pick_user(self) -> None:
        users = services.project_users(self.project)
        names = [u.name for u in users if not u.disabled]
        if self._user_forced and self.user:
            return
        remembered = self.prefs.user()
        if remembered in names:
            self.user = remembered
        elif len(names) == 1:
            self.user = names[0]
        elif names and self._ask_user:
            dlg = UserDialog(self, users, remembered, self.project.meta("name") or "")
            self.user = dlg.user() if dlg.exec() else names[0]
        else:
            self.user = remembered or (names[0] if names else os.environ.get("USER", "user"))
        self.prefs.set_user(self.user)

    def choose_user(self) -> None:
        if self.project is None:
            return
        users = services.project_users(self.project)
        dlg = UserDialog(self, users, self.user, self.project.meta("name") or "")
        if dlg.exec():
            self.user = dlg.user()
            self._user_forced = True
            self.prefs.set_user(self.user)
            self.status_user.setText(f"user: {self.user}")
            self._update_actions()
            self._show_batch_panel()

    # ================================================================================================= queue
    def refresh_queue(self, select: int | None = None, open_first: bool = False) -> None:
        if self.project is None:
            return
        project = self.project

        def done(batches):
            if project is not self.project:
                return
            want = select if select is not None else self.batch_id
            self.queue.set_batches(batches, current=want)
            for b in batches:
                if b.id == self.batch_id:
                    self.batch = b
                    self._show_batch_panel()
            if select is not None:
                self.open_batch(select)
            elif open_first and batches and self.batch_id is None:
                self.open_batch(batches[0].id)
            self._update_actions()
            self.queueRefreshed.emit()

        self.tasks.submit("List batches", lambda ctx: services.list_batches(project), visible=False,
                          on_done=done, on_error=lambda m: show_error(self, "Batches", m))

    def _schedule_queue_refresh(self) -> None:
        self._queue_timer.start()

    def step_batch(self, step: int) -> None:
        nxt = self.queue.next_batch_id(self.batch_id, step)
        if nxt is None:
            self.statusBar().showMessage("No more batches in this list", 3000)
            return
        self.open_batch(nxt)

    # ================================================================================================= batch
    def open_batch(self, batch_id: int, focus: tuple[int, str | None] | None = None) -> None:
        if self.project is None:
            return
        project = self.project
        self._load_gen += 1
        gen = self._load_gen
        self._pending_focus = focus
        self.queue.select(batch_id, emit=False)
        self.batch_title.setText(f"Loading batch {batch_id}…")

        def work(ctx):
            with project.read() as conn:
                b = core_batches.get_batch(conn, batch_id)
                decisions = core_batches.decisions_for(conn, batch_id)
            src = get_source(project, b.source_id)
            cur = core_batches.load_batch(project, batch_id)
            orig = core_batches.load_batch(project, batch_id, original=True)
            fl = core_flags.list_flags(project, batch_id)
            return b, src, cur, orig, fl, decisions

        self.tasks.submit(f"Open batch {batch_id}", work, visible=False,
                          on_done=lambda r: self._batch_loaded(gen, r),
                          on_error=lambda m: show_error(self, "Open batch", m))

    def _batch_loaded(self, gen: int, result) -> None:
        if gen != self._load_gen:
            return
        b, src, cur, orig, fl, decisions = result
        known = next((x for x in self.queue.model.all_batches() if x.id == b.id), None)
        if known is not None:
            b.source, b.edits, b.flags, b.risk, b.decision = known.source, known.edits, known.flags, known.risk, known.decision
        self.batch_id, self.batch, self.source = b.id, b, src
        self.col_info = {c.name: c for c in src.columns}
        self.flags = fl
        self.decisions = decisions
        labels = np.arange(b.start_row + 1, b.start_row + b.rows + 1)
        self.model.set_frame(cur, orig, self._flag_map(), row_labels=labels,
                             column_types={c.name: c.logical + (" (kept as typed)" if c.raw else "") for c in src.columns})
        if self.only_flagged.isChecked():
            self.model.set_show_only_flagged(True)
        editable = b.status in ("queued", "in_review") and not self.project.read_only
        self._set_editable(editable)
        self.frame = cur
        n_open = sum(1 for f in fl if f.status == "open")
        self.batch_title.setText(
            f"<b>Batch {b.id}</b> · {b.source or src.file_name} · rows {b.start_row + 1}–{b.start_row + b.rows} · "
            f"{b.status.replace('_', ' ')} · {n_open} open flag(s)" + ("" if editable else " · read-only"))
        self.charts.set_columns(list(cur.columns), self.charts.column.currentText() or (src.label or None))
        self._charts_dirty = True
        focus = self._pending_focus
        self._pending_focus = None
        if focus is not None:
            self._focus_cell(*focus)
        elif self.model.rowCount():
            self.view.setCurrentIndex(self.model.index(0, 0))
        self._show_batch_panel()
        self._update_side_panel()
        self._update_actions()
        if self.tabs.currentWidget() is self.charts:
            self.refresh_charts()
        self.view.setFocus()
        self.batchLoaded.emit(b.id)

    def _set_editable(self, editable: bool) -> None:
        """Approved/rejected batches are shown read-only (the core refuses such edits anyway)."""
        self.model.set_editable(editable)

    def _flag_map(self, rows: set[int] | None = None) -> dict[tuple[int, str | None], list[Flag]]:
        out: dict[tuple[int, str | None], list[Flag]] = {}
        for f in self.flags:
            if f.status != "open" or (rows is not None and f.row_id not in rows):
                continue
            sug = f.suggestion
            out.setdefault((f.row_id, f.column), []).append(
                Flag(f.severity, f.kind, f"{f.message} (score {f.score:.2f})", sug))
        return out

    def _typed(self, column: str, text: str | None) -> Any:
        info = self.col_info.get(column)
        if text is None:
            return None
        if info is None or info.raw or info.logical == "text":
            return text
        try:
            return core_batches.parse_for_column(info, text)
        except HitlError:
            return text

    def _focus_cell(self, row_id: int, column: str | None) -> None:
        idx = self.model.index_of(row_id, column) if column else QModelIndex()
        if not idx.isValid():
            vr = self.model.view_row_of(row_id)
            if vr < 0 and self.only_flagged.isChecked():
                self.only_flagged.setChecked(False)
                vr = self.model.view_row_of(row_id)
            if vr < 0:
                return
            c = self.model.column_index(column) if column else -1
            idx = self.model.index(vr, max(c, 0))
        self.view.setCurrentIndex(idx)
        self.view.scrollTo(idx)

    # ========================================================================================= current cell
    def current_cell(self) -> tuple[int, str | None] | None:
        idx = self.view.currentIndex()
        if not idx.isValid() or self.batch_id is None:
            return None
        return self.model.row_id_at(idx.row()), self.model.column_name(idx.column())

    def _cell_flags(self, row_id: int, column: str | None, open_only: bool = True,
                    include_row: bool = True) -> list[core_flags.FlagRecord]:
        out = [f for f in self.flags if f.row_id == row_id and (f.column == column or (include_row and f.column is None))
               and (not open_only or f.status == "open")]
        out.sort(key=lambda f: (f.column is None, -SEV_RANK.get(f.severity, 0), -f.score))
        return out

    def _current_changed(self, _cur: QModelIndex, _prev: QModelIndex) -> None:
        self._update_actions()
        self._panel_timer.start()

    def _refresh_panels(self, batch_too: bool = False) -> None:
        if batch_too or self._panel_batch_dirty:
            self._panel_batch_dirty = False
            self._show_batch_panel()
            self._update_actions()
        self._update_side_panel()

    def _update_side_panel(self) -> None:
        cell = self.current_cell()
        if cell is None or self.project is None:
            self.side.show_cell(None)
            return
        row_id, column = cell
        try:
            history = services.edit_history(self.project, self.batch_id, row_id, column)
        except HitlError:
            history = []
        edited = self.model.is_edited(row_id, column)
        original = self.model.original_value(row_id, column) if edited else None
        source_row = row_id - self.batch.row_id_start + self.batch.start_row if self.batch else None
        info = CellInfo(self.batch_id, row_id, source_row, column, self.model.value(row_id, column), original,
                        edited, self._cell_flags(row_id, column, open_only=False), history)
        self.side.show_cell(info)

    def _show_batch_panel(self) -> None:
        note = None
        if self.batch is not None and self.project is not None and self.batch.status in ("queued", "in_review"):
            note = services.check_permission(self.project, self.user, "approve", self.batch_id)
        self.side.show_batch(self.batch, self.decisions, note)
        self._approve_note = note

    def _update_actions(self) -> None:
        has_batch = self.batch is not None
        status = self.batch.status if has_batch else None
        editable = has_batch and status in ("queued", "in_review") and not (self.project and self.project.read_only)
        cell = self.current_cell() if has_batch else None
        fl = self._cell_flags(*cell) if cell else []
        self.act_accept.setEnabled(bool(editable and any(f.suggestion is not None for f in fl)))
        self.act_dismiss.setEnabled(bool(editable and fl))
        self.act_edit.setEnabled(bool(editable and cell))
        self.act_revert.setEnabled(bool(editable and cell and cell[1] and self.model.is_edited(*cell)))
        self.act_next_flag.setEnabled(has_batch)
        self.act_prev_flag.setEnabled(has_batch)
        note = getattr(self, "_approve_note", None)
        self.act_approve.setEnabled(bool(editable and not note))
        self.act_approve.setToolTip(note or "Sign the batch off for training (asks for your password)")
        self.act_reject.setEnabled(bool(editable))
        self.act_reopen.setEnabled(has_batch and status in ("approved", "rejected"))
        have_project = self.project is not None
        self.act_import.setEnabled(have_project and not self.project.read_only)
        runner = services.checks_runner()
        self.act_run_checks.setEnabled(have_project and runner is not None)
        if runner is None:
            self.act_run_checks.setToolTip("This build has no checks stage yet")
        self.act_switch_user.setEnabled(have_project)

    def _rows_changed(self, shown: int, total: int) -> None:
        self.status_rows.setText(f"{shown:,} of {total:,} rows" if shown != total else f"{total:,} rows")

    # ============================================================================================ navigation
    def goto_flag(self, step: int) -> bool:
        """Walk the batch's open flags in review order (riskiest rows first, as `hitl flags`)."""
        if self.batch is None:
            return False
        targets: list[tuple[int, int]] = []
        for f in review.sort_flags([f for f in self.flags if f.status == "open"]):
            vr = self.model.view_row_of(f.row_id)
            if vr < 0:
                continue
            c = self.model.column_index(f.column) if f.column else 0
            t = (vr, max(c, 0))
            if t not in targets:
                targets.append(t)
        if not targets:
            self.statusBar().showMessage("No open flags in this batch — Ctrl+PgDown goes to the next batch", 4000)
            return False
        idx = self.view.currentIndex()
        cur = (idx.row(), idx.column()) if idx.isValid() else None
        if cur in targets:
            nxt = targets[(targets.index(cur) + (1 if step > 0 else -1)) % len(targets)]
        else:
            nxt = targets[0] if step > 0 else targets[-1]
        mi = self.model.index(*nxt)
        self.view.setCurrentIndex(mi)
        self.view.scrollTo(mi)
        return True

    def focus_find(self) -> None:
        self.tabs.setCurrentIndex(0)
        self.find_edit.setFocus()
        self.find_edit.selectAll()

    def find_next(self, backwards: bool) -> None:
        text = self.find_edit.text()
        if not text:
            return
        idx = self.view.currentIndex()
        start = (idx.row(), idx.column()) if idx.isValid() else None
        hit = self.model.find(text, start, backwards=backwards)
        if hit is None:
            self.statusBar().showMessage(f"'{text}' not found in this batch", 3000)
            return
        mi = self.model.index(*hit)
        self.view.setCurrentIndex(mi)
        self.view.scrollTo(mi)
        self.view.setFocus()

    def edit_current(self) -> None:
        idx = self.view.currentIndex()
        if idx.isValid():
            self.view.setFocus()
            self.view.edit(idx)

    # ================================================================================================ writes
    def run_write(self, name: str, fn: Callable[[], Any], on_done: Callable[[Any], None],
                  on_error: Callable[[str], None] | None = None) -> None:
        """Run one core write on the writer thread; apply its result on the GUI thread.

        Always off the GUI thread, even for one cell: a durable commit waits for fsync, which a busy disk can
        stretch to seconds (measured here while another process wrote a large file), and the window must not
        freeze for that.
        """
        self._pending_writes += 1
        self.status_save.setText("saving…")

        def finished(_=None):
            self._pending_writes -= 1
            if self._pending_writes == 0:
                self.status_save.setText("all changes saved")

        def err(msg: str) -> None:
            finished()
            (on_error or (lambda m: show_error(self, name, m)))(msg)

        task = self.tasks.submit(name, lambda ctx: fn(), writer=True, visible=False, cancellable=False)
        task.signals.finished.connect(lambda r: (finished(), on_done(r)))
        task.signals.failed.connect(err)

    def _apply_resolution(self, res: core_flags.Resolution, focus: bool = False) -> None:
        if res is None:
            return
        if res.batch_id != self.batch_id:
            self.open_batch(res.batch_id, focus=(res.edit.row_id, res.edit.column) if res.edit else None)
            self._schedule_queue_refresh()
            self.writeApplied.emit(res)
            return
        rows: set[int] = set()  # rows whose flags changed
        e = res.edit
        if e is not None:
            self.model.update_cell(e.row_id, e.column, self._typed(e.column, e.new_value), self._typed(e.column, e.original))
            if self.batch is not None:
                self.batch.content_hash = e.content_hash
                if e.status != self.batch.status:
                    self.batch.status = e.status
        by_id = {f.id: f for f in res.flags}
        if by_id:
            self.flags = [by_id.get(f.id, f) for f in self.flags]
            rows |= {f.row_id for f in res.flags}
        if rows:
            self.model.update_flags(self._flag_map(rows), row_ids=rows)
        if focus and e is not None:
            self._focus_cell(e.row_id, e.column)
        self._panel_batch_dirty = True  # who may approve can change with an edit (four-eyes)
        self._panel_timer.start()
        self._update_actions()
        self._charts_dirty = self._audit_dirty = True
        self._schedule_queue_refresh()
        self.writeApplied.emit(res)

    def _on_edit_requested(self, row_id: int, column: str, text: str) -> None:
        if self.project is None or self.batch_id is None:
            return
        project, bid, user = self.project, self.batch_id, self.user
        value = None if text == "" else text
        self.run_write(
            "Edit", lambda: edits.edit_cell(project, user, bid, row_id, column, value).result,
            lambda res: (self._apply_resolution(res),
                         self.undo_stack.push(EditCommand(self.session, self.run_undo_step, res, value))))

    def accept_suggestion(self) -> None:
        cell = self.current_cell()
        if cell is None:
            return
        cands = [f for f in self._cell_flags(*cell) if f.suggestion is not None]
        if not cands:
            self.statusBar().showMessage("No suggestion on this cell", 3000)
            return
        flag = cands[0]
        project, user = self.project, self.user
        self.run_write(
            "Accept suggestion", lambda: edits.accept_flag(project, user, flag.id).result,
            lambda res: (self._apply_resolution(res),
                         self.undo_stack.push(AcceptCommand(self.session, self.run_undo_step, flag, res))))

    def dismiss_flag(self) -> None:
        cell = self.current_cell()
        if cell is None:
            return
        cands = self._cell_flags(*cell)
        if not cands:
            self.statusBar().showMessage("No open flag on this cell", 3000)
            return
        flag = cands[0]
        dlg = DismissDialog(self, f"[{flag.severity}] {flag.kind}: {flag.message}")
        self.dismiss_dialog = dlg
        project, user = self.project, self.user

        def accepted():
            reason = dlg.text()
            self.dismiss_dialog = None
            self._back_to_table()
            self.run_write(
                "Dismiss flag", lambda: edits.dismiss_flag(project, user, flag.id, reason).result,
                lambda res: (self._apply_resolution(res),
                             self.undo_stack.push(DismissCommand(self.session, self.run_undo_step, flag, reason))))

        dlg.accepted.connect(accepted)
        dlg.rejected.connect(lambda: (setattr(self, "dismiss_dialog", None), self._back_to_table()))
        dlg.open()

    def revert_current(self) -> None:
        cell = self.current_cell()
        if cell is None or not cell[1]:
            return
        project, bid, user = self.project, self.batch_id, self.user
        self.run_write(
            "Revert cell", lambda: edits.revert_cell(project, user, bid, cell[0], cell[1]).result,
            lambda res: (self._apply_resolution(res),
                         self.undo_stack.push(RevertCommand(self.session, self.run_undo_step, res))))

    def _back_to_table(self) -> None:
        """After a dialog: keyboard review continues in the table."""
        self.activateWindow()
        self.view.setFocus()

    def run_undo_step(self, cmd: CoreCommand, fn: Callable[[], Any], name: str) -> None:
        def failed(msg: str) -> None:
            self.undo_stack.clear()
            show_error(self, name, f"{msg}. The undo history was cleared; the project is unchanged by this step.")

        self.run_write(name, fn, lambda res: self._apply_resolution(res, focus=True), failed)

    # ============================================================================================= decisions
    def decide(self, action: str) -> None:
        if self.batch is None or self.project is None:
            return
        users = {u.name: u for u in services.project_users(self.project)}
        me = users.get(self.user)
        full_name = me.full_name if me else self.user
        signatures = services.signatures_available()
        needs_pw = signatures and me is not None and not me.has_password
        meaning = core_batches.MEANINGS[action]
        dlg = SignatureDialog(self, user=self.user, full_name=full_name, meaning=meaning,
                              batch_label=f"batch {self.batch.id} ({self.batch.rows} rows)",
                              needs_comment=(action == "reject"), set_password=needs_pw, signatures=signatures)
        self.signature_dialog = dlg
        dlg.buttons.accepted.disconnect()
        project, user, bid = self.project, self.user, self.batch.id

        def submit():
            if not dlg.isVisible():
                return
            # validate like the dialog would, without closing it
            if action == "reject" and not dlg.comment.toPlainText().strip():
                dlg.show_error("A rejection needs a comment saying what is wrong.")
                return
            if signatures and not dlg.password.text():
                dlg.show_error("Enter your password to sign.")
                return
            if needs_pw and dlg.password.text() != dlg.confirm.text():
                dlg.show_error("The two passwords differ.")
                return
            password, comment = dlg.values()
            dlg.buttons.setEnabled(False)

            def work():
                if needs_pw:
                    services.set_password(project, user, password)
                return services.decide(project, bid, action, user, password if signatures else None, comment)

            def done(decision):
                dlg.accept()
                self.signature_dialog = None
                self._back_to_table()
                self.statusBar().showMessage(f"Batch {bid}: {decision.meaning} by {decision.full_name}", 5000)
                self._audit_dirty = True
                self.refresh_queue()
                self.open_batch(bid)
                self.writeApplied.emit(decision)

            def failed(msg):
                dlg.buttons.setEnabled(True)
                dlg.show_error(msg)

            self.run_write(f"{action.capitalize()} batch {bid}", work, done, failed)

        dlg.buttons.accepted.connect(submit)
        dlg.rejected.connect(lambda: (setattr(self, "signature_dialog", None), self._back_to_table()))
        dlg.open()

    # ============================================================================================ background
    def run_checks(self) -> None:
        if self.project is None:
            return
        runner = services.checks_runner()
        if runner is None:
            show_error(self, "Run checks", "This build has no checks stage yet: flags cannot be computed.")
            return
        project, user = self.project, self.user

        def work(ctx):
            return services.run_checks(project, user, ctx)

        def done(_r):
            self.statusBar().showMessage("Checks finished", 4000)
            self.refresh_all()

        def cancelled():
            self.statusBar().showMessage("Checks cancelled: batches not yet checked keep their old flags", 5000)
            self._refresh_pipeline_tab()

        self.tasks.submit("Checks", work, on_done=done, on_error=lambda m: (show_error(self, "Checks", m),
                                                                            self._refresh_pipeline_tab()),
                          on_cancel=cancelled)

    def run_pipeline(self) -> None:
        """Pipeline > Run what is stale (every stage of the default pipeline that needs it)."""
        if self.project is None or services.pipeline() is None:
            return
        project, user = self.project, self.user

        def done(report):
            status = getattr(report, "status", "done")
            self.statusBar().showMessage(f"Pipeline run {status}", 5000)
            self.refresh_all()

        self.tasks.submit("Pipeline", lambda ctx: services.run_stages(project, user, ctx),
                          on_done=done, on_error=lambda m: (show_error(self, "Pipeline", m), self._refresh_pipeline_tab()),
                          on_cancel=lambda: (self.statusBar().showMessage("Pipeline run cancelled", 5000),
                                             self._refresh_pipeline_tab()))

    def import_dialog(self, path: str | None = None) -> ImportDialog | None:
        if self.project is None:
            show_error(self, "Import", "Open or create a project first (File > Open or File > New).")
            return None
        dlg = ImportDialog(self, self.tasks, path)
        self.import_dlg = dlg
        dlg.accepted.connect(lambda: self.start_import(dlg.path(), dlg.options()))
        dlg.open()
        return dlg

    def start_import(self, path: str, options) -> None:
        project, user = self.project, self.user

        def work(ctx):
            return import_file(project, path, options, user=user, progress=ctx.progress_callback())

        def done(report):
            msg = (f"Imported {report.rows:,} rows as {len(report.batches)} batch(es)" if not report.reused
                   else "; ".join(report.notes))
            self.statusBar().showMessage(msg, 6000)
            self._audit_dirty = self._charts_dirty = True
            self.refresh_queue(select=report.batches[0] if report.batches and self.batch_id is None else None)

        self.tasks.submit(f"Import {os.path.basename(path)}", work, on_done=done,
                          on_error=lambda m: show_error(self, "Import refused", m),
                          on_cancel=lambda: self.statusBar().showMessage("Import cancelled: nothing was imported", 5000))

    def verify_audit(self) -> None:
        if self.project is None:
            return
        project = self.project
        self.audit_tab.verify_button.setEnabled(False)
        self.audit_tab.set_result(None, "Verifying…")

        def done(outcome):
            self.audit_tab.verify_button.setEnabled(True)
            self.audit_tab.set_result(outcome.ok, outcome.message)

        def failed(msg):
            self.audit_tab.verify_button.setEnabled(True)
            self.audit_tab.set_result(False, msg)

        self.tasks.submit("Verify audit trail", lambda ctx: services.verify(project), on_done=done, on_error=failed)

    def refresh_audit(self) -> None:
        if self.project is None:
            return
        project = self.project

        def work(ctx):
            items = services.audit_entries(project)
            return items[:AUDIT_SHOWN], len(items)

        self._audit_dirty = False
        self.tasks.submit("Read audit trail", work, visible=False,
                          on_done=lambda r: self.audit_tab.set_entries(*r))

    def refresh_charts(self) -> None:
        if self.project is None:
            return
        self._charts_dirty = False
        project = self.project
        col = self.charts.column.currentText() or None
        frame = getattr(self, "frame", None) if self.batch_id is not None else None
        types = {c: i.logical for c, i in self.col_info.items()}
        label = self.source.label if self.source is not None else None
        batch_flags = list(self.flags)
        source_id = self.source.id if self.source is not None else None

        def work(ctx):
            counts: dict[str, int] = {}
            for f in core_flags.list_flags(project, status="open"):
                counts[f.kind] = counts.get(f.kind, 0) + 1
            labels = None
            if label and source_id is not None:
                labels = core_batches.load_source(project, source_id)[label]
            return chart_data(frame, types, label, batch_flags, counts, labels, col)

        self.tasks.submit("Charts", work, visible=False, on_done=self.charts.draw)

    def mark_audit_dirty(self) -> None:
        """The audit trail gained entries: re-read it the next time the Audit tab is shown."""
        self._audit_dirty = True

    def _mark_charts_dirty(self) -> None:
        self._charts_dirty = True
        if self.tabs.currentWidget() is self.charts:
            self.refresh_charts()

    def _refresh_pipeline_tab(self) -> None:
        if services.pipeline() is None:
            self.pipeline_tab.set_unavailable(
                "The pipeline engine is not part of this build: stage states appear here when it is.")
            return
        if self.project is None:
            return
        project = self.project
        self.pipeline_tab.run_button.setEnabled(not project.read_only)

        def done(r):
            rows, runs = r
            self.pipeline_tab.set_status(rows)
            self.pipeline_tab.set_runs(runs)
            self.pipeline_tab.note.setText("Stale stages re-run when you press Run; fresh ones are reused.")

        self.tasks.submit("Pipeline status", lambda ctx: services.pipeline_status(project), visible=False,
                          on_done=done, on_error=lambda m: self.pipeline_tab.note.setText(m))

    def _refresh_models_tab(self) -> None:
        if self.project is not None:
            self.models_tab.refresh()

    def _tab_changed(self, _i: int) -> None:
        w = self.tabs.currentWidget()
        if w is self.audit_tab and self._audit_dirty:
            self.refresh_audit()
        elif w is self.charts and self._charts_dirty:
            self.refresh_charts()
        elif w is self.models_tab:
            self._refresh_models_tab()

    def refresh_all(self) -> None:
        self._audit_dirty = self._charts_dirty = True
        self.refresh_queue()
        if self.batch_id is not None:
            cell = self.current_cell()
            self.open_batch(self.batch_id, focus=cell)
        self._refresh_pipeline_tab()
        self._tab_changed(self.tabs.currentIndex())

    # ================================================================================================ misc
    def show_shortcuts(self) -> None:
        dlg = ShortcutsDialog(self, self.shortcut_groups())
        self.shortcuts_dialog = dlg
        dlg.open()

    def about(self) -> None:
        QMessageBox.about(self, "About hitl-desktop",
                          f"<b>hitl-desktop {__version__}</b><br>Human-in-the-loop review of ML training data: "
                          "batches, flags, edits and signed approvals, on one workstation.")

    def _confirm_dialog(self, title: str, text: str) -> bool:
        return QMessageBox.question(self, title, text) == QMessageBox.StandardButton.Yes

    # drag and drop: a data file imports, a project folder opens
    def dragEnterEvent(self, e) -> None:  # noqa: N802
        if e.mimeData().hasUrls():
            e.acceptProposedAction()

    def dropEvent(self, e) -> None:  # noqa: N802
        urls = [u.toLocalFile() for u in e.mimeData().urls() if u.isLocalFile()]
        if not urls:
            return
        p = Path(urls[0])
        if p.is_dir():
            self.open_project(p)
        else:
            self.import_dialog(str(p))

    def closeEvent(self, e: QCloseEvent) -> None:  # noqa: N802
        running = [t for t in self.tasks.running() if t.cancellable]
        if running:
            names = ", ".join(t.name for t in running)
            if not self.confirm("Quit hitl-desktop", f"{names} is still running. Cancel it and quit?"):
                e.ignore()
                return
            self.tasks.cancel_all()
        self.tasks.wait(15000)
        self.save_state()
        if self.project is not None:
            self.project.close()
            self.project = None
        e.accept()
