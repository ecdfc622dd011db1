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
from stages.video.container import open_input

FIX_ZERO = "upload a video that shows the talking head (the file may be truncated: upload it again)"
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

    if not Path(path).is_file():
        raise bad_input(path, "no such file", "give the path to the talking-head video")
    try:
        return open_input(path)
    except av.error.EOFError:
        raise bad_input(path, "the video has zero frames (the file ends before its first frame)", FIX_ZERO) from None
    except av.error.FFmpegError as e:
        raise bad_input(path, f"not a video file ({e.strerror or type(e).__name__})", FIX_NOT_VIDEO) from None


def _video_stream(container, path):
    streams = [s for s in container.streams.video if not (s.disposition and "attached_pic" in str(s.disposition).lower())]
    if len(container.streams) == 0:
        raise bad_input(path, "the video has zero frames (the file holds no streams)", FIX_ZERO)
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
            raise bad_input(path, "unsupported video codec (no decoder for it in this build)",
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
            raise bad_input(path, "the video has zero frames", FIX_ZERO)
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
        raise bad_input(info.path, "the video has zero frames", FIX_ZERO)
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

    ``image`` is [H,W,3] uint8 (RGB for ``rgb24``), upright (rotation undone). See
    :func:`iter_decoded` for how decoding seeks."""
    for pts, frame in iter_decoded(info, index, wanted, threads=threads):
        yield pts, upright(frame.to_ndarray(format=fmt), info.rotation)


def iter_decoded(info: VideoInfo, index: FrameIndex, wanted: Sequence[int], *,
                 threads: int = 0) -> Iterator[tuple[int, "av.VideoFrame"]]:
    """Decode the frames whose pts are in ``wanted`` and yield ``(pts, av.VideoFrame)`` in pts
    order (the frame is only valid until the next one is requested). Decoding seeks to
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
        retries = 0             # seeks further back after landing past the target
        last_seek: int | None = None  # seek at most once per target (a seek may land early)
        ti = 0
        try:
            while ti < len(targets):
                target = targets[ti]
                if frames is None or (target != last_seek and (
                        pos is None or pos >= target or keyframe_between(pos, target))):
                    container.seek(int(target), stream=stream, backward=True, any_frame=False)
                    frames, pos, sought, last_seek = container.decode(stream), None, True, target
                frame = next(frames, None)
                if frame is None:
                    return  # end of stream: the rest was never produced
                if frame.pts is None:
                    continue
                fpts = int(frame.pts)
                if sought and fpts > target and retries < 2:
                    # The seek landed after the target (imprecise index): back up a keyframe more.
                    retries += 1
                    k = bisect.bisect_right(key_pts, target) - 1 - retries
                    container.seek(int(key_pts[k]) if k >= 0 else int(index.pts[0]) - 1, stream=stream,
                                   backward=True, any_frame=False)
                    frames, pos = container.decode(stream), None
                    continue
                retries = 0
                sought = False
                pos = fpts
                while ti < len(targets) and targets[ti] < fpts:
                    ti += 1  # never produced by the decoder
                if ti < len(targets) and targets[ti] == fpts:
                    yield fpts, frame
                    ti += 1
        except av.error.FFmpegError as e:
            raise bad_input(info.path, f"decoding failed near pts {targets[min(ti, len(targets) - 1)]} "
                            f"({e.strerror or type(e).__name__})",
                            "re-encode the video, e.g. ffmpeg -i IN -c:v libx264 -crf 16 out.mp4") from None


ROI_FORMATS = ("yuv420p",)  # pixel formats :func:`frame_roi` converts itself (limited-range BT.601)


def display_rect_to_coded(rect: tuple[int, int, int, int], rotation: int, coded_w: int,
                          coded_h: int) -> tuple[int, int, int, int]:
    """Map a display rectangle (x0, y0, x1, y1; exclusive ends) to the coded picture's
    rectangle it comes from, for a display that is the coded picture rotated ``rotation``
    degrees counter-clockwise (:func:`upright`)."""
    c0, r0, c1, r1 = rect
    k = (rotation // 90) % 4
    if k == 0:
        return c0, r0, c1, r1
    if k == 1:  # D[i, j] = A[j, W-1-i]
        return coded_w - r1, c0, coded_w - r0, c1
    if k == 2:  # D[i, j] = A[H-1-i, W-1-j]
        return coded_w - c1, coded_h - r1, coded_w - c0, coded_h - r0
    return r0, coded_h - c1, r1, coded_h - c0  # k == 3: D[i, j] = A[H-1-j, i]


def coded_rect_to_display(rect: tuple[int, int, int, int], rotation: int, coded_w: int,
                          coded_h: int) -> tuple[int, int, int, int]:
    """Inverse of :func:`display_rect_to_coded`."""
    x0, y0, x1, y1 = rect
    k = (rotation // 90) % 4
    if k == 0:
        return x0, y0, x1, y1
    if k == 1:
        return y0, coded_w - x1, y1, coded_w - x0
    if k == 2:
        return coded_w - x1, coded_h - y1, coded_w - x0, coded_h - y0
    return coded_h - y1, x0, coded_h - y0, x1


def frame_roi(frame, info: VideoInfo, rect: tuple[int, int, int, int], order: str = "rgb") -> tuple[np.ndarray, int, int]:
    """RGB (or, with ``order="bgr"``, BGR) pixels of (at least) the display rectangle ``rect`` (x0, y0, x1, y1, clamped to the
    picture), converted from YUV only there.

    Returns ``(image [h,w,3] uint8 upright, x0, y0)``: the part of the upright frame whose
    top-left display pixel is (x0, y0). ``yuv420p`` frames of even size are cut in YUV and
    converted with OpenCV (BT.601 limited range, like swscale's default); other formats are
    converted whole by libswscale first.
    """
    import cv2

    cw, ch = info.coded_width, info.coded_height
    fmt = frame.format.name
    if fmt not in ROI_FORMATS or cw % 2 or ch % 2 or str(getattr(frame, "color_range", "")).endswith("JPEG"):
        image = upright(frame.to_ndarray(format=f"{order}24"), info.rotation)
        x0, y0 = max(0, rect[0]), max(0, rect[1])
        return image[y0:max(y0 + 1, rect[3]), x0:max(x0 + 1, rect[2])], x0, y0
    a0, b0, a1, b1 = display_rect_to_coded(rect, info.rotation, cw, ch)
    a0, b0 = max(0, a0) & ~1, max(0, b0) & ~1                      # x, y starts: even, inside
    a1, b1 = min(cw, a1 + (a1 & 1)), min(ch, b1 + (b1 & 1))        # ends: even, inside
    a1, b1 = max(a1, a0 + 2), max(b1, b0 + 2)
    flat = frame.to_ndarray(format="yuv420p").reshape(-1)          # planes Y, U, V back to back
    q = (ch // 2) * (cw // 2)
    y = flat[:ch * cw].reshape(ch, cw)
    u = flat[ch * cw:ch * cw + q].reshape(ch // 2, cw // 2)
    v = flat[ch * cw + q:ch * cw + 2 * q].reshape(ch // 2, cw // 2)
    h, w = b1 - b0, a1 - a0
    buf = np.concatenate([y[b0:b1, a0:a1].reshape(-1), u[b0 // 2:b1 // 2, a0 // 2:a1 // 2].reshape(-1),
                          v[b0 // 2:b1 // 2, a0 // 2:a1 // 2].reshape(-1)]).reshape(h * 3 // 2, w)
    rgb = cv2.cvtColor(buf, cv2.COLOR_YUV2BGR_I420 if order == "bgr" else cv2.COLOR_YUV2RGB_I420)
    dx0, dy0, _, _ = coded_rect_to_display((a0, b0, a1, b1), info.rotation, cw, ch)
    return upright(rgb, info.rotation), dx0, dy0
