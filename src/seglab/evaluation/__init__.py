"""Evaluation at full resolution (evaluate.py), inference settings and the one home of softmax / argmax
(inference.py), prediction of files (predict.py) and in memory (predictor.py), exports and their runtimes."""
from .evaluate import EvalResult, run_evaluation
from .predict import LoadedModel, load_model, predict_files, predict_image

__all__ = ["EvalResult", "run_evaluation", "LoadedModel", "load_model", "predict_files", "predict_image"]
