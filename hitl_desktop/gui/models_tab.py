"""The Models tab: train, the versions, metrics side by side, the confusion matrix, lineage, the signed
Approve / Reject / Export actions (greyed out with the reason while not allowed), and Predict with an exported
bundle (verified before anything is unpickled, as `hitl predict` does).

All work goes through `hitl_desktop.core.models` off the GUI thread (the window's task manager; decisions on its
single writer thread). The tab asks the core what the current user may do (`models.allowed_actions`) and shows
the refusal reason on the disabled button; the core checks again when the action runs.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QTabWidget,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..core import identity
from ..core import models as core_models
from .dialogs import SignatureDialog, show_error
from .tabs import _table

HEADLINE = ("accuracy", "balanced_accuracy", "f1_macro", "roc_auc")


def _f(x: Any) -> str:
    return "—" if x is None else f"{x:.3f}"


def metric_rows(models: Sequence[core_models.ModelInfo]) -> tuple[list[str], list[list[str]]]:
    """(row labels, one column of values per model): held-out and cross-validated metrics side by side."""
    labels, cols = [], []
    for part, name in (("holdout", "held-out"), ("cv", "cross-validated")):
        for k in HEADLINE:
            labels.append(f"{name} {k.replace('_', ' ')}")
    labels += ["rows (train / held-out)", "estimator", "status", "trained by"]
    for m in models:
        ho, cv = m.metrics.get("holdout") or {}, m.metrics.get("cv") or {}
        col = [_f(ho.get(k)) for k in HEADLINE] + [
            _f((cv.get(k) or {}).get("mean")) + ("" if (cv.get(k) or {}).get("std") is None
                                                 else f" ± {(cv.get(k) or {})['std']:.3f}") for k in HEADLINE]
        col += [f"{m.metrics.get('train_rows', '—')} / {m.metrics.get('holdout_rows', '—')}", m.estimator, m.status,
                m.trained_by]
        cols.append(col)
    return labels, cols


class ModelsTab(QWidget):
    """Needs the window for its project, user, task manager and writer (`window.project`, `.user`, `.tasks`,
    `.run_write`). Tests replace `choose_folder` and drive `signature_dialog`."""

    modelsChanged = Signal()

    def __init__(self, window: Any) -> None:
        super().__init__(window)
        self.window_ = window
        self.models: list[core_models.ModelInfo] = []
        self.actions: dict[int, dict[str, str | None]] = {}
        self.signature_dialog: SignatureDialog | None = None
        self.last_export: Any = None
        #: asks for the export folder; tests replace it
        self.choose_folder: Callable[[], str] = lambda: QFileDialog.getExistingDirectory(self, "Export model to")
        #: ask for the bundle, the rows and the predictions file of Predict; tests replace them
        self.choose_bundle: Callable[[], str] = lambda: QFileDialog.getExistingDirectory(
            self, "Exported model bundle to predict with")
        self.choose_rows: Callable[[], str] = lambda: QFileDialog.getOpenFileName(
            self, "Rows to predict", "", "Data (*.csv *.tsv *.txt *.parquet);;All files (*)")[0]
        self.choose_output: Callable[[str], str] = lambda default: QFileDialog.getSaveFileName(
            self, "Write predictions to", default, "CSV (*.csv)")[0]
        self.last_prediction: dict[str, Any] | None = None
        lay = QVBoxLayout(self)

        bar = QHBoxLayout()
        bar.addWidget(QLabel("Target:"))
        self.target = QComboBox()
        bar.addWidget(self.target)
        bar.addWidget(QLabel("Model:"))
        self.estimator = QComboBox()
        self.estimator.addItems(["logreg", "forest", "hgb"])
        bar.addWidget(self.estimator)
        self.approved_only = QCheckBox("Approved only")
        self.approved_only.setToolTip("Train on the validly approved batches and leave the others out")
        bar.addWidget(self.approved_only)
        self.train_button = QPushButton("Train")
        self.train_button.clicked.connect(self.train)
        bar.addWidget(self.train_button)
        bar.addStretch(1)
        lay.addLayout(bar)
        self.note = QLabel("Training uses validly approved batches only.")
        self.note.setWordWrap(True)
        lay.addWidget(self.note)

        split = QSplitter(Qt.Orientation.Vertical)
        self.table = _table(["Id", "Model", "Status", "Estimator", "Accuracy", "Bal. acc.", "Macro F1", "ROC AUC",
                             "Trained by", "Trained at (UTC)"])
        self.table.setSelectionMode(QTableWidget.SelectionMode.ExtendedSelection)
        self.table.itemSelectionChanged.connect(self._selection_changed)
        split.addWidget(self.table)

        lower = QWidget()
        ll = QVBoxLayout(lower)
        ll.setContentsMargins(0, 0, 0, 0)
        acts = QHBoxLayout()
        self.approve_button = QPushButton("Approve…")
        self.reject_button = QPushButton("Reject…")
        self.export_button = QPushButton("Export…")
        self.approve_button.clicked.connect(lambda: self.decide("approve_model"))
        self.reject_button.clicked.connect(lambda: self.decide("reject_model"))
        self.export_button.clicked.connect(self.export)
        for b in (self.approve_button, self.reject_button, self.export_button):
            acts.addWidget(b)
        acts.addStretch(1)
        self.predict_button = QPushButton("Predict…")
        self.predict_button.setToolTip("Predict rows of a CSV/TSV/Parquet file with an exported, signed model bundle")
        self.predict_button.clicked.connect(self.predict)
        acts.addWidget(self.predict_button)
        ll.addLayout(acts)
        self.reason = QLabel("")
        self.reason.setWordWrap(True)
        ll.addWidget(self.reason)
        self.detail = QTabWidget()
        self.metrics = _table(["Metric"])
        self.detail.addTab(self.metrics, "Metrics side by side")
        self.chart_host = QWidget()
        self._chart_lay = QVBoxLayout(self.chart_host)
        self.figure = None
        self.canvas = None
        self.detail.addTab(self.chart_host, "Confusion matrix")
        self.lineage = QTreeWidget()
        self.lineage.setHeaderLabels(["Lineage", "Value"])
        self.detail.addTab(self.lineage, "Lineage")
        self._chart_dirty = True
        self.detail.currentChanged.connect(lambda _i: self._maybe_draw())
        ll.addWidget(self.detail, 1)
        split.addWidget(lower)
        split.setSizes([220, 420])
        lay.addWidget(split, 1)
        self._update_buttons()

    # ------------------------------------------------------------------------------------------------- data
    @property
    def project(self) -> Any:
        return self.window_.project

    def refresh(self, select: int | None = None) -> None:
        """Reload versions and what the current user may do (off the GUI thread)."""
        project, user = self.project, self.window_.user
        if project is None:
            return
        keep = select if select is not None else self.current_id()

        def work(_ctx):
            models = core_models.list_models(project)
            return models, {m.id: core_models.allowed_actions(project, m.id, user) for m in models}

        self.window_.tasks.submit("Models", work, visible=False,
                                  on_done=lambda r: self.set_models(*r, select=keep),
                                  on_error=lambda m: self.note.setText(m))
        self._fill_targets()

    def _fill_targets(self) -> None:
        src = getattr(self.window_, "source", None)
        if src is None:
            return
        cols = [c.name for c in src.columns]
        cur = self.target.currentText() or (src.label or "")
        if [self.target.itemText(i) for i in range(self.target.count())] != cols:
            self.target.clear()
            self.target.addItems(cols)
        if cur in cols:
            self.target.setCurrentText(cur)

    def set_models(self, models: list[core_models.ModelInfo], actions: dict[int, dict[str, str | None]],
                   select: int | None = None) -> None:
        self.models, self.actions = models, actions
        t = self.table
        t.blockSignals(True)
        t.setRowCount(len(models))
        for i, m in enumerate(models):
            h = m.headline()
            vals = [m.id, m.label, m.status, m.estimator, _f(h["accuracy"]), _f(h["balanced_accuracy"]),
                    _f(h["f1_macro"]), _f(h["roc_auc"]), m.trained_by, m.trained_at[:19].replace("T", " ")]
            for c, v in enumerate(vals):
                it = QTableWidgetItem(str(v))
                it.setData(Qt.ItemDataRole.UserRole, m.id)
                t.setItem(i, c, it)
        t.blockSignals(False)
        if models:
            ids = [m.id for m in models]
            row = ids.index(select) if select in ids else len(models) - 1
            self.select_row(row)
        self._selection_changed()
        self.modelsChanged.emit()

    def select_row(self, row: int) -> None:
        """Select exactly one version (and make it the current row)."""
        from PySide6.QtCore import QItemSelectionModel

        sm, idx = self.table.selectionModel(), self.table.model().index(row, 0)
        flags = QItemSelectionModel.SelectionFlag
        sm.setCurrentIndex(idx, flags.ClearAndSelect | flags.Rows)

    def selected_models(self) -> list[core_models.ModelInfo]:
        rows = sorted({i.row() for i in self.table.selectedIndexes()})
        return [self.models[r] for r in rows if r < len(self.models)]

    def current_id(self) -> int | None:
        m = self.current()
        return m.id if m is not None else None

    def current(self) -> core_models.ModelInfo | None:
        """The version the actions apply to: the current row when it is selected, else the last selected one."""
        r = self.table.currentRow()
        sel = self.selected_models()
        if 0 <= r < len(self.models) and self.models[r] in sel:
            return self.models[r]
        return sel[-1] if sel else None

    def _selection_changed(self) -> None:
        sel = self.selected_models() or self.models[-1:]
        labels, cols = metric_rows(sel)
        mt = self.metrics
        mt.setColumnCount(1 + len(sel))
        mt.setHorizontalHeaderLabels(["Metric"] + [m.label for m in sel])
        mt.setRowCount(len(labels))
        for r, lab in enumerate(labels):
            mt.setItem(r, 0, QTableWidgetItem(lab))
            for c, col in enumerate(cols):
                mt.setItem(r, c + 1, QTableWidgetItem(col[r]))
        m = self.current()
        self._chart_dirty = True
        self._maybe_draw()
        self._fill_lineage(m)
        self._update_buttons()

    def _maybe_draw(self) -> None:
        """Draw the confusion matrix only when it is on screen (matplotlib is imported on first use)."""
        if self._chart_dirty and self.isVisible() and self.detail.currentWidget() is self.chart_host:
            self._chart_dirty = False
            self._draw_confusion(self.current())

    def showEvent(self, e) -> None:  # noqa: N802
        super().showEvent(e)
        self._maybe_draw()

    def _draw_confusion(self, m: core_models.ModelInfo | None) -> None:
        if self.figure is None:
            import matplotlib

            matplotlib.use("QtAgg", force=False)
            from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
            from matplotlib.figure import Figure

            self.figure = Figure(figsize=(5, 4), layout="constrained")
            self.canvas = FigureCanvasQTAgg(self.figure)
            self._chart_lay.addWidget(self.canvas, 1)
        fig = self.figure
        fig.clear()
        ax = fig.add_subplot(111)
        ho = (m.metrics.get("holdout") or {}) if m is not None else {}
        cm = ho.get("confusion_matrix")
        if not cm:
            ax.text(0.5, 0.5, "No held-out confusion matrix for this model" if m else "No model selected",
                    ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
        else:
            import numpy as np

            a = np.asarray(cm)
            classes = m.metrics.get("classes") or [str(i) for i in range(len(a))]
            ax.imshow(a, cmap="Blues")
            ax.set_xticks(range(len(classes)), labels=classes, rotation=45, ha="right")
            ax.set_yticks(range(len(classes)), labels=classes)
            ax.set_xlabel("predicted")
            ax.set_ylabel("true")
            ax.set_title(f"{m.label}: held-out ({int(a.sum())} rows)")
            top = a.max() or 1
            for i in range(a.shape[0]):
                for j in range(a.shape[1]):
                    ax.text(j, i, str(a[i, j]), ha="center", va="center",
                            color="white" if a[i, j] > top / 2 else "black")
        self.canvas.draw_idle()

    def _fill_lineage(self, m: core_models.ModelInfo | None) -> None:
        tree = self.lineage
        tree.clear()
        if m is None:
            return

        def add(parent: Any, key: str, value: Any) -> None:
            if isinstance(value, dict):
                item = QTreeWidgetItem(parent, [key, ""])
                for k, v in value.items():
                    add(item, str(k), v)
            elif isinstance(value, list) and value and isinstance(value[0], (dict, list)):
                item = QTreeWidgetItem(parent, [key, f"{len(value)} items"])
                for i, v in enumerate(value):
                    label = str(v.get("step") or v.get("batch") or v.get("name") or i) if isinstance(v, dict) else str(i)
                    add(item, label, v)
            else:
                QTreeWidgetItem(parent, [key, str(value)])

        lin = m.lineage
        order = ("pipeline", "batches", "left_out", "rows", "source", "code", "trained_by", "trained_at",
                 "model_sha256", "schema")
        for k in order:
            if k in lin:
                add(tree, k, lin[k])
        add(tree, "decisions", m.decisions)
        for i in range(min(3, tree.topLevelItemCount())):
            tree.topLevelItem(i).setExpanded(True)
        tree.resizeColumnToContents(0)

    def _update_buttons(self) -> None:
        m = self.current()
        project = self.project
        read_only = project is None or project.read_only
        self.train_button.setEnabled(not read_only)
        self.train_button.setToolTip("the project is read-only" if project is not None and read_only else
                                     "Train a new version on the validly approved batches")
        acts = self.actions.get(m.id, {}) if m is not None else {}
        reasons = []
        for button, key in ((self.approve_button, "approve_model"), (self.reject_button, "reject_model"),
                            (self.export_button, "export")):
            why = "select a model version" if m is None else acts.get(key, "not checked yet")
            button.setEnabled(why is None)
            button.setToolTip(why or "")
            if why and m is not None:
                reasons.append(f"{button.text().rstrip('…')}: {why}")
        self.reason.setText("; ".join(reasons))

    # ---------------------------------------------------------------------------------------------- actions
    def train(self) -> None:
        project, user = self.project, self.window_.user
        if project is None:
            return
        target = self.target.currentText() or None
        est = self.estimator.currentText()
        approved_only = self.approved_only.isChecked()
        self.train_button.setEnabled(False)
        self.note.setText("Training…")

        def work(ctx):
            return core_models.train(project, user, target, est, {}, None, approved_only, cancel=ctx)

        def done(res):
            m = res.model
            self.note.setText((f"Model {m.id} ({m.label}) is up to date: nothing changed" if res.reused else
                               f"Trained model {m.id} ({m.label})") +
                              (f"; left out {res.left_out_rows:,} rows of batches not validly approved"
                               if res.left_out else ""))
            self.refresh(select=m.id)
            self.train_button.setEnabled(True)

        def failed(msg):
            self.note.setText(msg)
            self.train_button.setEnabled(True)
            show_error(self, "Training refused", msg)

        self.window_.tasks.submit("Train model", work, on_done=done, on_error=failed,
                                  on_cancel=lambda: (self.note.setText("Training cancelled: nothing registered"),
                                                     self.train_button.setEnabled(True)))

    def _ask_password(self, m: core_models.ModelInfo, meaning: str, needs_comment: bool,
                      submit: Callable[[str, str | None, SignatureDialog], None]) -> SignatureDialog:
        users = {u.name: u for u in identity.list_users(self.project)}
        me = users.get(self.window_.user)
        dlg = SignatureDialog(self, user=self.window_.user, full_name=me.full_name if me else self.window_.user,
                              meaning=meaning, batch_label=f"model {m.id} ({m.label}, {m.estimator})",
                              needs_comment=needs_comment)
        dlg.comment.setPlaceholderText("Why this model is rejected (required)")
        self.signature_dialog = dlg
        dlg.buttons.accepted.disconnect()

        def ok():
            if needs_comment and not dlg.comment.toPlainText().strip():
                dlg.show_error("A rejection needs a comment saying why.")
                return
            if not dlg.password.text():
                dlg.show_error("Enter your password to sign.")
                return
            pw, comment = dlg.values()
            dlg.buttons.setEnabled(False)
            submit(pw, comment, dlg)

        dlg.buttons.accepted.connect(ok)
        dlg.rejected.connect(lambda: setattr(self, "signature_dialog", None))
        dlg.open()
        return dlg

    def decide(self, action: str) -> None:
        m = self.current()
        if m is None or self.project is None:
            return
        project, user, mid = self.project, self.window_.user, m.id

        def submit(pw: str, comment: str | None, dlg: SignatureDialog) -> None:
            def work():
                return core_models.decide_model(project, mid, action, user, comment,
                                                signer=identity.signer(project, user, pw))

            def done(info):
                dlg.accept()
                self.signature_dialog = None
                d = info.decisions[-1]
                self.note.setText(f"Model {info.id}: {d['meaning']} by {d['full_name']}")
                self.window_.mark_audit_dirty()
                self.refresh(select=info.id)

            def failed(msg):
                dlg.buttons.setEnabled(True)
                dlg.show_error(msg)

            self.window_.run_write(f"{action.replace('_', ' ').capitalize()} {mid}", work, done, failed)

        self._ask_password(m, core_models.MEANINGS[action], action == "reject_model", submit)

    def export(self) -> None:
        m = self.current()
        if m is None or self.project is None:
            return
        folder = self.choose_folder()
        if not folder:
            return
        project, user, mid = self.project, self.window_.user, m.id

        def submit(pw: str, _comment: str | None, dlg: SignatureDialog) -> None:
            def work(_ctx):
                session = identity.authenticate(project, user, pw)
                return core_models.export_model(project, mid, folder, session)

            def done(res):
                dlg.accept()
                self.signature_dialog = None
                self.last_export = res
                self.note.setText(f"Exported model {mid} to {res.out_dir} (manifest signed by {res.signer})")
                self.window_.mark_audit_dirty()

            def failed(msg):
                dlg.buttons.setEnabled(True)
                dlg.show_error(msg)

            self.window_.tasks.submit(f"Export model {mid}", work, on_done=done, on_error=failed)

        self._ask_password(m, "sign the export manifest", False, submit)

    def predict(self) -> None:
        """Bundle folder -> rows file -> predictions file, then verify, check and predict off the GUI thread."""
        import os

        bundle = self.choose_bundle()
        if not bundle:
            return
        rows = self.choose_rows()
        if not rows:
            return
        stem, _ = os.path.splitext(rows)
        out = self.choose_output(f"{stem}-predictions.csv")
        if not out:
            return
        project = self.project
        self.predict_button.setEnabled(False)
        self.note.setText(f"Predicting {os.path.basename(rows)} with {os.path.basename(bundle.rstrip('/'))}…")

        def work(_ctx):
            trusted = core_models.trusted_keys()
            if project is not None:
                trusted.update(core_models.project_keys(project))  # signers of this project's own exports
            return core_models.predict_file(bundle, rows, out, trusted)

        def done(summary):
            self.last_prediction = summary
            self.predict_button.setEnabled(True)
            counts = ", ".join(f"{k}: {v:,}" for k, v in summary["predicted"].items())
            self.note.setText(f"{summary['rows']:,} predictions written to {summary['out']} (model "
                              f"{summary['model']['label']}, signed by {summary['signer']['full_name']})"
                              + (f"; predicted {counts}" if counts else ""))

        def failed(msg):
            self.predict_button.setEnabled(True)
            self.note.setText(msg)
            show_error(self, "Prediction refused", msg)

        self.window_.tasks.submit("Predict", work, on_done=done, on_error=failed)


__all__ = ["ModelsTab", "metric_rows"]
