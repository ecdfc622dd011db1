"""Synthetic clips with sound: white flashes and 1 kHz beeps at the same known instants.

For checking that the audio ingest extracts lands on the 25 fps frame timeline: the flash frames'
output indices and the beep onsets in ``audio.wav`` must agree (tests and benchmarks only).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class FlashClip:
    """What :func:`write_flash_clip` wrote.

    Attributes:
        path: the file.
        flash_frames: indices (display order, from 0) of the first white frame of each flash.
        flash_times: their presentation times, seconds from the first video frame.
        pts: every video frame's pts (stream time base ``time_base``).
    """

    path: Path
    flash_frames: list[int]
    flash_times: list[Fraction]
    pts: list[int]
    time_base: Fraction


def write_flash_clip(path: str | Path, seconds: float = 2.0, fps: Fraction | int = 25, *,
                     width: int = 1920, height: int = 1080, flashes: Sequence[float] = (0.5, 1.3),
                     vfr: bool = False, start: float = 0.0, audio_lead: float = 0.0, audio: bool = True,
                     sample_rate: int = 48000, beep_s: float = 0.12, flash_s: float = 0.1) -> FlashClip:
    """Write a clip: grey frames, white for ``flash_s`` from the frames nearest ``flashes`` (s), and (``audio``)
    a stereo AAC track, silent except a 1 kHz beep starting exactly at each flash frame's time.

    Args:
        fps: nominal video frame rate (``Fraction(30000, 1001)`` for 29.97).
        vfr: irregular frame durations (between 0.6 and 1.4 frame periods, fixed pattern).
        start: the first video frame's time, s (a non-zero start time: use an ``.mkv`` path, whose
            timestamps are kept as written).
        audio_lead: the audio starts this much earlier than the video (s, >= 0).
    """
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fps = Fraction(fps).limit_denominator(1001)
    tb = Fraction(1, 90000)
    n = int(round(seconds * fps))
    step = 90000 / fps
    if vfr:
        pattern = np.array([0.6, 1.4, 1.0, 0.8, 1.2, 0.7, 1.3])
        durs = [int(round(float(step) * pattern[i % len(pattern)])) for i in range(n)]
    else:
        durs = [int(round(float(step) * (i + 1))) - int(round(float(step) * i)) for i in range(n)]
    base = int(round(start * 90000))
    pts = [base + int(v) for v in np.concatenate([[0], np.cumsum(durs)[:-1]])]
    times = [Fraction(p - base) * tb for p in pts]
    flash_frames = sorted({int(np.argmin([abs(float(t) - f) for t in times])) for f in flashes})
    # a flash lasts flash_s from its first frame, so that a 25 fps selection never drops all of it
    white_set = {i for k in flash_frames for i in range(n) if times[k] <= times[i] < times[k] + Fraction(flash_s)}
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        vs.time_base = tb
        vs.codec_context.time_base = tb
        vs.options = {"preset": "ultrafast", "crf": "30", "bf": "0", "g": "25"}
        aud = None
        if audio:
            aud = out.add_stream("aac", rate=sample_rate, layout="stereo")
        grey = np.full((height * 3 // 2, width), 128, np.uint8)
        grey[:height] = 60
        white = np.full((height * 3 // 2, width), 128, np.uint8)
        white[:height] = 235
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(white if i in white_set else grey, format="yuv420p")
            frame.pts = pts[i]
            frame.time_base = tb
            for p in vs.encode(frame):
                out.mux(p)
        for p in vs.encode():
            out.mux(p)
        if aud is not None:
            a0 = start - audio_lead
            total = int(round((seconds + audio_lead) * sample_rate))
            sig = np.zeros(total, np.float32)
            t = np.arange(int(beep_s * sample_rate)) / sample_rate
            for k in flash_frames:
                s0 = int(round((float(times[k]) + audio_lead) * sample_rate))
                seg = 0.5 * np.sin(2 * np.pi * 1000 * t).astype(np.float32)
                sig[s0:s0 + seg.size] = seg[:max(0, total - s0)]
            first_pts = int(round(a0 * sample_rate))
            for s in range(0, total, 1024):
                chunk = np.ascontiguousarray(np.stack([sig[s:s + 1024]] * 2))
                f = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
                f.sample_rate = sample_rate
                f.pts = first_pts + s
                f.time_base = Fraction(1, sample_rate)
                for p in aud.encode(f):
                    out.mux(p)
            for p in aud.encode(None):
                out.mux(p)
    return FlashClip(path, flash_frames, [times[k] for k in flash_frames], pts, tb)


def beep_onsets(samples: np.ndarray, rate: int, threshold: float = 0.1, min_gap_s: float = 0.2) -> list[float]:
    """Onset times (s) of tone bursts in mono ``samples`` (int16, or float in [-1, 1]): the first
    sample whose magnitude exceeds ``threshold`` of full scale after ``min_gap_s`` of quiet."""
    x = np.asarray(samples).reshape(-1)
    x = x / 32768.0 if x.dtype.kind in "iu" else x.astype(np.float64)
    out: list[float] = []
    last = -np.inf
    for i in np.flatnonzero(np.abs(x) > threshold):
        if i - last > min_gap_s * rate:
            out.append(i / rate)
        last = i
    return out
