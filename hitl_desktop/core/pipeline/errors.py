"""Pipeline errors: each a one-line `HitlError` the CLI prints and the window shows."""
from __future__ import annotations

from ..errors import HitlError, NotFound


class PipelineError(HitlError):
    """A bad pipeline definition or request (unknown stage/pipeline, bad parameter, cycle)."""


class UnknownStage(PipelineError, NotFound):
    pass


class UnknownPipeline(PipelineError, NotFound):
    pass


class ParamError(PipelineError):
    pass


class PluginError(PipelineError):
    """A user stage module failed to import or does not define valid stages."""


class StageFailed(HitlError):
    """A stage raised or returned outputs that do not match its declaration. Nothing of it was registered."""


class OutputMismatch(StageFailed):
    pass


class RunCancelled(HitlError):
    exit_code = 130


class CorruptResult(HitlError):
    """A cache file is missing or its sha256 differs from the registered one."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key
