"""The demo project: sample penguin field notes with realistic faults, ready to review."""
from __future__ import annotations

from importlib import resources
from pathlib import Path

from .ingest import ImportOptions
from .project import Project
from .sources import import_file
from .util import os_user

DEMO_FILE = "penguins_field_notes.csv"


def demo_data_path() -> Path:
    """Path of the shipped sample file (works installed from a wheel and frozen)."""
    ref = resources.files("hitl_desktop.resources").joinpath("demo", DEMO_FILE)
    with resources.as_file(ref) as p:
        return Path(p)


def create_demo_project(path: str | Path, user: str | None = None) -> Project:
    """Create a project at `path` with the sample data imported in batches of 200 rows."""
    user = user or os_user()
    project = Project.init(path, user=user, full_name=user, name="Penguin field notes (demo)")
    import_file(project, demo_data_path(), ImportOptions(label="species", batch_size=200), user=user)
    return project
