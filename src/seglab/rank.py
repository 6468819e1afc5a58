"""Which torchrun rank this process is, from the environment alone (no torch import: the CLI asks first)."""
from __future__ import annotations

import os


def is_main_process() -> bool:
    """False on torchrun ranks other than 0 (True outside torchrun); readable before any process group exists."""
    return int(os.environ.get("RANK", "0")) == 0
