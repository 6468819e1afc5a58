import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from seglab.config import ScheduleConfig
from seglab.engine.optim import lr_factor
from seglab.errors import ConfigError
from seglab.losses import SoftDice, build_loss, class_weights_from_counts
from seglab.models import create_model


def _loss(name, weight=None):
    return build_loss(name, ignore_index=255, weight=weight, ce_weight=1.0, dice_weight=1.0, dice_smooth=1.0)


@pytest.mark.parametrize("name", ["cross_entropy", "dice", "ce_dice"])
def test_losses_ignore_ignored_pixels(name):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 5, 6, generator=g)
    target = torch.randint(0, 3, (2, 5, 6), generator=g)
    target[:, :2] = 255
    a = _loss(name)(logits, target)
    changed = logits.clone()
    changed[:, :, :2] = torch.randn(2, 3, 2, 6, generator=g) * 10  # only ignored pixels change
    assert torch.isclose(a, _loss(name)(changed, target))
    assert torch.isfinite(_loss(name)(logits, torch.full_like(target, 255)))


def test_cross_entropy_matches_hand_value():
    logits = torch.tensor([[[[2.0]], [[0.0]]]])  # one pixel, two classes
    target = torch.tensor([[[0]]])
    assert float(_loss("cross_entropy")(logits, target)) == pytest.approx(math.log(1 + math.exp(-2.0)))


def test_weighted_cross_entropy():
    logits = torch.zeros(1, 2, 1, 2)
    logits[0, 0, 0, 1] = 3.0
    target = torch.tensor([[[0, 1]]])
    w = torch.tensor([1.0, 3.0])
    l0 = -F.log_softmax(logits, 1)[0, 0, 0, 0]
    l1 = -F.log_softmax(logits, 1)[0, 1, 0, 1]
    expected = (1.0 * l0 + 3.0 * l1) / 4.0
    assert float(_loss("cross_entropy", w)(logits, target)) == pytest.approx(float(expected))


def test_dice_near_zero_for_confident_correct_prediction():
    target = torch.randint(0, 3, (2, 8, 8))
    logits = F.one_hot(target, 3).permute(0, 3, 1, 2).float() * 50
    assert float(SoftDice(255)(logits, target)) < 1e-3
    assert float(SoftDice(255)(-logits, target)) > 0.9


def test_class_weights_from_counts():
    counts = np.array([60, 30, 10, 0])
    image_pixels = np.array([100, 100, 50, 0])
    inv = class_weights_from_counts("inverse_frequency", counts, image_pixels)
    assert inv.tolist() == pytest.approx([100 / 180, 100 / 90, 100 / 30, 0.0])
    med = class_weights_from_counts("median_frequency", counts, image_pixels)
    f = np.array([0.6, 0.3, 0.2])  # median 0.3
    assert med.tolist() == pytest.approx((0.3 / f).tolist() + [0.0])


def test_unknown_loss_lists_available():
    with pytest.raises(ConfigError, match="unknown loss 'focl'; available: ce_dice, cross_entropy, dice, focal, "
                                          "focal_tversky, lovasz, ohem, tversky"):
        _loss("focl")


@pytest.mark.parametrize("batch", [1, 2])
def test_unet_from_scratch_any_size_train_and_eval(batch):
    model = create_model("unet", in_channels=3, num_classes=5, base_channels=4, depth=3, dropout=0.1)
    for mode in (True, False):
        model.train(mode)
        x = torch.randn(batch, 3, 97, 131, requires_grad=mode)
        out = model(x)
        assert out.shape == (batch, 5, 97, 131)
        if mode:
            out.sum().backward()
            assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("channels", [1, 4])
def test_unet_input_channels(channels):
    m = create_model("unet", in_channels=channels, num_classes=2, base_channels=4, depth=2).eval()
    assert m(torch.randn(1, channels, 33, 17)).shape == (1, 2, 33, 17)


def test_unknown_model_lists_available():
    with pytest.raises(ConfigError, match=r"unknown model 'deeplab'; available: .*unet"):
        create_model("deeplab", num_classes=2)


def test_bad_model_option_name_type_value():
    with pytest.raises(ConfigError, match=r"model\.width: unknown option; allowed: base_channels, condition_channels, decoder_channels, depth, dropout, encoder"):
        create_model("unet", num_classes=2, width=3)
    with pytest.raises(ConfigError, match=r"model\.depth: .*integer.*'deep'"):
        create_model("unet", num_classes=2, depth="deep")
    with pytest.raises(ConfigError, match=r"model\.depth: expected 1..6"):
        create_model("unet", num_classes=2, depth=9)


def test_unet_overfits_one_batch():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 24, 28)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 1).long()
    m = create_model("unet", num_classes=3, base_channels=8, depth=2)
    opt = torch.optim.Adam(m.parameters(), 1e-2)
    for _ in range(60):
        loss = F.cross_entropy(m(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    m.eval()
    assert (m(x).argmax(1) == y).float().mean() >= 0.95


def _factors(name, **kw):
    f = lr_factor(ScheduleConfig(name=name, **kw), steps_per_epoch=10, total_epochs=10)
    return [f(s) for s in range(100)]


def test_schedules():
    assert _factors("constant") == [1.0] * 100
    step = _factors("step", step_epochs=3, gamma=0.5)
    assert step[29] == 1.0 and step[30] == 0.5 and step[60] == 0.25
    cos = _factors("cosine")
    assert cos[0] == 1.0 and cos[50] == pytest.approx(0.5) and cos[99] == pytest.approx(0.0, abs=1e-3)
    poly = _factors("poly", power=1.0)
    assert poly[50] == pytest.approx(0.5)
    warm = _factors("cosine", warmup_epochs=2)
    assert warm[0] == pytest.approx(1 / 20) and warm[19] == 1.0 and warm[20] == 1.0 and warm[99] < 0.01
    assert all(a >= b for a, b in zip(warm[20:], warm[21:]))
