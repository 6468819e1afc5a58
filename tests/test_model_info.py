"""ModelInfo is the one record of what a model file carries: checkpoints and both export formats give the
same record, older file layouts still read, and bad metadata is a one-line error naming the file."""
import json

import pytest
import torch

from seglab.artifacts import ModelInfo, read_model_info
from seglab.artifacts.checkpoint import save_checkpoint
from seglab.config.schema import default_normalization
from seglab.data.synthetic import synthetic_labels
from seglab.errors import CheckpointError
from seglab.deploy.export import export_checkpoint
from seglab.evaluation.model_files import load_model
from seglab.evaluation.runtimes import OnnxModel, TorchScriptModel
from seglab.models import create_model


def _info(**changes) -> ModelInfo:
    base = dict(name="unet", options={"base_channels": 4, "depth": 2}, in_channels=3, num_classes=3,
                labels=synthetic_labels(3), mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3), input_size=(32, 48),
                image_max=None, conditional=None, pretrained=[{"source": "file.pth", "tensors": 4}])
    return ModelInfo(**{**base, **changes})


def _checkpoint(path, info: ModelInfo, **extra):
    torch.manual_seed(0)
    model = create_model(info.name, in_channels=info.in_channels, num_classes=info.num_classes, **info.options)
    save_checkpoint(path, {"model_state": model.eval().state_dict(), "config": {}, **info.to_dict(), **extra})
    return path


def test_round_trip_keeps_every_field():
    for info in (_info(), _info(input_size=None, image_max=4095.0, in_channels=1, mean=(0.3,), std=(0.2,),
                                size_divisor=32)):
        assert ModelInfo.from_dict(json.loads(json.dumps(info.to_dict()))) == info


def test_checkpoint_onnx_and_torchscript_carry_the_same_record(tmp_path):
    info = _info()
    ckpt = _checkpoint(tmp_path / "m.pt", info)
    assert read_model_info(ckpt) == info
    assert load_model(ckpt).info == info
    onnx = OnnxModel(export_checkpoint(ckpt, "onnx"))
    script = TorchScriptModel(export_checkpoint(ckpt, "torchscript"))
    assert onnx.info == info and script.info == info
    # what predict reads comes from the record
    assert (onnx.mean, onnx.std, onnx.input_size, onnx.labels.names) == (info.mean, info.std, (32, 48), info.labels.names)


def test_older_layouts_still_read(tmp_path):
    info = _info(image_max=1000.0)
    # exports before the record: mean / std / in_channels at the top level, no "normalization"
    old_export = {"labels": info.labels.to_dict(), "mean": list(info.mean), "std": list(info.std),
                  "input_size": [32, 48], "in_channels": 3, "image_max": 1000.0,
                  "model": {k: v for k, v in info.model_meta.items() if k != "in_channels"},
                  "dynamic_size": True, "fixed_size_reason": ""}
    assert ModelInfo.from_dict(old_export) == info
    # checkpoints before the record kept the image scale only in their config
    raw = info.to_dict()
    del raw["image_max"]
    assert ModelInfo.from_dict(raw, config={"data": {"image_max": 1000}}) == info
    # 1-channel checkpoints once stored ImageNet's three values: the first is the one used
    one = _info(in_channels=1, mean=(0.485,), std=(0.229,)).to_dict()
    one["normalization"] = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    assert ModelInfo.from_dict(one).mean == (0.485,)
    # no normalization at all: the defaults a config would have chosen (one home for them)
    bare = info.to_dict()
    del bare["normalization"]
    assert (ModelInfo.from_dict(bare).mean, ModelInfo.from_dict(bare).std) == default_normalization(3)


@pytest.mark.parametrize("edit,pattern", [
    (lambda d: d["model"].update(in_channels=0), r"model\.in_channels is 0"),
    (lambda d: d["labels"].update(names=["a", "b"], palette=[[0, 0, 0], [1, 1, 1]]), r"has 2 class names for a model of 3"),
    (lambda d: d["labels"].update(names=["a", "b"]), r"'labels' do not fit together \(names and palette"),
    (lambda d: d.update(normalization={"mean": [0.5], "std": [0.5]}), r"normalization has 1 mean / 1 std values for 3"),
    (lambda d: d.update(image_max=-1), r"image_max is -1"),
    (lambda d: d.update(input_size=[True, 4]), r"input_size is \[True, 4\]"),
    (lambda d: d["model"].update(pretrained="x.pth"), r"model\.pretrained is not a list"),
    (lambda d: d.update(size_divisor=0), r"size_divisor is 0, expected a whole number"),
])
def test_bad_metadata_is_one_line_naming_the_file(tmp_path, edit, pattern):
    raw = _info().to_dict()
    edit(raw)
    path = tmp_path / "bad.pt"
    save_checkpoint(path, {"model_state": {}, "config": {}, **raw})
    with pytest.raises(CheckpointError, match=pattern) as exc:
        read_model_info(path)
    assert str(exc.value).startswith(f"{path}: checkpoint metadata ") and "\n" not in str(exc.value)
