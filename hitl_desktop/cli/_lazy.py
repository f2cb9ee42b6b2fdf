"""Lazy imports for the CLI: `hitl --help` and `hitl --version` must not load pandas, SQLAlchemy, scikit-learn...

`lazy("hitl_desktop.core.batches")` returns a stand-in that imports the module on first attribute access, so a
command module can name the core modules it uses at the top and still be cheap to import; each command pays only
for what it touches when it runs.
"""
from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class LazyModule:
    __slots__ = ("_name", "_mod")

    def __init__(self, name: str) -> None:
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_mod", None)

    def _load(self) -> ModuleType:
        mod = object.__getattribute__(self, "_mod")
        if mod is None:
            mod = importlib.import_module(object.__getattribute__(self, "_name"))
            object.__setattr__(self, "_mod", mod)
        return mod

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._load(), attr)

    def __setattr__(self, attr: str, value: Any) -> None:  # monkeypatching reaches the real module
        setattr(self._load(), attr, value)

    def __repr__(self) -> str:
        return f"<lazy module {object.__getattribute__(self, '_name')!r}>"


def lazy(name: str) -> LazyModule:
    return LazyModule(name)
