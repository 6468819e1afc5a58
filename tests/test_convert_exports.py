"""The annotation exports people have: Roboflow and labelme2coco COCO files, LabelMe's __ignore__, overlaps
(issue 23 item 3). Every mask is checked pixel by pixel."""
import json

import numpy as np

from seglab.cli import main

from conftest import cli_fails
from test_convert import _labelme, _read


def _box(x0, y0, x1, y1):
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def _facade_coco(path, categories, window_first=True, h=20, w=24):
    """A facade (the whole image) with two windows inside it; the windows are annotated before the facade."""
    facade = {"id": 1, "image_id": 1, "category_id": categories["facade"], "iscrowd": 0,
              "segmentation": _box(0, 0, w, h)}
    windows = [{"id": 2 + k, "image_id": 1, "category_id": categories["window"], "iscrowd": 0,
                "segmentation": _box(x, 4, x + 6, 12)} for k, x in enumerate((3, 14))]
    anns = windows + [facade] if window_first else [facade] + windows
    cats = [{"id": i, "name": n, "supercategory": s} for n, (i, s) in categories["_cats"].items()]
    path.write_text(json.dumps({"images": [{"id": 1, "file_name": "f.jpg", "height": h, "width": w}],
                                "categories": cats, "annotations": anns}))
    return path


def _facade_truth(h=20, w=24, window=2, facade=1):
    t = np.full((h, w), facade, np.uint8)
    for x in (3, 14):
        t[4:12, x:x + 6] = window
    return t


ROBOFLOW = {"facade": 1, "window": 2,
            "_cats": {"facade-set": (0, "none"), "facade": (1, "facade-set"), "window": (2, "facade-set")}}


def test_roboflow_export_drops_its_dataset_category(tmp_path, capsys):
    # Roboflow's category 0 is the dataset name (here also a real class's name), unused, the others' supercategory
    cats = {**ROBOFLOW, "_cats": {"facade0": (0, "none"), "facade": (1, "facade"), "window": (2, "facade")}}
    p = tmp_path / "rf.json"
    d = json.loads(_facade_coco(p, cats).read_text())
    d["categories"][0]["name"] = "facade"
    p.write_text(json.dumps(d))
    assert main(["convert", "coco", str(p), "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "category 0 'facade' dropped: no annotation uses it" in out
    labels, m = _read(tmp_path / "o", "f.png", tmp_path)
    assert labels.names == ["background", "facade", "window"]
    np.testing.assert_array_equal(m, _facade_truth())


def test_duplicate_names_in_use_are_refused_or_merged_with_classes(tmp_path, capsys):
    cats = {"facade": 1, "window": 2, "_cats": {"facade": (1, "x"), "window": (2, "x"), "window2": (3, "x")}}
    p = _facade_coco(tmp_path / "c.json", cats)
    d = json.loads(p.read_text())
    d["categories"][2]["name"] = "window"  # two used ids named 'window'
    d["annotations"][1]["category_id"] = 3
    p.write_text(json.dumps(d))
    cli_fails(capsys, ["convert", "coco", str(p), "--out", str(tmp_path / "o")],
              r"c\.json: category name 'window' is used by category ids 2, 3: pass --classes NAME \.\.\. \(each name "
              r"once\) to merge them into one class")
    assert main(["convert", "coco", str(p), "--out", str(tmp_path / "o"), "--classes", "facade", "window"]) == 0
    assert "categories 2, 3 named 'window' merged into one class" in capsys.readouterr().out
    np.testing.assert_array_equal(_read(tmp_path / "o", "f.png", tmp_path)[1], _facade_truth())


def test_labelme2coco_background_category_is_background(tmp_path, capsys):
    cats = {"facade": 2, "window": 3,
            "_cats": {"_background_": (1, ""), "facade": (2, ""), "window": (3, "")}}
    p = _facade_coco(tmp_path / "l2c.json", cats)
    d = json.loads(p.read_text())
    d["annotations"].append({"id": 9, "image_id": 1, "category_id": 1, "iscrowd": 0,
                             "segmentation": _box(0, 16, 24, 20)})  # a background region over the facade's foot
    p.write_text(json.dumps(d))
    assert main(["convert", "coco", str(p), "--out", str(tmp_path / "o")]) == 0
    assert "category 1 '_background_' drawn as background 0" in capsys.readouterr().out
    labels, m = _read(tmp_path / "o", "f.png", tmp_path)
    assert labels.names == ["background", "facade", "window"]  # no extra class shifting the ids
    want = _facade_truth()
    want[16:, :] = 0
    np.testing.assert_array_equal(m, want)


def test_labelme_ignore_label_becomes_the_ignore_value(tmp_path, capsys):
    d = tmp_path / "lm"
    d.mkdir()
    _labelme(d / "a.json", [
        {"label": "_background_", "points": [[0, 0], [7, 5]], "shape_type": "rectangle"},
        {"label": "dog", "points": [[1, 1], [4, 3]], "shape_type": "rectangle"},
        {"label": "__ignore__", "points": [[6, 4], [7, 5]], "shape_type": "rectangle"}])
    assert main(["convert", "labelme", str(d), "--out", str(tmp_path / "o")]) == 0
    text = capsys.readouterr().out
    assert "label '__ignore__' drawn as the ignore value 255" in text
    labels, m = _read(tmp_path / "o", "img.png", tmp_path)
    assert labels.names == ["background", "dog"]
    want = np.zeros((6, 8), np.uint8)
    want[1:4, 1:5] = 1
    want[4:6, 6:8] = 255
    np.testing.assert_array_equal(m, want)
    assert json.loads((tmp_path / "o" / "convert.json").read_text())["ignored_pixels"] == 4


def test_overlap_default_keeps_objects_inside_others_and_reports_per_class(tmp_path, capsys):
    """Measured on the facade fixture: windows drawn before their facade. 'later' loses every window pixel
    (the facade is painted over them); 'smaller' (the default) keeps all, whatever the drawing order."""
    truth = _facade_truth()
    results = {}
    for first in (True, False):
        p = _facade_coco(tmp_path / f"f{first}.json", ROBOFLOW, window_first=first)
        for rule in ("smaller", "later"):
            out = tmp_path / f"{rule}{first}"
            assert main(["convert", "coco", str(p), "--out", str(out), "--overlap", rule]) == 0
            results[rule, first] = (_read(out, "f.png", tmp_path)[1] == truth).mean()
    assert results["smaller", True] == results["smaller", False] == 1.0
    assert results["later", False] == 1.0 and results["later", True] < 1.0
    capsys.readouterr()
    p = _facade_coco(tmp_path / "f.json", ROBOFLOW)
    assert main(["convert", "coco", str(p), "--out", str(tmp_path / "o")]) == 0
    text = capsys.readouterr().out
    windows = int((truth == 2).sum())
    assert (f"pixels of each class painted over where regions overlap, --overlap smaller (used) / later: "
            f"facade {windows:,} / 0, window 0 / {windows:,}") in text
    summary = json.loads((tmp_path / "o" / "convert.json").read_text())
    assert summary["lost_in_overlaps"] == {"facade": {"smaller": windows, "later": 0},
                                           "window": {"smaller": 0, "later": windows}}


def test_config_hint_paths_work_from_anywhere(tmp_path, capsys, monkeypatch):
    _facade_coco(tmp_path / "f.json", ROBOFLOW)
    monkeypatch.chdir(tmp_path)
    assert main(["convert", "coco", "f.json", "--out", "ann"]) == 0
    hint = [line for line in capsys.readouterr().out.splitlines() if line.startswith("config: ")][0]
    assert f"masks: {tmp_path.resolve()}/ann/masks" in hint
    assert f"palette_file: {tmp_path.resolve()}/ann/label_colors.txt" in hint
