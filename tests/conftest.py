from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

TINY = {
    "seed": 0,
    "data": {"kind": "synthetic", "synthetic": {"num_train": 24, "num_val": 8, "num_test": 8, "size": [32, 40],
                                                "num_classes": 3, "seed": 0}},
    "augment": {"hflip": 0.5, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
    "model": {"name": "unet", "base_channels": 4, "depth": 2},
    "loss": {"name": "ce_dice"},
    "optimizer": {"name": "adam", "lr": 0.01},
    "schedule": {"name": "cosine", "warmup_epochs": 0.5},
    # fp32 on purpose (not `auto`): several tests compare two runs to float rounding
    "train": {"epochs": 2, "batch_size": 8, "num_workers": 0, "channels_last": False, "amp": "none"},
    "eval": {"batch_size": 8, "num_samples": 2},
    "output": {"dir": "runs", "name": "tiny"},
}


@pytest.fixture
def tiny_raw(tmp_path) -> dict:
    raw = copy.deepcopy(TINY)
    raw["output"]["dir"] = str(tmp_path / "runs")
    return raw


def save_png(path: Path, arr: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, mode=mode).save(path) if mode else Image.fromarray(arr).save(path)
    return path


def make_folder_dataset(root: Path, n: int = 6, size=(20, 24), num_classes: int = 3, mask_suffix: str = "",
                        image_ext: str = ".png") -> Path:
    """images/NAME.ext + masks/NAME<suffix>.png with index masks 0..num_classes-1."""
    rng = np.random.default_rng(0)
    for i in range(n):
        h, w = size
        mask = np.zeros((h, w), np.uint8)
        mask[: h // 2, : w // 2] = 1 % num_classes
        mask[h // 2 :, w // 2 :] = 2 % num_classes
        img = (rng.random((h, w, 3)) * 60 + mask[..., None] * 60).astype(np.uint8)
        save_png(root / "masks" / f"img{i:02d}{mask_suffix}.png", mask)
        p = root / "images" / f"img{i:02d}{image_ext}"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(p)
    return root


def folder_raw(tiny_raw: dict, root: Path, **data) -> dict:
    raw = copy.deepcopy(tiny_raw)
    raw["data"] = {"kind": "folder", "root": str(root), "train": {"images": "images", "masks": "masks"},
                   "random_split": {"val": 0.34, "seed": 0}, "mask_encoding": "index",
                   "class_names": ["bg", "a", "b"], **data}
    return raw


def cfg_file(tmp_path: Path, raw: dict, name: str = "cfg.yaml") -> str:
    """Write a config dict as YAML; returns its path."""
    import yaml

    p = tmp_path / name
    p.write_text(yaml.safe_dump(raw))
    return str(p)


def cli_fails(capsys, argv, pattern) -> str:
    """Run the CLI and check it refused with exit status 2 and one line 'error: ...' matching `pattern`."""
    import re

    from seglab.cli import main

    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("error: ")
    assert re.search(pattern, err), err
    return err


@pytest.fixture
def folder(tmp_path, tiny_raw):
    """A 6-image folder dataset (index masks, 3 classes) and its config dict."""
    root = make_folder_dataset(tmp_path / "data", n=6)
    return root, folder_raw(tiny_raw, root)


def data_of(cfg, **kwargs):
    """build_data of a whole config's data and augment sections (tests build many configs inline)."""
    from seglab.data.datasets import build_data

    return build_data(cfg.data, cfg.augment, **kwargs)
