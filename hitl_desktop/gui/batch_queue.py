"""The batch queue: every batch with status, rows, open flags by severity, assignee and last decision, riskiest
first (the order `core.batches.list_batches` returns), filterable by status."""
from __future__ import annotations

from typing import Any, Sequence

from PySide6.QtCore import QAbstractTableModel, QModelIndex, Qt, Signal
from PySide6.QtGui import QBrush
from PySide6.QtWidgets import QAbstractItemView, QComboBox, QHBoxLayout, QHeaderView, QLabel, QTableView, QVBoxLayout, QWidget

from .table_model import severity_colors

_DISPLAY = int(Qt.ItemDataRole.DisplayRole)
_TOOLTIP = int(Qt.ItemDataRole.ToolTipRole)
_BACKGROUND = int(Qt.ItemDataRole.BackgroundRole)
_ALIGN = int(Qt.ItemDataRole.TextAlignmentRole)
_USER = int(Qt.ItemDataRole.UserRole)

STATUS_FILTERS = [("All batches", None), ("To review", "open"), ("Queued", "queued"), ("In review", "in_review"),
                  ("Approved", "approved"), ("Rejected", "rejected")]


def flags_text(flags: dict[str, int]) -> str:
    parts = [f"{flags[s]}{s[0].upper()}" for s in ("high", "medium", "low") if flags.get(s)]
    return " ".join(parts)


def decision_text(d: dict[str, Any] | None) -> str:
    if not d:
        return ""
    mark = "✔ signed" if d.get("signed") else "unsigned"
    return f"{d.get('full_name') or d.get('user')}: {d.get('meaning')} ({mark}, {str(d.get('ts', ''))[:16].replace('T', ' ')} UTC)"


class BatchQueueModel(QAbstractTableModel):
    HEADERS = ["Batch", "Status", "Rows", "Flags", "Edits", "Who", "Decision"]

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._all: list[Any] = []
        self._rows: list[Any] = []
        self._filter: str | None = None
        self._colors = severity_colors()

    def set_batches(self, batches: Sequence[Any]) -> None:
        self.beginResetModel()
        self._all = list(batches)
        self._apply()
        self.endResetModel()

    def set_filter(self, status: str | None) -> None:
        self.beginResetModel()
        self._filter = status
        self._apply()
        self.endResetModel()

    def _apply(self) -> None:
        f = self._filter
        if f is None:
            self._rows = list(self._all)
        elif f == "open":
            self._rows = [b for b in self._all if b.status in ("queued", "in_review")]
        else:
            self._rows = [b for b in self._all if b.status == f]

    def batch_at(self, row: int) -> Any:
        return self._rows[row]

    def row_of(self, batch_id: int) -> int:
        for i, b in enumerate(self._rows):
            if b.id == batch_id:
                return i
        return -1

    def batch_ids(self) -> list[int]:
        return [b.id for b in self._rows]

    def all_batches(self) -> list[Any]:
        return list(self._all)

    def rowCount(self, parent=QModelIndex()) -> int:  # noqa: N802
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent=QModelIndex()) -> int:  # noqa: N802
        return 0 if parent.isValid() else len(self.HEADERS)

    def headerData(self, section, orientation, role=_DISPLAY):  # noqa: N802
        if orientation == Qt.Orientation.Horizontal and role == _DISPLAY and 0 <= section < len(self.HEADERS):
            return self.HEADERS[section]
        return None

    def data(self, index, role=_DISPLAY):
        if role not in (_DISPLAY, _TOOLTIP, _BACKGROUND, _ALIGN, _USER) or not index.isValid():
            return None
        b = self._rows[index.row()]
        c = index.column()
        if role == _USER:
            return b.id
        if role == _ALIGN:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter) if c in (2, 4) else None
        if role == _BACKGROUND:
            if c == 3 and b.flags:
                level = 3 if b.flags.get("high") else 2 if b.flags.get("medium") else 1
                return QBrush(self._colors[level])
            return None
        if role == _TOOLTIP:
            if c == 6 and b.decision:
                return decision_text(b.decision)
            if c == 3:
                return f"risk {b.risk:.0f} (open flags weighted high 3, medium 2, low 1)"
            return f"batch {b.id}: {b.source}, data rows {b.start_row + 1}–{b.start_row + b.rows}"
        if c == 0:
            return f"#{b.id} · {b.start_row + 1}–{b.start_row + b.rows}"
        if c == 1:
            return b.status.replace("_", " ")
        if c == 2:
            return str(b.rows)
        if c == 3:
            return flags_text(b.flags) or "—"
        if c == 4:
            return str(b.edits) if b.edits else ""
        if c == 5:
            return b.assignee or ""
        if c == 6:
            d = b.decision
            if not d:
                return ""
            return f"{'✔' if d.get('signed') else '·'} {d.get('full_name') or d.get('user')}: {d.get('meaning')}"
        return None


class BatchQueue(QWidget):
    """Filter + table; emits :attr:`batchActivated` with the batch id the user picked."""

    batchActivated = Signal(int)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        top = QHBoxLayout()
        title = QLabel("<b>Batches</b> (riskiest first)")
        top.addWidget(title)
        top.addStretch(1)
        self.filter = QComboBox()
        for label, value in STATUS_FILTERS:
            self.filter.addItem(label, value)
        self.filter.setToolTip("Show batches with this status")
        top.addWidget(self.filter)
        lay.addLayout(top)
        self.model = BatchQueueModel(self)
        self.view = QTableView()
        self.view.setModel(self.model)
        self.view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.view.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.view.verticalHeader().hide()
        self.view.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        self.view.verticalHeader().setDefaultSectionSize(self.fontMetrics().height() + 8)
        self.view.setWordWrap(False)
        self.view.setAlternatingRowColors(True)
        hh = self.view.horizontalHeader()
        hh.setStretchLastSection(True)
        avg = self.fontMetrics().averageCharWidth()
        for col, chars in enumerate((17, 8, 5, 11, 5, 6)):
            hh.resizeSection(col, avg * chars + 12)
        lay.addWidget(self.view)
        self.filter.currentIndexChanged.connect(lambda _i: self.model.set_filter(self.filter.currentData()))
        self.view.selectionModel().currentRowChanged.connect(self._current_changed)
        self._suspend = False

    def set_batches(self, batches: Sequence[Any], current: int | None = None) -> None:
        self._suspend = True
        try:
            self.model.set_batches(batches)
            if current is not None:
                self.select(current, emit=False)
        finally:
            self._suspend = False

    def select(self, batch_id: int, emit: bool = True) -> bool:
        row = self.model.row_of(batch_id)
        if row < 0:
            return False
        old = self._suspend
        self._suspend = not emit
        try:
            self.view.setCurrentIndex(self.model.index(row, 0))
            self.view.scrollTo(self.model.index(row, 0))
        finally:
            self._suspend = old
        return True

    def _current_changed(self, cur: QModelIndex, _prev: QModelIndex) -> None:
        if self._suspend or not cur.isValid():
            return
        self.batchActivated.emit(self.model.batch_at(cur.row()).id)

    def next_batch_id(self, current: int | None, step: int = 1) -> int | None:
        ids = self.model.batch_ids()
        if not ids:
            return None
        if current not in ids:
            return ids[0]
        i = ids.index(current) + step
        return ids[i] if 0 <= i < len(ids) else None
