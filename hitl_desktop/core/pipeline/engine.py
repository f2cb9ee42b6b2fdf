"""The pipeline engine: planning (keys and status with reasons), running, run records and lineage.

Cache key of a result = sha256 of canonical JSON of: stage name, stage version, the stage's source code hash, its
parameters, and the content keys of its inputs — a batch's `content_hash` (computed when data enters or an edit
is committed, never by re-hashing frames) or the keys of upstream results. Keys depend only on inputs, so the
status of every step is known without running anything.

A per-batch stage has one result per batch ("unit") plus a small manifest listing them; an edit to one batch
changes that batch's content hash and so re-runs only that batch's units.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from typing import Any, Iterable

import pandas as pd
from sqlalchemy import and_, delete, func, select

from .. import audit, db, threads
from ..batches import _apply_overrides, _to_pandas  # the loaders' own conversion, so workers see what load_batch sees
from ..errors import HitlError, NotFound
from ..tasks import Cancelled, TaskState
from ..project import Project, _pid_alive
from ..sources import SourceInfo, get_source
from ..util import canonical_json, gc_paused, os_user, sha256_text, utc_now
from .builtin import FLAG_COLUMNS  # importing builtin also registers the built-in stages
from .cache import OpenTables, ResultStore, read_result, result_kind, write_result
from .errors import CorruptResult, OutputMismatch, PipelineError, RunCancelled, StageFailed
from .events import Observer, RunEvent, make_emitter
from .parallel import ParallelConfig, config_from_meta, run_units
from .registry import Registry, registry_for
from .spec import PipelineSpec, ResolvedStep, get_pipeline, last_steps, list_pipelines, resolve
from .context import StageContext
from .stage import ProgressThrottle, Stage

SELECT_STATUSES = {"approved": ("approved",), "not_rejected": ("queued", "in_review", "approved"),
                   "all": ("queued", "in_review", "approved", "rejected")}


def _h(obj: Any) -> str:
    return sha256_text(canonical_json(obj))


# --- data scope -------------------------------------------------------------------------------------------------


@dataclass
class BatchRow:
    id: int
    seq: int
    row_id_start: int
    rows: int
    content_hash: str
    status: str


@dataclass
class Scope:
    source: SourceInfo
    batches: list[BatchRow]

    def source_json(self) -> dict[str, Any]:
        return {"id": self.source.id, "file": self.source.file_name, "sha256": self.source.sha256,
                "options_key": _options_key(self.source)}


def _options_key(s: SourceInfo) -> str:
    opts = {k: v for k, v in s.options.items() if k != "detected"}
    return _h(opts)


def _scope(project: Project, spec: PipelineSpec) -> Scope:
    with project.read() as conn:
        if spec.source == "latest":
            sid = conn.execute(select(func.max(db.sources.c.id))).scalar()
            if sid is None:
                raise PipelineError("the project has no data yet: import a file first (`hitl import DIR FILE`)")
        else:
            sid = int(spec.source)
        rows = conn.execute(select(db.batches.c.id, db.batches.c.seq, db.batches.c.row_id_start, db.batches.c.n_rows,
                                   db.batches.c.content_hash, db.batches.c.status)
                            .where(db.batches.c.source_id == sid).order_by(db.batches.c.seq)).all()
    try:
        source = get_source(project, sid)
    except HitlError:
        raise PipelineError(f"pipeline '{spec.name}' reads source {sid}, which does not exist") from None
    return Scope(source, [BatchRow(r.id, r.seq, r.row_id_start, r.n_rows, r.content_hash, r.status) for r in rows])


# --- plan ---------------------------------------------------------------------------------------------------------


@dataclass
class StepPlan:
    name: str
    rs: ResolvedStep
    key: str  # the whole result key, or the manifest key of a per-batch step
    params: dict[str, Any]
    code_hash: str
    inputs_json: dict[str, Any]
    units: dict[int, str] = field(default_factory=dict)  # per-batch: batch id -> unit key
    unit_inputs: dict[int, dict[str, Any]] = field(default_factory=dict)
    selected: list[int] = field(default_factory=list)  # whole steps: batches whose data flows in
    # filled by check
    missing_units: list[int] = field(default_factory=list)
    registered: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def per_batch(self) -> bool:
        return self.rs.stage.per_batch

    @property
    def stage(self) -> Stage:
        return self.rs.stage

    @property
    def fresh(self) -> bool:
        return self.registered and not self.missing_units


class Plan:
    def __init__(self, project: Project, spec: PipelineSpec, registry: Registry, store: ResultStore) -> None:
        self.project = project
        self.spec = spec
        self.registry = registry
        self.store = store
        self.resolved = resolve(spec, registry)
        self.scope = _scope(project, spec)
        self.steps: dict[str, StepPlan] = {}
        self.registered: dict[str, Any] = {}
        #: step -> the stage's plan-time context (`Stage.plan_context`: project state such as a schema or rules
        #: that the stage reads besides its inputs); part of the cache key, passed to the stage as inputs["context"]
        self.contexts: dict[str, Any] = {}
        self._compute_keys()

    def _compute_keys(self) -> None:
        sc = self.scope
        src = sc.source_json()
        for name, rs in self.resolved.items():
            st = rs.stage
            head = {"stage": st.name, "version": st.version, "code": st.code_hash(), "params": rs.params}
            ctx_fn = getattr(st, "plan_context", None)
            ctx_json = ctx_fn(self.project, sc.source, rs.params) if ctx_fn is not None else None
            ctx_keys = None
            if ctx_json is not None:
                self.contexts[name] = ctx_json
                ctx_keys = {k: _h(v) for k, v in sorted(ctx_json.items())}
                head["context"] = ctx_keys
            if st.per_batch:
                units: dict[int, str] = {}
                unit_inputs: dict[int, dict[str, Any]] = {}
                for b in sc.batches:
                    ups = {inp: self.steps[up].units[b.id] for inp, up in rs.inputs.items() if up is not None}
                    inp_json = {"batch": {"id": b.id, "content_hash": b.content_hash, "row_id_start": b.row_id_start,
                                          "source": sc.source.id}, "upstream": ups}
                    units[b.id] = _h({**head, "inputs": {"batch": [b.content_hash, b.row_id_start], "upstream": ups}})
                    unit_inputs[b.id] = inp_json
                ups_steps = {inp: {"step": up, "manifest": self.steps[up].key}
                             for inp, up in rs.inputs.items() if up is not None}
                inputs_json = {"source": src, "batches": {str(b.id): b.content_hash for b in sc.batches},
                               "units": {str(k): v for k, v in units.items()}, "upstream": ups_steps}
                if ctx_keys is not None:
                    inputs_json["context"] = ctx_keys
                key = _h({**head, "units": [units[b.id] for b in sc.batches]})
                self.steps[name] = StepPlan(name, rs, key, rs.params, st.code_hash(), inputs_json, units, unit_inputs)
            else:
                selected = [b.id for b in sc.batches]
                sel_param = getattr(st, "selects_batches", None)
                if sel_param:
                    ok = SELECT_STATUSES.get(rs.params.get(sel_param), SELECT_STATUSES["all"])
                    selected = [b.id for b in sc.batches if b.status in ok]
                ups: dict[str, Any] = {}
                key_ups: dict[str, Any] = {}
                for inp, up in rs.inputs.items():
                    upp = self.steps[up]
                    if upp.per_batch:
                        sel_units = {str(b): upp.units[b] for b in selected}
                        ups[inp] = {"step": up, "manifest": upp.key, "units": sel_units}
                        key_ups[inp] = sorted(sel_units.values())
                    else:
                        ups[inp] = {"step": up, "key": upp.key}
                        key_ups[inp] = upp.key
                content = {str(b.id): b.content_hash for b in sc.batches if b.id in set(selected)}
                inputs_json = {"source": src, "selected": content, "upstream": ups}
                if ctx_keys is not None:
                    inputs_json["context"] = ctx_keys
                key = _h({**head, "source": [src["sha256"], src["options_key"]], "selected": sorted(content.values()),
                          "inputs": key_ups})
                self.steps[name] = StepPlan(name, rs, key, rs.params, st.code_hash(), inputs_json, selected=selected)

    def check(self, names: Iterable[str]) -> None:
        """Look up registrations and verify files (stat-cached sha256) for the given steps."""
        names = list(names)
        stages = {self.steps[n].stage.name for n in names}
        with self.project.read() as conn:
            rows = conn.execute(select(db.results.c.key, db.results.c.path, db.results.c.sha256, db.results.c.kind)
                                .where(db.results.c.stage.in_(stages))).all()
        self.registered = {r.key: r for r in rows}
        self.bad: dict[str, str] = {}
        for n in names:
            sp = self.steps[n]
            sp.notes = []
            if sp.per_batch:
                missing = []
                bad_units = 0
                for bid, k in sp.units.items():
                    r = self.registered.get(k)
                    if r is None:
                        missing.append(bid)
                        continue
                    why = self.store.check(r.path, r.sha256)
                    if why:
                        self.bad[k] = why
                        missing.append(bid)
                        bad_units += 1
                        if bad_units <= 3:
                            sp.notes.append(f"batch {bid}: {why}; recomputing")
                if bad_units > 3:
                    sp.notes.append(f"... {bad_units} bad cache files in all; recomputing them")
                sp.missing_units = missing
                r = self.registered.get(sp.key)
                sp.registered = r is not None and not self.store.check(r.path, r.sha256)
                if r is not None and not sp.registered:
                    self.bad[sp.key] = "manifest"
            else:
                r = self.registered.get(sp.key)
                if r is None:
                    sp.registered = False
                    continue
                why = self.store.check(r.path, r.sha256)
                if why:
                    self.bad[sp.key] = why
                    sp.notes.append(f"{why}; recomputing")
                    sp.registered = False
                else:
                    sp.registered = True

    def scope_for(self, target: str | None) -> list[str]:
        order = list(self.resolved)
        if target is None:
            return order
        if target not in self.resolved:
            raise PipelineError(f"pipeline '{self.spec.name}' has no step '{target}' "
                                f"(steps: {', '.join(order)})")
        need = {target}
        for n in reversed(order):
            if n in need:
                need.update(self.resolved[n].step.needs)
        return [n for n in order if n in need]


# --- runs ---------------------------------------------------------------------------------------------------------


@dataclass
class StepOutcome:
    step: str
    stage: str
    outcome: str  # computed | reused | failed | cancelled | skipped
    key: str
    seconds: float = 0.0
    units_computed: int = 0
    units_reused: int = 0
    notes: list[str] = field(default_factory=list)
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"step": self.step, "stage": self.stage, "outcome": self.outcome, "key": self.key,
                "seconds": round(self.seconds, 4), "units_computed": self.units_computed,
                "units_reused": self.units_reused, "notes": self.notes, "error": self.error}


@dataclass
class RunReport:
    run_id: int
    pipeline: str
    status: str  # done | failed | cancelled
    steps: list[StepOutcome]
    seconds: float
    user: str
    error: str | None = None
    bookkeeping: dict[str, float] = field(default_factory=dict)
    # with run_pipeline(keep_outputs=True): results of whole steps this run computed or loaded, by key (in memory;
    # not part of the JSON report), so a caller that needs them right after the run (model registration) need not
    # load them back from the cache
    outputs: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        return {"run": self.run_id, "pipeline": self.pipeline, "status": self.status, "user": self.user,
                "seconds": round(self.seconds, 4), "error": self.error,
                "steps": [s.to_json() for s in self.steps],
                "bookkeeping": {k: round(v, 4) for k, v in self.bookkeeping.items()}}

    def step(self, name: str) -> StepOutcome:
        for s in self.steps:
            if s.step == name:
                return s
        raise KeyError(name)

    def raise_for_status(self) -> "RunReport":
        if self.status == "failed":
            raise StageFailed(self.error or "the run failed")
        if self.status == "cancelled":
            raise RunCancelled(f"run {self.run_id} was cancelled; completed stages are kept, nothing partial")
        return self


class _Timer:
    def __init__(self) -> None:
        self.t: dict[str, float] = {}

    def add(self, k: str, dt: float) -> None:
        self.t[k] = self.t.get(k, 0.0) + dt

    def measure(self, k: str):
        timer = self

        class _M:
            def __enter__(self):
                self.t0 = time.perf_counter()

            def __exit__(self, *a):
                timer.add(k, time.perf_counter() - self.t0)

        return _M()


def reap_interrupted(project: Project) -> int:
    """Mark runs left 'running' by a dead process (kill -9, power cut) as 'interrupted'. Returns how many."""
    with project.read() as conn:
        rows = conn.execute(select(db.runs.c.id, db.runs.c.pid).where(db.runs.c.status == "running")).all()
    dead = [r.id for r in rows if r.pid is None or (r.pid != os.getpid() and not _pid_alive(r.pid))]
    if not dead or project.read_only:
        return len(dead)
    now = utc_now()
    with project.write() as conn:
        for rid in dead:
            r = conn.execute(select(db.runs).where(db.runs.c.id == rid)).first()
            if r is None or r.status != "running":
                continue
            detail = json.loads(r.detail_json or "{}")
            detail["error"] = "interrupted: the process running it ended without finishing (killed or crashed)"
            conn.execute(db.runs.update().where(db.runs.c.id == rid).values(
                status="interrupted", finished_at=now, detail_json=canonical_json(detail)))
            audit.append(conn, r.user, "pipeline.run", f"run:{rid}",
                         {"pipeline": r.pipeline, "status": "interrupted", "pid": r.pid}, ts=now)
    return len(dead)


def _other_live_runs(project: Project) -> bool:
    with project.read() as conn:
        rows = conn.execute(select(db.runs.c.pid).where(db.runs.c.status == "running")).all()
    return any(r.pid and r.pid != os.getpid() and _pid_alive(r.pid) for r in rows)


# --- per-batch workers --------------------------------------------------------------------------------------------


@dataclass
class _UnitTask:
    step: str
    stage: Stage
    params: dict[str, Any]
    key: str
    batch_id: int
    seq: int
    row_id_start: int
    rows: int
    data_path: str
    source: SourceInfo
    overrides: list[tuple[int, str, str | None]]
    upstream: dict[str, tuple[str, str, str]]  # input -> (rel path, sha256, kind)
    cache_root: str
    kind: str
    want_flags: bool
    context: Any = None


_readers: dict[str, Any] = {}


def _load_batch_frame(t: _UnitTask) -> pd.DataFrame:
    import pyarrow as pa

    r = _readers.get(t.data_path)
    if r is None:
        r = pa.ipc.open_file(pa.memory_map(t.data_path, "r"))
        _readers[t.data_path] = r
    df = _to_pandas(r.get_batch(t.seq))
    df.index = pd.RangeIndex(t.row_id_start, t.row_id_start + t.rows, name="row")
    _apply_overrides(df, t.source, t.overrides)
    return df


def _unit_worker(t: _UnitTask) -> dict[str, Any]:
    """One batch of a per-batch stage (runs in a joblib worker). Never raises: errors come back as text."""
    import hashlib

    t0 = time.perf_counter()
    try:
        inputs: dict[str, Any] = {"meta": {"batch_id": t.batch_id, "source_id": t.source.id,
                                           "columns": t.source.columns, "label": t.source.label}}
        if "batch" in t.stage.inputs:
            inputs["batch"] = _load_batch_frame(t)
        if t.context is not None:
            inputs["context"] = t.context
        for inp, (rel, sha, kind) in t.upstream.items():
            path = os.path.join(t.cache_root, rel)
            try:
                with open(path, "rb") as fh:
                    actual = hashlib.file_digest(fh, "sha256").hexdigest()
            except OSError:
                actual = None
            if actual != sha:
                return {"batch_id": t.batch_id, "error": f"upstream cache file {rel} changed on disk during the run"}
            inputs[inp] = read_result(t.cache_root, rel, kind)[inp]
        ctx = StageContext(t.step)
        out = t.stage.run_batch(ctx, inputs, t.params)
        out = t.stage.check_outputs(t.step, out)
        compute = time.perf_counter() - t0
        info = write_result(t.cache_root, t.key, t.kind, out)
        flags = None
        if t.want_flags:
            f = out["flags"]
            flags = [tuple(x) for x in f[FLAG_COLUMNS].itertuples(index=False, name=None)]
        return {"batch_id": t.batch_id, "key": t.key, **info, "compute": compute, "flags": flags}
    except OutputMismatch as exc:
        return {"batch_id": t.batch_id, "error": str(exc)}
    except Exception as exc:  # the stage's own failure
        msg = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else "(no message)"
        return {"batch_id": t.batch_id, "error": f"{type(exc).__name__}: {msg}"}


# --- the engine ---------------------------------------------------------------------------------------------------


class _Run:
    def __init__(self, project: Project, spec: PipelineSpec, registry: Registry, user: str, observer: Observer,
                 cancel: TaskState, cfg: ParallelConfig, keep_outputs: bool = False) -> None:
        self.project = project
        self.keep_outputs = keep_outputs
        self.spec = spec
        self.registry = registry
        self.user = user
        self.emit_fn = make_emitter(observer)
        self.cancel = cancel
        self.cfg = cfg
        self.store = ResultStore(project.path, writable=True, tables=project.resource("pipeline.open_tables", OpenTables))
        self.timer = _Timer()
        self.memo: dict[str, dict[str, Any]] = {}
        self.outcomes: list[StepOutcome] = []
        self.run_id = 0
        #: a whole step's result being stored in the background while the next step computes (`_settle`)
        self._pending: _PendingStore | None = None

    def emit(self, kind: str, step: str | None = None, stage: str | None = None, fraction: float | None = None,
             message: str = "", **data: Any) -> None:
        try:
            self.emit_fn(RunEvent(kind, self.spec.name, step, stage, fraction, message, data))
        except Exception:  # an observer bug must not break the run
            pass

    # -- records --

    def _start_record(self, steps: list[str]) -> None:
        with self.project.write() as conn:
            self.run_id = conn.execute(db.runs.insert().values(
                pipeline=self.spec.name, user=self.user, started_at=utc_now(), status="running",
                detail_json=canonical_json({"steps": {}, "scope": steps}), pid=os.getpid())).inserted_primary_key[0]

    def _detail(self, status: str, error: str | None, seconds: float) -> dict[str, Any]:
        return {"scope": [o.step for o in self.outcomes], "steps": {o.step: o.to_json() for o in self.outcomes},
                "error": error, "seconds": round(seconds, 4), "source": self.plan.scope.source.id
                if getattr(self, "plan", None) else None,
                "bookkeeping": {k: round(v, 4) for k, v in self.timer.t.items()}}

    def _progress_record(self, conn) -> None:
        conn.execute(db.runs.update().where(db.runs.c.id == self.run_id).values(
            detail_json=canonical_json({"steps": {o.step: o.to_json() for o in self.outcomes}})))

    def _finish_record(self, status: str, error: str | None, seconds: float) -> None:
        detail = self._detail(status, error, seconds)
        with self.project.write() as conn:
            conn.execute(db.runs.update().where(db.runs.c.id == self.run_id).values(
                status=status, finished_at=utc_now(), detail_json=canonical_json(detail)))
            audit.append(conn, self.user, "pipeline.run", f"run:{self.run_id}", {
                "pipeline": self.spec.name, "status": status, "error": error,
                "steps": {o.step: {"outcome": o.outcome, "key": o.key} for o in self.outcomes}})

    def _register(self, conn, key: str, sp: StepPlan, info: dict[str, Any], kind: str, inputs_json: dict[str, Any],
                  seconds: float) -> None:
        existing = conn.execute(select(db.results.c.key, db.results.c.sha256)
                                .where(db.results.c.key == key)).first()
        row = dict(stage=sp.stage.name, stage_version=sp.stage.version, code_hash=sp.code_hash,
                   params_json=canonical_json(sp.params), inputs_json=canonical_json(inputs_json),
                   path=info["path"], sha256=info["sha256"], kind=kind, run_id=self.run_id, created_at=utc_now(),
                   seconds=seconds)
        if existing is None:
            conn.execute(db.results.insert().values(key=key, **row))
        else:  # re-registration after a corrupted file was recomputed
            conn.execute(db.results.update().where(db.results.c.key == key).values(**row))

    def _register_many(self, conn, sp: StepPlan, items: list[tuple]) -> None:
        keys = [it[0] for it in items]
        existing: set[str] = set()
        for i in range(0, len(keys), 500):
            existing.update(conn.execute(select(db.results.c.key).where(db.results.c.key.in_(keys[i:i + 500])))
                            .scalars())
        now = utc_now()
        new_rows = []
        for key, info, kind, inputs_json, seconds in items:
            if key in existing:
                self._register(conn, key, sp, info, kind, inputs_json, seconds)
                continue
            new_rows.append(dict(key=key, stage=sp.stage.name, stage_version=sp.stage.version,
                                 code_hash=sp.code_hash, params_json=canonical_json(sp.params),
                                 inputs_json=canonical_json(inputs_json), path=info["path"], sha256=info["sha256"],
                                 kind=kind, run_id=self.run_id, created_at=now, seconds=seconds))
        if new_rows:
            conn.execute(db.results.insert(), new_rows)

    # -- main --

    def run(self, target: str | None) -> RunReport:
        t_start = time.perf_counter()
        with self.timer.measure("plan"):
            self.plan = Plan(self.project, self.spec, self.registry, self.store)
            names = self.plan.scope_for(target)
        if not _other_live_runs(self.project):
            with self.project.read() as conn:
                paths = set(conn.execute(select(db.results.c.path)).scalars())
            self.store.sweep(paths, _pid_alive)
        with self.timer.measure("plan"):
            self.plan.check(names)
        self._start_record(names)
        self.emit("run_started", run_id=self.run_id, steps=names)
        status, error = "done", None
        current = None
        try:
            for n in names:
                current = n
                if self.cancel.cancelled():
                    raise Cancelled()
                sp = self.plan.steps[n]
                if sp.per_batch:
                    self._run_per_batch(sp)
                else:
                    self._run_whole(sp)
            self._settle()
        except Cancelled:
            status = "cancelled"
            error = f"cancelled during step '{current}'"
            self._settle_quietly()  # the step before finished: its result is kept
            self.outcomes.append(StepOutcome(current or "", self.plan.steps[current].stage.name if current else "",
                                             "cancelled", self.plan.steps[current].key if current else ""))
            self.emit("cancelled", current, message=error)
        except _StepError as exc:
            status = "failed"
            error = str(exc)
        except BaseException as exc:  # an engine or database failure: record it, then let it surface
            try:
                self._settle_quietly()
            except Exception:
                pass
            seconds = time.perf_counter() - t_start
            try:
                self._finish_record("failed", f"{type(exc).__name__}: {_first_line(exc)}", seconds)
            except Exception:
                pass  # the record stays 'running' and is shown as interrupted once this process ends
            self.store.save()
            raise
        seconds = time.perf_counter() - t_start
        self._finish_record(status, error, seconds)
        self.store.save()
        self.emit("run_finished", run_id=self.run_id, status=status, seconds=seconds, message=error or "")
        return RunReport(self.run_id, self.spec.name, status, self.outcomes, seconds, self.user, error,
                         dict(self.timer.t), dict(self.memo) if status == "done" and self.keep_outputs else {})

    def _fail(self, sp: StepPlan, message: str, t0: float, cleanup: list[str]) -> None:
        if self._pending is not None and self._pending.sp is not sp:
            self._settle_quietly()  # the step before finished: its result is registered first
        for rel in cleanup:
            try:
                (self.store.path(rel)).unlink()
            except OSError:
                pass
            self.store.forget(rel)
        o = StepOutcome(sp.name, sp.stage.name, "failed", sp.key, time.perf_counter() - t0, notes=sp.notes,
                        error=message)
        self.outcomes.append(o)
        self.emit("stage_failed", sp.name, sp.stage.name, message=message)
        raise _StepError(message)

    def _settle(self) -> None:
        """Wait for a result stored in the background, then register it (results are registered in step order,
        each only once its file is durable). Raises _StepError if it could not be stored."""
        p, self._pending = self._pending, None
        if p is None:
            return
        t_w = time.perf_counter()
        p.begin()
        p.task.join()
        waited = time.perf_counter() - t_w
        self.timer.add("write", p.write_seconds)
        if p.error is not None:
            self._fail(p.sp, f"could not store the result of step '{p.sp.name}': {type(p.error).__name__}: "
                       f"{_first_line(p.error)}", p.t0, [])
        t_r = time.perf_counter()
        sp = p.sp
        with self.project.write() as conn:
            self._register(conn, sp.key, sp, p.info, p.kind, sp.inputs_json, p.compute)
            self.outcomes.append(StepOutcome(sp.name, sp.stage.name, "computed", sp.key, p.seconds + waited, 1, 0,
                                             sp.notes))
            self._progress_record(conn)
        self.timer.add("register", time.perf_counter() - t_r)

    def _settle_quietly(self) -> None:
        """`_settle` on a stop (cancel, a later step failing): a store that failed is recorded as that step's
        failure, and the stop is reported as it happened."""
        try:
            self._settle()
        except _StepError:
            pass

    def _progress(self, sp: StepPlan):
        return ProgressThrottle(lambda f, m: self.emit("progress", sp.name, sp.stage.name, f, m))

    # -- per-batch --

    def _run_per_batch(self, sp: StepPlan) -> None:
        t0 = time.perf_counter()
        if self._pending is not None:  # its units run through joblib, not a StageContext: store alongside them
            self._pending.begin()
        for note in sp.notes:
            self.emit("notice", sp.name, sp.stage.name, message=note)
        todo = list(sp.missing_units)
        reused = len(sp.units) - len(todo)
        if not todo and sp.registered:
            self._settle()
            o = StepOutcome(sp.name, sp.stage.name, "reused", sp.key, time.perf_counter() - t0, 0, reused, sp.notes)
            self.outcomes.append(o)
            self.emit("reused", sp.name, sp.stage.name, key=sp.key, units=len(sp.units))
            return
        self.emit("stage_started", sp.name, sp.stage.name, units=len(todo), reused_units=reused)
        progress = self._progress(sp)
        progress(0.0, f"{len(todo)} of {len(sp.units)} batches to compute")
        with self.timer.measure("prepare"):
            tasks = self._unit_tasks(sp, todo)
        written: list[str] = []
        done: dict[int, dict[str, Any]] = {}
        compute = 0.0
        stop_file = self.store.root / "tmp" / f"{os.getpid()}-cancel-{self.run_id}"
        stop_file.parent.mkdir(parents=True, exist_ok=True)
        remove_hook = self.cancel.on_cancel(lambda: stop_file.touch())
        units = run_units(_unit_worker, tasks, self.cfg, self.cancel.cancel_event, str(stop_file))
        try:
            for res in units:
                if "error" in res:
                    bid = res["batch_id"]
                    self._fail(sp, f"stage '{sp.stage.name}' (step '{sp.name}') failed on batch {bid}: "
                               f"{res['error']}", t0, written)
                written.append(res["path"])
                self.store.remember(res["path"], res["sha256"], res["stat"])
                self.timer.add("write_workers", res["seconds"])
                compute += res["compute"]
                done[res["batch_id"]] = res
                progress(len(done) / max(1, len(tasks)), f"batch {len(done)}/{len(tasks)}")
        except Cancelled:
            for rel in written:
                try:
                    self.store.path(rel).unlink()
                except OSError:
                    pass
                self.store.forget(rel)
            raise
        except _StepError:
            raise
        except Exception as exc:  # worker crash, pickling error, backend failure
            self._fail(sp, f"stage '{sp.stage.name}' (step '{sp.name}') failed: {type(exc).__name__}: "
                       f"{_first_line(exc)}", t0, written)
        finally:
            units.close()
            remove_hook()
            try:
                stop_file.unlink()
            except OSError:
                pass
        self._settle()
        t_reg = time.perf_counter()
        self.store.make_durable(written)
        manifest = {"step": sp.name, "stage": sp.stage.name, "units": {str(b): k for b, k in sp.units.items()}}
        minfo = self.store.write(sp.key, "manifest", manifest)
        self.store.make_durable([minfo["path"]])
        seconds = time.perf_counter() - t0
        with self.project.write() as conn:
            self._register_many(conn, sp, [(res["key"], res, sp_kind(sp), sp.unit_inputs[bid], res["compute"])
                                           for bid, res in done.items()])
            self._register(conn, sp.key, sp, minfo, "manifest", sp.inputs_json, seconds)
            if getattr(sp.stage, "stores_flags", False):
                _store_flags(conn, {bid: res["flags"] for bid, res in done.items()}, self.run_id,
                             *_flag_scope(sp.stage))
            o = StepOutcome(sp.name, sp.stage.name, "computed", sp.key, seconds, len(done), reused, sp.notes)
            self.outcomes.append(o)
            self._progress_record(conn)
        self.timer.add("register", time.perf_counter() - t_reg)
        progress(1.0, "done")
        self.emit("stage_finished", sp.name, sp.stage.name, key=sp.key, seconds=seconds, units_computed=len(done),
                  units_reused=reused, compute_seconds=compute)

    def _unit_tasks(self, sp: StepPlan, todo: list[int]) -> list[_UnitTask]:
        sc = self.plan.scope
        by_id = {b.id: b for b in sc.batches}
        ov: dict[int, list] = {}
        if "batch" in sp.stage.inputs:
            with self.project.read() as conn:
                for r in conn.execute(select(db.overrides.c.batch_id, db.overrides.c.row_id, db.overrides.c.column,
                                             db.overrides.c.value)
                                      .join(db.batches, db.batches.c.id == db.overrides.c.batch_id)
                                      .where(db.batches.c.source_id == sc.source.id)):
                    ov.setdefault(r.batch_id, []).append((r.row_id, r.column, r.value))
        data_path = str(self.project.data_dir / sc.source.data_file)
        ups_steps = {inp: self.plan.steps[up] for inp, up in sp.rs.inputs.items() if up is not None}
        # registered upstream units (including the ones just computed in this run)
        with self.project.read() as conn:
            keys = [s.units[b] for s in ups_steps.values() for b in todo]
            reg = {}
            for i in range(0, len(keys), 500):
                for r in conn.execute(select(db.results.c.key, db.results.c.path, db.results.c.sha256,
                                             db.results.c.kind).where(db.results.c.key.in_(keys[i:i + 500]))):
                    reg[r.key] = (r.path, r.sha256, r.kind)
        kind = sp_kind(sp)
        tasks = []
        for bid in todo:
            b = by_id[bid]
            ups = {}
            for inp, s in ups_steps.items():
                k = s.units[bid]
                if k not in reg:
                    raise PipelineError(f"internal: upstream result {k[:12]} of step '{s.name}' is not registered")
                ups[inp] = reg[k]
            tasks.append(_UnitTask(sp.name, sp.stage, sp.params, sp.units[bid], bid, b.seq, b.row_id_start, b.rows,
                                   data_path, sc.source, ov.get(bid, []), ups, str(self.store.root), kind,
                                   bool(getattr(sp.stage, "stores_flags", False)), self.plan.contexts.get(sp.name)))
        return tasks

    # -- whole --

    def _load(self, key: str, arrow: bool = False) -> dict[str, Any]:
        if key in self.memo and not arrow:
            return self.memo[key]
        r = self.plan.registered.get(key)
        if r is None:
            with self.project.read() as conn:
                r = conn.execute(select(db.results.c.key, db.results.c.path, db.results.c.sha256, db.results.c.kind)
                                 .where(db.results.c.key == key)).first()
        if r is None:
            raise PipelineError(f"internal: result {key[:12]} is not registered")
        return self.store.load(key, r.path, r.sha256, r.kind, arrow)

    def _inputs_for(self, sp: StepPlan) -> dict[str, Any]:
        sc = self.plan.scope
        inputs: dict[str, Any] = {"meta": {"source_id": sc.source.id, "columns": sc.source.columns,
                                           "label": sc.source.label, "batches": list(sp.selected)}}
        if sp.name in self.plan.contexts:
            inputs["context"] = self.plan.contexts[sp.name]
        if getattr(sp.stage, "wants_previous", False):
            inputs["previous"] = self._previous(sp)
        for inp, up in sp.rs.inputs.items():
            upp = self.plan.steps[up]
            arrow = inp in getattr(sp.stage, "arrow_inputs", ())  # tables as pyarrow Tables, not DataFrames
            if upp.per_batch:
                keys = [(b, upp.units[b]) for b in sp.selected]
                with self.project.read() as conn:
                    reg = {}
                    flat = [k for _, k in keys]
                    for i in range(0, len(flat), 500):
                        for r in conn.execute(select(db.results.c.key, db.results.c.path, db.results.c.sha256,
                                                     db.results.c.kind).where(db.results.c.key.in_(flat[i:i + 500]))):
                            reg[r.key] = r

                def one(item, inp=inp, arrow=arrow):
                    b, k = item
                    r = reg.get(k)
                    if r is None:
                        raise PipelineError(f"internal: unit {k[:12]} of step '{up}' is not registered")
                    return b, self.store.load(k, r.path, r.sha256, r.kind, arrow)[inp]

                inputs[inp] = dict(threads.map_ordered(one, keys, 4, name="hitl-load"))
            else:
                inputs[inp] = self._load(upp.key, arrow and sp_kind(upp) == "table")[inp]
        return inputs

    def _previous(self, sp: StepPlan) -> Any:
        """The last result of this step in this pipeline (an incremental stage decides what to redo), or None."""
        ok = last_steps(self.project, self.spec.name).get(sp.name, {}).get("ok")
        if not ok or not ok.get("key"):
            return None
        try:
            return self._load(ok["key"])
        except Exception:  # gone or corrupted: the stage starts afresh
            return None

    def _run_whole(self, sp: StepPlan) -> None:
        t0 = time.perf_counter()
        for note in sp.notes:
            self.emit("notice", sp.name, sp.stage.name, message=note)
        if sp.registered:
            self._settle()
            self.outcomes.append(StepOutcome(sp.name, sp.stage.name, "reused", sp.key, time.perf_counter() - t0,
                                             notes=sp.notes))
            self.emit("reused", sp.name, sp.stage.name, key=sp.key)
            return
        self.emit("stage_started", sp.name, sp.stage.name, units=1, reused_units=0)
        progress = self._progress(sp)
        progress(0.0, "loading inputs")
        try:
            with self.timer.measure("load"):
                inputs = self._inputs_for(sp)
        except CorruptResult as exc:
            self._fail(sp, f"step '{sp.name}': an input changed on disk during the run ({exc}); run again", t0, [])
        ctx = StageContext(sp.name, progress, self.cancel)
        if self._pending is not None:  # the step before's result is stored while this step's unit runs
            ctx.unit_started = self._pending.begin
        t_c = time.perf_counter()
        try:
            out = sp.stage.run(ctx, inputs, dict(sp.params))
            out = sp.stage.check_outputs(sp.name, out)
        except Cancelled:
            raise
        except StageFailed as exc:
            self._fail(sp, f"stage '{sp.stage.name}' (step '{sp.name}') failed: {exc}", t0, [])
        except Exception as exc:
            self._fail(sp, f"stage '{sp.stage.name}' (step '{sp.name}') failed: {type(exc).__name__}: "
                       f"{_first_line(exc)}", t0, [])
        compute = time.perf_counter() - t_c
        if self.cancel.cancelled():
            raise Cancelled()
        sp.notes = list(sp.notes) + list(getattr(ctx, "notes", []))
        for note in getattr(ctx, "notes", []):
            self.emit("notice", sp.name, sp.stage.name, message=note)
        kind = result_kind(dict(sp.stage.outputs))
        self._settle()  # the step before is registered before this one
        if getattr(sp.stage, "store_in_background", False) and not getattr(sp.stage, "stores_flags", False):
            self._pending = _PendingStore(self.store, sp, kind, out, t0, compute)
            self.memo[sp.key] = out
            progress(1.0, "done")
            self.emit("stage_finished", sp.name, sp.stage.name, key=sp.key, seconds=time.perf_counter() - t0,
                      units_computed=1, units_reused=0, compute_seconds=compute)
            return
        t_w = time.perf_counter()
        try:
            info = self.store.write(sp.key, kind, out)
            self.store.make_durable([info["path"]])
        except Exception as exc:
            self._fail(sp, f"could not store the result of step '{sp.name}': {type(exc).__name__}: "
                       f"{_first_line(exc)}", t0, [])
        self.timer.add("write", time.perf_counter() - t_w)
        t_r = time.perf_counter()
        seconds = time.perf_counter() - t0
        with self.project.write() as conn:
            self._register(conn, sp.key, sp, info, kind, sp.inputs_json, compute)
            if getattr(sp.stage, "stores_flags", False):
                _store_whole_flags(conn, out["flags"], sp.selected, self.run_id, *_flag_scope(sp.stage))
            self.outcomes.append(StepOutcome(sp.name, sp.stage.name, "computed", sp.key, seconds, 1, 0, sp.notes))
            self._progress_record(conn)
        self.timer.add("register", time.perf_counter() - t_r)
        self.memo[sp.key] = out
        progress(1.0, "done")
        self.emit("stage_finished", sp.name, sp.stage.name, key=sp.key, seconds=seconds, units_computed=1,
                  units_reused=0, compute_seconds=compute)


class _StepError(Exception):
    pass


class _PendingStore:
    """A whole step's result being serialised, hashed, written and made durable on a helper thread while the run
    goes on (`Stage.store_in_background`: a large result, e.g. featurize's matrix, stored while the fit runs). The
    store begins when the next step hands over its long unit (`StageContext.unit_started`), so that it overlaps the
    unit and not the Python set-up before it, or at the latest in `_settle`. The run registers it in `_settle`,
    before the next step's result, on every path (done, failed, cancelled)."""

    def __init__(self, store: ResultStore, sp: StepPlan, kind: str, out: dict[str, Any], t0: float,
                 compute: float) -> None:
        self.store, self.sp, self.kind, self.t0, self.compute = store, sp, kind, t0, compute
        self._out: dict[str, Any] | None = out
        self.info: dict[str, Any] = {}
        self.error: BaseException | None = None
        self.write_seconds = 0.0
        self.seconds = time.perf_counter() - t0
        self.task: threads.Task | None = None

    def begin(self) -> None:
        """Start storing (once; called from the run's thread)."""
        if self.task is not None:
            return
        out, self._out = self._out, None

        def work() -> None:
            t = time.perf_counter()
            try:
                self.info = self.store.write(self.sp.key, self.kind, out)
                self.store.make_durable([self.info["path"]])
            except BaseException as exc:  # reported by _settle in the run's thread
                self.error = exc
            self.write_seconds = time.perf_counter() - t

        self.task = threads.start(work, name=f"hitl-store-{self.sp.name}")


def sp_kind(sp: StepPlan) -> str:
    return result_kind(dict(sp.stage.outputs))


def _first_line(exc: BaseException) -> str:
    s = str(exc).strip()
    return s.splitlines()[0][:300] if s else "(no message)"


def _flag_scope(stage: Stage) -> tuple[tuple[str, ...] | None, tuple[str, ...]]:
    """(only, exclude): the flag kinds a flag-storing stage owns. Several stages may store flags (per-batch cell
    checks, whole-project duplicates and labels); each replaces only its own kinds."""
    only = getattr(stage, "flag_kinds", None)
    return (tuple(only) if only is not None else None), tuple(getattr(stage, "flag_kinds_exclude", ()) or ())


def _kind_filter(F, only: tuple[str, ...] | None, exclude: tuple[str, ...]):
    conds = []
    if only is not None:
        conds.append(F.c.kind.in_(only))
    if exclude:
        conds.append(F.c.kind.not_in(exclude))
    return conds


def _store_whole_flags(conn, flags: pd.DataFrame, batch_ids: list[int], run_id: int,
                       only: tuple[str, ...] | None, exclude: tuple[str, ...]) -> None:
    """Flags of a whole-data stage (a table with `batch_id` + FLAG_COLUMNS) for every selected batch."""
    by: dict[int, list[tuple]] = {int(b): [] for b in batch_ids}
    if len(flags):
        with gc_paused():
            for bid, *rest in flags[["batch_id"] + FLAG_COLUMNS].itertuples(index=False, name=None):
                by.setdefault(int(bid), []).append(tuple(rest))
    _store_flags(conn, by, run_id, only, exclude, keep_same=True)


def _store_flags(conn, flags_by_batch: dict[int, list[tuple] | None], run_id: int,
                 only: tuple[str, ...] | None = None, exclude: tuple[str, ...] = (), keep_same: bool = False) -> None:
    """Replace the open machine flags of re-checked batches; a dismissed flag stays dismissed while its value does.

    `only`/`exclude` limit this to the kinds the storing stage owns. With `keep_same`, an open flag that is found
    again (same row, column, kind and value) keeps its id (a whole-data stage re-checks every batch each run).
    """
    F = db.flags
    bids = [b for b, f in flags_by_batch.items() if f is not None]
    kept: set[tuple] = set()
    same: set[tuple] = set()
    scope = _kind_filter(F, only, exclude)
    for i in range(0, len(bids), 500):
        part = bids[i:i + 500]
        kept.update((r.batch_id, r.row_id, r.column, r.kind, r.value_key) for r in conn.execute(
            select(F.c.batch_id, F.c.row_id, F.c.column, F.c.kind, F.c.value_key)
            .where(and_(F.c.batch_id.in_(part), F.c.status != "open", *scope))))
        if keep_same:
            new = {(b, int(f[0]), f[1], f[2], f[7]) for b in part for f in flags_by_batch[b]}
            drop = []
            for r in conn.execute(select(F.c.id, F.c.batch_id, F.c.row_id, F.c.column, F.c.kind, F.c.value_key)
                                  .where(and_(F.c.batch_id.in_(part), F.c.status == "open", F.c.run_id.is_not(None),
                                              *scope))):
                k = (r.batch_id, r.row_id, r.column, r.kind, r.value_key)
                if k in new and k not in same:
                    same.add(k)
                else:
                    drop.append(r.id)
            for j in range(0, len(drop), 500):
                conn.execute(delete(F).where(F.c.id.in_(drop[j:j + 500])))
        else:
            conn.execute(delete(F).where(and_(F.c.batch_id.in_(part), F.c.status == "open", F.c.run_id.is_not(None),
                                              *scope)))
    rows = []
    skip = kept or same
    with gc_paused():  # one tuple per flag: tens of thousands at once
        for bid in bids:
            bid = int(bid)
            for row_id, column, kind, severity, score, message, suggestion, vkey in flags_by_batch[bid]:
                row_id = int(row_id)
                if skip and ((bid, row_id, column, kind, vkey) in kept or (bid, row_id, column, kind, vkey) in same):
                    continue
                rows.append((bid, row_id, column, kind, severity, float(score), message, suggestion, vkey, run_id))
    if rows:  # one prepared statement, many rows, through the DB-API (no per-row SQLAlchemy parameter building)
        conn.exec_driver_sql(
            'INSERT INTO flags (batch_id, row_id, "column", kind, severity, score, message, suggestion, status, '
            "value_key, run_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'open', ?, ?)", rows)


# --- public API ---------------------------------------------------------------------------------------------------


def run_pipeline(project: Project, pipeline: str | None = None, stage: str | None = None, *, user: str | None = None,
                 observer: Observer = None, cancel: TaskState | None = None, n_jobs: int | None = None,
                 backend: str | None = None, registry: Registry | None = None,
                 keep_outputs: bool = False) -> RunReport:
    """Run what is stale in `pipeline` (or only step `stage` and what it needs). Blocking; call it off the GUI thread.
    `keep_outputs`: the report holds the whole steps' results in memory (`RunReport.outputs`).

    Bad definitions raise a one-line PipelineError before anything is recorded. Stage failures and cancellation
    are recorded and returned in the report (`report.raise_for_status()` turns them into errors).
    """
    if project.read_only:
        raise PipelineError("the project is read-only: a run cannot record its results")
    reap_interrupted(project)
    registry = registry or registry_for(project)
    spec = get_pipeline(project, pipeline)
    cfg = config_from_meta(project, n_jobs=n_jobs, backend=backend)
    r = _Run(project, spec, registry, user or os_user(), observer, cancel if cancel is not None else TaskState(), cfg, keep_outputs)
    return r.run(stage)


# --- status -------------------------------------------------------------------------------------------------------


def _source_line(project: Project, s: dict[str, Any]) -> str:
    try:
        info = get_source(project, int(s["id"]))
        return f"source {info.id} ({info.file_name})"
    except (HitlError, KeyError, ValueError):
        return f"source {s.get('id')}"


def _options_diff(project: Project, a: dict[str, Any], b: dict[str, Any]) -> str:
    try:
        oa = get_source(project, int(a["id"])).options
        ob = get_source(project, int(b["id"])).options
    except (HitlError, KeyError, ValueError):
        return ""
    diffs = [f"{k} {oa.get(k)!r} -> {ob.get(k)!r}" for k in sorted(set(oa) | set(ob))
             if k != "detected" and oa.get(k) != ob.get(k)]
    return ", ".join(diffs)


def _diff_batches(old: dict[str, str], new: dict[str, str]) -> str | None:
    edited = sorted((int(b) for b in new if b in old and old[b] != new[b]))
    added = sorted(int(b) for b in new if b not in old)
    removed = sorted(int(b) for b in old if b not in new)
    parts = []

    def ids(xs: list[int]) -> str:
        return ", ".join(map(str, xs[:8])) + (f", ... ({len(xs)} in all)" if len(xs) > 8 else "")

    if edited:
        parts.append(f"{len(edited)} changed (edited): {ids(edited)}")
    if added:
        parts.append(f"{len(added)} added: {ids(added)}")
    if removed:
        parts.append(f"{len(removed)} removed: {ids(removed)}")
    return "; ".join(parts) if parts else None


def stale_reasons(project: Project, prev: Any, sp: StepPlan) -> list[str]:
    """Why step `sp` differs from its previous result row `prev` (code, version, parameters, data, upstream)."""
    reasons: list[str] = []
    if prev.stage_version != sp.stage.version:
        reasons.append(f"stage version changed: {prev.stage_version} -> {sp.stage.version}")
    if prev.code_hash != sp.code_hash:
        reasons.append(f"code of stage '{sp.stage.name}' changed")
    old_p = json.loads(prev.params_json)
    for k in sorted(set(old_p) | set(sp.params)):
        if old_p.get(k) != sp.params.get(k):
            reasons.append(f"parameter {k} changed: {old_p.get(k)!r} -> {sp.params.get(k)!r}")
    old_i = json.loads(prev.inputs_json)
    new_i = sp.inputs_json
    os_, ns_ = old_i.get("source", {}), new_i.get("source", {})
    source_changed = (os_.get("sha256"), os_.get("options_key"), os_.get("id")) != \
        (ns_.get("sha256"), ns_.get("options_key"), ns_.get("id"))
    if source_changed:
        why = []
        if os_.get("sha256") != ns_.get("sha256"):
            why.append("different file contents")
        else:
            why.append("same file contents")
        od = _options_diff(project, os_, ns_)
        if od:
            why.append(f"import options changed: {od}")
        reasons.append(f"source version changed: {_source_line(project, os_)} -> {_source_line(project, ns_)} "
                       f"({'; '.join(why)})")
    oc, nc = old_i.get("context") or {}, new_i.get("context") or {}
    for k in sorted(set(oc) | set(nc)):
        if oc.get(k) != nc.get(k):
            reasons.append(f"{k.replace('_', ' ')} changed")
    if sp.per_batch:
        if not source_changed:
            d = _diff_batches(old_i.get("batches", {}), new_i.get("batches", {}))
            if d:
                reasons.append(f"batches changed: {d}")
        for inp, u in new_i.get("upstream", {}).items():
            ou = old_i.get("upstream", {}).get(inp, {})
            if ou.get("manifest") != u.get("manifest"):
                reasons.append(f"upstream result of step '{u['step']}' changed")
    else:
        if not source_changed:
            d = _diff_batches(old_i.get("selected", {}), new_i.get("selected", {}))
            if d:
                reasons.append(f"batches changed: {d}")
        for inp, u in new_i.get("upstream", {}).items():
            ou = old_i.get("upstream", {}).get(inp, {})
            if "units" in u:
                if ou.get("units") != u["units"]:
                    changed = sorted(int(b) for b in u["units"] if ou.get("units", {}).get(b) not in
                                     (None, u["units"][b]))
                    msg = f"upstream result of step '{u['step']}' changed"
                    if changed and not source_changed:
                        msg += f" for {len(changed)} batch(es)"
                    reasons.append(msg)
            elif ou.get("key") != u.get("key"):
                reasons.append(f"upstream result of step '{u['step']}' changed")
    return reasons or ["inputs changed"]


@dataclass
class StepStatus:
    step: str
    stage: str
    state: str  # fresh | stale | never run | failed
    reasons: list[str]
    key: str
    last_run: int | None = None
    error: str | None = None
    per_batch: bool = False
    batches_stale: int = 0
    batches_total: int = 0

    def to_json(self) -> dict[str, Any]:
        d = {"step": self.step, "stage": self.stage, "state": self.state, "reasons": self.reasons, "key": self.key,
             "last_run": self.last_run, "error": self.error}
        if self.per_batch:
            d["batches"] = {"stale": self.batches_stale, "total": self.batches_total}
        return d


def step_status(project: Project, spec: PipelineSpec, registry: Registry | None = None) -> list[StepStatus]:
    registry = registry or registry_for(project)
    store = ResultStore(project.path, writable=not project.read_only)
    plan = Plan(project, spec, registry, store)
    plan.check(list(plan.steps))
    last = last_steps(project, spec.name)
    others: dict[tuple[str, str], dict[str, Any]] = {}
    with project.read() as conn:
        names = [r for r in conn.execute(select(db.pipelines.c.name)).scalars() if r != spec.name]
    for other in names:
        for step_name, info in last_steps(project, other).items():
            if info.get("ok") and (step_name, info["ok"].get("stage")) not in others:
                others[(step_name, info["ok"].get("stage"))] = info["ok"]
    out: list[StepStatus] = []
    for n, sp in plan.steps.items():
        info = last.get(n, {})
        ok, attempt = info.get("ok"), info.get("attempt")
        st = StepStatus(n, sp.stage.name, "fresh", [], sp.key, (attempt or {}).get("run"), per_batch=sp.per_batch,
                        batches_total=len(sp.units), batches_stale=len(sp.missing_units))
        if ok is None:  # a variant may have computed this step before: compare with its result
            ok = others.get((n, sp.stage.name))
        if sp.fresh:
            st.state = "fresh"
        elif attempt and attempt.get("outcome") == "failed" and attempt.get("key") == sp.key:
            st.state, st.error = "failed", attempt.get("error")
            st.reasons = [attempt.get("error") or "failed"]
        elif ok or sp.notes or plan.bad.get(sp.key) or (sp.per_batch and len(sp.missing_units) < len(sp.units)):
            st.state = "stale"
            if ok and ok.get("key") != sp.key:
                with project.read() as conn:
                    prev = conn.execute(select(db.results).where(db.results.c.key == ok["key"])).first()
                st.reasons = stale_reasons(project, prev, sp) if prev is not None else [
                    "inputs changed (the previous result is no longer registered)"]
            st.reasons += sp.notes
            if plan.bad.get(sp.key) and not sp.notes:
                st.reasons.append("cache file missing or corrupted; it will be recomputed")
            if not st.reasons and sp.per_batch and sp.missing_units:
                st.reasons = [f"{len(sp.missing_units)} of {len(sp.units)} batches not computed"]
            if not st.reasons:
                st.reasons = ["result missing"]
        else:
            st.state = "never run"
        out.append(st)
    store.save()
    return out


def pipeline_status(project: Project, pipeline: str | None = None,
                    registry: Registry | None = None) -> list[dict[str, Any]]:
    """Per pipeline and step: fresh / stale / never run / failed, with reasons for stale."""
    if not project.read_only:
        reap_interrupted(project)
    registry = registry or registry_for(project)
    specs = [get_pipeline(project, pipeline)] if pipeline else list_pipelines(project)
    out = []
    for spec in specs:
        try:
            steps = [s.to_json() for s in step_status(project, spec, registry)]
            err = None
        except PipelineError as exc:
            steps, err = [], str(exc)
        out.append({"pipeline": spec.name, "source": spec.source, "steps": steps, "error": err})
    return out


# --- runs listing ---------------------------------------------------------------------------------------------------


def list_runs(project: Project, limit: int | None = None) -> list[dict[str, Any]]:
    if not project.read_only:
        reap_interrupted(project)
    with project.read() as conn:
        q = select(db.runs).order_by(db.runs.c.id.desc())
        if limit:
            q = q.limit(limit)
        rows = conn.execute(q).all()
    out = []
    for r in rows:
        d = json.loads(r.detail_json or "{}")
        status = r.status
        if status == "running" and r.pid and r.pid != os.getpid() and not _pid_alive(r.pid):
            status = "interrupted"
        steps = d.get("steps", {})
        out.append({
            "run": r.id, "pipeline": r.pipeline, "user": r.user, "started_at": r.started_at,
            "finished_at": r.finished_at, "status": status, "seconds": d.get("seconds"), "error": d.get("error"),
            "computed": [k for k, s in steps.items() if s.get("outcome") == "computed"],
            "reused": [k for k, s in steps.items() if s.get("outcome") == "reused"],
            "failed": [k for k, s in steps.items() if s.get("outcome") == "failed"],
            "steps": list(steps.values()),
        })
    return list(reversed(out))


# --- lineage --------------------------------------------------------------------------------------------------------


def _find_result(project: Project, ref: str) -> Any:
    is_key = len(ref) >= 6 and all(c in "0123456789abcdef" for c in ref.lower())
    if not is_key:
        pname, _, step = ref.rpartition(":")
        spec = get_pipeline(project, pname or None)
        spec.step(step)
        ok = last_steps(project, spec.name).get(step, {}).get("ok")
        if not ok:
            raise NotFound(f"step '{step}' of pipeline '{spec.name}' has no result yet: run it first "
                           f"(`hitl run DIR --pipeline {spec.name} --stage {step}`)")
        ref = ok["key"]
    with project.read() as conn:
        rows = conn.execute(select(db.results).where(db.results.c.key.like(ref.lower() + "%")).limit(2)).all()
    if not rows:
        raise NotFound(f"no result '{ref}' in this project")
    if len(rows) > 1:
        raise NotFound(f"result prefix '{ref}' is ambiguous: give more characters")
    return rows[0]


def _batch_details(conn, ids: list[int], hashes: dict[str, str]) -> list[dict[str, Any]]:
    if not ids:
        return []
    status = {}
    for i in range(0, len(ids), 500):
        for r in conn.execute(select(db.batches.c.id, db.batches.c.status, db.batches.c.content_hash)
                              .where(db.batches.c.id.in_(ids[i:i + 500]))):
            status[r.id] = (r.status, r.content_hash)
    last: dict[int, Any] = {}
    for i in range(0, len(ids), 500):
        for d in conn.execute(select(db.decisions).where(db.decisions.c.batch_id.in_(ids[i:i + 500]))
                              .order_by(db.decisions.c.id)):
            last[d.batch_id] = d
    out = []
    for b in ids:
        d = last.get(b)
        st = status.get(b, (None, None))
        out.append({"batch": b, "content_hash": hashes.get(str(b)), "status_now": st[0],
                    "changed_since": st[1] is not None and st[1] != hashes.get(str(b)),
                    "decision": None if d is None else {"action": d.action, "user": d.user, "ts": d.ts,
                                                        "content_hash": d.content_hash}})
    return out


def lineage(project: Project, ref: str) -> dict[str, Any]:
    """Walk back from a result to stage versions, parameters, upstream results, batches and source versions."""
    row = _find_result(project, ref)
    with project.read() as conn:
        return _lineage_node(project, conn, row, depth=0)


def _result_row(conn, key: str) -> Any:
    return conn.execute(select(db.results).where(db.results.c.key == key)).first()


def _lineage_node(project: Project, conn, row: Any, depth: int) -> dict[str, Any]:
    inputs = json.loads(row.inputs_json)
    run = conn.execute(select(db.runs.c.id, db.runs.c.user, db.runs.c.started_at, db.runs.c.pipeline)
                       .where(db.runs.c.id == row.run_id)).first() if row.run_id else None
    node: dict[str, Any] = {
        "key": row.key, "stage": row.stage, "stage_version": row.stage_version, "code_hash": row.code_hash,
        "params": json.loads(row.params_json), "kind": row.kind, "path": f"cache/{row.path}", "sha256": row.sha256,
        "created_at": row.created_at, "seconds": row.seconds,
        "run": None if run is None else {"run": run.id, "pipeline": run.pipeline, "user": run.user,
                                         "started_at": run.started_at},
    }
    src = inputs.get("source")
    if "batch" in inputs:  # a per-batch unit
        b = inputs["batch"]
        src = {"id": b["source"]}
        node["batches"] = _batch_details(conn, [b["id"]], {str(b["id"]): b["content_hash"]})
        ups = {inp: {"key": k} for inp, k in inputs.get("upstream", {}).items()}
    elif row.kind == "manifest":
        hashes = inputs.get("batches", {})
        node["batches"] = _batch_details(conn, sorted(int(b) for b in hashes), hashes)
        ups = {inp: {"key": u["manifest"], "step": u["step"]} for inp, u in inputs.get("upstream", {}).items()}
    else:
        hashes = inputs.get("selected", {})
        node["batches"] = _batch_details(conn, sorted(int(b) for b in hashes), hashes)
        ups = {}
        for inp, u in inputs.get("upstream", {}).items():
            if "units" in u:
                ups[inp] = {"key": u.get("manifest"), "step": u["step"], "units": len(u["units"]),
                            "unit_keys": u["units"]}
            else:
                ups[inp] = {"key": u["key"], "step": u["step"]}
    if src and "id" in src:
        try:
            s = get_source(project, int(src["id"]))
            node["source"] = {"id": s.id, "file": s.file_name, "path": s.path, "sha256": s.sha256,
                              "options": {k: v for k, v in s.options.items()}, "imported_at": s.imported_at,
                              "imported_by": s.imported_by}
        except HitlError:
            node["source"] = {"id": src["id"], "missing": True}
    node["upstream"] = []
    for inp, u in ups.items():
        units = u.get("unit_keys")
        if units is not None:
            # the selected batches' results of a per-batch step: describe them through one unit, list every key
            r = _result_row(conn, next(iter(units.values()))) if units else None
        else:
            r = _result_row(conn, u["key"]) if u.get("key") else None
        if r is None:
            node["upstream"].append({"input": inp, "step": u.get("step"), "key": u.get("key"), "missing": True})
            continue
        child = _lineage_node(project, conn, r, depth + 1)
        child["input"] = inp
        if u.get("step"):
            child["step"] = u["step"]
        if units is not None:
            child.update(key=u.get("key"), kind="units", path=None, sha256=None, units=units,
                         batches=node["batches"])
        node["upstream"].append(child)
    return node


__all__ = ["run_pipeline", "pipeline_status", "step_status", "list_runs", "lineage", "reap_interrupted",
           "RunReport", "StepOutcome", "StepStatus", "Plan"]
