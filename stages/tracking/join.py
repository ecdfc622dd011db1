"""Join the track stage's per-shard results into one sequence, cross-fading the shard overlaps."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stages.tracking.params import PARAM_DIMS, FrameParams
from stages.tracking.smoothing import join_segments


@dataclass
class JoinedTrack:
    """Attributes:
        frames: int [N] frame numbers 1..N.
        params: ``{exp, jaw, eyes, eyelids, rot, t}`` float32 [N, ...].
        R: float32 [N, 3, 3] OpenCV rotations (from ``rot``).
        filled: bool [N]; error_px: float32 [N] (from the shard each frame belongs to).
        seam_jump_mm: per seam, the largest change of camera translation between neighbouring frames
            across the seam (a check that the cross-fade left no step).
    """

    frames: np.ndarray
    params: dict[str, np.ndarray]
    R: np.ndarray
    filled: np.ndarray
    error_px: np.ndarray
    seam_jump_mm: list[float]


def join_tracks(tracks: list[dict[str, np.ndarray]]) -> JoinedTrack:
    """Join per-shard track outputs (the arrays of ``track/<shard>.npz``, in shard order).

    Overlapping frames are cross-faded linearly over the whole overlap (twice the configured
    ``overlap``: each shard runs ``overlap`` frames into each neighbour).

    Raises:
        ValueError: if the shards' own frames are not one contiguous run.
    """
    overlap = max(int(t.get("overlap", 0)) for t in tracks)
    segments = [(np.asarray(t["frames"]), {k: t[k] for k in PARAM_DIMS}) for t in tracks]
    frames, params = join_segments(segments, ramp=2 * overlap)
    core_frames = np.concatenate([np.asarray(t["frames"])[np.asarray(t["core"], bool)] for t in tracks])
    if not np.array_equal(core_frames, frames) or not np.array_equal(frames, np.arange(frames[0], frames[0] + len(frames))):
        raise ValueError(f"shards do not tile the frames: own frames {core_frames[:3].tolist()}... "
                         f"vs covered {frames[0]}..{frames[-1]}")
    filled = np.concatenate([np.asarray(t["filled"], bool)[np.asarray(t["core"], bool)] for t in tracks])
    error = np.concatenate([np.asarray(t["error_px"], np.float32)[np.asarray(t["core"], bool)] for t in tracks])
    params = FrameParams.from_numpy(params).to_numpy()
    R = FrameParams.from_numpy(params).R.numpy()
    seams = []
    t_mm = params["t"] * 1000.0
    for t in tracks[1:]:
        first = int(np.asarray(t["frames"])[np.asarray(t["core"], bool)][0]) - int(frames[0])
        lo, hi = max(1, first - overlap), min(len(frames) - 1, first + overlap)
        seams.append(float(np.linalg.norm(np.diff(t_mm[lo - 1:hi + 1], axis=0), axis=1).max()) if hi > lo else 0.0)
    return JoinedTrack(frames=frames, params=params, R=R, filled=filled, error_px=error, seam_jump_mm=seams)
