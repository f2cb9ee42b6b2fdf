"""`python -m hitl_desktop.tools.make_icons`: entry point kept here for discoverability; the Qt code lives in
hitl_desktop.gui.make_icons (the only package allowed to import Qt)."""
from __future__ import annotations

import sys

from hitl_desktop.gui.make_icons import main

if __name__ == "__main__":
    sys.exit(main())
