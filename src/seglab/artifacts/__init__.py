"""What a run leaves for later: its folder (run_dir.py: layout, marker, lock, history), checkpoints (tensors
plus plain metadata) and ModelInfo, the one record of what a model file carries besides its weights (also
stored in ONNX / TorchScript exports). Names load on first use: a run folder is read without torch."""
from __future__ import annotations

from ..lazy import lazy_getattr

_HOMES = {"ModelInfo": "model_info", "Checkpoint": "checkpoint", "ResumeState": "checkpoint",
          "load_checkpoint": "checkpoint", "read_model_info": "checkpoint",
          "save_checkpoint": "checkpoint", "RunDir": "run_dir", "RunLock": "run_dir"}
__all__ = list(_HOMES)

__getattr__ = lazy_getattr(__name__, _HOMES, globals())
