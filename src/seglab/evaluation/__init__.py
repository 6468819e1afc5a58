"""Evaluation at full resolution (evaluate.py), inference settings and the one home of softmax / argmax
(inference.py), opening model files (model_files.py), prediction of files (predict.py) and in memory
(predictor.py), and the runtimes of exports (runtimes.py)."""
from .evaluate import EvalResult, run_evaluation
from .model_files import LoadedModel, load_model
from .predict import predict_files, predict_image

__all__ = ["EvalResult", "run_evaluation", "LoadedModel", "load_model", "predict_files", "predict_image"]
