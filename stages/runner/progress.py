"""Progress of long work: a bar on a terminal, ``N/M`` in ``$ARGO_PROGRESS_FILE`` inside an Argo pod,
periodic log lines otherwise.

Stages that run at the same time (:mod:`stages.runner.schedule`) share one terminal display: each
open :class:`Progress` is one labelled line of it (``masks``, ``calibrate``, ...), log lines print
above the bars, and the display ends when the last open one closes.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from pathlib import Path

from stages.runner import cancel

log = logging.getLogger("avatar.progress")


class _SharedBars:
    """One rich display for every open bar of this process (rich allows one live display at a
    time): started by the first bar, stopped when the last one closes."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._display = None
        self._open = 0

    def add(self, label: str, total: int):  # noqa: ANN201 - (rich Progress, task id)
        from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, TimeRemainingColumn

        with self._mutex:
            if self._display is None:
                self._display = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                             TimeRemainingColumn(), transient=False)
                self._display.start()
            self._open += 1
            return self._display, self._display.add_task(label, total=total or None)

    def done(self) -> None:
        with self._mutex:
            self._open -= 1
            if self._open == 0 and self._display is not None:
                self._display.stop()
                self._display = None


_BARS = _SharedBars()


class Progress:
    """Counts finished units of work (frames, steps) towards a total.

    Argo reads ``$ARGO_PROGRESS_FILE`` (``N/M``) to show progress in its UI; we rewrite it
    atomically at most every ``min_interval`` seconds and always at the end.
    """

    def __init__(self, label: str, total: int = 0, *, min_interval: float = 1.0, enabled: bool = True):
        self.label = label
        self.total = max(0, int(total))
        self.done = 0
        self.min_interval = min_interval
        self._last = 0.0
        self._t0 = time.monotonic()
        self._argo = os.environ.get("ARGO_PROGRESS_FILE")
        self._bar = None
        self._last_logged_pct = -10
        # while a bar shows, rich has replaced sys.stderr by a proxy that says it is no terminal
        if enabled and not self._argo and getattr(sys.stderr, "rich_proxied_file", sys.stderr).isatty():
            self._bar, self._task = _BARS.add(label, self.total)

    def set_total(self, total: int) -> None:
        self.total = max(0, int(total))
        if self._bar is not None:
            self._bar.update(self._task, total=self.total or None)
        self._emit(force=True)

    def advance(self, n: int = 1) -> None:
        """Count ``n`` more units done; raises :class:`~stages.runner.cancel.Cancelled` when the
        scheduler has asked this thread's stage to stop."""
        cancel.check()
        self.done += n
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done)
        self._emit()

    def _emit(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.min_interval:
            return
        self._last = now
        if self._argo:
            path = Path(self._argo)
            tmp = path.with_name(path.name + ".tmp")
            try:
                tmp.write_text(f"{self.done}/{max(self.total, self.done)}\n")
                tmp.replace(path)
            except OSError:
                pass
        elif self._bar is None and self.total:
            pct = int(100 * self.done / self.total)
            if pct >= self._last_logged_pct + 10:
                self._last_logged_pct = pct - pct % 10
                log.info("%s: %d/%d (%d%%)", self.label, self.done, self.total, pct)

    def close(self) -> None:
        self._emit(force=True)
        if self._bar is not None:
            self._bar = None
            _BARS.done()

    @property
    def rate(self) -> float:
        """Units per second since the start."""
        return self.done / max(time.monotonic() - self._t0, 1e-9)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
