"""Atomic writes: write to a temporary file beside the target, flush it to disk, then rename over it.

A reader (or a resumed run after a crash or power cut) sees the old file or the whole new one, never a
part; files get the user's umask like any file the user creates.
"""
from __future__ import annotations

import errno
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Optional

from .errors import SeglabError, brief

# Called as write_hook(path, stage) at each step of every atomic write, stage "written" (the temporary
# file is complete, not yet renamed) or "replaced" (renamed over `path`); the crash-point tests raise
# from it to stop a run at each write point. None in normal use.
write_hook: Optional[Callable[[Path, str], None]] = None

TMP_SUFFIX = ".tmp"


def _umask() -> int:
    try:  # Linux: read without changing it (os.umask can only be read by setting it)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not possible everywhere (e.g. Windows): the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success it is flushed to disk, given the mode a
    new file gets under the user's umask, and replaces `path` in one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        _fsync_file(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise write_error(path, exc) from None
        raise
    if write_hook is not None:
        write_hook(path, "written")  # outside the clean-up above: a crash here leaves the temporary, as a kill would
    try:
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError):  # e.g. `path` is a folder: the message names the file, not the temporary
            raise write_error(path, exc) from None
        raise
    _fsync_dir(path.parent)
    if write_hook is not None:
        write_hook(path, "replaced")


@contextmanager
def atomic_folder(path: Path) -> Iterator[Path]:
    """Yield a temporary folder beside `path`; on success its files are flushed to disk and it takes `path`'s
    place in one rename (an earlier folder there is moved aside first, then deleted). The caller decides
    whether `path` may be replaced."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent))
    old = None
    try:
        yield tmp
        for f in tmp.rglob("*"):
            if f.is_file():
                _fsync_file(f)
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700 folders
        if path.exists():
            old = path.with_name(f".{path.name}.old{os.getpid()}{TMP_SUFFIX}")
            path.rename(old)
        tmp.rename(path)
        _fsync_dir(path.parent)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and old.exists() and not path.exists():
            old.rename(path)  # the earlier folder back in place: nothing half-replaced
        if isinstance(exc, OSError):
            raise write_error(path, exc) from None
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_error(path: Path, exc: BaseException, needed: Optional[int] = None) -> SeglabError:
    """One line for a failed write, naming the file. A full disk says so: told by the error, or (`needed`,
    the bytes being written, for writers such as torch.save whose errors do not say why) by the free space."""
    full = isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT) or "No space left" in str(exc)
    if not full and needed is not None:
        try:
            full = shutil.disk_usage(Path(path).parent).free < needed + 2**20
        except OSError:
            pass
    if full:
        why = "the disk is full; free space and rerun (a run resumes with --resume)"
    elif isinstance(exc, OSError) and exc.strerror:
        why = exc.strerror
    else:
        why = brief(exc)
    return SeglabError(f"{path}: could not write: {why}")


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete temporary files that an interrupted atomic write left in `folder` (not recursive)."""
    removed = []
    if Path(folder).is_dir():
        for p in Path(folder).iterdir():
            if p.name.startswith(".") and p.name.endswith(TMP_SUFFIX) and p.is_file():
                p.unlink()
                removed.append(p)
    return removed


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file and a rename (the user's umask kept)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
