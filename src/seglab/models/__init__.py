"""Model registry front: create_model and list_models."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from ..registry import MODEL_ENCODERS, MODELS, builder_options, check_options, coerce_options, lookup
from . import deeplab, fcn, lraspp, pspnet, segformer, u2net, unet  # noqa: F401  (registers)


def list_models() -> list[str]:
    """Names of the registered models, sorted."""
    return sorted(MODELS)


def create_model(name: str, *, in_channels: int = 3, num_classes: int, **options: Any) -> nn.Module:
    """Build a registered model; options are checked against the builder's typed keyword arguments.

    Returns a module mapping (N, in_channels, H, W) to logits (N, num_classes, H, W).
    """
    fn = lookup(MODELS, "model", name)
    check_options(fn, options, "model")
    options = coerce_options(fn, options, "model")
    try:
        return fn(in_channels=in_channels, num_classes=num_classes, **options)
    except ValueError as exc:
        msg = str(exc)
        raise ConfigError(msg if msg.startswith("model.") else f"model.{msg}") from None


def create_conditional_model(name: str, *, in_channels: int = 3, num_classes: int, threshold: float = 0.5,
                             **options: Any) -> nn.Module:
    """A class-conditioned version of a registered model (Dmitriev & Kaufman): one binary output per class.

    A U-Net from scratch takes the class code in every decoder stage; any other model as extra input planes.
    Returns a module mapping (N, in_channels, H, W) to combined scores (N, num_classes, H, W) in eval mode.
    """
    from .conditional import ConditionalSegmenter

    if num_classes < 2:
        raise ConfigError("the conditional strategy needs at least one class besides background")
    decoder_code = name == "unet" and options.get("encoder") is None
    if decoder_code:
        net = create_model(name, in_channels=in_channels, num_classes=1, condition_channels=num_classes - 1, **options)
    else:
        net = create_model(name, in_channels=in_channels + num_classes - 1, num_classes=1, **options)
    return ConditionalSegmenter(net, num_classes, threshold, decoder_code)


def train_inputs(model: nn.Module) -> tuple[str, ...]:
    """The batch entries besides the images that `model` takes in training, as keyword arguments of its
    forward: () for most models; ("labelled",) the (N, K) annotated classes for a class-conditioned one.
    A model declares them in a `train_inputs` class attribute; the training step knows no model kind."""
    return tuple(getattr(model, "train_inputs", ()))


def fixed_export_size(model: nn.Module) -> str:
    """Why the model's ONNX graph holds for the traced input size only ("" when height and width may vary):
    a model class that cannot export dynamic sizes says so in an `export_fixed_size` attribute."""
    for m in model.modules():
        reason = getattr(type(m), "export_fixed_size", "")
        if reason:
            return f"{type(m).__name__}: {reason}"
    return ""


def build_model_from_meta(meta: dict[str, Any], pretrained: bool = True) -> nn.Module:
    """Rebuild a model from a checkpoint's plain "model" metadata (name, options, sizes, conditional);
    `pretrained=False` leaves model.pretrained out (the weights come from a checkpoint: no weights file needed)."""
    options = dict(meta["options"])
    if not pretrained:
        options.pop("pretrained", None)
    cond = meta.get("conditional")
    if cond:
        return create_conditional_model(meta["name"], in_channels=meta["in_channels"], num_classes=meta["num_classes"],
                                        threshold=float(cond["threshold"]), **options)
    return create_model(meta["name"], in_channels=meta["in_channels"], num_classes=meta["num_classes"], **options)


def count_flops(model: nn.Module, size: tuple[int, int] = (512, 512), in_channels: int = 3) -> float:
    """Forward FLOPs (multiply and add counted separately) of one image, counted on the meta device."""
    import copy

    from torch.utils.flop_counter import FlopCounterMode

    meta = copy.deepcopy(model).to("meta").eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        meta(torch.empty(1, in_channels, *size, device="meta"))
    return float(counter.get_total_flops())


def describe_model(name: str, num_classes: int = 21) -> dict[str, Any]:
    """Parameters, GFLOPs at 512x512 and encoders of a registered model with its default options."""
    with torch.device("meta"):
        model = create_model(name, num_classes=num_classes)
    return {
        "name": name,
        "parameters": sum(p.numel() for p in model.parameters()),
        "gflops_512": count_flops(model) / 1e9,
        "encoders": MODEL_ENCODERS.get(name, ()),
        "default_encoder": model_options(name).get("encoder"),
    }


def model_options(name: str) -> dict[str, Any]:
    """Defaults of a model's options, e.g. for `seglab models`."""
    return {k: p.default for k, p in builder_options(lookup(MODELS, "model", name)).items()}


__all__ = ["count_flops", "create_model", "describe_model", "fixed_export_size", "list_models", "model_options",
           "train_inputs"]
