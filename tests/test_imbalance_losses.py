"""Losses for imbalanced classes (issue 16): each against a hand-computed case, and every registered loss
honouring the ignore index and class weights; loss.name lists with weights; options checked by the registry."""
import math

import pytest
import torch
import torch.nn.functional as F

from seglab.config import config_from_dict
from seglab.errors import ConfigError
from seglab.losses import build_loss, build_loss_from_config, check_loss_config, list_losses
from seglab.registry import LOSSES, builder_options

IGNORE = 255


def _logits_of(probs):
    """(N, K, H, W) logits whose softmax is `probs`."""
    return torch.tensor(probs, dtype=torch.float64).log().float()


def _case(k=3, n=2, size=(5, 6), seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, k, *size, generator=g) * 2
    target = torch.randint(0, k, (n, *size), generator=g)
    target[:, :1] = IGNORE
    return logits, target


@pytest.mark.parametrize("name", list_losses())
def test_every_loss_skips_ignored_pixels_and_is_finite(name):
    logits, target = _case()
    fn = build_loss(name, ignore_index=IGNORE)
    a = fn(logits, target)
    changed = logits.clone()
    changed[:, :, :1] = torch.randn(2, 3, 1, 6) * 10  # only ignored pixels change
    assert torch.isclose(a, fn(changed, target), atol=1e-6)
    assert torch.isfinite(fn(logits, torch.full_like(target, IGNORE)))
    extreme = (torch.sign(logits) * 1e4).requires_grad_()
    loss = fn(extreme, target)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(extreme.grad).all()


@pytest.mark.parametrize("name", [n for n in list_losses() if "weight" in builder_options(LOSSES[n])])
def test_class_weights_reach_every_loss(name):
    logits, target = _case()
    plain = build_loss(name, ignore_index=IGNORE)(logits, target)
    uniform = build_loss(name, ignore_index=IGNORE, weight=torch.full((3,), 2.0))(logits, target)
    skewed = build_loss(name, ignore_index=IGNORE, weight=torch.tensor([0.1, 1.0, 5.0]))(logits, target)
    assert torch.isclose(plain, uniform, atol=1e-6)  # weights are relative
    assert not torch.isclose(plain, skewed, atol=1e-4)  # and not dropped


def test_every_registered_loss_takes_class_weights():
    assert [n for n in list_losses() if "weight" not in builder_options(LOSSES[n])] == []


def test_focal_hand_value_and_gamma_zero_is_cross_entropy():
    logits = torch.tensor([[[[2.0]], [[0.0]]]])
    target = torch.tensor([[[0]]])
    p = 1 / (1 + math.exp(-2.0))
    fl = build_loss("focal", ignore_index=IGNORE, focal_gamma=2.0)(logits, target)
    assert float(fl) == pytest.approx((1 - p) ** 2 * -math.log(p), rel=1e-5)
    logits, target = _case()
    w = torch.tensor([0.5, 1.0, 2.0])
    assert torch.isclose(build_loss("focal", ignore_index=IGNORE, weight=w, focal_gamma=0.0)(logits, target),
                         build_loss("cross_entropy", ignore_index=IGNORE, weight=w)(logits, target), atol=1e-6)


def test_tversky_and_focal_tversky_hand_values():
    # two pixels of class 0 predicted 0.8 / 0.2: class 0 TP 1.6, FN 0.4; class 1 FP 0.4
    logits = _logits_of([[[[0.8, 0.8]], [[0.2, 0.2]]]])
    target = torch.tensor([[[0, 0]]])
    ti0 = 1.6 / (1.6 + 0.7 * 0.4)
    tv = build_loss("tversky", ignore_index=IGNORE, tversky_alpha=0.3, tversky_beta=0.7, dice_smooth=0.0)
    assert float(tv(logits, target)) == pytest.approx(((1 - ti0) + 1.0) / 2, rel=1e-5)
    ft = build_loss("focal_tversky", ignore_index=IGNORE, focal_tversky_gamma=0.75, dice_smooth=0.0)
    assert float(ft(logits, target)) == pytest.approx(((1 - ti0) ** 0.75 + 1.0) / 2, rel=1e-5)
    # alpha = beta = 0.5 is the soft Dice loss: (TP + s) / (TP + (FP + FN) / 2 + s) = (2TP + 2s) / (|P| + |G| + 2s)
    logits, target = _case()
    half = build_loss("tversky", ignore_index=IGNORE, tversky_alpha=0.5, tversky_beta=0.5, dice_smooth=1.0)
    dice = build_loss("dice", ignore_index=IGNORE, dice_smooth=2.0)
    assert torch.isclose(half(logits, target), dice(logits, target), atol=1e-6)


def test_lovasz_hand_value():
    # pixel 0: class 0 (p 0.8), pixel 1: class 1 (p 0.7). Class 0: errors 0.3 (pixel 1, a false positive)
    # then 0.2, Jaccard-loss steps 0.5 and 0.5 -> 0.25; class 1: errors 0.3 (missed foreground), 0.2,
    # steps 1 and 0 -> 0.3; mean 0.275
    logits = _logits_of([[[[0.8, 0.3]], [[0.2, 0.7]]]])
    target = torch.tensor([[[0, 1]]])
    assert float(build_loss("lovasz", ignore_index=IGNORE)(logits, target)) == pytest.approx(0.275, rel=1e-5)
    # class weights 1 and 3 weight the two classes' terms
    w = torch.tensor([1.0, 3.0])
    assert float(build_loss("lovasz", ignore_index=IGNORE, weight=w)(logits, target)) == pytest.approx(
        (0.25 + 3 * 0.3) / 4, rel=1e-5)


def test_ohem_keeps_hard_pixels_and_at_least_min_kept():
    logits = _logits_of([[[[0.9, 0.6, 0.5]], [[0.1, 0.4, 0.5]]]])
    target = torch.tensor([[[0, 0, 0]]])
    ce = [-math.log(0.9), -math.log(0.6), -math.log(0.5)]
    ohem = lambda **o: float(build_loss("ohem", ignore_index=IGNORE, **o)(logits, target))  # noqa: E731
    assert ohem(ohem_threshold=0.7, ohem_min_kept=1) == pytest.approx((ce[1] + ce[2]) / 2, rel=1e-5)
    assert ohem(ohem_threshold=0.55, ohem_min_kept=2) == pytest.approx((ce[1] + ce[2]) / 2, rel=1e-5)
    assert ohem(ohem_threshold=0.55, ohem_min_kept=1) == pytest.approx(ce[2], rel=1e-5)
    assert ohem(ohem_threshold=0.7, ohem_min_kept=3) == pytest.approx(sum(ce) / 3, rel=1e-5)


def test_a_list_of_losses_is_their_weighted_sum(tiny_raw):
    logits, target = _case()
    raw = dict(tiny_raw, loss={"name": ["focal", "dice"], "weights": [1.0, 0.5], "focal_gamma": 1.0})
    lc = config_from_dict(raw).loss
    check_loss_config(lc)
    fn = build_loss_from_config(lc, ignore_index=IGNORE, weight=None)
    expected = (build_loss("focal", ignore_index=IGNORE, focal_gamma=1.0)(logits, target)
                + 0.5 * build_loss("dice", ignore_index=IGNORE)(logits, target))
    assert torch.isclose(fn(logits, target), expected, atol=1e-6)


@pytest.mark.parametrize("loss, pattern", [
    ({"name": "focal", "focal_gama": 2}, r"loss\.focal_gama: not an option of loss focal .*allowed: .*focal_gamma"),
    ({"name": "focal", "focal_gamma": "high"}, r"loss\.focal_gamma: .*got 'high'"),
    ({"name": "focal", "focal_gamma": -1}, r"loss\.focal_gamma: must be >= 0"),
    ({"name": "ohem", "ohem_threshold": 1.5}, r"loss\.ohem_threshold: a probability in \(0, 1\]"),
    ({"name": ["focal", "dice"], "weights": [1.0]}, r"loss\.weights: 1 weights for 2 losses"),
    ({"name": []}, r"loss\.name: an empty list"),
    ({"name": "lovasz", "strategy": "marginal"}, r"loss\.name: the marginal strategy has no form of 'lovasz'"),
])
def test_bad_loss_settings_name_the_key(tiny_raw, loss, pattern):
    lc = config_from_dict(dict(tiny_raw, loss=loss)).loss
    with pytest.raises(ConfigError, match=pattern):
        check_loss_config(lc)
        build_loss_from_config(lc, ignore_index=IGNORE, weight=None)


def test_dice_with_class_weights_is_the_weighted_class_mean():
    logits, target = _case()
    w = torch.tensor([0.0, 1.0, 3.0])
    valid = (target != IGNORE)[:, None]
    prob = logits.softmax(1) * valid
    onehot = F.one_hot(target.clamp(0, 2) * valid[:, 0], 3).permute(0, 3, 1, 2) * valid
    dice = (2 * (prob * onehot).sum((0, 2, 3)) + 1) / (prob.sum((0, 2, 3)) + onehot.sum((0, 2, 3)) + 1)
    expected = 1 - (dice * w).sum() / w.sum()
    assert torch.isclose(build_loss("dice", ignore_index=IGNORE, weight=w)(logits, target), expected, atol=1e-6)
