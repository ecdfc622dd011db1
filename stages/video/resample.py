"""Which source frame each output frame shows: the exact rule of ffmpeg's ``-vf fps=25``.

The rule (ffmpeg ``libavfilter/vf_fps.c``, default options ``round=near``, ``eof_action=round``,
no ``start_time``), stated in our own words:

1. Every input timestamp is converted to the output time base (1/25 s) with round-to-nearest,
   halves away from zero: ``q_i = round_near(pts_i * time_base * 25)``. The end-of-stream
   timestamp (last frame's pts + duration) is converted the same way: ``q_end``.
2. The first output timestamp is the first frame's ``q_0``; output timestamps then count up by 1.
3. For output timestamp ``t`` the filter shows the current frame, after first dropping it for as
   long as the next frame's ``q`` is ``<= t``. So it shows the last frame with ``q <= t``,
   duplicating frames when the source is slower and dropping them when it is faster.
4. Output stops at the first ``t >= q_end`` once the last frame is current.

Two things the ``ffmpeg`` command line adds around the filter, reproduced by :func:`fps_selection`:
it first shifts every timestamp by minus the container's start time (``start_pts``), and its
constant-frame-rate output starts at that start time, so a video stream that begins ``q_0 > 0``
ticks late (audio first) opens with ``q_0`` extra copies of its first frame.

:func:`select_frames_reference` replays the filter step by step (the oracle);
:func:`select_frames` computes the same answer with ``searchsorted`` (the fast path).
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np


def to_output_ticks(pts: np.ndarray, time_base: Fraction, fps: Fraction | int = 25) -> np.ndarray:
    """Convert timestamps to output frame ticks, rounding to nearest with halves away from zero
    (``av_rescale_q_rnd(..., AV_ROUND_NEAR_INF)``), exactly, in integer arithmetic.

    Args:
        pts: int64 [N] timestamps in units of ``time_base`` seconds.
        time_base: seconds per input tick.
        fps: output frame rate (output time base is ``1/fps``).
    Returns:
        int64 [N] output ticks.
    """
    fps = Fraction(fps)
    num = time_base.numerator * fps.numerator
    den = time_base.denominator * fps.denominator
    a = np.asarray(pts, dtype=np.int64).astype(object) * num  # exact big-int products
    mag = np.abs(a)
    q = (mag + den // 2) // den
    # av_rescale_rnd NEAR_INF adds den/2 (integer division) then floors; for odd den that is the
    # same as rounding halves away from zero.
    out = np.where(a >= 0, q, -q)
    return out.astype(np.int64)


def select_frames_reference(ticks: np.ndarray, end_tick: int) -> np.ndarray:
    """Replay ffmpeg's fps filter frame by frame.

    Args:
        ticks: int64 [N] input frame timestamps in output ticks, in decode order.
        end_tick: end-of-stream timestamp in output ticks.
    Returns:
        int64 [M] for each output frame (numbered 1..M), the index into ``ticks`` of the input
        frame it shows.
    """
    ticks = [int(t) for t in ticks]
    n = len(ticks)
    out: list[int] = []
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    nxt = ticks[0]
    cur = 0
    while cur < n:
        has_next = cur + 1 < n
        if has_next and ticks[cur + 1] <= nxt:
            cur += 1  # the next frame is already due: drop the current one
        elif not has_next and end_tick <= nxt:
            break  # end of stream reached
        else:
            out.append(cur)
            nxt += 1
    return np.asarray(out, dtype=np.int64)


def select_frames(ticks: np.ndarray, end_tick: int) -> np.ndarray:
    """Same result as :func:`select_frames_reference`, vectorised, for non-decreasing ``ticks``
    (falls back to the reference otherwise).

    Output tick ``t`` runs over ``ticks[0] <= t < max(end_tick, ticks[-1])`` (when the end comes
    before the last frame's own tick, that frame is never shown) and shows the last frame whose
    tick is ``<= t``.
    """
    ticks = np.asarray(ticks, dtype=np.int64)
    if ticks.size == 0:
        return np.zeros(0, dtype=np.int64)
    if ticks.size > 1 and np.any(np.diff(ticks) < 0):
        return select_frames_reference(ticks, end_tick)
    first, last = int(ticks[0]), int(ticks[-1])
    stop = end_tick if end_tick > last else last  # exclusive
    t = np.arange(first, stop, dtype=np.int64)
    return np.searchsorted(ticks, t, side="right").astype(np.int64) - 1


def fps_selection(pts: np.ndarray, end_pts: int, time_base: Fraction, fps: Fraction | int = 25,
                  start_pts: int = 0, cli_fill: bool = True) -> np.ndarray:
    """Source frame index for every output frame of ``ffmpeg -i IN -vf fps=<fps> OUT%05d.jpg``.

    With ``cli_fill`` (the command line's behaviour), when the video starts after the file's
    start time (e.g. audio comes first), the command line's constant-frame-rate output fills the
    gap from the file's start with copies of the first frame: the ``k = round(first frame's
    time * fps)`` output ticks before it are duplicates (``*** k dup!`` in ffmpeg's log). Without
    it, the result is the ``fps`` filter's alone.

    Args:
        pts: int64 [N] source frame timestamps (stream time base), sorted.
        end_pts: end of the last frame (stream time base).
        time_base: seconds per tick of ``pts``.
        fps: output frame rate.
        start_pts: the container start time in the stream time base (ffmpeg subtracts it).
    Returns:
        int64 [M]: output frame ``k`` (numbered ``k+1`` on disk) shows source frame ``result[k]``.
    """
    pts = np.asarray(pts, dtype=np.int64) - start_pts
    ticks = to_output_ticks(pts, time_base, fps)
    end_tick = int(to_output_ticks(np.asarray([end_pts - start_pts]), time_base, fps)[0])
    selected = select_frames(ticks, end_tick)
    lead = int(ticks[0]) if ticks.size else 0
    if cli_fill and lead > 0 and selected.size:
        selected = np.concatenate([np.full(lead, selected[0], dtype=np.int64), selected])
    return selected
