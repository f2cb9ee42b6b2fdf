"""hitl-desktop: human-in-the-loop review of machine-learning training data."""
from __future__ import annotations

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("hitl-desktop")
except _metadata.PackageNotFoundError:  # running from a source tree or a frozen build without metadata
    from hitl_desktop._version_fallback import VERSION as __version__  # noqa: F401
