"""The pipeline engine: reusable stages, a content-addressed result cache, status with reasons, runs, lineage.

Qt-free. See docs/pipeline.md. Typical use from a window (off the GUI thread)::

    from hitl_desktop.core.tasks import TaskState
    from hitl_desktop.core.pipeline import run_pipeline
    task = TaskState()
    report = run_pipeline(project, "default", observer=lambda ev: signals.event.emit(ev), cancel=task)
    # task.cancel() from the GUI thread stops the run within a second, between work units

Layers, bottom-up (each module imports only from those below it): errors, events -> stage -> parallel -> context ->
cache -> registry -> spec -> model_stages, checks_stages, builtin -> engine -> this package (re-exports only).
A run's cancel flag and progress sink is a `core.tasks.TaskState`; `Cancelled` is `core.tasks.Cancelled`.
"""
from __future__ import annotations

from ..tasks import Cancelled, TaskState
from . import builtin  # noqa: F401  (registers the built-in stages with the registry)
from .context import StageContext
from .engine import (RunReport, StepOutcome, StepStatus, lineage, list_runs, pipeline_status, reap_interrupted,
                     run_pipeline, step_status)
from .errors import (CorruptResult, OutputMismatch, ParamError, PipelineError, PluginError, RunCancelled,
                     StageFailed, UnknownPipeline, UnknownStage)
from .events import EVENT_KINDS, RunEvent, RunObserver
from .registry import ENTRY_POINT_GROUP, STAGE_PATHS_KEY, Registry, registry_for
from .spec import (DEFAULT_PIPELINE, PipelineSpec, Step, add_step, add_variant, default_spec, get_pipeline,
                   list_pipelines, remove_step, save_spec, set_param, set_params, set_source)
from .stage import Param, Stage, stage

__all__ = [
    "Cancelled", "CorruptResult", "DEFAULT_PIPELINE", "ENTRY_POINT_GROUP", "EVENT_KINDS",
    "OutputMismatch", "Param", "ParamError", "PipelineError", "PipelineSpec", "PluginError", "Registry",
    "RunCancelled", "RunEvent", "RunObserver", "RunReport", "STAGE_PATHS_KEY", "Stage", "StageContext",
    "StageFailed", "Step", "StepOutcome", "StepStatus", "TaskState", "UnknownPipeline", "UnknownStage", "add_step",
    "add_variant", "default_spec", "get_pipeline", "lineage", "list_pipelines", "list_runs", "pipeline_status",
    "reap_interrupted", "registry_for", "remove_step", "run_pipeline", "save_spec", "set_param", "set_params", "set_source",
    "stage", "step_status",
]
