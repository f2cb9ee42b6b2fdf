"""The run panel: one row per running background task with its progress bar, message, elapsed time and Cancel."""
from __future__ import annotations

import time

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QPushButton, QVBoxLayout, QWidget

from .workers import Task, TaskManager


class _TaskRow(QWidget):
    def __init__(self, task: Task, parent=None) -> None:
        super().__init__(parent)
        self.task = task
        self.t0 = time.monotonic()
        lay = QHBoxLayout(self)
        lay.setContentsMargins(4, 1, 4, 1)
        self.name = QLabel(f"<b>{task.name}</b>")
        lay.addWidget(self.name)
        self.bar = QProgressBar()
        self.bar.setRange(0, 0)  # busy until the first report
        self.bar.setTextVisible(True)
        self.bar.setMinimumWidth(180)
        lay.addWidget(self.bar, 2)
        self.msg = QLabel("starting…")
        self.msg.setMinimumWidth(160)
        lay.addWidget(self.msg, 3)
        self.elapsed = QLabel("0 s")
        self.elapsed.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        self.elapsed.setMinimumWidth(44)
        lay.addWidget(self.elapsed)
        self.cancel = QPushButton("Cancel")
        self.cancel.setEnabled(task.cancellable)
        self.cancel.clicked.connect(self._cancel)
        lay.addWidget(self.cancel)
        task.signals.progress.connect(self.on_progress)

    def on_progress(self, fraction: float, message: str) -> None:
        if self.bar.maximum() == 0:
            self.bar.setRange(0, 1000)
        self.bar.setValue(int(fraction * 1000))
        self.bar.setFormat(f"{fraction * 100:.0f}%")
        if message:
            self.msg.setText(message)

    def tick(self) -> None:
        self.elapsed.setText(f"{time.monotonic() - self.t0:.0f} s")

    def _cancel(self) -> None:
        self.task.cancel()
        self.cancel.setEnabled(False)
        self.cancel.setText("Cancelling…")
        self.msg.setText("stopping at the next safe point…")


class RunPanel(QWidget):
    """Shows itself while visible tasks run; hides when they are all done."""

    def __init__(self, tasks: TaskManager, parent=None) -> None:
        super().__init__(parent)
        self.tasks = tasks
        self.rows: dict[int, _TaskRow] = {}
        self.lay = QVBoxLayout(self)
        self.lay.setContentsMargins(0, 0, 0, 0)
        self.lay.setSpacing(0)
        tasks.taskStarted.connect(self._started)
        tasks.taskEnded.connect(self._ended)
        self.timer = QTimer(self)
        self.timer.setInterval(500)
        self.timer.timeout.connect(self._tick)
        self.hide()

    def _started(self, task: Task) -> None:
        if not getattr(task, "visible", True):
            return
        row = _TaskRow(task, self)
        self.rows[task.id] = row
        self.lay.addWidget(row)
        self.show()
        self.timer.start()

    def _ended(self, task: Task) -> None:
        row = self.rows.pop(task.id, None)
        if row is not None:
            row.setParent(None)
            row.deleteLater()
        if not self.rows:
            self.timer.stop()
            self.hide()

    def _tick(self) -> None:
        for r in self.rows.values():
            r.tick()

    def row(self, task: Task) -> _TaskRow | None:
        return self.rows.get(task.id)
