"""seglab: train, evaluate and compare semantic-segmentation models on real datasets."""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"
__all__ = ["Config", "load_config", "create_model", "list_models", "train", "evaluate", "predict", "export", "inspect", "demo"]

# Loaded on first use, so `seglab --help` and a config error do not wait for torch (PEP 562).
_HOMES = {"Config": "config", "load_config": "config", "create_model": "models", "list_models": "models",
          "train": "api", "evaluate": "api", "predict": "api", "export": "api", "inspect": "api", "demo": "api"}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'seglab' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
