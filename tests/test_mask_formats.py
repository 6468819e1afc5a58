"""Every mask format decoded pixel by pixel to the intended labels, or refused with a one-line fix (issue 13)."""
import json

import numpy as np
import pytest
from PIL import Image

from seglab.api import inspect
from seglab.cli import main
from seglab.config import config_from_dict
from seglab.data.datasets import build_data
from seglab.data.labels import LabelSpace, read_palette_file
from seglab.data.mask_formats import build_label_space
from seglab.data.mask_formats import MaskDecoder
from seglab.errors import DataError

from conftest import data_of, folder_raw, save_png

BINARY = LabelSpace(["bg", "fg"], [(0, 0, 0), (255, 255, 255)])
# the intended labels of every fixture below: a 4x6 map with a 2x3 object
TRUTH = np.zeros((4, 6), np.uint8)
TRUTH[1:3, 2:5] = 1


def _one_bit(path):
    Image.fromarray(TRUTH.astype(bool)).save(path)  # PIL mode "1"
    assert Image.open(path).mode == "1"
    return path


@pytest.mark.parametrize("encoding", ["index", "binary"])
def test_one_bit_png_is_0_and_1(tmp_path, encoding):
    f = _one_bit(tmp_path / "m.png")
    np.testing.assert_array_equal(MaskDecoder(encoding, BINARY)(f), TRUTH)


def test_binary_0_1_masks_are_read_as_they_are(tmp_path):
    f = save_png(tmp_path / "m.png", TRUTH)
    dec = MaskDecoder("binary", BINARY)
    np.testing.assert_array_equal(dec(f), TRUTH)
    assert sum(dec.changed.values()) == int(TRUTH.sum())
    # a {0,1} palette image: indices are the labels, whatever colours the palette gives them
    im = Image.fromarray(TRUTH, mode="P")
    im.putpalette([0, 0, 0, 40, 40, 40] + [0] * 762)
    im.save(tmp_path / "p.png")
    np.testing.assert_array_equal(MaskDecoder("binary", BINARY)(tmp_path / "p.png"), TRUTH)


def test_binary_16_bit(tmp_path):
    f = tmp_path / "m16.png"
    Image.fromarray(TRUTH.astype(np.uint16) * 65535).save(f)
    assert Image.open(f).mode.startswith("I")
    np.testing.assert_array_equal(MaskDecoder("binary", BINARY)(f), TRUTH)


def test_binary_values_below_the_threshold_are_refused_with_the_fix(tmp_path):
    f = save_png(tmp_path / "m.png", TRUTH * 100)
    with pytest.raises(DataError, match=r"m\.png: binary mask holds only 0 and 100, and 100 is not above "
                                        r"data\.binary_threshold 127: set data\.binary_threshold below 100"):
        MaskDecoder("binary", BINARY)(f)
    np.testing.assert_array_equal(MaskDecoder("binary", BINARY, threshold=50)(f), TRUTH)


@pytest.mark.parametrize("color", [(0, 0, 255), (255, 0, 0), (0, 200, 0), (255, 255, 255)])
def test_binary_colour_masks_any_channel_is_foreground(tmp_path, color):
    rgb = np.zeros((4, 6, 3), np.uint8)
    rgb[TRUTH == 1] = color
    f = save_png(tmp_path / "m.png", rgb)
    np.testing.assert_array_equal(MaskDecoder("binary", BINARY)(f), TRUTH)


def test_binary_invert_and_threshold(tmp_path):
    # EM membranes: the class of interest is dark (0), the cell interior 255
    f = save_png(tmp_path / "m.png", ((1 - TRUTH) * 255).astype(np.uint8))
    np.testing.assert_array_equal(MaskDecoder("binary", BINARY, invert=True)(f), TRUTH)
    soft = save_png(tmp_path / "s.png", (TRUTH * 180 + 20).astype(np.uint8))  # 20 background, 200 object
    np.testing.assert_array_equal(MaskDecoder("binary", BINARY, threshold=150)(soft), TRUTH)


PALETTE = "0 0 0\tBackground\n200 0 0\tRoad\n0 0 200\tCar\n"


def _rgb_labels(tmp_path):
    p = tmp_path / "label_colors.txt"
    p.write_text(PALETTE)
    return build_label_space(encoding="rgb", palette_file=p, class_names=None, void_class="Void", ignore_index=255)[0]


def _antialiased(tmp_path):
    """Road on the left, car on the right, with resized-edge colours between them and one far colour."""
    rgb = np.zeros((4, 6, 3), np.uint8)
    rgb[:, :3] = (200, 0, 0)
    rgb[:, 3:] = (0, 0, 200)
    rgb[0, 2] = (190, 5, 8)  # near road
    rgb[1, 3] = (6, 3, 185)  # near car
    return rgb


def test_unknown_colours_are_an_error_by_default_naming_the_option(tmp_path):
    labels = _rgb_labels(tmp_path)
    f = save_png(tmp_path / "m.png", _antialiased(tmp_path))
    with pytest.raises(DataError, match=r"m\.png: colour \(\d+, \d+, \d+\) \(1 px\) and 1 other colours is not in "
                                        r"the palette .*data\.unknown_colors to nearest or ignore"):
        MaskDecoder("rgb", labels)(f)


def test_unknown_colours_nearest_within_tolerance_and_ignore(tmp_path):
    labels = _rgb_labels(tmp_path)
    f = save_png(tmp_path / "m.png", _antialiased(tmp_path))
    want = np.zeros((4, 6), np.uint8)
    want[:, :3], want[:, 3:] = 1, 2
    dec = MaskDecoder("rgb", labels, unknown_colors="nearest", tolerance=30)
    np.testing.assert_array_equal(dec(f), want)
    assert dec.changed == {"colours outside the palette -> nearest palette colour": 2}
    ign = MaskDecoder("rgb", labels, unknown_colors="ignore")
    want[0, 2] = want[1, 3] = 255
    np.testing.assert_array_equal(ign(f), want)
    far = _antialiased(tmp_path)
    far[3, 0] = (100, 100, 100)
    f2 = save_png(tmp_path / "far.png", far)
    with pytest.raises(DataError, match=r"far\.png: colours beyond data\.color_tolerance 30 of the palette: "
                                        r"\(100, 100, 100\) \(1 px\) 173 from Background; data\.unknown_colors: ignore would "
                                        r"leave Background with no pixel in this mask; raise data\.color_tolerance past 173"):
        MaskDecoder("rgb", labels, unknown_colors="nearest", tolerance=30)(f2)


def test_palette_with_a_duplicate_class_name_is_refused(tmp_path):
    p = tmp_path / "class_dict.csv"
    p.write_text("name,r,g,b\nroad,1,2,3\nRoad,4,5,6\n")
    with pytest.raises(DataError, match=r"class_dict\.csv: class name 'Road' is listed more than once"):
        read_palette_file(p)


def _write_split(root, masks, ext=".png"):
    rng = np.random.default_rng(0)
    for i, m in enumerate(masks):
        save_png(root / "images" / f"i{i}.png", (rng.random(m.shape[:2] + (3,)) * 255).astype(np.uint8))
        save_png(root / "masks" / f"i{i}{ext}", m)
    return root


def test_index_masks_holding_0_and_255_are_refused_as_binary(tmp_path, tiny_raw, capsys):
    import yaml

    root = _write_split(tmp_path / "d", [TRUTH * 255] * 6)
    raw = folder_raw(tiny_raw, root, class_names=["bg", "fg"])
    cfg = config_from_dict(raw)
    with pytest.raises(DataError, match=r"train split: every labelled pixel of its \d masks is class 0 \('bg'\) and "
                                        r"25% are 255 \(the ignore value\): 0/255 masks are binary masks; "
                                        r"set data\.mask_encoding: binary"):
        build_data(cfg.data, cfg.augment, check=("train",))
    summary = inspect(cfg, out=tmp_path / "insp")
    assert any("set data.mask_encoding: binary" in p for p in summary["problems"])
    # inspect's exit status says whether train would accept the data
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    assert main(["inspect", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "i2")]) == 1
    assert "would make train refuse" in capsys.readouterr().out
    raw["data"]["mask_encoding"] = "binary"
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    assert main(["inspect", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "i3")]) == 0
    bundle = data_of(config_from_dict(raw), check=("train",))
    np.testing.assert_array_equal(bundle.readers["train"].load(0)[1], TRUTH)


def test_binary_split_with_no_foreground_is_refused(tmp_path, tiny_raw):
    root = _write_split(tmp_path / "d", [np.full((4, 6), 40, np.uint8)] * 6)  # nothing above the threshold
    raw = folder_raw(tiny_raw, root, mask_encoding="binary", class_names=None)
    with pytest.raises(DataError, match=r"train split: .* no foreground pixel above data\.binary_threshold 127"):
        data_of(config_from_dict(raw), check=("train",))


def test_inspect_lists_classes_without_pixels_and_fallback_pixels(tmp_path, tiny_raw):
    root = tmp_path / "d"
    (root).mkdir()
    (root / "label_colors.txt").write_text(PALETTE)
    masks = [_antialiased(tmp_path)] * 5
    _write_split(root, masks)
    raw = folder_raw(tiny_raw, root, mask_encoding="rgb", palette_file="label_colors.txt", class_names=None,
                     unknown_colors="nearest")
    summary = inspect(config_from_dict(raw), out=tmp_path / "insp")
    assert summary["problems"] == [  # issue 42 item 1: a class the model would never learn is a problem
        f"train split: class Background has no pixel in its {summary['splits']['train']['samples']} masks, so the "
        "model would never learn them; check the masks, data.class_names and the palette, or list deliberately "
        "absent classes in data.absent_classes"]
    raw["data"]["absent_classes"] = ["background"]  # deliberately absent: accepted
    summary = inspect(config_from_dict(raw), out=tmp_path / "insp")
    assert summary["problems"] == []
    train = summary["splits"]["train"]
    assert train["classes_without_pixels"] == ["Background"]
    n = summary["splits"]["train"]["samples"]
    assert train["pixels_decoded_by_rule"] == {"colours outside the palette -> nearest palette colour": 2 * n}
    assert json.loads((tmp_path / "insp" / "inspect.json").read_text())["splits"]["train"]["classes_without_pixels"]


def _fixture(encoding, tmp_path):
    """A mask file of `encoding` meaning TRUTH (for overlapping classes: TRUTH as class 0, its complement as
    class 1, TRUTH's top row of the object also as class 2), with the label space that reads it."""
    from seglab.data.multilabel import pack_masks

    if encoding in ("index", "binary"):
        return save_png(tmp_path / "m.png", TRUTH * (255 if encoding == "binary" else 1)), BINARY, TRUTH
    if encoding == "rgb":
        labels = LabelSpace(["sky", "road"], [(128, 128, 128), (128, 64, 128)])
        return save_png(tmp_path / "m.png", np.asarray(labels.palette, np.uint8)[TRUTH]), labels, TRUTH
    third = np.zeros_like(TRUTH, bool)
    third[1, 2:5] = True
    masks = np.stack([TRUTH.astype(bool), ~TRUTH.astype(bool), third])
    labels = build_label_space(encoding=encoding, palette_file=None, class_names=["a", "b", "c"], void_class=None,
                               ignore_index=255)[0]
    if encoding == "channels":  # 16-bit RGB: OpenCV reads it, in the file's R, G, B order
        import cv2

        cv2.imwrite(str(tmp_path / "m.png"), (masks.transpose(1, 2, 0)[..., ::-1] * 65535).astype(np.uint16))
        return tmp_path / "m.png", labels, pack_masks(masks)
    for name, m in zip(labels.names, masks):
        (tmp_path / name).mkdir()
        save_png(tmp_path / name / "m.png", m.astype(np.uint8) * 255)
    return tmp_path / "b" / "m.png", labels, pack_masks(masks)


def test_every_mask_encoding_decodes_a_fixture_pixel_by_pixel(tmp_path):
    import typing

    from seglab.config import DataConfig

    from seglab.config.data import MULTILABEL_ENCODINGS
    from seglab.data.mask_formats import MASK_FORMATS, list_mask_formats

    encodings = typing.get_args(DataConfig.model_fields["mask_encoding"].annotation)
    # the config's choices are the registered formats, and each says whether it holds overlapping classes
    assert list(encodings) == list_mask_formats()
    assert {n for n, f in MASK_FORMATS.items() if f.multilabel} == set(MULTILABEL_ENCODINGS)
    assert set(encodings) == {"index", "binary", "rgb", "channels", "class_folders"}  # a new one needs a fixture
    for encoding in encodings:
        where = tmp_path / encoding
        where.mkdir()
        path, labels, truth = _fixture(encoding, where)
        np.testing.assert_array_equal(MaskDecoder(encoding, labels)(path), truth, err_msg=encoding)


def test_an_unknown_mask_format_is_one_line_listing_the_registered_ones():
    from seglab.data.mask_formats import get_mask_format
    from seglab.errors import DataError

    with pytest.raises(DataError, match=r"unknown mask format 'jpeg'; available: index, binary, rgb, channels"):
        get_mask_format("jpeg")


def _drifted_vessels(root, n=6):
    """Retinal-style JPEG colour masks: background black, artery red, vein blue, both object colours drifted
    58 from the palette (past the default tolerance 30), as lossy compression leaves them."""
    (root).mkdir(parents=True)
    (root / "label_colors.txt").write_text("0 0 0\tbackground\n255 0 0\tartery\n0 0 255\tvein\n")
    masks = []
    for i in range(n):
        m = np.zeros((8, 10, 3), np.uint8)
        m[1:3, 1:8] = (215, 30, 30)  # artery, 58 from (255, 0, 0)
        m[5:7, 2:9] = (30, 30, 215)  # vein, 58 from (0, 0, 255)
        masks.append(m)
    return _write_split(root, masks)


def test_an_ignore_rule_that_empties_classes_is_a_problem_not_a_quiet_success(tmp_path, tiny_raw, capsys):
    """Issue 42 item 1: unknown_colors: ignore on masks whose object colours drifted took every artery and vein
    pixel; inspect said "no problems found" and train trained a background-only model. Now: the decoding error
    says how far each colour is and which classes ignore would empty; inspect exits 1 naming the share and the
    classes; train refuses; nearest with a tolerance that reaches the colours decodes them exactly."""
    import yaml

    root = _drifted_vessels(tmp_path / "d")
    raw = folder_raw(tiny_raw, root, mask_encoding="rgb", palette_file="label_colors.txt", class_names=None,
                     unknown_colors="nearest")
    with pytest.raises(DataError, match=r"colours beyond data\.color_tolerance 30 of the palette: .*; "
                                        r"data\.unknown_colors: ignore would leave artery, vein with no pixel in this "
                                        r"mask; raise data\.color_tolerance past 58") as refused:
        data_of(config_from_dict(raw), check=("train",))
    assert "(215, 30, 30) (14 px) 58 from artery" in str(refused.value)
    assert "(30, 30, 215) (14 px) 58 from vein" in str(refused.value)
    raw["data"]["unknown_colors"] = "ignore"
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    assert main(["inspect", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "i")]) == 1
    out = capsys.readouterr().out
    assert "train split: colours outside the palette -> ignore took 35.0% of its pixels" in out
    assert "classes left with no pixel: artery, vein" in out
    assert main(["train", str(tmp_path / "c.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: train split: colours outside the palette -> ignore took 35.0%") and "\n" not in err
    raw["data"].update(unknown_colors="nearest", color_tolerance=70)
    bundle = data_of(config_from_dict(raw), check=("train",))
    want = np.zeros((8, 10), np.uint8)
    want[1:3, 1:8], want[5:7, 2:9] = 1, 2
    np.testing.assert_array_equal(bundle.readers["train"].load(0)[1], want)
