"""SegFormer (Xie et al., NeurIPS 2021): Mix Transformer encoder (MiT-B0/B1/B2) and the all-MLP decoder.

Module names follow the original MiT release (patch_embed1, block1, norm1, attn.q/kv/sr, mlp.dwconv),
so its checkpoints load directly; Hugging Face `segformer.encoder.*` keys are translated.
"""
from __future__ import annotations

import re
from typing import Optional, Union

import torch
from torch import nn
import torch.nn.functional as F

from ..errors import ConfigError
from ..registry import register_model
from .base import SegmentationModel
from .encoder_table import encoders
from .weights import load_weights_file, resolve_weights


MIT = {
    "mit_b0": {"dims": (32, 64, 160, 256), "depths": (2, 2, 2, 2), "decoder": 256},
    "mit_b1": {"dims": (64, 128, 320, 512), "depths": (2, 2, 2, 2), "decoder": 256},
    "mit_b2": {"dims": (64, 128, 320, 512), "depths": (3, 4, 6, 3), "decoder": 768},
}
HEADS, SR_RATIOS = (1, 2, 5, 8), (8, 4, 2, 1)


class OverlapPatchEmbed(nn.Module):
    """SegFormer's overlapping patch embedding: a strided conv, then LayerNorm."""
    def __init__(self, cin: int, dim: int, patch: int, stride: int):
        super().__init__()
        self.proj = nn.Conv2d(cin, dim, patch, stride, patch // 2)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x):
        x = self.proj(x)
        h, w = x.shape[-2:]
        return self.norm(x.flatten(2).transpose(1, 2)), h, w


class EfficientSelfAttention(nn.Module):
    """Multi-head attention whose keys and values come from a spatially reduced sequence (ratio sr)."""

    def __init__(self, dim: int, heads: int, sr: int):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.sr_ratio = sr
        if sr > 1:
            self.sr = nn.Conv2d(dim, dim, sr, sr)
            self.norm = nn.LayerNorm(dim)

    def forward(self, x, h: int, w: int):
        b, n, c = x.shape
        q = self.q(x).reshape(b, n, self.heads, c // self.heads).transpose(1, 2)
        if self.sr_ratio > 1:
            y = x.transpose(1, 2).reshape(b, c, h, w)
            y = self.norm(self.sr(y).flatten(2).transpose(1, 2))
        else:
            y = x
        k, v = self.kv(y).reshape(b, -1, 2, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class DWConv(nn.Module):
    """The 3x3 depth-wise conv inside Mix-FFN, on (N, H*W, C) tokens."""
    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)

    def forward(self, x, h: int, w: int):
        b, n, c = x.shape
        return self.dwconv(x.transpose(1, 2).reshape(b, c, h, w)).flatten(2).transpose(1, 2)


class MixFFN(nn.Module):
    """SegFormer's feed-forward: linear, depth-wise conv, GELU, linear."""
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = DWConv(hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x, h: int, w: int):
        return self.fc2(F.gelu(self.dwconv(self.fc1(x), h, w)))


class Block(nn.Module):
    """One Mix Transformer block: efficient self-attention and Mix-FFN, each with a residual."""
    def __init__(self, dim: int, heads: int, sr: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = EfficientSelfAttention(dim, heads, sr)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MixFFN(dim, 4 * dim)

    def forward(self, x, h: int, w: int):
        x = x + self.attn(self.norm1(x), h, w)
        return x + self.mlp(self.norm2(x), h, w)


class MixTransformer(nn.Module):
    """Four stages at strides 4, 8, 16, 32; returns their (N, C_i, H_i, W_i) maps."""

    def __init__(self, in_channels: int, dims, depths):
        super().__init__()
        self.out_channels = list(dims)
        for i in range(4):
            cin = in_channels if i == 0 else dims[i - 1]
            setattr(self, f"patch_embed{i + 1}", OverlapPatchEmbed(cin, dims[i], 7 if i == 0 else 3, 4 if i == 0 else 2))
            setattr(self, f"block{i + 1}", nn.ModuleList(Block(dims[i], HEADS[i], SR_RATIOS[i]) for _ in range(depths[i])))
            setattr(self, f"norm{i + 1}", nn.LayerNorm(dims[i]))

    def forward(self, x):
        feats = []
        for i in range(1, 5):
            x, h, w = getattr(self, f"patch_embed{i}")(x)
            for blk in getattr(self, f"block{i}"):
                x = blk(x, h, w)
            x = getattr(self, f"norm{i}")(x)
            x = x.transpose(1, 2).reshape(x.shape[0], -1, h, w)
            feats.append(x)
        return feats


class SegFormer(SegmentationModel):
    """SegFormer (Xie et al. 2021): a Mix Transformer encoder and the all-MLP decoder."""
    def __init__(self, in_channels: int, num_classes: int, variant: str, dropout: float):
        super().__init__()
        spec = MIT[variant]
        self.encoder = MixTransformer(in_channels, spec["dims"], spec["depths"])
        e = spec["decoder"]
        self.linear = nn.ModuleList(nn.Conv2d(c, e, 1) for c in spec["dims"])
        self.fuse = nn.Sequential(nn.Conv2d(4 * e, e, 1, bias=False), nn.BatchNorm2d(e), nn.ReLU(inplace=True))
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(e, num_classes, 1)

    def decode(self, x):
        h, w = x.shape[-2:]
        # the stage-1 spatial reduction (kernel 8 on stride-4 features) needs inputs of at least 32 px
        ph, pw = max(0, 32 - h), max(0, 32 - w)
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph))
        feats = self.encoder(x)
        size = feats[0].shape[-2:]
        ups = [F.interpolate(lin(f), size=size, mode="bilinear", align_corners=False) if i else lin(f)
               for i, (lin, f) in enumerate(zip(self.linear, feats))]
        out = self.classifier(self.dropout(self.fuse(torch.cat(ups[::-1], dim=1))))
        if ph or pw:  # back to the unpadded extent (stride 4), then the base class resizes to the input
            out = F.interpolate(out, size=(x.shape[-2] // 4, x.shape[-1] // 4), mode="bilinear", align_corners=False)
            out = out[..., : -(-h // 4), : -(-w // 4)]
        return out, []


_HF_RULES = [
    (r"^(segformer\.)?encoder\.patch_embeddings\.(\d)\.proj\.", lambda m: f"patch_embed{int(m[2]) + 1}.proj."),
    (r"^(segformer\.)?encoder\.patch_embeddings\.(\d)\.layer_norm\.", lambda m: f"patch_embed{int(m[2]) + 1}.norm."),
    (r"^(segformer\.)?encoder\.block\.(\d)\.(\d+)\.", lambda m: f"block{int(m[2]) + 1}.{m[3]}."),
    (r"^(segformer\.)?encoder\.layer_norm\.(\d)\.", lambda m: f"norm{int(m[2]) + 1}."),
]
_HF_INNER = [("attention.self.query.", "attn.q."), ("attention.self.sr.", "attn.sr."),
             ("attention.self.layer_norm.", "attn.norm."), ("attention.output.dense.", "attn.proj."),
             ("layer_norm_1.", "norm1."), ("layer_norm_2.", "norm2."), ("mlp.dense1.", "mlp.fc1."),
             ("mlp.dense2.", "mlp.fc2."), ("mlp.dwconv.dwconv.", "mlp.dwconv.dwconv.")]


def convert_mit_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Original MiT keys pass through; Hugging Face keys are renamed (separate key/value fused into kv)."""
    out: dict[str, torch.Tensor] = {}
    pending: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        key = re.sub(r"^(backbone|module)\.", "", key)
        new = key
        for pattern, repl in _HF_RULES:
            new = re.sub(pattern, repl, new)
        for a, b in _HF_INNER:
            new = new.replace(a, b)
        kv = re.match(r"(.*)attention\.self\.(key|value)\.(weight|bias)$", new)
        if kv:
            pending.setdefault(f"{kv[1]}attn.kv.{kv[3]}", {})[kv[2]] = value
            continue
        out[new] = value
    for key, parts in pending.items():
        if {"key", "value"} <= set(parts):
            out[key] = torch.cat([parts["key"], parts["value"]], dim=0)
    return out


@register_model("segformer", encoders("mit"))  # MIT's keys are the table's mit rows (tests/test_zoo.py)
def build_segformer(
    *, in_channels: int = 3, num_classes: int, encoder: str = "mit_b0", pretrained: Optional[str] = None,
    dropout: float = 0.1, freeze_backbone: Union[bool, int] = False,
) -> SegFormer:
    """SegFormer with a MiT-B0/B1/B2 encoder; pretrained is a local encoder file (.pth or .safetensors)."""
    if encoder not in MIT:
        raise ConfigError(f"model.encoder: 'segformer' takes {', '.join(MIT)}; got '{encoder}'")
    model = SegFormer(in_channels, num_classes, encoder, dropout)
    if pretrained == "imagenet":
        raise ConfigError("model.pretrained: torchvision has no MiT weights; give a local MiT file (.pth or .safetensors)")
    if pretrained:  # the record is kept on the encoder; the trainer logs it into train.log
        record = load_weights_file(model.encoder, resolve_weights(pretrained, encoder), pretrained,
                                   optional=("head.",), convert=convert_mit_state)
        model.encoder.pretrained_record = record.to_dict()
    if freeze_backbone is not False:
        keep = 0 if freeze_backbone is True else int(freeze_backbone)
        for i in range(1, 5 - keep):
            for name in (f"patch_embed{i}", f"block{i}", f"norm{i}"):
                getattr(model.encoder, name).requires_grad_(False)
    return model
