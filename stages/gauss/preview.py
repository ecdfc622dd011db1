"""Side-by-side preview video (ground truth | render), H.264 through PyAV."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Iterable

import numpy as np


class PreviewWriter:
    """Write RGB frames [H, W, 3] uint8 to an H.264 MP4 (yuv420p, ``fps`` frames per second).

    Use as a context manager; frames of odd size are padded to even (H.264 4:2:0 needs it)."""

    def __init__(self, path: str | Path, width: int, height: int, fps: int = 25, crf: int = 20,
                 threads: int | None = None):
        import av

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.w, self.h = width + width % 2, height + height % 2
        self._c = av.open(str(self.path), mode="w")
        self._s = self._c.add_stream("libx264", rate=Fraction(fps, 1))
        self._s.width, self._s.height, self._s.pix_fmt = self.w, self.h, "yuv420p"
        self._s.options = {"crf": str(crf), "preset": "veryfast"}
        if threads is not None:  # x264's threads (default: its own choice, about 1.5 x the cores)
            self._s.codec_context.thread_count = threads
        self.frames = 0

    def write(self, rgb: np.ndarray) -> None:
        import av

        h, w = rgb.shape[:2]
        if (h, w) != (self.h, self.w):
            rgb = np.pad(rgb, ((0, self.h - h), (0, self.w - w), (0, 0)))
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb, dtype=np.uint8), format="rgb24")
        for packet in self._s.encode(frame):
            self._c.mux(packet)
        self.frames += 1

    def close(self) -> None:
        for packet in self._s.encode():
            self._c.mux(packet)
        self._c.close()

    def __enter__(self) -> "PreviewWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def side_by_side(gt: np.ndarray, render: np.ndarray) -> np.ndarray:
    """[H, W, 3] uint8 ground truth and render -> [H, 2W, 3] (ground truth left)."""
    return np.concatenate([gt, render], axis=1)


def write_preview(path: str | Path, pairs: Iterable[tuple[np.ndarray, np.ndarray]], fps: int = 25) -> int:
    """Write (ground truth, render) uint8 pairs side by side; returns the number of frames."""
    writer = None
    try:
        for gt, render in pairs:
            frame = side_by_side(gt, render)
            if writer is None:
                writer = PreviewWriter(path, frame.shape[1], frame.shape[0], fps)
            writer.write(frame)
    finally:
        if writer is not None:
            writer.close()
    return 0 if writer is None else writer.frames
