"""Scratch folders (``avatar-*`` under ``$AVATAR_SCRATCH`` or the system temp folder) that a killed
run does not leave behind.

Each folder holds ``.owner``, locked (``flock``) by the process that made it for as long as it
lives; the kernel drops the lock when that process ends, however it ends. :func:`sweep` removes
the ``avatar-*`` folders whose ``.owner`` nobody holds: those of dead runs, never a live one's
(a folder without ``.owner`` is not ours to judge and is left alone).
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import tempfile
import threading
from pathlib import Path

log = logging.getLogger("avatar.scratch")

PREFIX = "avatar-"
OWNER = ".owner"
_held: dict[Path, int] = {}  # folder -> fd of its locked .owner
_mutex = threading.Lock()  # stages run in threads of one process: a sweep never sees a folder half-made


def scratch_root() -> Path:
    """Where scratch folders go: ``$AVATAR_SCRATCH`` or the system temp folder."""
    return Path(os.environ.get("AVATAR_SCRATCH") or tempfile.gettempdir())


def make_scratch(label: str) -> Path:
    """A new ``avatar-<label>-<pid>-XXXX`` folder owned (locked) by this process."""
    root = scratch_root()
    root.mkdir(parents=True, exist_ok=True)
    with _mutex:
        path = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{label}-{os.getpid()}-", dir=root))
        fd = os.open(path / OWNER, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, f"{os.getpid()}\n".encode())
        _held[path] = fd
    return path


def remove_scratch(path: Path) -> None:
    """Remove a folder made by :func:`make_scratch` and drop its lock."""
    shutil.rmtree(path, ignore_errors=True)
    fd = _held.pop(Path(path), None)
    if fd is not None:
        os.close(fd)


def sweep(root: Path | None = None) -> list[Path]:
    """Remove ``avatar-*`` folders under ``root`` whose owner process has ended; return them."""
    with _mutex:
        return _sweep(root or scratch_root())


def _sweep(root: Path) -> list[Path]:
    removed = []
    try:
        candidates = [p for p in root.iterdir() if p.name.startswith(PREFIX) and p.is_dir()]
    except OSError:
        return removed
    for path in candidates:
        if path in _held:
            continue
        try:
            fd = os.open(path / OWNER, os.O_RDWR | os.O_CLOEXEC)
        except OSError:  # no .owner: not made here, or removed meanwhile
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # its owner is alive
            os.close(fd)
            continue
        try:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
        finally:
            os.close(fd)
    if removed:
        log.info("removed %d scratch folder(s) of ended runs under %s", len(removed), root)
    return removed
