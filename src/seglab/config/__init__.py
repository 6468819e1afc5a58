"""Experiment config: the typed schema (data.py: the data and augment sections; schema.py: the others and
`Config`), YAML loading, `--set` overrides and the resolved dump (loading.py). Imports no torch."""
from __future__ import annotations

from .base import to_plain
from .data import AugmentConfig, DataConfig, RandomSplit, SourceConfig, SplitSource, StemPairing, SyntheticConfig
from .loading import (apply_overrides, changed_config, config_differences, config_from_dict, dump_config,
                      load_config, parse_override, set_dotted)
from .schema import (Config, EvalConfig, LossConfig, ModelConfig, OptimizerConfig, OutputConfig, ScheduleConfig,
                     SearchParam, TrackingConfig, TrainConfig, TuneConfig)

__all__ = ["to_plain", "AugmentConfig", "DataConfig", "RandomSplit", "SourceConfig", "SplitSource", "StemPairing",
           "SyntheticConfig", "apply_overrides", "changed_config", "config_differences", "config_from_dict", "dump_config",
           "load_config", "parse_override", "set_dotted", "Config", "EvalConfig", "LossConfig", "ModelConfig",
           "OptimizerConfig", "OutputConfig", "ScheduleConfig", "SearchParam", "TrackingConfig", "TrainConfig",
           "TuneConfig"]
