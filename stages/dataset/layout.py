"""Where each file of a FlashAvatar dataset lives.

Our layout (``actors/<actor>/dataset/`` in the store)::

    imgs/{k:05d}.jpg               RGB 512x512, k = 1..N (ffmpeg %05d numbering)
    alpha/{k:05d}.jpg              8-bit matte
    parsing/{k:05d}_neckhead.png   8-bit, 0 or 255
    parsing/{k:05d}_mouth.png      8-bit, 0 or 255
    checkpoint/{i:05d}.frame       metrical-tracker frame, i = 0..N-1, nothing else in the folder
    tracking.npz                   all per-frame parameters in one file

Upstream FlashAvatar reads images from ``dataset/<id>/`` and the tracker's checkpoints from
``metrical-tracker/output/<id>/checkpoint/``: copy ``imgs``, ``alpha`` and ``parsing`` to the first and
``checkpoint`` to the second. Pairing: checkpoint ``i`` goes with image ``i + FRAME_DELTA``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

FRAME_DELTA = 1
"""Checkpoint ``i`` pairs with image/alpha/parsing number ``i + FRAME_DELTA`` (upstream's frame_delta)."""

IMAGE_SIZE = 512


@dataclass(frozen=True)
class DatasetLayout:
    """Paths of one actor's dataset.

    Attributes:
        root: folder holding ``imgs/``, ``alpha/``, ``parsing/``.
        checkpoints: folder of ``.frame`` files (default ``root/checkpoint``).
    """

    root: Path
    checkpoints: Path | None = None

    @property
    def checkpoint_dir(self) -> Path:
        return self.checkpoints if self.checkpoints is not None else self.root / "checkpoint"

    @property
    def imgs_dir(self) -> Path:
        return self.root / "imgs"

    @property
    def alpha_dir(self) -> Path:
        return self.root / "alpha"

    @property
    def parsing_dir(self) -> Path:
        return self.root / "parsing"

    def image_path(self, k: int) -> Path:
        return self.imgs_dir / image_name(k)

    def alpha_path(self, k: int) -> Path:
        return self.alpha_dir / image_name(k)

    def neckhead_path(self, k: int) -> Path:
        return self.parsing_dir / f"{k:05d}_neckhead.png"

    def mouth_path(self, k: int) -> Path:
        return self.parsing_dir / f"{k:05d}_mouth.png"

    def frame_path(self, i: int) -> Path:
        return self.checkpoint_dir / frame_file_name(i)

    def frame_count(self) -> int:
        """Number of tracked frames = number of ``.frame`` files (upstream's rule)."""
        return len(list(self.checkpoint_dir.glob("*.frame")))


def image_name(k: int) -> str:
    """``00001.jpg`` for image number ``k`` (from 1)."""
    return f"{k:05d}.jpg"


def frame_file_name(i: int) -> str:
    """``00000.frame`` for checkpoint ``i`` (from 0)."""
    return f"{i:05d}.frame"


def rel_paths(i: int) -> dict[str, str]:
    """Dataset-relative paths of everything belonging to checkpoint ``i``."""
    k = i + FRAME_DELTA
    return {"frame": f"checkpoint/{frame_file_name(i)}", "image": f"imgs/{image_name(k)}",
            "alpha": f"alpha/{image_name(k)}", "neckhead": f"parsing/{k:05d}_neckhead.png",
            "mouth": f"parsing/{k:05d}_mouth.png"}
