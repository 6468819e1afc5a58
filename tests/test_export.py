"""Export of every registered model: ONNX run by onnxruntime matches eager PyTorch; TorchScript too."""
import numpy as np
import pytest
import torch

from seglab.cli import main
from seglab.artifacts.checkpoint import save_checkpoint
from seglab.data.synthetic import synthetic_labels
from seglab.errors import SeglabError
from seglab.deploy.export import export_checkpoint
from seglab.deploy.formats import EXPORT_FORMATS
from seglab.evaluation.runtimes import OnnxModel, onnx_providers
from seglab.models import create_model, fixed_export_size, list_models

from test_zoo import FAST
from conftest import save_png


def _checkpoint(tmp_path, name):
    torch.manual_seed(0)
    options = FAST.get(name, {})
    model = create_model(name, in_channels=3, num_classes=3, **options)
    # Realistic BatchNorm statistics (cumulative over a few batches), so eval-mode export is really checked.
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(2, 3, 64, 80))
    model.eval()
    path = tmp_path / f"{name}.pt"
    save_checkpoint(path, {
        "model_state": model.state_dict(), "labels": synthetic_labels(3).to_dict(), "config": {},
        "model": {"name": name, "options": options, "in_channels": 3, "num_classes": 3},
        "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3}, "input_size": [64, 80],
    })
    return model, path


def _assert_close_to_eager(model, ort, x):
    with torch.no_grad():
        ref = model(x)
    got = ort(x)
    assert got.shape == ref.shape
    err = float((got - ref).abs().max())
    scale = max(1.0, float(ref.abs().max()))
    if err > 1e-4 * scale:
        # Deep nets (U²-Net) accumulate fp32 rounding: then ONNX must be as close to the exact (fp64) result
        # as eager fp32 PyTorch itself is.
        import copy

        with torch.no_grad():
            exact = copy.deepcopy(model).double()(x.double()).float()
        own = float((ref - exact).abs().max())
        assert own > 1e-4 * scale and float((got - exact).abs().max()) <= 2 * own, (err, own, scale)


@pytest.mark.parametrize("name", list_models())
def test_onnx_matches_eager(tmp_path, name):
    """At the export size and, for every model that does not say it needs a fixed size, at two others
    (one not a multiple of 32) and another batch size."""
    model, ckpt = _checkpoint(tmp_path, name)
    onnx_path = export_checkpoint(ckpt, "onnx")
    ort = OnnxModel(onnx_path)
    assert ort.labels.names == ["background", "disc", "box"] and ort.input_size == (64, 80)
    _assert_close_to_eager(model, ort, torch.randn(2, 3, 64, 80))
    fixed = fixed_export_size(model)
    if fixed:
        assert name == "pspnet" and "pyramid pooling" in fixed  # the one model that needs its export size
        return
    _assert_close_to_eager(model, ort, torch.randn(1, 3, 96, 128))
    _assert_close_to_eager(model, ort, torch.randn(3, 3, 72, 100))


def test_onnxruntime_asks_for_cuda_when_onnxruntime_gpu_has_it():
    assert onnx_providers(["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert onnx_providers(["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]) == [
        "CUDAExecutionProvider", "CPUExecutionProvider"]


@pytest.mark.parametrize("name", ["unet", "deeplabv3plus", "u2net_small"])
def test_torchscript_matches_eager(tmp_path, name):
    model, ckpt = _checkpoint(tmp_path, name)
    path = export_checkpoint(ckpt, "torchscript")
    x = torch.randn(1, 3, 64, 80)
    loaded = torch.jit.load(str(path))
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x), atol=1e-5)


def test_cli_export_and_predict_with_onnxruntime(tmp_path, capsys):
    _, ckpt = _checkpoint(tmp_path, "lraspp")
    out = tmp_path / "m.onnx"
    assert main(["export", str(ckpt), "--format", "onnx", "--out", str(out)]) == 0
    img = save_png(tmp_path / "in" / "a.png", np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8))
    assert main(["predict", str(out), str(img), "--out", str(tmp_path / "o1"), "--engine", "onnxruntime"]) == 0
    assert main(["predict", str(ckpt), str(img), "--out", str(tmp_path / "o2")]) == 0
    from PIL import Image

    a = np.asarray(Image.open(tmp_path / "o1" / "a_mask.png"))
    b = np.asarray(Image.open(tmp_path / "o2" / "a_mask.png"))
    assert a.shape == (50, 70) and (a == b).mean() > 0.999


def test_export_never_writes_over_a_checkpoint_and_replaces_a_file_only_when_told(tmp_path, capsys):
    """--out over the checkpoint itself, or a run's best.pt / last.pt, is refused even with --overwrite; an
    existing file only with --overwrite; nothing is changed by a refusal."""
    _, ckpt = _checkpoint(tmp_path, "lraspp")
    run_ckpts = tmp_path / "run" / "checkpoints"
    run_ckpts.mkdir(parents=True)
    last = run_ckpts / "last.pt"
    last.write_bytes(ckpt.read_bytes())
    before = {p: p.read_bytes() for p in (ckpt, last)}
    for out, flags in ((ckpt, []), (ckpt, ["--overwrite"]), (last, ["--overwrite"])):
        assert main(["export", str(ckpt), "--format", "onnx", "--out", str(out), *flags]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"error: --out {out}: is ") and "an export never replaces it" in err and "\n" not in err
    assert all(p.read_bytes() == b for p, b in before.items())
    out = tmp_path / "m.onnx"
    out.write_bytes(b"a user's file")
    assert main(["export", str(ckpt), "--out", str(out)]) == 2
    assert f"--out {out}: exists; pass --overwrite to replace it" in capsys.readouterr().err
    assert out.read_bytes() == b"a user's file"
    assert main(["export", str(ckpt), "--out", str(out), "--overwrite"]) == 0
    assert OnnxModel(out).labels.names == ["background", "disc", "box"]


def test_predict_onnxruntime_rejects_foreign_file(tmp_path, capsys):
    bad = tmp_path / "x.onnx"
    bad.write_bytes(b"nope")
    assert main(["predict", str(bad), str(tmp_path), "--out", str(tmp_path / "o"), "--engine", "onnxruntime"]) == 2
    assert "x.onnx: not a loadable ONNX model" in capsys.readouterr().err


def test_predict_runs_a_torchscript_export_and_refuses_onnx_without_its_engine(tmp_path, capsys):
    _, ckpt = _checkpoint(tmp_path, "unet")
    ts = export_checkpoint(ckpt, "torchscript")
    img = save_png(tmp_path / "in" / "a.png", np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8))
    # issue 24 item 9: loading TorchScript runs code, so only on the explicit engine, never by sniffing the file
    capsys.readouterr()
    assert main(["predict", str(ts), str(img), "--out", str(tmp_path / "ts")]) == 2
    assert capsys.readouterr().err.strip() == (f"error: {ts}: a TorchScript export; loading one runs the code inside "
                                               "it, so predict does it only when asked: --engine torchscript (for "
                                               "files you trust)")
    assert main(["predict", str(ts), str(img), "--out", str(tmp_path / "ts"), "--engine", "torchscript"]) == 0
    assert main(["predict", str(ckpt), str(img), "--out", str(tmp_path / "pt")]) == 0
    from PIL import Image

    a = np.asarray(Image.open(tmp_path / "ts" / "a_mask.png"))
    b = np.asarray(Image.open(tmp_path / "pt" / "a_mask.png"))
    assert a.shape == (50, 70) and (a == b).mean() > 0.999
    onnx = export_checkpoint(ckpt, "onnx")
    capsys.readouterr()
    assert main(["predict", str(onnx), str(img), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("an ONNX model; predict runs it with --engine onnxruntime") and len(err.splitlines()) == 1


def test_a_native_resolution_model_exports_to_onnx_without_a_size(tmp_path, monkeypatch):
    """Issue 27 item 6: a checkpoint trained at native resolution (no augment.resize) exports with no --size:
    traced at its training crop, it predicts every image at its own size, as the checkpoint does; only a
    fixed-size graph asks for --size."""
    from seglab.evaluation.model_files import load_model
    from seglab.evaluation.predict import predict_image
    from seglab.evaluation.runtimes import OnnxModel

    model, path = _checkpoint(tmp_path, "unet")
    ckpt = torch.load(path, weights_only=True)
    ckpt["input_size"], ckpt["config"] = None, {"augment": {"crop": [48, 64]}}
    native = tmp_path / "native.pt"
    save_checkpoint(native, {k: v for k, v in ckpt.items() if k not in ("format", "version")})
    out = export_checkpoint(native, "onnx")
    onnx_model = OnnxModel(out)
    assert onnx_model.input_size is None
    image = np.random.default_rng(1).integers(0, 255, (37, 59, 3), dtype=np.uint8)
    a, b = predict_image(load_model(native), image), predict_image(onnx_model, image)
    assert a.shape == (37, 59) and (a == b).mean() > 0.999
    from seglab.deploy.formats import onnx as onnx_format

    monkeypatch.setattr(onnx_format, "fixed_export_size", lambda m: "PyramidPooling: pools to fixed bins")
    with pytest.raises(SeglabError, match=r"trained at native resolution and its ONNX graph has a fixed size "
                                          r"\(PyramidPooling: pools to fixed bins\); give --size H W"):
        export_checkpoint(native, "onnx", out=tmp_path / "x.onnx")


def test_int8_onnx_is_calibrated_on_the_run_and_scored_by_eval(tmp_path, capsys):
    """`export --int8` writes a statically quantized model (QDQ nodes, calibrated on the run's training images)
    with the export's metadata; `eval --engine onnxruntime` scores it on the run's split beside the checkpoint's
    own scores, and its masks stay close to the FP32 model's."""
    import copy
    import json

    import onnx
    import yaml

    from conftest import TINY

    raw = copy.deepcopy(TINY)
    raw["train"]["epochs"] = 3
    raw["output"] = {"dir": str(tmp_path / "runs"), "name": "q"}
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    assert main(["train", str(cfg)]) == 0
    run = tmp_path / "runs" / "q"
    best = run / "checkpoints" / "best.pt"
    assert main(["export", str(best), "--int8", "--calibration-images", "8"]) == 0
    q = run / "checkpoints" / "best.int8.onnx"
    proto = onnx.load(str(q))
    ops = {n.op_type for n in proto.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["seglab.quantization"] == ("int8 (static, 8 calibration images, minmax calibration, "
                                           "first 3 convolutions in FP32)")
    assert "labels" in json.loads(meta["seglab"])
    # the first K convolutions read float weights, every other one dequantized INT8 weights
    for k, recipe in ((3, []), (1, ["--calibration", "percentile", "--fp32-first", "1"]), (0, ["--fp32-first", "0"])):
        path = tmp_path / f"first{k}.int8.onnx"
        assert main(["export", str(best), "--int8", "--calibration-images", "4", *recipe, "--out", str(path)]) == 0
        graph = onnx.load(str(path)).graph
        dequantized = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
        quantized = [n.input[1] in dequantized for n in graph.node if n.op_type == "Conv"]
        assert quantized == [False] * k + [True] * (len(quantized) - k) and len(quantized) > 3
    assert "percentile calibration, first 1 convolution in FP32" in {
        p.key: p.value for p in onnx.load(str(tmp_path / "first1.int8.onnx")).metadata_props}["seglab.quantization"]
    with pytest.raises(SeglabError, match=r"--calibration: expected one of minmax, percentile, got 'kl'"):
        from seglab.api import export
        export(best, int8=True, calibration="kl")
    assert main(["export", str(best)]) == 0
    capsys.readouterr()
    _check_dynamic_int8(run / "checkpoints" / "best.onnx", tmp_path / "dynamic.int8.onnx")
    for f in ("best.int8.onnx", "best.onnx"):
        assert main(["eval", str(run / "checkpoints" / f), "--engine", "onnxruntime", "--split", "val"]) == 0
    scores = {f: json.loads((run / "checkpoints" / f"eval_{f}_val" / "metrics.json").read_text())
              for f in ("best_int8_onnx", "best_onnx")}
    torch_scores = json.loads((run / "eval" / "val" / "metrics.json").read_text())
    assert scores["best_onnx"]["miou"] == pytest.approx(torch_scores["miou"], abs=1e-3)  # FP32 ONNX == eager
    assert abs(scores["best_int8_onnx"]["miou"] - torch_scores["miou"]) < 0.05
    assert scores["best_int8_onnx"]["engine"] == "onnxruntime"
    # an export outside a run folder cannot be scored on "its run's" data
    lone = tmp_path / "lone.onnx"
    lone.write_bytes(q.read_bytes())
    assert main(["eval", str(lone), "--engine", "onnxruntime"]) == 2
    assert "keep it in RUN/checkpoints/" in capsys.readouterr().err


def _check_dynamic_int8(fp32, out):
    """Without calibration images: dynamic quantization, which says a calibration method goes unused and still
    keeps the first convolutions FP32 (their Conv stays; the others become ConvInteger)."""
    import logging

    import onnx

    from seglab.deploy.int8_recipe import Int8Recipe
    from seglab.deploy.quantize import quantize_onnx

    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logging.getLogger("seglab").addHandler(handler)
    try:
        how = quantize_onnx(fp32, out, [], Int8Recipe(calibration="percentile", fp32_first=2))
    finally:
        logging.getLogger("seglab").removeHandler(handler)
    assert how == "dynamic, weights only, first 2 convolutions in FP32"
    assert any("--calibration percentile is not used" in r.getMessage() for r in records)
    convs = [n.op_type for n in onnx.load(str(out)).graph.node if n.op_type in ("Conv", "ConvInteger")]
    assert convs[:2] == ["Conv", "Conv"] and set(convs[2:]) == {"ConvInteger"} and len(convs) > 3


@pytest.mark.parametrize("fmt", list(EXPORT_FORMATS))
def test_every_registered_export_format_writes_a_file_its_runtime_opens(tmp_path, fmt):
    """Issue 43 item 4: an export format is a module in deploy/formats/ plus a registration; each registered
    one writes its default file name, and the model-file table opens it (its engine) to the checkpoint's masks."""
    from seglab.deploy.formats import export_format
    from seglab.evaluation.model_files import MODEL_FILES, load_model, open_model
    from seglab.evaluation.predict import predict_image

    assert fmt in MODEL_FILES, f"export format {fmt}: no row in evaluation/model_files.MODEL_FILES to open it"
    _, path = _checkpoint(tmp_path, "unet")
    out = export_checkpoint(path, fmt)
    assert out.name == "unet" + export_format(fmt).SUFFIX
    opened = open_model(out, MODEL_FILES[fmt].engine)
    image = np.random.default_rng(2).integers(0, 255, (64, 80, 3), dtype=np.uint8)
    assert (predict_image(opened, image) == predict_image(load_model(path), image)).mean() > 0.999
    with pytest.raises(SeglabError, match=r"--format: expected .*, got 'tflite'"):
        export_checkpoint(path, "tflite")
