"""Trackers: MLflow against a local file store, Weights & Biases and Neptune offline, each read back: params, per-epoch
metrics, final metrics, report and best checkpoint, and a resume continuing the same tracked run."""
import copy
import json

import pytest
import yaml

from seglab.cli import main

from conftest import TINY

def test_mlflow_local_store(tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    store = (tmp_path / "mlruns").as_uri()
    raw = copy.deepcopy(TINY)
    raw["train"]["epochs"] = 2
    raw["output"] = {"dir": str(tmp_path / "runs"), "name": "tracked"}
    raw["tracking"] = {"mlflow_uri": store, "mlflow_experiment": "seglab-test"}
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    assert main(["train", cfg.as_posix()]) == 0
    client = mlflow.tracking.MlflowClient(tracking_uri=store)
    exp = client.get_experiment_by_name("seglab-test")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1
    r = runs[0]
    assert r.info.status == "FINISHED" and r.info.run_name == "tracked"
    assert r.data.params["model.name"] == "unet" and r.data.params["train.epochs"] == "2"
    history = client.get_metric_history(r.info.run_id, "val_miou")
    assert [m.step for m in history] == [1, 2]
    assert "val_miou" in r.data.metrics and "train_loss" in r.data.metrics and "final_val_miou" in r.data.metrics
    arts = {a.path for a in client.list_artifacts(r.info.run_id)}
    assert {"report.html", "config.yaml", "checkpoints", "eval"} <= arts
    assert [a.path for a in client.list_artifacts(r.info.run_id, "checkpoints")] == ["checkpoints/best.pt"]

    # resuming continues the same MLflow run
    assert main(["train", "--resume", str(tmp_path / "runs" / "tracked"), "--set", "train.epochs=3"]) == 0
    assert len(client.search_runs([exp.experiment_id])) == 1
    assert [m.step for m in client.get_metric_history(r.info.run_id, "val_miou")] == [1, 2, 3]


def _wandb_records(folder):
    """Every record of the offline runs under `folder` (W&B's .wandb files: a LevelDB-style log of
    protobuf records in 32 KiB blocks), read without W&B's service: what `wandb sync` would upload."""
    import struct

    from wandb.proto import wandb_internal_pb2 as pb

    out = []
    for path in sorted(folder.glob("wandb/offline-run-*/run-*.wandb")):
        data, pos, buf = path.read_bytes(), 7, b""
        assert data[:4] == b":W&B", path
        while pos + 7 <= len(data):
            left = 32768 - pos % 32768
            crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7]) if left >= 7 else (0, 0, 0)
            if left < 7 or (crc, length, kind) == (0, 0, 0):  # block padding
                pos += left
                continue
            buf += data[pos + 7:pos + 7 + length]
            pos += 7 + length
            if kind in (1, 4):  # a full record, or the last piece of one
                record = pb.Record()
                record.ParseFromString(buf)
                out.append(record)
                buf = b""
    return out


def _key(item):
    return item.key or ".".join(item.nested_key)


def test_wandb_offline_run_is_logged_and_read_back_from_its_folder(tmp_path):
    pytest.importorskip("wandb")
    raw = copy.deepcopy(TINY)
    raw["train"]["epochs"] = 2
    raw["output"] = {"dir": str(tmp_path / "runs"), "name": "wb"}
    raw["tracking"] = {"wandb_project": "seglab-test", "wandb_mode": "offline", "wandb_dir": str(tmp_path / "wb")}
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    assert main(["train", cfg.as_posix()]) == 0
    records = _wandb_records(tmp_path / "wb")
    kinds = [r.WhichOneof("record_type") for r in records]
    (run,) = [r.run for r in records if r.HasField("run")]
    assert run.display_name == "wb" and run.project == "seglab-test"
    config = {_key(i): yaml.safe_load(i.value_json) for r in records if r.HasField("config") for i in r.config.update}
    assert config["model"]["name"] == "unet" and config["train"]["epochs"] == 2
    history = [{_key(i): float(i.value_json) for i in r.history.item} for r in records if r.HasField("history")]
    assert [h.get("_step") for h in history] == [1, 2] and all("val_miou" in h and "train_loss" in h for h in history)
    csv_rows = (tmp_path / "runs" / "wb" / "metrics.csv").read_text().splitlines()
    header = csv_rows[0].split(",")
    assert history[1]["val_miou"] == pytest.approx(float(csv_rows[2].split(",")[header.index("val_miou")]), abs=1e-4)
    summary = {_key(i): i.value_json for r in records if r.HasField("summary") for i in r.summary.update}
    final = json.loads((tmp_path / "runs" / "wb" / "eval" / "val" / "metrics.json").read_text())["miou"]
    assert float(summary["final_val_miou"]) == pytest.approx(final)
    files = {m.path for r in records if r.HasField("artifact") for m in r.artifact.manifest.contents}
    assert {"checkpoints/best.pt", "report.html", "config.yaml"} <= files
    assert kinds.count("exit") == 1  # one W&B run for the training and its final evaluation
    saved = json.loads((tmp_path / "runs" / "wb" / "summary.json").read_text())["tracker_runs"]
    assert saved == {"wandb": run.run_id}

    # resuming continues the same W&B run id at the next step
    assert main(["train", "--resume", str(tmp_path / "runs" / "wb"), "--set", "train.epochs=3"]) == 0
    records = _wandb_records(tmp_path / "wb")
    assert {r.run.run_id for r in records if r.HasField("run")} == {run.run_id}
    steps = [float(i.value_json) for r in records if r.HasField("history") for i in r.history.item if _key(i) == "_step"]
    assert steps == [1, 2, 3]


def _neptune_ops(folder):
    """Every operation a Neptune offline run queued, per run folder: .neptune/offline/run__ID__.../data-N.log holds
    one JSON operation per line ({"obj": {"type", "path", ...}, "version"})."""
    runs = {}
    for log in sorted(folder.glob(".neptune/offline/run__*/data-*.log")):
        runs.setdefault(log.parent.name, []).extend(json.loads(line)["obj"] for line in log.read_text().splitlines())
    return runs


def test_neptune_offline_run_is_logged_and_read_back_from_its_queue(tmp_path, monkeypatch):
    pytest.importorskip("neptune", reason="the neptune client is an optional extra: pip install 'seglab[neptune]'")
    monkeypatch.chdir(tmp_path)  # the client writes .neptune/ in the working folder
    monkeypatch.delenv("NEPTUNE_API_TOKEN", raising=False)
    raw = copy.deepcopy(TINY)
    raw["train"]["epochs"] = 2
    raw["output"] = {"dir": str(tmp_path / "runs"), "name": "np"}
    raw["tracking"] = {"neptune_project": "me/seglab-test", "neptune_mode": "offline"}
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    assert main(["train", cfg.as_posix()]) == 0
    runs = _neptune_ops(tmp_path)
    assert len(runs) == 1  # one Neptune run for the training and its final evaluation
    ops = next(iter(runs.values()))
    value = {"/".join(o["path"]): o.get("value") for o in ops if o["type"].startswith("Assign")}
    assert value["sys/name"] == "np" and value["config/model/name"] == "unet" and value["config/train/epochs"] == 2
    series = {}
    for o in ops:
        if o["type"] == "LogFloats":
            series.setdefault("/".join(o["path"]), []).extend((v["step"], v["value"]) for v in o["values"])
    csv_rows = (tmp_path / "runs" / "np" / "metrics.csv").read_text().splitlines()
    header = csv_rows[0].split(",")
    assert [s for s, _ in series["metrics/val_miou"]] == [1, 2]
    assert series["metrics/val_miou"][1][1] == pytest.approx(float(csv_rows[2].split(",")[header.index("val_miou")]), abs=1e-6)
    final = json.loads((tmp_path / "runs" / "np" / "eval" / "val" / "metrics.json").read_text())["miou"]
    assert value["final/val_miou"] == pytest.approx(final)
    uploads = {"/".join(o["path"]): o["file_path"] for o in ops if o["type"] == "UploadFile"}
    assert uploads["artifacts/checkpoints/best_pt"].endswith("runs/np/checkpoints/best.pt")
    assert {"artifacts/report_html", "artifacts/config_yaml"} <= set(uploads)
    saved = json.loads((tmp_path / "runs" / "np" / "summary.json").read_text())["tracker_runs"]
    assert set(saved) == {"neptune"} and len(saved["neptune"]) == 32  # the custom run id a resume continues


@pytest.mark.parametrize("key, value, package", [("mlflow_uri", "mlruns", "mlflow"), ("wandb_project", "p", "wandb"),
                                                 ("neptune_project", "me/p", "neptune")])
def test_a_tracker_without_its_package_is_refused_before_any_work(tmp_path, monkeypatch, capsys, key, value, package):
    """Issue 42 item 15: the missing package was reported only after data decoding and the speed probe."""
    import importlib.util

    import seglab.data.datasets as datasets

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == package else real(name, *a))
    decoded = []
    monkeypatch.setattr(datasets, "check_split", lambda *a, **k: decoded.append(1))
    raw = copy.deepcopy(TINY)
    raw["tracking"] = {key: value}
    raw["output"] = {"dir": str(tmp_path / "runs"), "name": "t"}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    assert main(["train", str(tmp_path / "c.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: tracking.{key}: ") and "is not installed" in err and "\n" not in err
    assert decoded == []
