"""What each shipped recipe costs on this machine: training speed, validation time, what its time budget buys.

For every config, the same measurement `seglab train` prints before epoch 1 (a few real training steps with
data loading, plus a validation of a few images scaled to the split), then: the epochs its
train.time_budget buys (the plan `seglab train` would make), the time the fixed train.epochs would take,
and the time of the final evaluation on the config's eval split. Run it on a quiet machine:

    python benchmarks/recipe_costs.py configs/camvid_*.yaml configs/weizmann_horse_*.yaml

Writes the table into docs/benchmarks.md (between <!-- recipe_costs:begin/end -->) and, with
--update-configs, rewrites the line starting with '# Measured on' in each config with its numbers, and in
its full-length sibling configs/full/NAME.yaml (the same recipe without the time budget: checked).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _docs import cpu_name, replace_block  # noqa: E402

from seglab.config import load_config  # noqa: E402
from seglab.data.datasets import build_data  # noqa: E402
from seglab.durations import format_duration, parse_duration  # noqa: E402
from seglab.engine.budget import BudgetPlan  # noqa: E402
from seglab.engine.trainer import estimate_training  # noqa: E402

MARK = "# Measured on"


def measure(path: str, budget: float) -> dict:
    cfg = load_config(path)
    loaders = build_data(cfg.data, cfg.augment).readers  # file lists only: nothing is decoded
    split = cfg.eval.split if cfg.eval.split in loaders else "val"
    n_val, n_eval = len(loaders["val"]), len(loaders[split])
    est = estimate_training(cfg)
    plan = BudgetPlan.create(budget, 0.0, est, cfg.train.val_every)
    return {"config": path, "model": cfg.model.name, "train_images_per_s": est.train_images_per_s,
            "val_seconds": est.val_seconds, "steps_per_epoch": est.steps_per_epoch,
            "budget_seconds": budget, "budget_epochs": plan.end_step / est.steps_per_epoch,
            "epochs": cfg.train.epochs, "full_seconds": est.seconds_for(cfg.train.epochs, cfg.train.val_every),
            "eval_split": split, "eval_seconds": est.val_seconds * n_eval / max(n_val, 1)}


def comment_line(r: dict, hardware: str) -> str:
    return (f"{MARK} {hardware}: {r['train_images_per_s']:.1f} train img/s, so {format_duration(r['budget_seconds'])} "
            f"buys about {r['budget_epochs']:.0f} epochs; {r['epochs']} epochs would take about "
            f"{format_duration(r['full_seconds'])}; {r['eval_split']} evaluation about {format_duration(r['eval_seconds'])}.")


def update_config(path: str, line: str) -> bool:
    lines = Path(path).read_text().splitlines(keepends=True)
    hits = [i for i, s in enumerate(lines) if s.startswith(MARK)]
    if not hits:
        return False
    lines[hits[0]] = line + "\n"
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.writelines(lines)
    os.replace(tmp, path)
    return True


def same_recipe(a: str, b: str) -> bool:
    """Whether two configs differ only in train.time_budget and output.name."""
    ca, cb = (load_config(p).to_dict() for p in (a, b))
    for c in (ca, cb):
        c["train"].pop("time_budget")
        c["output"].pop("name")
    return ca == cb


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("configs", nargs="+")
    ap.add_argument("--budget", default="1h", help="the budget to plan for when a config has none")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--update-configs", action="store_true")
    ap.add_argument("--json", help="also write the measurements here")
    ap.add_argument("--out", default=str(ROOT / "docs/benchmarks.md"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.chdir(ROOT)  # configs name their data relative to the project root
    hardware = f"{cpu_name()}, {args.threads} threads"
    rows = []
    for path in args.configs:
        path = os.path.relpath(Path(path).resolve(), ROOT)
        budget = load_config(path).train.time_budget
        r = measure(path, parse_duration(budget) if budget is not None else parse_duration(args.budget))
        rows.append(r)
        line = comment_line(r, hardware)
        print(path, line, flush=True)
        if args.update_configs:
            full = Path(path).parent / "full" / Path(path).name
            for target in [path] + ([str(full)] if full.exists() else []):
                if target != path and not same_recipe(path, target):
                    print(f"  {target}: not the same recipe as {path} (beyond the time budget): left as it is")
                elif not update_config(target, line):
                    print(f"  {target}: no line starting with '{MARK}': left as it is", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    head = ("| config | train img/s | validation | epochs in its budget | its `train.epochs` would take | "
            "final evaluation |\n|---|---|---|---|---|---|\n")
    body = "".join(f"| `{r['config']}` | {r['train_images_per_s']:.1f} | {format_duration(r['val_seconds'])} | "
                   f"{r['budget_epochs']:.1f} in {format_duration(r['budget_seconds'])} | "
                   f"{format_duration(r['full_seconds'])} for {r['epochs']} | "
                   f"{format_duration(r['eval_seconds'])} ({r['eval_split']}) |\n" for r in rows)
    commit = os.popen(f"git -C {ROOT} rev-parse --short HEAD").read().strip()
    block = ("<!-- recipe_costs:begin -->\n"
             f"Measured {time.strftime('%Y-%m-%d')} on {hardware}, torch {torch.__version__}, commit {commit}, by "
             "`python benchmarks/recipe_costs.py " + " ".join(sys.argv[1:]) + "` (the measurement `seglab train` "
             "prints before epoch 1; estimates, not full runs):\n\n" + head + body + "<!-- recipe_costs:end -->")
    replace_block(args.out, "<!-- recipe_costs:begin -->", "<!-- recipe_costs:end -->", block, "Benchmarks")


if __name__ == "__main__":
    main()
