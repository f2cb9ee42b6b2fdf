"""The review table's view: BatchTableView plus one repaint economy for keyboard review.

`QAbstractItemView.dataChanged` repaints the whole viewport for any change wider than one cell. The model
reports a flag change as a one-row range, so each accept or dismiss would repaint every visible cell; here a
one-row range repaints only that row's strip (its editors, if any, are refreshed by the base class as usual).
"""
from __future__ import annotations

from PySide6.QtCore import QRect, Qt
from PySide6.QtWidgets import QAbstractScrollArea

from .batch_table import BatchTableView


class ReviewTableView(BatchTableView):
    def dataChanged(self, top_left, bottom_right, roles=()):  # noqa: N802 (Qt API)
        if (top_left.isValid() and bottom_right.isValid() and top_left.row() == bottom_right.row()
                and top_left != bottom_right and self.isVisible() and self.indexWidget(top_left) is None
                and self.state() != self.State.EditingState):
            y = self.rowViewportPosition(top_left.row())
            if y >= 0 or y + self.rowHeight(top_left.row()) > 0:
                self.viewport().update(QRect(0, y, self.viewport().width(), self.rowHeight(top_left.row())))
            return
        super().dataChanged(top_left, bottom_right, roles)

    def focusInEvent(self, event):  # noqa: N802 (Qt API)
        """Repaint only the current cell on focus-in (its focus frame), not the whole viewport.

        QAbstractItemView.focusInEvent updates the entire viewport; after every committed edit the focus returns
        from the editor to the view, which cost a second full repaint per keyboard edit. Selection colours follow
        the window's activation, not the view's focus, so nothing else needs repainting.
        """
        current = self.currentIndex()
        if not current.isValid():
            super().focusInEvent(event)
            return
        QAbstractScrollArea.focusInEvent(self, event)
        self.setAttribute(Qt.WidgetAttribute.WA_InputMethodEnabled,
                          bool(current.flags() & Qt.ItemFlag.ItemIsEditable))
        self.viewport().update(self.visualRect(current))
