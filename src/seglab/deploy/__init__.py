"""Model files for other runtimes: `seglab export` in a registered format (formats/: ONNX, INT8 with
quantize.py, TorchScript), carrying the checkpoint's ModelInfo as metadata; evaluation/model_files.py opens
them for predict and eval."""
