"""Pipelines: named DAGs of steps (a stage with parameters and upstream steps), stored in the project.

Stored as canonical JSON in the `pipelines` table::

    {"source": "latest", "steps": [
        {"name": "validate", "stage": "validate", "params": {}, "needs": []},
        {"name": "clean", "stage": "clean", "params": {}, "needs": ["validate"]}, ...]}

`source` is "latest" (the newest imported source version) or a source id. A step's declared inputs are matched
by name to the outputs of its upstream steps (nearest first); the raw batch data is the input "batch".
"""
from __future__ import annotations

import copy
import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection

from .. import audit, db
from ..project import Project
from ..util import canonical_json, utc_now
from .errors import ParamError, PipelineError, UnknownPipeline
from .registry import Registry
from .stage import Stage

DEFAULT_PIPELINE = "default"
DATA_INPUTS = ("batch",)


def last_steps(project: Project, pipeline: str) -> dict[str, dict[str, Any]]:
    """Per step: the latest successful {key} and the latest attempt {outcome, key, error} of this pipeline's runs."""
    with project.read() as conn:
        rows = conn.execute(select(db.runs.c.id, db.runs.c.detail_json, db.runs.c.status)
                            .where(db.runs.c.pipeline == pipeline).order_by(db.runs.c.id.desc()).limit(200)).all()
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        steps = json.loads(r.detail_json or "{}").get("steps", {})
        for name, s in steps.items():
            d = out.setdefault(name, {})
            if "attempt" not in d:
                d["attempt"] = {**s, "run": r.id}
            if "ok" not in d and s.get("outcome") in ("computed", "reused"):
                d["ok"] = {**s, "run": r.id}
    return out


@dataclass
class Step:
    name: str
    stage: str
    params: dict[str, Any] = field(default_factory=dict)
    needs: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "stage": self.stage, "params": dict(self.params), "needs": list(self.needs)}


@dataclass
class PipelineSpec:
    name: str
    steps: list[Step]
    source: Any = "latest"
    updated_at: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "steps": [s.to_json() for s in self.steps]}

    @classmethod
    def from_json(cls, name: str, d: dict[str, Any], updated_at: str = "") -> "PipelineSpec":
        steps = [Step(s["name"], s.get("stage", s["name"]), dict(s.get("params") or {}), list(s.get("needs") or []))
                 for s in d.get("steps", [])]
        return cls(name, steps, d.get("source", "latest"), updated_at)

    def step(self, name: str) -> Step:
        for s in self.steps:
            if s.name == name:
                return s
        raise PipelineError(f"pipeline '{self.name}' has no step '{name}' (steps: {', '.join(self.step_names())})")

    def step_names(self) -> list[str]:
        return [s.name for s in self.steps]


def default_spec() -> PipelineSpec:
    return PipelineSpec(DEFAULT_PIPELINE, [
        Step("validate", "validate"),
        Step("clean", "clean", needs=["validate"]),
        Step("duplicates", "duplicates", needs=["validate"]),
        Step("labels", "labels", needs=["clean"]),
        Step("featurize", "featurize", needs=["clean"]),
        Step("train", "train", needs=["featurize"]),
        Step("evaluate", "evaluate", needs=["featurize", "train"]),
    ])


# --- validation ---------------------------------------------------------------------------------------------------


@dataclass
class ResolvedStep:
    step: Step
    stage: Stage
    params: dict[str, Any]
    #: input name -> upstream step name (None for data inputs such as "batch")
    inputs: dict[str, str | None]


def topo_order(spec: PipelineSpec) -> list[str]:
    names = spec.step_names()
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise PipelineError(f"pipeline '{spec.name}' has two steps named '{n}'")
        seen.add(n)
    for s in spec.steps:
        for d in s.needs:
            if d not in seen:
                raise PipelineError(f"step '{s.name}' of pipeline '{spec.name}' needs '{d}', which is not a step "
                                    f"(steps: {', '.join(names)})")
    indeg = {s.name: len(set(s.needs)) for s in spec.steps}
    children: dict[str, list[str]] = {n: [] for n in names}
    for s in spec.steps:
        for d in set(s.needs):
            children[d].append(s.name)
    q = deque(n for n in names if indeg[n] == 0)
    order: list[str] = []
    while q:
        n = q.popleft()
        order.append(n)
        for c in children[n]:
            indeg[c] -= 1
            if indeg[c] == 0:
                q.append(c)
    if len(order) != len(names):
        cyc = _find_cycle(spec)
        raise PipelineError(f"pipeline '{spec.name}' has a cycle: {' -> '.join(cyc)}")
    return order


def _find_cycle(spec: PipelineSpec) -> list[str]:
    needs = {s.name: s.needs for s in spec.steps}
    color: dict[str, int] = {}
    stack: list[str] = []

    def dfs(n: str) -> list[str] | None:
        color[n] = 1
        stack.append(n)
        for d in needs[n]:
            if color.get(d) == 1:
                return stack[stack.index(d):] + [d]
            if color.get(d) is None:
                r = dfs(d)
                if r:
                    return r
        stack.pop()
        color[n] = 2
        return None

    for n in needs:
        if color.get(n) is None:
            r = dfs(n)
            if r:
                return list(reversed(r))
    return []


def resolve(spec: PipelineSpec, registry: Registry) -> dict[str, ResolvedStep]:
    """Check the whole definition (cycle, stages, parameters, inputs) and return steps in run order."""
    order = topo_order(spec)
    by_name = {s.name: s for s in spec.steps}
    out: dict[str, ResolvedStep] = {}
    for n in order:
        step = by_name[n]
        st = registry.get(step.stage)
        params = st.resolve_params(n, step.params)
        inputs: dict[str, str | None] = {}
        for inp in st.inputs:
            if inp in DATA_INPUTS:
                if not st.per_batch:
                    raise PipelineError(f"stage '{st.name}' takes the raw input '{inp}' but is not per-batch")
                inputs[inp] = None
                continue
            src = _find_producer(step, inp, by_name, out)
            if src is None:
                raise PipelineError(f"step '{n}' (stage {st.name}) needs input '{inp}', but no upstream step "
                                    f"produces it (upstream: {', '.join(step.needs) or 'none'})")
            if st.per_batch and not out[src].stage.per_batch:
                raise PipelineError(f"per-batch step '{n}' takes '{inp}' from '{src}', which is not per-batch")
            inputs[inp] = src
        out[n] = ResolvedStep(step, st, params, inputs)
    return out


def _find_producer(step: Step, inp: str, by_name: dict[str, Step], done: dict[str, ResolvedStep]) -> str | None:
    q = deque(step.needs)
    seen: set[str] = set()
    while q:
        n = q.popleft()
        if n in seen:
            continue
        seen.add(n)
        if inp in done[n].stage.outputs:
            return n
        q.extend(by_name[n].needs)
    return None


# --- storage ------------------------------------------------------------------------------------------------------


def _row_to_spec(r: Any) -> PipelineSpec:
    return PipelineSpec.from_json(r.name, json.loads(r.spec_json), r.updated_at)


def list_pipelines(project: Project) -> list[PipelineSpec]:
    """All pipelines; a project with none has the 'default' one (validate -> clean -> featurize -> train ->
    evaluate), which is written to the store only by the first change to a pipeline: reading writes nothing."""
    with project.read() as conn:
        rows = list(conn.execute(select(db.pipelines).order_by(db.pipelines.c.id)))
    if rows:
        return [_row_to_spec(r) for r in rows]
    return [default_spec()]


def _ensure_default(conn: Connection, user: str) -> None:
    """Inside a write: store the default pipeline if the project has none yet (its first pipeline change)."""
    if conn.execute(select(db.pipelines.c.id).limit(1)).first() is None:
        spec = default_spec()
        _insert(conn, spec, user, "pipeline.create", {"name": spec.name, "default": True})


def get_pipeline(project: Project, name: str | None = None) -> PipelineSpec:
    specs = list_pipelines(project)
    if name is None:
        for s in specs:
            if s.name == DEFAULT_PIPELINE:
                return s
        return specs[0]
    for s in specs:
        if s.name == name:
            return s
    raise UnknownPipeline(f"unknown pipeline '{name}' (pipelines: {', '.join(s.name for s in specs)})")


def _insert(conn: Connection, spec: PipelineSpec, user: str, action: str, payload: dict[str, Any]) -> None:
    now = utc_now()
    conn.execute(db.pipelines.insert().values(name=spec.name, spec_json=canonical_json(spec.to_json()),
                                              updated_at=now))
    audit.append(conn, user, action, f"pipeline:{spec.name}", {**payload, "spec": spec.to_json()}, ts=now)


def _update(project: Project, name: str, user: str, action: str, payload: dict[str, Any], registry: Registry,
            edit) -> PipelineSpec:
    spec = copy.deepcopy(get_pipeline(project, name))
    edit(spec)
    resolve(spec, registry)  # refuse anything that would not run
    now = utc_now()
    with project.write() as conn:
        _ensure_default(conn, user)
        conn.execute(db.pipelines.update().where(db.pipelines.c.name == name).values(
            spec_json=canonical_json(spec.to_json()), updated_at=now))
        audit.append(conn, user, action, f"pipeline:{name}", {**payload, "spec": spec.to_json()}, ts=now)
    spec.updated_at = now
    return spec


def parse_value(text: str) -> Any:
    """A parameter value from the command line: JSON when it parses (1, 0.5, true, null, "x"), else the text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def set_param(project: Project, pipeline: str | None, step: str, param: str, value: Any, user: str,
              registry: Registry) -> PipelineSpec:
    return set_params(project, pipeline, [(step, param, value)], user, registry)


def set_params(project: Project, pipeline: str | None, changes: list[tuple[str, str, Any]], user: str,
               registry: Registry) -> PipelineSpec:
    """Set several (step, parameter, value) at once: one transaction, one audit entry per parameter."""
    spec = copy.deepcopy(get_pipeline(project, pipeline))
    name = spec.name
    for step, param, value in changes:
        s = spec.step(step)
        st = registry.get(s.stage)
        if param not in st.params:
            known = ", ".join(sorted(st.params)) or "none"
            raise ParamError(f"step '{step}' (stage {st.name}) has no parameter '{param}' (known: {known})")
        s.params[param] = st.params[param].validate(step, param, value)
    resolve(spec, registry)  # refuse anything that would not run
    now = utc_now()
    with project.write() as conn:
        _ensure_default(conn, user)
        conn.execute(db.pipelines.update().where(db.pipelines.c.name == name).values(
            spec_json=canonical_json(spec.to_json()), updated_at=now))
        for step, param, value in changes:
            audit.append(conn, user, "pipeline.set_param", f"pipeline:{name}",
                         {"step": step, "param": param, "value": value, "spec": spec.to_json()}, ts=now)
    spec.updated_at = now
    return spec


def add_variant(project: Project, new: str, base: str | None, user: str, registry: Registry,
                sets: list[tuple[str, str, Any]] = ()) -> PipelineSpec:
    """Copy pipeline `base` as `new` (optionally changing parameters); shared steps share cached results."""
    if not new or not new.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise PipelineError(f"'{new}' is not a valid pipeline name (letters, digits, - _ .)")
    src = get_pipeline(project, base)
    if any(s.name == new for s in list_pipelines(project)):
        raise PipelineError(f"a pipeline named '{new}' already exists")
    spec = copy.deepcopy(src)
    spec.name = new
    for step, param, value in sets:
        s = spec.step(step)
        st = registry.get(s.stage)
        if param not in st.params:
            raise ParamError(f"step '{step}' (stage {st.name}) has no parameter '{param}' "
                             f"(known: {', '.join(sorted(st.params)) or 'none'})")
        s.params[param] = st.params[param].validate(step, param, value)
    resolve(spec, registry)
    with project.write() as conn:
        _ensure_default(conn, user)
        _insert(conn, spec, user, "pipeline.create", {"name": new, "from": src.name,
                                                      "set": [list(x) for x in sets]})
    return get_pipeline(project, new)


def add_step(project: Project, pipeline: str | None, name: str, stage_name: str, needs: list[str], user: str,
             registry: Registry, params: dict[str, Any] | None = None) -> PipelineSpec:
    registry.get(stage_name)
    pname = get_pipeline(project, pipeline).name

    def edit(spec: PipelineSpec) -> None:
        if name in spec.step_names():
            raise PipelineError(f"pipeline '{pname}' already has a step '{name}'")
        spec.steps.append(Step(name, stage_name, dict(params or {}), list(needs)))

    return _update(project, pname, user, "pipeline.add_step", {"step": name, "stage": stage_name, "needs": needs},
                   registry, edit)


def remove_step(project: Project, pipeline: str | None, name: str, user: str, registry: Registry) -> PipelineSpec:
    pname = get_pipeline(project, pipeline).name

    def edit(spec: PipelineSpec) -> None:
        spec.step(name)
        users = [s.name for s in spec.steps if name in s.needs]
        if users:
            raise PipelineError(f"step '{name}' is needed by {', '.join(users)}: remove those first")
        spec.steps = [s for s in spec.steps if s.name != name]

    return _update(project, pname, user, "pipeline.remove_step", {"step": name}, registry, edit)


def set_source(project: Project, pipeline: str | None, source: Any, user: str, registry: Registry) -> PipelineSpec:
    pname = get_pipeline(project, pipeline).name
    if source != "latest" and not isinstance(source, int):
        raise PipelineError(f"a pipeline's source is 'latest' or a source id, got {source!r}")

    def edit(spec: PipelineSpec) -> None:
        spec.source = source

    return _update(project, pname, user, "pipeline.set_source", {"source": source}, registry, edit)


def save_spec(project: Project, spec: PipelineSpec, user: str, registry: Registry) -> PipelineSpec:
    """Create or replace a whole pipeline definition (checked first)."""
    resolve(spec, registry)
    now = utc_now()
    with project.write() as conn:
        _ensure_default(conn, user)
        exists = conn.execute(select(db.pipelines.c.id).where(db.pipelines.c.name == spec.name)).first()
        if exists:
            conn.execute(db.pipelines.update().where(db.pipelines.c.name == spec.name).values(
                spec_json=canonical_json(spec.to_json()), updated_at=now))
            audit.append(conn, user, "pipeline.update", f"pipeline:{spec.name}", {"spec": spec.to_json()}, ts=now)
        else:
            _insert(conn, spec, user, "pipeline.create", {"name": spec.name})
    return get_pipeline(project, spec.name)
