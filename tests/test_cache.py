"""data.cache keeps decoded samples unchanged: training with and without it is identical (issue 23 item 1)."""
import numpy as np
import pytest
import tifffile
import torch

from seglab.api import train
from seglab.artifacts.checkpoint import load_checkpoint
from seglab.config import config_from_dict
from seglab.data.datasets import EvalDataset, TrainDataset, build_data
from seglab.data.transforms import to_tensor

from conftest import folder_raw, save_png


def _tiff_dataset(root, dtype, n=6):
    rng = np.random.default_rng(0)
    for i in range(n):
        mask = np.zeros((24, 28), np.uint8)
        mask[3:15, 5:20] = 1
        img = rng.random((24, 28, 3)) * 0.4 + mask[..., None] * 0.5
        img = (img * 65535).astype(np.uint16) if dtype == "uint16" else img.astype(np.float32)
        (root / "images").mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(root / "images" / f"s{i}.tif", img, photometric="rgb")
        save_png(root / "masks" / f"s{i}.png", mask)
    return root


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_to_tensor_leaves_its_input_unchanged(dtype):
    image = (np.arange(2 * 3 * 3).reshape(2, 3, 3) * 10).astype(dtype)
    if dtype == np.float32:
        image /= 255.0
    before = image.copy()
    first = to_tensor(image, [0.5] * 3, [0.25] * 3)
    again = to_tensor(image, [0.5] * 3, [0.25] * 3)
    assert np.array_equal(image, before)
    assert torch.equal(first, again)
    assert torch.allclose(first[:, 0, 0], (torch.from_numpy(before[0, 0]).float() / (255 if dtype == np.uint8 else 1)
                                           - 0.5) / 0.25)
    to_tensor(image.copy(order="F")[:, :, :], [0.5] * 3, [0.25] * 3)  # any memory layout
    image.setflags(write=False)
    assert torch.equal(to_tensor(image, [0.5] * 3, [0.25] * 3), first)  # read-only arrays too


@pytest.mark.parametrize("dtype", ["uint16", "float32"])
def test_cached_samples_read_the_same_every_time(tmp_path, tiny_raw, dtype):
    root = _tiff_dataset(tmp_path / "d", dtype)
    raw = folder_raw(tiny_raw, root, class_names=["bg", "fg"], cache=True)
    cfg = config_from_dict(raw)
    data = build_data(cfg.data, cfg.augment)
    reader = data.readers["train"]
    image, mask = reader.load(0)
    assert not image.flags.writeable and not mask.flags.writeable  # nothing downstream can write into them
    first = [TrainDataset(reader, cfg.augment)[(0, 1)][0], EvalDataset(reader, cfg.augment)[0]["image"]]
    for _ in range(3):
        again = [TrainDataset(reader, cfg.augment)[(0, 1)][0], EvalDataset(reader, cfg.augment)[0]["image"]]
        assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert reader.load(0)[0] is image  # served from the cache


@pytest.mark.parametrize("dtype", ["uint16", "float32"])
def test_training_with_and_without_the_cache_gives_identical_weights(tmp_path, tiny_raw, dtype):
    root = _tiff_dataset(tmp_path / "d", dtype)
    states, scores = [], []
    for cache in (False, True):
        raw = folder_raw(tiny_raw, root, class_names=["bg", "fg"], cache=cache)
        raw["train"] = {**raw["train"], "epochs": 2, "batch_size": 2}
        raw["output"] = {**raw["output"], "name": f"cache_{cache}"}
        run = train(config_from_dict(raw))
        ckpt = load_checkpoint(run.last)
        states.append(ckpt["model_state"])
        import csv
        with open(run.metrics_csv) as f:  # every logged score (not the clock)
            scores.append([{k: v for k, v in row.items() if k.startswith(("val_", "train_loss", "lr"))}
                           for row in csv.DictReader(f)])
    assert states[0].keys() == states[1].keys()
    for k in states[0]:
        assert torch.equal(states[0][k], states[1][k]), k
    assert scores[0] == scores[1]
