"""Run-folder safety (issue 14): seglab replaces only folders it created, one training per folder at a time,
crash-consistent checkpoints at every write point, files with the user's umask, strict resume."""
import copy
import csv
import os
import subprocess
import sys

import pytest
import torch
import yaml

from seglab import fileio
from seglab.config import config_from_dict
from seglab.artifacts.checkpoint import load_checkpoint
from seglab.engine.trainer import fit
from seglab.errors import ConfigError, SeglabError
from seglab.artifacts.run_dir import MARKER, RunDir, RunLock

from conftest import ROOT


def _small(raw):
    raw = copy.deepcopy(raw)
    raw["data"]["synthetic"].update(num_train=8, num_val=4, num_test=4, size=[16, 16])
    raw["train"].update(epochs=2, batch_size=4, estimate_steps=0)
    return raw


def test_overwrite_replaces_only_seglab_run_folders(tmp_path, tiny_raw):
    from seglab.cli import main

    mine = tmp_path / "runs" / "tiny"
    mine.mkdir(parents=True)
    (mine / "thesis.tex").write_text("a user's file")
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(yaml.safe_dump(_small(tiny_raw)))
    assert main(["train", str(cfg_path), "--overwrite"]) == 2
    assert (mine / "thesis.tex").read_text() == "a user's file"
    (mine / "thesis.tex").unlink()
    assert main(["train", str(cfg_path)]) == 0  # an empty folder is fine
    assert (mine / MARKER).is_file()
    assert main(["train", str(cfg_path)]) == 2  # exists: --resume or --overwrite
    assert (mine / MARKER).is_file()


def test_overwrite_deletes_only_the_files_seglab_wrote(tmp_path, tiny_raw, capsys):
    """Issue 24 item 1: the user's notes, notebooks and figures inside a run folder survive --overwrite;
    what the earlier run wrote (stale evaluations of other splits included) is gone."""
    from seglab.cli import main

    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(yaml.safe_dump(_small(tiny_raw)))
    assert main(["train", str(cfg_path)]) == 0
    run = tmp_path / "runs" / "tiny"
    old_best = (run / "checkpoints" / "best.pt").read_bytes()
    users = {"NOTES.txt": "my notes", "analysis/a.csv": "x,y", "plots/my_figure.png": "a figure",
             "checkpoints/best_of_monday.pt": "weights I keep", "eval/val/notes.md": "why val is odd",
             "tb/README": "how I read the curves"}
    for rel, text in users.items():
        (run / rel).parent.mkdir(parents=True, exist_ok=True)
        (run / rel).write_text(text)
    (run / "data").symlink_to(tmp_path)  # a link to a folder is kept, never followed
    stale = ["eval/test/metrics.json", "plots/samples_test.png", "checkpoints/best.onnx", "checkpoints/.last.pt.x1.tmp"]
    for rel in stale:
        (run / rel).parent.mkdir(parents=True, exist_ok=True)
        (run / rel).write_text("from the earlier run")
    capsys.readouterr()
    assert main(["train", str(cfg_path), "--overwrite"]) == 0
    out = capsys.readouterr().out
    assert "kept 7 files (NOTES.txt, analysis/a.csv, checkpoints/best_of_monday.pt, data, eval/val/notes.md, and 2 more) " \
           "that seglab did not write" in out, out
    assert "kept 7 files" in (run / "train.log").read_text()
    for rel, text in users.items():
        assert (run / rel).read_text() == text, rel
    assert (run / "data").is_symlink() and (tmp_path / "c.yaml").is_file()
    for rel in stale:
        assert not (run / rel).exists(), rel
    assert not (run / "eval" / "test").exists()  # emptied seglab folders go too
    assert (run / MARKER).is_file() and (run / "checkpoints" / "best.pt").read_bytes() != old_best
    # everything left but the user's files is the new run's own
    assert sorted(RunDir(run).remove_own_files()) == sorted([*users, "data"])


def test_every_file_a_run_writes_is_in_the_run_layout(tmp_path, tiny_raw):
    """The layout --overwrite deletes by (run_dir._RUN_FILES) names every file a training, `seglab eval` of
    another split and `seglab export`'s default output write: none is left behind as if it were the user's."""
    from seglab.cli import main

    raw = _small(tiny_raw)
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(yaml.safe_dump(raw))
    assert main(["train", str(cfg_path)]) == 0
    run = tmp_path / "runs" / "tiny"
    ckpt = run / "checkpoints" / "best.pt"
    assert main(["eval", str(run), "--split", "test"]) == 0
    assert main(["export", str(ckpt), "--format", "onnx", "--size", "16", "16"]) == 0
    assert (run / "checkpoints" / "best.onnx").is_file() and (run / "eval" / "test" / "metrics.json").is_file()
    assert RunDir(run).remove_own_files() == []
    assert list(run.iterdir()) == []


@pytest.mark.parametrize("name", [".", "..", "a/b", "", "../escape"])
def test_output_name_must_be_a_plain_folder_name(tiny_raw, name):
    raw = copy.deepcopy(tiny_raw)
    raw["output"]["name"] = name
    with pytest.raises(ConfigError, match="output.name: .* not a plain folder name"):
        config_from_dict(raw)


def test_demo_replaces_an_earlier_demo_only_when_asked(tmp_path):
    from seglab import api

    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "mine.txt").write_text("x")
    with pytest.raises(SeglabError, match="not created by seglab"):
        api.demo(out_dir=tmp_path, overwrite=True)
    assert (tmp_path / "demo" / "mine.txt").is_file()


def test_a_second_training_into_a_folder_in_use_is_refused(tmp_path, tiny_raw):
    cfg = config_from_dict(_small(tiny_raw))
    run = RunDir(cfg.run_dir())
    script = ("import sys, time; from seglab.artifacts.run_dir import RunDir, RunLock\n"
              "with RunLock(RunDir(sys.argv[1])):\n    print('held', flush=True); time.sleep(60)\n")
    holder = subprocess.Popen([sys.executable, "-c", script, str(run.path)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(SeglabError, match=rf"{run.path}: run folder is in use by seglab process {holder.pid}"):
            fit(cfg)
    finally:
        holder.kill()
        holder.wait()
    assert not run.path.exists()  # refused before anything was written
    fit(cfg)  # a lock whose process died is not in force
    with RunLock(run), RunLock(run):  # re-entrant in one process
        pass
    assert not run.lock_file.exists()


def test_a_lock_file_that_is_a_link_is_refused_and_its_target_left_alone(tmp_path, tiny_raw):
    """A `.NAME.lock` symlink to a user's file: nothing is written through it, train and predict say so."""
    cfg = config_from_dict(_small(tiny_raw))
    run = RunDir(cfg.run_dir())
    precious = tmp_path / "notes.txt"
    precious.write_text("mine")
    run.lock_file.parent.mkdir(parents=True, exist_ok=True)
    run.lock_file.symlink_to(precious)
    with pytest.raises(SeglabError, match=rf"{run.lock_file}: the lock file of {run.path} is a symbolic link"):
        fit(cfg)
    assert precious.read_text() == "mine" and run.lock_file.is_symlink() and not run.path.exists()
    out = tmp_path / "preds"
    RunDir(out).lock_file.symlink_to(precious)
    with pytest.raises(SeglabError, match="is a symbolic link"), RunLock(RunDir(out), "predict output folder"):
        pass
    assert precious.read_text() == "mine"


def test_one_run_takes_its_lock_once_over_fit_evaluation_and_report(tmp_path, tiny_raw, monkeypatch):
    from seglab.engine.trainer import fit_locked
    from seglab.workflows.runs import train_run

    cfg = config_from_dict(_small(tiny_raw))
    run = RunDir(cfg.run_dir())
    with pytest.raises(SeglabError, match="needs the run folder's lock held"):
        fit_locked(run, cfg)  # without the lock: refused before anything is written
    assert not run.path.exists()
    taken, enter = [], RunLock.__enter__

    def counted(self):
        taken.append(self.key)
        return enter(self)

    monkeypatch.setattr(RunLock, "__enter__", counted)
    train_run(cfg)
    assert taken == [str(run.lock_file.resolve())]
    assert (run.path / "eval" / "val" / "metrics.json").is_file() and not run.lock_file.exists()


def test_a_run_that_stopped_before_its_first_checkpoint_starts_over(tmp_path, tiny_raw):
    from seglab import api

    raw = _small(tiny_raw)
    raw["optimizer"]["lr"] = 1e30  # diverges in epoch 1
    cfg = config_from_dict(raw)
    with pytest.raises(SeglabError, match="training diverged"):
        fit(cfg)
    run = RunDir(cfg.run_dir())
    assert run.config.is_file() and not run.last.is_file()
    fit(config_from_dict(_small(tiny_raw)))  # no --overwrite needed: nothing of that run to keep
    assert run.last.is_file()
    run.last.unlink()
    run.best.unlink()
    run.summary.unlink()
    api.train(None, resume=run.path)  # --resume of such a folder starts it over too
    assert run.last.is_file()


def test_resume_refuses_a_config_that_is_not_the_runs(tmp_path, tiny_raw):
    cfg = config_from_dict(_small(tiny_raw))
    run = fit(cfg).run
    good = run.config.read_text()
    run.config.write_text(good.replace("base_channels: 4", "base_channels: 8"))
    with pytest.raises(SeglabError, match=r"config.yaml: differs from the run's checkpoints/last.pt at "
                                          r"model.base_channels \(4 vs 8\)"):
        fit(cfg, resume=True)
    run.config.write_text(good.split("\noptimizer:")[0] + "\n")  # truncated at a section: defaults fill the rest
    with pytest.raises(SeglabError, match="differs from the run's checkpoints/last.pt"):
        fit(cfg, resume=True)


def test_files_get_the_users_umask_and_are_flushed(tmp_path, tiny_raw):
    old = os.umask(0o022)
    try:
        run = fit(config_from_dict(_small(tiny_raw))).run
    finally:
        os.umask(old)
    for f in (run.last, run.best, run.metrics_csv, run.summary, run.config, run.split):
        assert f.stat().st_mode & 0o777 == 0o644, f


class _Stop(BaseException):
    """Stands for a kill: raised from the write hook, it unwinds without any of seglab's error handling."""


def _columns(path):
    with open(path) as f:
        return [(r["epoch"], r["train_loss"], r["val_miou"]) for r in csv.DictReader(f)]


def test_a_stop_at_every_write_point_resumes_to_the_uninterrupted_result(tmp_path, tiny_raw):
    raw = _small(tiny_raw)
    raw["train"]["epochs"] = 3
    points = []

    def count(path, stage):
        points.append((path.name, stage))

    fileio.write_hook = count
    try:
        ref = fit(config_from_dict(raw)).run
    finally:
        fileio.write_hook = None
    assert ("best.pt", "written") in points and ("last.pt", "replaced") in points
    ref_best = load_checkpoint(ref.best)
    ref_summary = ref.read_json(ref.summary)
    for k in range(len(points)):
        raw_k = copy.deepcopy(raw)
        raw_k["output"]["name"] = f"stop_{k}"
        cfg = config_from_dict(raw_k)
        seen = []

        def stop_at_k(path, stage):
            seen.append(1)
            if len(seen) - 1 == k:
                raise _Stop

        fileio.write_hook = stop_at_k
        with pytest.raises(_Stop):
            fit(cfg)
        fileio.write_hook = None
        run = RunDir(cfg.run_dir())
        if run.last.is_file():
            fit(cfg, resume=True)
        else:  # stopped before the first checkpoint: a new start (what train and --resume do by themselves)
            fit(cfg)
        where = f"stop at write {k} ({points[k][0]}, {points[k][1]})"
        best = load_checkpoint(run.best)
        assert best["train_state"]["epoch"] == ref_best["train_state"]["epoch"], where
        for name, tensor in ref_best["model_state"].items():
            assert torch.equal(best["model_state"][name], tensor), where
        assert run.read_json(run.summary)["best_epoch"] == ref_summary["best_epoch"], where
        assert _columns(run.metrics_csv) == _columns(ref.metrics_csv), where
        assert not list(run.checkpoints.glob(".*.tmp")), where  # temporaries of the stopped write removed


def test_failed_writes_name_the_file(tmp_path, monkeypatch):
    import errno

    from seglab.artifacts.checkpoint import save_checkpoint

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", lambda *a, **k: (_ for _ in ()).throw(RuntimeError(
        "[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 0")))
    with pytest.raises(SeglabError, match=rf"{tmp_path / 'x.pt'}: could not write: \[enforce fail"):
        save_checkpoint(tmp_path / "x.pt", {"a": 1})  # the disk has room: torch's words
    # issue 24 item 8: the same failure with less free space than the checkpoint needs is a full disk
    import shutil

    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 4096, 4096))
    with pytest.raises(SeglabError, match=rf"^{tmp_path / 'x.pt'}: could not write: the disk is full; free space "
                       r"and rerun \(a run resumes with --resume\)$"):
        save_checkpoint(tmp_path / "x.pt", {"w": torch.zeros(2**20)})
    monkeypatch.setattr(fileio.Path, "write_text", full)
    with pytest.raises(SeglabError, match=r"y.txt: could not write: the disk is full"):
        fileio.atomic_write_text(tmp_path / "y.txt", "data")
    assert not list(tmp_path.iterdir())  # nothing half-written left


def test_a_failed_rename_names_the_target_and_leaves_no_temporary(tmp_path):
    (tmp_path / "report.html").mkdir()  # a folder where the file should go: the final rename fails
    with pytest.raises(SeglabError, match=rf"{tmp_path / 'report.html'}: could not write"):
        fileio.atomic_write_text(tmp_path / "report.html", "<html>")
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]


def test_a_run_folder_evaluates_and_resumes_from_any_directory(tmp_path, tiny_raw, monkeypatch, capsys):
    """Issue 24 item 5: a run trained with a relative data.root evaluates and resumes from another working
    directory; moved data is refused naming data.root and relocated with --set data.root=."""
    import json
    import shutil

    from seglab.cli import main

    from conftest import folder_raw, make_folder_dataset

    make_folder_dataset(tmp_path / "proj" / "data" / "base", n=8, size=(16, 16))
    raw = folder_raw(_small(tiny_raw), tmp_path / "proj" / "data" / "base")
    raw["data"]["root"] = "data/base"
    raw["output"]["dir"] = "runs"
    (tmp_path / "proj" / "c.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.chdir(tmp_path / "proj")
    assert main(["train", "c.yaml", "--set", "train.epochs=1"]) == 0
    run = tmp_path / "proj" / "runs" / "tiny"
    split = json.loads((run / "split.json").read_text())
    assert split["root"] == str(tmp_path / "proj" / "data" / "base")
    assert split["train"][0][0].startswith("images/")  # relative to the recorded root
    metrics = json.loads((run / "eval" / "val" / "metrics.json").read_text())

    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert main(["eval", str(run)]) == 0
    assert json.loads((run / "eval" / "val" / "metrics.json").read_text())["miou"] == metrics["miou"]
    assert main(["train", "--resume", str(run), "--set", "train.epochs=2"]) == 0
    assert len((run / "metrics.csv").read_text().splitlines()) == 1 + 2
    metrics = json.loads((run / "eval" / "val" / "metrics.json").read_text())

    shutil.move(tmp_path / "proj" / "data", tmp_path / "moved")
    capsys.readouterr()
    assert main(["eval", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "split.json: the run's data folder" in err and \
        "(data.root) is not there; if the data has moved, pass --set data.root=" in err, err
    assert main(["eval", str(run), "--set", f"data.root={tmp_path / 'moved' / 'base'}"]) == 0
    assert json.loads((run / "eval" / "val" / "metrics.json").read_text())["miou"] == metrics["miou"]
    config_before = (run / "config.yaml").read_text()
    assert main(["train", "--resume", str(run), "--set", "train.epochs=3"]) == 2  # the data moved: refused
    assert "(data.root) is not there" in capsys.readouterr().err
    assert (run / "config.yaml").read_text() == config_before  # issue 42 item 12: a refusal writes nothing
    assert main(["train", "--resume", str(run), "--set", "train.epochs=3",
                 "--set", f"data.root={tmp_path / 'moved' / 'base'}"]) == 0
    assert len((run / "metrics.csv").read_text().splitlines()) == 1 + 3


def test_status_is_the_one_answer_on_where_a_run_stands(tmp_path):
    from seglab.artifacts.run_dir import RunDir

    run = RunDir(tmp_path / "r")
    assert run.status() == "absent"
    run.path.mkdir()
    run.mark()
    assert run.status() == "started"  # a seglab folder with nothing to keep
    run.last.parent.mkdir(parents=True, exist_ok=True)
    run.last.write_bytes(b"x")
    assert run.status() == "resumable"
    run.summary.write_text("{}")
    assert run.status(["val", "test"]) == "trained" and run.status() == "finished"
    for split in ("val", "test"):
        run.eval_dir(split).mkdir(parents=True)
        (run.eval_dir(split) / "metrics.json").write_text("{}")
    assert run.status(["val", "test"]) == "finished"
