"""The encoder table, one row per encoder seglab builds (segmentation_models_pytorch keeps one too): its name
in `model.encoder`, its family and the module that builds it. Each architecture's list of encoders is a query
on this table (`encoders(...)`), so adding an encoder family is its builder module plus its rows here."""
from __future__ import annotations

from dataclasses import dataclass

TIMM_ANY = "timm/*"  # in an architecture's encoder list: it takes timm encoders (timm/NAME, any of timm's)


@dataclass(frozen=True)
class EncoderRow:
    """name: as `model.encoder` takes it; family: resnet, vgg, mobilenet, timm, mit; home: its builder."""

    name: str
    family: str
    home: str


ENCODER_TABLE = (
    *(EncoderRow(n, "resnet", "models/encoders.py") for n in ("resnet18", "resnet34", "resnet50", "resnet101")),
    EncoderRow("vgg16_bn", "vgg", "models/encoders.py"),
    EncoderRow("mobilenet_v2", "mobilenet", "models/encoders.py"),
    EncoderRow("mobilenet_v3_large", "mobilenet", "models/encoders.py"),
    EncoderRow(TIMM_ANY, "timm", "models/timm_encoder.py"),
    *(EncoderRow(n, "mit", "models/segformer.py") for n in ("mit_b0", "mit_b1", "mit_b2")),
)
TORCHVISION_FAMILIES = ("resnet", "vgg", "mobilenet")


def encoders(*families: str, names: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The encoders of the given families, plus single `names`, in the table's order."""
    unknown = set(families) - {r.family for r in ENCODER_TABLE} or set(names) - {r.name for r in ENCODER_TABLE}
    if unknown:
        raise KeyError(f"not in the encoder table: {', '.join(sorted(unknown))}")
    return tuple(r.name for r in ENCODER_TABLE if r.family in families or r.name in names)
