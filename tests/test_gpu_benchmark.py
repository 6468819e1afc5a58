"""benchmarks/gpu.py runs unchanged where there is no GPU: every section on a tiny synthetic config (the
figures themselves are measured on a GPU, docs/benchmarks.md)."""
import importlib.util
import json

import yaml

from conftest import ROOT, TINY


def _bench():
    spec = importlib.util.spec_from_file_location("gpu_bench", ROOT / "benchmarks" / "gpu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_gpu_benchmark_reports_every_section_on_a_cpu(tmp_path, capsys):
    raw = json.loads(json.dumps(TINY))
    raw["augment"]["crop"] = [32, 32]
    raw["train"].update(epochs=1, batch_size=4, num_workers="auto")
    raw["output"]["dir"] = str(tmp_path / "runs")
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(raw))
    out = tmp_path / "gpu.json"
    bench = _bench()
    rc = bench.main([str(config), "--device", "cpu", "--batches", "4", "8", "--steps", "2", "--loader-batches", "2",
                     "--rounds", "2", "--target", "0.0", "--skip", "compile", "--out", str(out)])
    assert rc == 0
    records = json.loads(out.read_text())["records"]
    seen = {(r["section"], r.get("batch"), r.get("setting")) for r in records}
    assert {("loader", 4, "0 workers"), ("loader", 4, "1 workers"), ("model", 4, "train_step fp32"),
            ("precision", 4, "bf16"), ("precision", 4, "fp32"), ("e2e", 8, "0 workers fp32")} <= seen
    e2e = next(r for r in records if r["section"] == "e2e" and r["batch"] == 8)
    assert e2e["img_per_s"] > 0 and e2e["ratio_to_min_alone"] > 0 and e2e["gpu_use_pct"] is None
    target = next(r for r in records if r["section"] == "target")
    assert target["reached_at_epoch"] == 1 and target["reached_after_s"] > 0  # any score reaches 0.0
    assert "| e2e | 8 | 0 workers fp32 |" in capsys.readouterr().out
