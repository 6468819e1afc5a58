"""Segmentation losses: (N, K, H, W) logits, (N, H, W) targets, optional (N, K) annotated classes -> scalar.

Every registered loss (`register_loss`: basic.py) skips pixels equal to `ignore_index`. `loss.name` is one
registered loss or a list of them summed with `loss.weights`; `loss.strategy` (a registered strategy:
basic.py's naive, partial.py's marginal, marginal_exclusion and conditional, multilabel.py's multilabel for
overlapping classes) makes the one loss module from those terms. Adding a loss or a strategy is a registered
builder; the config needs no edit.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError
from ..registry import LOSSES, STRATEGIES, STRATEGY_FORMS, builder_options, coerce_options
from . import imbalance  # noqa: F401  (registers focal, tversky, focal_tversky, lovasz, ohem)
from . import multilabel  # noqa: F401  (registers the multilabel strategy)
from .basic import CrossEntropy, SoftDice, Weighted, build_term
from .partial import (ConditionalLoss, ExclusionLoss, MarginalCrossEntropy, MarginalDice,
                      marginal_log_prob)
from .pooling import batch_sum, pooled_over_ranks

__all__ = ["CrossEntropy", "SoftDice", "Weighted", "ConditionalLoss", "ExclusionLoss", "MarginalCrossEntropy",
           "MarginalDice", "marginal_log_prob", "batch_sum", "pooled_over_ranks", "build_loss", "build_term",
           "build_loss_from_config", "check_loss_config", "list_losses", "list_strategies", "loss_options",
           "strategy_forms", "strategy_takes", "total_loss",
           "class_weights_from_counts"]

# Settings of LossConfig that are options of some builders (ce_dice's weights, Dice's smoothing, the
# exclusion weight): always present in a resolved config, so given only to the builders that take them.
SHARED_OPTIONS = ("ce_weight", "dice_weight", "dice_smooth", "exclusion_weight")
_FROM_CALLER = ("ignore_index", "weight", "options")  # what build_loss passes itself, not options


def list_losses() -> list[str]:
    """Names of the registered losses, sorted."""
    return sorted(LOSSES)


def list_strategies() -> list[str]:
    """Names of the registered partial-label strategies, sorted."""
    return sorted(STRATEGIES)


def loss_options(name: str) -> dict[str, Any]:
    """Defaults of a registered loss's options, e.g. for `seglab models`."""
    fn = LOSSES[loss_terms(name)[0][1]]
    return {k: p.default for k, p in builder_options(fn).items() if k not in _FROM_CALLER}


def strategy_forms(strategy: str) -> tuple[str, ...]:
    """The losses `strategy` has a form of; () when it takes every loss (naive)."""
    _strategy(strategy)
    return tuple(STRATEGY_FORMS[strategy] or ())


def strategy_takes(strategy: str, name: str) -> bool:
    """Whether partial-label `strategy` has a form of loss `name` (naive takes every loss)."""
    _strategy(strategy)
    forms = STRATEGY_FORMS[strategy]
    return forms is None or name in forms


def loss_terms(name: Union[str, Sequence[str]], weights: Optional[Sequence[float]] = None) -> list[tuple[float, str]]:
    """loss.name and loss.weights -> [(weight, registered name), ...]; unknown names fail with the list."""
    names = [name] if isinstance(name, str) else list(name)
    if not names:
        raise ConfigError("loss.name: an empty list; give a loss name, e.g. cross_entropy")
    ws = [1.0] * len(names) if weights is None else [float(w) for w in weights]
    if len(ws) != len(names):
        raise ConfigError(f"loss.weights: {len(ws)} weights for {len(names)} losses ({', '.join(names)}); give one each")
    for n in names:
        if n not in LOSSES:
            raise ConfigError(f"loss.name: unknown loss '{n}'; available: {', '.join(list_losses())}")
    return list(zip(ws, names))


def _strategy(name: str):
    if name not in STRATEGIES:
        raise ConfigError(f"loss.strategy: unknown strategy '{name}'; available: {', '.join(list_strategies())}")
    return STRATEGIES[name]


def _accepted(terms: list[tuple[float, str]], strategy: str) -> dict[str, Any]:
    fns = [LOSSES[n] for _, n in terms] + [_strategy(strategy)]
    return {k: fn for fn in fns for k in builder_options(fn) if k not in _FROM_CALLER}


def _check_forms(terms: list[tuple[float, str]], strategy: str) -> None:
    """Each term must be a loss the strategy has a form of (its registered `forms`)."""
    forms = strategy_forms(strategy)
    for _, name in terms:
        if forms and name not in forms:
            raise ConfigError(f"loss.name: the {strategy} strategy has no form of '{name}'; it takes {', '.join(forms)}")


def _checked_options(terms: list[tuple[float, str]], strategy: str, options: dict[str, Any]) -> dict[str, Any]:
    accepted = _accepted(terms, strategy)
    out: dict[str, Any] = {}
    for key, value in options.items():
        if key in accepted:
            out.update(coerce_options(accepted[key], {key: value}, "loss"))
        elif key not in SHARED_OPTIONS:
            names = ", ".join(n for _, n in terms)
            raise ConfigError(f"loss.{key}: not an option of loss {names} (strategy {strategy}); "
                              f"allowed: {', '.join(sorted(accepted)) or 'none'}")
    return out


def build_loss(name: Union[str, Sequence[str]], *, ignore_index: int, weight: Optional[torch.Tensor] = None,
               strategy: str = "naive", weights: Optional[Sequence[float]] = None, **options: Any) -> nn.Module:
    """The loss of registered loss(es) `name` (a list is summed with `weights`) under a partial-label strategy.

    weight (K,): class weights. options: builder options (dice_smooth, ce_weight, ...), each checked against
    the builders of `name` and of `strategy`. Returns a module taking (N, K, H, W) logits, (N, H, W) targets
    and optional (N, K) annotated classes.
    """
    terms = loss_terms(name, weights)
    options = _checked_options(terms, strategy, options)
    _check_forms(terms, strategy)
    fn = _strategy(strategy)
    own = {k: v for k, v in options.items() if k in builder_options(fn) and k not in _FROM_CALLER}
    return fn(terms, ignore_index=ignore_index, weight=weight, options=options, **own)


def _config_options(lc: Any) -> dict[str, Any]:
    return {**{k: getattr(lc, k) for k in SHARED_OPTIONS}, **lc.options()}


def check_loss_config(lc: Any) -> None:
    """Fail on a loss section whose names, strategy or options the registries do not know (no data needed)."""
    terms = loss_terms(lc.name, lc.weights)
    _checked_options(terms, lc.strategy, _config_options(lc))
    _check_forms(terms, lc.strategy)


def build_loss_from_config(lc: Any, *, ignore_index: int, weight: Optional[torch.Tensor]) -> nn.Module:
    """The loss a LossConfig describes, with the dataset's ignore index and the class weights (K,) or None."""
    return build_loss(lc.name, ignore_index=ignore_index, weight=weight, strategy=lc.strategy, weights=lc.weights,
                      **_config_options(lc))


def total_loss(
    loss_fn: nn.Module, outputs: Union[torch.Tensor, dict], target: torch.Tensor, aux_weight: Union[float, list[float]],
    labelled: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Loss of the main logits plus weighted losses of auxiliary outputs (training-mode dict outputs).

    labelled (N, K) bool: the classes each sample annotates (None: all); a conditional model's
    training output also carries its (sample, class) `pairs`.
    """
    args = (labelled,) if labelled is not None else ()  # plain (logits, target) losses work too
    if isinstance(outputs, torch.Tensor):
        return loss_fn(outputs, target, *args)
    extra = {"pairs": outputs["pairs"]} if "pairs" in outputs else {}
    aux = outputs.get("aux", [])
    weights = aux_weight if isinstance(aux_weight, list) else [aux_weight] * len(aux)
    if len(weights) != len(aux):
        raise ConfigError(f"loss.aux_weight: the model has {len(aux)} auxiliary outputs, {len(weights)} weights given")
    loss = loss_fn(outputs["out"], target, *args, **extra)
    for w, a in zip(weights, aux):
        loss = loss + w * loss_fn(a, target, *args, **extra)
    return loss


def class_weights_from_counts(method: str, counts: np.ndarray, image_pixels: np.ndarray) -> np.ndarray:
    """Class weights from training-set pixel counts.

    counts[c]: pixels of class c; image_pixels[c]: pixels of the images in which c appears.
    'inverse_frequency': total / (C * counts[c]); 'median_frequency' (Eigen & Fergus 2015):
    median(f) / f[c] with f[c] = counts[c] / image_pixels[c]. Absent classes get weight 0.
    """
    counts = counts.astype(np.float64)
    present = counts > 0
    w = np.zeros_like(counts)
    if method == "inverse_frequency":
        w[present] = counts.sum() / (present.sum() * counts[present])
    elif method == "median_frequency":
        f = counts[present] / image_pixels[present]
        w[present] = np.median(f) / f
    else:
        raise ConfigError(f"loss.class_weights: unknown method {method!r}; allowed: inverse_frequency, median_frequency")
    return w
