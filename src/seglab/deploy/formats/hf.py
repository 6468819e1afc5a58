"""The Hugging Face Hub's model layout (`--format hf`): a folder with model.safetensors, config.json and a model
card (artifacts/model_folder.ModelFolder, deploy/model_card.py). Nothing is traced: the folder holds the
checkpoint's evaluated weights and its ModelInfo, and reads back as that checkpoint."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from ...artifacts.checkpoint import Checkpoint
from ...artifacts.model_folder import ModelFolder
from ...artifacts.run_dir import RunDir
from ..model_card import model_card

SUFFIX = ".hf"  # the default output: best.pt -> best.hf/, a folder
FOLDER = True


def write_folder(checkpoint: Path, out: Path, overwrite: bool, repo: Optional[str] = None) -> Path:
    """Write the model folder of `checkpoint` into `out` (whole or not at all), its card from the run folder
    the checkpoint sits in (RUN/checkpoints/NAME.pt), if any; `repo`: the Hub id the card's examples name."""
    ckpt = Checkpoint.load(checkpoint)
    run = RunDir(Path(checkpoint).parent.parent)
    run = run if run.is_run() else None
    name = repo.split("/")[-1] if repo else (run.path.name if run is not None else Path(checkpoint).stem)
    card = model_card(ckpt, run, name, repo)
    return ModelFolder.from_checkpoint(ckpt, card).save(out, overwrite)
