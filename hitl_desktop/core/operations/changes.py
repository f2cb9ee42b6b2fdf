"""`Changes`: what one operation changed, so a shell redraws only that (the window) or reports it (the CLI)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Changes:
    """Returned by every operation in `core.operations`. Empty sets mean "nothing of that kind changed".

    `cells` holds (batch_id, row_id, column) triples; `flags` flag ids; `models` model ids. `batch_list` is true
    when the queue's membership or order may have changed (an import, a bundle merge), not just one batch's row.
    `project` covers users, roles, policy and settings; `pipeline` the pipeline definitions and their run state.
    `result` is the operation's own return value (an `EditResult`, a `Decision`, a run report, ...).
    """

    batches: frozenset[int] = frozenset()
    cells: frozenset[tuple[int, int, str]] = frozenset()
    flags: frozenset[int] = frozenset()
    models: frozenset[int] = frozenset()
    batch_list: bool = False
    audit: bool = False
    pipeline: bool = False
    project: bool = False
    rules: bool = False
    result: Any = field(default=None, compare=False)

    def __or__(self, other: "Changes") -> "Changes":
        return Changes(
            batches=self.batches | other.batches, cells=self.cells | other.cells, flags=self.flags | other.flags,
            models=self.models | other.models, batch_list=self.batch_list or other.batch_list,
            audit=self.audit or other.audit, pipeline=self.pipeline or other.pipeline,
            project=self.project or other.project, rules=self.rules or other.rules,
            result=other.result if other.result is not None else self.result)

    @property
    def empty(self) -> bool:
        return not (self.batches or self.cells or self.flags or self.models or self.batch_list or self.audit
                    or self.pipeline or self.project or self.rules)
