"""`seglab tune`: hyperparameter search with Optuna over the config's `tune.space`.

Trials are pruned from their per-epoch validation metric; the study lives in a database given by URL
(SQLite file by default; any SQLAlchemy URL lets several machines work on one study at once); the best
trial's config is written out as a ready YAML file.
"""
from __future__ import annotations

import logging
import math
import os
import socket
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import yaml

from ..config import Config, changed_config, dump_config, load_config
from ..config.loading import yaml_inline
from ..config.metric_names import metric, validation_column
from ..errors import ConfigError, SeglabError
from ..fileio import atomic_write_text
from ..artifacts.run_dir import RunDir, RunLock

log = logging.getLogger("seglab")
PathLike = Union[str, Path]


def _optuna():
    try:
        import optuna
    except ImportError:  # pragma: no cover - a declared dependency
        raise SeglabError("seglab tune needs optuna: pip install optuna") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def default_storage(cfg: Config) -> str:
    """The study database beside the runs: sqlite:///OUTPUT_DIR/tune_NAME.db."""
    path = (Path(cfg.output.dir) / f"tune_{cfg.output.name}.db").resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def _scalars(choices: list) -> bool:
    return all(c is None or isinstance(c, (bool, int, float, str)) for c in choices)


def suggest(trial, space: dict[str, Any]) -> dict[str, Any]:
    """Draw one value per dotted key from the trial."""
    params = {}
    for key, p in space.items():
        if p.type == "categorical":
            if _scalars(p.choices):
                params[key] = trial.suggest_categorical(key, p.choices)
            else:  # Optuna stores scalars only: lists (e.g. augment.scale) go through their YAML text
                params[key] = yaml.safe_load(trial.suggest_categorical(key, [yaml_inline(c) for c in p.choices]))
        elif p.type == "int":
            params[key] = trial.suggest_int(key, int(p.low), int(p.high), step=int(p.step or 1), log=p.log)
        else:
            params[key] = trial.suggest_float(key, p.low, p.high, step=p.step, log=p.log)
    return params


def config_with(cfg: Config, params: dict[str, Any], name: str) -> Config:
    """`cfg` with a trial's `params` (dotted keys) set and output.name `name`, validated again (a copy: the
    config is read-only)."""
    return changed_config(cfg, {**params, "output.name": name}, f"tune trial {name}")


def tune(config: Union[Config, PathLike], *, trials: int, overrides: Sequence[str] = (), storage: Optional[str] = None,
         study_name: Optional[str] = None, timeout: Optional[float] = None) -> dict[str, Any]:
    """Run `trials` trials of the study (joining it when it exists); write the best config as YAML.

    Returns {"study", "storage", "best_value", "best_params", "best_config", "trials"}.
    """
    optuna = _optuna()
    cfg = config if isinstance(config, Config) else load_config(config, list(overrides))
    tc = cfg.tune
    _check_space(cfg)
    storage = storage or tc.storage or default_storage(cfg)
    name = study_name or tc.study_name or cfg.output.name
    study = _open_study(optuna, tc, name, storage)
    out_dir = Path(cfg.output.dir) / f"tune_{name}"
    fail_abandoned_trials(optuna, study, out_dir)
    study.optimize(_objective(optuna, cfg, out_dir), n_trials=trials, timeout=timeout, catch=())
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not done:
        raise SeglabError(f"study {name!r}: no trial has completed yet")
    best = study.best_trial
    params = {k: (yaml.safe_load(v) if tc.space[k].type == "categorical" and not _scalars(tc.space[k].choices) else v)
              for k, v in best.params.items()}
    best_cfg = config_with(cfg, params, f"{cfg.output.name}_best")
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "best_config.yaml"
    header = (f"# Best of study '{name}' ({storage}): trial {best.number}, validation {tc.metric} "
              f"{best.value:.4f}\n# params: {params}\n")
    atomic_write_text(path, header + dump_config(best_cfg))
    counts = {s.name.lower(): sum(1 for t in study.trials if t.state == s) for s in optuna.trial.TrialState}
    log.info(f"study {name}: {len(study.trials)} trials ({counts.get('complete', 0)} complete, "
             f"{counts.get('pruned', 0)} pruned); best {tc.metric} {best.value:.4f} with {params}")
    log.info(f"best config: {path}")
    return {"study": name, "storage": storage, "best_value": best.value, "best_params": params,
            "best_config": str(path), "trials": counts}


def _check_space(cfg: Config) -> None:
    """Every key of tune.space must be a valid config key: checked with a sample value before any trial."""
    space = cfg.tune.space
    if not space:
        raise ConfigError("tune.space: empty; declare at least one parameter, e.g. optimizer.lr: "
                          "{type: float, low: 1.0e-4, high: 1.0e-2, log: true}")
    for key, p in space.items():
        config_with(cfg, {key: p.choices[0] if p.type == "categorical" else (int(p.low) if p.type == "int" else p.low)},
                    "check")


def _open_study(optuna: Any, tc: Any, name: str, storage: str) -> Any:
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=tc.pruner_startup_trials,
                                          n_warmup_steps=tc.pruner_warmup_epochs) if tc.pruner == "median"
              else optuna.pruners.NopPruner())
    sampler = optuna.samplers.TPESampler(seed=tc.sampler_seed)
    try:
        return optuna.create_study(study_name=name, storage=storage, direction=tc.study_direction, load_if_exists=True,
                                   pruner=pruner, sampler=sampler)
    except Exception as exc:  # bad URL, unreachable database, ...
        raise SeglabError(f"tune.storage: cannot open study {name!r} at {storage}: {str(exc).splitlines()[0]}") from None


# Recorded on each trial: which process runs it, so a later `seglab tune` can tell a killed trial from a live one.
OWNER_ATTR = "seglab_process"


def _alive(pid: Any) -> bool:
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def fail_abandoned_trials(optuna: Any, study: Any, out_dir: Path) -> list[int]:
    """Mark FAIL the RUNNING trials whose seglab process on this machine is gone (killed, crashed), and remove
    the lock files their trial folders kept. Trials of live processes, or of other machines (whose processes
    cannot be seen from here), stay RUNNING. Returns the numbers of the trials marked."""
    host = socket.gethostname()
    marked, elsewhere = [], []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        owner = t.user_attrs.get(OWNER_ATTR)
        if not isinstance(owner, dict) or _alive(owner.get("pid")) and owner.get("host") == host:
            continue
        if owner.get("host") != host:
            elsewhere.append(f"{t.number} ({owner.get('host')})")
            continue
        # the same transition Optuna's own fail_stale_trials makes (it needs heartbeats, which a kill stops too)
        study._storage.set_trial_state_values(t._trial_id, state=optuna.trial.TrialState.FAIL)
        with RunLock(RunDir(out_dir / f"trial_{t.number:04d}"), "tune trial folder"):
            pass  # taken and released: the lock file a killed trial left is removed
        marked.append(t.number)
    if marked:
        log.warning(f"study {study.study_name}: trial{'s' if len(marked) > 1 else ''} "
                    f"{', '.join(map(str, marked))} stopped without finishing (process gone): marked FAIL; "
                    f"{'their folders are' if len(marked) > 1 else 'its folder is'} kept in {out_dir}")
    if elsewhere:
        log.info(f"study {study.study_name}: trials {', '.join(elsewhere)} are RUNNING on other machines; "
                 "left as they are")
    return marked


def _objective(optuna: Any, cfg: Config, out_dir: Path) -> Callable[[Any], float]:
    """One trial: train the suggested config, report each validation to the pruner; its best value."""
    from ..engine.trainer import fit

    tc = cfg.tune
    key = validation_column(tc.metric)

    def objective(trial) -> float:
        trial.set_user_attr(OWNER_ATTR, {"host": socket.gethostname(), "pid": os.getpid()})
        params = suggest(trial, tc.space)
        trial_cfg = changed_config(config_with(cfg, params, f"trial_{trial.number:04d}"), {"output.dir": str(out_dir)},
                                   f"tune trial {trial.number}")
        log.info(f"trial {trial.number}: {params}")
        best: dict[str, Optional[float]] = {"value": None}

        def report(row: dict[str, Any]) -> None:
            value = row.get(key)
            if value is None or (isinstance(value, float) and math.isnan(value)):
                return
            better = best["value"] is None or metric(tc.metric).better(value, best["value"])
            if better:
                best["value"] = value
            trial.report(value, row["epoch"])
            if trial.should_prune():
                # logged while the run's train.log is still attached, so the folder says why it stopped
                log.info(f"trial {trial.number} pruned at epoch {row['epoch']}: {key} {value:.4f} is worse than the "
                         f"median of earlier trials at this epoch")
                raise optuna.TrialPruned(f"epoch {row['epoch']}: {key} {value:.4f}")

        fit(trial_cfg, overwrite=True, on_epoch=report)
        if best["value"] is None:
            raise SeglabError(f"trial {trial.number}: no validation {key} was recorded")
        return float(best["value"])

    return objective
