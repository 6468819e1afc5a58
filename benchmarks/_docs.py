"""Helpers shared by the benchmark scripts: the CPU's name and rewriting one marked block of a markdown file."""
from __future__ import annotations

import os

from seglab.engine.hardware import cpu_name  # noqa: F401  (re-exported for the benchmark scripts)


def replace_block(path: str, begin: str, end: str, block: str, title: str) -> None:
    """Replace the text between the markers of path (appended if absent, the file started with title if
    missing), atomically; the hand-written text around the block stays."""
    text = open(path).read() if os.path.exists(path) else f"# {title}\n\n"
    if begin in text and end in text:
        text = text[:text.index(begin)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    tmp = str(path) + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)
