"""Sub-command modules. Each exposes `register(subparsers)`; list new modules here."""
from __future__ import annotations

import importlib

MODULES = ["core_cmds", "identity_cmds", "pipeline_cmds", "bundle_cmds", "checks_cmds", "models_cmds"]

REGISTRARS = [importlib.import_module(f"{__package__}.{m}").register for m in MODULES]
