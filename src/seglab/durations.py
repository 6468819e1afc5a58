"""Durations as people write them ('90s', '45m', '2h', '1h30m') and as logs print them."""
from __future__ import annotations

import math
import re
from typing import Any


def parse_duration(text: Any) -> float:
    """'90s', '45m', '2h', '1h30m' or a number of seconds -> seconds (> 0); ValueError otherwise."""
    if isinstance(text, bool):
        raise ValueError(f"expected a duration such as 90s, 45m or 2h, got {text!r}")
    if isinstance(text, (int, float)):
        seconds = float(text)
    else:
        s = str(text).strip().lower().replace(" ", "")
        parts = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?:in)?)?(?:(\d+(?:\.\d+)?)s)?", s)
        if re.fullmatch(r"\d+(?:\.\d+)?", s):
            seconds = float(s)
        elif s and parts is not None:
            h, m, sec = (float(g) if g else 0.0 for g in parts.groups())
            seconds = h * 3600 + m * 60 + sec
        else:
            raise ValueError(f"expected a duration such as 90s, 45m, 2h or 1h30m, got {text!r}")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"expected a positive duration such as 90s, 45m or 2h, got {text!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """3725 -> '1 h 2 min'; 3600 -> '1 h'; 250 -> '4 min 10 s'; 42.4 -> '42 s'; 0.42 -> '0.4 s'."""
    if seconds < 9.95:
        return f"{max(0.0, seconds):.1f} s"
    s = int(round(seconds))
    if s >= 3570:  # rounded to whole minutes: 7199 s is "2 h", not "1 h 60 min"
        h, m = divmod(round(s / 60), 60)
        return f"{h} h {m} min" if m else f"{h} h"
    if s >= 60:
        return f"{s // 60} min {s % 60} s" if s < 600 else f"{round(s / 60)} min"
    return f"{s} s"
