"""The interface every tracker implements, and a group that fans one call out to several trackers."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dict -> {'a.b': value} with plain values (others as str), for trackers' flat params."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v if isinstance(v, (int, float, str, bool)) or v is None else str(v)
    return out


class Tracker:
    """One tracked run of a service. `run_id` is kept in the checkpoint, so a resumed seglab run continues
    the same tracked run; `log_epoch` gets one metrics.csv row (its "epoch" is the step)."""

    run_id: str = ""

    def log_config(self, config: dict[str, Any]) -> None:
        """The resolved config, nested sections as in config.yaml."""

    def log_epoch(self, row: dict[str, Any]) -> None:
        """Numbers of one epoch (or the final evaluation), keyed by metrics.csv's column names."""

    def log_artifact(self, path: Path, folder: Optional[str] = None) -> None:
        """A file of the run folder (the best checkpoint, the report, tables), filed under `folder`."""

    def finish(self, status: str = "FINISHED") -> None:
        """Close the tracked run."""


class TrackerGroup(Tracker):
    """The configured trackers as one: every call goes to each; run ids by tracker name."""

    def __init__(self, trackers: dict[str, Tracker]) -> None:
        self.trackers = trackers

    @property
    def run_ids(self) -> dict[str, str]:
        return {name: t.run_id for name, t in self.trackers.items()}

    def log_config(self, config: dict[str, Any]) -> None:
        for t in self.trackers.values():
            t.log_config(config)

    def log_epoch(self, row: dict[str, Any]) -> None:
        for t in self.trackers.values():
            t.log_epoch(row)

    def log_artifact(self, path: Path, folder: Optional[str] = None) -> None:
        for t in self.trackers.values():
            t.log_artifact(path, folder)

    def finish(self, status: str = "FINISHED") -> None:
        for t in self.trackers.values():
            t.finish(status)
