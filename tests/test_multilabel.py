"""Overlapping classes (model.output: multilabel): decoding pixel by pixel, config checks, losses and metrics
against hand-computed cases, and a small multi-label set trained, evaluated, predicted and exported."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from seglab.config import config_from_dict
from seglab.data.labels import LabelSpace
from seglab.data.mask_formats import build_label_space
from seglab.data.mask_formats import MaskDecoder
from seglab.data.multilabel import (class_pixel_counts, pack_masks, pack_target, unpack_masks, unpack_target)
from seglab.errors import ConfigError, DataError
from seglab.evaluation.inference import class_probabilities, label_maps, logits_from_probabilities
from seglab.losses import build_loss
from seglab.metrics import BoundaryIoU, multilabel_counts, summarize_multilabel

NAMES = ["box", "disc", "stripes"]


def _shapes(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """(3, h, w) bool: a box, a disc overlapping it, and stripes crossing both."""
    yy, xx = np.mgrid[:h, :w]
    y0, x0 = rng.integers(0, h // 2), rng.integers(0, w // 2)
    box = (yy >= y0) & (yy < y0 + h // 2) & (xx >= x0) & (xx < x0 + w // 2)
    cy, cx, r = rng.integers(h // 4, 3 * h // 4), rng.integers(w // 4, 3 * w // 4), rng.integers(h // 6, h // 3)
    disc = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
    stripes = (yy // 8 + xx // 8) % 3 == int(rng.integers(0, 3))
    return np.stack([box, disc, stripes])


def write_multilabel_set(root: Path, form: str, n: int = 16, size=(48, 64), seed: int = 0) -> list[np.ndarray]:
    """Images whose colour shows each class (R box, G disc, B stripes, plus noise) and their masks as a
    3-channel PNG per image (`channels`) or a folder of 0/255 masks per class (`class_folders`)."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    truth = []
    for i in range(n):
        m = _shapes(rng, *size)
        truth.append(m)
        img = (m.transpose(1, 2, 0) * 150.0 + rng.normal(40, 20, (*size, 3))).clip(0, 255).astype(np.uint8)
        Image.fromarray(img).save(root / "images" / f"im{i:03d}.png")
        if form == "class_folders":
            for k, name in enumerate(NAMES):
                (root / "masks" / name).mkdir(parents=True, exist_ok=True)
                Image.fromarray(m[k].astype(np.uint8) * 255).save(root / "masks" / name / f"im{i:03d}.png")
        else:
            (root / "masks").mkdir(exist_ok=True)
            Image.fromarray((m.transpose(1, 2, 0) * 255).astype(np.uint8)).save(root / "masks" / f"im{i:03d}.png")
    return truth


def _config(root: Path, form: str, out: Path, **extra) -> dict:
    cfg = {
        "data": {"kind": "folder", "root": str(root), "train": {"images": "images", "masks": "masks"},
                 "mask_encoding": form, "class_names": NAMES, "random_split": {"val": 0.25}},
        "model": {"name": "unet", "output": "multilabel", "base_channels": 8},
        "loss": {"name": ["cross_entropy", "dice"], "strategy": "multilabel"},
        "train": {"epochs": 2, "batch_size": 4, "estimate_steps": 0},
        "eval": {"num_samples": 2, "worst_images": 2},
        "output": {"dir": str(out), "name": form},
    }
    for key, value in extra.items():
        section, name = key.split("__")
        cfg[section][name] = value
    return cfg


def _labels(k: int = 3) -> LabelSpace:
    return build_label_space(encoding="channels", palette_file=None, class_names=NAMES[:k], void_class=None,
                             ignore_index=255)[0]


# --- packing -----------------------------------------------------------------------------------------------

def test_packing_round_trips_in_numpy_and_torch():
    rng = np.random.default_rng(1)
    masks = rng.random((5, 7, 9)) < 0.5
    packed = pack_masks(masks)
    assert packed.dtype == np.uint8 and packed.max() < 32
    assert np.array_equal(unpack_masks(packed, 5), masks)
    t = torch.from_numpy(packed.astype(np.int64))[None]
    assert torch.equal(unpack_target(t, 5)[0], torch.from_numpy(masks))
    assert torch.equal(pack_target(torch.from_numpy(masks)), torch.from_numpy(packed))
    hist = np.bincount(np.append(packed.ravel(), 255), minlength=256)  # the ignore value is no class
    assert class_pixel_counts(hist, 5).tolist() == masks.sum((1, 2)).tolist()


def test_label_space_colours_overlaps_with_the_mean_colour_and_limits_the_class_count():
    labels = _labels()
    assert labels.multilabel and LabelSpace.from_dict(labels.to_dict()).multilabel
    c = labels.colorize(np.array([[0, 1, 2, 3, 255]], np.uint8))[0]
    assert c[0].tolist() == [0, 0, 0] and c[4].tolist() == [0, 0, 0]
    assert c[1].tolist() == list(labels.palette[0]) and c[2].tolist() == list(labels.palette[1])
    expected = np.round((np.array(labels.palette[0]) + np.array(labels.palette[1])) / 2)
    assert c[3].tolist() == expected.tolist()
    with pytest.raises(DataError, match="at most 7"):
        LabelSpace([f"c{i}" for i in range(8)], [(i, i, i) for i in range(8)], 255, multilabel=True)
    with pytest.raises(DataError, match="ignore value of at least"):
        LabelSpace(["a", "b", "c"], [(1, 1, 1)] * 3, 5, multilabel=True)


# --- decoding, pixel by pixel -----------------------------------------------------------------------------

def _expect(masks: np.ndarray) -> np.ndarray:
    return pack_masks(masks.astype(bool))


def test_channels_masks_decode_channel_k_as_class_k(tmp_path):
    rng = np.random.default_rng(2)
    m = rng.random((3, 6, 8)) < 0.5
    decoder = MaskDecoder("channels", _labels())
    Image.fromarray((m.transpose(1, 2, 0) * 255).astype(np.uint8)).save(tmp_path / "rgb.png")
    assert np.array_equal(decoder(tmp_path / "rgb.png"), _expect(m))  # R is class 0, not OpenCV's B
    Image.fromarray(m.transpose(1, 2, 0).astype(np.uint8)).save(tmp_path / "01.png")  # 0/1 values
    assert np.array_equal(decoder(tmp_path / "01.png"), _expect(m))
    import tifffile

    tifffile.imwrite(tmp_path / "planar.tif", (m * 255).astype(np.uint8), photometric="minisblack")  # (K, H, W)
    assert np.array_equal(decoder(tmp_path / "planar.tif"), _expect(m))
    four = rng.random((4, 6, 8)) < 0.5
    tifffile.imwrite(tmp_path / "bands.tif", (four.transpose(1, 2, 0) * 65535).astype(np.uint16), planarconfig="contig")
    four_labels = build_label_space(encoding="channels", palette_file=None, class_names=["a", "b", "c", "d"],
                                    void_class=None, ignore_index=255)[0]
    assert np.array_equal(MaskDecoder("channels", four_labels)(tmp_path / "bands.tif"), _expect(four))
    inverted = MaskDecoder("channels", _labels(), invert=True)
    assert np.array_equal(inverted(tmp_path / "rgb.png"), _expect(~m))


def test_channels_masks_refuse_the_wrong_channel_count_and_palette_images(tmp_path):
    Image.fromarray(np.zeros((4, 5), np.uint8)).save(tmp_path / "grey.png")
    with pytest.raises(DataError, match=r"grey.png: 1 channel, but data.class_names names 3 classes"):
        MaskDecoder("channels", _labels())(tmp_path / "grey.png")
    Image.fromarray(np.zeros((4, 5), np.uint8)).convert("P").save(tmp_path / "p.png")
    with pytest.raises(DataError, match="palette image holds one class per pixel"):
        MaskDecoder("channels", _labels())(tmp_path / "p.png")


def test_class_folder_masks_decode_each_folder_as_its_class(tmp_path):
    rng = np.random.default_rng(3)
    m = rng.random((3, 6, 8)) < 0.5
    for k, name in enumerate(NAMES):
        (tmp_path / name).mkdir()
        Image.fromarray(m[k].astype(np.uint8) * 255).save(tmp_path / name / "a.png")
    decoder = MaskDecoder("class_folders", _labels())
    for name in NAMES:  # whichever class folder the pairing found, the same packed mask
        assert np.array_equal(decoder(tmp_path / name / "a.png"), _expect(m))
    (tmp_path / "disc" / "a.png").unlink()
    with pytest.raises(DataError, match=r"disc/a.png: not found; every class folder needs a mask"):
        decoder(tmp_path / "box" / "a.png")
    Image.fromarray(np.zeros((5, 8), np.uint8)).save(tmp_path / "disc" / "a.png")
    with pytest.raises(DataError, match=r"disc/a.png: 8x5, but .*box/a.png is 8x6"):
        decoder(tmp_path / "box" / "a.png")
    (tmp_path / "other").mkdir()
    Image.fromarray(np.zeros((6, 8), np.uint8)).save(tmp_path / "other" / "a.png")
    with pytest.raises(DataError, match="found folder 'other'"):
        decoder(tmp_path / "other" / "a.png")


def test_a_missing_class_folder_is_named_with_the_folders_found(tmp_path):
    from seglab.data.datasets import build_split

    write_multilabel_set(tmp_path / "d", "class_folders", n=4)
    cfg = config_from_dict(_config(tmp_path / "d", "class_folders", tmp_path, data__class_names=["box", "disk", "stripes"]))
    with pytest.raises(DataError, match="no class folder 'disk'.*found: box, disc, stripes"):
        build_split(cfg.data)


# --- config -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("change, message", [
    ({"model__output": "softmax"}, "holds overlapping classes; set model.output: multilabel"),
    ({"loss__strategy": "naive"}, "loss.strategy: set it to multilabel"),
    ({"data__class_names": None}, "needs data.class_names"),
    ({"data__palette_file": "colors.txt"}, "not a palette file"),
])
def test_config_refuses_a_half_multilabel_setup(tmp_path, change, message):
    with pytest.raises((ConfigError, ValueError), match=message):
        config_from_dict(_config(tmp_path, "channels", tmp_path, **change))


def test_config_refuses_multilabel_output_or_strategy_without_multilabel_masks():
    with pytest.raises((ConfigError, ValueError), match="model.output: multilabel needs multi-label masks"):
        config_from_dict({"model": {"output": "multilabel"}, "loss": {"strategy": "multilabel"}})
    with pytest.raises((ConfigError, ValueError), match="loss.strategy: multilabel is for model.output: multilabel"):
        config_from_dict({"loss": {"strategy": "multilabel"}})


def test_loss_config_refuses_a_loss_without_a_sigmoid_form(tmp_path):
    from seglab.losses import check_loss_config

    cfg = config_from_dict(_config(tmp_path, "channels", tmp_path, loss__name="lovasz"))
    with pytest.raises(ConfigError, match="multilabel strategy has no form of 'lovasz'"):
        check_loss_config(cfg.loss)


# --- losses, hand-computed ------------------------------------------------------------------------------

def _loss_case():
    logits = torch.tensor([[[[2.0, -1.0]], [[0.5, 0.0]]]])  # (1, 2, 1, 2): two classes, two pixels
    target = torch.tensor([[[3, 255]]])  # pixel 0 has both classes; pixel 1 is ignored
    return logits, target


def test_binary_cross_entropy_and_focal_by_hand():
    logits, target = _loss_case()
    bce = build_loss("cross_entropy", ignore_index=255, strategy="multilabel")
    expected = (math.log(1 + math.exp(-2.0)) + math.log(1 + math.exp(-0.5))) / 2
    assert float(bce(logits, target)) == pytest.approx(expected, rel=1e-6)
    weighted = build_loss("cross_entropy", ignore_index=255, strategy="multilabel", weight=torch.tensor([1.0, 3.0]))
    expected_w = (math.log(1 + math.exp(-2.0)) + 3 * math.log(1 + math.exp(-0.5))) / 4
    assert float(weighted(logits, target)) == pytest.approx(expected_w, rel=1e-6)
    focal = build_loss("focal", ignore_index=255, strategy="multilabel", focal_gamma=2.0)
    p0, p1 = 1 / (1 + math.exp(-2.0)), 1 / (1 + math.exp(-0.5))
    expected_f = ((1 - p0) ** 2 * -math.log(p0) + (1 - p1) ** 2 * -math.log(p1)) / 2
    assert float(focal(logits, target)) == pytest.approx(expected_f, rel=1e-6)


def test_binary_dice_by_hand():
    logits = torch.tensor([[[[2.0, -1.0, 0.0]], [[0.5, 0.0, 1.0]]]])
    target = torch.tensor([[[1, 2, 255]]])  # pixel 0: class 0 only; pixel 1: class 1 only; pixel 2 ignored
    dice = build_loss("dice", ignore_index=255, strategy="multilabel", dice_smooth=1.0)
    s = torch.sigmoid(torch.tensor([[2.0, -1.0], [0.5, 0.0]]))
    d0 = (2 * s[0, 0] + 1) / (s[0].sum() + 1 + 1)
    d1 = (2 * s[1, 1] + 1) / (s[1].sum() + 1 + 1)
    assert float(dice(logits, target)) == pytest.approx(1 - float(d0 + d1) / 2, rel=1e-6)
    both = build_loss("ce_dice", ignore_index=255, strategy="multilabel", ce_weight=0.5, dice_weight=2.0)
    bce = build_loss("cross_entropy", ignore_index=255, strategy="multilabel")
    assert float(both(logits, target)) == pytest.approx(0.5 * float(bce(logits, target)) +
                                                       2.0 * float(dice(logits, target)), rel=1e-6)


# --- metrics and inference ------------------------------------------------------------------------------

def test_multilabel_counts_and_summary_by_hand():
    target = torch.tensor([[1, 3, 2, 0, 255]])
    pred = torch.tensor([[1, 1, 3, 2, 3]])
    m = multilabel_counts(pred, target, 2)
    # class 0 truth/pred over the 4 labelled pixels: (1,1) (1,1) (0,1) (0,0); class 1: (0,0) (1,0) (1,1) (0,1)
    assert m[0].tolist() == [[1, 1], [0, 2]] and m[1].tolist() == [[1, 1], [1, 1]]
    s = summarize_multilabel(m)
    assert s["iou"] == pytest.approx([2 / 3, 1 / 3])
    assert s["miou"] == pytest.approx(0.5)
    assert s["pixel_accuracy"] == pytest.approx((3 / 4 + 2 / 4) / 2)
    assert s["precision"] == pytest.approx([2 / 3, 1 / 2]) and s["recall"] == pytest.approx([1.0, 1 / 2])


@pytest.mark.parametrize("backend", ["opencv", "torch"])
def test_multilabel_boundary_iou_is_each_class_binary_boundary_iou(backend):
    rng = np.random.default_rng(4)
    truth, guess = rng.random((3, 40, 50)) < 0.3, rng.random((3, 40, 50)) < 0.3
    truth[0, 5:30, 10:40] = guess[0, 7:30, 10:38] = True
    target, pred = torch.from_numpy(pack_masks(truth)).long(), torch.from_numpy(pack_masks(guess)).long()
    target[:3] = 255
    ml = BoundaryIoU(3, 255, 0.05, backend=backend, multilabel=True)
    ml.update(pred, target)
    for k in range(3):
        tk = torch.where(target == 255, 255, (target >> k) & 1)
        single = BoundaryIoU(2, 255, 0.05, backend=backend)
        single.update((pred >> k) & 1, tk)
        assert int(ml.intersection[k]) == int(single.intersection[1]) and int(ml.union[k]) == int(single.union[1])
    assert int(ml.union.sum()) > 0


def test_label_maps_threshold_each_sigmoid():
    logits = torch.tensor([[[[1.0, -1.0]], [[-0.2, 3.0]]]])  # sigmoids 0.73 0.27 / 0.45 0.95
    assert label_maps(logits, multilabel=True).tolist() == [[[1, 2]]]
    assert label_maps(logits, multilabel=True, threshold=0.4).tolist() == [[[3, 2]]]
    assert label_maps(logits, multilabel=True, threshold=0.9).tolist() == [[[0, 2]]]
    back = logits_from_probabilities(class_probabilities(logits, True), True)
    assert torch.allclose(back, logits, atol=1e-4)


# --- end to end on a small multi-label set the test writes ----------------------------------------------

@pytest.mark.parametrize("form", ["channels", "class_folders"])
def test_a_multilabel_model_trains_evaluates_and_predicts_one_mask_per_class(tmp_path, form):
    import seglab
    from seglab.evaluation.model_files import load_model
    from seglab.evaluation.predict import predict_image

    write_multilabel_set(tmp_path / "d", form)
    cfg = _config(tmp_path / "d", form, tmp_path / "runs", train__epochs=12)
    run = seglab.train(config_from_dict(cfg)).path
    metrics = seglab.evaluate(run, split="val")
    assert metrics["class_names"] == NAMES and len(metrics["iou"]) == 3
    assert np.array(metrics["confusion"]).shape == (3, 2, 2)
    # learnable: each class's colour is in the image; 12 epochs of a tiny U-Net get most of it
    assert metrics["miou"] > 0.6, metrics["miou"]
    rows = (run / "eval" / "val" / "per_image.csv").read_text().splitlines()
    assert len(rows) == 1 + 4 and "box" in rows[0]
    assert (run / "report.html").is_file()
    out = tmp_path / "pred"
    seglab.predict(run / "checkpoints" / "best.pt", [str(tmp_path / "d" / "images" / "im000.png")], out=out,
                   save_probabilities=True)
    lm = load_model(run / "checkpoints" / "best.pt")
    from seglab.data.masks import read_image

    packed = predict_image(lm, read_image(tmp_path / "d" / "images" / "im000.png"))
    for k, name in enumerate(NAMES):
        written = np.array(Image.open(out / f"im000_mask_{name}.png"))
        assert np.array_equal(written, ((packed >> k) & 1) * 255), name
    probs = np.load(out / "im000_prob.npy")
    assert probs.shape == (3, 48, 64) and probs.dtype == np.float16
    sure = (np.abs(probs.astype(np.float32) - 0.5) > 1e-3).all(0)  # float16 rounds some 0.4999 up to 0.5
    assert np.array_equal(pack_masks(probs.astype(np.float32) >= 0.5)[sure], packed[sure])
    from seglab.artifacts.run_dir import RunDir

    assert RunDir(run).remove_own_files() == [] and list(run.iterdir()) == []  # all in the layout --overwrite deletes


def test_multilabel_onnx_export_predicts_what_the_checkpoint_does(tmp_path):
    pytest.importorskip("onnxruntime")
    import seglab
    from seglab.data.masks import read_image
    from seglab.evaluation.model_files import load_model
    from seglab.evaluation.predict import predict_image
    from seglab.evaluation.runtimes import OnnxModel

    write_multilabel_set(tmp_path / "d", "channels", n=8)
    cfg = _config(tmp_path / "d", "channels", tmp_path / "runs", train__epochs=1)
    seglab.train(config_from_dict(cfg))
    ckpt = tmp_path / "runs" / "channels" / "checkpoints" / "last.pt"
    onnx_path = Path(seglab.export(ckpt, fmt="onnx", out=tmp_path / "m.onnx", size=(48, 64)))
    image = read_image(tmp_path / "d" / "images" / "im001.png")
    ref = predict_image(load_model(ckpt), image)
    got = predict_image(OnnxModel(onnx_path), image)
    assert OnnxModel(onnx_path).labels.multilabel
    assert (ref != got).mean() < 1e-3


def test_multilabel_losses_train_a_real_step_with_class_weights(tmp_path):
    import seglab

    write_multilabel_set(tmp_path / "d", "class_folders", n=8)
    cfg = _config(tmp_path / "d", "class_folders", tmp_path / "runs", train__epochs=1,
                  loss__class_weights="inverse_frequency")
    cfg["loss"]["name"] = ["focal", "dice"]
    run = seglab.train(config_from_dict(cfg)).path
    assert "miou" in (run / "summary.json").read_text()
