"""Neptune: one Neptune run per seglab run (tracking.neptune_project, client `neptune` 1.x). `neptune_mode:
offline` (or NEPTUNE_MODE=offline) needs no network or token: the run is written under `.neptune/` of the working
folder and `neptune sync` there uploads it later; `debug` keeps it in memory. The API token comes from
NEPTUNE_API_TOKEN, as the client reads it."""
from __future__ import annotations

import math
import uuid
from pathlib import Path
from typing import Any, Optional

from ..errors import SeglabError
from .base import Tracker, flatten

# runs this process has open, by id: the final evaluation continues the run the training logged to
_OPEN: dict[str, Any] = {}

NOT_INSTALLED = "tracking.neptune_project: neptune is not installed (pip install 'seglab[neptune]')"


def check_neptune(tracking: Any) -> None:
    """Refuse tracking.neptune_project without the neptune package before any work."""
    import importlib.util

    if tracking.neptune_project and importlib.util.find_spec("neptune") is None:
        raise SeglabError(NOT_INSTALLED)


class NeptuneTracker(Tracker):
    """Config under `config/`, per-epoch metrics as series under `metrics/` (step = epoch), the final metrics
    as single values under `final/`, files under `artifacts/`. The run id is a custom run id kept in the
    checkpoint, so a resumed seglab run logs to the same Neptune run (async / sync modes: the offline client
    does not keep custom ids, so an offline resume syncs as a second run)."""

    def __init__(self, project: str, run_name: str, run_id: Optional[str], *, mode: Optional[str]):
        try:
            import neptune
        except ImportError:
            raise SeglabError(NOT_INSTALLED) from None
        self.run_id = run_id or uuid.uuid4().hex  # at most 36 characters, as Neptune's custom run ids
        if self.run_id in _OPEN:
            self.run = _OPEN[self.run_id]
            return
        try:
            self.run = neptune.init_run(project=project, name=run_name, custom_run_id=self.run_id, mode=mode,
                                        tags=["seglab"], capture_stdout=False, capture_stderr=False,
                                        capture_hardware_metrics=False, capture_traceback=False, git_ref=False,
                                        source_files=[])
        except Exception as exc:
            raise SeglabError(f"tracking.neptune_project: Neptune could not start a run ({mode or 'NEPTUNE_MODE / async'}): "
                              f"{str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}; "
                              "neptune_mode: offline needs no network or token") from None
        _OPEN[self.run_id] = self.run

    def log_config(self, config: dict[str, Any]) -> None:
        # flat keys with plain values: Neptune fields take str / int / float / bool, not None or lists
        for key, value in flatten(config).items():
            self.run["config/" + key.replace(".", "/")] = "null" if value is None else value

    def log_epoch(self, row: dict[str, Any]) -> None:
        step = int(row["epoch"])
        for key, v in row.items():
            if key == "epoch" or not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
                continue
            if key.startswith("final_"):  # the final evaluation: single values, what the runs table shows
                self.run[f"final/{key[len('final_'):]}"] = float(v)
            else:
                self.run[f"metrics/{key}"].append(float(v), step=step)

    def log_artifact(self, path: Path, folder: Optional[str] = None) -> None:
        if not path.is_file():
            return
        field = "/".join(["artifacts", *(folder.split("/") if folder else []), path.name.replace(".", "_")])
        self.run[field].upload(str(path))

    def finish(self, status: str = "FINISHED") -> None:
        _OPEN.pop(self.run_id, None)
        if status != "FINISHED":
            self.run["sys/failed"] = True
        self.run.stop()


def create_neptune_tracker(tracking: Any, run_name: str, run_id: Optional[str], folder: Path) -> Optional[Tracker]:
    """A NeptuneTracker when tracking.neptune_project is set (`folder` unused: the client keeps .neptune/ in the
    working folder)."""
    if not tracking.neptune_project:
        return None
    return NeptuneTracker(tracking.neptune_project, run_name, run_id, mode=tracking.neptune_mode)
