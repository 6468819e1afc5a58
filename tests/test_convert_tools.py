"""Label-tool exports (issue 44 item 3): CVAT / Datumaro "Segmentation mask 1.1" folders and Label Studio JSON
(brush RLE and polygons), built as the tools write them, convert pixel by pixel and train; CVAT's CamVid
export reads as it is."""
from __future__ import annotations

import copy
import json

import numpy as np
import yaml
from PIL import Image

from seglab.cli import main
from seglab.data.convert_labelstudio import decode_brush_rle, image_name

from conftest import TINY, cli_fails, save_png

# CVAT's labelmap.txt as its "Segmentation mask 1.1" export writes it; 'cart' is listed but never drawn
LABELMAP = "# label:color_rgb:parts:actions\nbackground:0,0,0::\nhorse:128,0,0::\nrider:0,128,0::\ncart:128,128,0::\n"
COLOURS = np.array([(0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0)], np.uint8)
H, W = 20, 24


def _labels(k: int) -> np.ndarray:
    """Class ids 0..2 of image k: a horse block and a rider block that move with k."""
    y = np.zeros((H, W), np.uint8)
    y[2 + k % 3: 12 + k % 3, 3:15] = 1
    y[4:9, 6 + k % 4: 11 + k % 4] = 2
    return y


def _image(k: int) -> np.ndarray:
    rng = np.random.default_rng(k)
    return (rng.random((H, W, 3)) * 50 + _labels(k)[..., None] * 80).astype(np.uint8)


def _cvat_export(root, subsets=(("train", range(6)), ("val", range(6, 8))), images=True):
    (root / "SegmentationClass").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "labelmap.txt").write_text(LABELMAP)
    for subset, ks in subsets:
        (root / "ImageSets" / "Segmentation" / f"{subset}.txt").write_text("".join(f"frame_{k:06d}\n" for k in ks))
        for k in ks:
            Image.fromarray(COLOURS[_labels(k)]).save(root / "SegmentationClass" / f"frame_{k:06d}.png")
            if images:
                (root / "JPEGImages").mkdir(exist_ok=True)
                Image.fromarray(_image(k)).save(root / "JPEGImages" / f"frame_{k:06d}.png")
    return root


def _config_line(out: str) -> dict:
    line = [ln for ln in out.splitlines() if ln.startswith("config: ")][-1]
    return yaml.safe_load(line[len("config: "):])


def _trains(tmp_path, data: dict) -> None:
    raw = copy.deepcopy(TINY)
    raw["data"] = {**data, "random_split": {"val": 0.25, "seed": 0}}
    raw["train"]["epochs"] = 1
    raw["output"] = {"dir": str(tmp_path / "runs"), "name": "t"}
    cfg = tmp_path / "t.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    assert main(["train", str(cfg)]) == 0
    assert (tmp_path / "runs" / "t" / "eval" / "val" / "metrics.json").is_file()


def test_cvat_segmentation_mask_export_converts_pixel_exact_and_trains(tmp_path, capsys):
    src = _cvat_export(tmp_path / "cvat")
    assert main(["convert", "cvat", str(src), "--out", str(tmp_path / "out")]) == 0
    text = capsys.readouterr().out
    for k in range(8):
        got = np.asarray(Image.open(tmp_path / "out" / "masks" / f"frame_{k:06d}.png"))
        assert np.array_equal(got, _labels(k)), k
    assert (tmp_path / "out" / "label_colors.txt").read_text().splitlines() == [
        "0 0 0\tbackground", "128 0 0\thorse", "0 128 0\trider", "128 128 0\tcart"]
    assert "classes never drawn: cart" in text
    data = _config_line(text)["data"]
    assert data["train"] == {"list": "train.txt"} and data["val"] == {"list": "val.txt"}
    assert data["absent_classes"] == ["cart"]
    assert len((tmp_path / "out" / "train.txt").read_text().splitlines()) == 6
    summary = json.loads((tmp_path / "out" / "convert.json").read_text())
    assert summary["class_pixels"]["cart"] == 0 and summary["classes"][3] == "cart"
    _trains(tmp_path, data)
    # an earlier conversion is replaced with --overwrite, list files included
    assert main(["convert", "cvat", str(src), "--out", str(tmp_path / "out"), "--overwrite"]) == 0


def test_cvat_colour_not_in_the_label_map_is_refused_naming_it(tmp_path, capsys):
    src = _cvat_export(tmp_path / "cvat")
    arr = COLOURS[_labels(3)]
    arr[0, :5] = (1, 2, 3)
    Image.fromarray(arr).save(src / "SegmentationClass" / "frame_000003.png")
    cli_fails(capsys, ["convert", "cvat", str(src), "--out", str(tmp_path / "out")],
              r"frame_000003.png: colour \(1, 2, 3\) \(5 px\) is not in .*labelmap.txt; add its class there")


def test_datumaro_default_subset_without_images_writes_masks_and_asks_for_them(tmp_path, capsys):
    """CVAT's own export has one subset, default.txt; without JPEGImages/ the masks pair with --images later."""
    src = _cvat_export(tmp_path / "cvat", subsets=(("default", range(4)),), images=False)
    assert main(["convert", "cvat", str(src), "--out", str(tmp_path / "out")]) == 0
    text = capsys.readouterr().out
    assert "no list files written; pass --images DIR" in text
    for k in range(4):
        assert np.array_equal(np.asarray(Image.open(tmp_path / "out" / "masks" / f"frame_{k:06d}.png")), _labels(k))
    images = tmp_path / "imgs"
    for k in range(4):
        save_png(images / f"frame_{k:06d}.png", _image(k))
    assert main(["convert", "cvat", str(src), "--out", str(tmp_path / "out2"), "--images", str(images)]) == 0
    data = _config_line(capsys.readouterr().out)["data"]
    assert data["train"] == {"list": "train.txt"} and "val" not in data
    cli_fails(capsys, ["convert", "cvat", str(src), "--out", str(tmp_path / "o3"), "--classes", "a"],
              r"--classes: cvat takes its classes and their order from labelmap.txt")
    cli_fails(capsys, ["convert", "cvat", str(tmp_path / "imgs"), "--out", str(tmp_path / "o4")],
              r"not a CVAT / Datumaro Segmentation mask export \(no SegmentationClass/ folder\)")


def test_init_recognises_a_cvat_export(tmp_path, capsys):
    src = _cvat_export(tmp_path / "cvat")
    assert main(["init", str(src), "--out", str(tmp_path / "c.yaml")]) == 0
    out = capsys.readouterr().out
    cfg = yaml.safe_load((tmp_path / "c.yaml").read_text())
    assert cfg["data"]["mask_encoding"] == "rgb" and cfg["data"]["palette_file"] == "labelmap.txt"
    assert cfg["data"]["train"] == {"images": "JPEGImages", "masks": "SegmentationClass"}
    assert "CVAT" in out


def test_cvat_camvid_export_reads_as_it_is(tmp_path):
    """CVAT's CamVid 1.0 export: label_colors.txt, SUBSET/ and SUBSETannot/ colour masks, SUBSET.txt of
    '/SUBSET/NAME.png /SUBSETannot/NAME.png' lines: seglab's list files and palettes read it unchanged."""
    from seglab.config import config_from_dict
    from conftest import data_of

    root = tmp_path / "camvid"
    root.mkdir()
    (root / "label_colors.txt").write_text("0 0 0 Void\n128 0 0 horse\n0 128 0 rider\n128 128 0 cart\n")
    lines = []
    for k in range(6):
        save_png(root / "default" / f"f{k}.png", _image(k))
        labels = _labels(k)
        labels[0, 0] = 0
        save_png(root / "defaultannot" / f"f{k}.png", COLOURS[labels])
        lines.append(f"/default/f{k}.png /defaultannot/f{k}.png")
    (root / "default.txt").write_text("\n".join(lines) + "\n")
    cfg = config_from_dict({"data": {"kind": "folder", "root": str(root), "train": {"list": "default.txt"},
                                     "mask_encoding": "rgb", "palette_file": "label_colors.txt",
                                     "random_split": {"val": 0.34}, "absent_classes": ["cart"]}})
    data = data_of(cfg)
    assert data.labels.names == ["horse", "rider", "cart"]  # Void (0, 0, 0) is the ignore colour
    reader = data.readers["train"]
    for i in range(len(reader)):
        sample = reader.load(i)
        k = int(reader.items[i].image.split("/f")[-1][0])
        want = _labels(k).astype(np.int64) - 1
        want[want < 0] = 255
        assert np.array_equal(sample[1].astype(np.int64), want)


# ---- Label Studio -------------------------------------------------------------------------------------------------

def _encode_rle(values: np.ndarray, word=8, sizes=(3, 4, 8, 16)) -> list[int]:
    """Label Studio's brush RLE (rle-pack), written from the format: a header, then a repeated chunk per run
    longer than 1 and a literal chunk per single value."""
    bits = [f"{len(values):032b}", f"{word - 1:05b}", *(f"{s - 1:04b}" for s in sizes)]
    i = 0
    while i < len(values):
        j = i
        while j < len(values) and values[j] == values[i] and j - i < 2 ** sizes[-1]:
            j += 1
        n = j - i
        cls = next(c for c, s in enumerate(sizes) if n - 1 < 2 ** s)
        if n == 1:
            bits += ["0", f"{cls:02b}", f"{0:0{sizes[cls]}b}", f"{values[i]:0{word}b}"]
        else:
            bits += ["1", f"{cls:02b}", f"{n - 1:0{sizes[cls]}b}", f"{values[i]:0{word}b}"]
        i = j
    s = "".join(bits)
    s += "0" * (-len(s) % 8)
    return [int(s[k:k + 8], 2) for k in range(0, len(s), 8)]


def _brush(mask: np.ndarray, label: str, rid: str) -> dict:
    rgba = np.zeros((H, W, 4), np.uint8)
    rgba[mask] = (255, 0, 0, 255)
    return {"id": rid, "type": "brushlabels", "from_name": "tag", "to_name": "image", "original_width": W,
            "original_height": H, "image_rotation": 0,
            "value": {"format": "rle", "rle": _encode_rle(rgba.ravel()), "brushlabels": [label]}}


def test_brush_rle_decodes_what_label_studio_writes():
    rng = np.random.default_rng(0)
    for values in (np.zeros(7, np.uint8), rng.integers(0, 3, 500).astype(np.uint8),
                   np.repeat(np.array([0, 255, 7], np.uint8), [70000, 3, 1])):
        assert np.array_equal(decode_brush_rle(_encode_rle(values), "t"), values)
    try:  # the tool's own encoder, when installed: the same values back
        from label_studio_converter.brush import encode_rle
    except ImportError:
        return
    values = rng.integers(0, 2, 4 * H * W).astype(np.uint8) * 255
    assert np.array_equal(decode_brush_rle(encode_rle(values), "t"), values)


def test_label_studio_urls_name_their_images():
    assert image_name("/data/upload/3/7f2a1b9c-horse001.jpg") == ("horse001.jpg", None)
    assert image_name("/data/local-files/?d=datasets/horses/horse%20002.png") == (
        "horse 002.png", "datasets/horses/horse 002.png")
    assert image_name("s3://bucket/images/horse003.jpg") == ("horse003.jpg", None)


def test_label_studio_brush_and_polygons_convert_pixel_exact_and_train(tmp_path, capsys):
    images = tmp_path / "images"
    tasks = []
    for k in range(8):
        save_png(images / f"horse{k}.png", _image(k))
        labels = _labels(k)
        result = [_brush(labels == 1, "horse", f"h{k}"), _brush(labels == 2, "rider", f"r{k}")]
        tasks.append({"id": k + 1, "data": {"image": f"/data/upload/1/{k:07d}a-horse{k}.png"},
                      "annotations": [{"id": 100 + k, "was_cancelled": False, "result": result}]})
    # a polygon: the rectangle 2..10 x 4..20 (pixel centres inside: rows 2..9, columns 4..19)
    poly = {"id": "p", "type": "polygonlabels", "original_width": W, "original_height": H,
            "value": {"points": [[4 / W * 100, 2 / H * 100], [20 / W * 100, 2 / H * 100], [20 / W * 100, 10 / H * 100],
                                 [4 / W * 100, 10 / H * 100]], "polygonlabels": ["rider"]}}
    save_png(images / "sub" / "horse8.png", _image(8))
    tasks.append({"id": 9, "data": {"image": "/data/local-files/?d=sub/horse8.png"},
                  "annotations": [{"result": [poly, {"type": "rectanglelabels", "value": {}}]}]})
    tasks.append({"id": 10, "data": {"image": "/data/upload/1/0000000b-horse9.png"}, "annotations": []})
    save_png(images / "horse9.png", _image(9))
    export = tmp_path / "export.json"
    export.write_text(json.dumps(tasks))
    out = tmp_path / "out"
    assert main(["convert", "labelstudio", str(export), "--out", str(out), "--images", str(images)]) == 0
    text = capsys.readouterr().out
    for k in range(8):
        assert np.array_equal(np.asarray(Image.open(out / "masks" / f"horse{k}.png")), _labels(k)), k
    want = np.zeros((H, W), np.uint8)
    want[2:10, 4:20] = 2
    assert np.array_equal(np.asarray(Image.open(out / "masks" / "horse8.png")), want)
    assert not (out / "masks" / "horse9.png").exists()
    summary = json.loads((out / "convert.json").read_text())
    assert summary["skipped"] == {"rectanglelabels regions (not masks)": 1, "unlabelled tasks": 1}
    assert summary["classes"] == ["background", "horse", "rider"]
    data = _config_line(text)["data"]
    assert data["train"] == {"list": "train.txt"}
    assert (out / "train.txt").read_text().splitlines()[-1] == f"{(images / 'sub' / 'horse8.png').resolve()} masks/horse8.png"
    _trains(tmp_path, data)
    # kept unlabelled: an all-background mask
    assert main(["convert", "labelstudio", str(export), "--out", str(tmp_path / "o2"), "--images", str(images),
                 "--unlabelled", "keep"]) == 0
    assert not np.asarray(Image.open(tmp_path / "o2" / "masks" / "horse9.png")).any()


def test_label_studio_bad_inputs_are_one_line(tmp_path, capsys):
    export = tmp_path / "e.json"
    export.write_text(json.dumps({"images": []}))
    cli_fails(capsys, ["convert", "labelstudio", str(export), "--out", str(tmp_path / "o")],
              r"e.json: not a Label Studio JSON export")
    brush = _brush(_labels(0) == 1, "horse", "h")
    brush["value"]["rle"] = brush["value"]["rle"][:10]
    export.write_text(json.dumps([{"id": 4, "data": {"image": "/data/upload/1/0000000a-x.png"},
                                   "annotations": [{"result": [brush]}]}]))
    cli_fails(capsys, ["convert", "labelstudio", str(export), "--out", str(tmp_path / "o")],
              r"task 4, region h: brush RLE ends early")
    export.write_text(json.dumps([{"id": 5, "data": {"image": "/data/upload/1/0000000a-missing.png"},
                                   "annotations": [{"result": [_brush(_labels(0) == 1, "horse", "h")]}]}]))
    (tmp_path / "imgs").mkdir()
    cli_fails(capsys, ["convert", "labelstudio", str(export), "--out", str(tmp_path / "o"), "--images", str(tmp_path / "imgs")],
              r"task 5: image '/data/upload/1/0000000a-missing.png' \(missing.png\) is not under --images")
