"""The evaluation loop: full-resolution predictions into the confusion and Boundary IoU accumulators."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from ..collectives import all_reduce_sum
from ..data.datasets import EvalDataset, collate_eval, init_loader_worker
from ..data.labels import LabelSpace
from ..metrics import BoundaryIoU, ConfusionMatrix, MultilabelConfusion, nanmean, summarize_confusion
from .inference import InferenceSettings, label_maps, logits_with
from .predict import logits_at


@dataclass
class EvalResult:
    """What `run_evaluation` measured: metrics, confusion matrix, per-image rows, samples, timings."""
    metrics: dict[str, Any]
    confusion: torch.Tensor
    samples: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)
    seconds: float = 0.0
    metric_seconds: float = 0.0  # of `seconds`, spent in the metric accumulators
    # per_image=True: one row per image (name, miou, pixel_accuracy, mean_boundary_iou, iou: per class list)
    per_image: list[dict[str, Any]] = field(default_factory=list)
    # worst > 0: the images of lowest mIoU, worst first: (row, image, ground truth, prediction)
    worst: list[tuple[dict[str, Any], np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)


def image_row(name: str, counts: torch.Tensor, b_inter: torch.Tensor, b_union: torch.Tensor,
              summarize: Callable[[torch.Tensor], dict] = summarize_confusion) -> dict[str, Any]:
    """One image's metrics from its confusion counts (summarized by `summarize`, the accumulator's) and (K,)
    boundary-band counts; a class absent from both its ground truth and its prediction has no IoU (NaN) and
    is left out of the means."""
    region = summarize(counts)
    biou = torch.full((len(region["iou"]),), float("nan"), dtype=torch.float64)
    ok = b_union > 0
    biou[ok] = b_inter[ok].double() / b_union[ok].double()
    return {"name": name, "miou": region["miou"], "pixel_accuracy": region["pixel_accuracy"],
            "mean_boundary_iou": nanmean(biou), "iou": region["iou"]}


def _groups(batch: list[dict[str, Any]]):
    """Consecutive items whose model inputs share a shape, so they can be stacked."""
    group: list[dict[str, Any]] = []
    for item in batch:
        if group and item["image"].shape != group[0]["image"].shape:
            yield group
            group = []
        group.append(item)
    if group:
        yield group


class _Scores:
    """The accumulators of one evaluation: confusion matrix, Boundary IoU, loss and a few samples."""

    def __init__(self, labels: LabelSpace, dilation_ratio: float, boundary_backend: str,
                 loss_fn: Optional[nn.Module], num_samples: int, per_image: bool = False, worst: int = 0):
        self.multilabel = labels.multilabel
        self.cm = (MultilabelConfusion if self.multilabel else ConfusionMatrix)(labels.num_classes, labels.ignore_index)
        self.biou = BoundaryIoU(labels.num_classes, labels.ignore_index, dilation_ratio, backend=boundary_backend,
                                multilabel=self.multilabel)
        self.ignore_index, self.loss_fn, self.num_samples = labels.ignore_index, loss_fn, num_samples
        self.loss_sum, self.loss_n, self.metric_seconds = 0.0, 0, 0.0
        self.samples: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.per_image, self.keep_worst = per_image or worst > 0, worst
        self.rows: list[dict[str, Any]] = []
        self.worst: list[tuple[dict[str, Any], np.ndarray, np.ndarray, np.ndarray]] = []

    def add(self, logit: torch.Tensor, item: dict[str, Any], device: torch.device) -> None:
        """One sample's (K, H, W) logits at its mask's size."""
        target = item["mask"].to(device)
        pred = label_maps(logit[None], self.multilabel)[0].long()
        labelled = item["labelled"].to(device)
        if not bool(labelled.all()):
            # a partially labelled sample: its 0 pixels may be any class it does not annotate,
            # so predictions of those classes count as background
            pred = torch.where(labelled[pred], pred, torch.zeros_like(pred))
        t_metric = time.perf_counter()
        counts = self.cm.image_counts(pred, target)
        b_counts = self.biou.image_counts(pred, target)
        self.cm.add(counts)
        self.biou.add(*b_counts)
        if self.per_image:
            self._keep(image_row(item["name"], counts, *b_counts, self.cm.summarize), item, pred)
        self.metric_seconds += time.perf_counter() - t_metric
        if self.loss_fn is not None and (target != self.ignore_index).any():
            self.loss_sum += float(self.loss_fn(logit[None].float(), target[None], labelled[None]))
            self.loss_n += 1
        if len(self.samples) < self.num_samples:
            self.samples.append((item["raw"], item["mask"].numpy().astype(np.uint8), pred.cpu().numpy().astype(np.uint8)))

    def _keep(self, row: dict[str, Any], item: dict[str, Any], pred: torch.Tensor) -> None:
        self.rows.append(row)
        if self.keep_worst and not math.isnan(row["miou"]):
            self.worst.append((row, item["raw"], item["mask"].numpy().astype(np.uint8), pred.cpu().numpy().astype(np.uint8)))
            self.worst.sort(key=lambda w: w[0]["miou"])
            del self.worst[self.keep_worst:]  # only the worst few images are held in memory

    def metrics(self, sharded: bool) -> dict[str, Any]:
        """All metrics; `sharded`: each rank scored its own samples, so the accumulators are summed first."""
        if sharded:  # an unsharded evaluation (rank 0 alone, process group alive) must not wait for the others
            self.cm.all_reduce()
            self.biou.all_reduce()
            if self.loss_fn is not None:
                self.loss_sum, n = all_reduce_sum([self.loss_sum, float(self.loss_n)])
                self.loss_n = int(n)
        metrics = self.cm.summarize(self.cm.matrix)
        metrics["boundary_iou"] = self.biou.per_class().tolist()
        metrics["mean_boundary_iou"] = self.biou.mean()
        if self.loss_fn is not None:
            metrics["loss"] = self.loss_sum / self.loss_n if self.loss_n else float("nan")
        return metrics


@torch.no_grad()
def run_evaluation(
    model: nn.Module,
    dataset: EvalDataset,
    labels: LabelSpace,
    *,
    device: torch.device,
    batch_size: int = 4,
    dilation_ratio: float = 0.02,
    loss_fn: Optional[nn.Module] = None,
    num_samples: int = 0,
    channels_last: bool = False,
    num_workers: int = 0,
    settings: Optional[InferenceSettings] = None,
    shard: tuple[int, int] = (0, 1),
    boundary_backend: str = "auto",
    per_image: bool = False,
    worst: int = 0,
) -> EvalResult:
    """Predict every sample at its mask's full resolution and compute all metrics.

    `settings`: sliding windows and test-time augmentation (None: the whole image once).
    Samples of a merged dataset that annotate only some classes are scored in their own terms:
    a predicted class the sample does not annotate counts as background.

    Returns metrics (pixel_accuracy, mean_accuracy, miou, mean_dice, fwiou, per-class lists,
    boundary_iou per class, mean_boundary_iou and, with `loss_fn`, loss).
    `boundary_backend`: BoundaryIoU's ('auto': OpenCV for CPU tensors, max-pooling on a GPU).
    `per_image`: also each image's metrics (`image_row`); `worst`: keep the `worst` images of lowest mIoU
    with their predictions (one process: under torchrun each rank would see only its own share).
    """
    start = time.perf_counter()
    was_training = model.training
    model.eval()
    scores = _Scores(labels, dilation_ratio, boundary_backend, loss_fn, num_samples, per_image, worst)
    rank, world = shard
    # under torchrun each rank scores every world-th sample; the accumulators are summed over ranks
    part = dataset if world == 1 else torch.utils.data.Subset(dataset, range(rank, len(dataset), world))
    loader = DataLoader(part, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=collate_eval,
                        worker_init_fn=init_loader_worker if num_workers > 0 else None)

    def infer(x: torch.Tensor, size) -> torch.Tensor:
        if settings is None or settings.plain:
            return logits_at(model, x, size, channels_last)
        return logits_with(model, x.contiguous(memory_format=torch.channels_last) if channels_last else x, size, settings,
                           labels.multilabel)
    for batch in loader:
        for group in _groups(batch):
            x = torch.stack([it["image"] for it in group]).to(device)
            sizes = {tuple(it["mask"].shape) for it in group}
            if len(sizes) == 1:
                outs = list(infer(x, sizes.pop()))
            else:
                raw = infer(x, x.shape[-2:])
                outs = [logits_at(nn.Identity(), r[None], it["mask"].shape)[0] for r, it in zip(raw, group)]
            for logit, it in zip(outs, group):
                scores.add(logit, it, device)
    metrics = scores.metrics(sharded=world > 1)
    model.train(was_training)
    return EvalResult(metrics, scores.cm.matrix.clone(), scores.samples, time.perf_counter() - start,
                      scores.metric_seconds, scores.rows, scores.worst)
