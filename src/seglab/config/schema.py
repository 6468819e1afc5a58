"""The config sections besides data, and the whole `Config`."""
from __future__ import annotations

from pathlib import Path
from typing import Any, List, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..durations import parse_duration
from .metric_names import SELECTABLE, Metric, check_metric_name, metric
from .base import _Strict, to_plain
from .data import MULTILABEL_ENCODINGS, AugmentConfig, DataConfig


class ModelConfig(BaseModel):
    """`name` picks a registered model; `output` how its logits are read (softmax: one class per pixel;
    multilabel: one sigmoid per class, classes may overlap); every other key is a keyword option of its builder."""

    model_config = ConfigDict(extra="allow", frozen=True)
    name: str = "unet"  # a registered model; `seglab models` lists them with their options
    # softmax: one class per pixel; multilabel: one sigmoid per class (overlapping classes)
    output: Literal["softmax", "multilabel"] = "softmax"

    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class LossConfig(BaseModel):
    """`name` is a registered loss, or a list of them summed with `weights`; `strategy` a registered
    partial-label strategy; any other key is an option of those builders (checked by losses.check_loss_config)."""

    model_config = ConfigDict(extra="allow", frozen=True)
    # a registered loss, or a list of them summed with weights; `seglab models` lists them
    name: Union[str, List[str]] = "cross_entropy"
    weights: Optional[List[float]] = None  # one per name (default 1 each)
    # per-class weights: a list, or inverse_frequency / median_frequency from the training set's pixels
    class_weights: Union[None, Literal["inverse_frequency", "median_frequency"], list[float]] = None
    ce_weight: float = Field(1.0, ge=0.0)  # ce_dice: the cross-entropy term's weight
    dice_weight: float = Field(1.0, ge=0.0)  # ce_dice: the Dice term's weight
    dice_smooth: float = Field(1.0, ge=0.0)  # Dice / Tversky smoothing, added to numerator and denominator
    # Weight of each auxiliary / side output's loss (PSPNet, FCN and DeepLabV3 aux heads, U²-Net sides).
    aux_weight: Union[float, list[float]] = 0.4
    # How pixels outside a sample's annotated classes are treated (merged single-class sources):
    # naive = as background; marginal = background or any unannotated class (Shi et al. 2021);
    # marginal_exclusion = marginal plus the exclusion loss; conditional = Dmitriev & Kaufman's
    # class-conditioned binary model. On fully labelled data marginal equals the plain loss.
    strategy: str = "naive"
    exclusion_weight: float = Field(1.0, ge=0.0)  # marginal_exclusion: the exclusion term's weight
    # conditional: a pixel is background unless some class's foreground probability exceeds this
    conditional_threshold: float = Field(0.5, gt=0.0, lt=1.0)

    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class OptimizerConfig(_Strict):
    """The `optimizer` section."""
    name: Literal["adam", "adamw", "sgd", "rmsprop"] = "adam"  # adam, adamw, sgd or rmsprop
    lr: float = Field(1e-3, gt=0.0)  # the learning rate (at reference_batch when lr_scaling is set)
    weight_decay: float = Field(0.0, ge=0.0)  # weight decay (decoupled for adamw)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)  # sgd and rmsprop
    nesterov: bool = False  # sgd: Nesterov momentum
    betas: tuple[float, float] = (0.9, 0.999)  # adam and adamw
    backbone_lr_mult: float = Field(1.0, ge=0.0)  # an encoder's learning rate is lr times this (models with an encoder)
    # How the recipe follows a batch other than the one it was tuned at (reference_batch): with the effective
    # batch B = train.batch_size x train.accumulate_steps and k = B / reference_batch, linear multiplies lr by k
    # (Goyal et al. 2017, SGD), sqrt by sqrt(k) (Adam / AdamW: Malladi et al. 2022); both raise
    # train.ema_decay to the power k (Busbridge et al. 2023) so the average spans the same epochs. none: as set.
    lr_scaling: Literal["none", "linear", "sqrt"] = "none"
    reference_batch: Optional[int] = Field(None, ge=1)  # the effective batch lr was tuned at (lr_scaling needs it)

    @model_validator(mode="after")
    def _reference_for_scaling(self):
        if self.lr_scaling != "none" and self.reference_batch is None:
            raise ValueError(f"lr_scaling {self.lr_scaling} needs optimizer.reference_batch, the effective batch "
                             "optimizer.lr was tuned at (e.g. 8)")
        return self


class ScheduleConfig(_Strict):
    """The `schedule` section: the per-iteration learning-rate schedule with warm-up."""
    # constant, step (x gamma every step_epochs), cosine (down to min_lr_ratio x lr), poly ((1 - t)^power)
    name: Literal["constant", "step", "cosine", "poly"] = "constant"
    warmup_epochs: float = Field(0.0, ge=0.0)  # linear warm-up over this many epochs (fractions allowed)
    step_epochs: int = Field(10, ge=1)  # step: epochs between drops
    gamma: float = Field(0.1, gt=0.0, le=1.0)  # step: the factor at each drop
    power: float = Field(0.9, gt=0.0)  # poly: the exponent
    min_lr_ratio: float = Field(0.0, ge=0.0, le=1.0)  # the last learning rate as a share of lr (cosine, poly)


def _check_direction(name: str, given: Optional[str], up: str, key: str, metric_key: str) -> None:
    """A direction setting (`up`: its word for higher is better) that contradicts the metric's own is refused:
    a best checkpoint kept on the wrong side (the worst epoch) is a silently wrong result."""
    if given is None or name not in SELECTABLE:
        return
    m = metric(name)
    if (given == up) != m.higher_is_better:
        raise ValueError(f"{key} {given} contradicts {metric_key} {name}, for which "
                         f"{'higher' if m.higher_is_better else 'lower'} is better; leave {key} out (the metric's own "
                         "direction applies)")


class TrainConfig(_Strict):
    """The `train` section: length or time budget, batches, precision, fine-tuning, best checkpoint."""
    epochs: int = Field(10, ge=1)  # the training length when time_budget is null
    batch_size: int = Field(8, ge=1)  # images per step (under torchrun: the global batch, split over the processes)
    # DataLoader worker processes; auto: none on 2 CPU cores or fewer, up to 4 on larger CPU machines, all
    # cores but one (16 at most) on a GPU (engine/runtime.py; the run's first lines say what it chose)
    num_workers: Union[Literal["auto"], int] = "auto"
    val_every: int = Field(1, ge=1)  # validate every N epochs (and after the last)
    # stop after this many validations without a better best_metric (null: never)
    early_stopping_patience: Optional[int] = Field(None, ge=1)
    # the validation metric that picks best.pt and early stopping: a score (higher is better) or val_loss (lower
    # is better)
    best_metric: str = "miou"
    # needed by no config: the metric's own direction decides (config/metric_names.py; val_loss: lower is
    # better); kept so older configs read, and refused where it contradicts the metric
    best_mode: Optional[Literal["max", "min"]] = None
    device: str = "auto"  # auto (CUDA when there is one, else the CPU), cpu, cuda or cuda:N
    channels_last: bool = True  # NHWC memory format for the model and its inputs (faster convolutions)
    grad_clip: Optional[float] = Field(None, gt=0.0)  # clip the gradients' total norm to this (null: no clipping)
    # Gradient accumulation: one optimizer step per this many batches (an effective batch this many times
    # batch_size on a small machine); the learning-rate schedule counts optimizer steps.
    accumulate_steps: int = Field(1, ge=1)
    # Exponential moving average of the weights (e.g. 0.999): when set, the averaged model is the one
    # validated, saved as best / last and evaluated; the trained weights are kept for --resume.
    ema_decay: Optional[float] = Field(None, gt=0.0, lt=1.0)
    # torch threads of the process (null: torch's default; --nproc-per-node divides the cores)
    threads: Optional[int] = Field(None, ge=1)
    # torchrun: batch_size is the global batch, split evenly over the processes; sync_bn pools
    # BatchNorm statistics over them (torch's SyncBatchNorm on GPUs, seglab's own on CPU)
    sync_bn: bool = False
    # Speed switches (measured on 2 CPU cores in docs/benchmarks.md): torch.compile of the model, and mixed
    # precision (bf16 autocast; fp16 autocast with a gradient scaler, CUDA only). `auto` = bf16 on CPUs with
    # native bf16 (AVX512-BF16 / AMX), where it measured 1.4x faster end to end at -0.4 mIoU points on Weizmann
    # Horse, and on GPUs of compute capability >= 8.0; fp16 on 7.x GPUs; fp32 elsewhere (engine/runtime.py)
    compile: bool = False
    amp: Literal["auto", "none", "bf16", "fp16"] = "auto"  # auto, none (fp32), bf16 or fp16 (see compile)
    # Training time to fit the run into ('90s', '45m', '2h', or seconds): the run measures its speed, plans
    # how many steps fit (validations included) so the whole lr schedule ends on time, and re-plans as it
    # goes; train.epochs is then not used. null: train.epochs epochs.
    time_budget: Union[None, str, float] = None
    # With a time budget: the most epochs it may plan (the schedule covers min(what the budget buys, this)), so
    # a recipe stops when its measured curve stops gaining, on a fast GPU too; the start line says which bound
    # applies. Not used without a time budget (train.epochs is then the length).
    max_epochs: Optional[int] = Field(None, ge=1)
    # Training steps timed before epoch 1 for the time estimate (the first is warm-up); 0 skips the estimate.
    estimate_steps: int = Field(4, ge=0)
    # Fine-tuning a pretrained encoder: keep it frozen (no updates, BatchNorm statistics fixed) for the first
    # N epochs (a number) or share of the planned training ("20%", also of a time budget's plan), then train
    # it at optimizer.lr x backbone_lr_mult. model.freeze_backbone freezes stages for the whole run.
    freeze_encoder_for: Union[None, float, str] = None
    # keep the encoder's BatchNorm statistics as pretrained (small batches), its scales and shifts still train
    freeze_encoder_bn: bool = False

    @field_validator("freeze_encoder_for")
    @classmethod
    def _freeze_for(cls, v):
        if isinstance(v, str):
            text = v.strip()
            try:
                share = float(text[:-1]) if text.endswith("%") else None
            except ValueError:
                share = None
            if share is None or not 0 <= share <= 100:
                raise ValueError(f"expected a number of epochs or a share such as '20%', got {v!r}")
        elif v is not None and v < 0:
            raise ValueError(f"expected 0 or more epochs, got {v}")
        return v

    def encoder_frozen_steps(self, steps_per_epoch: int, total_steps: int) -> int:
        """The training steps (batches) during which freeze_encoder_for keeps the encoder frozen."""
        v = self.freeze_encoder_for
        if v is None:
            return 0
        if isinstance(v, str):
            return round(float(v.strip()[:-1]) / 100 * total_steps)
        return round(float(v) * steps_per_epoch)

    @field_validator("num_workers")
    @classmethod
    def _workers(cls, v):
        if v != "auto" and v < 0:
            raise ValueError(f"expected auto or a number of processes (0 or more), got {v}")
        return v

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
        return check_metric_name(v)

    @model_validator(mode="after")
    def _best_mode_follows_the_metric(self) -> "TrainConfig":
        _check_direction(self.best_metric, self.best_mode, "max", "best_mode", "best_metric")
        return self

    @property
    def best(self) -> Metric:
        """The metric that picks best.pt and early stopping, with its direction."""
        return metric(self.best_metric)

    @field_validator("device")
    @classmethod
    def _device(cls, v):
        if v not in ("auto", "cpu") and not v.startswith("cuda"):
            raise ValueError("must be 'auto', 'cpu' or 'cuda[:N]'")
        return v

    def check_processes(self, world: int) -> None:
        """Refuse a global batch that does not split evenly over `world` processes, naming the nearest that do."""
        b = self.batch_size
        if world > 1 and b % world:
            from ..errors import ConfigError

            near = sorted({max(world, b // world * world), (b // world + 1) * world})
            raise ConfigError(f"train.batch_size: {b} (the global batch) does not split over {world} processes; "
                              f"the nearest that do are {' and '.join(map(str, near))} (--set train.batch_size=N)")


class EvalConfig(_Strict):
    """The `eval` section: the final splits, sliding window / TTA and Boundary IoU's dilation."""
    split: Literal["val", "test"] = "val"  # a run's final evaluation: val, or val and test
    batch_size: int = Field(4, ge=1)  # images per evaluation batch
    # Boundary IoU's band width as a share of the image diagonal (Cheng et al. 2021: 0.02)
    boundary_dilation_ratio: float = Field(0.02, gt=0.0, le=0.5)
    num_samples: int = Field(6, ge=0)  # validation images drawn in the report's sample grid
    # seglab eval (and a run's final evaluation): the images of lowest mIoU shown in the report, with error maps
    worst_images: int = Field(6, ge=0)
    # Large images (seglab eval / predict and the final evaluation of a run; validation during training
    # stays whole-image): windows of this (h, w) over the model-input image, Gaussian-blended.
    sliding_window: Optional[tuple[int, int]] = None
    sliding_stride: Optional[tuple[int, int]] = None  # default: two thirds of the window
    tta_flip: bool = False  # average the prediction of the horizontally flipped image
    tta_scales: List[float] = [1.0]  # average the predictions at these input scales (1.0: as is)

    def final_splits(self) -> list[str]:
        """The splits a finished run is evaluated on: val, and test when `split` is test."""
        return ["val"] + (["test"] if self.split == "test" else [])

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

    dir: str = "runs"  # the folder of run folders
    name: str = "experiment"  # the run folder's name under dir

    @field_validator("name")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        if v in ("", ".", "..") or any(c in v for c in "/\\\0") or v.strip() != v:
            raise ValueError(f"{v!r} is not a plain folder name (no '.', '..', separators or edge spaces); "
                             "put the parent folder in output.dir")
        return v


class TrackingConfig(_Strict):
    """CSV and TensorBoard are always written; MLflow too when mlflow_uri is set (a folder or file:// URI
    for a local store, sqlite:///mlflow.db, or an http(s):// tracking server); Weights & Biases too when
    wandb_project is set; Neptune too when neptune_project is set (each one file in tracking/)."""

    mlflow_uri: Optional[str] = None  # log to MLflow at this URI (null: no MLflow)
    mlflow_experiment: Optional[str] = None  # default "seglab"
    wandb_project: Optional[str] = None  # log to this Weights & Biases project (null: no W&B)
    wandb_entity: Optional[str] = None  # default: the logged-in user's
    # offline: no network, the run is written under wandb_dir and `wandb sync` uploads it later
    wandb_mode: Literal["online", "offline"] = "online"
    wandb_dir: Optional[str] = None  # default output.dir (W&B writes its wandb/ folder there)
    neptune_project: Optional[str] = None  # log to this Neptune project, WORKSPACE/PROJECT (null: no Neptune)
    # null: the client's choice (NEPTUNE_MODE, else async); offline: no network or token, written under .neptune/ of
    # the working folder for `neptune sync`; debug: kept in memory
    neptune_mode: Optional[Literal["async", "sync", "offline", "debug"]] = None


class SearchParam(_Strict):
    """One dimension of a search space: float / int ranges (optionally log-scaled) or a list of choices."""

    type: Literal["float", "int", "categorical"]  # float, int or categorical
    low: Optional[float] = None  # float / int: the lowest value
    high: Optional[float] = None  # float / int: the highest value
    log: bool = False  # float / int: sample on a log scale
    step: Optional[float] = None  # float / int: the grid step
    choices: Optional[List[Any]] = None  # categorical: the values

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

    space: dict[str, SearchParam] = {}  # dotted config key -> its search dimension
    metric: str = "miou"  # the validation metric a trial reports (its direction is the metric's own)
    # needed by no config: the metric's own direction decides; refused where it contradicts the metric
    direction: Optional[Literal["maximize", "minimize"]] = None
    storage: Optional[str] = None  # any SQLAlchemy URL; default sqlite:///OUTPUT_DIR/tune_NAME.db
    study_name: Optional[str] = None  # default output.name
    # median: stop a trial below the median of earlier ones at the same epoch; none
    pruner: Literal["median", "none"] = "median"
    pruner_warmup_epochs: int = Field(1, ge=0)  # epochs of a trial before it may be pruned
    pruner_startup_trials: int = Field(3, ge=0)  # trials that always run to the end first
    sampler_seed: Optional[int] = None  # seed of Optuna's TPE sampler (null: random)

    @field_validator("metric")
    @classmethod
    def _metric(cls, v):
        return check_metric_name(v)

    @model_validator(mode="after")
    def _direction_follows_the_metric(self) -> "TuneConfig":
        _check_direction(self.metric, self.direction, "maximize", "direction", "metric")
        return self

    @property
    def study_direction(self) -> str:
        """Optuna's direction: the metric's own ('maximize' for scores, 'minimize' for val_loss)."""
        return "maximize" if metric(self.metric).higher_is_better else "minimize"


def default_normalization(in_channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) when neither the config nor a pretrained encoder gives them: ImageNet's for RGB, else
    0.5 / 0.25 per channel."""
    if in_channels == 3:
        return (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    return (0.5,) * in_channels, (0.25,) * in_channels


class Config(_Strict):
    """One experiment: every section, validated together."""
    seed: int = 0  # the run's random seed: weight initialisation, augmentation draws and the order of samples
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
        mean, std = default_normalization(n)
        for key, value in (("mean", mean), ("std", std)):
            given = getattr(self.augment, key)
            if given is None:
                object.__setattr__(self.augment, key, value)  # resolved: the dump shows what was used
            elif len(given) != n:
                raise ValueError(f"augment.{key} has {len(given)} values but data.in_channels is {n}: give {n}")
        return self

    @model_validator(mode="after")
    def _multilabel_throughout(self) -> "Config":
        overlapping = self.data.kind == "folder" and self.data.mask_encoding in MULTILABEL_ENCODINGS
        if overlapping and self.model.output != "multilabel":
            raise ValueError(f"data.mask_encoding '{self.data.mask_encoding}' holds overlapping classes; "
                             "set model.output: multilabel")
        if self.model.output == "multilabel" and not overlapping:
            raise ValueError("model.output: multilabel needs multi-label masks: data.kind: folder with "
                             f"data.mask_encoding {' or '.join(MULTILABEL_ENCODINGS)}")
        if overlapping != (self.loss.strategy == "multilabel"):
            raise ValueError("loss.strategy: set it to multilabel for model.output: multilabel (sigmoid forms of "
                             "the losses)" if overlapping else
                             "loss.strategy: multilabel is for model.output: multilabel (overlapping classes)")
        return self

    def run_dir(self) -> Path:
        return Path(self.output.dir) / self.output.name

    def to_dict(self) -> dict[str, Any]:
        return to_plain(self.model_dump(mode="python"))
