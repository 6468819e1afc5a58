"""seglab: train, evaluate and compare semantic-segmentation models on real datasets."""
from __future__ import annotations

import os

from .lazy import lazy_getattr

# albumentations 2.0.x asks PyPI for its newest version when it is imported (a 2 s time-out and a warning on
# a machine with no route out); seglab opens no connection the user did not ask for. A user's own setting wins.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

__version__ = "0.1.0"
__all__ = ["Config", "load_config", "create_model", "list_models", "train", "evaluate", "predict", "load_model",
           "export", "save_pretrained", "inspect", "demo"]

# Loaded on first use, so `seglab --help` and a config error do not wait for torch (PEP 562).
_HOMES = {"Config": "config", "load_config": "config", "create_model": "models", "list_models": "models",
          "train": "api", "evaluate": "api", "predict": "api", "load_model": "api", "export": "api", "save_pretrained": "api",
          "inspect": "api",
          "demo": "api"}


__getattr__ = lazy_getattr(__name__, _HOMES, globals())


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
