"""`python -m hitl_desktop.tools.screenshot`: entry point kept here for discoverability; the Qt code lives in
hitl_desktop.gui.screenshot (the only package allowed to import Qt)."""
from __future__ import annotations

import sys

from hitl_desktop.gui.screenshot import main

if __name__ == "__main__":
    sys.exit(main())
