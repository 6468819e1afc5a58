"""Model files for other runtimes: `seglab export` to ONNX (INT8 with quantize.py) and TorchScript, carrying
the checkpoint's ModelInfo as metadata; evaluation/runtimes.py runs them for predict and eval."""
