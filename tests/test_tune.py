"""`seglab tune`: a tiny Optuna study on synthetic data, then a second process joining the same SQLite study."""
import copy
import subprocess
import sys

import pytest
import yaml

from seglab.cli import main
from seglab.config import load_config

from conftest import ROOT, TINY

optuna = pytest.importorskip("optuna")


def test_tune_study_shared_by_two_processes(tmp_path, capsys):
    raw = copy.deepcopy(TINY)
    raw["train"]["epochs"] = 2
    raw["augment"]["crop"] = [32, 40]
    raw["output"] = {"dir": str(tmp_path / "runs"), "name": "study"}
    raw["tune"] = {
        "space": {
            "optimizer.lr": {"type": "float", "low": 1e-3, "high": 3e-2, "log": True},
            "optimizer.name": {"type": "categorical", "choices": ["adam", "adamw"]},
            "augment.scale": {"type": "categorical", "choices": [[0.9, 1.1], [0.75, 1.25]]},  # with crop below
            "model.base_channels": {"type": "int", "low": 4, "high": 6, "step": 2},
        },
        "sampler_seed": 0,
    }
    cfg = tmp_path / "tune.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    db = tmp_path / "study.db"
    url = f"sqlite:///{db}"
    assert main(["tune", str(cfg), "--trials", "2", "--storage", url]) == 0
    out = capsys.readouterr().out
    assert "best config:" in out
    # a second process joins the same study through the database
    res = subprocess.run([sys.executable, "-m", "seglab", "tune", str(cfg), "--trials", "1", "--storage", url],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    study = optuna.load_study(study_name="study", storage=url)
    assert len(study.trials) == 3
    assert {t.state for t in study.trials} <= {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}
    assert len({t.number for t in study.trials}) == 3
    for t in study.trials:
        assert 1e-3 <= t.params["optimizer.lr"] <= 3e-2 and t.params["model.base_channels"] in (4, 6)
    # the best config is a ready YAML file carrying the best trial's values
    best = load_config(tmp_path / "runs" / "tune_study" / "best_config.yaml")
    bt = study.best_trial
    assert best.optimizer.lr == pytest.approx(bt.params["optimizer.lr"])
    assert best.optimizer.name == bt.params["optimizer.name"] and list(best.augment.scale) == yaml.safe_load(bt.params["augment.scale"])
    assert best.output.name == "study_best"


def test_tune_needs_a_space(tmp_path, capsys):
    raw = copy.deepcopy(TINY)
    cfg = tmp_path / "t.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    assert main(["tune", str(cfg), "--trials", "1"]) == 2
    assert "tune.space: empty" in capsys.readouterr().err
    raw["tune"] = {"space": {"optimizer.lrr": {"type": "float", "low": 0.1, "high": 0.2}}}
    cfg.write_text(yaml.safe_dump(raw))
    assert main(["tune", str(cfg), "--trials", "1"]) == 2
    assert "optimizer.lrr: unknown key" in capsys.readouterr().err


def test_tune_metric_is_any_logged_validation_value_and_checked_before_training(tmp_path, capsys):
    """tune.metric and train.best_metric come from one list (config/metric_names.py): every name on it is a
    metrics.csv column that the pruner reads, and a name not on it is refused before any data is read."""
    from seglab.config.metric_names import VALIDATION_COLUMNS

    raw = copy.deepcopy(TINY)
    raw["train"].update(epochs=1, best_metric="mean_dice")
    raw["output"] = {"dir": str(tmp_path / "runs"), "name": "dice"}
    raw["tune"] = {"space": {"optimizer.lr": {"type": "float", "low": 1e-3, "high": 1e-2}}, "metric": "nonsense"}
    cfg = tmp_path / "tune.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    assert main(["tune", str(cfg), "--trials", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "tune.metric: expected one of" in err and "mean_dice" in err and "'nonsense'" in err
    assert not (tmp_path / "runs").exists()
    raw["tune"]["metric"] = "mean_dice"
    cfg.write_text(yaml.safe_dump(raw))
    assert main(["tune", str(cfg), "--trials", "1", "--storage", f"sqlite:///{tmp_path / 'd.db'}"]) == 0
    study = optuna.load_study(study_name="dice", storage=f"sqlite:///{tmp_path / 'd.db'}")
    (trial,) = study.trials
    header = (tmp_path / "runs" / "tune_dice" / "trial_0000" / "metrics.csv").read_text().splitlines()[0]
    assert set(VALIDATION_COLUMNS) <= set(header.split(","))
    rows = (tmp_path / "runs" / "tune_dice" / "trial_0000" / "metrics.csv").read_text().splitlines()
    dice = float(rows[1].split(",")[header.split(",").index("val_mean_dice")])
    assert trial.value == pytest.approx(dice, abs=1e-4)


def test_tune_prunes_a_poor_trial(tmp_path):
    """A trial that cannot learn (learning rate ~0) falls below the median of the finished trial at the same
    epoch and is pruned there: its run stops early and the study records it as PRUNED."""
    from seglab.workflows.tuning import tune

    raw = copy.deepcopy(TINY)
    raw["train"]["epochs"] = 4
    raw["output"] = {"dir": str(tmp_path / "runs"), "name": "prune"}
    raw["tune"] = {"space": {"optimizer.lr": {"type": "categorical", "choices": [0.02, 1.0e-12]}},
                   "pruner": "median", "pruner_startup_trials": 1, "pruner_warmup_epochs": 0}
    cfg = tmp_path / "tune.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="prune", storage=url, direction="maximize")
    study.enqueue_trial({"optimizer.lr": 0.02})  # fixed order: the learner first, then the non-learner
    study.enqueue_trial({"optimizer.lr": 1.0e-12})
    result = tune(cfg, trials=2, storage=url)
    study = optuna.load_study(study_name="prune", storage=url)
    good, poor = study.trials
    assert good.state == optuna.trial.TrialState.COMPLETE and good.params["optimizer.lr"] == 0.02
    assert poor.state == optuna.trial.TrialState.PRUNED and poor.params["optimizer.lr"] == 1.0e-12
    assert max(poor.intermediate_values) < raw["train"]["epochs"]  # stopped before its last epoch
    assert result["trials"]["pruned"] == 1 and result["best_params"] == {"optimizer.lr": 0.02}
    log = (tmp_path / "runs" / "tune_prune" / "trial_0001" / "train.log").read_text()
    assert f"trial 1 pruned at epoch {max(poor.intermediate_values)}" in log


@pytest.mark.slow
def test_a_killed_tune_leaves_no_running_trial_behind(tmp_path):
    """Issue 24 item 6: `seglab tune` killed mid-trial leaves that trial RUNNING and its folder's lock file;
    the next `seglab tune` on the same study marks it FAIL (its process is gone), removes the lock file and
    goes on; a trial of a live process is left alone."""
    import os
    import signal
    import time

    from seglab.artifacts.run_dir import RunDir
    from seglab.workflows.tuning import fail_abandoned_trials

    raw = copy.deepcopy(TINY)
    raw["train"]["epochs"] = 500
    raw["output"] = {"dir": str(tmp_path / "runs"), "name": "killed"}
    raw["tune"] = {"space": {"optimizer.lr": {"type": "float", "low": 1e-3, "high": 3e-2, "log": True}}}
    cfg = tmp_path / "tune.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    url = f"sqlite:///{tmp_path / 'study.db'}"
    proc = subprocess.Popen([sys.executable, "-m", "seglab", "tune", str(cfg), "--trials", "1", "--storage", url],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    lock = tmp_path / "runs" / "tune_killed" / ".trial_0000.lock"
    metrics = tmp_path / "runs" / "tune_killed" / "trial_0000" / "metrics.csv"
    deadline = time.time() + 240
    while not metrics.is_file() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert metrics.is_file(), "the trial never finished an epoch"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert lock.is_file()
    study = optuna.load_study(study_name="killed", storage=url)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.RUNNING]

    # a RUNNING trial of a live process (this one) is not touched
    live = study.ask()
    live.set_user_attr("seglab_process", {"host": __import__("socket").gethostname(), "pid": os.getpid()})
    res = subprocess.run([sys.executable, "-m", "seglab", "tune", str(cfg), "--trials", "1", "--storage", url,
                          "--set", "train.epochs=1"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "study killed: trial 0 stopped without finishing (process gone): marked FAIL; its folder is kept" \
        in res.stdout + res.stderr, res.stdout[-2000:]
    states = [t.state for t in optuna.load_study(study_name="killed", storage=url).trials]
    R, F, C = (optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.FAIL, optuna.trial.TrialState.COMPLETE)
    assert states == [F, R, C]
    assert not lock.exists() and RunDir(lock.parent / "trial_0000").is_run()  # its folder is kept
    study.tell(live, state=F)
    assert fail_abandoned_trials(optuna, study, lock.parent) == []  # nothing left to mark


def test_a_trial_config_takes_the_encoders_normalisation_as_train_does_and_configs_are_read_only():
    """Issue 43 item 5: the config is read-only once validated; a changed one is a validated copy
    (config.changed_config) in which the mean / std the config filled in itself are decided again. A tune
    trial of the pretrained Horse recipe used to keep ImageNet's mean / std (its copy made them look given),
    while `seglab train` of the same config used the encoder's own 0.5 / 0.5."""
    from pydantic import ValidationError

    from seglab.engine.parts import resolve_normalization
    from seglab.workflows.tuning import config_with

    cfg = load_config(ROOT / "configs" / "weizmann_horse_unet_lite0_pretrained.yaml")
    trial = config_with(cfg, {"optimizer.lr": 0.002}, "trial_0000")
    assert trial.optimizer.lr == 0.002 and trial.output.name == "trial_0000"
    trained, tried = resolve_normalization(cfg, say=False), resolve_normalization(trial, say=False)
    assert trained.augment.mean == tried.augment.mean == (0.5, 0.5, 0.5) and tried.augment.std == (0.5, 0.5, 0.5)
    assert cfg.augment.mean == (0.485, 0.456, 0.406)  # the original is unchanged: resolving made a copy
    given = config_with(load_config(ROOT / "configs" / "weizmann_horse_unet_lite0_pretrained.yaml",
                                    ["augment.mean=[0.4,0.4,0.4]", "augment.std=[0.2,0.2,0.2]"]), {}, "t")
    assert resolve_normalization(given, say=False).augment.mean == (0.4, 0.4, 0.4)  # a given one stays
    with pytest.raises(ValidationError, match="frozen"):
        cfg.train.epochs = 3
