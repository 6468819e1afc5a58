"""Start-up of the commands a user runs first: seconds to the first printed line and to the end, for
`seglab models`, `seglab inspect` (Weizmann Horse) and `seglab convert coco` (3 images), in fresh processes.

    python benchmarks/startup.py --repeats 5 [--other-src PATH/src --label-other before] [--write docs/benchmarks.md]

With --other-src the same commands also run from another checkout's sources (e.g. a worktree of an older
commit), alternating with this one, so both see the same machine load.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "src"))


def _coco(folder: Path) -> Path:
    images = [{"id": i, "file_name": f"img{i}.jpg", "height": 120, "width": 160} for i in range(3)]
    anns = [{"id": i, "image_id": i, "category_id": 1, "iscrowd": 0,
             "segmentation": [[10, 10, 100, 10, 100, 90, 10, 90]]} for i in range(3)]
    p = folder / "instances.json"
    p.write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "box"}]}))
    return p


def _time(argv: list[str], src: Path) -> tuple[float, float]:
    """(seconds to the first line on stdout, seconds to exit) of `python -m seglab ARGV`."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "seglab", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, env=env, cwd=ROOT, text=True)
    assert proc.stdout is not None
    first_line = proc.stdout.readline()
    first = time.perf_counter() - t0
    proc.stdout.read()
    if proc.wait() != 0 or not first_line:
        raise SystemExit(f"seglab {' '.join(argv)} failed (from {src})")
    return first, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--other-src", type=Path)
    ap.add_argument("--label-other", default="before")
    ap.add_argument("--write", help="markdown file whose startup block is replaced")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    coco = _coco(tmp)
    commands = {
        "seglab models": ["models"],
        "seglab inspect (Weizmann Horse, 328 pairs)": ["inspect", "configs/weizmann_horse_unet.yaml", "--out",
                                                       str(tmp / "insp")],
        "seglab convert coco (3 images)": ["convert", "coco", str(coco), "--out", str(tmp / "conv")],
    }
    sources = {"now": ROOT / "src"}
    if args.other_src:
        sources[args.label_other] = args.other_src.resolve()
    times: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for _ in range(args.repeats):
        for name, argv in commands.items():
            for label, src in sources.items():  # alternating: both see the same load
                times.setdefault((name, label), []).append(_time(argv, src))
    from _docs import cpu_name, replace_block

    head = "| command | " + " | ".join(f"{lb}: first line s | {lb}: total s" for lb in sources) + " |"
    rows = [head, "|---|" + "---|---|" * len(sources)]
    for name in commands:
        cells = []
        for label in sources:
            first = statistics.median(t[0] for t in times[name, label])
            total = statistics.median(t[1] for t in times[name, label])
            cells += [f"{first:.2f}", f"{total:.2f}"]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    table = "\n".join(rows)
    print(table)
    if args.write:
        import shlex

        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True).stdout.strip()
        cmd = "python benchmarks/startup.py " + shlex.join(sys.argv[1:])
        block = (f"<!-- startup:begin -->\n## Start-up: seconds to the first line and to the end\n\n"
                 f"Measured {time.strftime('%Y-%m-%d')} at commit {commit} ('now') on {cpu_name()}, "
                 f"{os.cpu_count()} cores, an otherwise idle machine, median of "
                 f"{args.repeats} fresh processes per cell, the settings alternating. Command:\n\n    {cmd}\n\n"
                 f"{table}\n<!-- startup:end -->")
        replace_block(args.write, "<!-- startup:begin -->", "<!-- startup:end -->", block, "Benchmarks")


if __name__ == "__main__":
    main()
