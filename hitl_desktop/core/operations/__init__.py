"""Every state change a person can make, one function each: the window and the CLI call these and nothing else."""
from __future__ import annotations

from .changes import Changes

__all__ = ["Changes"]
