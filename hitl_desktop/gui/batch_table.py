"""QTableView configured for big frames (a 500-row batch up to a 1,000,000-row source).

* Fixed row heights (``QHeaderView.Fixed`` + a default section size from the font metrics): the view never asks
  the model for row size hints, which is what makes a million rows cheap.
* Per-pixel scrolling, no word wrap, eliding long text.
* No ``resizeColumnsToContents`` over the whole table: :meth:`BatchTableView.autosize_columns` measures only the
  rows on screen and stops after a time budget.
"""
from __future__ import annotations

import time

from PySide6.QtCore import QEvent, QTimer, Qt
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QTableView

__all__ = ["BatchTableView"]

_DISPLAY = int(Qt.ItemDataRole.DisplayRole)


class BatchTableView(QTableView):
    """Table view for :class:`hitl_desktop.gui.table_model.BatchTableModel` (works with any table model)."""

    #: Default width of a column, in average characters, before autosizing.
    DEFAULT_COLUMN_CHARS = 11
    #: Autosized columns are kept between these widths, in average characters.
    MIN_COLUMN_CHARS = 4
    MAX_COLUMN_CHARS = 40

    def __init__(self, parent=None, *, autosize: bool = True, autosize_budget_ms: float = 30.0):
        super().__init__(parent)
        self._autosize = autosize
        self._autosize_budget_ms = autosize_budget_ms
        self._autosize_pending = False

        self.setWordWrap(False)
        self.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.setVerticalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        self.setHorizontalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectItems)
        self.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.setEditTriggers(
            QAbstractItemView.EditTrigger.DoubleClicked
            | QAbstractItemView.EditTrigger.EditKeyPressed
            | QAbstractItemView.EditTrigger.AnyKeyPressed
        )
        self.setCornerButtonEnabled(True)

        vh = self.verticalHeader()
        vh.setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        vh.setDefaultAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        hh = self.horizontalHeader()
        hh.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        hh.setStretchLastSection(False)
        hh.setHighlightSections(True)
        hh.setSortIndicatorClearable(True)  # third click on a header goes back to frame order
        hh.setSortIndicator(-1, Qt.SortOrder.AscendingOrder)
        self.setSortingEnabled(True)
        self._apply_metrics()

    # ------------------------------------------------------------------------------------------------ sizes
    def row_height(self) -> int:
        return self.verticalHeader().defaultSectionSize()

    def _apply_metrics(self) -> None:
        fm = self.fontMetrics()
        h = fm.height() + 6  # text plus the delegate's margins
        vh = self.verticalHeader()
        vh.setMinimumSectionSize(min(vh.minimumSectionSize(), h))
        vh.setDefaultSectionSize(h)
        hh = self.horizontalHeader()
        avg = max(fm.averageCharWidth(), 1)
        hh.setMinimumSectionSize(avg * self.MIN_COLUMN_CHARS)
        hh.setDefaultSectionSize(avg * self.DEFAULT_COLUMN_CHARS)

    # ------------------------------------------------------------------------------------------------ model
    def setModel(self, model) -> None:  # noqa: N802 (Qt API)
        old = self.model()
        if old is not None:
            try:
                old.modelReset.disconnect(self._schedule_autosize)
            except (RuntimeError, TypeError):
                pass
        # Keep the header's sort indicator from sorting a freshly set model.
        self.horizontalHeader().setSortIndicator(-1, Qt.SortOrder.AscendingOrder)
        super().setModel(model)
        if model is None:
            return
        if hasattr(model, "set_palette"):
            model.set_palette(self.palette())
        model.modelReset.connect(self._schedule_autosize)
        self._schedule_autosize()

    def changeEvent(self, event) -> None:  # noqa: N802 (Qt API)
        t = event.type()
        if t in (QEvent.Type.PaletteChange, QEvent.Type.StyleChange):
            m = self.model()
            if m is not None and hasattr(m, "set_palette"):
                m.set_palette(self.palette())
        if t == QEvent.Type.FontChange:
            self._apply_metrics()
        super().changeEvent(event)

    # --------------------------------------------------------------------------------------------- autosize
    def _schedule_autosize(self) -> None:
        if self._autosize and not self._autosize_pending:
            self._autosize_pending = True
            QTimer.singleShot(0, self._run_autosize)

    def _run_autosize(self) -> None:
        self._autosize_pending = False
        if self.model() is not None:
            self.autosize_columns()

    def visible_row_range(self) -> tuple[int, int]:
        """(first, last) view rows at least partly on screen; (-1, -1) when empty."""
        m = self.model()
        if m is None or m.rowCount() == 0:
            return -1, -1
        first = self.rowAt(0)
        last = self.rowAt(self.viewport().height() - 1)
        if first < 0:
            first = 0
        if last < 0:
            rows_on_screen = max(1, self.viewport().height() // max(self.row_height(), 1) + 1)
            last = min(m.rowCount() - 1, first + rows_on_screen)
        return first, last

    def autosize_columns(self, columns=None, budget_ms: float | None = None) -> int:
        """Fit columns to the header and the rows on screen only, within a time budget.

        Returns how many columns were sized; the rest keep their width. Never touches rows off screen, so the
        cost does not grow with the table.
        """
        m = self.model()
        if m is None:
            return 0
        budget = (self._autosize_budget_ms if budget_ms is None else budget_ms) / 1000.0
        deadline = time.perf_counter() + budget
        first, last = self.visible_row_range()
        if first < 0:  # nothing on screen yet: fit the first screenful
            first, last = 0, min(m.rowCount(), max(1, self.viewport().height() // max(self.row_height(), 1))) - 1
        fm = self.fontMetrics()
        hfm = self.horizontalHeader().fontMetrics()
        avg = max(fm.averageCharWidth(), 1)
        lo, hi = avg * self.MIN_COLUMN_CHARS, avg * self.MAX_COLUMN_CHARS
        pad = 2 * (self.style().pixelMetric(self.style().PixelMetric.PM_FocusFrameHMargin, None, self) + 1) + 6
        header_pad = 24  # room for the sort indicator
        if columns is None:
            columns = range(m.columnCount())
        done = 0
        hh = self.horizontalHeader()
        for c in columns:
            if hh.isSectionHidden(c):
                continue
            name = m.headerData(c, Qt.Orientation.Horizontal, _DISPLAY)
            w = hfm.horizontalAdvance(str(name or "")) + header_pad
            for r in range(first, last + 1):
                text = m.data(m.index(r, c), _DISPLAY)
                if text:
                    w = max(w, fm.horizontalAdvance(text) + pad)
            hh.resizeSection(c, max(lo, min(hi, w)))
            done += 1
            if time.perf_counter() > deadline:
                break
        return done
