"""Frozen entry point of the `hitl` command (PyInstaller script; see hitl_desktop.spec)."""
import sys

from _frozen_boot import boot

if __name__ == "__main__":
    boot()
    from hitl_desktop.cli.main import main

    sys.exit(main())
