"""The domain (hitl_desktop.core) and the CLI run headless: importing them must never pull in Qt."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import hitl_desktop

PKG = Path(hitl_desktop.__file__).parent

BLOCKER = textwrap.dedent("""
    import importlib, pkgutil, sys
    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split('.')[0] in ('PySide6', 'shiboken6', 'PyQt5', 'PyQt6', 'qtpy'):
                raise ImportError('Qt is blocked in the core: ' + name)
            return None
    sys.meta_path.insert(0, Block())
    import hitl_desktop.core, hitl_desktop.cli.main
    for pkg in ('hitl_desktop.core', 'hitl_desktop.cli'):
        mod = importlib.import_module(pkg)
        for info in pkgutil.walk_packages(mod.__path__, pkg + '.'):
            if '.migrations' in info.name:
                continue
            importlib.import_module(info.name)
    hitl_desktop.cli.main.build_parser()
    print('OK')
""")


def test_core_and_cli_import_with_qt_blocked():
    out = subprocess.run([sys.executable, "-c", BLOCKER], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "OK"


def test_no_qt_import_statements_outside_gui():
    offenders = []
    for f in PKG.rglob("*.py"):
        rel = f.relative_to(PKG).parts
        if rel[0] == "gui":
            continue
        for line in f.read_text(encoding="utf-8").splitlines():
            s = line.strip()
            if s.startswith(("import PySide6", "from PySide6", "import shiboken6", "from shiboken6")):
                offenders.append(f"{'/'.join(rel)}: {s}")
    assert not offenders, offenders
