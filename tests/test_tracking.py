"""MLflow tracking against a local file store: params, per-epoch metrics, report and best checkpoint."""
import copy
import os

import pytest
import yaml

from seglab.cli import main

from conftest import TINY

mlflow = pytest.importorskip("mlflow")


def test_mlflow_local_store(tmp_path, monkeypatch):
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
