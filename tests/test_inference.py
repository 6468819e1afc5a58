"""Sliding-window inference and test-time augmentation."""
import json

import numpy as np
import pytest
import torch
from torch import nn

from seglab.cli import main
from seglab.evaluation.inference import (InferenceSettings, gaussian_weights, logits_with, predict_probs,
                                         sliding_window_probs)


class Pointwise(nn.Module):
    """A 1x1 convolution: its prediction at a pixel depends on that pixel only."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 1)

    def forward(self, x):
        return self.conv(x)


class LeftRight(nn.Module):
    """Logits that grow with the column index: not flip-invariant."""

    def forward(self, x):
        w = x.shape[-1]
        ramp = torch.linspace(-2, 2, w).view(1, 1, 1, w).expand(x.shape[0], 1, x.shape[2], w)
        return torch.cat([ramp, -ramp], 1)


@pytest.mark.parametrize("window,stride", [((7, 9), (5, 4)), ((8, 8), None), ((23, 31), None), ((40, 40), None)])
def test_sliding_window_of_pointwise_model_equals_whole_image(window, stride):
    net = Pointwise().eval()
    x = torch.randn(2, 3, 23, 31)
    with torch.no_grad():
        whole = net(x).softmax(1)
        slid = sliding_window_probs(net, x, window, stride)
    assert slid.shape == whole.shape
    assert torch.allclose(slid, whole, atol=1e-5)  # every pixel covered, weights normalised


def test_sliding_window_blends_overlaps():
    # A net that sees where its window is (the mean of a position channel): overlapping windows disagree,
    # and a pixel's result must be the weighted mean of the windows covering it.
    class WindowMean(nn.Module):
        def forward(self, x):
            m = x[:, :1].mean((2, 3), keepdim=True).expand(-1, 1, *x.shape[-2:])
            return torch.cat([m, -m], 1)

    x = torch.arange(12.0).view(1, 1, 1, 12).expand(1, 3, 4, 12).contiguous()
    probs = sliding_window_probs(WindowMean(), x, (4, 6), (4, 3))  # windows at columns 0, 3, 6
    g = gaussian_weights(4, 6)[0]
    p = lambda m: torch.sigmoid(torch.tensor(2 * m))  # noqa: E731  softmax of (m, -m), class 0
    col = 4  # covered by windows starting at 0 (offset 4) and 3 (offset 1)
    expected = (g[4] * p(2.5) + g[1] * p(5.5)) / (g[4] + g[1])
    assert probs[0, 0, 0, col].item() == pytest.approx(expected.item(), rel=1e-5)


def test_flip_tta_averages_mirrored_prediction():
    net = LeftRight()
    x = torch.randn(1, 3, 5, 8)
    probs = predict_probs(net, x, InferenceSettings(flip=True))
    plain = net(x).softmax(1)
    expected = (plain + plain.flip(-1)) / 2
    assert torch.allclose(probs, expected, atol=1e-6)
    assert torch.allclose(probs[..., 0], probs[..., -1], atol=1e-6)  # symmetric after flip averaging


def test_scales_and_log_output():
    net = Pointwise().eval()
    x = torch.ones(1, 3, 16, 20) * 0.3  # constant image: every scale gives the same probabilities
    with torch.no_grad():
        out = logits_with(net, x, (32, 40), InferenceSettings(scales=(0.5, 1.0, 1.5), flip=True))
        ref = net(x).softmax(1)[:, :, :1, :1]
    assert out.shape == (1, 4, 32, 40)
    assert torch.allclose(out.exp(), ref.expand(1, 4, 32, 40), atol=1e-5)
    assert torch.allclose(out.exp().sum(1), torch.ones(1, 32, 40), atol=1e-5)


def test_gaussian_weights():
    g = gaussian_weights(9, 12)
    assert g.shape == (9, 12) and float(g.max()) == 1.0 and float(g.min()) > 0
    assert torch.equal(g, g.flip(0)) and torch.allclose(g, g.flip(1))


def test_eval_and_predict_with_window_tta_and_workers(tmp_path, capsys):
    import copy

    import yaml

    from conftest import TINY

    raw = copy.deepcopy(TINY)
    raw["output"] = {"dir": str(tmp_path / "runs"), "name": "r"}
    raw["train"]["epochs"] = 1
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    assert main(["train", str(cfg)]) == 0
    run = tmp_path / "runs" / "r"
    assert main(["eval", str(run), "--sliding-window", "24", "24", "--stride", "12", "12", "--tta-flip",
                 "--tta-scales", "0.75", "1", "--out", str(tmp_path / "ev")]) == 0
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert m["inference"] == "sliding window 24x24 stride 12x12, flip TTA, scales 0.75/1" and 0 <= m["miou"] <= 1
    images = tmp_path / "imgs"
    images.mkdir()
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray((rng.random((30, 44, 3)) * 255).astype(np.uint8)).save(images / f"i{i}.png")
    for workers, out in ((0, "p0"), (2, "p2")):
        assert main(["predict", str(run / "checkpoints" / "best.pt"), str(images), "--out", str(tmp_path / out),
                     "--workers", str(workers), "--tta-flip"]) == 0
    for i in range(3):
        a = np.asarray(Image.open(tmp_path / "p0" / f"i{i}_mask.png"))
        b = np.asarray(Image.open(tmp_path / "p2" / f"i{i}_mask.png"))
        assert a.shape == (30, 44) and np.array_equal(a, b)
    assert main(["eval", str(run), "--stride", "4", "4"]) == 2
    assert "sliding_stride: needs sliding_window" in capsys.readouterr().err


class Recorder(Pointwise):
    """Pointwise, with a size divisor, recording the input sizes it is given."""

    size_divisor = 8

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x):
        self.seen.append(tuple(x.shape[-2:]))
        return super().forward(x)


def test_inference_pads_images_to_the_models_size_divisor_and_crops_the_logits_back():
    from seglab.evaluation.inference import net_logits
    from seglab.evaluation.predict import logits_at

    net = Recorder().eval()
    x = torch.randn(2, 3, 13, 21)
    with torch.no_grad():
        out = net_logits(net, x)
        assert net.seen == [(16, 24)] and out.shape == (2, 4, 13, 21)
        assert torch.allclose(out, Pointwise().eval()(x), atol=1e-6)  # pointwise: padding changes nothing inside
        logits_at(net, x, (13, 21))
        predict_probs(net, x, InferenceSettings(flip=True, scales=(1.0, 0.5)))
        sliding_window_probs(net, x, (10, 10))
        net_logits(net, torch.randn(1, 3, 16, 24))
    assert all(h % 8 == 0 and w % 8 == 0 for h, w in net.seen[1:]) and net.seen[-1] == (16, 24)
    assert net_logits(net, torch.randn(1, 3, 3, 5)).shape == (1, 4, 3, 5)  # smaller than the pad: replicated


def test_a_tf_padded_timm_encoder_is_fed_its_training_grid_in_eager_and_onnx(tmp_path):
    """timm's tf_* networks pad "same" (by the parity of each level's size): unpadded, an odd-sized image
    moves their feature grid. Their models say 32, torchvision's and scratch models 1; an export records it."""
    import torch.nn.functional as F

    from seglab.artifacts import ModelInfo
    from seglab.artifacts.checkpoint import save_checkpoint
    from seglab.data.synthetic import synthetic_labels
    from seglab.deploy.export import export_checkpoint
    from seglab.evaluation.model_files import load_model
    from seglab.evaluation.predict import logits_at
    from seglab.evaluation.runtimes import OnnxModel
    from seglab.models import create_model

    from seglab.evaluation.inference import size_divisor_of

    assert size_divisor_of(create_model("unet", num_classes=2, encoder="resnet18")) == 1
    assert size_divisor_of(create_model("unet", num_classes=2)) == 1
    options = {"encoder": "timm/tf_efficientnet_lite0", "decoder_channels": [16, 16, 16, 16, 8]}
    torch.manual_seed(0)
    model = create_model("unet", num_classes=2, **options).eval()
    assert model.size_divisor == 32
    x = torch.randn(1, 3, 45, 70)
    with torch.no_grad():
        padded = logits_at(model, x, (45, 70))
        expected = model(F.pad(x, (0, 26, 0, 19), mode="reflect"))[..., :45, :70]
        assert torch.allclose(padded, expected, atol=1e-5)
        assert not torch.allclose(padded[..., :32, :64], model(x)[..., :32, :64], atol=1e-3)  # the grid moved
    info = ModelInfo(name="unet", options=options, in_channels=3, num_classes=2, labels=synthetic_labels(2),
                     mean=(0.5,) * 3, std=(0.5,) * 3)
    ckpt = tmp_path / "m.pt"
    save_checkpoint(ckpt, {"model_state": model.state_dict(), "config": {}, **info.to_dict()})
    assert load_model(ckpt).size_divisor == 32
    onnx = OnnxModel(export_checkpoint(ckpt, "onnx", size=(64, 64)))
    assert onnx.info.size_divisor == 32 and onnx.size_divisor == 32
    assert torch.allclose(logits_at(onnx, x, (45, 70)), padded, atol=1e-3)
