"""Finding the processes a test's subprocess left behind (Linux /proc)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def session_processes(sid: int) -> list[int]:
    """Live (non-zombie) processes in session ``sid``: everything a command started with
    ``start_new_session=True`` left behind, whatever their parent now is."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            found.append(int(d.name))
    return found


def wait_until_gone(sid: int, seconds: float) -> list[int]:
    """Poll until session ``sid`` has no live process or ``seconds`` pass; return what is left."""
    deadline = time.monotonic() + seconds
    while (left := session_processes(sid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def kill_session(sid: int) -> None:
    """SIGKILL whatever is left in session ``sid`` (test clean-up)."""
    for pid in session_processes(sid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
