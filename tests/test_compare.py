"""`seglab compare` and `seglab report RUN...`: results tables, skipping finished runs, and the interactive
report opened in a real headless Chromium."""
import copy
import csv
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from seglab.cli import main
from seglab.artifacts.run_dir import RunDir

from conftest import TINY


def _write(path: Path, raw: dict) -> str:
    path.write_text(yaml.safe_dump(raw))
    return str(path)


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    d = tmp_path_factory.mktemp("cmp")
    a = copy.deepcopy(TINY)
    a["output"]["name"] = "unet_tiny"
    b = copy.deepcopy(TINY)
    b["model"] = {"name": "unet", "base_channels": 6, "depth": 1}
    b["output"]["name"] = "unet_shallow"
    sweep = {"set": ["train.epochs=1"], "experiments": [{"config": "a.yaml", "name": "unet_lr", "set": ["optimizer.lr=0.003"]}]}
    files = [_write(d / "a.yaml", a), _write(d / "b.yaml", b), _write(d / "sweep.yaml", sweep)]
    assert main(["compare", *files, "--out", str(d / "out"), "--images", "2"]) == 0
    return d, files


def test_compare_writes_results_and_report(compared):
    d, _ = compared
    out = d / "out"
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [r["experiment"] for r in rows] == ["unet_tiny", "unet_shallow", "unet_lr"]
    for r in rows:
        m = json.loads((out / "runs" / r["experiment"] / "eval" / "val" / "metrics.json").read_text())
        assert float(r["miou"]) == pytest.approx(m["miou"])
        assert float(r["iou_disc"]) == pytest.approx(m["iou"][1], nan_ok=True)
        assert int(r["parameters"]) > 0 and float(r["gflops"]) > 0 and float(r["train_seconds"]) > 0
        assert r["device"] == "cpu" and r["precision"] == "none"  # TINY pins amp: none
    assert rows[2]["epochs"] == "1" and rows[0]["epochs"] == "2"  # the sweep's own overrides applied
    md = (out / "results.md").read_text()
    assert "| unet_shallow | unet |" in md
    ranked = [line.split("|")[1].strip() for line in md.splitlines() if line.startswith("| unet_")]
    assert ranked == sorted((r["experiment"] for r in rows), key=lambda e: -float(next(
        r["miou"] for r in rows if r["experiment"] == e)))  # results.md ranks by mIoU; the csv keeps the order
    page = (out / "report.html").read_text()
    import re

    assert not re.search(r"<script[^>]+src=|<link[^>]+href=[\"']https?:", page)  # everything inlined, nothing fetched
    for div in ("cmp_val_miou", "cmp_train_loss", "cmp_per_class"):
        assert f'id="{div}"' in page
    assert (out / "predictions.png").is_file()


def test_compare_skips_finished_runs(compared, capsys):
    d, files = compared
    before = (d / "out" / "runs" / "unet_tiny" / "checkpoints" / "last.pt").stat().st_mtime_ns
    capsys.readouterr()
    assert main(["compare", *files, "--out", str(d / "out"), "--images", "0"]) == 0
    assert "unet_tiny: finished, reusing" in capsys.readouterr().out
    assert (d / "out" / "runs" / "unet_tiny" / "checkpoints" / "last.pt").stat().st_mtime_ns == before


def test_compare_refuses_a_changed_config(compared, capsys):
    d, files = compared
    code = main(["compare", files[0], "--out", str(d / "out"), "--set", "optimizer.lr=0.5"])
    err = capsys.readouterr().err
    assert code == 2 and "holds a run of a different config for experiment 'unet_tiny'" in err


def test_report_of_run_folders(compared, tmp_path):
    d, _ = compared
    runs = d / "out" / "runs"
    assert main(["report", str(runs / "unet_tiny"), str(runs / "unet_lr"), "--out", str(tmp_path / "r"), "--images", "1"]) == 0
    rows = list(csv.DictReader((tmp_path / "r" / "results.csv").open()))
    assert [r["experiment"] for r in rows] == ["unet_tiny", "unet_lr"]


def test_bad_sweep_file(tmp_path, capsys):
    p = tmp_path / "sweep.yaml"
    p.write_text(yaml.safe_dump({"experiments": [{"cfg": "a.yaml"}]}))
    assert main(["compare", str(p), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "experiments[0]: expected a mapping with 'config'" in err


# ---------------------------------------------------------------- a real browser

def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


PROBE_HEAD = ("<script>window.__errors=[];window.addEventListener('error',function(e){window.__errors.push(String(e.message));});"
              "var __ce=console.error;console.error=function(){window.__errors.push(Array.from(arguments).join(' '));__ce.apply(console,arguments);};</script>")
PROBE_TAIL = ("<script>window.addEventListener('load',function(){setTimeout(function(){"
              "document.body.setAttribute('data-errors',JSON.stringify(window.__errors));"
              "document.body.setAttribute('data-plots',String(document.querySelectorAll('.plotly-graph-div .cartesianlayer .subplot').length));"
              "document.body.setAttribute('data-traces',String(document.querySelectorAll('.plotly-graph-div .scatterlayer .trace, .plotly-graph-div .barlayer .trace').length));"
              "},500);});</script>")


def _open_in_chromium(chromium: str, page: Path, tmp_path: Path):
    text = page.read_text()
    probe = tmp_path / "probe.html"
    probe.write_text(text.replace("<head>", "<head>" + PROBE_HEAD, 1).replace("</body>", PROBE_TAIL + "</body>", 1))
    flags = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
             f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=8000", "--window-size=1280,1600"]
    dom = subprocess.run(flags + ["--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120).stdout
    shot = tmp_path / "shot.png"
    subprocess.run(flags + [f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120)
    return dom, shot


@pytest.mark.skipif(_chromium() is None, reason="no Chromium found (.ci/run installs Debian's chromium; "
                                                "apt-get install chromium where you can)")
@pytest.mark.parametrize("which", ["comparison", "run"])
def test_report_renders_in_chromium(compared, tmp_path, which):
    import re

    from PIL import Image

    d, _ = compared
    page = d / "out" / "report.html" if which == "comparison" else d / "out" / "runs" / "unet_tiny" / "report.html"
    dom, shot = _open_in_chromium(_chromium(), page, tmp_path)
    errors = re.search(r'data-errors="([^"]*)"', dom)
    assert errors is not None, "the page did not finish loading in Chromium"
    assert errors.group(1).replace("&quot;", '"') == "[]", errors.group(1)
    plots = int(re.search(r'data-plots="(\d+)"', dom).group(1))
    traces = int(re.search(r'data-traces="(\d+)"', dom).group(1))
    # comparison: mIoU and loss over training time, mIoU, train and val loss, BIoU over epochs, per-class bars
    assert plots == (7 if which == "comparison" else 2), plots
    assert traces >= (3 * 6 if which == "comparison" else 4), traces
    img = np.asarray(Image.open(shot).convert("RGB")).astype(np.int16)
    assert img.std() > 10  # not a blank page
    # plot lines are drawn in the palette's colours: the first trace colour (#1f77b4) must be on screen
    blue = (np.abs(img - np.array([0x1f, 0x77, 0xb4])).sum(-1) < 30).sum()
    assert blue > 200, blue


# ---------------------------------------------------------------- cross-validation

@pytest.mark.slow
def test_k_fold_cross_validation(tmp_path, capsys):
    raw = copy.deepcopy(TINY)
    raw.update(k_folds=3)
    raw["train"]["epochs"] = 1
    raw["output"] = {"dir": str(tmp_path / "runs"), "name": "cv"}
    cfg = _write(tmp_path / "cv.yaml", raw)
    assert main(["train", cfg]) == 0
    root = tmp_path / "runs" / "cv"
    pool = set()
    for k in (1, 2, 3):
        split = json.loads((root / f"fold_{k}" / "split.json").read_text())
        val = {str(v) for v in split["val"]}
        assert not (val & pool) and not (val & {str(t) for t in split["train"]})  # disjoint folds
        pool |= val
    assert len(pool) == 24 + 8  # every train + val sample is validated exactly once
    summary = json.loads((root / "cv_summary.json").read_text())
    mious = [json.loads((root / f"fold_{k}" / "eval" / "val" / "metrics.json").read_text())["miou"] for k in (1, 2, 3)]
    assert summary["mean"]["miou"] == pytest.approx(np.mean(mious))
    assert summary["std"]["miou"] == pytest.approx(np.std(mious, ddof=1))
    assert "| mean |" in (root / "cv_results.md").read_text() and (root / "report.html").is_file()
    # an interrupted cross-validation resumes: finished folds are kept
    (root / "fold_3" / "summary.json").unlink()
    before = (root / "fold_1" / "checkpoints" / "last.pt").stat().st_mtime_ns
    capsys.readouterr()
    assert main(["train", "--resume", str(root)]) == 0
    out = capsys.readouterr().out
    assert "fold 1/3: finished, reusing" in out and "fold 3/3: resuming" in out
    assert (root / "fold_1" / "checkpoints" / "last.pt").stat().st_mtime_ns == before
    # --overwrite replaces the folds and keeps the user's files (issue 24 item 1)
    (root / "NOTES.txt").write_text("mine")
    (root / "fold_2" / "figure.png").write_text("mine too")
    assert main(["train", cfg, "--overwrite"]) == 0
    assert "kept 2 files (NOTES.txt, fold_2/figure.png) that seglab did not write" in capsys.readouterr().out
    assert (root / "fold_1" / "checkpoints" / "last.pt").stat().st_mtime_ns != before
    # every file a cross-validation writes is in the run layout (what --overwrite deletes)
    assert sorted(RunDir(root).remove_own_files()) == ["NOTES.txt", "fold_2/figure.png"]
    assert sorted(p.name for p in root.iterdir()) == [".seglab-run", "NOTES.txt", "fold_2"]  # still seglab's
    assert sorted(p.name for p in (root / "fold_2").iterdir()) == [".seglab-run", "figure.png"]


def test_compare_with_a_budget_gives_every_experiment_the_same_time(tmp_path, monkeypatch, capsys):
    """`compare --budget`: each experiment measured before the first starts, each planned to the same budget
    (on a simulated clock), and the tables and page say the budget, the hardware and the epochs done."""
    from seglab.engine import clock
    from test_budget import SimClock

    monkeypatch.setattr(clock, "now", SimClock())
    a = copy.deepcopy(TINY)
    a["output"]["name"] = "deep"
    b = copy.deepcopy(TINY)
    b["model"] = {"name": "unet", "base_channels": 6, "depth": 1}
    b["output"]["name"] = "shallow"
    files = [_write(tmp_path / "a.yaml", a), _write(tmp_path / "b.yaml", b)]
    assert main(["compare", *files, "--out", str(tmp_path / "out"), "--images", "1", "--budget", "2m"]) == 0
    out = capsys.readouterr().out
    # both estimates come before the first training starts
    assert out.index("shallow: time budget 2 min 0 s: planned") < out.index("experiment 1/2")
    rows = list(csv.DictReader((tmp_path / "out" / "results.csv").open()))
    for r in rows:
        assert float(r["budget_seconds"]) == 120 and float(r["train_seconds"]) <= 120 * 1.03
        assert float(r["epochs"]) > 1 and r["hardware"]
    md = (tmp_path / "out" / "results.md").read_text()
    assert md.startswith("Training budget 2 min 0 s per experiment;") and rows[0]["hardware"] in md
    page = (tmp_path / "out" / "report.html").read_text()
    assert 'id="cmp_val_miou_time"' in page and "Training budget 2 min 0 s per experiment" in page
    assert (tmp_path / "out" / "curves.png").is_file()  # the curves over time and epochs, for a README
