"""Speed of seglab's models against the same architectures in segmentation_models_pytorch and torchvision.

Measures, each in a fresh subprocess (so peak memory is that measurement's own), on the same machine,
input size, batch size and thread count:
  - training-step images/s (forward, backward, AdamW step),
  - inference latency of one batch (eval mode, no grad),
  - peak resident memory of the process,
for seglab in fp32 eager mode (contiguous), with channels_last, with its default training setting (channels_last
plus `train.amp: auto`, i.e. bf16 autocast on CPUs with native bf16) and the peer in its default fp32 eager mode;
plus ONNX Runtime vs eager PyTorch inference latency for seglab models.
The tables are written between the throughput markers of --out; the rest of that file is kept.

`--paired ROUNDS` measures instead the fp32 eager training step of seglab and its peer in ONE process, alternating
one step of each for ROUNDS rounds (the order flips every round), and ONNX Runtime against eager PyTorch the same
way; a shared 2-vCPU machine varies by 20% from step to step, which a few steps per process cannot average out.
It writes its own block (paired markers) of --out.

segmentation_models_pytorch is needed only here:  pip install segmentation-models-pytorch
Usage:  python benchmarks/throughput.py --out docs/benchmarks.md [--size 256 --batch 8 --threads 2]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile

from _docs import cpu_name, replace_block

# (label, seglab model and options, peer library, peer constructor expression)
PAIRS = [
    ("U-Net ResNet-34", ("unet", {"encoder": "resnet34"}), "smp", "smp.Unet('resnet34', encoder_weights=None, classes=K)"),
    ("DeepLabV3+ ResNet-50 (separable)", ("deeplabv3plus", {"encoder": "resnet50", "separable": True}), "smp",
     "smp.DeepLabV3Plus('resnet50', encoder_weights=None, classes=K)"),
    ("DeepLabV3 ResNet-50 OS8", ("deeplabv3", {"encoder": "resnet50", "aux": True, "output_stride": 8}), "torchvision",
     "tvs.deeplabv3_resnet50(weights=None, weights_backbone=None, num_classes=K, aux_loss=True)"),
    ("FCN ResNet-50", ("fcn", {"encoder": "resnet50", "aux": True}), "torchvision",
     "tvs.fcn_resnet50(weights=None, weights_backbone=None, num_classes=K, aux_loss=True)"),
    ("LR-ASPP MobileNetV3-L", ("lraspp", {}), "torchvision",
     "tvs.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=K)"),
    ("SegFormer MiT-B0", ("segformer", {"encoder": "mit_b0"}), "smp", "smp.Segformer('mit_b0', encoder_weights=None, classes=K)"),
]
ONNX_MODELS = [("U-Net ResNet-34", "unet", {"encoder": "resnet34"}),
               ("DeepLabV3+ ResNet-50 (separable)", "deeplabv3plus", {"encoder": "resnet50", "separable": True}),
               ("LR-ASPP MobileNetV3-L", "lraspp", {})]

WORKER = r'''
import json, resource, sys, time, torch
import torch.nn.functional as F
spec = json.loads(sys.argv[1])
torch.set_num_threads(spec["threads"]); torch.manual_seed(0)
K, S, B = 12, spec["size"], spec["batch"]
if spec["lib"] == "seglab":
    from seglab.models import create_model
    model = create_model(spec["name"], num_classes=K, **spec["options"])
elif spec["lib"] == "smp":
    import segmentation_models_pytorch as smp
    model = eval(spec["expr"])
else:
    import torchvision.models.segmentation as tvs
    model = eval(spec["expr"])
fmt = torch.channels_last if spec["channels_last"] else torch.contiguous_format
model = model.to(memory_format=fmt)
x = torch.randn(B, 3, S, S).contiguous(memory_format=fmt)
amp = None
if spec.get("amp", "none") != "none":  # seglab's own resolution of train.amp (auto -> bf16 only with native bf16)
    from seglab.engine.precision import amp_dtype, resolve_amp
    amp = amp_dtype(resolve_amp(spec["amp"], torch.device("cpu")))
y = torch.randint(0, K, (B, S, S))
def loss_of(out):
    if isinstance(out, dict):  # torchvision: {"out", "aux"}; seglab in training: {"out", "aux": [...]}
        aux = out.get("aux", [])
        aux = aux if isinstance(aux, list) else [aux]
        return F.cross_entropy(out["out"], y) + sum(0.4 * F.cross_entropy(a, y) for a in aux)
    return F.cross_entropy(out, y)
result = {}
model.train(); opt = torch.optim.AdamW(model.parameters(), 1e-4)
for i in range(spec["warmup"] + spec["steps"]):
    if i == spec["warmup"]: t0 = time.perf_counter()
    with torch.autocast("cpu", dtype=amp, enabled=amp is not None):
        loss = loss_of(model(x))
    opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
result["train_img_s"] = B * spec["steps"] / (time.perf_counter() - t0)
result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
if spec.get("train_only"):
    print("RESULT " + json.dumps(result)); sys.exit(0)
model.eval(); times = []
with torch.no_grad():
    for i in range(spec["warmup"] + spec["steps"]):
        t0 = time.perf_counter(); model(x); times.append(time.perf_counter() - t0)
times = sorted(times[spec["warmup"]:]); result["latency_ms"] = 1000 * times[len(times) // 2]
print("RESULT " + json.dumps(result))
'''

ONNX_WORKER = r'''
import json, sys, time, torch, numpy as np, onnxruntime as ort
spec = json.loads(sys.argv[1])
torch.set_num_threads(spec["threads"]); torch.manual_seed(0)
from seglab.models import create_model
K, S, B = 12, spec["size"], spec["batch"]
model = create_model(spec["name"], num_classes=K, **spec["options"]).eval()
x = torch.randn(B, 3, S, S)
path = spec["path"]
torch.onnx.export(model, (x,), path, input_names=["image"], output_names=["logits"], opset_version=17, dynamo=False)
opts = ort.SessionOptions(); opts.intra_op_num_threads = spec["threads"]
sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
def median(fn):
    ts = []
    for i in range(spec["warmup"] + spec["steps"]):
        t0 = time.perf_counter(); fn(); ts.append(time.perf_counter() - t0)
    ts = sorted(ts[spec["warmup"]:]); return 1000 * ts[len(ts) // 2]
xn = x.numpy()
out = {"ort_ms": median(lambda: sess.run(None, {"image": xn}))}
xc = x.contiguous(memory_format=torch.channels_last); mc = model.to(memory_format=torch.channels_last)
with torch.no_grad():
    out["eager_ms"] = median(lambda: mc(xc))
print("RESULT " + json.dumps(out))
'''


PAIRED_WORKER = r'''
import json, sys, time, torch
import torch.nn.functional as F
spec = json.loads(sys.argv[1])
torch.set_num_threads(spec["threads"]); torch.manual_seed(0)
K, S, B = 12, spec["size"], spec["batch"]
from seglab.models import create_model
if spec["lib"] == "smp":
    import segmentation_models_pytorch as smp
else:
    import torchvision.models.segmentation as tvs
models = {"seglab": create_model(spec["name"], num_classes=K, **spec["options"]), "peer": eval(spec["expr"])}
x, y = torch.randn(B, 3, S, S), torch.randint(0, K, (B, S, S))
opts = {k: torch.optim.AdamW(m.parameters(), 1e-4) for k, m in models.items()}
def loss_of(out):
    if isinstance(out, dict):
        aux = out.get("aux", [])
        aux = aux if isinstance(aux, list) else [aux]
        return F.cross_entropy(out["out"], y) + sum(0.4 * F.cross_entropy(a, y) for a in aux)
    return F.cross_entropy(out, y)
def step(k):
    t0 = time.perf_counter()
    loss = loss_of(models[k](x)); opts[k].zero_grad(set_to_none=True); loss.backward(); opts[k].step()
    return time.perf_counter() - t0
for m in models.values():
    m.train()
for i in range(spec["warmup"]):
    step("seglab"); step("peer")
times = {"seglab": [], "peer": []}
for r in range(spec["rounds"]):
    for k in (["seglab", "peer"] if r % 2 == 0 else ["peer", "seglab"]):
        times[k].append(step(k))
print("RESULT " + json.dumps(times))
'''

PAIRED_ONNX_WORKER = r'''
import json, sys, time, torch, onnxruntime as ort
spec = json.loads(sys.argv[1])
torch.set_num_threads(spec["threads"]); torch.manual_seed(0)
from seglab.models import create_model
model = create_model(spec["name"], num_classes=12, **spec["options"]).eval()
x = torch.randn(1, 3, spec["size"], spec["size"])
torch.onnx.export(model, (x,), spec["path"], input_names=["image"], output_names=["logits"], opset_version=17, dynamo=False)
opts = ort.SessionOptions(); opts.intra_op_num_threads = spec["threads"]
sess = ort.InferenceSession(spec["path"], opts, providers=["CPUExecutionProvider"])
import copy
xn, xc = x.numpy(), x.contiguous(memory_format=torch.channels_last)
mc = copy.deepcopy(model).to(memory_format=torch.channels_last)
def timed(fn):
    t0 = time.perf_counter(); fn(); return time.perf_counter() - t0
# eager: PyTorch's default (contiguous); eager_cl: seglab's faster channels_last eager
fns = {"ort": lambda: sess.run(None, {"image": xn}), "eager": lambda: model(x), "eager_cl": lambda: mc(xc)}
order = list(fns)
times = {k: [] for k in order}
with torch.no_grad():
    for i in range(spec["warmup"]):
        for k in order:
            fns[k]()
    for r in range(spec["rounds"]):
        for k in order[r % 3:] + order[:r % 3]:  # every engine takes every position in turn
            times[k].append(timed(fns[k]))
print("RESULT " + json.dumps(times))
'''


def quartiles(v: list) -> tuple:
    v = sorted(v)
    def q(f):
        i = f * (len(v) - 1)
        lo = int(i)
        return v[lo] + (v[min(lo + 1, len(v) - 1)] - v[lo]) * (i - lo)
    return q(0.25), q(0.5), q(0.75)


def paired(args, common: dict) -> None:
    """Same-process, interleaved fp32 comparisons; each part rewrites its own block of --out."""
    if args.paired_part in ("training", "both"):
        paired_training(args, common)
    if args.paired_part in ("onnx", "both") and not args.only:
        paired_onnx(args, common)


def paired_command(args) -> str:
    return (f"python benchmarks/throughput.py --paired {args.paired} --paired-part {args.paired_part} --size {args.size} "
            f"--batch {args.batch} --threads {args.threads} --warmup {args.warmup}"
            + (f' --only "{args.only}"' if args.only else ""))


def paired_training(args, common: dict) -> None:
    import torch

    rows = []
    for label, (name, options), lib, expr in PAIRS:
        if args.only and args.only not in label:
            continue
        t = run(PAIRED_WORKER, {**common, "lib": lib, "name": name, "options": options, "expr": expr,
                                "rounds": args.paired})
        # per-round ratio of images/s: peer step time over seglab step time of the same round
        ratios = [p / s for s, p in zip(t["seglab"], t["peer"])]
        rows.append({"label": label, "peer": lib, "seglab_s": quartiles(t["seglab"])[1], "peer_s": quartiles(t["peer"])[1],
                     "ratio": quartiles(ratios), "faster": sum(r > 1 for r in ratios), "n": len(ratios)})
        print(label, rows[-1], flush=True)
    lines = [PBEGIN, f"Measured {datetime.date.today().isoformat()} on {cpu_name()}, {args.threads} threads, torch "
             f"{torch.__version__}, input {args.size}x{args.size}, batch {args.batch}, 12 classes, fp32 eager, contiguous "
             "tensors. Command:", "", f"    {paired_command(args)}", "",
             f"seglab's model and the peer's live in one process and alternate one training step each for {args.paired} "
             "rounds (the order flips every round), after warm-up steps. The ratio of each round is peer step time / "
             "seglab step time (> 1: seglab faster); the table gives its median and quartiles over rounds.", "",
             "| architecture | peer | peer s/step | seglab s/step | seglab / peer (median) | quartiles | rounds seglab faster |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lo, med, hi = r["ratio"]
        lines.append(f"| {r['label']} | {r['peer']} | {r['peer_s']:.2f} | {r['seglab_s']:.2f} | {med:.2f}x | "
                     f"{lo:.2f}-{hi:.2f} | {r['faster']} of {r['n']} |")
    lines.append(PEND)
    replace_block(args.out, PBEGIN, PEND, "\n".join(lines), TITLE)
    print(f"wrote {args.out}")


def paired_onnx(args, common: dict) -> None:
    import onnxruntime
    import torch

    rows, rounds = [], 5 * args.paired
    with tempfile.TemporaryDirectory() as tmp:
        for label, name, options in ONNX_MODELS:
            t = run(PAIRED_ONNX_WORKER, {**common, "name": name, "options": options, "rounds": rounds,
                                         "path": os.path.join(tmp, f"{name}.onnx")})
            r = {"label": label, **{f"{k}_ms": 1000 * quartiles(v)[1] for k, v in t.items()}}
            for k in ("eager", "eager_cl"):
                ratios = [e / o for e, o in zip(t[k], t["ort"])]
                r[f"{k}_ratio"], r[f"{k}_faster"] = quartiles(ratios), sum(x > 1 for x in ratios)
            rows.append(r)
            print(label, r, flush=True)
    lines = [OBEGIN, f"Measured {datetime.date.today().isoformat()} on {cpu_name()}, {args.threads} threads, torch "
             f"{torch.__version__}, onnxruntime {onnxruntime.__version__}, input {args.size}x{args.size}, batch 1, fp32, "
             "12 classes. Command:", "", f"    {paired_command(args)}", "",
             f"One process holds the ONNX Runtime session (CPU provider, default graph optimisations, {args.threads} "
             f"intra-op threads), the eager model with PyTorch's default contiguous tensors, and the same model in "
             f"channels_last (seglab's faster eager setting); they take turns for {rounds} rounds, each in every position "
             "of the round in turn. Speed-up = eager latency / ONNX Runtime latency of the same round; median and "
             "quartiles over rounds.", "",
             "| model | ORT ms | eager ms | speed-up vs eager (median, quartiles) | rounds ORT faster | "
             "eager channels_last ms | speed-up vs channels_last (median, quartiles) |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        (lo, med, hi), (clo, cmed, chi) = r["eager_ratio"], r["eager_cl_ratio"]
        lines.append(f"| {r['label']} | {r['ort_ms']:.1f} | {r['eager_ms']:.1f} | {med:.2f}x ({lo:.2f}-{hi:.2f}) | "
                     f"{r['eager_faster']} of {rounds} | {r['eager_cl_ms']:.1f} | {cmed:.2f}x ({clo:.2f}-{chi:.2f}) |")
    lines.append(OEND)
    replace_block(args.out, OBEGIN, OEND, "\n".join(lines), TITLE)
    print(f"wrote {args.out}")


def run(code: str, spec: dict) -> dict:
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(spec)], capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"{spec}: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else 'no result'}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--only", help="measure only the architectures whose label contains this text (no ONNX part)")
    ap.add_argument("--out", default="docs/benchmarks.md")
    ap.add_argument("--paired", type=int, metavar="ROUNDS",
                    help="only the same-process, interleaved fp32 comparison (and ONNX), ROUNDS steps of each")
    ap.add_argument("--paired-part", choices=["training", "onnx", "both"], default="both",
                    help="with --paired: the training-step comparison, the ONNX Runtime one (5 x ROUNDS rounds), or both")
    args = ap.parse_args()
    common = {"size": args.size, "batch": args.batch, "threads": args.threads, "steps": args.steps, "warmup": args.warmup}
    if args.paired:
        return paired(args, common)
    from seglab.engine.precision import resolve_amp
    import torch

    args.default_amp = resolve_amp("auto", torch.device("cpu"))
    settings = [("seglab", False, "none"), ("seglab_cl", True, "none"), ("peer", False, "none")]
    if args.default_amp != "none":  # otherwise seglab's default is exactly the CL column
        settings.insert(2, ("seglab_rec", True, "auto"))
    rows = []
    for label, (name, options), lib, expr in PAIRS:
        if args.only and args.only not in label:
            continue
        r = {"label": label, "peer": lib}
        runs: dict = {}
        # Repetitions interleave the settings, so slow phases of a shared machine hit all of them.
        for rep in range(args.repeats):
            for who, cl, amp in settings:
                base = {"lib": "seglab", "name": name, "options": options} if who != "peer" else {"lib": lib, "expr": expr}
                # seglab evaluates and predicts in fp32, so the default setting's inference is the CL column's
                res = run(WORKER, {**common, **base, "channels_last": cl, "amp": amp, "train_only": who == "seglab_rec"})
                for k, v in res.items():
                    runs.setdefault(f"{who}_{k}", []).append(v)
        for k, v in runs.items():
            r[k] = sorted(v)[len(v) // 2] if len(v) % 2 else sum(sorted(v)[len(v) // 2 - 1:len(v) // 2 + 1]) / 2
        print(label, {k: round(v, 2) for k, v in r.items() if isinstance(v, float)}, flush=True)
        rows.append(r)
    onnx_rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, name, options in ([] if args.only else ONNX_MODELS):
            res = run(ONNX_WORKER, {**common, "batch": 1, "name": name, "options": options,
                                    "path": os.path.join(tmp, f"{name}.onnx")})
            onnx_rows.append({"label": label, **res})
            print(label, res, flush=True)
    write_markdown(args, rows, onnx_rows)


BEGIN, END = "<!-- throughput:begin -->", "<!-- throughput:end -->"
PBEGIN, PEND = "<!-- paired:begin -->", "<!-- paired:end -->"
OBEGIN, OEND = "<!-- paired_onnx:begin -->", "<!-- paired_onnx:end -->"
TITLE = "Speed: seglab against segmentation_models_pytorch and torchvision"


def write_markdown(args, rows, onnx_rows) -> None:
    import torch

    cpu = cpu_name()
    rec = args.default_amp != "none"
    cmd = (f"python benchmarks/throughput.py --size {args.size} --batch {args.batch} --threads {args.threads} "
           f"--steps {args.steps} --warmup {args.warmup} --repeats {args.repeats}"
           + (f' --only "{args.only}"' if args.only else ""))
    lines = [
        BEGIN,
        f"Measured {datetime.date.today().isoformat()} on {cpu}, {args.threads} threads, torch {torch.__version__}, "
        f"input {args.size}x{args.size}, batch {args.batch}, 12 classes. Command:", "", f"    {cmd}", "",
        "Each setting runs in a fresh process (training steps, then inference; median latency over the timed steps; "
        "peak RSS of that process), repeated with the settings interleaved; the table gives the median over repetitions.",
        "`seglab` is fp32 eager with contiguous tensors, `seglab CL` the same with channels_last, "
        + (f"`seglab default` seglab's default training setting on this CPU (channels_last + `train.amp: auto`, which "
           f"resolves to {args.default_amp} autocast here), " if rec else
           "which is also seglab's default training setting on this CPU (`train.amp: auto` resolves to fp32 here), ")
        + "`peer` the peer library's model in its default fp32 eager mode.", "",
        "## Training step (images/s, higher is better)", "",
        "| architecture | peer | peer img/s | seglab img/s | seglab CL img/s |" + (" seglab default img/s |" if rec else "")
        + " seglab / peer | seglab CL / peer |" + (" seglab default / peer |" if rec else ""),
        "|---|---|---|---|---|---|---|" + ("---|---|" if rec else ""),
    ]
    for r in rows:
        p, s, c = r["peer_train_img_s"], r["seglab_train_img_s"], r["seglab_cl_train_img_s"]
        d = r.get("seglab_rec_train_img_s")
        lines.append(f"| {r['label']} | {r['peer']} | {p:.2f} | {s:.2f} | {c:.2f} |" + (f" {d:.2f} |" if rec else "")
                     + f" {s / p:.2f}x | {c / p:.2f}x |" + (f" {d / p:.2f}x |" if rec else ""))
    lines += ["", "## Inference latency of one batch (ms, lower is better; ratios are peer / seglab; seglab infers in fp32)",
              "", "| architecture | peer | peer ms | seglab ms | seglab CL ms | speed-up | speed-up CL |",
              "|---|---|---|---|---|---|---|"]
    for r in rows:
        p, s, c = r["peer_latency_ms"], r["seglab_latency_ms"], r["seglab_cl_latency_ms"]
        lines.append(f"| {r['label']} | {r['peer']} | {p:.0f} | {s:.0f} | {c:.0f} | {p / s:.2f}x | {p / c:.2f}x |")
    lines += ["", "## Peak memory (MB resident, training step)", "",
              "| architecture | peer | seglab | seglab CL |" + (" seglab default |" if rec else ""),
              "|---|---|---|---|" + ("---|" if rec else "")]
    for r in rows:
        lines.append(f"| {r['label']} | {r['peer_peak_rss_mb']:.0f} | {r['seglab_peak_rss_mb']:.0f} | "
                     f"{r['seglab_cl_peak_rss_mb']:.0f} |" + (f" {r['seglab_rec_peak_rss_mb']:.0f} |" if rec else ""))
    if onnx_rows:
        lines += ["", "## ONNX Runtime against eager PyTorch (seglab models, batch 1, ms)", "",
                  "| model | eager PyTorch (channels_last) | ONNX Runtime | speed-up |", "|---|---|---|---|"]
        for r in onnx_rows:
            lines.append(f"| {r['label']} | {r['eager_ms']:.1f} | {r['ort_ms']:.1f} | {r['eager_ms'] / r['ort_ms']:.2f}x |")
    lines.append(END)
    replace_block(args.out, BEGIN, END, "\n".join(lines), TITLE)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
