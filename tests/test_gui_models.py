"""Issue 7 (window): the Models tab — train, versions, metrics side by side, confusion matrix, lineage, signed
Approve/Reject and Export, buttons greyed out with the reason while not allowed."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PySide6.QtWidgets import QDialogButtonBox

from hitl_desktop.core import identity
from hitl_desktop.core import batches as B
from hitl_desktop.core import models as M
from hitl_desktop.core.ingest import ImportOptions
from hitl_desktop.core.project import Project
from hitl_desktop.core.sources import import_file
from hitl_desktop.gui import dialogs
from hitl_desktop.gui.main_window import MainWindow

PW = {"alice": "alice-secret", "bob": "bob-secret1"}


@pytest.fixture(autouse=True)
def _env(monkeypatch, tmp_path):
    monkeypatch.setenv("HITL_SCRYPT_N", "1024")
    monkeypatch.setenv("HITL_PIPELINE_INPROCESS", "1")
    monkeypatch.setenv(M.TRUST_ENV, str(tmp_path / "trust.json"))


@pytest.fixture
def errors():
    seen: list[tuple[str, str]] = []
    dialogs.set_error_sink(lambda title, msg: seen.append((title, msg)))
    yield seen
    dialogs.set_error_sink(None)


@pytest.fixture
def project(tmp_path):
    rng = np.random.default_rng(3)
    x = rng.normal(size=160)
    kind = rng.choice(["a", "b"], size=160)
    df = pd.DataFrame({"x": x.round(3), "kind": kind, "label": np.where(x + (kind == "a") > 0.4, "hi", "lo")})
    df.to_csv(tmp_path / "d.csv", index=False)
    p = Project.init(tmp_path / "p", user="alice", full_name="Alice Admin", password=PW["alice"])
    identity.add_user(p, "alice", "bob", "approver", PW["bob"], "Bob Approver")
    import_file(p, tmp_path / "d.csv", ImportOptions(label="label", batch_size=40), user="alice")
    for b in (1, 2, 3):
        B.decide(p, b, "approve", "bob", signer=identity.signer(p, "bob", PW["bob"]))
    p.close()
    return str(tmp_path / "p")


def open_window(qtbot, path, user):
    win = MainWindow(None, user=user, ask_user=False)
    qtbot.addWidget(win)
    win.show()
    qtbot.waitExposed(win)
    with qtbot.waitSignal(win.batchLoaded, timeout=10000):
        assert win.open_project(path)
    return win


def sign(qtbot, tab, password, comment=None):
    qtbot.waitUntil(lambda: tab.signature_dialog is not None and tab.signature_dialog.isVisible(), timeout=3000)
    dlg = tab.signature_dialog
    if comment is not None:
        dlg.comment.setPlainText(comment)
    dlg.password.setText(password)
    dlg.buttons.button(QDialogButtonBox.StandardButton.Ok).click()
    return dlg


def test_models_tab_train_approve_export(qtbot, project, tmp_path, errors):
    win = open_window(qtbot, project, "alice")
    tab = win.models_tab
    win.tabs.setCurrentWidget(tab)
    qtbot.waitUntil(lambda: tab.target.count() > 0, timeout=5000)
    tab.target.setCurrentText("label")
    # batch 4 is not approved: training is refused with the reason, then allowed on the approved subset
    tab.train()
    qtbot.waitUntil(lambda: bool(errors), timeout=20000)
    assert "not approved: batch 4" in errors[0][1]
    tab.approved_only.setChecked(True)
    with qtbot.waitSignal(tab.modelsChanged, timeout=30000):
        tab.train()
    qtbot.waitUntil(lambda: len(tab.models) == 1, timeout=10000)
    assert "left out 40 rows" in tab.note.text()
    assert tab.table.rowCount() == 1 and tab.table.item(0, 2).text() == "trained"
    # the trainer may not approve: greyed out with the four-eyes reason; export needs an approval first
    assert not tab.approve_button.isEnabled() and "four-eyes" in tab.approve_button.toolTip()
    assert not tab.export_button.isEnabled() and "not approved" in tab.export_button.toolTip()
    assert "four-eyes" in tab.reason.text()
    # confusion matrix drawn, lineage filled, metrics side by side
    assert tab.figure is None  # matplotlib waits until the chart is shown
    tab.detail.setCurrentWidget(tab.chart_host)
    assert tab.figure.axes and tab.figure.axes[0].images
    assert tab.lineage.topLevelItemCount() >= 5 and tab.lineage.topLevelItem(0).text(0) == "pipeline"
    assert tab.metrics.columnCount() == 2 and tab.metrics.item(0, 0).text() == "held-out accuracy"

    # a second version (forest), then both side by side
    tab.estimator.setCurrentText("forest")
    with qtbot.waitSignal(tab.modelsChanged, timeout=30000):
        tab.train()
    qtbot.waitUntil(lambda: len(tab.models) == 2, timeout=10000)
    tab.table.selectAll()
    assert tab.metrics.columnCount() == 3
    assert [tab.metrics.horizontalHeaderItem(i).text() for i in (1, 2)] == ["default:v1", "default:v2"]

    # bob (second person) signs the approval of v1 in the signature dialog
    win.user = "bob"
    with qtbot.waitSignal(tab.modelsChanged, timeout=10000):
        tab.refresh(select=1)
    qtbot.waitUntil(lambda: not win.tasks.busy(), timeout=10000)  # no other refresh still on its way
    tab.select_row(0)
    assert tab.current_id() == 1
    assert tab.approve_button.isEnabled() and tab.reject_button.isEnabled()
    tab.approve_button.click()
    dlg = sign(qtbot, tab, "wrong-password")
    qtbot.waitUntil(lambda: dlg.error.isVisible(), timeout=5000)
    assert "wrong password" in dlg.error.text()
    with qtbot.waitSignal(tab.modelsChanged, timeout=10000):
        sign(qtbot, tab, PW["bob"])
    qtbot.waitUntil(lambda: tab.models[0].status == "approved", timeout=5000)
    assert not tab.approve_button.isEnabled() and "already approved" in tab.approve_button.toolTip()
    assert tab.export_button.isEnabled()

    # reject v2 with a comment
    tab.select_row(1)
    assert tab.current_id() == 2
    tab.reject_button.click()
    with qtbot.waitSignal(tab.modelsChanged, timeout=10000):
        sign(qtbot, tab, PW["bob"], comment="overfits the small classes")
    qtbot.waitUntil(lambda: tab.models[1].status == "rejected", timeout=5000)
    assert not tab.export_button.isEnabled() and "rejected" in tab.export_button.toolTip()

    # export v1 into a new folder, signed by bob
    tab.select_row(0)
    assert tab.current_id() == 1
    out = tmp_path / "bundle"
    tab.choose_folder = lambda: str(out)
    tab.export_button.click()
    sign(qtbot, tab, PW["bob"])
    qtbot.waitUntil(lambda: tab.last_export is not None, timeout=20000)
    man = json.loads((out / "manifest.json").read_text())
    assert man["signer"]["user"] == "bob" and (out / "MODEL_CARD.md").is_file()
    b = M.load_bundle(out)
    assert len(M.predict(b, pd.DataFrame({"x": ["0.5", "-1"], "kind": ["a", "b"]}))) == 2
    with Project.open(project) as p:
        assert M.get_model(p, 1).status == "approved"

    # predict held-out rows with the exported bundle from the window: verified, written whole, summarised
    pd.DataFrame({"x": ["0.5", "-1", "2"], "kind": ["a", "b", "a"]}).to_csv(tmp_path / "new.csv", index=False)
    tab.choose_bundle = lambda: str(out)
    tab.choose_rows = lambda: str(tmp_path / "new.csv")
    tab.choose_output = lambda default: default
    tab.predict_button.click()
    qtbot.waitUntil(lambda: tab.last_prediction is not None, timeout=20000)
    pred = pd.read_csv(tmp_path / "new-predictions.csv")
    assert list(pred.columns[:2]) == ["row", "prediction"] and len(pred) == 3
    assert "3 predictions written to" in tab.note.text() and "signed by Bob Approver" in tab.note.text()
    assert tab.predict_button.isEnabled() and not errors[1:]

    # refusals: a rows file that does not fit the schema, then an altered bundle; no predictions file appears
    pd.DataFrame({"x": ["high"], "kind": ["a"]}).to_csv(tmp_path / "bad.csv", index=False)
    tab.choose_rows = lambda: str(tmp_path / "bad.csv")
    tab.predict_button.click()
    qtbot.waitUntil(lambda: len(errors) == 2, timeout=20000)
    assert errors[1][0] == "Prediction refused" and "column 'x' should hold numbers" in errors[1][1]
    assert not (tmp_path / "bad-predictions.csv").exists()
    (out / "schema.json").write_text((out / "schema.json").read_text() + " ")
    tab.choose_rows = lambda: str(tmp_path / "new.csv")
    tab.choose_output = lambda default: str(tmp_path / "again.csv")
    tab.predict_button.click()
    qtbot.waitUntil(lambda: len(errors) == 3, timeout=20000)
    assert "schema.json was altered" in errors[2][1] and not (tmp_path / "again.csv").exists()
    win.close()
