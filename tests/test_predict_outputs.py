"""predict --save-probabilities and --threshold (issue 16): probabilities that agree with the masks, and a
foreground threshold for two-class models only."""
import copy

import numpy as np
import pytest
from PIL import Image

from seglab.cli import main

from conftest import TINY, cfg_file, cli_fails


@pytest.fixture(scope="module")
def binary_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("binary")
    raw = copy.deepcopy(TINY)
    raw["data"]["synthetic"].update(num_classes=2, num_train=8, num_val=4, num_test=2)
    raw["output"] = {"dir": str(d / "runs"), "name": "b"}
    raw["train"].update(epochs=1, batch_size=4, estimate_steps=0)
    assert main(["train", cfg_file(d, raw)]) == 0
    images = d / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (30, 44, 3), dtype=np.uint8)).save(images / f"im{i}.png")
    return d / "runs" / "b" / "checkpoints" / "best.pt", images


def test_probabilities_are_written_and_match_the_masks(binary_run, tmp_path):
    ckpt, images = binary_run
    assert main(["predict", str(ckpt), str(images), "--out", str(tmp_path / "o"), "--save-probabilities"]) == 0
    for i in range(2):
        prob = np.load(tmp_path / "o" / f"im{i}_prob.npy")
        mask = np.asarray(Image.open(tmp_path / "o" / f"im{i}_mask.png"))
        assert prob.dtype == np.float16 and prob.shape == (2, 30, 44)
        assert np.allclose(prob.astype(np.float32).sum(0), 1.0, atol=2e-3)
        clear = np.abs(prob[1].astype(np.float32) - prob[0]) > 2e-3  # away from float16 ties
        assert (mask[clear] == prob.argmax(0)[clear]).all()


@pytest.mark.parametrize("threshold", [0.2, 0.8])
def test_threshold_sets_the_foreground(binary_run, tmp_path, threshold):
    ckpt, images = binary_run
    out = tmp_path / "o"
    assert main(["predict", str(ckpt), str(images), "--out", str(out), "--save-probabilities",
                 "--threshold", str(threshold)]) == 0
    prob = np.load(out / "im0_prob.npy").astype(np.float32)[1]
    mask = np.asarray(Image.open(out / "im0_mask.png"))
    clear = np.abs(prob - threshold) > 2e-3
    assert (mask[clear] == (prob[clear] >= threshold)).all()


def test_threshold_is_refused_for_many_classes_or_outside_0_1(binary_run, capsys, tmp_path):
    ckpt, images = binary_run
    cli_fails(capsys, ["predict", str(ckpt), str(images), "--out", str(tmp_path / "o"), "--threshold", "1.5"],
              r"--threshold: a probability strictly between 0 and 1 \(got 1\.5\)")
    raw = copy.deepcopy(TINY)
    raw["output"] = {"dir": str(tmp_path / "runs"), "name": "three"}
    raw["train"].update(epochs=1, estimate_steps=0)
    raw["data"]["synthetic"].update(num_train=8, num_val=4, num_test=2)
    assert main(["train", cfg_file(tmp_path, raw)]) == 0
    cli_fails(capsys, ["predict", str(tmp_path / "runs" / "three" / "checkpoints" / "best.pt"), str(images), "--out",
                       str(tmp_path / "o"), "--threshold", "0.5"],
              r"--threshold: for two-class \(binary\) models; this one has 3 classes")


def test_a_second_predict_into_its_input_folder_skips_its_own_outputs(binary_run, tmp_path, capsys):
    """issue 24 item 4: predict never reads what it wrote (by name beside the image, and by the folder's list)."""
    import shutil

    ckpt, images = binary_run
    work = tmp_path / "w"
    shutil.copytree(images, work)
    assert main(["predict", str(ckpt), str(work), "--out", str(work)]) == 0
    first = sorted(p.name for p in work.iterdir())
    capsys.readouterr()
    assert main(["predict", str(ckpt), str(work), "--out", str(work)]) == 0
    assert "skipped 6 files that an earlier seglab predict wrote" in capsys.readouterr().out
    assert sorted(p.name for p in work.iterdir()) == first  # no im0_color_color.png
    assert set((work / ".seglab-predict").read_text().split()) == {f"im{i}_{k}.png" for i in range(2)
                                                                   for k in ("mask", "color", "overlay")}
    # an output renamed away from the pattern is still known by the list
    (work / "im0_color.png").rename(work / "renamed.png")
    listed = (work / ".seglab-predict").read_text().replace("im0_color.png", "renamed.png")
    (work / ".seglab-predict").write_text(listed)
    assert main(["predict", str(ckpt), str(work), "--out", str(tmp_path / "o2")]) == 0
    assert sorted(p.name for p in (tmp_path / "o2").iterdir() if p.suffix == ".png") == sorted(
        f"im{i}_{k}.png" for i in range(2) for k in ("mask", "color", "overlay"))


def test_a_predict_cleans_the_temporaries_a_killed_predict_left_and_nothing_else(binary_run, tmp_path, capsys):
    """kill -9 during a PNG write leaves `.NAME_overlay.png.XXXXXXXX.tmp` (and the lock file, not in force):
    the next predict into the folder removes them; a user's own dot-files stay."""
    ckpt, images = binary_run
    out = tmp_path / "o"
    out.mkdir()
    left = [out / ".im0_overlay.png.k3j_9a2Q.tmp", out / ".im1_mask.png.abcdefgh.tmp", out / ".im0_prob.npy.12345678.tmp"]
    mine = [out / ".notes.txt.abcdefgh.tmp", out / ".my_overlay.png.tmp"]
    for p in left + mine:
        p.write_bytes(b"")
    lock = tmp_path / ".o.lock"
    lock.write_text("seglab process 1 on a machine")  # a lock whose process died: not in force
    assert main(["predict", str(ckpt), str(images), "--out", str(out)]) == 0
    assert not any(p.exists() for p in left) and all(p.exists() for p in mine)
    assert not lock.exists()
    assert "removed 3 temporary files that an interrupted predict left" in capsys.readouterr().out


def test_two_predicts_into_one_folder_refuse_the_second(binary_run, tmp_path, capsys):
    from seglab.artifacts.run_dir import RunDir, RunLock

    ckpt, images = binary_run
    out = tmp_path / "o"
    with RunLock(RunDir(out), "predict output folder"):  # another predict holds it (same process: re-entrant)
        import subprocess
        import sys

        proc = subprocess.run([sys.executable, "-m", "seglab", "predict", str(ckpt), str(images), "--out", str(out)],
                              capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith(f"error: {out}: predict output folder is in use by seglab process")


@pytest.mark.parametrize("size", [(1, 1), (1, 2000), (3, 5)])
def test_an_image_smaller_than_the_model_takes_is_named_in_one_line(binary_run, tmp_path, capsys, size):
    """Issue 24 item 8: a checkpoint trained at native size (the U-Net of depth 2 pools twice) on a 1 px, a
    1 x 2000 px or a 3 x 5 px image: one line naming the file and the smallest input, not PyTorch's error;
    4 x 4 predicts."""
    ckpt, _ = binary_run
    img = tmp_path / "tiny.png"
    Image.fromarray(np.zeros((*size, 3), np.uint8)).save(img)
    cli_fails(capsys, ["predict", str(ckpt), str(img), "--out", str(tmp_path / "o")],
              rf"{img}: {size[0]}x{size[1]} pixels is too small for this model \(the smallest square input it takes "
              r"is 4 pixels a side\); resize or pad the image, or leave it out$")
    # the Python API says the same (issue 42 item 15: it raised PyTorch's RuntimeError), and refuses an empty array
    import seglab
    from seglab.errors import DataError

    model = seglab.load_model(ckpt)
    with pytest.raises(DataError, match=rf"^the image: {size[0]}x{size[1]} pixels is too small for this model"):
        model.predict(np.zeros((*size, 3), np.uint8))
    with pytest.raises(DataError, match=r"^the image: 0x5 pixels, an empty image"):
        model.predict(np.zeros((0, 5, 3), np.uint8))
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(img)
    assert main(["predict", str(ckpt), str(img), "--out", str(tmp_path / "o")]) == 0
    assert np.asarray(Image.open(tmp_path / "o" / "tiny_mask.png")).shape == (4, 4)


def test_load_model_predicts_in_python_exactly_as_seglab_predict(binary_run, tmp_path):
    """Issue 27 item 1: seglab.load_model(...).predict gives `seglab predict`'s masks, for a path, a numpy
    array, a PIL image and a list; probabilities are (K, H, W) float32; an ONNX export loads the same way."""
    import seglab

    ckpt, images = binary_run
    assert main(["predict", str(ckpt), str(images), "--out", str(tmp_path / "cli"), "--set", "eval.tta_flip=true"]) == 0
    model = seglab.load_model(ckpt, overrides=["eval.tta_flip=true"])
    assert model.device == "cpu" and len(model.class_names) == 2
    files = sorted(images.glob("*.png"))
    for f in files:
        written = np.asarray(Image.open(tmp_path / "cli" / f"{f.stem}_mask.png"))
        arr = np.asarray(Image.open(f))
        for given in (f, str(f), arr, Image.open(f)):
            got = model.predict(given)
            assert got.dtype == np.uint8 and np.array_equal(got, written), type(given)
    batch = model.predict(files)
    assert isinstance(batch, list) and len(batch) == 2
    probs = model.probabilities(files[0])
    assert probs.dtype == np.float32 and probs.shape == (2, 30, 44) and np.allclose(probs.sum(0), 1, atol=1e-5)
    assert np.array_equal(probs.argmax(0), model.predict(files[0]))
    onnx = seglab.export(ckpt, out=tmp_path / "m.onnx")
    exported = seglab.load_model(onnx)
    assert exported.predict(files[0]).shape == (30, 44)
    with pytest.raises(Exception, match="expected a numpy array, a PIL image or a path"):
        model.predict(42)


def _checkpoint_for(path, in_channels, image_max):
    """A seglab checkpoint of a small random U-Net taking `in_channels` bands, trained (as it says) with
    data.image_max `image_max`: random weights see any change of input scale."""
    import torch

    from seglab.artifacts.checkpoint import save_checkpoint
    from seglab.artifacts.model_info import ModelInfo
    from seglab.data.synthetic import synthetic_labels
    from seglab.models import create_model

    torch.manual_seed(in_channels)
    model = create_model("unet", in_channels=in_channels, num_classes=2, base_channels=4, depth=2).eval()
    info = ModelInfo(name="unet", options={"base_channels": 4, "depth": 2}, in_channels=in_channels, num_classes=2,
                     labels=synthetic_labels(2), mean=(0.4,) * in_channels, std=(0.2,) * in_channels,
                     image_max=image_max)
    save_checkpoint(path, {"model_state": model.state_dict(), "config": {}, **info.to_dict()})
    return path


@pytest.mark.parametrize("kind, bands, image_max", [
    ("uint8 png", 3, None), ("uint16 png", 1, None), ("uint16 tif", 3, 4095.0), ("int16 tif", 5, 3000.0),
    ("float32 tif", 3, None), ("float32 tif", 4, 10.0), ("uint16 tif", 12, None),
])
def test_an_array_predicts_as_its_file_does(tmp_path, kind, bands, image_max):
    """Issue 42 items 2, 9: load_model(...).predict(array) equals `seglab predict` on the file the array came
    from, for every kind of image the folder reader takes (the checkpoint's image_max scales both)."""
    import cv2
    import tifffile

    import seglab

    rng = np.random.default_rng(bands)
    dtype, ext = kind.split()
    top = {"uint8": 255, "uint16": image_max or 65535, "int16": image_max or 3000, "float32": image_max or 1.0}[dtype]
    low = -500 if dtype == "int16" else 0
    arr = rng.uniform(low, top, (24, 32, bands)).astype(dtype)
    arr = arr[..., 0] if bands == 1 else arr
    f = tmp_path / "in" / f"tile.{ext}"
    f.parent.mkdir()
    if ext == "png":
        cv2.imwrite(str(f), arr if arr.ndim == 2 else arr[..., ::-1])
    else:
        tifffile.imwrite(f, arr, photometric="minisblack" if bands != 3 else "rgb", planarconfig="contig")
    ckpt = _checkpoint_for(tmp_path / "m.pt", bands, image_max)
    assert main(["predict", str(ckpt), str(f.parent), "--out", str(tmp_path / "cli"), "--save-probabilities"]) == 0
    written = np.asarray(Image.open(tmp_path / "cli" / "tile_mask.png"))
    model = seglab.load_model(ckpt)
    read = tifffile.imread(f) if ext == "tif" else cv2.imread(str(f), cv2.IMREAD_UNCHANGED)
    read = read if read.ndim == 2 else read[..., ::-1] if ext == "png" else read
    assert read.dtype == arr.dtype
    assert np.array_equal(model.predict(read), written)
    # the probabilities too, where any error of scale shows even when the classes come out the same
    assert np.allclose(model.probabilities(read), np.load(tmp_path / "cli" / "tile_prob.npy").astype(np.float32),
                       atol=2e-3)


@pytest.mark.parametrize("arr, pattern", [
    (np.full((8, 8, 3), 200.0), r"float64 array holds values up to 200; seglab reads float images as 0\.\.1"),
    (np.full((8, 8, 3), 200, np.int64), r"int64 array holds 0\.\.200, 8-bit values, .* pass arr\.astype\(np\.uint8\)"),
    (np.full((8, 8, 3), np.nan, np.float32), r"the array: 192 of 192 values are NaN or infinite"),
    (np.ones((8, 8, 3), bool), r"the array's dtype is bool"),
])
def test_an_array_no_file_could_give_is_refused_in_one_line(tmp_path, arr, pattern):
    import seglab
    from seglab.errors import DataError

    model = seglab.load_model(_checkpoint_for(tmp_path / "m.pt", 3, None))
    with pytest.raises(DataError, match=pattern):
        model.predict(arr)
