"""Reading the upstream stages' outputs that calibrate, track and assemble need.

- landmarks: ``landmarks/<shard>.npz`` with ``frames int32 [N]``, ``points float32 [N,478,3]`` (x, y
  in 512x512 crop pixels), ``confidence float32 [N]``, ``ok bool [N]`` (NaN points where failed);
- frames: ``ingest/frames/<shard>.tar`` of ``00001.jpg ...`` (512x512 RGB JPEG).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np

from stages.errors import bad_input
from stages.frameshard import frame_name
from stages.runner.shards import Shard


@dataclass
class Landmarks:
    """Landmarks of a run of frames. frames int [N]; points float32 [N, 478, 3]; confidence [N]; ok bool [N]."""

    frames: np.ndarray
    points: np.ndarray
    confidence: np.ndarray
    ok: np.ndarray

    def select(self, index: Any) -> "Landmarks":
        return Landmarks(self.frames[index], self.points[index], self.confidence[index], self.ok[index])

    @classmethod
    def cat(cls, parts: list["Landmarks"]) -> "Landmarks":
        return cls(*(np.concatenate([getattr(p, k) for p in parts]) for k in ("frames", "points", "confidence", "ok")))


def read_landmarks(path: Any, shard: Shard | None = None) -> Landmarks:
    """Read one landmarks ``.npz``; with ``shard``, check that it covers exactly the shard's frames.

    Raises:
        BadInput: missing keys, wrong shapes, or frames that do not match the shard.
    """
    fix = "re-run the landmarks stage for this actor (its output is not in the expected format)"
    try:
        with np.load(path, allow_pickle=False) as z:
            lm = Landmarks(z["frames"].astype(np.int64), z["points"].astype(np.float32),
                           z["confidence"].astype(np.float32), z["ok"].astype(bool))
    except (KeyError, ValueError, OSError) as err:
        raise bad_input(path, f"unreadable landmarks ({err})", fix) from None
    n = len(lm.frames)
    if lm.points.ndim != 3 or lm.points.shape[0] != n or lm.points.shape[1] < 468 or lm.points.shape[2] < 2:
        raise bad_input(path, f"points have shape {list(lm.points.shape)}, expected [{n}, 478, 3]", fix)
    if shard is not None and list(lm.frames) != list(shard.frames):
        raise bad_input(path, f"holds frames {lm.frames[:1].tolist()}..{lm.frames[-1:].tolist()} "
                        f"but shard {shard.name} is frames {shard.start}..{shard.stop - 1}", fix)
    lm.ok = lm.ok & np.isfinite(lm.points[:, :, :2]).all(axis=(1, 2))
    return lm


def fetch_landmarks(ctx: Any, shard: Shard) -> Landmarks:
    return read_landmarks(ctx.fetch(f"{shard.name}.npz", "landmarks"), shard)


def fetch_all_landmarks(ctx: Any, shards: list[Shard]) -> Landmarks:
    """Every shard's landmarks, in frame order."""
    paths = ctx.fetch_many([f"{s.name}.npz" for s in shards], "landmarks")
    return Landmarks.cat([read_landmarks(p, s) for p, s in zip(paths, shards)])


def decode_rgb(data: bytes, size: int | None = None) -> np.ndarray:
    """JPEG/PNG bytes -> uint8 [H, W, 3] RGB, area-resized to ``size x size`` when given."""
    import cv2

    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError("cannot be decoded")
    img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    if size is not None and img.shape[:2] != (size, size):
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    return img


def read_frames(tar_path: Any, numbers: Iterable[int], size: int | None = None) -> dict[int, np.ndarray]:
    """``{frame number: uint8 [S, S, 3]}`` of the wanted frames of an ingest shard tar."""
    import tarfile

    want = {frame_name(k): k for k in numbers}
    out: dict[int, np.ndarray] = {}
    # only the wanted members are read (tarfile seeks past the others' data), and the scan stops at
    # the last of them: calibrate wants 32 frames of a 10,000-frame clip's 20 shards
    with tarfile.open(tar_path, "r:") as tar:
        for info in tar:
            k = want.get(info.name)
            if k is None or not info.isfile():
                continue
            f = tar.extractfile(info)
            try:
                out[k] = decode_rgb(f.read() if f is not None else b"", size)
            except ValueError:
                raise bad_input(f"{tar_path}:{info.name}", "frame cannot be decoded", "re-run the ingest stage") from None
            if len(out) == len(want):
                break
    missing = sorted(set(want.values()) - set(out))
    if missing:
        raise bad_input(tar_path, f"frames {missing[:5]} missing", "re-run the ingest stage for this actor")
    return out


def fetch_frames(ctx: Any, shards: list[Shard], numbers: Iterable[int], size: int | None = None) -> np.ndarray:
    """uint8 [n, S, S, 3] of the given frame numbers (in the given order), from whichever shards hold them."""
    numbers = list(numbers)
    got: dict[int, np.ndarray] = {}
    for s in shards:
        mine = [k for k in numbers if s.start <= k < s.stop]
        if mine:
            got.update(read_frames(ctx.fetch(f"frames/{s.name}.tar", "ingest"), mine, size))
    return np.stack([got[k] for k in numbers])
