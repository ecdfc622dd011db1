"""Shards: contiguous ranges of frame numbers that fan out over pods and resume independently."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

SHARDS_FILE = "shards.json"  # written by ingest, under actors/<actor>/ingest/


@dataclass(frozen=True)
class Shard:
    """Frames ``start`` (inclusive) to ``stop`` (exclusive), numbered from 1 like ffmpeg's ``%05d``.

    Attributes:
        index: position of the shard, from 0.
        start: first frame number in the shard (>= 1).
        stop: one past the last frame number.
    """

    index: int
    start: int
    stop: int

    @property
    def frames(self) -> range:
        """Frame numbers of the shard."""
        return range(self.start, self.stop)

    def __len__(self) -> int:
        return self.stop - self.start

    @property
    def name(self) -> str:
        """``0003``: the shard's name in file names."""
        return f"{self.index:04d}"

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def plan_shards(n_frames: int, shard_size: int) -> list[Shard]:
    """Split frames ``1..n_frames`` into shards of ``shard_size`` frames (the last may be shorter,
    but never shorter than half a shard: a short tail is merged into the previous shard)."""
    if n_frames <= 0:
        return []
    if shard_size <= 0:
        raise ValueError("shard_size must be positive")
    bounds = list(range(1, n_frames + 1, shard_size)) + [n_frames + 1]
    if len(bounds) > 2 and bounds[-1] - bounds[-2] < shard_size // 2:
        del bounds[-2]
    return [Shard(i, a, b) for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:]))]


def shards_document(n_frames: int, fps: float, shards: list[Shard], **extra: Any) -> dict[str, Any]:
    """The JSON body of ``ingest/shards.json``."""
    return {"frames": n_frames, "fps": fps, "shards": [s.to_dict() for s in shards], **extra}


def shards_from_document(doc: dict[str, Any]) -> list[Shard]:
    """Parse ``ingest/shards.json``."""
    return [Shard(int(s["index"]), int(s["start"]), int(s["stop"])) for s in doc["shards"]]
