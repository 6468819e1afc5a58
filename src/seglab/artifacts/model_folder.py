"""A model folder in the Hugging Face Hub's layout, the record of `seglab export --format hf` (read and written
here only): model.safetensors (the weights, no pickle), config.json (the `ModelInfo` and the resolved training
config, plain JSON) and README.md (the model card, written by deploy/model_card.py).

A folder reads as a weights-only `Checkpoint` (`as_checkpoint`), so predict, eval and `seglab.load_model`
run it exactly as they run the checkpoint it came from."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from ..errors import CheckpointError, SeglabError, brief
from ..fileio import atomic_folder
from .checkpoint import Checkpoint
from .model_info import ModelInfo

FORMAT = "seglab-model-folder"
VERSION = 1
WEIGHTS, CONFIG, CARD = "model.safetensors", "config.json", "README.md"
FILES = (WEIGHTS, CONFIG, CARD)
LIBRARY = "seglab"


def is_model_folder(path: Path) -> bool:
    """Whether `path` is a folder holding a model's config.json and model.safetensors."""
    path = Path(path)
    return path.is_dir() and (path / CONFIG).is_file() and (path / WEIGHTS).is_file()


@dataclass
class ModelFolder:
    """One model folder. info: what rebuilding and running the model needs (ModelInfo); config: the resolved
    training config as plain values (its eval section sets predict's sliding window / TTA, its data section
    what eval scores); weights: the state dict predict loads ({} when read without tensors); card: README.md's
    text; path: where it was read from (errors name it)."""

    info: ModelInfo
    config: dict[str, Any]
    weights: dict[str, torch.Tensor]
    card: str = ""
    path: Optional[Path] = None

    @classmethod
    def from_checkpoint(cls, ckpt: Checkpoint, card: str = "") -> "ModelFolder":
        """The evaluated weights of a checkpoint (its moving average when it kept one), without resume state."""
        return cls(info=ckpt.info, config=ckpt.config, weights=ckpt.model_state, card=card)

    def as_checkpoint(self) -> Checkpoint:
        """The weights-only Checkpoint record every model reader takes."""
        return Checkpoint(info=self.info, config=self.config, model_state=self.weights, path=self.path)

    def config_json(self) -> dict[str, Any]:
        """config.json: a marker, the ModelInfo and the training config; plain JSON only."""
        return {"library_name": LIBRARY, "format": FORMAT, "version": VERSION, **self.info.to_dict(),
                "training_config": self.config}

    def save(self, out: Path, overwrite: bool = False) -> Path:
        """Write the folder whole or not at all: into a temporary folder beside `out`, renamed into place. An
        existing `out` is replaced only with `overwrite` and only when it is a seglab model folder (or empty)."""
        from safetensors.torch import save_file

        out = Path(out)
        check_folder_target(out, overwrite)
        with atomic_folder(out) as tmp:
            # contiguous copies: safetensors refuses tensors that share memory (tied weights) or are views
            tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in self.weights.items()}
            save_file(tensors, str(tmp / WEIGHTS), metadata={"format": "pt", "library": LIBRARY})
            (tmp / CONFIG).write_text(json.dumps(self.config_json(), indent=1, allow_nan=True) + "\n")
            (tmp / CARD).write_text(self.card)
        return out

    @classmethod
    def load(cls, path: Path, *, tensors: bool = True) -> "ModelFolder":
        """Read and check a model folder (one line naming the file otherwise); `tensors=False` reads the
        metadata alone."""
        path = Path(path)
        if not path.is_dir():
            raise CheckpointError(f"{path}: no such model folder")
        for name in (CONFIG, WEIGHTS):
            if not (path / name).is_file():
                raise CheckpointError(f"{path}: not a seglab model folder (no {name}); write one with "
                                      "`seglab export RUN --format hf --out DIR`")
        try:
            data = json.loads((path / CONFIG).read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"{path / CONFIG}: not readable JSON ({brief(exc)})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise CheckpointError(f"{path / CONFIG}: not a seglab model config (no \"format\": \"{FORMAT}\"); "
                                  "the folder was written by another library")
        if data.get("version") != VERSION:
            raise CheckpointError(f"{path / CONFIG}: model folder version {data.get('version')!r} is not supported "
                                  f"(expected {VERSION})")
        config = data.get("training_config")
        if not isinstance(config, dict):
            raise CheckpointError(f"{path / CONFIG}: 'training_config' is not a mapping; the file was altered")
        info = ModelInfo.from_dict(data, f"{path / CONFIG}: model config", config)
        weights: dict[str, torch.Tensor] = {}
        if tensors:
            from safetensors import SafetensorError
            from safetensors.torch import load_file

            try:
                weights = load_file(str(path / WEIGHTS))
            except (SafetensorError, OSError, ValueError) as exc:
                raise CheckpointError(f"{path / WEIGHTS}: not a readable safetensors file ({brief(exc)})") from None
        card = (path / CARD).read_text() if (path / CARD).is_file() else ""
        return cls(info=info, config=config, weights=weights, card=card, path=path)


def check_folder_target(out: Path, overwrite: bool) -> None:
    """A folder an export may write: new, empty, or (with `overwrite`) a seglab model folder; never a folder
    of other files, which replacing it would delete."""
    out = Path(out)
    if not out.exists():
        return
    if not out.is_dir():
        raise SeglabError(f"--out {out}: is a file; the hf format writes a folder: give a new folder")
    present = sorted(p.name for p in out.iterdir())
    if not present:
        return
    ours = set(present) <= set(FILES) and is_model_folder(out) and _marked(out)
    if not ours:
        raise SeglabError(f"--out {out}: holds {len(present)} entries that are not a seglab model folder "
                          f"(e.g. {present[0]}); give a new or empty folder")
    if not overwrite:
        raise SeglabError(f"--out {out}: holds a seglab model folder; pass --overwrite to replace it, or give another folder")


def _marked(path: Path) -> bool:
    try:
        return json.loads((path / CONFIG).read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False
