"""ModelInfo: the one record of what a model file carries besides its weights (classes, normalisation,
input size, image scale, the architecture and its options, where the encoder's weights came from).

Checkpoints store `to_dict()` beside their tensors and `seglab export` stores it as JSON in ONNX /
TorchScript metadata; every reader goes through `from_dict`, which checks types and ranges and reads the
files older seglab versions wrote (exports with `mean` / `std` / `in_channels` at the top level)."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Optional

from ..config.schema import default_normalization
from ..data.labels import LabelSpace
from ..errors import CheckpointError, DataError, brief


@dataclass(frozen=True)
class ModelInfo:
    """What rebuilding and running a trained model needs, apart from its weights.

    name, options: the registered model and its builder's options; in_channels, num_classes: its sizes;
    conditional: the conditional U-Net's settings (None otherwise); pretrained: the weights records of what
    the encoder started from; labels: classes, palette, ignore index, multi-label flag; mean, std: the
    per-channel normalisation of images scaled to [0, 1]; input_size: (H, W) images are resized to (None:
    any size); image_max: the intensity that maps to 1.0 for 16-bit / float images (None: by dtype); nodata:
    the stored value that marks missing pixels (data.nodata; NaN allowed; None: none);
    size_divisor: what an export's input sides are padded to a multiple of (checkpoints: the rebuilt model says).
    """

    name: str
    options: dict[str, Any]
    in_channels: int
    num_classes: int
    labels: LabelSpace
    mean: tuple[float, ...]
    std: tuple[float, ...]
    input_size: Optional[tuple[int, int]] = None
    image_max: Optional[float] = None
    nodata: Optional[float] = None
    conditional: Optional[dict[str, Any]] = None
    pretrained: list[dict[str, Any]] = field(default_factory=list)
    size_divisor: int = 1

    @property
    def multilabel(self) -> bool:
        return self.labels.multilabel

    @property
    def model_meta(self) -> dict[str, Any]:
        """The architecture part alone, as `models.build_model_from_meta` takes it."""
        return {"name": self.name, "options": dict(self.options), "in_channels": self.in_channels,
                "num_classes": self.num_classes, "conditional": self.conditional, "pretrained": list(self.pretrained)}

    def with_pretrained(self, records: list[dict[str, Any]]) -> "ModelInfo":
        return replace(self, pretrained=list(records))

    def to_dict(self) -> dict[str, Any]:
        """Plain values only (a checkpoint's metadata, an export's JSON)."""
        return {"model": self.model_meta, "labels": self.labels.to_dict(),
                "normalization": {"mean": list(self.mean), "std": list(self.std)},
                "input_size": list(self.input_size) if self.input_size else None, "image_max": self.image_max,
                "nodata": self.nodata, "size_divisor": self.size_divisor}

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "model file",
                  config: Optional[dict[str, Any]] = None) -> "ModelInfo":
        """Read and check `to_dict()`'s output (or an older file's layout); errors name `source`.
        `config`: the training config stored beside it, for files that kept the image scale only there."""
        def bad(what: str) -> CheckpointError:
            return CheckpointError(f"{source} metadata {what}; the file was not written by seglab or was altered")

        meta = data.get("model")
        if not isinstance(meta, dict) or not isinstance(meta.get("name"), str) or not isinstance(meta.get("options"), dict):
            raise bad("'model' is not {name, options, ...}")
        sizes = {**meta, "in_channels": meta.get("in_channels", data.get("in_channels"))}
        for key, low, high in (("in_channels", 1, 64), ("num_classes", 2, 254)):
            v = sizes.get(key)
            if not isinstance(v, int) or isinstance(v, bool) or not low <= v <= high:
                raise bad(f"model.{key} is {v!r}, expected a whole number {low}..{high}")
        if not isinstance(meta.get("conditional"), (dict, type(None))):
            raise bad("model.conditional is not a mapping")
        pretrained = meta.get("pretrained", [])
        if not isinstance(pretrained, list) or not all(isinstance(r, dict) for r in pretrained):
            raise bad("model.pretrained is not a list of weights records")
        labels = _labels(data.get("labels"), bad)
        if labels.num_classes != sizes["num_classes"]:
            raise bad(f"has {labels.num_classes} class names for a model of {sizes['num_classes']} classes")
        n = sizes["in_channels"]
        mean, std = _normalization(data, n, bad)
        size = data.get("input_size")
        if size is not None and not (isinstance(size, list) and len(size) == 2
                                     and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)):
            raise bad(f"input_size is {size!r}, expected [height, width]")
        image_max = data.get("image_max", ((config or {}).get("data") or {}).get("image_max"))
        if image_max is not None and (not isinstance(image_max, (int, float)) or isinstance(image_max, bool)
                                      or image_max <= 0):
            raise bad(f"image_max is {image_max!r}, expected a positive number")
        nodata = data.get("nodata", ((config or {}).get("data") or {}).get("nodata"))
        if nodata is not None and (not isinstance(nodata, (int, float)) or isinstance(nodata, bool)):
            raise bad(f"nodata is {nodata!r}, expected a number")
        divisor = data.get("size_divisor", 1)
        if not isinstance(divisor, int) or isinstance(divisor, bool) or not 1 <= divisor <= 1024:
            raise bad(f"size_divisor is {divisor!r}, expected a whole number 1..1024")
        return cls(name=meta["name"], options=dict(meta["options"]), in_channels=n, num_classes=sizes["num_classes"],
                   labels=labels, mean=mean, std=std, input_size=tuple(size) if size else None,
                   image_max=float(image_max) if image_max is not None else None,
                   nodata=float(nodata) if nodata is not None else None,
                   conditional=meta.get("conditional"), pretrained=list(pretrained), size_divisor=divisor)


def _labels(raw: Any, bad) -> LabelSpace:
    try:
        names, palette = raw["names"], raw["palette"]
        ok = (isinstance(names, list) and all(isinstance(n, str) for n in names) and isinstance(palette, list)
              and all(isinstance(c, list) and len(c) == 3 and all(isinstance(v, int) for v in c) for c in palette)
              and isinstance(raw["ignore_index"], int))
    except (KeyError, TypeError):
        ok = False
    if not ok:
        raise bad("'labels' is not {names, palette, ignore_index}")
    try:
        return LabelSpace.from_dict(raw)
    except (ValueError, DataError) as exc:  # e.g. names and palette of different lengths
        raise bad(f"'labels' do not fit together ({brief(exc)})") from None


def _normalization(data: dict[str, Any], n: int, bad) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """mean / std from {normalization: {mean, std}} (checkpoints, new exports) or top-level mean / std
    (older exports); missing: the defaults the config would have chosen."""
    norm = data.get("normalization")
    if norm is None and "mean" in data:
        norm = {"mean": data.get("mean"), "std": data.get("std")}
    norm = norm or {}
    if not isinstance(norm, dict) or not all(
            isinstance(norm.get(k, []), list) and all(isinstance(v, (int, float)) for v in norm.get(k, []))
            for k in ("mean", "std")):
        raise bad("'normalization' is not {mean: [numbers], std: [numbers]}")
    default_mean, default_std = default_normalization(n)
    # older checkpoints of 1-channel models carry 3 values: the first n are the ones that were used
    mean = tuple(float(v) for v in (norm.get("mean") or default_mean))[:n]
    std = tuple(float(v) for v in (norm.get("std") or default_std))[:n]
    if len(mean) != n or len(std) != n:
        raise bad(f"normalization has {len(mean)} mean / {len(std)} std values for {n} input channels")
    return mean, std

