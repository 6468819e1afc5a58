"""Experiment config: a typed schema, YAML loading, `--set` overrides and the resolved dump."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, List, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .durations import parse_duration
from .errors import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _check_pairing(images: Optional[str], masks: Optional[str], list_file: Optional[str]) -> None:
    if list_file is None and (images is None or masks is None):
        raise ValueError("give either 'list' or both 'images' and 'masks'")
    if list_file is not None and (images is not None or masks is not None):
        raise ValueError("give either 'list' or 'images'/'masks', not both")


class SplitSource(_Strict):
    """One split of a folder dataset: an image and a mask folder, or a list file of 'image mask' lines.

    regions: an optional folder of per-image region masks (a field of view, or "don't care" areas): pixels
    outside the region are ignored in loss and metrics; see data.region_suffix and data.region_marks.
    With a list file, a third path on a line is that image's region mask.
    """

    images: Optional[str] = None
    masks: Optional[str] = None
    regions: Optional[str] = None
    list: Optional[str] = None

    @model_validator(mode="after")
    def _one_form(self) -> "SplitSource":
        _check_pairing(self.images, self.masks, self.list)
        if self.list is not None and self.regions is not None:
            raise ValueError("with 'list', give each image's region mask as a third path on its line, not 'regions'")
        return self


class RandomSplit(_Strict):
    """Split the train source at random when no val (or test) source is given."""

    val: float = Field(0.15, ge=0.0, lt=1.0)
    test: float = Field(0.0, ge=0.0, lt=1.0)
    seed: int = 0

    @model_validator(mode="after")
    def _sum(self) -> "RandomSplit":
        if self.val + self.test >= 1.0:
            raise ValueError("val + test must be below 1")
        return self


class SyntheticConfig(_Strict):
    num_train: int = Field(256, ge=1)
    num_val: int = Field(64, ge=1)
    num_test: int = Field(64, ge=1)
    size: tuple[int, int] = (96, 96)
    num_classes: int = Field(4, ge=2, le=6)
    seed: int = 0


class StemPairing(_Strict):
    """Pairs image and mask files whose stems differ by a pattern (DRIVE: 21_training.tif + 21_manual1.gif):
    each regex must match a whole stem, and its one group is the key an image and its mask share. Files
    whose stems do not match are not images (or not masks)."""

    image: str
    mask: str

    @field_validator("image", "mask")
    @classmethod
    def _one_group(cls, v: str) -> str:
        import re

        try:
            groups = re.compile(v).groups
        except re.error as exc:
            raise ValueError(f"{v!r} is not a valid regular expression ({exc})") from None
        if groups != 1:
            raise ValueError(f"{v!r} needs exactly one (group): the key an image and its mask share; it has {groups}")
        return v


class _MaskOptions(_Strict):
    """How masks are decoded beyond their encoding: the fields below, declared last in a folder dataset
    and in each merged source (so a resolved config lists them after the encoding).

    binary_threshold: binary masks are foreground where any channel is above it (in the mask's units).
    binary_invert: for datasets whose class of interest is the dark one.
    unknown_colors: rgb masks' colours outside the palette are an error (default), or go to the nearest
    palette colour within color_tolerance (RGB distance; farther ones stay an error), or to ignore.
    """


    @model_validator(mode="after")
    def _one_pairing_rule(self) -> "_MaskOptions":
        if getattr(self, "mask_suffix", "") and getattr(self, "pair_stems", None) is not None:
            raise ValueError("give mask_suffix or pair_stems, not both")
        return self

    def pairing(self) -> dict[str, Any]:
        """Keyword arguments of pair_folders: how an image's mask is found."""
        p = self.pair_stems  # type: ignore[attr-defined]
        return {"mask_suffix": self.mask_suffix,  # type: ignore[attr-defined]
                "stems": (p.image, p.mask) if p is not None else None}

    def mask_options(self) -> dict[str, Any]:
        """Keyword arguments of MaskDecoder."""
        return {"threshold": self.binary_threshold, "invert": self.binary_invert,
                "unknown_colors": self.unknown_colors, "tolerance": self.color_tolerance}


class SourceConfig(_MaskOptions):
    """One labelled source of a merged dataset (data.kind: merged) and the shared classes it annotates.

    `classes`: for a binary source, the shared name of its foreground; otherwise a mapping from the
    source's own class names to shared names ('background' allowed). Source classes left out of the
    mapping, and shared classes the source does not name, are unannotated: such pixels read as
    "background or an unannotated class".
    """

    name: str
    split: Literal["train", "val", "test"] = "train"
    images: Optional[str] = None
    masks: Optional[str] = None
    mask_suffix: str = ""
    pair_stems: Optional[StemPairing] = None
    mask_encoding: Literal["index", "binary", "rgb"] = "binary"
    palette_file: Optional[str] = None
    class_names: Optional[List[str]] = None  # typing.List: `list` is a field here
    void_class: Optional[str] = "Void"
    binary_threshold: int = Field(127, ge=0, le=65534)
    binary_invert: bool = False
    unknown_colors: Literal["error", "nearest", "ignore"] = "error"
    color_tolerance: float = Field(30.0, ge=0.0)
    align: Literal["none", "resize_image_to_mask", "resize_mask_to_image"] = "none"
    classes: Union[str, dict[str, str]]
    # Optional fixed shared ids and colours for the classes this source names; sources must agree.
    ids: dict[str, int] = {}
    colors: dict[str, tuple[int, int, int]] = {}
    list: Optional[str] = None

    @model_validator(mode="after")
    def _form(self) -> "SourceConfig":
        _check_pairing(self.images, self.masks, self.list)
        if isinstance(self.classes, str) and self.mask_encoding != "binary":
            raise ValueError("a single class name fits a binary source; map the source's classes with a dict")
        if self.mask_encoding == "rgb" and self.palette_file is None:
            raise ValueError("mask_encoding 'rgb' needs palette_file (label_colors.txt or class_dict.csv)")
        return self

    def mapping(self) -> dict[str, str]:
        """Source class name -> shared class name."""
        return {"foreground": self.classes} if isinstance(self.classes, str) else dict(self.classes)


class DataConfig(_MaskOptions):
    kind: Literal["folder", "synthetic", "merged"] = "synthetic"
    root: str = "."
    train: Optional[SplitSource] = None
    val: Optional[SplitSource] = None
    test: Optional[SplitSource] = None
    random_split: RandomSplit = RandomSplit()
    mask_suffix: str = ""
    pair_stems: Optional[StemPairing] = None
    # region masks (train/val/test `regions:` folders) are found by the image's stem plus this suffix
    # (DRIVE: 21_training.tif -> 21_training_mask.gif with region_suffix: _mask)
    region_suffix: str = ""
    # what a region mask's non-zero pixels are: the pixels to score (a field of view) or the ones to ignore
    region_marks: Literal["valid", "ignore"] = "valid"
    mask_encoding: Literal["index", "binary", "rgb"] = "index"
    palette_file: Optional[str] = None
    class_names: Optional[list[str]] = None
    void_class: Optional[str] = "Void"
    ignore_index: int = Field(255, ge=0, le=255)
    binary_threshold: int = Field(127, ge=0, le=65534)
    binary_invert: bool = False
    unknown_colors: Literal["error", "nearest", "ignore"] = "error"
    color_tolerance: float = Field(30.0, ge=0.0)
    align: Literal["none", "resize_image_to_mask", "resize_mask_to_image"] = "none"
    in_channels: int = Field(3, ge=1, le=64)
    # 16-bit and float images are divided by this (default: 65535 for 16-bit, 1 for float; 8-bit by 255):
    # one scale for the whole dataset, so absolute intensity survives; e.g. 4095 for 12-bit cameras
    image_max: Optional[float] = Field(None, gt=0)
    # larger image, mask and region files are refused as decompression bombs (12000x9000 = 108M fits)
    max_image_pixels: int = Field(200_000_000, ge=1)
    cache: bool = False
    synthetic: SyntheticConfig = SyntheticConfig()
    sources: Optional[list[SourceConfig]] = None
    # merged data: draw training samples from every source equally often, whatever their sizes
    balance_sources: bool = False

    @model_validator(mode="after")
    def _sources(self) -> "DataConfig":
        if self.kind == "folder" and self.train is None:
            raise ValueError("a folder dataset needs data.train")
        if self.kind == "merged":
            if not self.sources:
                raise ValueError("a merged dataset needs data.sources (one entry per labelled source)")
            names = [s.name for s in self.sources]
            dup = sorted({n for n in names if names.count(n) > 1})
            if dup:
                raise ValueError(f"source name {dup[0]!r} is used twice; names must be unique")
            if not any(s.split == "train" for s in self.sources):
                raise ValueError("no source has split 'train'")
        elif self.sources:
            raise ValueError("data.sources needs data.kind: merged")
        if self.mask_encoding == "rgb" and self.kind == "folder" and self.palette_file is None:
            raise ValueError("mask_encoding 'rgb' needs data.palette_file (label_colors.txt or class_dict.csv)")
        return self


class AugmentConfig(_Strict):
    resize: Optional[tuple[int, int]] = None
    scale: Optional[tuple[float, float]] = None
    crop: Optional[tuple[int, int]] = None
    hflip: float = Field(0.0, ge=0.0, le=1.0)
    rotate: float = Field(0.0, ge=0.0, le=180.0)
    color_jitter: float = Field(0.0, ge=0.0, le=1.0)
    # one value per input channel (data.in_channels); default ImageNet's for 3 channels, 0.5 / 0.25 otherwise
    mean: Optional[tuple[float, ...]] = None
    std: Optional[tuple[float, ...]] = None

    @field_validator("scale")
    @classmethod
    def _scale(cls, v):
        if v is not None and not (0 < v[0] <= v[1]):
            raise ValueError("scale must be [low, high] with 0 < low <= high")
        return v

    @model_validator(mode="after")
    def _fixed_size(self) -> "AugmentConfig":
        if self.scale is not None and self.crop is None and tuple(self.scale) != (1.0, 1.0):
            raise ValueError("scale: random scaling changes the image size; set augment.crop [h, w] so batches stack")
        return self


class ModelConfig(BaseModel):
    """`name` picks a registered model; every other key is a keyword option of its builder."""

    model_config = ConfigDict(extra="allow", validate_assignment=True)
    name: str = "unet"

    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class LossConfig(BaseModel):
    """`name` is a registered loss, or a list of them summed with `weights`; `strategy` a registered
    partial-label strategy; any other key is an option of those builders (checked by losses.check_loss_config)."""

    model_config = ConfigDict(extra="allow", validate_assignment=True)
    name: Union[str, List[str]] = "cross_entropy"
    weights: Optional[List[float]] = None  # one per name (default 1 each)
    class_weights: Union[None, Literal["inverse_frequency", "median_frequency"], list[float]] = None
    ce_weight: float = Field(1.0, ge=0.0)
    dice_weight: float = Field(1.0, ge=0.0)
    dice_smooth: float = Field(1.0, ge=0.0)
    # Weight of each auxiliary / side output's loss (PSPNet, FCN and DeepLabV3 aux heads, U²-Net sides).
    aux_weight: Union[float, list[float]] = 0.4
    # How pixels outside a sample's annotated classes are treated (merged single-class sources):
    # naive = as background; marginal = background or any unannotated class (Shi et al. 2021);
    # marginal_exclusion = marginal plus the exclusion loss; conditional = Dmitriev & Kaufman's
    # class-conditioned binary model. On fully labelled data marginal equals the plain loss.
    strategy: str = "naive"
    exclusion_weight: float = Field(1.0, ge=0.0)
    # conditional: a pixel is background unless some class's foreground probability exceeds this
    conditional_threshold: float = Field(0.5, gt=0.0, lt=1.0)

    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class OptimizerConfig(_Strict):
    name: Literal["adam", "adamw", "sgd", "rmsprop"] = "adam"
    lr: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(0.0, ge=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)
    backbone_lr_mult: float = Field(1.0, ge=0.0)


class ScheduleConfig(_Strict):
    name: Literal["constant", "step", "cosine", "poly"] = "constant"
    warmup_epochs: float = Field(0.0, ge=0.0)
    step_epochs: int = Field(10, ge=1)
    gamma: float = Field(0.1, gt=0.0, le=1.0)
    power: float = Field(0.9, gt=0.0)
    min_lr_ratio: float = Field(0.0, ge=0.0, le=1.0)


class TrainConfig(_Strict):
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(8, ge=1)
    num_workers: int = Field(0, ge=0)
    val_every: int = Field(1, ge=1)
    early_stopping_patience: Optional[int] = Field(None, ge=1)
    best_metric: str = "miou"
    best_mode: Literal["max", "min"] = "max"
    device: str = "auto"
    channels_last: bool = True
    grad_clip: Optional[float] = Field(None, gt=0.0)
    threads: Optional[int] = Field(None, ge=1)
    # torchrun: batch_size is the global batch, split evenly over the processes; sync_bn pools
    # BatchNorm statistics over them (torch's SyncBatchNorm on GPUs, seglab's own on CPU)
    sync_bn: bool = False
    # Speed switches (measured on 2 CPU cores in docs/benchmarks.md): torch.compile of the model, and mixed
    # precision (bf16 autocast; fp16 autocast with a gradient scaler, CUDA only). `auto` = bf16 on CPUs with
    # native bf16 (AVX512-BF16 / AMX), where it measured 1.4x faster end to end at -0.4 mIoU points on Weizmann
    # Horse; fp32 elsewhere (engine/precision.py)
    compile: bool = False
    amp: Literal["auto", "none", "bf16", "fp16"] = "auto"
    # Training time to fit the run into ('90s', '45m', '2h', or seconds): the run measures its speed, plans
    # how many steps fit (validations included) so the whole lr schedule ends on time, and re-plans as it
    # goes; train.epochs is then not used. null: train.epochs epochs.
    time_budget: Union[None, str, float] = None
    # Training steps timed before epoch 1 for the time estimate (the first is warm-up); 0 skips the estimate.
    estimate_steps: int = Field(4, ge=0)

    @field_validator("time_budget")
    @classmethod
    def _budget(cls, v):
        if v is not None:
            parse_duration(v)
        return v

    @model_validator(mode="after")
    def _budget_needs_estimate(self) -> "TrainConfig":
        if self.time_budget is not None and self.estimate_steps < 1:
            raise ValueError("time_budget needs estimate_steps >= 1 (the plan comes from the measured speed)")
        return self

    @field_validator("best_metric")
    @classmethod
    def _metric(cls, v):
        allowed = {"miou", "pixel_accuracy", "mean_accuracy", "mean_dice", "fwiou", "mean_boundary_iou", "val_loss"}
        if v not in allowed:
            raise ValueError(f"must be one of {', '.join(sorted(allowed))}")
        return v

    @field_validator("device")
    @classmethod
    def _device(cls, v):
        if v not in ("auto", "cpu") and not v.startswith("cuda"):
            raise ValueError("must be 'auto', 'cpu' or 'cuda[:N]'")
        return v


class EvalConfig(_Strict):
    split: Literal["val", "test"] = "val"
    batch_size: int = Field(4, ge=1)
    boundary_dilation_ratio: float = Field(0.02, gt=0.0, le=0.5)
    num_samples: int = Field(6, ge=0)
    # Large images (seglab eval / predict and the final evaluation of a run; validation during training
    # stays whole-image): windows of this (h, w) over the model-input image, Gaussian-blended.
    sliding_window: Optional[tuple[int, int]] = None
    sliding_stride: Optional[tuple[int, int]] = None  # default: two thirds of the window
    tta_flip: bool = False
    tta_scales: List[float] = [1.0]

    @model_validator(mode="after")
    def _inference(self) -> "EvalConfig":
        w, s = self.sliding_window, self.sliding_stride
        if w is not None and min(w) < 1:
            raise ValueError("sliding_window: expected [height, width] of positive integers")
        if s is not None and (w is None or min(s) < 1 or s[0] > w[0] or s[1] > w[1]):
            raise ValueError("sliding_stride: needs sliding_window and 1 <= stride <= window on each axis")
        if not self.tta_scales or any(not 0 < v <= 8 for v in self.tta_scales):
            raise ValueError("tta_scales: expected a non-empty list of scales in (0, 8]")
        return self


class OutputConfig(_Strict):
    """The run folder is dir/name; name is a plain folder name (it is what --overwrite may replace)."""

    dir: str = "runs"
    name: str = "experiment"

    @field_validator("name")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        if v in ("", ".", "..") or any(c in v for c in "/\\\0") or v.strip() != v:
            raise ValueError(f"{v!r} is not a plain folder name (no '.', '..', separators or edge spaces); "
                             "put the parent folder in output.dir")
        return v


class TrackingConfig(_Strict):
    """CSV and TensorBoard are always written; MLflow too when mlflow_uri is set (a folder or file:// URI
    for a local store, sqlite:///mlflow.db, or an http(s):// tracking server)."""

    mlflow_uri: Optional[str] = None
    mlflow_experiment: Optional[str] = None  # default "seglab"


class SearchParam(_Strict):
    """One dimension of a search space: float / int ranges (optionally log-scaled) or a list of choices."""

    type: Literal["float", "int", "categorical"]
    low: Optional[float] = None
    high: Optional[float] = None
    log: bool = False
    step: Optional[float] = None
    choices: Optional[List[Any]] = None

    @model_validator(mode="after")
    def _form(self) -> "SearchParam":
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical parameter needs a non-empty 'choices' list")
        elif self.low is None or self.high is None or self.low > self.high:
            raise ValueError(f"a {self.type} parameter needs low <= high")
        elif self.log and self.low <= 0:
            raise ValueError("log scale needs low > 0")
        return self


class TuneConfig(_Strict):
    """`seglab tune`: an Optuna study over `space` (dotted config keys), maximising a validation metric."""

    space: dict[str, SearchParam] = {}
    metric: str = "miou"
    direction: Literal["maximize", "minimize"] = "maximize"
    storage: Optional[str] = None  # any SQLAlchemy URL; default sqlite:///OUTPUT_DIR/tune_NAME.db
    study_name: Optional[str] = None  # default output.name
    pruner: Literal["median", "none"] = "median"
    pruner_warmup_epochs: int = Field(1, ge=0)  # epochs of a trial before it may be pruned
    pruner_startup_trials: int = Field(3, ge=0)  # trials that always run to the end first
    sampler_seed: Optional[int] = None


class Config(_Strict):
    seed: int = 0
    # Cross-validation: K trainings, each validated on one of K disjoint folds of the train + val pool
    # (the test split stays aside); the run folder gets fold_1..fold_K and the mean and std of every metric.
    k_folds: Optional[int] = Field(None, ge=2)
    data: DataConfig = DataConfig()
    augment: AugmentConfig = AugmentConfig()
    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    output: OutputConfig = OutputConfig()
    tune: TuneConfig = TuneConfig()
    tracking: TrackingConfig = TrackingConfig()

    @model_validator(mode="after")
    def _normalisation_per_channel(self) -> "Config":
        n = self.data.in_channels
        defaults = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)} if n == 3 else \
            {"mean": (0.5,) * n, "std": (0.25,) * n}
        for key, value in defaults.items():
            given = getattr(self.augment, key)
            if given is None:
                object.__setattr__(self.augment, key, value)  # resolved: the dump shows what was used
            elif len(given) != n:
                raise ValueError(f"augment.{key} has {len(given)} values but data.in_channels is {n}: give {n}")
        return self

    def run_dir(self) -> Path:
        return Path(self.output.dir) / self.output.name

    def to_dict(self) -> dict[str, Any]:
        return to_plain(self.model_dump(mode="python"))


def to_plain(obj: Any) -> Any:
    """Tuples -> lists, recursively, so the dump is plain YAML and plain checkpoint metadata."""
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    return obj


def _format_error(err: ValidationError, source: str) -> str:
    first = err.errors()[0]
    # Pydantic puts union branch names and tags into loc; keep only the user's keys.
    loc = [str(p) for p in first["loc"] if not (isinstance(p, str) and ("[" in p or p.startswith("function-")))]
    path = ".".join(loc) or "(top level)"
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
        parent = _schema_at(loc[:-1])
        if parent is not None:
            msg += f"; allowed: {', '.join(parent.model_fields)}"
    elif first["type"] == "literal_error":
        msg = "bad value " + repr(first.get("input")) + "; " + msg.lower()
    elif "input" in first and first["type"] not in ("missing",) and not isinstance(first["input"], dict):
        msg = f"{msg} (got {first['input']!r})"
    more = len(err.errors()) - 1
    tail = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    msg = msg.removeprefix("Value error, ")
    return f"{source}: {path}: {msg}{tail}" if loc else f"{source}: {msg}{tail}"


def _schema_at(path: list[str]):
    cls: Any = Config
    for key in path:
        field = cls.model_fields.get(key)
        if field is None:
            return None
        ann = field.annotation
        args = [a for a in getattr(ann, "__args__", ()) if isinstance(a, type) and issubclass(a, BaseModel)]
        cls = args[0] if args else ann
        if not (isinstance(cls, type) and issubclass(cls, BaseModel)):
            return None
    return cls


def parse_override(text: str) -> tuple[list[str], Any]:
    """'train.epochs=5' -> (['train', 'epochs'], 5); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. train.epochs=5")
    key, _, raw = text.partition("=")
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {text!r}: expected a dotted key such as train.epochs")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def set_dotted(raw: dict[str, Any], keys: list[str], value: Any, where: str) -> None:
    """raw[k1][k2]... = value, creating sections on the way; `where` names the setting in the error."""
    node = raw
    for i, k in enumerate(keys[:-1]):
        nxt = node.get(k)
        if nxt is None:
            nxt = node[k] = {}
        if not isinstance(nxt, dict):
            raise ConfigError(f"{where}: {'.'.join(keys[: i + 1])} is not a config section")
        node = nxt
    node[keys[-1]] = value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for text in overrides:
        keys, value = parse_override(text)
        set_dotted(raw, keys, value, f"--set {text}")
    return raw


def config_from_dict(raw: dict[str, Any], source: str = "config", overrides: Optional[list[str]] = None) -> Config:
    raw = apply_overrides(dict(raw), overrides or [])
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_error(err, source)) from None
    keys = {o.split("=", 1)[0].strip() for o in overrides or []}
    if "train.epochs" in keys and "train.time_budget" not in keys and cfg.train.time_budget is not None:
        # A budgeted run plans its own length: the override would be silently ignored.
        raise ConfigError(f"{source}: --set train.epochs has no effect while train.time_budget is "
                          f"{cfg.train.time_budget}; add --set train.time_budget=null to train a fixed number of epochs")
    return cfg


def load_config(path: Union[str, os.PathLike], overrides: Optional[list[str]] = None) -> Config:
    """Read a YAML experiment file, apply `--set` overrides and validate."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start}); "
                          "save the config as UTF-8") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{p}: not valid YAML{where}") from None
    if raw is None:
        raise ConfigError(f"{p}: the config is empty; start from one in configs/ (or `seglab demo` for the built-in data)")
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: expected a mapping of sections (data, model, train, ...)")
    if "data" not in raw:
        raise ConfigError(f"{p}: no data: section (which images and masks to train on); "
                          "write data: {kind: synthetic} to mean the built-in shapes")
    return config_from_dict(raw, str(p), overrides)


def config_differences(a: Config, b: Config, limit: int = 3, sections: Optional[tuple[str, ...]] = None) -> str:
    """The settings where two configs differ, e.g. "model.base_channels (32 vs 16)"; "" when they are the
    same run (where a run folder is, output.*, is not compared). `sections` limits it to some, e.g. ("data",)."""
    def flat(d: Any, prefix: str = "") -> dict[str, Any]:
        if isinstance(d, dict):
            out: dict[str, Any] = {}
            for k, v in d.items():
                out.update(flat(v, f"{prefix}{k}."))
            return out
        return {prefix[:-1]: d}

    fa, fb = flat(a.to_dict()), flat(b.to_dict())
    keys = [k for k in dict.fromkeys([*fa, *fb]) if not k.startswith("output.") and fa.get(k) != fb.get(k)
            and (sections is None or k.split(".")[0] in sections)]
    shown = ", ".join(f"{k} ({fa.get(k)!r} vs {fb.get(k)!r})" for k in keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def dump_config(cfg: Config) -> str:
    """The resolved config as YAML, without the data settings that do not apply to its data.kind (a
    folder dataset has no `synthetic:` block); loading it back gives the same config."""
    d = cfg.to_dict()
    data = d["data"]
    if data["kind"] != "synthetic":
        data.pop("synthetic")
    if data["kind"] != "merged":
        data.pop("sources")
        data.pop("balance_sources")
    return yaml.safe_dump(d, sort_keys=False)
