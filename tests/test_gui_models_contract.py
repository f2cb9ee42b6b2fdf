"""Qt's model contract (pytest-qt's `qtmodeltester`, Qt's QAbstractItemModelTester) for the window's models, fed
from real projects."""
from __future__ import annotations

from PySide6.QtCore import QModelIndex, Qt

from hitl_desktop.core.batches import list_batches
from hitl_desktop.core.demo import create_demo_project
from hitl_desktop.core.project import Project
from hitl_desktop.gui.batch_queue import STATUS_FILTERS, BatchQueueModel

from gui_helpers import make_review_project


def test_batch_queue_model_keeps_the_qt_model_contract_on_the_demo_project(qtmodeltester, tmp_path):
    project = create_demo_project(tmp_path / "demo", user="demo")
    try:
        batches = list_batches(project)
    finally:
        project.close()
    assert len(batches) > 1
    model = BatchQueueModel()
    model.set_batches(batches)
    assert model.rowCount() == len(batches)
    # an invalid index or a header past the last column has no data (not the last row's, via _rows[-1])
    assert model.data(QModelIndex()) is None
    assert model.headerData(len(model.HEADERS), Qt.Orientation.Horizontal) is None
    qtmodeltester.check(model, force_py=True)
    qtmodeltester.check(model)  # Qt's own tester too (it keeps watching the model through the changes below)
    for _label, status in STATUS_FILTERS:
        model.set_filter(status)
    model.set_filter(None)
    model.set_batches([])
    assert model.rowCount() == 0
    model.set_batches(batches)
    assert model.batch_ids() == [b.id for b in batches]


def test_batch_queue_model_contract_with_flags_and_a_filter(qtmodeltester, tmp_path):
    path, ids = make_review_project(tmp_path)
    with Project.open(path) as project:
        batches = list_batches(project)
    assert any(b.flags for b in batches), "the review project has open flags (coloured Flags cells)"
    model = BatchQueueModel()
    model.set_batches(batches)
    qtmodeltester.check(model, force_py=True)
    model.set_filter("open")
    qtmodeltester.check(model, force_py=True)
    assert ids["b1"] in model.batch_ids()
