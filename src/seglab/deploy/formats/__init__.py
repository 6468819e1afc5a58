"""The export formats, one module each, registered here by name: `seglab export --format NAME` writes with
that module's `write` (and its `SUFFIX` names the default file). The table holds module names only, so the
CLI reads the names without importing torch. Adding a format: a module here with `SUFFIX`, `fixed_size(model)`
and `write(...)` (see onnx.py), or for a format that writes a folder `FOLDER = True` and
`write_folder(checkpoint, out, overwrite, repo)` (hf.py), a line below, and its runtime's row in
evaluation/model_files.MODEL_FILES."""
from __future__ import annotations

import importlib
from types import ModuleType

EXPORT_FORMATS = {"onnx": "onnx", "torchscript": "torchscript", "hf": "hf"}  # --format name -> module in this package


def export_format(name: str) -> ModuleType:
    """The module of a registered export format (KeyError for an unknown name; export says which exist)."""
    return importlib.import_module(f"{__name__}.{EXPORT_FORMATS[name]}")
