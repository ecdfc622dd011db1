"""Streaming decode with PyAV: probe a file, index its frame timestamps, yield frames upright.

Memory stays bounded: frames are yielded one at a time and never collected. Timestamps are kept
as integers in the stream's time base (``pts``); the frame index is built from the demuxer alone
(no decoding), which is fast even for a 10-minute 1080p file.

Rotation follows ffmpeg's autorotate: the display matrix (``VideoFrame.rotation``, counter-clockwise
degrees, as ``ffprobe`` prints "rotation of 90.00 degrees") is undone by rotating the decoded
image by the same angle counter-clockwise, so the frame is shown upright.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from stages.errors import bad_input

FIX_NOT_VIDEO = "upload a video file (mp4, mov, mkv or webm with H.264, HEVC, VP9 or AV1 video)"


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe` learned about a file.

    Attributes:
        path: the file.
        codec: decoder name (``h264``, ``hevc``, ...).
        coded_width, coded_height: size of the decoded pictures, pixels.
        width, height: size as displayed (after rotation), pixels.
        rotation: display rotation, counter-clockwise degrees, one of 0, 90, 180, 270.
        mirrored: whether the display matrix also mirrors the picture (not undone; reported).
        time_base: the stream's time base, seconds per ``pts`` unit.
        avg_fps: the stream's average frame rate (frames/s), 0 when unknown.
        start_pts: the container's start time in the stream's time base; ffmpeg subtracts it
            from every timestamp before filtering (``ts_offset``).
        stream_index: index of the video stream inside the container.
    """

    path: str
    codec: str
    coded_width: int
    coded_height: int
    width: int
    height: int
    rotation: int
    mirrored: bool
    time_base: Fraction
    avg_fps: float
    start_pts: int
    stream_index: int


@dataclass(frozen=True)
class FrameIndex:
    """Presentation timestamps of every frame the demuxer delivers, in display order.

    Attributes:
        pts: int64 [N], sorted, stream time base.
        keyframe: bool [N], whether decoding can start at that frame (after a seek).
        end_pts: where the last frame ends (its pts + its duration), stream time base; this is
            the end-of-stream timestamp ffmpeg hands to its filters.
    """

    pts: np.ndarray
    keyframe: np.ndarray
    end_pts: int

    def __len__(self) -> int:
        return int(self.pts.shape[0])


def _open(path: str | Path):
    import av

    try:
        return av.open(str(path), metadata_errors="ignore")
    except (av.error.InvalidDataError, av.error.ValueError, av.error.EOFError) as e:
        raise bad_input(path, f"not a video file ({type(e).__name__})", FIX_NOT_VIDEO) from None
    except av.error.FileNotFoundError:
        raise bad_input(path, "no such file", "give the path to the talking-head video") from None
    except av.error.FFmpegError as e:
        raise bad_input(path, f"not a readable video file ({e.strerror or type(e).__name__})", FIX_NOT_VIDEO) from None


def _video_stream(container, path):
    streams = [s for s in container.streams.video if not (s.disposition and "attached_pic" in str(s.disposition).lower())]
    if not streams:
        raise bad_input(path, "not a video file (no video stream in it)", FIX_NOT_VIDEO)
    return streams[0]


def _rotation_of(frame) -> tuple[int, bool]:
    """(counter-clockwise degrees rounded to a multiple of 90, mirrored) from a frame's display
    matrix; (0, False) when it has none."""
    rot = getattr(frame, "rotation", 0) or 0
    mirrored = False
    try:
        for sd in frame.side_data:
            if "DISPLAYMATRIX" in str(sd.type):
                m = np.frombuffer(bytes(sd), dtype="<i4")
                mirrored = bool(float(m[0]) * float(m[4]) - float(m[1]) * float(m[3]) < 0)
    except Exception:  # side data layout is a detail; rotation alone is what matters
        pass
    return int(round(rot / 90.0)) * 90 % 360, mirrored


def probe(path: str | Path) -> VideoInfo:
    """Open ``path``, check its first video stream decodes, read size, rotation and time base.

    Raises:
        BadInput: not a video, no video stream, an undecodable (unsupported) codec, zero frames.
    """
    import av

    with _open(path) as container:
        stream = _video_stream(container, path)
        cc = stream.codec_context
        name = getattr(cc, "name", None) or "unknown"
        if cc is None or getattr(cc, "codec", None) is None or name in ("none", "unknown"):
            raise bad_input(path, f"unsupported video codec {stream.codec_context.codec_tag if cc else '?'!s}",
                            "re-encode it to H.264, e.g. ffmpeg -i IN -c:v libx264 -crf 16 out.mp4")
        first = None
        try:
            for frame in container.decode(stream):
                first = frame
                break
        except av.error.FFmpegError as e:
            raise bad_input(path, f"video stream cannot be decoded ({name}: {e.strerror or type(e).__name__})",
                            "re-encode it to H.264, e.g. ffmpeg -i IN -c:v libx264 -crf 16 out.mp4") from None
        if first is None:
            raise bad_input(path, "the video has zero frames", "upload a video that contains the talking head")
        rotation, mirrored = _rotation_of(first)
        tb = Fraction(stream.time_base.numerator, stream.time_base.denominator)
        start_us = container.start_time
        start_pts = 0
        if start_us is not None:
            start_pts = _rescale_near(int(start_us), Fraction(1, 1_000_000), tb)
        cw, ch = first.width, first.height
        w, h = (ch, cw) if rotation in (90, 270) else (cw, ch)
        rate = stream.average_rate or stream.guessed_rate
        return VideoInfo(path=str(path), codec=name, coded_width=cw, coded_height=ch, width=w, height=h,
                         rotation=rotation, mirrored=mirrored, time_base=tb,
                         avg_fps=float(rate) if rate else 0.0, start_pts=start_pts, stream_index=stream.index)


def _rescale_near(value: int, src: Fraction, dst: Fraction) -> int:
    """``av_rescale_q`` with ``AV_ROUND_NEAR_INF``: round half away from zero."""
    num = value * src.numerator * dst.denominator
    den = src.denominator * dst.numerator
    q, r = divmod(abs(num), den)
    if 2 * r >= den:
        q += 1
    return q if num >= 0 else -q


def index_frames(info: VideoInfo) -> FrameIndex:
    """Timestamps of all frames from the demuxer (no decoding).

    Packets the container marks as discarded (edit lists) or without a pts are left out, as the
    decoder drops them too. The end timestamp follows ffmpeg's decoder: the last frame's pts plus
    its duration, or the last pts step when the container gives no duration.

    Raises:
        BadInput: zero frames.
    """
    pts: list[int] = []
    key: list[bool] = []
    dur: list[int] = []
    with _open(info.path) as container:
        stream = container.streams[info.stream_index]
        for packet in container.demux(stream):
            if packet.pts is None or packet.size == 0 or packet.is_discard:
                continue
            pts.append(int(packet.pts))
            key.append(bool(packet.is_keyframe))
            dur.append(int(packet.duration or 0))
    if not pts:
        raise bad_input(info.path, "the video has zero frames", "upload a video that contains the talking head")
    order = np.argsort(np.asarray(pts, dtype=np.int64), kind="stable")
    p = np.asarray(pts, dtype=np.int64)[order]
    k = np.asarray(key, dtype=bool)[order]
    last_dur = int(np.asarray(dur, dtype=np.int64)[order][-1])
    if last_dur <= 0:
        steps = np.diff(p)
        steps = steps[steps > 0]
        if steps.size:
            last_dur = int(steps[-1])
        elif info.avg_fps > 0:
            last_dur = max(1, int(round(1.0 / (info.avg_fps * float(info.time_base)))))
        else:
            last_dur = 1
    return FrameIndex(pts=p, keyframe=k, end_pts=int(p[-1]) + last_dur)


def upright(image: np.ndarray, rotation: int) -> np.ndarray:
    """Undo a display rotation: ``image`` [H,W,C] rotated ``rotation`` degrees counter-clockwise
    (a view where possible, no copy)."""
    k = (rotation // 90) % 4
    return np.rot90(image, k) if k else image


def iter_frames(info: VideoInfo, index: FrameIndex, wanted: Sequence[int], *, threads: int = 0,
                fmt: str = "rgb24") -> Iterator[tuple[int, np.ndarray]]:
    """Decode the frames whose pts are in ``wanted`` and yield ``(pts, image)`` in pts order.

    ``image`` is [H,W,3] uint8 (RGB for ``rgb24``), upright (rotation undone). Decoding seeks to
    the keyframe before each wanted frame when a keyframe lies between the current position and
    it, and otherwise decodes forward, so sparse and dense requests are both cheap. Wanted pts
    that the decoder never produces are skipped (the caller sees which ones came).

    Args:
        threads: decoder threads (0: libavcodec's choice).
    """
    import av

    targets = sorted(set(int(t) for t in wanted))
    if not targets:
        return
    key_pts = index.pts[index.keyframe].tolist()

    def keyframe_between(lo: int, hi: int) -> bool:
        """Whether a keyframe has pts in ``(lo, hi]``."""
        k = bisect.bisect_right(key_pts, hi) - 1
        return k >= 0 and key_pts[k] > lo

    with _open(info.path) as container:
        stream = container.streams[info.stream_index]
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = threads
        frames = None          # the decoding generator, restarted at each seek
        pos: int | None = None  # pts of the last decoded frame
        sought = False          # the last seek has not produced a frame yet
        forward_only = False    # seeking proved unreliable: decode from the start, never seek
        ti = 0
        try:
            while ti < len(targets):
                target = targets[ti]
                if frames is None or (not forward_only and (pos is None or pos >= target
                                                             or keyframe_between(pos, target))):
                    container.seek(int(target), stream=stream, backward=True, any_frame=False)
                    frames, pos, sought = container.decode(stream), None, True
                frame = next(frames, None)
                if frame is None:
                    return  # end of stream: the rest was never produced
                if frame.pts is None:
                    continue
                fpts = int(frame.pts)
                if sought and fpts > target and not forward_only:
                    # The seek landed after the target (imprecise index): decode from the start.
                    forward_only = True
                    container.seek(int(index.pts[0]), stream=stream, backward=True, any_frame=False)
                    frames, pos = container.decode(stream), None
                    continue
                sought = False
                pos = fpts
                while ti < len(targets) and targets[ti] < fpts:
                    ti += 1  # never produced by the decoder
                if ti < len(targets) and targets[ti] == fpts:
                    yield fpts, upright(frame.to_ndarray(format=fmt), info.rotation)
                    ti += 1
        except av.error.FFmpegError as e:
            raise bad_input(info.path, f"decoding failed near pts {targets[min(ti, len(targets) - 1)]} "
                            f"({e.strerror or type(e).__name__})",
                            "re-encode the video, e.g. ffmpeg -i IN -c:v libx264 -crf 16 out.mp4") from None
