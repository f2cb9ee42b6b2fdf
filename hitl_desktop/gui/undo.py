"""Undo/redo over the core's edits: one `QUndoStack` for the whole window, so it survives switching batches.

Each command wraps what the core already did (the first `redo()` pushed by the stack is a no-op) and undoes or
redoes it through `core.flags` with the session's project and user. The command does not run the write itself: it
hands the step to `run_step(command, fn, name)` (the window runs it on its writer thread and applies the result).
A command keeps the id of the edit it last made, so the undo always targets exactly that edit; if the core refuses
(the batch was approved meanwhile, someone else changed the cell), the window shows the reason and clears the stack
rather than pretend.
"""
from __future__ import annotations

from typing import Any, Callable

from PySide6.QtGui import QUndoCommand

from ..core.operations import edits
from .session import WindowSession

#: runs one undo/redo step: `run_step(command, fn, name)`; `fn` is called on the writer thread
RunStep = Callable[["CoreCommand", Callable[[], Any], str], None]


class CoreCommand(QUndoCommand):
    def __init__(self, session: WindowSession, run_step: RunStep, text: str, batch_id: int, row_id: int,
                 column: str | None) -> None:
        super().__init__(text)
        self.session = session
        self.run_step = run_step
        self.batch_id = batch_id
        self.row_id = row_id
        self.column = column
        self._first = True

    def redo(self) -> None:
        if self._first:
            self._first = False
            return
        self.run_step(self, self.do_redo, f"Redo {self.text()}")

    def undo(self) -> None:
        self.run_step(self, self.do_undo, f"Undo {self.text()}")

    # run on the writer thread; return a core.flags.Resolution
    def do_redo(self) -> Any:
        raise NotImplementedError

    def do_undo(self) -> Any:
        raise NotImplementedError


class EditCommand(CoreCommand):
    def __init__(self, session: WindowSession, run_step: RunStep, res, value: str | None) -> None:
        e = res.edit
        super().__init__(session, run_step, f"edit of {e.column} in row {e.row_id}", e.batch_id, e.row_id, e.column)
        self.value = value
        self.edit_id = e.edit_id
        self.resolved = [f.id for f in res.flags]

    def do_undo(self):
        w = self.session
        return edits.undo_edit(w.project, w.user, self.batch_id, self.edit_id).result

    def do_redo(self):
        w = self.session
        res = edits.edit_cell(w.project, w.user, self.batch_id, self.row_id, self.column, self.value,
                              reason="redo", resolve_ids=self.resolved).result
        self.edit_id = res.edit.edit_id
        return res


class RevertCommand(CoreCommand):
    def __init__(self, session: WindowSession, run_step: RunStep, res) -> None:
        e = res.edit
        super().__init__(session, run_step, f"revert of {e.column} in row {e.row_id}", e.batch_id, e.row_id, e.column)
        self.edit_id = e.edit_id

    def do_undo(self):
        w = self.session
        return edits.undo_edit(w.project, w.user, self.batch_id, self.edit_id).result

    def do_redo(self):
        w = self.session
        res = edits.revert_cell(w.project, w.user, self.batch_id, self.row_id, self.column, reason="redo revert").result
        self.edit_id = res.edit.edit_id
        return res


class AcceptCommand(CoreCommand):
    def __init__(self, session: WindowSession, run_step: RunStep, flag: Any, res) -> None:
        super().__init__(session, run_step, f"accept '{flag.suggestion}' ({flag.kind}) in row {flag.row_id}", flag.batch_id,
                         flag.row_id, flag.column)
        self.flag_id = flag.id
        self.edit_id = res.edit.edit_id if res.edit else None

    def do_undo(self):
        w = self.session
        if self.edit_id is None:
            return edits.reopen_flag(w.project, w.user, self.flag_id, reason="undo accept").result
        return edits.undo_edit(w.project, w.user, self.batch_id, self.edit_id).result

    def do_redo(self):
        w = self.session
        res = edits.accept_flag(w.project, w.user, self.flag_id).result
        self.edit_id = res.edit.edit_id if res.edit else None
        return res


class DismissCommand(CoreCommand):
    def __init__(self, session: WindowSession, run_step: RunStep, flag: Any, reason: str) -> None:
        super().__init__(session, run_step, f"dismiss {flag.kind} flag in row {flag.row_id}", flag.batch_id, flag.row_id,
                         flag.column)
        self.flag_id = flag.id
        self.reason = reason

    def do_undo(self):
        w = self.session
        return edits.reopen_flag(w.project, w.user, self.flag_id, reason="undo dismiss").result

    def do_redo(self):
        w = self.session
        return edits.dismiss_flag(w.project, w.user, self.flag_id, self.reason).result

