"""Registry-wide model tests: a newly registered model is covered without new test code."""
import pytest
import torch

from seglab.errors import ConfigError, SeglabError
from seglab.losses import total_loss
from seglab.models import create_model, describe_model, list_models
from seglab.registry import MODEL_ENCODERS

# Smaller widths only where the default is too slow for a 2-core CPU test; the architecture is the same.
FAST = {"unet": {"base_channels": 8, "depth": 3}, "fcn32s": {"fc_channels": 256}, "fcn16s": {"fc_channels": 256},
        "fcn8s": {"fc_channels": 256}, "fcn": {"encoder": "resnet18"}, "pspnet": {"encoder": "resnet18"},
        "deeplabv2": {"encoder": "resnet18"}, "deeplabv3": {"encoder": "resnet18"},
        "deeplabv3plus": {"encoder": "resnet18"}}
MODELS = list_models()


def _model(name, **kw):
    return create_model(name, in_channels=kw.pop("in_channels", 3), num_classes=kw.pop("num_classes", 4),
                        **{**FAST.get(name, {}), **kw})


@pytest.mark.parametrize("name", MODELS)
def test_forward_backward_odd_sizes_train_and_eval(name):
    torch.manual_seed(0)
    model = _model(name)
    for batch in (1, 2):
        model.train()
        x = torch.randn(batch, 3, 97, 131)
        out = model(x)
        logits = out["out"] if isinstance(out, dict) else out
        assert logits.shape == (batch, 4, 97, 131)
        for aux in (out.get("aux", []) if isinstance(out, dict) else []):
            assert aux.shape == logits.shape
        total_loss(torch.nn.CrossEntropyLoss(), out, torch.randint(0, 4, (batch, 97, 131)), 0.4).backward()
        grads = [p.grad for p in model.parameters() if p.requires_grad]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        model.zero_grad()
        model.eval()
        with torch.no_grad():
            y = model(x)
        assert isinstance(y, torch.Tensor) and y.shape == (batch, 4, 97, 131)  # no aux outputs in eval


@pytest.mark.parametrize("name", MODELS)
def test_other_input_channel_counts(name):
    model = _model(name, in_channels=1, num_classes=2).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 64, 72)).shape == (1, 2, 64, 72)


def _batch():
    """Two 64x64 images of 2x2 noisy 32-pixel cells of 3 classes: learnable even at FCN-32s' output stride."""
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (2, 2, 2), generator=g).repeat_interleave(32, 1).repeat_interleave(32, 2)
    colours = torch.tensor([[0.8, -0.5, 0.1], [-0.6, 0.7, -0.2], [0.0, 0.1, 0.9]])
    x = colours[y].permute(0, 3, 1, 2) + 0.3 * torch.randn(2, 3, 64, 64, generator=g)
    return x, y


def _without_dropout(model):
    """Training-mode forward (batch statistics) with dropout off: what the weights have learnt."""
    for m in model.modules():
        if isinstance(m, (torch.nn.Dropout, torch.nn.Dropout2d)):
            m.eval()
    return model


@pytest.mark.parametrize("name", MODELS)
def test_every_model_overfits_one_batch(name):
    torch.manual_seed(0)
    x, y = _batch()
    model = _model(name, num_classes=3).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    acc = 0.0
    for step in range(150):
        loss = total_loss(torch.nn.CrossEntropyLoss(), model(x), y, 0.4)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 10 == 9:
            with torch.no_grad():
                out = _without_dropout(model)(x)
                acc = ((out["out"] if isinstance(out, dict) else out).argmax(1) == y).float().mean().item()
            model.train()
            if acc >= 0.95:
                break
    assert acc >= 0.95, f"{name}: pixel accuracy {acc:.3f} after {step + 1} steps"


def test_parameter_counts_match_torchvision():
    import torchvision.models.segmentation as tvs

    for ours, theirs in (("fcn", tvs.fcn_resnet50), ("deeplabv3", tvs.deeplabv3_resnet50)):
        ref = theirs(weights=None, weights_backbone=None, num_classes=21, aux_loss=True)
        n_ref = sum(p.numel() for p in ref.parameters())
        n = sum(p.numel() for p in create_model(ours, num_classes=21, encoder="resnet50").parameters())
        assert abs(n - n_ref) / n_ref < 0.01, (ours, n, n_ref)
    ref = tvs.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=21)
    n_ref = sum(p.numel() for p in ref.parameters())
    n = sum(p.numel() for p in create_model("lraspp", num_classes=21).parameters())
    assert abs(n - n_ref) / n_ref < 0.01


@pytest.mark.parametrize("os_,stride", [(32, 32), (16, 16), (8, 8)])
def test_output_stride_dilates_resnet(os_, stride):
    from seglab.models.encoders import build_encoder

    enc = build_encoder("resnet18", output_stride=os_).eval()
    with torch.no_grad():
        feats = enc(torch.randn(1, 3, 64, 64))
    assert [64 // f.shape[-1] for f in feats] == [2, 4, 8, min(16, stride), stride]


def test_backbone_errors_list_what_exists():
    with pytest.raises(ConfigError, match=r"model\.encoder: 'pspnet' takes resnet18, resnet34, resnet50, resnet101, timm/NAME \(any timm encoder\); got 'vgg16_bn'"):
        create_model("pspnet", num_classes=2, encoder="vgg16_bn")
    with pytest.raises(ConfigError, match=r"model\.encoder: 'unet' takes resnet18, .*mobilenet_v3_large, timm/NAME \(any timm encoder\); got 'resnet9'"):
        create_model("unet", num_classes=2, encoder="resnet9")
    with pytest.raises(ConfigError, match=r"'segformer' takes mit_b0, mit_b1, mit_b2; got 'resnet50'"):
        create_model("segformer", num_classes=2, encoder="resnet50")


def test_pretrained_from_local_state_dict_without_network(tmp_path, monkeypatch):
    import torchvision

    import socket

    def no_network(*a, **k):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket, "socket", no_network)  # any download attempt would open a socket
    ref = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(ref.state_dict(), path)
    model = create_model("deeplabv3plus", num_classes=3, encoder="resnet18", pretrained=str(path))
    assert torch.equal(model.encoder.stages[2][0].conv1.weight, ref.layer2[0].conv1.weight)


def test_torchvision_and_mit_weights_load_by_name_with_a_record_or_are_refused(tmp_path):
    import torchvision

    from seglab.models.segformer import MixTransformer
    from seglab.models.weights import weights_records

    ref = torchvision.models.resnet18(weights=None)
    state = {f"backbone.{k}": v for k, v in ref.state_dict().items()
             if not k.startswith("fc.") and not k.endswith("num_batches_tracked")}  # no head; an old file's names
    torch.save(state, tmp_path / "r18.pth")
    model = create_model("unet", num_classes=2, encoder="resnet18", pretrained=str(tmp_path / "r18.pth"))
    assert torch.equal(model.encoder.stages[4][1].conv2.weight, ref.layer4[1].conv2.weight)
    [rec] = weights_records(model)
    assert rec["matched_by"] == "name" and rec["tensors_loaded"] == len(state) and rec["left_random"] == []
    assert rec["file"] == str(tmp_path / "r18.pth") and len(rec["sha256"]) == 64
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), tmp_path / "r34.pth")
    model = create_model("unet", num_classes=2, encoder="resnet18", pretrained=str(tmp_path / "r34.pth"))
    [rec] = weights_records(model)  # ResNet-18's names are all in ResNet-34's: loaded, and the rest is said
    assert "layer1.2.conv1.weight" in rec["unused"] and "fc.weight" not in rec["unused"]
    torch.save(torchvision.models.mobilenet_v2(weights=None).state_dict(), tmp_path / "mnv2.pth")
    with pytest.raises(ConfigError, match=r"mnv2\.pth does not fit this network: by name \d+ tensors are missing"):
        create_model("unet", num_classes=2, encoder="resnet18", pretrained=str(tmp_path / "mnv2.pth"))
    mit = MixTransformer(3, [32, 64, 160, 256], [2, 2, 2, 2])
    torch.save(mit.state_dict(), tmp_path / "mit_b0.pth")
    model = create_model("segformer", num_classes=2, encoder="mit_b0", pretrained=str(tmp_path / "mit_b0.pth"))
    assert all(torch.equal(a, b) for a, b in zip(model.encoder.state_dict().values(), mit.state_dict().values()))
    assert weights_records(model)[0]["tensors_loaded"] == len(mit.state_dict())
    with pytest.raises(ConfigError, match=r"r18\.pth does not fit this network"):
        create_model("segformer", num_classes=2, encoder="mit_b0", pretrained=str(tmp_path / "r18.pth"))


def test_pretrained_imagenet_offline_names_file_and_folder(tmp_path, monkeypatch):
    import socket

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(socket, "socket", lambda *a, **k: (_ for _ in ()).throw(AssertionError("network used")))
    with pytest.raises(SeglabError, match=r"resnet34-\w+\.pth into .*hub/checkpoints"):
        create_model("unet", num_classes=2, encoder="resnet34", pretrained="imagenet")
    # The same file placed in the hub cache is used.
    import torchvision

    folder = tmp_path / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    ref = torchvision.models.resnet34(weights=None)
    name = torchvision.models.ResNet34_Weights.IMAGENET1K_V1.url.rsplit("/", 1)[1]
    torch.save(ref.state_dict(), folder / name)
    model = create_model("unet", num_classes=2, encoder="resnet34", pretrained="imagenet")
    assert torch.equal(model.encoder.stages[0][0].weight, ref.conv1.weight)


def test_freeze_backbone_and_top_stages():
    m = create_model("fcn", num_classes=2, encoder="resnet18", freeze_backbone=True)
    assert not any(p.requires_grad for p in m.encoder.parameters())
    assert all(p.requires_grad for p in m.head.parameters())
    m = create_model("fcn", num_classes=2, encoder="resnet18", freeze_backbone=2)
    trainable = [any(p.requires_grad for p in s.parameters()) for s in m.encoder.stages]
    assert trainable == [False, False, False, True, True]
    m.train()
    assert not m.encoder.stages[0][1].training and m.encoder.stages[4].training  # frozen BN stays in eval


def test_backbone_lr_mult_makes_two_groups():
    from seglab.config import OptimizerConfig
    from seglab.engine.optim import build_optimizer

    m = create_model("deeplabv3plus", num_classes=2, encoder="resnet18")
    opt = build_optimizer(m, OptimizerConfig(lr=0.01, backbone_lr_mult=0.1))
    assert [g["lr"] for g in opt.param_groups] == [0.01, pytest.approx(0.001)]
    n = sum(p.numel() for g in opt.param_groups for p in g["params"])
    assert n == sum(p.numel() for p in m.parameters())


def test_describe_lists_params_flops_and_encoders():
    d = describe_model("deeplabv3plus")
    assert d["parameters"] > 1e7 and d["gflops_512"] > 10 and "mobilenet_v2" in d["encoders"]
    assert set(MODEL_ENCODERS) == set(MODELS)


def test_every_encoder_an_architecture_takes_is_a_row_of_the_encoder_table():
    """Issue 43 item 4: one encoder table (models/encoder_table.py); each architecture's list is a query on it,
    and each row is built where it says (torchvision builders, SegFormer's MiT configurations)."""
    from seglab.models.encoder_table import ENCODER_TABLE, TORCHVISION_FAMILIES, encoders
    from seglab.models.encoders import _TV_BUILDERS
    from seglab.models.segformer import MIT

    rows = {r.name for r in ENCODER_TABLE}
    for model, names in MODEL_ENCODERS.items():
        assert set(names) <= rows, f"{model}: {set(names) - rows} not in the encoder table"
    assert tuple(_TV_BUILDERS) == encoders(*TORCHVISION_FAMILIES) and tuple(MIT) == encoders("mit")
    with pytest.raises(KeyError, match="not in the encoder table: efficientnet"):
        encoders("efficientnet")
