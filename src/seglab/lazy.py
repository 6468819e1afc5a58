"""Package attributes that load their module on first use (PEP 562), so a command's first line does not wait
for torch, albumentations or OpenCV."""
from __future__ import annotations

import importlib
from typing import Any, Callable


def lazy_getattr(package: str, homes: dict[str, str], namespace: dict[str, Any]) -> Callable[[str], Any]:
    """A module `__getattr__` for `package`: `homes` maps each public name to its submodule (relative, no dot);
    a loaded name is kept in `namespace` (the package's globals), so it loads once."""
    def __getattr__(name: str) -> Any:
        if name not in homes:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f".{homes[name]}", package), name)
        namespace[name] = value
        return value

    return __getattr__
