"""seglab: train, evaluate and compare semantic-segmentation models on real datasets."""
from .api import demo, evaluate, export, inspect, predict, train
from .config import Config, load_config
from .models import create_model, list_models

__version__ = "0.1.0"
__all__ = ["Config", "load_config", "create_model", "list_models", "train", "evaluate", "predict", "export", "inspect", "demo"]
