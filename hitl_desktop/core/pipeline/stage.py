"""Stages: plain, Qt-free units of pipeline work.

A stage has a name, a version string, declared inputs and outputs, typed parameters with defaults, and code. Write
one as a class::

    class Scale(Stage):
        name = "scale"
        version = "1"
        inputs = ("features",)
        outputs = {"features": "object"}
        params = {"factor": Param(float, 1.0, min=0.0)}

        def run(self, ctx, inputs, params):
            ctx.report(0.5, "scaling")
            f = dict(inputs["features"]); f["X"] = f["X"] * params["factor"]
            return {"features": f}

or as a function with the `@stage(...)` decorator. A *per-batch* stage (`per_batch = True`) implements
`run_batch(ctx, inputs, params)` and is called once per batch (in joblib workers); its inputs are that batch's
data (`"batch"`, a DataFrame indexed by row id) and the same batch's results of per-batch upstream stages.

Output kinds: ``table`` (a pandas DataFrame, stored as Parquet), ``object`` (anything joblib can pickle) and
``metrics`` (a JSON-able dict of numbers/strings, stored with joblib too). The engine checks every returned
output against the declaration.
"""
from __future__ import annotations

import hashlib
import inspect
import math
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping

from ..tasks import Cancelled  # the one cancel exception (core.tasks); re-exported for stage authors
from .errors import OutputMismatch, ParamError

if TYPE_CHECKING:  # StageContext (context.py) sits above this module and parallel.py: annotations only
    from .context import StageContext

OUTPUT_KINDS = ("table", "object", "metrics")


@dataclass(frozen=True)
class Param:
    """A typed stage parameter. `type` is one of int, float, bool, str, list; validated on every set and run."""

    type: type
    default: Any
    min: float | None = None
    max: float | None = None
    choices: tuple[Any, ...] | None = None
    help: str = ""
    nullable: bool = False

    def describe(self) -> str:
        parts = [self.type.__name__]
        if self.choices:
            parts.append("one of " + ", ".join(map(str, self.choices)))
        if self.min is not None:
            parts.append(f">= {self.min}")
        if self.max is not None:
            parts.append(f"<= {self.max}")
        return " ".join(parts)

    def validate(self, step: str, name: str, value: Any) -> Any:
        """Return the value in canonical type, or raise a one-line ParamError."""
        where = f"parameter '{name}' of step '{step}'"
        if value is None:
            if self.nullable:
                return None
            raise ParamError(f"{where} must be {self.describe()}, got nothing (null)")
        t = self.type
        ok = True
        if t is bool:
            ok = isinstance(value, bool)
        elif t is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif t is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            if ok:
                value = float(value)
                if math.isnan(value) or math.isinf(value):
                    raise ParamError(f"{where} must be a finite number, got {value}")
        elif t is str:
            ok = isinstance(value, str)
        elif t is list:
            ok = isinstance(value, list)
        else:
            ok = isinstance(value, t)
        if not ok:
            raise ParamError(f"{where} must be {self.describe()}, got {type(value).__name__} {value!r}")
        if self.choices is not None and value not in self.choices:
            raise ParamError(f"{where} must be one of {', '.join(map(str, self.choices))}, got {value!r}")
        if self.min is not None and value < self.min:
            raise ParamError(f"{where} must be >= {self.min}, got {value!r}")
        if self.max is not None and value > self.max:
            raise ParamError(f"{where} must be <= {self.max}, got {value!r}")
        return value

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type.__name__, "default": self.default, "min": self.min, "max": self.max,
                "choices": list(self.choices) if self.choices else None, "help": self.help}


class Stage:
    """Base class. Subclasses set the class attributes and implement `run` (or `run_batch` when per_batch)."""

    name: str = ""
    version: str = "1"
    per_batch: bool = False
    inputs: tuple[str, ...] = ()
    outputs: Mapping[str, str] = {}
    params: Mapping[str, Param] = {}
    description: str = ""
    #: extra functions/classes whose source counts as this stage's code (helpers it calls)
    code_deps: tuple[Any, ...] = ()
    #: inputs holding upstream ``table`` outputs that a whole-data stage takes as pyarrow Tables (read memory-mapped
    #: from the cache, no conversion) instead of DataFrames
    arrow_inputs: tuple[str, ...] = ()
    #: a whole-data stage with a large result: the engine serialises, hashes and writes it in a thread while the
    #: next step computes, and registers it (once durable) before that step's result
    store_in_background: bool = False
    #: where the stage came from: "builtin", "entry point NAME", "file PATH"
    origin: str = "builtin"

    def run(self, ctx: StageContext, inputs: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def run_batch(self, ctx: StageContext, inputs: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    # --- engine helpers ---------------------------------------------------------------------------------------

    def code_source(self) -> str:
        """The stage's own source code (plus declared helpers): an edit to it invalidates its results."""
        parts = [_source_of(self._code_object())]
        parts += [_source_of(d) for d in self.code_deps]
        return "\n".join(parts)

    def _code_object(self) -> Any:
        return type(self)

    def code_hash(self) -> str:
        h = self.__dict__.get("_code_hash")
        if h is None:
            h = hashlib.sha256(self.code_source().encode("utf-8")).hexdigest()
            self.__dict__["_code_hash"] = h
        return h

    def resolve_params(self, step: str, given: Mapping[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(given) - set(self.params))
        if unknown:
            known = ", ".join(sorted(self.params)) or "none"
            raise ParamError(f"step '{step}' (stage {self.name}) has no parameter '{unknown[0]}' (known: {known})")
        out = {}
        for k, p in self.params.items():
            out[k] = p.validate(step, k, given[k]) if k in given else p.default
        return out

    def check_outputs(self, step: str, result: Any) -> dict[str, Any]:
        if not isinstance(result, dict):
            raise OutputMismatch(f"stage '{self.name}' (step '{step}') returned {type(result).__name__}, "
                                 f"not a dict of its declared outputs {sorted(self.outputs)}")
        if set(result) != set(self.outputs):
            raise OutputMismatch(f"stage '{self.name}' (step '{step}') returned outputs {sorted(result)} "
                                 f"but declares {sorted(self.outputs)}")
        for name, kind in self.outputs.items():
            v = result[name]
            if kind == "table":
                import pandas as pd

                if not isinstance(v, pd.DataFrame):
                    raise OutputMismatch(f"stage '{self.name}' output '{name}' is declared a table but is "
                                         f"{type(v).__name__}")
            elif kind == "metrics":
                if not isinstance(v, dict) or not all(isinstance(x, (int, float, str, bool, type(None), list, dict))
                                                      for x in v.values()):
                    raise OutputMismatch(f"stage '{self.name}' output '{name}' is declared metrics (a dict of "
                                         f"numbers/strings) but is {type(v).__name__}")
        return result

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "per_batch": self.per_batch,
                "inputs": list(self.inputs), "outputs": dict(self.outputs),
                "params": {k: p.to_json() for k, p in self.params.items()},
                "description": self.description, "origin": self.origin}


class FunctionStage(Stage):
    """A stage made from a plain function `fn(ctx, inputs, params) -> dict` by the `stage` decorator."""

    def __init__(self, fn: Callable[..., dict[str, Any]], name: str, version: str, inputs: tuple[str, ...],
                 outputs: Mapping[str, str], params: Mapping[str, Param], per_batch: bool, description: str,
                 code_deps: tuple[Any, ...]) -> None:
        self.fn = fn
        self.name = name
        self.version = version
        self.inputs = tuple(inputs)
        self.outputs = dict(outputs)
        self.params = dict(params)
        self.per_batch = per_batch
        self.description = description or (inspect.getdoc(fn) or "").split("\n")[0]
        self.code_deps = tuple(code_deps)

    def _code_object(self) -> Any:
        return self.fn

    def run(self, ctx, inputs, params):
        return self.fn(ctx, inputs, params)

    def run_batch(self, ctx, inputs, params):
        return self.fn(ctx, inputs, params)


def stage(name: str, version: str = "1", inputs: tuple[str, ...] = (), outputs: Mapping[str, str] | None = None,
          params: Mapping[str, Param] | None = None, per_batch: bool = False, description: str = "",
          code_deps: tuple[Any, ...] = ()) -> Callable[[Callable[..., dict[str, Any]]], FunctionStage]:
    """Decorator turning `fn(ctx, inputs, params) -> dict` into a Stage."""

    def deco(fn: Callable[..., dict[str, Any]]) -> FunctionStage:
        return FunctionStage(fn, name, version, inputs, outputs or {}, params or {}, per_batch, description,
                             code_deps)

    return deco


def validate_stage_definition(s: Any, origin: str) -> Stage:
    """Accept a Stage instance or subclass; check the declaration is usable."""
    if inspect.isclass(s) and issubclass(s, Stage):
        s = s()
    if not isinstance(s, Stage):
        raise TypeError(f"{origin}: {s!r} is not a Stage")
    if not s.name or not isinstance(s.name, str):
        raise TypeError(f"{origin}: a stage has no name")
    if not isinstance(s.version, str) or not s.version:
        raise TypeError(f"{origin}: stage '{s.name}' needs a version string")
    for out, kind in dict(s.outputs).items():
        if kind not in OUTPUT_KINDS:
            raise TypeError(f"{origin}: stage '{s.name}' output '{out}' has unknown kind '{kind}' "
                            f"(use {', '.join(OUTPUT_KINDS)})")
    if not s.outputs:
        raise TypeError(f"{origin}: stage '{s.name}' declares no outputs")
    for k, p in dict(s.params).items():
        if not isinstance(p, Param):
            raise TypeError(f"{origin}: parameter '{k}' of stage '{s.name}' is not a Param")
        if p.default is not None or not p.nullable:
            p.validate(s.name, k, p.default)
    s.origin = origin
    return s


def _source_of(obj: Any) -> str:
    try:
        if inspect.isclass(obj):
            src = _class_source(obj)
            if src is not None:
                return src
        return inspect.getsource(obj)
    except (OSError, TypeError):
        # No source (frozen app, REPL): fall back to the compiled code, which still changes with the code.
        code = getattr(obj, "__code__", None)
        if code is not None:
            return repr((code.co_code, code.co_consts, code.co_names))
        return repr(getattr(obj, "__qualname__", obj))


_class_lines: dict[tuple[str, int], dict[str, int]] = {}


def _class_source(cls: type) -> str | None:
    """`inspect.getsource(cls)`, the same text, with the module parsed once for all its classes: before Python 3.13
    inspect parses and walks the whole module for every class it is asked about (code hashes of a pipeline's stages
    cost ~0.1 s). None when this shortcut does not apply (inspect is then asked)."""
    import linecache
    import sys

    if sys.version_info >= (3, 13) or not hasattr(inspect, "_ClassFinder"):
        return None  # 3.13+ finds a class by its __firstlineno__: already cheap
    file = inspect.getsourcefile(cls)
    if not file:
        return None
    linecache.checkcache(file)
    module = inspect.getmodule(cls, file)
    lines = linecache.getlines(file, module.__dict__) if module else linecache.getlines(file)
    if not lines:
        return None
    text = "".join(lines)
    key = (file, hash(text))
    starts = _class_lines.get(key)
    if starts is None:
        import ast

        starts = {}
        _class_starts(ast.parse(text).body, [], starts)
        _class_lines[key] = starts
    first = starts.get(cls.__qualname__)
    if first is None:
        return None
    return "".join(inspect.getblock(lines[first:]))


def _class_starts(body: list[Any], stack: list[str], out: dict[str, int]) -> None:
    """qualname -> 0-based first line (its first decorator's) of every class in these statements, in the order
    inspect's _ClassFinder visits them (the first class of a qualname wins, as there). Classes are statements,
    so only statement lists are walked."""
    import ast

    for node in body:
        if isinstance(node, ast.ClassDef):
            stack.append(node.name)
            out.setdefault(".".join(stack), (node.decorator_list[0].lineno if node.decorator_list else node.lineno) - 1)
            _class_starts(node.body, stack, out)
            stack.pop()
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            stack += [node.name, "<locals>"]
            _class_starts(node.body, stack, out)
            del stack[-2:]
        else:
            for name in node._fields:
                value = getattr(node, name, None)
                if isinstance(value, list):
                    for item in value:
                        if isinstance(item, ast.stmt):
                            _class_starts([item], stack, out)
                        elif isinstance(item, (ast.excepthandler, ast.match_case)):
                            _class_starts(item.body, stack, out)


class ProgressThrottle:
    """Forward progress only when it moved by `step` or `interval` seconds passed (and always 0 and 1)."""

    def __init__(self, emit: Callable[[float, str], None], step: float = 0.02, interval: float = 0.2) -> None:
        self.emit = emit
        self.step = step
        self.interval = interval
        self._last_f = -1.0
        self._last_t = 0.0
        self._lock = threading.Lock()

    def __call__(self, fraction: float, message: str = "") -> None:
        now = time.monotonic()
        with self._lock:
            if not (fraction in (0.0, 1.0) or fraction - self._last_f >= self.step
                    or now - self._last_t >= self.interval):
                return
            self._last_f, self._last_t = fraction, now
        self.emit(fraction, message)


__all__ = ["Param", "Stage", "FunctionStage", "Cancelled", "stage", "OUTPUT_KINDS",
           "validate_stage_definition", "ProgressThrottle"]
