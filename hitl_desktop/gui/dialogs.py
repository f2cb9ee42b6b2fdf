"""Small dialogs: readable errors (and the excepthook that shows them), signatures, dismiss reasons, user choice,
the shortcuts sheet."""
from __future__ import annotations

import sys
import traceback
from typing import Callable, Sequence

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QApplication,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPlainTextEdit,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
    QHeaderView,
)

from ..core.errors import HitlError

# --- errors ---------------------------------------------------------------------------------------------------

#: Tests replace this to capture messages instead of showing modal boxes.
_error_sink: Callable[[str, str], None] | None = None


def set_error_sink(fn: Callable[[str, str], None] | None) -> None:
    global _error_sink
    _error_sink = fn


def show_error(parent: QWidget | None, title: str, message: str, details: str | None = None) -> None:
    """A readable error: one line for a person; any traceback hides behind "Show Details"."""
    if _error_sink is not None:
        _error_sink(title, message)
        return
    box = QMessageBox(parent)
    box.setIcon(QMessageBox.Icon.Warning)
    box.setWindowTitle(title)
    box.setText(message)
    if details:
        box.setDetailedText(details)
    box.exec()


def install_excepthook() -> None:
    """Unexpected exceptions in slots become a dialog (with the traceback only under "Show Details")."""
    previous = sys.excepthook

    def hook(exc_type, exc, tb):
        if issubclass(exc_type, KeyboardInterrupt):
            previous(exc_type, exc, tb)
            return
        details = "".join(traceback.format_exception(exc_type, exc, tb))
        sys.stderr.write(details)
        if QApplication.instance() is None:
            return
        if isinstance(exc, HitlError):
            show_error(QApplication.activeWindow(), "hitl-desktop", str(exc))
        else:
            first = str(exc).splitlines()[0] if str(exc) else ""
            show_error(QApplication.activeWindow(), "Unexpected problem",
                       f"Something went wrong inside hitl-desktop ({exc_type.__name__}: {first}). "
                       "Your data is safe: every change is saved as it is made.", details)

    sys.excepthook = hook


# --- signature ------------------------------------------------------------------------------------------------


class SignatureDialog(QDialog):
    """Modal electronic signature: who signs, what it means, the password (asked every time)."""

    def __init__(self, parent: QWidget | None, *, user: str, full_name: str, meaning: str, batch_label: str,
                 needs_comment: bool = False, set_password: bool = False, signatures: bool = True) -> None:
        super().__init__(parent)
        self.setWindowTitle("Sign: " + meaning)
        self.setModal(True)
        self.setMinimumWidth(440)
        lay = QVBoxLayout(self)
        intro = QLabel(
            f"<b>{full_name}</b> ({user}) signs <b>{batch_label}</b> as “{meaning}”.<br>"
            "The signature records your name, the time (UTC) and this meaning, bound to the batch's current content."
            if signatures else
            f"<b>{full_name}</b> ({user}): {batch_label} → “{meaning}”.<br>"
            "This build has no signature module: the decision is recorded unsigned.")
        intro.setWordWrap(True)
        intro.setTextFormat(Qt.TextFormat.RichText)
        lay.addWidget(intro)
        form = QFormLayout()
        self.comment = QPlainTextEdit()
        self.comment.setPlaceholderText("What is wrong with this batch (required)")
        self.comment.setFixedHeight(70)
        if needs_comment:
            form.addRow("Comment:", self.comment)
        self.password = QLineEdit()
        self.password.setEchoMode(QLineEdit.EchoMode.Password)
        self.password.setObjectName("password")
        self.confirm = QLineEdit()
        self.confirm.setEchoMode(QLineEdit.EchoMode.Password)
        self.set_password = set_password
        if signatures:
            if set_password:
                note = QLabel("You have no password in this project yet: choose one now (at least 8 characters).")
                note.setWordWrap(True)
                form.addRow(note)
                form.addRow("New password:", self.password)
                form.addRow("Repeat:", self.confirm)
            else:
                form.addRow("Password:", self.password)
        lay.addLayout(form)
        self.error = QLabel()
        self.error.setWordWrap(True)
        self.error.setStyleSheet("color: palette(highlighted-text); background: #b3261e; padding: 4px;")
        self.error.hide()
        lay.addWidget(self.error)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Sign" if signatures else "Record")
        self.buttons.accepted.connect(self._accept)
        self.buttons.rejected.connect(self.reject)
        lay.addWidget(self.buttons)
        self._needs_comment = needs_comment
        self._signatures = signatures
        (self.comment if needs_comment else self.password).setFocus()

    def show_error(self, message: str) -> None:
        self.error.setText(message)
        self.error.show()
        self.password.selectAll()
        self.password.setFocus()

    def _accept(self) -> None:
        if self._needs_comment and not self.comment.toPlainText().strip():
            self.show_error("A rejection needs a comment saying what is wrong.")
            return
        if self._signatures and not self.password.text():
            self.show_error("Enter your password to sign.")
            return
        if self.set_password and self.password.text() != self.confirm.text():
            self.show_error("The two passwords differ.")
            return
        self.accept()

    def values(self) -> tuple[str, str | None]:
        c = self.comment.toPlainText().strip() if self._needs_comment else None
        return self.password.text(), c


# --- dismiss --------------------------------------------------------------------------------------------------

DISMISS_REASONS = ["correct as is", "checked against the field sheet", "not an error for this data set"]


class DismissDialog(QDialog):
    def __init__(self, parent: QWidget | None, flag_text: str) -> None:
        super().__init__(parent)
        self.setWindowTitle("Dismiss flag")
        self.setMinimumWidth(420)
        lay = QVBoxLayout(self)
        lbl = QLabel(f"Dismiss: {flag_text}<br>Why is the value correct as it is?")
        lbl.setWordWrap(True)
        lay.addWidget(lbl)
        self.reason = QComboBox()
        self.reason.setEditable(True)
        self.reason.addItems(DISMISS_REASONS)
        self.reason.setObjectName("reason")
        lay.addWidget(self.reason)
        bb = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        bb.button(QDialogButtonBox.StandardButton.Ok).setText("Dismiss")
        bb.accepted.connect(self.accept)
        bb.rejected.connect(self.reject)
        lay.addWidget(bb)

    def text(self) -> str:
        return self.reason.currentText().strip()


# --- user choice ---------------------------------------------------------------------------------------------


class UserDialog(QDialog):
    """Who is working: chosen from the project's users (remembered in QSettings)."""

    def __init__(self, parent: QWidget | None, users: Sequence, current: str | None, project_name: str) -> None:
        super().__init__(parent)
        self.setWindowTitle("Who is reviewing?")
        self.setMinimumWidth(380)
        lay = QVBoxLayout(self)
        lbl = QLabel(f"Open <b>{project_name}</b> as:")
        lay.addWidget(lbl)
        self.combo = QComboBox()
        for u in users:
            if not u.disabled:
                self.combo.addItem(f"{u.full_name} ({u.name}, {u.role})", u.name)
        i = self.combo.findData(current) if current else -1
        if i >= 0:
            self.combo.setCurrentIndex(i)
        lay.addWidget(self.combo)
        bb = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        bb.accepted.connect(self.accept)
        bb.rejected.connect(self.reject)
        lay.addWidget(bb)

    def user(self) -> str:
        return self.combo.currentData()


# --- shortcuts sheet ------------------------------------------------------------------------------------------


class ShortcutsDialog(QDialog):
    """Help > Shortcuts: built from the window's actions, so the sheet can never disagree with the keys."""

    def __init__(self, parent: QWidget | None, groups: Sequence[tuple[str, Sequence[QAction]]]) -> None:
        super().__init__(parent)
        self.setWindowTitle("Keyboard shortcuts")
        lay = QVBoxLayout(self)
        rows = [(g, a) for g, acts in groups for a in acts if not a.shortcut().isEmpty()]
        table = QTableWidget(len(rows), 3)
        table.setHorizontalHeaderLabels(["Keys", "Action", "Area"])
        table.verticalHeader().hide()
        table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        for i, (g, a) in enumerate(rows):
            keys = " or ".join(s.toString(QKeySequence.SequenceFormat.NativeText) for s in a.shortcuts())
            table.setItem(i, 0, QTableWidgetItem(keys))
            table.setItem(i, 1, QTableWidgetItem(a.text().replace("&", "").rstrip(".…")))
            table.setItem(i, 2, QTableWidgetItem(g))
        hh = table.horizontalHeader()
        hh.setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        hh.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        hh.setSectionResizeMode(2, QHeaderView.ResizeMode.ResizeToContents)
        lay.addWidget(table)
        tip = QLabel("Typing in a cell or F2 edits it; Enter commits, Esc cancels. Every change is saved at once.")
        tip.setWordWrap(True)
        lay.addWidget(tip)
        bb = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        bb.rejected.connect(self.reject)
        lay.addWidget(bb)
        self.table = table
        self.resize(560, min(640, 90 + 30 * len(rows)))
