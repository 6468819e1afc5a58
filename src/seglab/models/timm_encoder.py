"""timm backbones as seglab encoders: any timm model with a `features_only` form, named `timm/NAME` (or
segmentation_models_pytorch's `tu-NAME`), under every architecture whose decoder takes a generic encoder.

The decoders want five feature maps at strides 2, 4, 8, 16, 32 (fewer with output_stride 16 / 8, which
timm gives by dilation). They are chosen from timm's `feature_info` by reduction; an encoder whose first
feature is at stride 4 (ConvNeXt, Swin-like) gets an empty (0-channel) stride-2 map, so a U-Net's finest skip
is simply absent. Weights are loaded with `weights.py`: into timm's whole classification model first (by
name, or by order when every shape agrees), then into its feature form.
"""
from __future__ import annotations

import difflib
import fnmatch
from typing import Any, Optional

import torch
from torch import nn

from ..errors import ConfigError, brief

TIMM_PREFIXES = ("timm/", "tu-")
_NOMINAL = (2, 4, 8, 16, 32)


def timm_base(name: Optional[str]) -> Optional[str]:
    """'timm/tf_efficientnet_lite0' or 'tu-tf_efficientnet_lite0' -> 'tf_efficientnet_lite0'; None otherwise."""
    for prefix in TIMM_PREFIXES:
        if name and name.startswith(prefix):
            return name[len(prefix):]
    return None


def _timm():
    import timm

    return timm


def list_timm_encoders(pattern: str = "*") -> list[str]:
    """timm's model names matching a shell pattern (`*lite*`), as seglab spells them (timm/NAME)."""
    timm = _timm()
    return [f"timm/{n}" for n in timm.list_models() if fnmatch.fnmatch(n, pattern)]


def check_timm_name(name: str) -> str:
    """The timm model name of `name`, or a one-line error suggesting close names."""
    base = timm_base(name)
    if not base:
        raise ConfigError(f"model.encoder: '{name}' is not a timm name (timm/NAME)")
    timm = _timm()
    if not timm.is_model(base):
        close = difflib.get_close_matches(base, timm.list_models(), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join('timm/' + c for c in close)}?" if close else \
            "; `seglab models --encoders '*PART*'` lists timm's names"
        raise ConfigError(f"model.encoder: timm has no model '{base}'{hint}")
    return base


def pretrained_cfg(base: str) -> dict[str, Any]:
    """timm's pretrained config of model `base` (url, hf_hub_id, mean, std, classifier, ...); {} if none."""
    cfg = _timm().models.get_pretrained_cfg(base)
    return cfg.to_dict() if cfg is not None else {}


def pretrained_normalization(name: str) -> Optional[tuple[tuple[float, ...], tuple[float, ...]]]:
    """The (mean, std) a timm encoder's pretrained weights were trained with (its pretrained config)."""
    if not timm_base(name):
        return None
    d = pretrained_cfg(check_timm_name(name))
    if "mean" not in d or "std" not in d:
        return None
    return tuple(float(v) for v in d["mean"]), tuple(float(v) for v in d["std"])


def create_timm_model(base: str, **kwargs: Any) -> nn.Module:
    """timm.create_model without weights (seglab loads them itself, offline)."""
    return _timm().create_model(base, pretrained=False, **kwargs)


class _Stage:
    """The modules between two feature points of a timm network: what freezing a stage freezes."""

    def __init__(self, modules: list[nn.Module]):
        self._modules = modules

    def modules(self):
        for m in self._modules:
            yield from m.modules()

    def parameters(self):
        for m in self._modules:
            yield from m.parameters(recurse=False)

    def requires_grad_(self, flag: bool) -> "_Stage":
        for p in self.parameters():
            p.requires_grad_(flag)
        return self


class TimmEncoder(nn.Module):
    """A timm `features_only` network as an Encoder: forward gives five maps at `strides`, `out_channels`
    channels each (0 for an absent stride-2 map)."""

    def __init__(self, name: str, *, in_channels: int = 3, output_stride: int = 32):
        super().__init__()
        self.name = name
        base = check_timm_name(name)
        if output_stride not in (8, 16, 32):
            raise ConfigError(f"model.output_stride: expected 8, 16 or 32, got {output_stride}")
        extra = {"output_stride": output_stride} if output_stride != 32 else {}
        try:
            self.net = create_timm_model(base, features_only=True, in_chans=in_channels, **extra)
        except (TypeError, ValueError, AssertionError, RuntimeError, NotImplementedError) as exc:
            if extra:
                raise ConfigError(f"model.output_stride: {output_stride} needs a dilated {name}, which timm does not "
                                  f"build ({brief(exc, 100)}); use output_stride 32 or another encoder") from None
            raise ConfigError(f"model.encoder: {name} has no features_only form in timm ({brief(exc, 100)})") from None
        info = self.net.feature_info
        red, ch = list(info.reduction()), list(info.channels())
        targets = [min(s, output_stride) for s in _NOMINAL]
        picks: list[Optional[int]] = [None] * 5
        nxt = len(red)
        for k in range(4, -1, -1):  # from the deepest: each level the last feature before the next level's
            found = [i for i in range(nxt) if red[i] == targets[k]]
            picks[k] = found[-1] if found else None
            nxt = picks[k] if picks[k] is not None else nxt
        if any(p is None for p in picks[1:]):
            raise ConfigError(f"model.encoder: {name}'s features are at strides {red}; seglab's decoders need "
                              f"strides {', '.join(map(str, targets[1:]))} (a feature pyramid)")
        self.picks = picks
        self.out_channels = [ch[p] if p is not None else 0 for p in picks]
        self.strides = targets
        # timm's tf_* networks pad "same" (TensorFlow's): a strided conv pads right / bottom on an even side and
        # both sides on an odd one, so each level's grid moves by a pixel with the parity of its size. Trained
        # on crops that divide by the deepest stride, such a model scores worse at other sizes (CamVid's 360-high
        # images: docs/results.md), so inference pads images to a multiple of this.
        self.size_divisor = max(red[p] for p in picks if p is not None)
        self.stages = self._stages(info.module_name())
        self.pretrained_record: Optional[dict[str, Any]] = None

    def _stages(self, points: list[str]) -> list[_Stage]:
        """Each module holding weights, assigned to the feature level whose point comes at or after it."""
        names = [n for n, _ in self.net.named_modules()]
        ends = []
        for p in (points[i] for i in self.picks if i is not None):
            inside = [j for j, n in enumerate(names) if n == p or n.startswith(p + ".")]
            ends.append(inside[-1] if inside else len(names))
        groups: list[list[nn.Module]] = [[] for _ in ends]
        for j, (n, m) in enumerate(self.net.named_modules()):
            if next(m.parameters(recurse=False), None) is None and not list(m.buffers(recurse=False)):
                continue
            level = next((k for k, e in enumerate(ends) if j <= e), len(ends) - 1)
            groups[level].append(m)
        if self.picks[0] is None:  # no stride-2 map: the stem belongs to the first level there is
            groups = [[]] + groups
        return [_Stage(g) for g in groups]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = self.net(x)
        out = []
        for p in self.picks:
            if p is None:
                n, _, h, w = x.shape
                out.append(x.new_zeros(n, 0, (h + 1) // 2, (w + 1) // 2))
            else:
                out.append(feats[p])
        return out
