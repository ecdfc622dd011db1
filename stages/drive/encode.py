"""Encoding beside rendering: an H.264 writer fed through a bounded queue by the render loop and
drained by its own thread (x264 and PyAV's encode release the GIL), so the GPU keeps rendering
while the CPU encodes."""

from __future__ import annotations

import queue
import threading
from pathlib import Path

import numpy as np

from stages.gauss.preview import PreviewWriter

_STOP = object()


class BackgroundWriter:
    """:class:`PreviewWriter` in a thread. ``write`` takes [H, W, 3] uint8 frames (or [B, H, W, 3]
    batches); ``close`` waits for the encoder and re-raises its error, if any."""

    def __init__(self, path: str | Path, width: int, height: int, fps: int = 25, crf: int = 20, depth: int = 8):
        self._w = PreviewWriter(path, width, height, fps, crf=crf)
        self._q: queue.Queue = queue.Queue(maxsize=depth)
        self._err: BaseException | None = None
        self._t = threading.Thread(target=self._run, name=f"encode-{Path(path).name}", daemon=True)
        self._t.start()

    @property
    def frames(self) -> int:
        return self._w.frames

    def _run(self) -> None:
        while True:
            item = self._q.get()
            if item is _STOP:
                break
            if self._err is not None:
                continue
            try:
                for frame in (item if item.ndim == 4 else item[None]):
                    self._w.write(frame)
            except BaseException as e:  # reported by close()
                self._err = e

    def write(self, frames: np.ndarray) -> None:
        if self._err is not None:
            raise self._err
        self._q.put(frames)

    def close(self) -> None:
        self._q.put(_STOP)
        self._t.join()
        try:
            self._w.close()
        finally:
            if self._err is not None:
                raise self._err

    def __enter__(self) -> "BackgroundWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
