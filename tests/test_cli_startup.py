"""`hitl --help` / `--version` start instantly: building the parser imports no heavy library (no wall-clock asserts)."""
from __future__ import annotations

import subprocess
import sys

import hitl_desktop

HEAVY = ("pandas", "numpy", "sklearn", "sqlalchemy", "alembic", "pyarrow", "cryptography", "joblib")

PROBE = (
    "import sys; from hitl_desktop.cli.main import build_parser; build_parser(); "
    f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
)


def test_build_parser_imports_nothing_heavy():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_version_exits_0():
    out = subprocess.run([sys.executable, "-m", "hitl_desktop.cli.main", "--version"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"hitl-desktop {hitl_desktop.__version__}"


def test_help_exits_0():
    out = subprocess.run([sys.executable, "-m", "hitl_desktop.cli.main", "--help"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "batches" in out.stdout and "show" in out.stdout


def test_parser_choices_match_the_core():
    from hitl_desktop.cli import choices as C
    from hitl_desktop.core import batches, bundle, identity
    from hitl_desktop.core.pipeline import parallel, registry

    assert C.BATCH_STATUSES == tuple(batches.STATUSES)
    assert C.BUNDLE_TAKES == tuple(bundle.TAKES)
    assert C.ROLES == tuple(identity.ROLES)
    assert C.PARALLEL_BACKENDS == tuple(parallel.BACKENDS)
    assert C.STAGE_PATHS_KEY == registry.STAGE_PATHS_KEY


def test_model_choices_match_the_core():
    from hitl_desktop.cli.main import build_parser
    from hitl_desktop.core.pipeline import model_stages

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    model = next(a for a in sub.choices["train"]._actions if a.dest == "model")
    assert tuple(model.choices) == tuple(model_stages.ESTIMATORS)


def test_module_entry_runs_commands(tmp_path):
    """`python -m hitl_desktop.cli.main COMMAND` dispatches like the `hitl` entry point (one line, exit 2)."""
    missing = tmp_path / "none"
    out = subprocess.run([sys.executable, "-m", "hitl_desktop.cli.main", "batches", str(missing)],
                         capture_output=True, text=True)
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith("hitl: error: no project at"), out.stderr


def test_version_in_process_matches_argparse(capsys):
    import pytest

    from hitl_desktop.cli.main import main

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out == f"hitl-desktop {hitl_desktop.__version__}\n"
    with pytest.raises(SystemExit) as exc:
        main(["--as", "someone", "--version"])  # the parser's own version action: the same output
    assert exc.value.code == 0
    assert capsys.readouterr().out == f"hitl-desktop {hitl_desktop.__version__}\n"
