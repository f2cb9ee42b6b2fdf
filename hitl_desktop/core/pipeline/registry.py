"""Finding stages: built-ins, the `hitl_desktop.stages` entry-point group, and files named in project settings.

An entry point may name a Stage instance or subclass, a list of them, or a module (every Stage defined in it is
taken). A project may also list Python files in its meta key ``settings.stage_paths`` (a JSON list of paths,
relative paths resolved against the project folder); each file is imported and its stages are taken.
"""
from __future__ import annotations

import hashlib
import importlib.util
import inspect
import json
import os
import sys
import types
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Iterable

from .errors import PluginError, UnknownStage
from .stage import Stage, validate_stage_definition

ENTRY_POINT_GROUP = "hitl_desktop.stages"
STAGE_PATHS_KEY = "settings.stage_paths"

#: the built-in stages, first in every registry; builtin.py registers them when imported (the package imports it),
#: so this module does not depend on the stage implementations
_builtin_stages: list[Stage] = []


def register_builtin_stages(stages: Iterable[Stage]) -> None:
    """Set the built-in stages (called once by builtin.py; a second call replaces the list)."""
    _builtin_stages[:] = list(stages)


def _stages_in(obj: Any, origin: str) -> list[Stage]:
    if isinstance(obj, types.ModuleType):
        found: list[Stage] = []
        for v in vars(obj).values():
            if isinstance(v, Stage) or (inspect.isclass(v) and issubclass(v, Stage) and v.__module__ == obj.__name__
                                        and getattr(v, "name", "")):
                found.append(validate_stage_definition(v, origin))
        listed = getattr(obj, "STAGES", None)
        if listed is not None:
            found = [validate_stage_definition(v, origin) for v in listed]
        return found
    if isinstance(obj, (list, tuple)):
        return [validate_stage_definition(v, origin) for v in obj]
    return [validate_stage_definition(obj, origin)]


_entry_point_cache: tuple[Any, list[Stage]] | None = None


def _installed_state() -> tuple[Any, ...]:
    """What decides the installed distributions: the import path and each folder's modification time (installing
    or removing a package changes its site-packages folder)."""
    out = []
    for p in sys.path:
        try:
            out.append((p, os.stat(p or ".").st_mtime_ns))
        except OSError:
            out.append((p, None))
    return tuple(out)


def _load_entry_points() -> list[Stage]:
    """The entry points' stages; scanning every installed distribution's metadata takes milliseconds, so the result
    is kept until the import path or a folder on it changes."""
    global _entry_point_cache
    state = _installed_state()
    cached = _entry_point_cache
    if cached is not None and cached[0] == state:
        return list(cached[1])
    stages = _scan_entry_points()
    _entry_point_cache = (state, stages)
    return list(stages)


def _scan_entry_points() -> list[Stage]:
    out: list[Stage] = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        origin = f"entry point {ep.name} ({ep.value})"
        try:
            obj = ep.load()
            out += _stages_in(obj, origin)
        except Exception as exc:  # a broken plug-in: one line naming it
            raise PluginError(f"user stage {origin} failed to load: {type(exc).__name__}: {_first_line(exc)}") from None
    return out


def _load_file(path: Path) -> list[Stage]:
    origin = f"file {path}"
    if not path.is_file():
        raise PluginError(f"user stage file {path} (from project setting {STAGE_PATHS_KEY}) does not exist")
    mod_name = "hitl_user_stages_" + hashlib.sha256(str(path).encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(mod_name, path)
    if spec is None or spec.loader is None:
        raise PluginError(f"user stage file {path} is not a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    try:
        spec.loader.exec_module(module)
        stages = _stages_in(module, origin)
    except Exception as exc:
        sys.modules.pop(mod_name, None)
        raise PluginError(f"user stage file {path} failed to import: {type(exc).__name__}: {_first_line(exc)}") from None
    try:  # ship the module's code by value to worker processes, which cannot import it by name
        import cloudpickle

        cloudpickle.register_pickle_by_value(module)
    except Exception:  # pragma: no cover - cloudpickle is a joblib dependency
        pass
    return stages


def _first_line(exc: BaseException) -> str:
    s = str(exc).strip()
    return s.splitlines()[0][:200] if s else "(no message)"


def stage_paths(project: Any) -> list[Path]:
    raw = project.meta(STAGE_PATHS_KEY) if project is not None else None
    if not raw:
        return []
    try:
        items = json.loads(raw)
    except ValueError:
        items = [p for p in raw.split("\n") if p.strip()]
    if isinstance(items, str):
        items = [items]
    out = []
    for p in items:
        q = Path(p).expanduser()
        out.append(q if q.is_absolute() else (project.path / q))
    return out


class Registry:
    """The stages available to one project (built-ins first; a user stage may not shadow a built-in)."""

    def __init__(self, stages: Iterable[Stage]) -> None:
        self._stages: dict[str, Stage] = {}
        for s in stages:
            prev = self._stages.get(s.name)
            if prev is not None and prev.origin != s.origin:
                raise PluginError(f"stage name '{s.name}' from {s.origin} is already defined by {prev.origin}")
            self._stages[s.name] = s

    def get(self, name: str) -> Stage:
        s = self._stages.get(name)
        if s is None:
            raise UnknownStage(f"unknown stage '{name}' (available: {', '.join(sorted(self._stages))}); user stages "
                               f"come from the '{ENTRY_POINT_GROUP}' entry points or the project's {STAGE_PATHS_KEY}")
        return s

    def names(self) -> list[str]:
        return sorted(self._stages)

    def all(self) -> list[Stage]:
        return [self._stages[n] for n in self.names()]


def registry_for(project: Any = None, extra: Iterable[Stage] = ()) -> Registry:
    """Built-ins, entry points, the project's stage files, and `extra` (tests, embedding applications)."""
    stages: list[Stage] = list(_builtin_stages)
    stages += _load_entry_points()
    for p in stage_paths(project):
        stages += _load_file(p)
    stages += [validate_stage_definition(s, "api") for s in extra]
    return Registry(stages)
