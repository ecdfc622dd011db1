"""Time-axis helpers: fill frames whose landmarks failed, and cross-fade overlapping segments.

All functions work on numpy arrays with time as the first axis. Rotations in 6D may be filled or
blended linearly; :meth:`stages.tracking.params.FrameParams.to_numpy` re-orthonormalises them.
"""

from __future__ import annotations

import numpy as np


def fill_missing(values: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """Linear interpolation in time over frames where ``ok`` is False.

    Args:
        values: [N, ...] per-frame values (entries of bad frames are ignored, may be NaN).
        ok: [N] bool, True where the value is valid.

    Returns:
        [N, ...] float array: valid rows unchanged, bad rows interpolated between the nearest valid
        rows before and after (held constant before the first / after the last valid row).

    Raises:
        ValueError: when no frame is valid.
    """
    ok = np.asarray(ok, dtype=bool)
    values = np.asarray(values, dtype=np.float64)
    if ok.all():
        return values.copy()
    if not ok.any():
        raise ValueError("no valid frame to interpolate from")
    n = values.shape[0]
    good = np.flatnonzero(ok)
    flat = values.reshape(n, -1)
    out = flat.copy()
    t = np.arange(n)
    for j in range(flat.shape[1]):  # per column, vectorised over time (columns are few hundred at most)
        out[:, j] = np.interp(t, good, flat[good, j])
    return out.reshape(values.shape)


def segment_weights(frames: np.ndarray, ramp: int) -> np.ndarray:
    """Cross-fade weight of each frame of one segment: rises linearly over ``ramp`` frames from each
    end, ``(distance to the nearer end + 1) / (ramp + 1)`` clipped to 1.

    Two segments overlapping by exactly ``ramp`` frames get weights that sum to 1 on the overlap
    (a linear cross-fade); where a frame has one segment, normalisation makes its weight 1.

    Args:
        frames: [n] consecutive frame numbers of the segment.
    """
    n = len(frames)
    pos = np.arange(n)
    dist = np.minimum(pos, n - 1 - pos)
    return np.clip((dist + 1.0) / (max(ramp, 0) + 1.0), 0.0, 1.0)


def join_segments(segments: list[tuple[np.ndarray, dict[str, np.ndarray]]], ramp: int
                  ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Join segments of per-frame arrays that overlap at their seams, cross-fading the overlaps.

    Args:
        segments: ``[(frames [n_s] int, {name: [n_s, ...] array}), ...]``; frames consecutive within
            a segment; together the segments cover a contiguous range.
        ramp: overlap length the cross-fade spans (see :func:`segment_weights`).

    Returns:
        (frames [N] sorted, {name: [N, ...] float32}) with each frame the weighted mean of the
        segments covering it.

    Raises:
        ValueError: when the union of the segments has holes.
    """
    lo = min(int(f[0]) for f, _ in segments)
    hi = max(int(f[-1]) for f, _ in segments) + 1
    frames = np.arange(lo, hi)
    total_w = np.zeros(hi - lo)
    out: dict[str, np.ndarray] = {}
    for f, arrays in segments:
        w = segment_weights(f, ramp)
        idx = np.asarray(f, dtype=np.int64) - lo
        total_w[idx] += w
        for name, a in arrays.items():
            a = np.asarray(a, dtype=np.float64)
            if name not in out:
                out[name] = np.zeros((hi - lo,) + a.shape[1:])
            out[name][idx] += w.reshape((-1,) + (1,) * (a.ndim - 1)) * a
    if (total_w == 0).any():
        missing = frames[total_w == 0]
        raise ValueError(f"segments leave frames {missing[:5].tolist()} uncovered")
    return frames, {k: (v / total_w.reshape((-1,) + (1,) * (v.ndim - 1))).astype(np.float32) for k, v in out.items()}
