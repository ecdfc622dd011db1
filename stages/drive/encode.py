"""Encoding beside rendering: the render loop hands each batch of frames to a writer that works in its
own thread, so the GPU keeps rendering while the CPU composes and encodes.

- :class:`BackgroundWriter` runs a video sink (anything with ``write(frames)`` and ``close()``; by
  default a :class:`stages.video.segments.SegmentedWriter`, H.264 on every core) in a thread fed
  through a bounded queue, optionally composing each batch first (``side_by_side.mp4`` decodes the
  driver's crops there, off the render loop);
- :func:`side_by_side_composer`: ``driver crop | avatar`` for a batch of avatar frames, the crops read
  from the driver's frame iterator in order.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

import numpy as np

from stages.video.segments import SegmentedWriter

_STOP = object()


class VideoSink(Protocol):
    frames: int

    def write(self, frames: np.ndarray) -> None: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...


class BackgroundWriter:
    """A :class:`VideoSink` in a thread. ``write`` takes [H, W, 3] uint8 frames (or [B, H, W, 3]
    batches), passes them through ``compose`` (in the writer's thread) and on to the sink; ``close``
    waits for the thread, closes the sink and re-raises the first error, if any.

    Args:
        path: the output MP4 (with ``width``, ``height``, ``fps``, ``crf``: a :class:`SegmentedWriter`),
            unless ``sink`` is given.
        compose: optional ``[B, H, W, 3] -> [B, H', W', 3]`` run in the writer's thread.
        depth: batches queued before ``write`` blocks.
    """

    def __init__(self, path: str | Path | None = None, width: int = 0, height: int = 0, fps: int = 25,
                 crf: int = 20, depth: int = 8, *, sink: VideoSink | None = None,
                 compose: Callable[[np.ndarray], np.ndarray] | None = None):
        if sink is None:
            if path is None:
                raise ValueError("BackgroundWriter needs a path or a sink")
            sink = SegmentedWriter(path, width, height, fps, crf=crf)
        self._w = sink
        self._compose = compose
        self._q: queue.Queue = queue.Queue(maxsize=depth)
        self._err: BaseException | None = None
        name = Path(path).name if path is not None else type(sink).__name__
        self._t = threading.Thread(target=self._run, name=f"encode-{name}", daemon=True)
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
                batch = item if item.ndim == 4 else item[None]
                self._w.write(self._compose(batch) if self._compose is not None else batch)
            except BaseException as e:  # reported by write() and close()
                self._err = e

    def write(self, frames: np.ndarray) -> None:
        if self._err is not None:
            raise self._err
        self._q.put(frames)

    def close(self) -> None:
        self._q.put(_STOP)
        self._t.join()
        if self._err is not None:
            getattr(self._w, "abort", self._w.close)()
            raise self._err
        self._w.close()

    def __enter__(self) -> "BackgroundWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def side_by_side_composer(driver_frames: Iterator[np.ndarray], size: int,
                          fit: Callable[[np.ndarray, int], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    """``[B, size, size, 3]`` avatar frames -> ``[B, size, 2 * size, 3]`` (driver crop | avatar), the
    next ``B`` crops of ``driver_frames`` fitted to ``size`` by ``fit`` (black once they run out)."""

    def compose(rgb: np.ndarray) -> np.ndarray:
        crops = [next(driver_frames, None) for _ in range(len(rgb))]
        left = np.stack([np.zeros_like(rgb[0]) if c is None else fit(c, size) for c in crops])
        return np.concatenate([left, rgb], axis=2)

    return compose
