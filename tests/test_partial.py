"""Partial-label training: merged label spaces, marginal / exclusion / conditional losses, the conditional
model, and a short training where the marginal loss recovers a class that naive merging suppresses."""
import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from seglab import api
from seglab.cli import main
from seglab.config import config_from_dict
from seglab.data.datasets import EpochSampler, build_data
from seglab.losses import (ConditionalLoss, ExclusionLoss, MarginalCrossEntropy, MarginalDice, SoftDice,
                           build_loss)
from seglab.models import create_conditional_model
from seglab.models.conditional import ConditionalSegmenter

from conftest import data_of, TINY, save_png
from test_cli import _cfg_file, _fails

IGNORE = 255


def _random_case(n=2, k=4, h=5, w=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, k, h, w, generator=g) * 3
    target = torch.randint(0, k, (n, h, w), generator=g)
    target[0, 0, :3] = IGNORE
    return logits, target


# ---------------------------------------------------------------- losses

def test_marginal_ce_equals_ce_when_all_annotated():
    logits, target = _random_case()
    labelled = torch.ones(2, 4, dtype=torch.bool)
    ref = F.cross_entropy(logits, target, ignore_index=IGNORE)
    assert torch.allclose(MarginalCrossEntropy(IGNORE)(logits, target, labelled), ref, atol=1e-6)
    assert torch.allclose(MarginalCrossEntropy(IGNORE)(logits, target, None), ref, atol=1e-6)
    w = torch.tensor([0.5, 1.0, 2.0, 3.0])
    ref_w = F.cross_entropy(logits, target, weight=w, ignore_index=IGNORE)
    assert torch.allclose(MarginalCrossEntropy(IGNORE, w)(logits, target, labelled), ref_w, atol=1e-6)


def test_marginal_dice_equals_dice_when_all_annotated():
    logits, target = _random_case()
    labelled = torch.ones(2, 4, dtype=torch.bool)
    assert torch.allclose(MarginalDice(IGNORE)(logits, target, labelled), SoftDice(IGNORE)(logits, target), atol=1e-6)


def test_marginal_ce_hand_checked_value_and_gradient():
    # One pixel, classes (bg, a, b); the sample annotates only a, so its 0 pixel is "bg or b".
    z = torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1).requires_grad_()
    labelled = torch.tensor([[True, True, False]])
    loss = MarginalCrossEntropy(IGNORE)(z, torch.zeros(1, 1, 1, dtype=torch.long), labelled)
    e = np.exp([1.0, 2.0, 3.0])
    assert loss.item() == pytest.approx(-math.log((e[0] + e[2]) / e.sum()), rel=1e-6)
    loss.backward()
    p = e / e.sum()
    q0 = p[0] + p[2]
    expected = p - np.array([p[0] / q0, 0.0, p[2] / q0])
    assert np.allclose(z.grad.view(3).numpy(), expected, atol=1e-6)
    # the known bug: a logit sum in place of the log of a probability sum gives another value
    wrong = -(torch.tensor(1.0 + 3.0) - torch.logsumexp(torch.tensor([1.0 + 3.0, 2.0]), 0))
    assert abs(wrong.item() - loss.item()) > 0.1
    # an annotated foreground pixel keeps its ordinary -log p
    z2 = z.detach()
    loss_a = MarginalCrossEntropy(IGNORE)(z2, torch.ones(1, 1, 1, dtype=torch.long), labelled)
    assert loss_a.item() == pytest.approx(-math.log(p[1]), rel=1e-6)


def test_exclusion_hand_checked():
    # pixel labelled a (annotated); b is unannotated, so p_b there is excluded: loss = -log(1 - p_b)
    z = torch.tensor([0.5, 1.0, 2.0]).view(1, 3, 1, 1)
    labelled = torch.tensor([[True, True, False]])
    loss = ExclusionLoss(IGNORE, "ce")(z, torch.ones(1, 1, 1, dtype=torch.long), labelled)
    e = np.exp([0.5, 1.0, 2.0])
    assert loss.item() == pytest.approx(-math.log(1 - e[2] / e.sum()), rel=1e-6)
    # nothing to exclude on a background pixel or when every class is annotated
    assert ExclusionLoss(IGNORE, "ce")(z, torch.zeros(1, 1, 1, dtype=torch.long), labelled).item() == 0.0
    assert ExclusionLoss(IGNORE, "ce")(z, torch.ones(1, 1, 1, dtype=torch.long), torch.ones(1, 3, dtype=torch.bool)).item() == 0.0


def test_exclusion_ce_is_per_labelled_pixel():
    # one foreground pixel among four labelled ones (and one ignored): the sum is divided by 4, as the
    # cross-entropy it is added to is, not by the one excluded pixel
    z = torch.tensor([0.5, 1.0, 2.0]).view(1, 3, 1, 1).expand(1, 3, 1, 5).contiguous()
    target = torch.tensor([[[1, 0, 0, 0, IGNORE]]])
    loss = ExclusionLoss(IGNORE, "ce")(z, target, torch.tensor([[True, True, False]]))
    e = np.exp([0.5, 1.0, 2.0])
    assert loss.item() == pytest.approx(-math.log(1 - e[2] / e.sum()) / 4, rel=1e-6)


@pytest.mark.parametrize("strategy", ["naive", "marginal", "marginal_exclusion", "conditional"])
@pytest.mark.parametrize("name", ["cross_entropy", "dice", "ce_dice"])
def test_losses_finite_with_extreme_logits(strategy, name):
    logits, target = _random_case(k=3)
    logits = (torch.sign(logits) * 1e4).requires_grad_()
    labelled = torch.tensor([[True, True, False], [True, False, True]])
    fn = build_loss(name, ignore_index=IGNORE, weight=None, ce_weight=1.0, dice_weight=1.0, dice_smooth=1.0,
                    strategy=strategy, exclusion_weight=1.0)
    loss = fn(logits, target, labelled)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all(), (strategy, name)


def test_all_ignored_gives_zero_not_nan():
    logits = torch.randn(1, 3, 2, 2, requires_grad=True)
    target = torch.full((1, 2, 2), IGNORE)
    lab = torch.tensor([[True, True, False]])
    for fn in (MarginalCrossEntropy(IGNORE), ExclusionLoss(IGNORE), ConditionalLoss(IGNORE, "bce")):
        assert fn(logits, target, lab).item() == 0.0


def test_conditional_loss_uses_annotated_classes_only():
    logits = torch.randn(2, 3, 4, 4)
    target = torch.randint(0, 3, (2, 4, 4))
    lab = torch.tensor([[True, True, False], [True, False, True]])
    loss = ConditionalLoss(IGNORE, "bce")(logits, target, lab)
    ref = torch.cat([F.binary_cross_entropy_with_logits(logits[0, 1], (target[0] == 1).float(), reduction="none").flatten(),
                     F.binary_cross_entropy_with_logits(logits[1, 2], (target[1] == 2).float(), reduction="none").flatten()])
    assert loss.item() == pytest.approx(ref.mean().item(), rel=1e-6)


# ---------------------------------------------------------------- conditional model

class _CodeEcho(nn.Module):
    """Input-injected stub: the output is a fixed score per class code, so the combination is checkable."""

    def __init__(self, in_channels: int, scores: list[float]):
        super().__init__()
        self.c = in_channels
        self.scores = torch.tensor(scores)

    def forward(self, x):
        code = x[:, self.c:, :1, :1].flatten(1)  # (N, K-1) one-hot planes
        return (code @ self.scores).view(-1, 1, 1, 1).expand(-1, 1, *x.shape[-2:])


@pytest.mark.parametrize("scores,expected", [([-1.0, 2.0, 1.0], 2), ([-1.0, -2.0, -0.5], 0), ([0.3, -2.0, 0.2], 1)])
def test_conditional_combination(scores, expected):
    model = ConditionalSegmenter(_CodeEcho(3, scores), num_classes=4, threshold=0.5, decoder_code=False).eval()
    out = model(torch.zeros(2, 3, 5, 7))
    assert out.shape == (2, 4, 5, 7)
    assert (out.argmax(1) == expected).all()
    # a threshold above every class's probability gives background everywhere
    high = ConditionalSegmenter(_CodeEcho(3, scores), num_classes=4, threshold=0.99, decoder_code=False).eval()
    assert (high(torch.zeros(1, 3, 2, 2)).argmax(1) == 0).all()


@pytest.mark.parametrize("name,options", [("unet", {"base_channels": 4, "depth": 2}), ("lraspp", {})])
def test_conditional_model_shapes(name, options):
    model = create_conditional_model(name, in_channels=3, num_classes=4, **options)
    assert model.decoder_code == (name == "unet")
    x = torch.randn(2, 3, 33, 45)
    model.train()
    lab = torch.tensor([[True, True, False, True], [True, False, False, True]])
    out = model(x, lab)
    assert out["out"].shape == (3, 1, 33, 45)
    assert out["pairs"].tolist() == [[0, 1], [0, 3], [1, 3]]
    model.eval()
    with torch.no_grad():
        scores = model(x)
    assert scores.shape == (2, 4, 33, 45)
    # the batched pass equals one pass per class
    with torch.no_grad():
        for c in range(1, 4):
            single = model._run(x, model.codes[[c - 1, c - 1]])
            assert torch.allclose(scores[:, c:c + 1], single, atol=1e-5)


# ---------------------------------------------------------------- merging sources

def _binary_source(root: Path, name: str, n: int, size=(16, 16), value=255, seed=0):
    rng = np.random.default_rng(seed)
    for i in range(n):
        m = np.zeros(size, np.uint8)
        m[2:8, 2:8] = value
        save_png(root / name / "images" / f"{name}{i}.png", (rng.random((*size, 3)) * 255).astype(np.uint8))
        save_png(root / name / "masks" / f"{name}{i}.png", m)


def _merged_raw(tmp_path, sources, **data):
    raw = copy.deepcopy(TINY)
    raw["data"] = {"kind": "merged", "root": str(tmp_path / "data"), "sources": sources,
                   "random_split": {"val": 0.25, "seed": 0}, **data}
    raw["output"] = {"dir": str(tmp_path / "runs"), "name": "m"}
    return raw


def _two_binary(tmp_path, n=4):
    _binary_source(tmp_path / "data", "polyp", n)
    _binary_source(tmp_path / "data", "lung", n, seed=1)
    return [{"name": "polyp", "images": "polyp/images", "masks": "polyp/masks", "classes": "polyp"},
            {"name": "lung", "images": "lung/images", "masks": "lung/masks", "classes": "lung"}]


def test_merged_label_space_and_samples(tmp_path):
    sources = _two_binary(tmp_path)
    # a multi-class index source mapping two of its classes into the shared names, one new
    root = tmp_path / "data"
    for i in range(4):
        m = np.zeros((16, 16), np.uint8)
        m[:4] = 1
        m[8:12] = 2
        m[12:] = 3  # "Void" -> ignore
        save_png(root / "multi" / "images" / f"m{i}.png", np.zeros((16, 16, 3), np.uint8))
        save_png(root / "multi" / "masks" / f"m{i}.png", m)
    (root / "multi" / "class_dict.csv").write_text("name,r,g,b\nsky,0,0,0\nLung,10,20,30\nTumour,200,0,0\nVoid,1,1,1\n")
    sources.append({"name": "multi", "images": "multi/images", "masks": "multi/masks", "mask_encoding": "index",
                    "palette_file": "multi/class_dict.csv", "classes": {"Lung": "lung", "Tumour": "tumour"}})
    cfg = config_from_dict(_merged_raw(tmp_path, sources), "t")
    data = build_data(cfg.data, cfg.augment)
    assert data.labels.names == ["background", "polyp", "lung", "tumour"]
    assert data.labels.palette[2] == (10, 20, 30) and data.labels.palette[3] == (200, 0, 0)
    assert len(set(data.labels.palette)) == 4
    by_name = {s.name: s for s in data.sources}
    assert by_name["polyp"].labelled.tolist() == [True, True, False, False]
    assert by_name["multi"].labelled.tolist() == [True, False, True, True]
    train = data.readers["train"]
    assert sorted(set(train.source_of)) == [0, 1, 2] and len(train) == 9  # 3 of 4 per source
    for i in range(len(train)):
        _, mask = train.load(i)
        name = data.sources[train.source_of[i]].name
        if name == "polyp":
            assert set(np.unique(mask)) == {0, 1}
        elif name == "lung":
            assert set(np.unique(mask)) == {0, 2}
        else:
            assert set(np.unique(mask)) == {0, 2, 3, 255}
            assert (mask[:4] == 2).all() and (mask[8:12] == 3).all() and (mask[12:] == 255).all()
            assert (train.labelled(i) == by_name["multi"].labelled).all()


def test_merged_pinned_ids_and_class_order(tmp_path):
    sources = _two_binary(tmp_path)
    sources[1]["ids"] = {"lung": 1}
    data = data_of(config_from_dict(_merged_raw(tmp_path, sources), "t"))
    assert data.labels.names == ["background", "lung", "polyp"]
    sources[1].pop("ids")
    data = data_of(config_from_dict(_merged_raw(tmp_path, sources, class_names=["background", "lung", "polyp"]), "t"))
    assert data.labels.names == ["background", "lung", "polyp"]


def test_balanced_sampler_draws_groups_equally():
    groups = [0] * 90 + [1] * 10
    s = EpochSampler(100, seed=0, groups=groups)
    counts = np.zeros(2)
    for epoch in range(20):
        s.set_epoch(epoch)
        for i, _ in s:
            counts[groups[i]] += 1
    assert abs(counts[1] / counts.sum() - 0.5) < 0.05
    s.set_epoch(0)
    first = [i for i, _ in s]
    assert first == [i for i, _ in s] and len(first) == 100  # deterministic per epoch


def test_bad_merged_inputs(tmp_path, capsys):
    sources = _two_binary(tmp_path)
    raw = _merged_raw(tmp_path, sources)
    bad = copy.deepcopy(raw)
    bad["data"]["sources"][0]["colors"] = {"polyp": [255, 0, 0]}
    bad["data"]["sources"][1]["colors"] = {"polyp": [0, 255, 0]}
    _fails(capsys, ["inspect", _cfg_file(tmp_path, bad)], r"sources\[lung\]: class 'polyp' has colour \(0, 255, 0\), but source 'polyp' gives it \(255, 0, 0\)")
    bad = copy.deepcopy(raw)
    bad["data"]["sources"][0]["ids"] = {"polyp": 1}
    bad["data"]["sources"][1]["ids"] = {"polyp": 2}
    _fails(capsys, ["inspect", _cfg_file(tmp_path, bad)], r"sources\[lung\]\.ids: class 'polyp' gets id 2, but source 'polyp' gives it 1")
    bad = copy.deepcopy(raw)
    bad["data"]["class_names"] = ["background", "polyp", "lung", "liver"]
    _fails(capsys, ["inspect", _cfg_file(tmp_path, bad)], r"data\.class_names: class 'liver' is named in no source")
    bad = copy.deepcopy(raw)
    (tmp_path / "data" / "empty" / "images").mkdir(parents=True)
    (tmp_path / "data" / "empty" / "masks").mkdir(parents=True)
    save_png(tmp_path / "data" / "empty" / "images" / "x.png", np.zeros((4, 4, 3), np.uint8))
    bad["data"]["sources"].append({"name": "empty", "images": "empty/images", "masks": "empty/masks", "classes": "liver"})
    _fails(capsys, ["inspect", _cfg_file(tmp_path, bad)], r"data\.sources\[empty\]: .*empty/masks: no mask for any of the 1 images")
    _fails(capsys, ["train", _cfg_file(tmp_path, raw), "--set", "loss.strategy=partial"],
           r"loss\.strategy: unknown strategy 'partial'; available: conditional, marginal, marginal_exclusion, multilabel, naive")
    bad = copy.deepcopy(raw)
    bad["data"]["sources"][0]["classes"] = {"tumor": "polyp"}
    _fails(capsys, ["inspect", _cfg_file(tmp_path, bad)], r"sources\[polyp\]\.classes: 'tumor' is not a class of this source; its classes: background, foreground")


def test_inspect_shows_sources(tmp_path, capsys):
    raw = _merged_raw(tmp_path, _two_binary(tmp_path))
    assert main(["inspect", _cfg_file(tmp_path, raw), "--out", str(tmp_path / "insp")]) == 0
    out = capsys.readouterr().out
    assert "merged from 2 sources" in out
    assert "polyp (binary masks): train 3, val 1; annotates polyp; unannotated: lung" in out
    summary = json.loads((tmp_path / "insp" / "inspect.json").read_text())
    assert summary["classes"] == ["background", "polyp", "lung"]


# ---------------------------------------------------------------- training

def _two_object_sources(root: Path, n_a: int, n_b: int, n_test: int):
    """Every image holds a red square (class a) and a green disc (class b). Source A labels only a,
    source B only b; the test set labels both."""
    rng = np.random.default_rng(0)

    def draw(i, split):
        img = (rng.random((24, 24, 3)) * 40).astype(np.uint8)
        a, b = np.zeros((24, 24), bool), np.zeros((24, 24), bool)
        y, x = rng.integers(1, 8, 2)
        a[y:y + 8, x:x + 8] = True
        cy, cx = rng.integers(16, 21, 2)
        yy, xx = np.mgrid[:24, :24]
        b[(yy - cy) ** 2 + (xx - cx) ** 2 <= 12] = True
        b &= ~a
        img[a] = [200, 30, 30]
        img[b] = [30, 200, 30]
        return img, a, b

    for i in range(n_a):
        img, a, _ = draw(i, "a")
        save_png(root / "A" / "images" / f"a{i}.png", img)
        save_png(root / "A" / "masks" / f"a{i}.png", a.astype(np.uint8) * 255)
    for i in range(n_b):
        img, _, b = draw(i, "b")
        save_png(root / "B" / "images" / f"b{i}.png", img)
        save_png(root / "B" / "masks" / f"b{i}.png", b.astype(np.uint8) * 255)
    for i in range(n_test):
        img, a, b = draw(i, "t")
        save_png(root / "T" / "images" / f"t{i}.png", img)
        save_png(root / "T" / "masks" / f"t{i}.png", (a * 1 + b * 2).astype(np.uint8))
    return [
        {"name": "A", "images": "A/images", "masks": "A/masks", "classes": "a"},
        {"name": "B", "images": "B/images", "masks": "B/masks", "classes": "b"},
        {"name": "T", "split": "val", "images": "T/images", "masks": "T/masks", "mask_encoding": "index",
         "class_names": ["background", "a", "b"], "classes": {"a": "a", "b": "b"}},
    ]


def test_marginal_recovers_class_that_naive_suppresses(tmp_path):
    # Source A is 4x larger than B, so naive merging sees b's disc as background 4 times in 5.
    sources = _two_object_sources(tmp_path / "data", 32, 8, 8)
    ious = {}
    for strategy in ("naive", "marginal", "conditional"):
        raw = _merged_raw(tmp_path, sources)
        raw["loss"] = {"name": "cross_entropy", "strategy": strategy}
        raw["model"] = {"name": "unet", "base_channels": 8, "depth": 2}
        raw["optimizer"] = {"name": "adam", "lr": 0.01}
        raw["schedule"] = {"name": "constant"}
        raw["train"].update(epochs=12, batch_size=8)
        raw["output"]["name"] = strategy
        run = api.train(config_from_dict(raw, strategy))
        metrics = json.loads((run.eval_dir("val") / "metrics.json").read_text())
        ious[strategy] = metrics["iou"]
    assert ious["naive"][2] < 0.3, ious  # b suppressed
    assert ious["marginal"][2] > 0.6 and ious["marginal"][1] > 0.6, ious
    assert ious["conditional"][2] > 0.6 and ious["conditional"][1] > 0.6, ious


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_conditional_checkpoint_predicts_and_exports(tmp_path, fmt):
    from seglab.data.labels import LabelSpace, default_palette
    from seglab.artifacts.checkpoint import save_checkpoint
    from seglab.deploy.export import export_checkpoint
    from seglab.evaluation.runtimes import OnnxModel
    from seglab.evaluation.model_files import load_model

    torch.manual_seed(0)
    options = {"base_channels": 4, "depth": 2}
    model = create_conditional_model("unet", in_channels=3, num_classes=3, threshold=0.3, **options).eval()
    path = tmp_path / "cond.pt"
    save_checkpoint(path, {
        "model_state": model.state_dict(), "config": {},
        "labels": LabelSpace(["background", "a", "b"], default_palette(3)).to_dict(),
        "model": {"name": "unet", "options": options, "in_channels": 3, "num_classes": 3,
                  "conditional": {"threshold": 0.3}},
        "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3}, "input_size": [32, 40],
    })
    lm = load_model(path)
    x = torch.randn(2, 3, 32, 40)
    with torch.no_grad():
        ref = model(x)
        assert torch.equal(lm.model(x), ref)
    out = export_checkpoint(path, fmt)
    if fmt == "onnx":
        got = OnnxModel(out)(x)
    else:
        with torch.no_grad():
            got = torch.jit.load(str(out))(x)
    assert got.shape == (2, 3, 32, 40)
    assert float((got - ref).abs().max()) <= 1e-4 * max(1.0, float(ref.abs().max()))


@pytest.mark.parametrize("name,strategy", [("pspnet", "marginal_exclusion"), ("u2net_small", "conditional"),
                                           ("segformer", "marginal")])
def test_strategies_train_zoo_models_with_auxiliary_outputs(tmp_path, name, strategy):
    # the strategies work with any zoo model: partial-label losses also score aux / side outputs
    from test_zoo import FAST

    sources = _two_binary(tmp_path, n=4)
    raw = _merged_raw(tmp_path, sources)
    raw["model"] = {"name": name, **FAST.get(name, {})}
    raw["loss"] = {"name": "ce_dice", "strategy": strategy}
    raw["train"].update(epochs=1, batch_size=2)
    raw["eval"]["num_samples"] = 0
    raw["output"]["name"] = f"{name}_{strategy}"
    run = api.train(config_from_dict(raw, strategy))
    m = json.loads((run.eval_dir("val") / "metrics.json").read_text())
    assert 0.0 <= m["miou"] <= 1.0
    import csv

    row = next(csv.DictReader((run.path / "metrics.csv").open()))
    assert math.isfinite(float(row["train_loss"])) and math.isfinite(float(row["val_loss"]))
