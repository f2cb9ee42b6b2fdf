"""Frozen entry point of the `hitl-desktop` window (PyInstaller script; see hitl_desktop.spec)."""
import os
import sys

from _frozen_boot import boot, install_startup_probe

if __name__ == "__main__":
    boot()
    if os.environ.get("HITL_STARTUP_PROBE"):
        install_startup_probe(os.environ["HITL_STARTUP_PROBE"])
    from hitl_desktop.gui.app import main

    sys.exit(main())
