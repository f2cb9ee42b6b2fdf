"""`python -m hitl_desktop` opens the review window (same arguments as `hitl-desktop`)."""
from hitl_desktop.gui.app import main

raise SystemExit(main())
