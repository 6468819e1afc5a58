"""Command line: parse arguments, call the API, turn user errors into one line."""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from typing import Any, Optional, Sequence

from .deploy.formats import EXPORT_FORMATS
from .deploy.int8_recipe import CALIBRATION_METHODS, DEFAULT_CALIBRATION, DEFAULT_CALIBRATION_IMAGES, DEFAULT_FP32_FIRST
from .errors import SeglabError


def _count(low: int):
    """An argparse type: a whole number >= low (argparse names the flag in its one-line error)."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
        if v < low:
            raise argparse.ArgumentTypeError(f"{v} is below {low}")
        return v
    return parse


def _common(p: argparse.ArgumentParser, sets: bool = True, example: str = "train.epochs=5") -> None:
    """--debug, and --set with an `example` the command accepts."""
    if sets:
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help=f"override a config key, e.g. --set {example} (repeatable)")
    p.add_argument("--debug", action="store_true", help="show full tracebacks")


def _nproc_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--nproc-per-node", type=_count(1), metavar="N",
                   help="run in N processes on this machine (torchrun --standalone, DistributedDataParallel), "
                        "after the config's checks pass")


def _inference_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("large images (default: the config's eval section)")
    g.add_argument("--sliding-window", nargs=2, type=_count(1), metavar=("H", "W"), help="predict in overlapping H x W windows")
    g.add_argument("--stride", nargs=2, type=_count(1), metavar=("H", "W"), help="window step (default 2/3 of the window)")
    g.add_argument("--tta-flip", action="store_true", help="average with the horizontally flipped image")
    g.add_argument("--tta-scales", nargs="+", type=float, metavar="S", help="average over image scales, e.g. 0.75 1 1.25")


def _budget_flag(p: argparse.ArgumentParser, extra: str = "") -> None:
    p.add_argument("--budget", metavar="DURATION",
                   help="time budget for training (90s, 45m, 2h): the run plans its length so the whole learning-rate "
                        "schedule ends within it (sets train.time_budget)" + (f"; {extra}" if extra else ""))


def _budget_overrides(args: argparse.Namespace) -> list[str]:
    if args.budget is None:
        return []
    from .durations import parse_duration

    try:
        parse_duration(args.budget)
    except ValueError as exc:
        raise SeglabError(f"--budget: {exc}") from None
    return [f"train.time_budget={args.budget}"]


def _inference_overrides(args: argparse.Namespace) -> list[str]:
    out = []
    if args.sliding_window:
        out.append(f"eval.sliding_window={list(args.sliding_window)}")
    if args.stride:
        out.append(f"eval.sliding_stride={list(args.stride)}")
    if args.tta_flip:
        out.append("eval.tta_flip=true")
    if args.tta_scales:
        out.append(f"eval.tta_scales={list(args.tta_scales)}")
    return out


def build_parser() -> argparse.ArgumentParser:
    """One sub-parser per command with its options. Longer than 60 lines on purpose: it reads as the table
    of every command and option, which split into pieces would be harder to scan."""
    parser = argparse.ArgumentParser(prog="seglab", description="Train, evaluate and compare semantic-segmentation models.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a model from a YAML config")
    p.add_argument("config", nargs="?", help="experiment YAML (not needed with --resume)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    _budget_flag(p)
    _nproc_flag(p)
    _common(p)

    p = sub.add_parser("eval", help="evaluate a run folder, checkpoint or model folder at full resolution")
    p.add_argument("target", metavar="RUN_DIR_OR_CHECKPOINT",
                   help="a run folder, a checkpoint, a model folder (export --format hf) or a Hub id hf://OWNER/NAME "
                        "(scored on the data its training config names; --set data.root=... moves it)")
    p.add_argument("--split", choices=["val", "test"], default="val")
    p.add_argument("--out", help="output folder (default RUN_DIR/eval/SPLIT; an export's: RUN_DIR/checkpoints/eval_NAME_SPLIT)")
    p.add_argument("--engine", choices=["torch", "torchscript", "onnxruntime"], default="torch",
                   help="torch: a run folder or checkpoint; onnxruntime / torchscript: a file written by `seglab export` "
                        "kept in its run's checkpoints/ folder, scored on that run's split")
    _inference_flags(p)
    _common(p, example="eval.batch_size=2")

    p = sub.add_parser("predict", help="predict masks for images or folders")
    p.add_argument("checkpoint", metavar="MODEL",
                   help="a checkpoint, a model folder (export --format hf), a Hub id hf://OWNER/NAME[@REV] (read from the "
                        "Hub's cache; HF_HUB_OFFLINE=1: the cache alone), or with --engine an ONNX / TorchScript export")
    p.add_argument("inputs", nargs="+", metavar="INPUT")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--device", default="auto")
    p.add_argument("--engine", choices=["torch", "torchscript", "onnxruntime"], default="torch",
                   help="torch: a seglab checkpoint; torchscript / onnxruntime: a file written by `seglab export` "
                        "(a TorchScript file runs code when loaded: trusted files only)")
    p.add_argument("--workers", type=_count(0), default=0, help="processes decoding images and threads writing PNGs")
    p.add_argument("--save-probabilities", action="store_true",
                   help="also write NAME_prob.npy: the (classes, H, W) float16 probabilities (softmax; "
                        "multi-label: each class's sigmoid)")
    p.add_argument("--threshold", type=float, metavar="T",
                   help="two-class models: foreground where its probability is >= T (default: the more probable "
                        "class); multi-label models: each class where its sigmoid is >= T (default 0.5)")
    _inference_flags(p)
    _common(p, example="eval.tta_flip=true")

    p = sub.add_parser("export", help="export a checkpoint to ONNX, TorchScript or a Hugging Face-style model folder")
    p.add_argument("checkpoint", metavar="RUN_DIR_OR_CHECKPOINT",
                   help="a checkpoint, or a run folder (its best checkpoint, else its last)")
    p.add_argument("--format", dest="fmt", choices=list(EXPORT_FORMATS), default="onnx",
                   help="onnx, torchscript, or hf: a folder with model.safetensors, config.json and a model card "
                        "(README.md) with the run's scores, which predict, eval and seglab.load_model read")
    p.add_argument("--out", help="output file, or folder for --format hf (default: beside the checkpoint, NAME.onnx, "
                                 "NAME.torchscript.pt, NAME.hf/)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file (never a run's checkpoint)")
    p.add_argument("--push-to-hub", metavar="OWNER/NAME",
                   help="--format hf: upload the folder to this Hugging Face Hub repo (created if absent; needs "
                        "`hf auth login` or HF_TOKEN)")
    p.add_argument("--size", type=_count(1), nargs=2, metavar=("H", "W"), help="input size (default: the training input size)")
    p.add_argument("--int8", action="store_true",
                   help="ONNX with INT8 weights and activations (onnxruntime static quantization, calibrated on "
                        "the run's training images; weights only when none can be read); default NAME.int8.onnx")
    p.add_argument("--calibration-images", type=_count(1), default=DEFAULT_CALIBRATION_IMAGES, metavar="N",
                   help=f"training images that calibrate --int8's activation ranges (default {DEFAULT_CALIBRATION_IMAGES})")
    p.add_argument("--calibration", choices=CALIBRATION_METHODS, default=DEFAULT_CALIBRATION,
                   help="how --int8 sets activation ranges: minmax, the observed min/max, or percentile, the 99.999th "
                        f"percentile (default {DEFAULT_CALIBRATION})")
    p.add_argument("--fp32-first", type=_count(0), default=DEFAULT_FP32_FIRST, metavar="K",
                   help=f"--int8: keep the first K convolutions in FP32 (default {DEFAULT_FP32_FIRST}: the stem and "
                        "first block, where INT8 lost the most; 0 quantizes every one)")
    _common(p, sets=False)

    p = sub.add_parser("inspect", help="check a dataset: counts, sizes, class frequencies, problems, sample grid")
    p.add_argument("config")
    p.add_argument("--out", help="output folder (default runs/inspect_<output.name>)")
    _common(p)

    p = sub.add_parser("init", help="write a config for a data folder: finds its layout, splits, palette and mask format")
    p.add_argument("data_dir", help="the folder that holds the images and masks")
    p.add_argument("--out", help="config file to write (default NAME.yaml here, NAME the folder's name)")
    p.add_argument("--masks", help="the mask folder's name, when several folders could hold the masks")
    p.add_argument("--palette", help="palette file (label_colors.txt 'R G B name' or class_dict.csv) for colour masks")
    p.add_argument("--budget", default="10m", help="train.time_budget to write (default 10m)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    _common(p)

    p = sub.add_parser("demo", help="train and evaluate a small U-Net on built-in synthetic data (runs/demo)")
    p.add_argument("--out-dir", default="runs")
    p.add_argument("--overwrite", action="store_true", help="replace the demo run folder of an earlier demo")
    _common(p)

    p = sub.add_parser("report", help="rebuild report.html of a run folder, or compare several run folders")
    p.add_argument("run_dir", nargs="+")
    p.add_argument("--out", help="comparison output folder when several run folders are given (default runs/comparison)")
    p.add_argument("--split", choices=("val", "test"), help="split to compare on (default test when every run has it)")
    p.add_argument("--images", type=_count(0), default=4, help="images predicted side by side by every model")
    _common(p, sets=False)

    p = sub.add_parser("tune", help="hyperparameter search (Optuna) over the config's tune.space")
    p.add_argument("config")
    p.add_argument("--trials", type=_count(1), required=True, help="trials to run in this process")
    p.add_argument("--storage", help="study database URL (default sqlite:///OUTPUT_DIR/tune_NAME.db); "
                                     "several processes or machines may share one")
    p.add_argument("--study", help="study name (default tune.study_name or output.name)")
    p.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    _common(p)

    p = sub.add_parser("compare", help="train every experiment that is not finished, then compare them in one report")
    p.add_argument("configs", nargs="+", help="config files, or sweep files listing experiments")
    p.add_argument("--out", required=True, help="folder for runs/, report.html, results.csv and results.md")
    p.add_argument("--images", type=_count(0), default=4, help="images predicted side by side by every model")
    _budget_flag(p, "every experiment gets the same training time, e.g. 20m: the fair answer to "
                    "'which model is best in 20 minutes of this machine'")
    _nproc_flag(p)
    _common(p)

    p = sub.add_parser("convert", help="turn COCO, LabelMe, CVAT / Datumaro or Label Studio annotations into mask PNGs "
                                       "+ a palette file")
    p.add_argument("format", choices=["coco", "labelme", "cvat", "labelstudio"])
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="coco: the annotations JSON; labelme: JSON files or folders of them; cvat: the folder of a CVAT / "
                        "Datumaro 'Segmentation mask 1.1' export (labelmap.txt, SegmentationClass/); labelstudio: the "
                        "JSON export")
    p.add_argument("--out", required=True, help="output folder: masks/, label_colors.txt, convert.json (cvat: and a "
                                                "TRAIN/VAL/TEST.txt list file per subset when the images are found)")
    p.add_argument("--images", metavar="DIR",
                   help="cvat, labelstudio: the folder holding the images (cvat default: the export's JPEGImages/); "
                        "labelstudio: each task's image is found there by its local-files path or name, its size checked")
    p.add_argument("--unlabelled", choices=["drop", "keep"], default="drop",
                   help="labelstudio: tasks with no annotation are dropped (default) or kept as all-background masks")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier conversion in --out (only the files it wrote; other files there are refused)")
    p.add_argument("--overlap", choices=["smaller", "later"], default="smaller",
                   help="where regions overlap: smaller regions on top (default), or the later annotation wins")
    p.add_argument("--classes", nargs="+", metavar="NAME",
                   help="class names in id order 1, 2, ... (default: COCO category order; LabelMe sorted names)")
    _common(p, sets=False)

    p = sub.add_parser("models", help="list the registered models and their options")
    p.add_argument("--encoders", metavar="PATTERN",
                   help="list the timm encoders matching a shell pattern instead, e.g. '*lite*' (model.encoder: timm/NAME)")
    _common(p, sets=False)
    return parser


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    if "Original Traceback" in text:  # re-raised from a DataLoader worker: keep the original message
        last = text.splitlines()[-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    return text.splitlines()[0] if text else type(exc).__name__


def _convert(args: argparse.Namespace) -> None:
    from pathlib import Path

    from .data.convert import convert_coco, convert_labelme
    from .reporting.console import conversion_lines

    if args.format in ("cvat", "labelstudio") and len(args.inputs) != 1:
        raise SeglabError(f"convert {args.format}: expected one {'export folder' if args.format == 'cvat' else 'JSON export'}, "
                          f"got {len(args.inputs)} inputs")
    if args.format in ("coco", "labelme") and args.images:
        raise SeglabError(f"--images: for cvat and labelstudio; {args.format} names its images inside its JSON")
    images = Path(args.images) if args.images else None
    if args.format == "cvat":
        if args.classes:
            raise SeglabError("--classes: cvat takes its classes and their order from labelmap.txt")
        from .data.convert_cvat import convert_cvat

        s = convert_cvat(Path(args.inputs[0]), Path(args.out), images=images, overwrite=args.overwrite)
    elif args.format == "labelstudio":
        from .data.convert_labelstudio import convert_labelstudio

        s = convert_labelstudio(Path(args.inputs[0]), Path(args.out), images=images, unlabelled=args.unlabelled,
                                overlap=args.overlap, classes=args.classes, overwrite=args.overwrite)
    elif args.format == "coco":
        if len(args.inputs) != 1:
            raise SeglabError(f"convert coco: expected one annotations JSON, got {len(args.inputs)} inputs")
        s = convert_coco(Path(args.inputs[0]), Path(args.out), overlap=args.overlap, classes=args.classes,
                         overwrite=args.overwrite)
    else:
        s = convert_labelme([Path(p) for p in args.inputs], Path(args.out), overlap=args.overlap, classes=args.classes,
                            overwrite=args.overwrite)
    print("\n".join(conversion_lines(s)))


def _check_config_early(args: argparse.Namespace) -> str:
    """A bad config fails here, in a fraction of a second, before torch is imported (and under torchrun
    before any process group forms: every rank finds the same fault, rank 0 alone says it). Returns the
    config's train.device; the parsed config is kept on `args.parsed_config`, so the command parses it once."""
    import os

    from .config import load_config

    try:
        path = args.config
        if path is None:  # train --resume RUN: its config.yaml
            from pathlib import Path

            from .artifacts.run_dir import RunDir

            path = RunDir(Path(args.resume)).require_run().config
        cfg = load_config(path, args.overrides + (_budget_overrides(args) if args.command == "train" else []))
        if args.command == "train":
            cfg.train.check_processes(int(os.environ.get("WORLD_SIZE", "0")) or args.nproc_per_node or 1)
        args.parsed_config = cfg
        return cfg.train.device
    except SeglabError as exc:
        exc.same_on_every_rank = True  # type: ignore[attr-defined]
        raise


def _cmd_train(args: argparse.Namespace) -> int:
    from . import api
    from .rank import is_main_process

    if args.config is None and args.resume is None:
        raise SeglabError("train: give a CONFIG file or --resume RUN_DIR")
    if args.config is not None and args.resume is not None:
        raise SeglabError("train: give either a CONFIG file or --resume RUN_DIR, not both")
    parsed = getattr(args, "parsed_config", None)  # read and checked once, before torch was imported
    r = api.train(parsed if parsed is not None else args.config, overrides=args.overrides + _budget_overrides(args),
                  resume=args.resume, overwrite=args.overwrite)
    if is_main_process():
        print(f"run folder: {r.path}\nreport: {r.report}")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from . import api

    api.evaluate(args.target, split=args.split, overrides=args.overrides + _inference_overrides(args), out=args.out,
                 engine=args.engine)
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from . import api

    files = api.predict(args.checkpoint, args.inputs, args.out, device=args.device, engine=args.engine,
                        overrides=args.overrides + _inference_overrides(args), workers=args.workers,
                        save_probabilities=args.save_probabilities, threshold=args.threshold)
    print(f"wrote {len(files)} files to {args.out}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from . import api

    out = api.export(args.checkpoint, fmt=args.fmt, out=args.out, size=args.size, int8=args.int8,
                     calibration_images=args.calibration_images, calibration=args.calibration,
                     fp32_first=args.fp32_first, overwrite=args.overwrite, push_to_hub=args.push_to_hub)
    print(f"wrote {out}")
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    print(f"inspecting {args.config}: decoding every image and mask", flush=True)  # before torch's import
    from . import api
    from .reporting.console import inspect_lines

    summary = api.inspect(args.config, overrides=args.overrides, out=args.out)
    print("\n".join(inspect_lines(summary)))
    return 1 if summary["problems"] else 0


def _cmd_init(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .durations import parse_duration
    from .workflows.init_config import init_config

    try:
        parse_duration(args.budget)  # a bad budget stops before the folder is read
    except ValueError as exc:
        raise SeglabError(f"--budget: {exc}") from None
    out, det = init_config(Path(args.data_dir), Path(args.out) if args.out else None, masks=args.masks,
                           palette=Path(args.palette) if args.palette else None, budget=args.budget,
                           overwrite=args.overwrite)
    from .reporting.console import detection_lines

    print("\n".join(detection_lines(out, det)))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from . import api

    r = api.demo(out_dir=args.out_dir, overrides=args.overrides, overwrite=args.overwrite)
    print(f"demo done\nreport: {r.report}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from . import api
    from .artifacts.run_dir import RunDir

    runs = [RunDir(d).require_run() for d in args.run_dir]
    if len(runs) == 1 and args.out is None:
        print(api.finish_report(runs[0]))
        return 0
    from .workflows.experiments import compare_runs

    names = [r.path.name for r in runs]
    if len(set(names)) != len(names):  # same folder names in different places
        names = [str(r.path) for r in runs]
    print(compare_runs(dict(zip(names, runs)), args.out or "runs/comparison", split=args.split, num_images=args.images))
    return 0


def _cmd_tune(args: argparse.Namespace) -> int:
    from .workflows.tuning import tune

    if args.trials < 1:
        raise SeglabError(f"--trials: expected 1 or more, got {args.trials}")
    res = tune(args.config, trials=args.trials, overrides=args.overrides, storage=args.storage,
               study_name=args.study, timeout=args.timeout)
    print(f"best {res['best_value']:.4f} with {res['best_params']}\nbest config: {res['best_config']}")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from .rank import is_main_process
    from .workflows.experiments import compare

    page = compare(args.configs, out=args.out, overrides=args.overrides + _budget_overrides(args), num_images=args.images)
    if is_main_process():
        print(page)
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    """The models with their size, encoders and `model.*` options; the losses with their `loss.*` options.
    With --encoders PATTERN: the timm encoders whose names match."""
    from .reporting.console import model_listing, timm_encoder_lines

    if args.encoders:
        from .models.timm_encoder import list_timm_encoders

        names = list_timm_encoders(args.encoders)
        if not names:
            raise SeglabError(f"--encoders: no timm model matches {args.encoders!r}; "
                              f"try a wider pattern such as '*{args.encoders.strip('*')}*'")
        print("\n".join(timm_encoder_lines(names)))
        return 0
    for line in model_listing():
        print(line, flush=True)  # the header before torch's import
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    _convert(args)
    return 0


COMMANDS = {"train": _cmd_train, "eval": _cmd_eval, "predict": _cmd_predict, "export": _cmd_export,
            "inspect": _cmd_inspect, "demo": _cmd_demo, "report": _cmd_report, "tune": _cmd_tune,
            "compare": _cmd_compare, "models": _cmd_models, "convert": _cmd_convert,
            "init": _cmd_init}


def run(args: argparse.Namespace, argv: Sequence[str] = ()) -> int:
    """Carry out one parsed command (`argv`: its arguments, for --nproc-per-node); its exit status."""
    import os

    device = "auto"  # compare: each config's own (a GPU count is checked for auto and cuda alike)
    if args.command in ("train", "inspect", "tune") and (getattr(args, "config", None) or getattr(args, "resume", None)):
        device = _check_config_early(args)
    if getattr(args, "nproc_per_node", None) and "WORLD_SIZE" not in os.environ:  # not yet one of the N
        from .engine.distributed import launch_standalone

        return launch_standalone(args.nproc_per_node, list(argv), device)
    return COMMANDS[args.command](args)


def _attach_dash_values(argv: list[str]) -> list[str]:
    """`--budget -5m` -> `--budget=-5m`: argparse would take '-5m' for an option and say "expected one
    argument"; attached, the value reaches the duration check, which says what is wrong with it."""
    out: list[str] = []
    rest = iter(argv)
    for a in rest:
        if a == "--budget":
            value = next(rest, None)
            if value is None or not value.startswith("-") or value.startswith("--"):
                out += [a] + ([value] if value is not None else [])
                continue
            a = f"--budget={value}"
        out.append(a)
    return out


class Terminated(KeyboardInterrupt):
    """SIGTERM (what `kill` and job schedulers send), raised where Ctrl-C raises KeyboardInterrupt, so that a
    terminated command ends like an interrupted one: temporaries removed, locks released, one line."""


def _terminate(signum: int, frame: Any) -> None:
    raise Terminated()


def _tell_torchrun(line: str) -> None:
    """Under torchrun, this process's one-line error as its root cause (torchelastic's error-file format): the
    launcher's failure report, which follows with a traceback of its own that no worker can silence, then names
    seglab's line instead of "To enable traceback see: ..."."""
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not path:
        return
    import json
    import time
    from pathlib import Path

    from .fileio import atomic_write_text

    record = {"message": line, "extraInfo": {"py_callstack": line, "timestamp": str(int(time.time()))}}
    try:
        atomic_write_text(Path(path), json.dumps({"message": record}))
    except OSError:  # the launcher's folder is gone: its report says less, the line above was printed
        pass


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The `seglab` command: parse `argv`, run the command; 0, or 2 after a one-line error (traceback with --debug)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(_attach_dash_values(argv))
    on_term = signal.signal(signal.SIGTERM, _terminate) if threading.current_thread() is threading.main_thread() else None
    from .rank import is_main_process
    logger = logging.getLogger("seglab")
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(logging.Formatter("%(message)s"))
    # lines logged with extra={"console": False} (a budget's re-plans) go to train.log only
    console.addFilter(lambda record: getattr(record, "console", True))
    logger.addHandler(console)
    # torchrun: the other ranks print only warnings and errors, so the console reads like one process
    logger.setLevel(logging.INFO if is_main_process() else logging.WARNING)
    logger.propagate = False
    try:
        return run(args, argv)
    except KeyboardInterrupt as exc:
        term = isinstance(exc, Terminated)
        if is_main_process():  # torchrun stops the other ranks with SIGTERM when one fails: one line, not N
            print(f"interrupted{' (SIGTERM)' if term else ''}", file=sys.stderr)
        return 143 if term else 130
    except BrokenPipeError:  # `seglab models | head`: the reader left; say nothing, as a Unix tool does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's own flush at exit stays quiet
        return 141
    except SeglabError as exc:
        if args.debug:
            raise
        if is_main_process() or not getattr(exc, "same_on_every_rank", False):
            print(f"error: {_one_line(exc)}", file=sys.stderr)
        _tell_torchrun(f"seglab: {_one_line(exc)}")
        return 2
    except Exception as exc:  # unexpected: still one line unless --debug
        if args.debug:
            raise
        line = f"{type(exc).__name__}: {_one_line(exc)} (rerun with --debug for the traceback)"
        print(f"error: {line}", file=sys.stderr)
        _tell_torchrun(f"seglab: {line}")
        return 1
    finally:
        logger.removeHandler(console)
        if on_term is not None:
            signal.signal(signal.SIGTERM, on_term)


if __name__ == "__main__":
    sys.exit(main())
