"""What a run leaves for later: checkpoints (tensors plus plain metadata) and ModelInfo, the one record of
what a model file carries besides its weights (also stored in ONNX / TorchScript exports)."""
from .checkpoint import load_checkpoint, read_model_info, save_checkpoint
from .model_info import ModelInfo

__all__ = ["ModelInfo", "load_checkpoint", "read_model_info", "save_checkpoint"]
