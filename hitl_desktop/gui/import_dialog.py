"""File > Import: preview the first rows with the detected delimiter, encoding and column types, let the user
override delimiter/encoding, pick the label column and the batch size. Reading runs in the background; a refusal
shows the core's one-line reason and leaves the Import button off. The import itself is run by the window."""
from __future__ import annotations

import os
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
)

from ..core.ingest import FORMATS, ImportOptions, read_file
from .table_model import format_value
from .workers import TaskManager

PREVIEW_ROWS = 20
DELIMITERS = [("Detect", None), ("Comma ,", ","), ("Semicolon ;", ";"), ("Tab", "\t"), ("Pipe |", "|")]
ENCODINGS = [("Detect", None), ("UTF-8", "utf-8"), ("UTF-16", "utf-16"), ("Latin-1", "latin-1"),
             ("Windows-1252", "cp1252")]
FILE_FILTER = "Data files (" + " ".join(f"*{e}" for e in FORMATS) + ");;All files (*)"


def _shown_delimiter(d: str | None) -> str:
    return {"\t": "tab", ",": "comma", ";": "semicolon", "|": "pipe"}.get(d or "", repr(d))


class ImportDialog(QDialog):
    def __init__(self, parent, tasks: TaskManager, path: str | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Import data")
        self.tasks = tasks
        self._preview_task = None
        self._generation = 0
        self.result_columns: list[Any] = []
        lay = QVBoxLayout(self)

        row = QHBoxLayout()
        self.path_edit = QLineEdit(path or "")
        self.path_edit.setPlaceholderText("CSV, TSV, Excel, Parquet or JSON Lines file")
        row.addWidget(self.path_edit, 1)
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        row.addWidget(browse)
        lay.addLayout(row)

        form = QFormLayout()
        self.delimiter = QComboBox()
        for label, v in DELIMITERS:
            self.delimiter.addItem(label, v)
        self.encoding = QComboBox()
        for label, v in ENCODINGS:
            self.encoding.addItem(label, v)
        self.label_col = QComboBox()
        self.label_col.addItem("(no label column)", None)
        self.batch_size = QSpinBox()
        self.batch_size.setRange(1, 1_000_000)
        self.batch_size.setValue(500)
        self.batch_size.setSuffix(" rows per batch")
        form.addRow("Delimiter:", self.delimiter)
        form.addRow("Encoding:", self.encoding)
        form.addRow("Label column:", self.label_col)
        form.addRow("Batch size:", self.batch_size)
        lay.addLayout(form)

        self.detected = QLabel("")
        self.detected.setWordWrap(True)
        lay.addWidget(self.detected)
        self.error = QLabel("")
        self.error.setWordWrap(True)
        self.error.setObjectName("importError")
        self.error.setStyleSheet("color: white; background: #b3261e; padding: 4px;")
        self.error.hide()
        lay.addWidget(self.error)
        self.preview = QTableWidget(0, 0)
        self.preview.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.preview.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        lay.addWidget(self.preview, 1)

        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        self.ok = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        self.ok.setText("Import")
        self.ok.setEnabled(False)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        lay.addWidget(self.buttons)
        self.resize(820, 560)

        self.path_edit.editingFinished.connect(self.refresh)
        self.delimiter.currentIndexChanged.connect(lambda _i: self.refresh())
        self.encoding.currentIndexChanged.connect(lambda _i: self.refresh())
        if path:
            self.refresh()

    # -------------------------------------------------------------------------------------------------- ui
    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Import data", os.path.dirname(self.path_edit.text()), FILE_FILTER)
        if path:
            self.path_edit.setText(path)
            self.refresh()

    def options(self) -> ImportOptions:
        return ImportOptions(label=self.label_col.currentData(), batch_size=self.batch_size.value(),
                             delimiter=self.delimiter.currentData(), encoding=self.encoding.currentData())

    def path(self) -> str:
        return self.path_edit.text().strip()

    def show_refusal(self, message: str) -> None:
        self.error.setText(message)
        self.error.show()
        self.ok.setEnabled(False)

    # ---------------------------------------------------------------------------------------------- preview
    def refresh(self) -> None:
        path = self.path()
        self.error.hide()
        self.ok.setEnabled(False)
        if not path:
            return
        self._generation += 1
        gen = self._generation
        opts = ImportOptions(delimiter=self.delimiter.currentData(), encoding=self.encoding.currentData())
        self.detected.setText("Reading the file…")

        def work(ctx):
            ctx.report(0.1, "reading for preview")
            r = read_file(path, opts)
            head = r.table.slice(0, PREVIEW_ROWS).to_pylist()
            return r.table.num_rows, r.columns, r.detected, r.notes, head

        self._preview_task = self.tasks.submit(
            f"Preview {os.path.basename(path)}", work, visible=False,
            on_done=lambda res, g=gen: self._preview_done(g, res),
            on_error=lambda msg, g=gen: self._preview_failed(g, msg))

    def _preview_failed(self, gen: int, message: str) -> None:
        if gen != self._generation:
            return
        self.detected.setText("")
        self.preview.clear()
        self.preview.setRowCount(0)
        self.preview.setColumnCount(0)
        self.show_refusal(message)

    def _preview_done(self, gen: int, res) -> None:
        if gen != self._generation:
            return
        n, columns, detected, notes, head = res
        self.result_columns = columns
        bits = [f"{n:,} rows, {len(columns)} columns"]
        if detected.get("delimiter"):
            bits.append(f"delimiter: {_shown_delimiter(detected['delimiter'])}")
        if detected.get("encoding"):
            bits.append(f"encoding: {detected['encoding']}")
        raw = [c.name for c in columns if c.raw]
        text = "Detected " + "; ".join(bits) + "."
        if raw:
            text += (f" Kept as typed (some values do not parse, the checks will flag them): {', '.join(raw)}.")
        if notes:
            text += " " + " ".join(notes)
        self.detected.setText(text)
        prev_label = self.label_col.currentData()
        self.label_col.blockSignals(True)
        self.label_col.clear()
        self.label_col.addItem("(no label column)", None)
        for c in columns:
            self.label_col.addItem(c.name, c.name)
        guess = prev_label or next((c.name for c in columns if c.name.lower() in ("label", "class", "target", "species", "y")), None)
        i = self.label_col.findData(guess) if guess else 0
        self.label_col.setCurrentIndex(max(i, 0))
        self.label_col.blockSignals(False)
        self.preview.clear()
        self.preview.setColumnCount(len(columns))
        self.preview.setRowCount(len(head))
        labels = []
        for c in columns:
            t = c.logical + (f", {c.strays} stray" if c.raw else "")
            labels.append(f"{c.name}\n({t})")
        self.preview.setHorizontalHeaderLabels(labels)
        for r, row in enumerate(head):
            for ci, c in enumerate(columns):
                item = QTableWidgetItem(format_value(row.get(c.name)))
                if c.logical in ("integer", "float"):
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.preview.setItem(r, ci, item)
        self.ok.setEnabled(True)
