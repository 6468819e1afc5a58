"""What every config section shares: unknown keys refused, read-only once validated (a changed config is a
validated copy: `loading.changed_config`), and plain dumps."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def to_plain(obj: Any) -> Any:
    """Tuples -> lists, recursively, so the dump is plain YAML and plain checkpoint metadata."""
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    return obj
