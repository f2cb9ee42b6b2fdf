"""Table view benchmark (offscreen): first paint of 1,000,000 x 20 and scroll-repaint cost vs a trivial model.

    /work/venv/bin/python bench/bench_table_view.py [--rows 1000000] [--positions 50]

(a) first paint: BatchTableModel construction + setModel + show + first full repaint, with the frame already in
    memory (target < 300 ms).
(b) scroll: jump to random (row, column) positions and force ``viewport().repaint()``; mean per position, compared
    with the same view over a trivial model that returns one constant string for every DisplayRole cell
    (target <= 1.25x). Both run in a 1200x800 window. Reported twice: the viewport alone (as specified) and
    viewport plus headers (vertical header labels come from Python in our model, from C++ in the trivial one).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np  # noqa: E402
from PySide6.QtCore import QAbstractTableModel, QModelIndex, Qt  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from datagen import make_frame  # noqa: E402

from hitl_desktop.gui.batch_table import BatchTableView  # noqa: E402
from hitl_desktop.gui.table_model import BatchTableModel  # noqa: E402

_DISPLAY = int(Qt.ItemDataRole.DisplayRole)


class TrivialModel(QAbstractTableModel):
    def __init__(self, rows: int, cols: int):
        super().__init__()
        self._rows, self._cols = rows, cols

    def rowCount(self, parent=QModelIndex()):  # noqa: N802
        return 0 if parent.isValid() else self._rows

    def columnCount(self, parent=QModelIndex()):  # noqa: N802
        return 0 if parent.isValid() else self._cols

    def data(self, index, role=_DISPLAY):
        return "12.345" if role == _DISPLAY else None


def make_view(model) -> BatchTableView:
    view = BatchTableView(autosize=False)  # same column widths for both models
    view.setModel(model)
    view.resize(1200, 800)
    return view


def scroll_cost(app, view, positions, *, headers: bool) -> float:
    vs, hs = view.verticalScrollBar(), view.horizontalScrollBar()
    times = []
    for v, h in positions:
        t0 = time.perf_counter()
        vs.setValue(int(v * vs.maximum()))
        hs.setValue(int(h * hs.maximum()))
        view.viewport().repaint()
        if headers:
            view.verticalHeader().viewport().repaint()
            view.horizontalHeader().viewport().repaint()
        times.append(time.perf_counter() - t0)
        app.processEvents()  # drop pending update requests outside the timed region
    return statistics.fmean(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--positions", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds; the median round is reported")
    args = ap.parse_args()
    app = QApplication.instance() or QApplication([])

    t = time.perf_counter()
    df = make_frame(args.rows)
    print(f"data: {args.rows:,} x {df.shape[1]} generated in {time.perf_counter() - t:.2f} s (not counted)")

    # (a) first paint ---------------------------------------------------------------------------------------
    t0 = time.perf_counter()
    model = BatchTableModel(df)
    t1 = time.perf_counter()
    view = make_view(model)
    view.show()
    t2 = time.perf_counter()
    view.repaint()  # whole widget: headers and viewport
    t3 = time.perf_counter()
    first = t3 - t0
    print(
        f"(a) first paint 1,000,000 x 20: {first * 1000:.1f} ms "
        f"(model {1000 * (t1 - t0):.1f} + setModel/show {1000 * (t2 - t1):.1f} + paint {1000 * (t3 - t2):.1f})"
        f"  target < 300 ms -> {'OK' if first < 0.3 else 'MISSED'}"
    )

    # (b) scrolling ------------------------------------------------------------------------------------------
    base_view = make_view(TrivialModel(*df.shape))
    base_view.show()
    app.processEvents()
    rng = np.random.default_rng(42)
    for headers in (False, True):
        ours, base = [], []
        for _ in range(args.rounds):
            positions = rng.random((args.positions, 2))
            base.append(scroll_cost(app, base_view, positions, headers=headers))
            ours.append(scroll_cost(app, view, positions, headers=headers))
        o, b = statistics.median(ours), statistics.median(base)
        label = "viewport + headers" if headers else "viewport        "
        print(
            f"(b) scroll+repaint {label}: model {o * 1000:.2f} ms, trivial baseline {b * 1000:.2f} ms, "
            f"ratio {o / b:.2f}x  target <= 1.25x -> {'OK' if o / b <= 1.25 else 'MISSED'}"
        )


if __name__ == "__main__":
    main()
