"""Start-up shim shared by the frozen executables (`hitl-desktop` and `hitl`); only ever imported by them.

A frozen program has no `python` to hand to child processes, so multiprocessing and joblib's loky backend re-run
*our* executable with interpreter-style arguments. `boot()` recognises those invocations and runs the requested
child code instead of the application:

* `--multiprocessing-fork ...`, `-c "from multiprocessing.resource_tracker import main..."`: stdlib multiprocessing
  (handled by PyInstaller's `multiprocessing.freeze_support`);
* `-m joblib.externals.loky.backend.popen_loky_posix --process-name N --pipe FD`: a loky worker (Linux, macOS);
* `-c "from joblib.externals.loky.backend.resource_tracker import main; main(FD, V)"`: loky's resource tracker;
* `--multiprocessing-fork HANDLE` (a bare handle, no `key=value`): a loky worker on Windows.

`HITL_STARTUP_PROBE=FILE` (bench/bench_startup.py): when the main window has loaded its first batch, render it,
write the wall-clock time (time.time()) to FILE and quit; the bench subtracts its own launch time.

`--frozen-selfcheck` (undocumented, used by tests/test_packaging.py) imports and exercises every third-party
library the program needs, including a two-process joblib run, and prints a JSON report; exit 0 when all passed.
"""
from __future__ import annotations

import os
import sys

_LOKY_POSIX_WORKER = "joblib.externals.loky.backend.popen_loky_posix"
_LOKY_TRACKER = "from joblib.externals.loky.backend.resource_tracker import main"


def boot() -> None:
    """Divert child-process invocations; return normally when this is a real start of the program."""
    argv = sys.argv
    if len(argv) >= 3 and argv[1] == "-m" and argv[2] == _LOKY_POSIX_WORKER:
        import runpy

        sys.argv = [argv[0], *argv[3:]]
        # alter_sys=False keeps this script as __main__, so loky does not try to re-run it from its (absent) path.
        runpy.run_module(_LOKY_POSIX_WORKER, run_name="__main__", alter_sys=False)
        sys.exit(0)  # the module exits itself; this is a safety net
    if "-c" in argv:
        i = argv.index("-c")
        if i + 1 < len(argv) and argv[i + 1].startswith(_LOKY_TRACKER):
            exec(argv[i + 1], {"__name__": "__main__"})  # noqa: S102 - fixed command from loky, checked above
            sys.exit(0)
    if sys.platform == "win32" and len(argv) == 3 and argv[1] == "--multiprocessing-fork" and "=" not in argv[2]:
        from joblib.externals.loky.backend.popen_loky_win32 import main as loky_main

        loky_main(int(argv[2]))  # exits
        sys.exit(0)

    import multiprocessing

    multiprocessing.freeze_support()  # PyInstaller's version: stdlib spawn workers, resource tracker, forkserver

    if len(argv) >= 2 and argv[1] == "--frozen-selfcheck":
        sys.exit(selfcheck())


def install_startup_probe(path: str) -> None:
    """See the module docstring: time-to-painted-window probe for the start-up benchmark."""
    import time

    from hitl_desktop.gui import main_window

    cls = main_window.MainWindow
    original_init = cls.__init__

    def __init__(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        done = []

        def loaded(_batch_id):
            if done:
                return
            done.append(True)
            from PySide6.QtCore import QTimer
            from PySide6.QtWidgets import QApplication

            def painted():
                self.grab()  # renders the whole window, table included: the first complete paint
                with open(path, "w", encoding="utf-8") as fh:
                    fh.write(repr(time.time()))
                QApplication.instance().quit()

            QTimer.singleShot(0, painted)

        self.batchLoaded.connect(loaded)

    cls.__init__ = __init__


def _square(x: int) -> int:  # a picklable, importable function for the joblib check
    return x * x


def selfcheck() -> int:
    """Exercise the bundled libraries; print one JSON object {check: "ok" | error}; return 0 if all are ok."""
    import json
    import tempfile
    import traceback

    results: dict[str, str] = {}

    def check(name):
        def deco(fn):
            try:
                fn()
                results[name] = "ok"
            except BaseException:  # noqa: BLE001 - report everything
                results[name] = traceback.format_exc(limit=3).strip().splitlines()[-1]
            return fn
        return deco

    @check("version")
    def _():
        import hitl_desktop
        from hitl_desktop._version_fallback import VERSION

        assert hitl_desktop.__version__ == VERSION, (hitl_desktop.__version__, VERSION)

    @check("hitl_desktop modules")
    def _():
        import importlib
        import pkgutil

        import hitl_desktop

        names = [m.name for m in pkgutil.walk_packages(hitl_desktop.__path__, "hitl_desktop.")]
        # Qt: the GUI's own --self-test covers these; migrations run inside Alembic (checked below)
        skip = ("hitl_desktop.gui", "hitl_desktop.tools", "hitl_desktop.core.migrations")
        missing = []
        for name in names:
            if name.startswith(skip) or name.endswith("__main__"):
                continue
            try:
                importlib.import_module(name)
            except Exception as exc:  # noqa: BLE001
                missing.append(f"{name}: {exc}")
        assert len(names) > 10, f"only {len(names)} modules found"
        assert not missing, missing

    @check("resources")
    def _():
        from importlib import resources

        from hitl_desktop.core.demo import demo_data_path

        assert demo_data_path().is_file()
        assert resources.files("hitl_desktop.resources").joinpath("demo").is_dir()

    @check("alembic migrations")
    def _():
        from pathlib import Path

        from alembic.config import Config
        from alembic.script import ScriptDirectory

        import hitl_desktop.core.project as project

        cfg = Config()
        cfg.set_main_option("script_location", str(Path(project.__file__).with_name("migrations")))
        heads = ScriptDirectory.from_config(cfg).get_heads()
        assert heads, "no migration heads"

    @check("pyarrow")
    def _():
        import io

        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.csv as pacsv
        import pyarrow.parquet as pq

        t = pacsv.read_csv(io.BytesIO(b"a,b\n1,x\n2,y\n"))
        buf = io.BytesIO()
        pq.write_table(t, buf)
        t2 = pq.read_table(io.BytesIO(buf.getvalue()))
        assert pc.sum(t2["a"]).as_py() == 3
        sink = pa.BufferOutputStream()
        with pa.ipc.new_file(sink, t.schema) as w:
            w.write_table(t)

    @check("pandas")
    def _():
        import pandas as pd

        assert pd.DataFrame({"a": [1, 2]}).a.sum() == 3

    @check("sklearn/scipy")
    def _():
        import numpy as np
        import scipy.stats
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import cross_val_predict

        rng = np.random.default_rng(0)
        x = rng.normal(size=(60, 3))
        y = (x[:, 0] > 0).astype(int)
        cross_val_predict(LogisticRegression(), x, y, cv=3, method="predict_proba")
        scipy.stats.median_abs_deviation(x[:, 0])

    @check("matplotlib (Agg)")
    def _():
        import io

        from matplotlib.figure import Figure

        fig = Figure(figsize=(2, 2), layout="constrained")
        fig.subplots(1, 2)[0].hist([1, 2, 2, 3])
        fig.savefig(io.BytesIO(), format="png")

    @check("openpyxl")
    def _():
        import io

        import openpyxl

        wb = openpyxl.Workbook()
        wb.active["A1"] = 1
        buf = io.BytesIO()
        wb.save(buf)
        assert openpyxl.load_workbook(io.BytesIO(buf.getvalue())).active["A1"].value == 1

    @check("cryptography")
    def _():
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        k = Ed25519PrivateKey.generate()
        k.public_key().verify(k.sign(b"x"), b"x")

    @check("sqlite")
    def _():
        import sqlite3

        with tempfile.TemporaryDirectory() as d:
            con = sqlite3.connect(os.path.join(d, "t.db"))
            con.execute("pragma journal_mode=wal")
            con.close()

    @check("joblib loky (2 processes)")
    def _():
        from joblib import Parallel, delayed

        out = Parallel(n_jobs=2, backend="loky", timeout=120)(delayed(_square)(i) for i in range(4))
        assert out == [0, 1, 4, 9], out

    sys.stdout.write(json.dumps(results, indent=1) + "\n")
    sys.stdout.flush()
    return 0 if all(v == "ok" for v in results.values()) else 1
