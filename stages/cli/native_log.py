"""Native libraries' log noise out of the terminal.

MediaPipe, TFLite and absl write their warnings (``W0000 ... inference_feedback_manager.cc``,
``INFO: Created TensorFlow Lite XNNPACK delegate``, ``WARNING: All log messages before
absl::InitializeLog()``) straight to file descriptor 2 from C++, in every worker process, about 40
lines a run; no environment variable silences all of them. So the ``avatar`` process, before it
imports anything that loads them, moves descriptor 2 to a log file and gives Python's own
``sys.stderr`` (our log lines, progress bars, error messages) a copy of the terminal's descriptor.
Worker processes inherit descriptor 2, so their native noise goes to the same file.

- ``AVATAR_NATIVE_LOG=PATH``: the native output is appended to PATH (kept for debugging);
- unset: it is discarded (``os.devnull``);
- ``AVATAR_NATIVE_LOG=-`` or ``--verbose``/``-v``: nothing is redirected (everything in the terminal).

Only the command-line entry points call :func:`redirect_native_stderr`; the library and in-process
callers (tests) never touch descriptor 2.
"""

from __future__ import annotations

import io
import os
import sys

ENV = "AVATAR_NATIVE_LOG"


def native_log_target(argv: list[str], environ: dict[str, str] | os._Environ = os.environ) -> str | None:
    """Where descriptor 2 should go: a path, ``os.devnull``, or ``None`` for not redirected."""
    value = environ.get(ENV)
    if value == "-":
        return None
    if value:
        return value
    if any(a in ("-v", "--verbose") for a in argv):
        return None
    return os.devnull


def redirect_native_stderr(target: str | None) -> str | None:
    """Point descriptor 2 at ``target`` (appending) and ``sys.stderr`` at a copy of the old
    descriptor 2; returns ``target`` (``None``: nothing done, also when the file cannot be opened)."""
    if target is None:
        return None
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    except OSError:
        return None
    sys.stderr.flush()
    terminal = os.dup(2)
    os.set_inheritable(terminal, False)  # workers get descriptor 2 (the log), not the terminal
    sys.stderr = io.TextIOWrapper(io.FileIO(terminal, "w"), encoding=sys.stderr.encoding or "utf-8",
                                  errors="backslashreplace", line_buffering=True)
    os.dup2(fd, 2)
    os.close(fd)
    return target
