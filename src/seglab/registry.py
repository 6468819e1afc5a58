"""Name -> builder registries, one dict per kind."""
from __future__ import annotations

import inspect
import typing
from typing import Any, Callable, Optional

from pydantic import TypeAdapter, ValidationError

from .errors import ConfigError

MODELS: dict[str, Callable[..., Any]] = {}
LOSSES: dict[str, Callable[..., Any]] = {}
STRATEGIES: dict[str, Callable[..., Any]] = {}  # partial-label strategy -> builder of the loss from its terms
STRATEGY_FORMS: dict[str, Optional[tuple[str, ...]]] = {}  # strategy -> the losses it has a form of (None: all)
MODEL_ENCODERS: dict[str, tuple[str, ...]] = {}  # model name -> encoders it takes (empty: none)


def _register(table: dict[str, Callable[..., Any]], kind: str, name: str):
    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        if name in table:
            raise ValueError(f"{kind} '{name}' is registered twice")
        table[name] = fn
        return fn

    return deco


def register_model(name: str, encoders: tuple[str, ...] = ()):
    """Decorator: register a model builder taking keyword-only arguments, and the encoders it takes."""
    MODEL_ENCODERS[name] = tuple(encoders)
    return _register(MODELS, "model", name)


def register_loss(name: str):
    """Decorator: register a loss builder taking keyword-only arguments."""
    return _register(LOSSES, "loss", name)


def register_strategy(name: str, forms: Optional[tuple[str, ...]] = None):
    """Decorator: register a partial-label strategy, a builder taking (terms, *, ignore_index, weight,
    options, ...its own keyword-only options) that makes one loss module from the weighted loss terms;
    `forms`: the losses it has a form of (None: every loss)."""
    STRATEGY_FORMS[name] = forms
    return _register(STRATEGIES, "loss strategy", name)


def lookup(table: dict[str, Callable[..., Any]], kind: str, name: str) -> Callable[..., Any]:
    """Return the builder for `name` or fail with the list of what exists."""
    if name not in table:
        raise ConfigError(f"unknown {kind} '{name}'; available: {', '.join(sorted(table))}")
    return table[name]


def builder_options(fn: Callable[..., Any]) -> dict[str, inspect.Parameter]:
    """Keyword-only parameters of a builder, by name."""
    return {
        n: p for n, p in inspect.signature(fn).parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY
    }


def check_options(fn: Callable[..., Any], options: dict[str, Any], where: str) -> None:
    """Fail with the dotted key of the first option the builder does not take."""
    # in_channels and num_classes come from the dataset, not from the model section.
    allowed = {k: v for k, v in builder_options(fn).items() if k not in ("in_channels", "num_classes")}
    for key in options:
        if key not in allowed:
            raise ConfigError(f"{where}.{key}: unknown option; allowed: {', '.join(sorted(allowed)) or 'none'}")


def coerce_options(fn: Callable[..., Any], options: dict[str, Any], where: str) -> dict[str, Any]:
    """The options converted to the types the builder's annotations give (YAML 1 -> 1.0 for a float);
    a value of the wrong type fails naming `where.key`."""
    hints = typing.get_type_hints(fn)
    out = dict(options)
    for key, value in options.items():
        if key in hints:
            try:
                out[key] = TypeAdapter(hints[key]).validate_python(value, strict=False)
            except ValidationError as err:
                raise ConfigError(f"{where}.{key}: {err.errors()[0]['msg'].lower()} (got {value!r})") from None
    return out
