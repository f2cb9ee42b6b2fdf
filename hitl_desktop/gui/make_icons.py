"""Regenerate resources/icons (SVG + PNG sizes) from the QPainter drawing in hitl_desktop.gui.icons.

    python -m hitl_desktop.tools.make_icons [OUT_DIR]
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def main(argv: list[str] | None = None) -> int:
    from PySide6.QtCore import QRect, QSize
    from PySide6.QtGui import QGuiApplication, QPainter
    from PySide6.QtSvg import QSvgGenerator

    from hitl_desktop.gui.icons import SIZES, paint_icon, render_pixmap

    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0]) if args else Path(__file__).resolve().parents[2] / "resources" / "icons"
    out.mkdir(parents=True, exist_ok=True)
    app = QGuiApplication.instance() or QGuiApplication([])
    for n in SIZES:
        render_pixmap(n).save(str(out / f"hitl-desktop-{n}.png"))
    gen = QSvgGenerator()
    gen.setFileName(str(out / "hitl-desktop.svg"))
    gen.setSize(QSize(256, 256))
    gen.setViewBox(QRect(0, 0, 256, 256))
    gen.setTitle("hitl-desktop")
    p = QPainter(gen)
    paint_icon(p, 256)
    p.end()
    print(f"wrote {len(SIZES)} PNGs and hitl-desktop.svg to {out}")
    del app
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
