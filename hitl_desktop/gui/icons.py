"""The application icon: the shipped SVG/PNGs in resources/icons, or the same drawing made on the fly."""
from __future__ import annotations

from importlib import resources

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QIcon, QPainter, QPainterPath, QPen, QPixmap

SIZES = (16, 24, 32, 48, 64, 128, 256, 512)


def paint_icon(p: QPainter, size: int) -> None:
    """A rounded blue tile with a 3x3 table grid and a check mark: reviewed data."""
    s = float(size)
    p.setRenderHint(QPainter.RenderHint.Antialiasing)
    p.setPen(Qt.PenStyle.NoPen)
    p.setBrush(QColor("#1e5aa8"))
    p.drawRoundedRect(QRectF(0.04 * s, 0.04 * s, 0.92 * s, 0.92 * s), 0.2 * s, 0.2 * s)
    p.setBrush(QColor("#ffffff"))
    x0, y0, cell, gap = 0.18 * s, 0.2 * s, 0.17 * s, 0.035 * s
    for r in range(3):
        for c in range(3):
            color = QColor("#ffffff") if (r, c) != (1, 2) else QColor("#ffb300")
            p.setBrush(color)
            p.drawRoundedRect(QRectF(x0 + c * (cell + gap), y0 + r * (cell * 0.62 + gap), cell, cell * 0.62),
                              0.02 * s, 0.02 * s)
    pen = QPen(QColor("#43d17a"), max(1.5, 0.09 * s))
    pen.setCapStyle(Qt.PenCapStyle.RoundCap)
    pen.setJoinStyle(Qt.PenJoinStyle.RoundJoin)
    p.setPen(pen)
    p.setBrush(Qt.BrushStyle.NoBrush)
    path = QPainterPath(QPointF(0.36 * s, 0.70 * s))
    path.lineTo(QPointF(0.48 * s, 0.81 * s))
    path.lineTo(QPointF(0.76 * s, 0.56 * s))
    p.drawPath(path)


def render_pixmap(size: int) -> QPixmap:
    pm = QPixmap(size, size)
    pm.fill(Qt.GlobalColor.transparent)
    p = QPainter(pm)
    paint_icon(p, size)
    p.end()
    return pm


_icon: QIcon | None = None


def app_icon() -> QIcon:
    global _icon
    if _icon is not None:
        return _icon
    icon = QIcon()
    try:
        base = resources.files("hitl_desktop.resources").joinpath("icons")
        for n in SIZES:
            ref = base.joinpath(f"hitl-desktop-{n}.png")
            if ref.is_file():
                pm = QPixmap()
                pm.loadFromData(ref.read_bytes())
                icon.addPixmap(pm)
    except (ModuleNotFoundError, FileNotFoundError, OSError):
        pass
    if icon.isNull():
        for n in (16, 32, 64, 256):
            icon.addPixmap(render_pixmap(n))
    _icon = icon
    return icon
