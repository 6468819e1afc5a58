"""Write a multi-label version of CamVid (overlapping classes) for `configs/camvid_multilabel.yaml`.

CamVid's 11 classes are grouped into four overlapping ones, as a road-scene user would ask for them:
road_user = Car + Pedestrian + Bicyclist, vehicle = Car + Bicyclist, person = Pedestrian + Bicyclist,
ground = Road + Sidewalk. A Bicyclist pixel is all of road_user, vehicle and person; a Car pixel road_user
and vehicle. Each class gets a folder of 0/255 masks (mask_encoding: class_folders) and Void becomes a
"don't care" region mask (regions:, region_marks: ignore), so Void pixels are not scored.

    python benchmarks/camvid_multilabel.py --camvid ../shared/data/camvid --out runs/data/camvid_multilabel

Images are linked (symlinks), not copied; masks are written once (about 30 s on 2 cores).
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
from PIL import Image

GROUPS = {"road_user": ["Car", "Pedestrian", "Bicyclist"], "vehicle": ["Car", "Bicyclist"],
          "person": ["Pedestrian", "Bicyclist"], "ground": ["Road", "Sidewalk"]}
SPLITS = {"train": "trainannot", "val": "valannot", "test": "testannot"}


def class_ids(camvid: Path) -> dict[str, int]:
    """CamVid class name -> index in its index masks (the line order of label_colors.txt)."""
    names = [" ".join(line.split()[3:]) for line in (camvid / "label_colors.txt").read_text().splitlines() if line.strip()]
    return {n: i for i, n in enumerate(names)}


def convert(camvid: Path, out: Path) -> int:
    ids = class_ids(camvid)
    missing = [n for names in GROUPS.values() for n in names if n not in ids] + ([] if "Void" in ids else ["Void"])
    if missing:
        raise SystemExit(f"{camvid / 'label_colors.txt'}: no class {missing[0]!r}; is this CamVid-11?")
    written = 0
    for split, annot in SPLITS.items():
        (out / split / "images").mkdir(parents=True, exist_ok=True)
        for folder in [Path("masks") / g for g in GROUPS] + [Path("void")]:
            (out / split / folder).mkdir(parents=True, exist_ok=True)
        for mask_path in sorted((camvid / annot).glob("*.png")):
            image = camvid / split / mask_path.name
            if not image.is_file():
                raise SystemExit(f"{image}: no image for mask {mask_path}")
            link = out / split / "images" / mask_path.name
            if not link.exists():
                os.symlink(image.resolve(), link)
            m = np.asarray(Image.open(mask_path))
            for group, names in GROUPS.items():
                fg = np.isin(m, [ids[n] for n in names])
                Image.fromarray(fg.astype(np.uint8) * 255).save(out / split / "masks" / group / mask_path.name)
            Image.fromarray((m == ids["Void"]).astype(np.uint8) * 255).save(out / split / "void" / mask_path.name)
            written += 1
    return written


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--camvid", type=Path, default=Path("../shared/data/camvid"))
    ap.add_argument("--out", type=Path, default=Path("runs/data/camvid_multilabel"))
    args = ap.parse_args()
    n = convert(args.camvid, args.out)
    print(f"wrote {n} images' masks ({', '.join(GROUPS)}; Void as regions) to {args.out}")


if __name__ == "__main__":
    main()
