"""The side panel for the selected cell and its batch: value (original vs current), flags with their suggestion,
the cell's edit history (who / when / why), and the batch's signed decisions. Its buttons are the window's own
actions, so a button and its shortcut can never disagree."""
from __future__ import annotations

from dataclasses import dataclass, field
from html import escape
from typing import Any, Sequence

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction
from PySide6.QtWidgets import (
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QScrollArea,
    QSizePolicy,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from .table_model import format_value


@dataclass
class CellInfo:
    batch_id: int
    row_id: int
    source_row: int | None
    column: str | None
    current: Any = None
    original: Any = None
    edited: bool = False
    flags: list[Any] = field(default_factory=list)  # core FlagRecord
    history: list[Any] = field(default_factory=list)  # core EditRecord


def _short_ts(ts: str | None) -> str:
    return (ts or "")[:19].replace("T", " ")


def _value(v: Any) -> str:
    t = format_value(v)
    return "(empty)" if t == "" else t


class SidePanel(QScrollArea):
    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setWidgetResizable(True)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        inner = QWidget()
        self.setWidget(inner)
        lay = QVBoxLayout(inner)
        lay.setContentsMargins(6, 6, 6, 6)

        self.cell_box = QGroupBox("Cell")
        cb = QVBoxLayout(self.cell_box)
        self.cell_label = QLabel("Select a cell")
        self.cell_label.setWordWrap(True)
        self.cell_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        cb.addWidget(self.cell_label)
        lay.addWidget(self.cell_box)

        self.flag_box = QGroupBox("Flags")
        fb = QVBoxLayout(self.flag_box)
        self.flag_list = QListWidget()
        self.flag_list.setWordWrap(True)
        self.flag_list.setMaximumHeight(150)
        self.flag_list.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        fb.addWidget(self.flag_list)
        self.flag_buttons = QGridLayout()
        fb.addLayout(self.flag_buttons)
        lay.addWidget(self.flag_box)

        self.hist_box = QGroupBox("Edit history of this cell")
        hb = QVBoxLayout(self.hist_box)
        self.hist_list = QListWidget()
        self.hist_list.setWordWrap(True)
        self.hist_list.setMaximumHeight(150)
        self.hist_list.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        hb.addWidget(self.hist_list)
        self.hist_buttons = QGridLayout()
        hb.addLayout(self.hist_buttons)
        lay.addWidget(self.hist_box)

        self.batch_box = QGroupBox("Batch")
        bb = QVBoxLayout(self.batch_box)
        self.batch_label = QLabel("No batch open")
        self.batch_label.setWordWrap(True)
        bb.addWidget(self.batch_label)
        self.decision_list = QListWidget()
        self.decision_list.setWordWrap(True)
        self.decision_list.setMaximumHeight(130)
        self.decision_list.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        bb.addWidget(self.decision_list)
        self.batch_buttons = QGridLayout()
        bb.addLayout(self.batch_buttons)
        self.permission_note = QLabel()
        self.permission_note.setWordWrap(True)
        self.permission_note.hide()
        bb.addWidget(self.permission_note)
        lay.addWidget(self.batch_box)
        lay.addStretch(1)
        self.setMinimumWidth(260)

    @staticmethod
    def _add_buttons(layout: QGridLayout, actions: Sequence[QAction]) -> None:
        """Two buttons per row, so the panel never needs to scroll sideways."""
        for i, a in enumerate(actions):
            b = QToolButton()
            b.setDefaultAction(a)
            b.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
            b.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
            layout.addWidget(b, i // 2, i % 2)

    def set_actions(self, flag_actions: Sequence[QAction], cell_actions: Sequence[QAction],
                    batch_actions: Sequence[QAction]) -> None:
        self._add_buttons(self.flag_buttons, flag_actions)
        self._add_buttons(self.hist_buttons, cell_actions)
        self._add_buttons(self.batch_buttons, batch_actions)

    # ---------------------------------------------------------------------------------------------- content
    def show_cell(self, info: CellInfo | None) -> None:
        self.flag_list.clear()
        self.hist_list.clear()
        if info is None:
            self.cell_label.setText("Select a cell")
            return
        where = f"row {info.source_row + 1 if info.source_row is not None else info.row_id}"
        if info.column is None:
            self.cell_label.setText(f"<b>{where}</b>")
        else:
            cur = escape(_value(info.current))
            text = f"<b>{escape(info.column)}</b>, {where}<br>current: <b>{cur}</b>"
            if info.edited:
                text += f"<br>original: {escape(_value(info.original))}"
            else:
                text += "<br><i>unchanged since import</i>"
            self.cell_label.setText(text)
        for f in info.flags:
            state = "" if f.status == "open" else f" — {f.status}"
            if f.status != "open" and f.resolved_by:
                state += f" by {f.resolved_by}"
                if f.resolution and f.resolution.get("reason"):
                    state += f": {f.resolution['reason']}"
            sug = f"\n  suggestion: {f.suggestion}" if f.suggestion else ""
            where_f = "" if f.column == info.column else (" (row)" if f.column is None else f" ({f.column})")
            item = QListWidgetItem(f"[{f.severity}] {f.kind}{where_f}: {f.message}{sug}{state}")
            if f.status != "open":
                fnt = item.font()
                fnt.setStrikeOut(True)
                item.setFont(fnt)
            self.flag_list.addItem(item)
        if not info.flags:
            self.flag_list.addItem("No flags on this cell")
        for e in reversed(info.history):
            why = f" — {e.reason}" if e.reason else ""
            self.hist_list.addItem(
                f"{_short_ts(e.ts)} {e.user}: {e.kind} {_value(e.old_value)} → {_value(e.new_value)}{why}")
        if not info.history:
            self.hist_list.addItem("No edits")

    def show_batch(self, batch: Any | None, decisions: Sequence[Any], permission_note: str | None = None) -> None:
        self.decision_list.clear()
        if batch is None:
            self.batch_label.setText("No batch open")
            self.permission_note.hide()
            return
        fl = ", ".join(f"{n} {s}" for s, n in sorted(batch.flags.items())) or "none"
        self.batch_label.setText(
            f"<b>Batch {batch.id}</b> — {batch.status.replace('_', ' ')}<br>{batch.rows} rows of "
            f"{escape(batch.source)}; open flags: {fl}; edited cells: {batch.edits}")
        for d in reversed(decisions):
            mark = "✔ signed" if d.signed else "unsigned"
            self.decision_list.addItem(f"{d.full_name} ({d.user}) — “{d.meaning}”\n  {_short_ts(d.ts)} UTC, {mark}")
        if not decisions:
            self.decision_list.addItem("No decisions yet")
        if permission_note:
            self.permission_note.setText(permission_note)
            self.permission_note.show()
        else:
            self.permission_note.hide()
