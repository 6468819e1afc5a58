import math

import cv2
import numpy as np
import pytest
import torch

from seglab.metrics import (
    BoundaryIoU, ConfusionMatrix, boundary_band, boundary_dilation, dice_from_confusion, fwiou_from_confusion,
    iou_from_confusion, pixel_accuracy_from_confusion, precision_from_confusion, recall_from_confusion,
    summarize_confusion,
)


def _cm():
    cm = ConfusionMatrix(4, ignore_index=255)
    cm.update(torch.tensor([0, 1, 1, 1, 0, 2]), torch.tensor([0, 0, 1, 1, 2, 255]))
    return cm


def test_confusion_counts_exclude_ignored():
    m = _cm().matrix
    assert m.tolist() == [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]
    assert int(m.sum()) == 5


def test_hand_computed_region_metrics():
    m = _cm().matrix
    iou = iou_from_confusion(m)
    assert iou[:3].tolist() == pytest.approx([1 / 3, 2 / 3, 0.0])
    assert math.isnan(iou[3])  # absent from ground truth and prediction
    assert pixel_accuracy_from_confusion(m) == pytest.approx(3 / 5)
    assert recall_from_confusion(m)[:3].tolist() == pytest.approx([0.5, 1.0, 0.0])
    prec = precision_from_confusion(m)
    assert prec[:2].tolist() == pytest.approx([0.5, 2 / 3]) and math.isnan(prec[2])
    assert dice_from_confusion(m)[:3].tolist() == pytest.approx([0.5, 0.8, 0.0])
    assert fwiou_from_confusion(m) == pytest.approx(0.4 * (1 / 3) + 0.4 * (2 / 3))
    s = summarize_confusion(m)
    assert s["miou"] == pytest.approx(1 / 3)  # NaN class left out of the mean
    assert s["mean_accuracy"] == pytest.approx(0.5)
    assert s["mean_dice"] == pytest.approx((0.5 + 0.8 + 0.0) / 3)


def test_perfect_prediction():
    t = torch.randint(0, 3, (2, 7, 9))
    cm = ConfusionMatrix(3)
    cm.update(t, t)
    s = summarize_confusion(cm.matrix)
    assert s["miou"] == 1.0 and s["pixel_accuracy"] == 1.0 and s["fwiou"] == pytest.approx(1.0)


def test_accumulation_equals_single_update():
    g = torch.Generator().manual_seed(0)
    p, t = torch.randint(0, 3, (4, 5, 6), generator=g), torch.randint(0, 3, (4, 5, 6), generator=g)
    a, b = ConfusionMatrix(3), ConfusionMatrix(3)
    a.update(p, t)
    for i in range(4):
        b.update(p[i], t[i])
    assert torch.equal(a.matrix, b.matrix)


def test_target_out_of_range_rejected():
    with pytest.raises(ValueError, match="outside"):
        ConfusionMatrix(2).update(torch.tensor([0]), torch.tensor([5]))


def test_dilation_width():
    assert boundary_dilation(6, 6) == 1  # 0.02 * 8.5 rounds to 0 -> at least 1
    assert boundary_dilation(360, 480) == 12  # 0.02 * 600
    assert boundary_dilation(100, 100, 0.05) == 7


def _reference_boundary(mask: np.ndarray, ratio: float) -> np.ndarray:
    """The boundary-iou-api definition: 1-pixel zero border, 3x3 erosion repeated d times."""
    h, w = mask.shape
    d = max(1, int(round(ratio * np.sqrt(h**2 + w**2))))
    padded = cv2.copyMakeBorder(mask, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    eroded = cv2.erode(padded, np.ones((3, 3), np.uint8), iterations=d)[1 : h + 1, 1 : w + 1]
    return mask - eroded


def test_hand_computed_boundary_iou_of_shifted_square():
    gt = torch.zeros(6, 6, dtype=torch.long)
    gt[1:5, 1:5] = 1
    pred = torch.zeros(6, 6, dtype=torch.long)
    pred[1:5, 2:6] = 1
    band = boundary_band((gt == 1)[None], 1)[0]
    assert int(band.sum()) == 12 and not band[2:4, 2:4].any()  # a 1-pixel ring
    b = BoundaryIoU(2, dilation_ratio=0.02)
    b.update(pred, gt)
    assert int(b.intersection[1]) == 6 and int(b.union[1]) == 18
    assert b.per_class()[1] == pytest.approx(1 / 3)


@pytest.mark.parametrize("ratio", [0.02, 0.05, 0.1])
def test_boundary_band_matches_reference_implementation(ratio):
    rng = np.random.default_rng(1)
    for _ in range(5):
        small = (rng.random((6, 8)) > 0.5).astype(np.uint8)
        mask = cv2.resize(small, (53, 41), interpolation=cv2.INTER_NEAREST)
        d = boundary_dilation(41, 53, ratio)
        ours = boundary_band(torch.from_numpy(mask)[None].bool(), d)[0].numpy()
        assert np.array_equal(ours, _reference_boundary(mask, ratio).astype(bool))


def test_boundary_iou_pools_over_images_and_nan_for_absent_classes():
    rng = np.random.default_rng(2)
    gts = [torch.from_numpy(rng.integers(0, 2, (20, 30))) for _ in range(3)]
    preds = [torch.from_numpy(rng.integers(0, 2, (20, 30))) for _ in range(3)]
    b = BoundaryIoU(3, dilation_ratio=0.05)
    inter = np.zeros(3)
    union = np.zeros(3)
    for p, g in zip(preds, gts):
        b.update(p, g)
        for c in range(2):
            gb = _reference_boundary((g.numpy() == c).astype(np.uint8), 0.05).astype(bool)
            pb = _reference_boundary((p.numpy() == c).astype(np.uint8), 0.05).astype(bool)
            inter[c] += (gb & pb).sum()
            union[c] += (gb | pb).sum()
    per = b.per_class()
    assert per[:2].tolist() == pytest.approx((inter[:2] / union[:2]).tolist())
    assert math.isnan(per[2])
    assert b.mean() == pytest.approx(float(np.mean(inter[:2] / union[:2])))


def test_boundary_iou_leaves_ignored_pixels_out_of_both_counts():
    gt = torch.zeros(10, 10, dtype=torch.long)
    gt[2:8, 2:8] = 1
    gt[0:2, :] = 255
    pred = torch.zeros(10, 10, dtype=torch.long)
    pred[3:8, 2:9] = 1
    b = BoundaryIoU(2)
    b.update(pred, gt)
    valid = (gt != 255).numpy()
    for c in range(2):
        gb = _reference_boundary((gt.numpy() == c).astype(np.uint8), 0.02).astype(bool) & valid
        pb = _reference_boundary((pred.numpy() == c).astype(np.uint8), 0.02).astype(bool) & valid
        assert int(b.intersection[c]) == (gb & pb).sum() and int(b.union[c]) == (gb | pb).sum()
    b3 = BoundaryIoU(2)
    b3.update(pred, torch.full_like(gt, 255))
    assert int(b3.union.sum()) == 0 and math.isnan(b3.mean())


def test_perfect_boundary_iou_is_one():
    g = torch.from_numpy(np.random.default_rng(3).integers(0, 3, (15, 17)))
    b = BoundaryIoU(3)
    b.update(g, g)
    assert b.per_class().tolist() == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("num_classes,ignore", [(11, 255), (3, 0), (300, 299)])
def test_boundary_iou_opencv_and_maxpool_backends_count_identically(num_classes, ignore):
    """The CPU path (OpenCV erosion) and the GPU path (max-pooling) must give the same numbers."""
    rng = np.random.default_rng(num_classes)
    a = BoundaryIoU(num_classes, ignore, 0.03, backend="opencv")
    b = BoundaryIoU(num_classes, ignore, 0.03, backend="torch")
    for h, w in [(37, 53), (90, 120), (8, 5)]:
        # blocky maps (real boundaries) with a few classes, some ignored pixels and touching borders
        small = rng.integers(0, min(num_classes, 6), (max(2, h // 8), max(2, w // 8)))
        gt = cv2.resize(small.astype(np.float32), (w, h), interpolation=cv2.INTER_NEAREST).astype(np.int64)
        gt[rng.random((h, w)) < 0.05] = ignore
        pred = np.roll(gt, (1, 2), (0, 1))
        pred[pred == ignore] = 1
        pred[rng.random((h, w)) < 0.02] = num_classes - 1
        for m in (a, b):
            m.update(torch.from_numpy(pred), torch.from_numpy(gt))
    assert int(a.union.sum()) > 0
    assert torch.equal(a.intersection, b.intersection) and torch.equal(a.union, b.union)


def test_boundary_iou_rejects_target_ids_outside_the_classes():
    with pytest.raises(ValueError, match="outside"):
        BoundaryIoU(3, backend="opencv").update(torch.zeros(4, 4, dtype=torch.long), torch.full((4, 4), 7))


def test_per_image_row_from_hand_counts():
    from seglab.evaluation.evaluate import image_row
    from seglab.metrics import confusion_counts

    target = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 255]])
    pred = torch.tensor([[0, 1, 1, 1], [0, 0, 2, 2]])
    counts = confusion_counts(pred, target, 3)
    # class 0: 3 right, 1 missed -> 3/4; class 1: 2 right of 3 true, 1 false positive -> 2/4; class 2: 0/1
    row = image_row("a", counts, torch.tensor([1, 0, 0]), torch.tensor([2, 0, 0]))
    assert row["iou"] == pytest.approx([0.75, 0.5, 0.0])
    assert row["miou"] == pytest.approx((0.75 + 0.5 + 0.0) / 3)
    assert row["pixel_accuracy"] == pytest.approx(5 / 7)
    assert row["mean_boundary_iou"] == pytest.approx(0.5)  # classes with no band pixels are left out
