"""`seglab convert`: COCO and LabelMe polygon annotations into mask folders, pixel by pixel (issue 13)."""
import json

import numpy as np
import pytest
from PIL import Image

from seglab.cli import main
from seglab.data.convert import polygon_mask, rle_mask
from seglab.data.mask_formats import build_label_space
from seglab.data.mask_formats import MaskDecoder
from seglab.errors import DataError
from conftest import data_of

# pycocotools 2.0 encodings of known masks (mask.encode of the arrays built below), written down once
SMALL_RLE = "5150L20N0220005NM"
BLOB_RLE = "[21c0000I2HN66HJ78HH7;00O100001O001MHH96HJ:2HN?000000000000000]1"
# pycocotools' rasterisation of the triangle (1, 1), (9, 2), (4, 7.5) in a 10x12 image
TRIANGLE = [[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], [0, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0],
            [0, 0, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0], [0, 0, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0],
            [0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 0], [0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0],
            [0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]] + [[0] * 12] * 3


def _small():
    m = np.zeros((6, 8), bool)
    m[1:4, 2:6] = True
    m[5, 0:3] = True
    m[0, 7] = True
    return m


def _blob():
    yy, xx = np.mgrid[0:20, 0:30]
    return ((xx - 12) ** 2 + (yy - 9) ** 2 < 40) | ((yy == 15) & (xx >= 3) & (xx < 27))


def test_rle_strings_and_lists_decode_to_the_known_masks():
    np.testing.assert_array_equal(rle_mask({"size": [6, 8], "counts": SMALL_RLE}, "x"), _small())
    np.testing.assert_array_equal(rle_mask({"size": [20, 30], "counts": BLOB_RLE}, "x"), _blob())
    # uncompressed: run lengths, column-major, starting with background
    flat = _small().T.ravel()
    runs, cur, n = [], False, 0
    for v in flat:
        if v != cur:
            runs.append(n)
            cur, n = v, 0
        n += 1
    runs.append(n)
    np.testing.assert_array_equal(rle_mask({"size": [6, 8], "counts": runs}, "x"), _small())
    with pytest.raises(DataError, match="x: RLE counts cover 47 pixels, the size 6x8 has 48"):
        rle_mask({"size": [6, 8], "counts": runs[:-1] + [runs[-1] - 1]}, "x")


def test_polygons_follow_each_formats_convention():
    rect = np.array([[2, 1], [5, 1], [5, 3], [2, 3]], float)
    coco = polygon_mask(rect, 6, 8, centres=True)  # pixels whose centres are inside: area 3 x 2
    assert coco.sum() == 6 and coco[1:3, 2:5].all()
    labelme = polygon_mask(rect, 6, 8, centres=False)  # labelme's shape_to_mask: the outline is included
    assert labelme.sum() == 12 and labelme[1:4, 2:6].all()
    tri = polygon_mask(np.array([[1, 1], [9, 2], [4, 7.5]]), 10, 12, centres=True)
    assert (tri != np.array(TRIANGLE, bool)).sum() <= 2  # pycocotools rasterises edges its own way


def _coco(tmp_path):
    d = {"images": [{"id": 10, "file_name": "a.jpg", "height": 6, "width": 8},
                    {"id": 11, "file_name": "sub/b.jpg", "height": 20, "width": 30}],
         "categories": [{"id": 7, "name": "car"}, {"id": 3, "name": "road"}],
         "annotations": [
             {"id": 1, "image_id": 10, "category_id": 3, "iscrowd": 0,
              "segmentation": [[0, 0, 8, 0, 8, 6, 0, 6]]},  # road: the whole image
             {"id": 2, "image_id": 10, "category_id": 7, "iscrowd": 0,
              "segmentation": [[2, 1, 5, 1, 5, 3, 2, 3]]},  # a car on it
             {"id": 3, "image_id": 10, "category_id": 7, "iscrowd": 1,
              "segmentation": {"size": [6, 8], "counts": SMALL_RLE}},  # a crowd of cars
             {"id": 4, "image_id": 11, "category_id": 7, "iscrowd": 0,
              "segmentation": {"size": [20, 30], "counts": BLOB_RLE}}]}
    p = tmp_path / "instances.json"
    p.write_text(json.dumps(d))
    return p


def _read(out, name, tmp_path):
    labels, remap = build_label_space(encoding="index", palette_file=out / "label_colors.txt", class_names=None,
                                      void_class=None, ignore_index=255)
    return labels, MaskDecoder("index", labels, remap)(out / "masks" / name)


def test_coco_to_masks_pixel_by_pixel(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["convert", "coco", str(_coco(tmp_path)), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "wrote 2 masks" in text and "0 background" in text and "1 road" in text and "2 car" in text
    labels, a = _read(out, "a.png", tmp_path)
    assert labels.names == ["background", "road", "car"]  # categories ordered by id: road (3), car (7)
    want = np.ones((6, 8), np.uint8)  # road
    want[1:3, 2:5] = 2  # car drawn later
    want[_small()] = 255  # the crowd, on top of any class
    np.testing.assert_array_equal(a, want)
    _, b = _read(out, "b.png", tmp_path)
    np.testing.assert_array_equal(b, np.where(_blob(), 2, 0))
    summary = json.loads((out / "convert.json").read_text())
    # the crowd covers the first image's car: its cars are only image b's
    assert summary["ignored_pixels"] == int(_small().sum()) and summary["class_pixels"]["car"] == int(_blob().sum())
    assert summary["overlapping_pixels"] == int(_small().sum())  # pixels under more than one region: the crowd's


def test_coco_overlap_smaller_on_top_and_class_order(tmp_path):
    p = _coco(tmp_path)
    d = json.loads(p.read_text())
    d["annotations"] = [d["annotations"][1], d["annotations"][0]]  # the car first, then the road over it
    p.write_text(json.dumps(d))
    assert main(["convert", "coco", str(p), "--out", str(tmp_path / "later"), "--overlap", "later"]) == 0
    assert (_read(tmp_path / "later", "a.png", tmp_path)[1] == 1).all()  # later wins: the road hides the car
    assert main(["convert", "coco", str(p), "--out", str(tmp_path / "small"), "--overlap", "smaller",
                 "--classes", "car", "road"]) == 0
    labels, a = _read(tmp_path / "small", "a.png", tmp_path)
    assert labels.names == ["background", "car", "road"]
    assert (a[1:3, 2:5] == 1).all() and (a == 2).sum() == 48 - 6


def test_coco_errors_are_one_line(tmp_path, capsys):
    p = tmp_path / "x.json"
    p.write_text(json.dumps({"images": []}))
    assert main(["convert", "coco", str(p), "--out", str(tmp_path / "o")]) == 2
    assert "x.json: not a COCO file" in capsys.readouterr().err
    p = _coco(tmp_path)
    assert main(["convert", "coco", str(p), "--out", str(tmp_path / "o"), "--classes", "car"]) == 2
    assert "classes ['road'] are not in --classes ['car']; add them" in capsys.readouterr().err


def _labelme(path, shapes, h=6, w=8, image="img.jpg"):
    path.write_text(json.dumps({"version": "5.4.1", "shapes": shapes, "imagePath": image, "imageData": None,
                                "imageHeight": h, "imageWidth": w}))
    return path


def test_labelme_to_masks_pixel_by_pixel(tmp_path, capsys):
    d = tmp_path / "lm"
    d.mkdir()
    _labelme(d / "one.json", [
        {"label": "sky", "points": [[0, 0], [7, 0], [7, 1], [0, 1]], "shape_type": "polygon"},
        {"label": "dog", "points": [[2, 1], [4, 3]], "shape_type": "rectangle"},
        {"label": "dog", "points": [[6, 5]], "shape_type": "point"}], image="one.jpg")
    _labelme(d / "two.json", [{"label": "cat", "points": [[1, 1], [3, 1], [3, 2], [1, 2]]}], image="..\\imgs\\two.png")
    assert main(["convert", "labelme", str(d), "--out", str(tmp_path / "out")]) == 0
    text = capsys.readouterr().out
    assert "1 point shapes (not regions) skipped" in text
    labels, one = _read(tmp_path / "out", "one.png", tmp_path)
    assert labels.names == ["background", "cat", "dog", "sky"]  # sorted names
    want = np.zeros((6, 8), np.uint8)
    want[0:2, 0:8] = 3  # sky, outline included
    want[1:4, 2:5] = 2  # the dog rectangle, drawn later, over the sky
    np.testing.assert_array_equal(one, want)
    _, two = _read(tmp_path / "out", "two.png", tmp_path)  # named after imagePath, Windows separators too
    want = np.zeros((6, 8), np.uint8)
    want[1:3, 1:4] = 1
    np.testing.assert_array_equal(two, want)


def test_converted_folder_trains_as_index_masks(tmp_path, tiny_raw):
    from seglab.config import config_from_dict

    d = tmp_path / "lm"
    d.mkdir()
    for i in range(6):
        Image.fromarray(np.full((6, 8, 3), 40 * i, np.uint8)).save(d / f"im{i}.jpg")
        _labelme(d / f"im{i}.json", [{"label": "dog", "points": [[1, 1], [5, 4]], "shape_type": "rectangle"}],
                 image=f"im{i}.jpg")
    assert main(["convert", "labelme", str(d), "--out", str(tmp_path / "out")]) == 0
    raw = {**tiny_raw, "data": {"kind": "folder", "root": str(tmp_path), "train": {"images": "lm", "masks": "out/masks"},
                                "mask_encoding": "index", "palette_file": "out/label_colors.txt",
                                "random_split": {"val": 0.34, "seed": 0}}}
    bundle = data_of(config_from_dict(raw), check=("train", "val"))
    assert bundle.labels.names == ["background", "dog"]
    want = np.zeros((6, 8), np.uint8)
    want[1:5, 1:6] = 1
    np.testing.assert_array_equal(bundle.readers["train"].load(0)[1], want)


def test_convert_never_replaces_files_it_did_not_write(tmp_path, capsys):
    """Issue 42 item 13: --out holding the user's files (hand-made masks, a palette) is refused; an earlier
    conversion is replaced only with --overwrite, and only the files it wrote; a user's file that a new
    mask would replace is refused by name."""
    d = tmp_path / "lm"
    d.mkdir()
    _labelme(d / "one.json", [{"label": "dog", "points": [[2, 1], [4, 3]], "shape_type": "rectangle"}], image="one.jpg")
    out = tmp_path / "out"
    (out / "masks").mkdir(parents=True)
    (out / "masks" / "hand.png").write_bytes(b"my mask")
    (out / "label_colors.txt").write_text("0 0 0 mine\n")
    assert main(["convert", "labelme", str(d), "--out", str(out)]) == 2
    assert "holds 2 files seglab convert did not write" in capsys.readouterr().err
    assert main(["convert", "labelme", str(d), "--out", str(out), "--overwrite"]) == 2
    assert (out / "label_colors.txt").read_text() == "0 0 0 mine\n" and (out / "masks" / "hand.png").exists()

    fresh = tmp_path / "fresh"
    assert main(["convert", "labelme", str(d), "--out", str(fresh)]) == 0
    (fresh / "notes.txt").write_text("mine")
    assert main(["convert", "labelme", str(d), "--out", str(fresh)]) == 2
    assert "holds an earlier conversion (convert.json); pass --overwrite" in capsys.readouterr().err
    _labelme(d / "two.json", [{"label": "dog", "points": [[1, 1], [3, 2]], "shape_type": "rectangle"}], image="two.jpg")
    assert main(["convert", "labelme", str(d), "--out", str(fresh), "--overwrite"]) == 0
    assert sorted(json.loads((fresh / "convert.json").read_text())["mask_files"]) == ["one.png", "two.png"]
    assert (fresh / "notes.txt").read_text() == "mine"
    (fresh / "masks" / "three.png").write_bytes(b"hand-made")
    _labelme(d / "three.json", [{"label": "dog", "points": [[1, 1], [3, 2]], "shape_type": "rectangle"}], image="three.jpg")
    assert main(["convert", "labelme", str(d), "--out", str(fresh), "--overwrite"]) == 2
    assert "three.png: exists and seglab convert did not write it" in capsys.readouterr().err
    assert (fresh / "masks" / "three.png").read_bytes() == b"hand-made"
