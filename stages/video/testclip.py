"""Synthetic clips whose every frame carries its own number, for checking frame selection.

The number is written as 16 bits in a 4x4 grid of black/white cells (big enough to survive lossy
coding); :func:`read_frame_number` reads it back from a decoded (and possibly ffmpeg-processed)
frame. Used by the tests and the ingest benchmark; real faces come from real videos.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np

CELL = 16
BITS = 16
GRID = 4


def number_image(number: int, width: int, height: int) -> np.ndarray:
    """RGB uint8 [height, width, 3]: grey background with ``number`` (< 2**16) drawn as a 4x4
    grid of 16-pixel cells at the top-left (white = 1, bit 0 first, row-major)."""
    img = np.full((height, width, 3), 96, dtype=np.uint8)
    for b in range(BITS):
        r, c = divmod(b, GRID)
        img[r * CELL:(r + 1) * CELL, c * CELL:(c + 1) * CELL] = 255 if (number >> b) & 1 else 0
    return img


def read_frame_number(image: np.ndarray, rotation: int = 0) -> int:
    """Read the number drawn by :func:`number_image` from an upright frame ``image`` [H,W,3 or
    H,W]; ``rotation`` is the display rotation (counter-clockwise degrees) the frame was shown
    with, undone here to find the grid."""
    k = (rotation // 90) % 4
    img = np.rot90(image, -k) if k else image
    if img.ndim == 3:
        img = img.mean(axis=2)
    n = 0
    for b in range(BITS):
        r, c = divmod(b, GRID)
        cell = img[r * CELL + 4:(r + 1) * CELL - 4, c * CELL + 4:(c + 1) * CELL - 4]
        if cell.mean() > 128:
            n |= 1 << b
    return n


def write_numbered_clip(path: str | Path, n_frames: int, fps: Fraction | int | float = 25, *,
                        width: int = 96, height: int = 64, rotation: int = 0,
                        pts: Sequence[int] | None = None, time_base: Fraction | None = None,
                        codec: str = "libx264") -> Path:
    """Write an H.264 mp4 whose frame ``i`` (display order, from 0) shows the number ``i``.

    Args:
        fps: nominal frame rate (``Fraction(30000, 1001)`` for 29.97).
        rotation: display rotation metadata, counter-clockwise degrees.
        pts: explicit timestamps (variable frame rate), in ``time_base`` units.
        time_base: the stream time base to use with ``pts``.
    """
    import av

    path = Path(path)
    fps = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "10", "bf": "0", "g": "12"}
        if time_base is not None:
            stream.time_base = time_base
            stream.codec_context.time_base = time_base
        if rotation:
            stream.set_display_rotation(rotation)
        for i in range(n_frames):
            frame = av.VideoFrame.from_ndarray(number_image(i, width, height), format="rgb24")
            if pts is not None:
                frame.pts = int(pts[i])
                frame.time_base = time_base
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path
