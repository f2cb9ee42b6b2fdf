"""Cell edits and flag resolutions as operations: edit, revert, undo, accept, dismiss, reopen a flag.

Each is one write transaction (in `core.flags`) that also resolves or reopens the flags the change touches, and
returns `Changes` naming the batch, the cells, the flags and the trail. `hitl edit|revert|undo|accept|dismiss` and
the window's table call these same functions, so both leave the same rows.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .changes import Changes

if TYPE_CHECKING:
    from ..flags import Resolution
    from ..project import Project


def _changes(res: "Resolution") -> Changes:
    cells = frozenset() if res.edit is None else frozenset({(res.edit.batch_id, res.edit.row_id, res.edit.column)})
    return Changes(batches=frozenset({res.batch_id}), cells=cells, flags=frozenset(f.id for f in res.flags),
                   audit=True, result=res)


def edit_cell(project: "Project", user: str, batch_id: int, row_id: int, column: str, value: str | None,
              reason: str | None = None, resolve_ids: list[int] | None = None) -> Changes:
    """Set a cell (checked against its column's type) and resolve the open flags on it."""
    from .. import flags

    return _changes(flags.edit_cell(project, batch_id, row_id, column, value, user, reason=reason,
                                    resolve_ids=resolve_ids))


def revert_cell(project: "Project", user: str, batch_id: int, row_id: int, column: str,
                reason: str | None = None) -> Changes:
    """Put a cell back to its imported value and reopen the flags its edits had resolved."""
    from .. import flags

    return _changes(flags.revert(project, batch_id, row_id, column, user, reason=reason))


def undo_edit(project: "Project", user: str, batch_id: int, edit_id: int | None = None) -> Changes:
    """Undo one edit (default: the batch's newest edit not yet undone) and reopen the flags it resolved."""
    from .. import flags

    if edit_id is None:
        edit_id = last_undoable_edit(project, batch_id)
    return _changes(flags.undo_edit(project, batch_id, edit_id, user))


def last_undoable_edit(project: "Project", batch_id: int) -> int:
    """The id of the batch's newest edit that is not an undo and has not been undone."""
    from sqlalchemy import and_, select

    from .. import db
    from ..errors import EditRefused

    with project.read() as conn:
        undone = select(db.edits.c.undoes).where(and_(db.edits.c.batch_id == batch_id,
                                                      db.edits.c.undoes.is_not(None)))
        edit_id = conn.execute(select(db.edits.c.id).where(and_(
            db.edits.c.batch_id == batch_id, db.edits.c.kind != "undo", db.edits.c.id.not_in(undone)))
            .order_by(db.edits.c.id.desc()).limit(1)).scalar()
    if edit_id is None:
        raise EditRefused(f"batch {batch_id} has no edit to undo")
    return int(edit_id)


def accept_flag(project: "Project", user: str, flag_id: int) -> Changes:
    """Apply a flag's suggestion (or keep the row out of training for a duplicate) and resolve it."""
    from .. import flags

    return _changes(flags.accept(project, flag_id, user))


def dismiss_flag(project: "Project", user: str, flag_id: int, reason: str) -> Changes:
    """Dismiss a flag with a reason; the value stays as it is."""
    from .. import flags

    return _changes(flags.dismiss(project, flag_id, user, reason))


def reopen_flag(project: "Project", user: str, flag_id: int, reason: str = "undo") -> Changes:
    """Reopen a resolved or dismissed flag."""
    from .. import flags

    return _changes(flags.reopen(project, flag_id, user, reason=reason))
