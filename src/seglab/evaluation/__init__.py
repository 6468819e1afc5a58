"""Evaluation loop and prediction."""
from .evaluate import EvalResult, run_evaluation
from .predict import LoadedModel, load_model, predict_files, predict_image

__all__ = ["EvalResult", "run_evaluation", "LoadedModel", "load_model", "predict_files", "predict_image"]
