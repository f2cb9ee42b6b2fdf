"""The window's secondary tabs: Audit (trail + Verify), Pipeline (stage status with reasons), Charts. The Models tab
is in models_tab.py."""
from __future__ import annotations

import json
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

AUDIT_SHOWN = 2000


def _table(headers: Sequence[str]) -> QTableWidget:
    t = QTableWidget(0, len(headers))
    t.setHorizontalHeaderLabels(list(headers))
    t.verticalHeader().hide()
    t.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
    t.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
    t.setWordWrap(False)
    t.horizontalHeader().setStretchLastSection(True)
    t.setAlternatingRowColors(True)
    return t


def _summary(payload: dict[str, Any]) -> str:
    keys = ("meaning", "row", "column", "old", "new", "reason", "path", "rows", "flag", "kind", "name", "role")
    parts = [f"{k}={payload[k]}" for k in keys if k in payload and payload[k] not in (None, "")]
    if not parts:
        parts = [f"{k}={v}" for k, v in list(payload.items())[:4]]
    return ", ".join(str(p) for p in parts)[:200]


class AuditTab(QWidget):
    verifyRequested = Signal()

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        lay = QVBoxLayout(self)
        top = QHBoxLayout()
        self.verify_button = QPushButton("Verify trail and signatures")
        self.verify_button.setToolTip("Check the hash chain of every audit entry and every signed decision")
        self.verify_button.clicked.connect(self.verifyRequested)
        top.addWidget(self.verify_button)
        self.result = QLabel("Not verified in this session.")
        self.result.setWordWrap(True)
        top.addWidget(self.result, 1)
        lay.addLayout(top)
        self.count = QLabel("")
        lay.addWidget(self.count)
        self.table = _table(["#", "Time (UTC)", "User", "Action", "Target", "Details"])
        lay.addWidget(self.table, 1)

    def set_entries(self, entries: Sequence[Any], total: int) -> None:
        t = self.table
        t.setRowCount(len(entries))
        for i, e in enumerate(entries):
            vals = [str(e.id), e.ts[:19].replace("T", " "), e.user, e.action, e.target or "", _summary(e.payload)]
            for c, v in enumerate(vals):
                it = QTableWidgetItem(v)
                if c == 5:
                    it.setToolTip(json.dumps(e.payload, indent=1, ensure_ascii=False)[:2000])
                t.setItem(i, c, it)
        t.resizeColumnsToContents() if len(entries) < 300 else None
        shown = f"newest {len(entries):,} of {total:,}" if total > len(entries) else f"{total:,}"
        self.count.setText(f"Audit entries: {shown}")

    def set_result(self, ok: bool | None, message: str) -> None:
        if ok is None:
            self.result.setStyleSheet("")
            self.result.setText(message)
            return
        color = "#1b5e20" if ok else "#b3261e"
        self.result.setStyleSheet(f"color: white; background: {color}; padding: 3px;")
        self.result.setText(("✔ " if ok else "✘ ") + message)


class PipelineTab(QWidget):
    runRequested = Signal()

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        lay = QVBoxLayout(self)
        top = QHBoxLayout()
        self.run_button = QPushButton("Run what is stale")
        self.run_button.clicked.connect(self.runRequested)
        top.addWidget(self.run_button)
        self.note = QLabel("")
        self.note.setWordWrap(True)
        top.addWidget(self.note, 1)
        lay.addLayout(top)
        self.table = _table(["Pipeline", "Stage", "State", "Why", "Last run"])
        lay.addWidget(self.table, 1)
        self.runs = _table(["Run", "Who", "Started (UTC)", "Outcome", "Detail"])
        self.runs.setMaximumHeight(180)
        lay.addWidget(QLabel("Recent runs"))
        lay.addWidget(self.runs)

    def set_unavailable(self, reason: str) -> None:
        self.note.setText(reason)
        self.run_button.setEnabled(False)
        self.run_button.setToolTip(reason)

    def set_status(self, rows: Sequence[Sequence[str]]) -> None:
        colors = {"fresh": "#2e7d32", "stale": "#ef6c00", "failed": "#c62828", "never run": "#757575"}
        self.table.setRowCount(len(rows))
        for i, r in enumerate(rows):
            for c, v in enumerate(r):
                it = QTableWidgetItem(str(v))
                if c == 2 and str(v) in colors:
                    it.setForeground(QColor(colors[str(v)]))
                self.table.setItem(i, c, it)
        self.table.resizeColumnsToContents()
        self.table.horizontalHeader().setStretchLastSection(True)

    def set_runs(self, rows: Sequence[Sequence[str]]) -> None:
        self.runs.setRowCount(len(rows))
        for i, r in enumerate(rows):
            for c, v in enumerate(r):
                self.runs.setItem(i, c, QTableWidgetItem(str(v)))


# --- charts ---------------------------------------------------------------------------------------------------


def chart_data(batch_df: pd.DataFrame | None, types: dict[str, str], label: str | None,
               batch_flags: Sequence[Any], project_flag_kinds: dict[str, int],
               project_labels: pd.Series | None, column: str | None) -> dict[str, Any]:
    """Numbers for the charts (plain pandas, no Qt); computed off the GUI thread for big projects."""
    out: dict[str, Any] = {}
    if batch_df is not None and len(batch_df.columns):
        out["missing"] = {str(c): int(batch_df[c].isna().sum()) for c in batch_df.columns}
        if column and column in batch_df:
            s = batch_df[column]
            if types.get(column) in ("integer", "float"):
                vals = pd.to_numeric(s.astype("string").str.strip(), errors="coerce").to_numpy(dtype=float, na_value=np.nan)
                vals = vals[np.isfinite(vals)]
                out["dist"] = ("hist", column, vals)
            else:
                vc = s.astype("string").fillna("(missing)").value_counts().head(12)
                out["dist"] = ("bar", column, vc)
        if label and label in batch_df:
            out["balance_batch"] = batch_df[label].astype("string").fillna("(missing)").value_counts().head(12)
    if project_labels is not None:
        out["balance_project"] = project_labels.astype("string").fillna("(missing)").value_counts().head(12)
    kinds: dict[str, int] = {}
    for f in batch_flags:
        if f.status == "open":
            kinds[f.kind] = kinds.get(f.kind, 0) + 1
    out["flags_batch"] = kinds
    out["flags_project"] = dict(project_flag_kinds)
    return out


class ChartsTab(QWidget):
    """Matplotlib (QtAgg) figure following the window palette; drawn only when visible and data changed."""

    columnChanged = Signal(str)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        lay = QVBoxLayout(self)
        top = QHBoxLayout()
        top.addWidget(QLabel("Distribution of column:"))
        self.column = QComboBox()
        self.column.currentTextChanged.connect(self.columnChanged)
        top.addWidget(self.column)
        top.addStretch(1)
        self.note = QLabel("")
        top.addWidget(self.note)
        lay.addLayout(top)
        self._lay = lay
        self.canvas = None
        self.figure = None

    def _ensure_canvas(self) -> None:
        if self.canvas is not None:
            return
        import matplotlib

        matplotlib.use("QtAgg", force=False)
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=(8, 6), layout="constrained")
        self.canvas = FigureCanvasQTAgg(self.figure)
        self._lay.addWidget(self.canvas, 1)

    def set_columns(self, columns: Sequence[str], current: str | None = None) -> None:
        self.column.blockSignals(True)
        self.column.clear()
        self.column.addItems(list(columns))
        if current and current in columns:
            self.column.setCurrentText(current)
        self.column.blockSignals(False)

    def draw(self, data: dict[str, Any]) -> None:
        self._ensure_canvas()
        pal = self.palette()
        bg = pal.color(QPalette.ColorRole.Window).name()
        fg = pal.color(QPalette.ColorRole.WindowText).name()
        accent = pal.color(QPalette.ColorRole.Highlight).name()
        fig = self.figure
        fig.clear()
        fig.set_facecolor(bg)
        axes = fig.subplots(2, 2)

        def style(ax, title):
            ax.set_facecolor(bg)
            ax.set_title(title, color=fg, fontsize=9)
            ax.tick_params(colors=fg, labelsize=7)
            for s in ax.spines.values():
                s.set_color(fg)
                s.set_alpha(0.3)

        def barh(ax, labels, values, color, title, empty):
            style(ax, title)
            if not len(values) or not any(values):
                ax.text(0.5, 0.5, empty, color=fg, ha="center", va="center", transform=ax.transAxes, fontsize=8)
                ax.set_xticks([])
                ax.set_yticks([])
                return
            y = np.arange(len(values))
            ax.barh(y, values, color=color)
            ax.set_yticks(y, [str(x)[:18] for x in labels])
            ax.invert_yaxis()

        miss = data.get("missing", {})
        barh(axes[0, 0], list(miss), list(miss.values()), accent, "Missing values per column (this batch)",
             "no missing values in this batch" if miss else "no batch open")
        dist = data.get("dist")
        ax = axes[0, 1]
        if dist and dist[0] == "hist" and len(dist[2]):
            style(ax, f"Distribution of {dist[1]} (this batch)")
            ax.hist(dist[2], bins=30, color=accent)
        elif dist and dist[0] == "bar":
            vc = dist[2]
            barh(ax, list(vc.index), list(vc.values), accent, f"Values of {dist[1]} (this batch)", "no values")
        else:
            barh(ax, [], [], accent, "Distribution", "choose a column")
        bp, bb = data.get("balance_project"), data.get("balance_batch")
        ax = axes[1, 0]
        if bp is not None and len(bp):
            style(ax, "Class balance (project / this batch, share)")
            labels = list(bp.index)
            y = np.arange(len(labels))
            pshare = bp.to_numpy() / max(bp.sum(), 1)
            ax.barh(y - 0.2, pshare, height=0.4, color=accent, label="project")
            if bb is not None and len(bb):
                bshare = bb.reindex(labels).fillna(0).to_numpy() / max(bb.sum(), 1)
                ax.barh(y + 0.2, bshare, height=0.4, color="#9e9e9e", label="batch")
            ax.set_yticks(y, [str(x)[:18] for x in labels])
            ax.invert_yaxis()
            leg = ax.legend(fontsize=7, facecolor=bg, edgecolor=fg, labelcolor=fg)
            leg.get_frame().set_alpha(0.6)
        else:
            barh(ax, [], [], accent, "Class balance", "no label column chosen at import")
        fb, fp = data.get("flags_batch", {}), data.get("flags_project", {})
        kinds = sorted(set(fb) | set(fp), key=lambda k: -fp.get(k, 0))
        ax = axes[1, 1]
        if kinds:
            style(ax, "Open flags by kind (project / this batch)")
            y = np.arange(len(kinds))
            ax.barh(y - 0.2, [fp.get(k, 0) for k in kinds], height=0.4, color="#ef6c00", label="project")
            ax.barh(y + 0.2, [fb.get(k, 0) for k in kinds], height=0.4, color="#9e9e9e", label="batch")
            ax.set_yticks(y, kinds)
            ax.invert_yaxis()
            ax.legend(fontsize=7, facecolor=bg, edgecolor=fg, labelcolor=fg)
        else:
            barh(ax, [], [], accent, "Open flags by kind", "no open flags")
        self.canvas.draw_idle()


def call_or(fn: Callable[[], Any], default: Any) -> Any:
    try:
        return fn()
    except Exception:  # noqa: BLE001
        return default
