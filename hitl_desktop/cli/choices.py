"""Argument choices the parser needs, kept here so building the parser imports no core module.

The core modules that own these lists import pandas/SQLAlchemy at module level; tests/test_cli_startup.py asserts
each copy equals the core's list, so they cannot drift apart.
"""
from __future__ import annotations

#: hitl_desktop.core.batches.STATUSES
BATCH_STATUSES = ("queued", "in_review", "approved", "rejected")
#: hitl_desktop.core.bundle.TAKES
BUNDLE_TAKES = ("home", "away")
#: hitl_desktop.core.identity.ROLES
ROLES = ("reviewer", "approver", "admin")
#: hitl_desktop.core.pipeline.parallel.BACKENDS
PARALLEL_BACKENDS = ("loky", "threading", "sequential", "dask")
STAGE_PATHS_KEY = "settings.stage_paths"  #: hitl_desktop.core.pipeline.registry.STAGE_PATHS_KEY
