"""The fixed layout of a run folder."""
from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import socket
from pathlib import Path
from typing import Any, Optional, Sequence

from ..config.metric_names import VALIDATION_COLUMNS
from ..rank import is_main_process
from ..errors import SeglabError
from ..fileio import TMP_SUFFIX, atomic_write_text, remove_stale_temporaries

# Written when seglab creates a run folder: the only kind of folder --overwrite replaces.
MARKER = ".seglab-run"

# The names of the files a run folder holds, each spelled here only: RunDir's paths, the --overwrite list and
# the readers (reports, comparisons, trackers) use these.
CONFIG, SPLIT, METRICS_CSV, LOG, REPORT, SUMMARY = (
    "config.yaml", "split.json", "metrics.csv", "train.log", "report.html", "summary.json")
CV_SUMMARY, CV_RESULTS, RESULTS_CSV, RESULTS_MD = "cv_summary.json", "cv_results.md", "results.csv", "results.md"
EVAL_METRICS, PER_CLASS_CSV, PER_CLASS_MD, PER_IMAGE_CSV = "metrics.json", "per_class.csv", "per_class.md", "per_image.csv"
EVAL_FILES = (EVAL_METRICS, PER_CLASS_CSV, PER_CLASS_MD, PER_IMAGE_CSV)  # one evaluation's tables (eval/SPLIT/)
FOLDERS = ("tb", "checkpoints", "plots", "eval")

# Every file seglab writes in a run folder, relative to it: the only files --overwrite deletes. A k-fold
# folder holds one run layout per fold_K/ and a comparison report of the folds; `checkpoints/eval_SPLIT/` is
# where `seglab eval` writes for a checkpoint it cannot place in a run folder, and checkpoints/best.onnx and
# the like are `seglab export`'s default outputs. tests/test_run_folder.py checks that every run kind writes
# nothing outside this list.
_SCORES = ("(" + "|".join(re.escape(f) for f in EVAL_FILES)
           + r"|(per_class_iou|confusion|samples|per_image_miou|worst)_[^/]+\.png)")
_RUN_FILES = (
    *(re.escape(f) for f in (MARKER, CONFIG, SPLIT, METRICS_CSV, LOG, REPORT, SUMMARY)),
    r"checkpoints/(best|last)\.(pt|onnx|int8\.onnx|torchscript\.pt)",
    r"checkpoints/(best|last)\.hf/(model\.safetensors|config\.json|README\.md)", rf"checkpoints/eval_[^/]+/{_SCORES}",
    r"plots/(loss|metrics)\.png", r"plots/(per_class_iou|confusion|samples|per_image_miou|worst)_[^/]+\.png",
    rf"eval/[^/]+/{_SCORES}", r"tb/events\.out\.tfevents\.[^/]+",
    *(re.escape(f) for f in (CV_SUMMARY, CV_RESULTS, RESULTS_CSV, RESULTS_MD)), r"predictions\.png", r"curves\.png",
)
_OWN_FILE = re.compile(rf"(fold_\d+/)?({'|'.join(_RUN_FILES)})|(.*/)?\.[^/]+{re.escape(TMP_SUFFIX)}")
_OWN_FOLDER = re.compile(r"(fold_\d+/)?(checkpoints(/eval_[^/]+|/(best|last)\.hf)?|plots|tb|eval(/[^/]+)?)|fold_\d+")

METRICS_COLUMNS = [
    "epoch", "train_loss", *VALIDATION_COLUMNS, "lr", "epoch_seconds", "train_images_per_s", "loader_images_per_s",
    "model_images_per_s", "step", "elapsed_seconds",
]


class RunDir:
    """config.yaml, split.json, metrics.csv, train.log, tb/, checkpoints/, plots/, eval/<split>/, report.html."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    config = property(lambda self: self.path / CONFIG)
    split = property(lambda self: self.path / SPLIT)
    metrics_csv = property(lambda self: self.path / METRICS_CSV)
    log = property(lambda self: self.path / LOG)
    tensorboard = property(lambda self: self.path / "tb")
    checkpoints = property(lambda self: self.path / "checkpoints")
    best = property(lambda self: self.path / "checkpoints" / "best.pt")
    last = property(lambda self: self.path / "checkpoints" / "last.pt")
    plots = property(lambda self: self.path / "plots")
    report = property(lambda self: self.path / REPORT)
    summary = property(lambda self: self.path / SUMMARY)

    marker = property(lambda self: self.path / MARKER)
    lock_file = property(lambda self: self.path.parent / f".{self.path.name}.lock")

    def eval_dir(self, split: str) -> Path:
        return self.path / "eval" / split

    def eval_metrics(self, split: str) -> Path:
        """eval/SPLIT/metrics.json: the scores of the run's evaluation on a split."""
        return self.eval_dir(split) / EVAL_METRICS

    def is_run(self) -> bool:
        return self.config.is_file()

    def require_run(self) -> "RunDir":
        """This folder, checked to be a run folder (one line naming it otherwise)."""
        if not self.is_run():
            raise SeglabError(f"{self.path}: not a run folder (no config.yaml)")
        return self

    def evaluated_checkpoint(self) -> Path:
        """The checkpoint a run is evaluated, compared and predicted with: best.pt, else last.pt."""
        for p in (self.best, self.last):
            if p.is_file():
                return p
        raise SeglabError(f"{self.path}: run folder has no checkpoint in checkpoints/")

    def created_by_seglab(self) -> bool:
        """The folder carries seglab's marker, or (folders from before the marker) holds nothing but what a
        run writes: config.yaml, split.json and checkpoints/ among them."""
        if self.marker.is_file():
            return True
        if not (self.config.is_file() and self.split.is_file() and self.checkpoints.is_dir()):
            return False
        known = {CONFIG, SPLIT, METRICS_CSV, LOG, REPORT, SUMMARY, CV_SUMMARY, RESULTS_CSV, RESULTS_MD, *FOLDERS}
        return all(p.name in known or re.fullmatch(r"fold_\d+", p.name) for p in self.path.iterdir())

    def status(self, eval_splits: Sequence[str] = ()) -> str:
        """Where the run stands, the one answer every caller acts on: 'absent' (nothing trained or started),
        'started' (a seglab run that stopped before its first checkpoint), 'resumable' (last.pt, not finished),
        'trained' (summary.json written, some of `eval_splits` not evaluated), 'finished' (trained and
        evaluated on every one of `eval_splits`)."""
        if self.summary.is_file():
            done = all(self.eval_metrics(s).is_file() for s in eval_splits)
            return "finished" if done else "trained"
        if self.last.is_file():
            return "resumable"
        return "started" if self.started_without_checkpoint() else "absent"

    def started_without_checkpoint(self) -> bool:
        """A seglab run that stopped before its first checkpoint (nothing in it to resume or keep)."""
        return (self.created_by_seglab() and not self.last.is_file() and not self.best.is_file()
                and not self.summary.is_file())

    def check_new(self, overwrite: bool) -> None:
        """Raise unless a new run may be created here: the folder is absent or empty, or a seglab run
        folder that `overwrite` replaces, or a seglab run that stopped before its first checkpoint."""
        if not self.path.exists():
            return
        if not self.path.is_dir():
            raise SeglabError(f"{self.path}: exists and is not a folder; choose another output.name")
        if not self._holds_anything():
            return
        if not self.created_by_seglab():
            raise SeglabError(f"{self.path}: folder exists and was not created by seglab (no {MARKER} marker); "
                              "seglab replaces only its own run folders: choose another output.dir or output.name")
        if not overwrite and not self.started_without_checkpoint():
            raise SeglabError(f"{self.path}: run folder exists; pass --resume to continue it or --overwrite to replace it")

    def _holds_anything(self) -> bool:
        """Anything in the folder but the temporary of a marker write that a stop interrupted."""
        return any(not (p.name.startswith(f".{MARKER}.") and p.name.endswith(".tmp")) for p in self.path.iterdir())

    def prepare_new(self, overwrite: bool) -> list[str]:
        """Make this a fresh run folder with seglab's marker, replacing an existing run as check_new allows:
        the files seglab wrote are deleted, every other file stays. Returns the kept files (relative paths)."""
        self.check_new(overwrite)
        kept = self.remove_own_files() if self.path.is_dir() else []
        self.path.mkdir(parents=True, exist_ok=True)
        self.mark()  # first: a folder that a stop leaves half-made is still recognisably seglab's
        for p in (self.checkpoints, self.plots, self.tensorboard):
            p.mkdir(parents=True, exist_ok=True)
        return kept

    def remove_own_files(self) -> list[str]:
        """Delete what seglab wrote here (the run layout above) and the folders that leaves empty; the user's
        own files and folders stay. Returns the kept files, relative to the run folder, sorted."""
        kept: list[str] = []
        for folder, dirs, files in os.walk(self.path, topdown=False):  # links are not followed
            base = Path(folder).relative_to(self.path).as_posix()
            prefix = "" if base == "." else base + "/"
            for name in files + [d for d in dirs if (Path(folder) / d).is_symlink()]:
                rel = prefix + name
                if name == MARKER:
                    continue
                if _OWN_FILE.fullmatch(rel) and not (Path(folder) / name).is_dir():
                    (Path(folder) / name).unlink()
                else:
                    kept.append(rel)
            left = [p.name for p in Path(folder).iterdir()]
            if left == [MARKER]:  # a folder that keeps the user's files stays seglab's (a fold's too)
                (Path(folder) / MARKER).unlink()
                left = []
            if base != "." and _OWN_FOLDER.fullmatch(base) and not left:
                Path(folder).rmdir()
        return sorted(kept)

    def mark(self) -> None:
        """Write the marker that makes this folder one --overwrite may replace."""
        if not self.marker.is_file():
            atomic_write_text(self.marker, "a seglab run folder: `seglab train --overwrite` may replace it\n")

    def clean_temporaries(self) -> list[Path]:
        """Delete what interrupted atomic writes left (checkpoints/.last.pt.*.tmp and the like)."""
        removed = []
        for folder in (self.path, self.checkpoints, self.plots, *self.path.glob("eval/*")):
            removed += remove_stale_temporaries(folder)
        return removed

    def write_metrics_csv(self, history: list[dict[str, Any]]) -> None:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=METRICS_COLUMNS, extrasaction="ignore")
        w.writeheader()
        for row in history:
            w.writerow({k: fmt_value(row.get(k)) for k in METRICS_COLUMNS})
        atomic_write_text(self.metrics_csv, buf.getvalue())

    def read_history(self) -> list[dict[str, Optional[float]]]:
        """metrics.csv as rows of numbers (None where a value is empty, e.g. epochs without validation)."""
        if not self.metrics_csv.is_file():
            return []
        with self.metrics_csv.open() as f:
            return [{k: (float(v) if v not in ("", None) else None) for k, v in row.items()} for row in csv.DictReader(f)]

    def write_json(self, path: Path, data: Any) -> None:
        atomic_write_text(path, json.dumps(clean_json(data), indent=1))

    def read_json(self, path: Path) -> Optional[Any]:
        return json.loads(path.read_text()) if path.is_file() else None


_held: dict[str, list[Any]] = {}  # lock path -> [fd, depth, folders made]: this process's locks (re-entrant)


def _lock_key(run: RunDir) -> str:
    """The lock file's absolute path, its folder resolved but not the file itself (which may be a link)."""
    return str(run.lock_file.parent.resolve() / run.lock_file.name)


class RunLock:
    """An exclusive lock on a run folder for a whole training: `.NAME.lock` beside the folder (so replacing
    the folder keeps it), holding the owner's pid. The operating system releases it when its process dies,
    so a lock left by a killed run is not in force. Re-entrant within one process."""

    def __init__(self, run: RunDir, what: str = "run folder") -> None:
        self.run, self.what = run, what
        self.path = run.lock_file
        self.key = _lock_key(run)

    def __enter__(self) -> "RunLock":
        key = self.key
        if key in _held:
            _held[key][1] += 1
            return self
        try:
            import fcntl
        except ImportError:  # not on Windows: no lock
            return self
        made, folder = [], self.path.parent
        while not folder.exists():  # the folders this lock creates go again if the command leaves them empty
            made.append(folder)
            folder = folder.parent
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            try:  # never through a link: the lock's write would land in whatever file it points to
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
            except OSError as exc:
                if not self.path.is_symlink():
                    raise
                raise SeglabError(f"{self.path}: the lock file of {self.run.path} is a symbolic link (to "
                                  f"{os.readlink(self.path)}); seglab does not write through it: remove the link") from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                owner = os.read(fd, 200).decode(errors="replace").strip() or "another process"
                os.close(fd)
                raise SeglabError(f"{self.run.path}: {self.what} is in use by {owner}; wait for it to end or "
                                  "stop it (a lock left by a process that died is not in force)") from None
            try:  # the previous holder may have removed the file between our open and our lock
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"seglab process {os.getpid()} on {socket.gethostname()}".encode())
        _held[key] = [fd, 1, made]
        return self

    @staticmethod
    def held(run: RunDir) -> bool:
        """Whether this process holds `run`'s lock."""
        return _lock_key(run) in _held

    def __exit__(self, *exc: Any) -> None:
        key = self.key
        if key not in _held:
            return
        _held[key][1] -= 1
        if _held[key][1] == 0:
            fd, _, made = _held.pop(key)
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass
            os.close(fd)
            for folder in made:  # deepest first: a refused training leaves no empty output.dir behind
                try:
                    folder.rmdir()
                except OSError:
                    break


def fmt_value(v: Any) -> str:
    """A metrics.csv cell: 6 significant digits, '' for a missing or NaN value."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def clean_json(obj: Any) -> Any:
    """NaN -> None so the files are strict JSON."""
    if isinstance(obj, float):
        return None if math.isnan(obj) or math.isinf(obj) else obj
    if isinstance(obj, dict):
        return {k: clean_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean_json(v) for v in obj]
    return obj


def kept_files(kept: list[str], shown: int = 5) -> str:
    """'2 files (NOTES.txt, analysis/a.csv)': the user's files a replaced run folder kept, the first few named."""
    more = f", and {len(kept) - shown} more" if len(kept) > shown else ""
    return f"{len(kept)} file{'s' if len(kept) != 1 else ''} ({', '.join(kept[:shown])}{more})"


def lock_for_writer(run: RunDir) -> Any:
    """The run folder's lock for a training and what follows it, held by the process that writes the folder
    (torchrun: rank 0; the other ranks get a context that does nothing)."""
    from contextlib import nullcontext

    return RunLock(run) if is_main_process() else nullcontext()
