"""H.264 on every core: a video encoded as independent segments in parallel, then joined without
re-encoding.

One libx264 encoder does not keep many cores busy at 512x512 (its frame threads wait on each other;
``bench/drive_bench.py``'s ``encode_fps``: about 370-580 frames/s on 16 cores), so a long drive is bound by its
encoder, not by the GPU. :class:`SegmentedWriter` cuts the frame stream into segments of
``segment_frames`` frames; each segment is encoded on its own by a pool of ``workers`` threads (x264
and PyAV's encode release the GIL), every segment starting with a key frame, and :func:`join_segments`
copies their packets, timestamps shifted, into one MP4. The result is one ordinary H.264 stream at
``fps`` with ``frames`` frames; a key frame every ``segment_frames`` frames is the only trace.

Memory is bounded: the producer blocks while ``workers + 1`` segments wait or encode, so at most
``(workers + 1) x segment_frames`` frames are held, and ``workers`` is lowered until that fits
:data:`MAX_BUFFER_BYTES`.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path

import numpy as np

from stages.gauss.preview import PreviewWriter

SEGMENT_FRAMES = 250
"""Frames per segment (10 s at 25 fps, x264's own key-frame interval). Shorter segments cost size: on
``bench/encode_bench.py``'s clip 64-frame segments made a 512x512 video 69% larger than one encoder's,
128-frame ones 11% larger, 250-frame ones 13% smaller (one x264 thread per segment compresses a little
better than x264's frame threads)."""

MAX_BUFFER_BYTES = 2 << 30
"""Most bytes of frames one writer holds (segments waiting or being encoded): fewer workers for large
frames (a 1024x512 segment of 250 frames is 393 MB, so at most 4 workers, 5 segments)."""


def _cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def default_workers() -> int:
    """Encoder threads for this machine: the CPUs this process may use, at most 8."""
    return min(8, _cpus())


class SegmentedWriter:
    """Write ``[H, W, 3]`` uint8 RGB frames (or ``[B, H, W, 3]`` batches) to an H.264 MP4 at ``path``,
    encoding segments in parallel (see the module docstring). ``close`` joins the segments and
    re-raises the first encoder error, if any. Use as a context manager.

    Args:
        path: the output MP4.  width, height: frame size in pixels (odd sizes padded to even).
        fps: frames per second.  crf: x264 quality (lower is better).
        segment_frames: frames per independently encoded segment.
        workers: encoder threads (default :func:`default_workers`); 1 encodes one segment at a time.
            Fewer when ``workers + 1`` segments of RGB frames would exceed ``max_buffer_bytes``.
    """

    def __init__(self, path: str | Path, width: int, height: int, fps: int = 25, crf: int = 20,
                 segment_frames: int = SEGMENT_FRAMES, workers: int | None = None,
                 max_buffer_bytes: int = MAX_BUFFER_BYTES):
        if segment_frames < 1:
            raise ValueError(f"segment_frames must be >= 1, got {segment_frames}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.width, self.height, self.fps, self.crf = width, height, fps, crf
        self.segment_frames = segment_frames
        per_segment = segment_frames * (width + width % 2) * (height + height % 2) * 3
        self.workers = max(1, min(workers or default_workers(), max_buffer_bytes // per_segment - 1))
        self._x264_threads = max(1, _cpus() // self.workers)  # the cores shared out, not oversubscribed
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix=f"encode-{self.path.name}")
        self._slots = threading.BoundedSemaphore(self.workers + 1)
        self._parts: list[Path] = []
        self._futures: list[Future] = []
        self._buf: list[np.ndarray] = []
        self.frames = 0
        self._closed = False

    def _part(self, k: int) -> Path:
        return self.path.with_name(f".{self.path.stem}.part{k:05d}.mp4")

    def write(self, frames: np.ndarray) -> None:
        self._raise_failed()
        for frame in (frames if frames.ndim == 4 else frames[None]):
            self._buf.append(np.ascontiguousarray(frame, dtype=np.uint8))
            self.frames += 1
            if len(self._buf) == self.segment_frames:
                self._submit()

    def _submit(self) -> None:
        if not self._buf:
            return
        self._slots.acquire()  # blocks while workers + 1 segments are held
        part = self._part(len(self._parts))
        self._parts.append(part)
        frames, self._buf = self._buf, []
        self._futures.append(self._pool.submit(self._encode, part, frames))

    def _encode(self, part: Path, frames: list[np.ndarray]) -> None:
        try:
            with PreviewWriter(part, self.width, self.height, self.fps, crf=self.crf,
                               threads=self._x264_threads) as w:
                for f in frames:
                    w.write(f)
        finally:
            self._slots.release()

    def _raise_failed(self) -> None:
        for f in self._futures:
            if f.done() and f.exception() is not None:
                raise f.exception()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._submit()
            for f in self._futures:
                f.result()
            if self._parts:  # no frame: no file, as with PreviewWriter
                join_segments(self._parts, self.path, self.fps)
        finally:
            self._pool.shutdown(wait=True)
            for p in self._parts:
                p.unlink(missing_ok=True)

    def __enter__(self) -> "SegmentedWriter":
        return self

    def abort(self) -> None:
        """Stop without writing ``path`` (an error upstream): queued segments are dropped, no part kept."""
        if self._closed:
            return
        self._closed = True
        self._pool.shutdown(wait=True, cancel_futures=True)
        for p in self._parts:
            p.unlink(missing_ok=True)

    def __exit__(self, exc_type, *exc) -> None:  # noqa: ANN001
        if exc_type is None:
            self.close()
        else:
            self.abort()


def join_segments(parts: list[Path], out: str | Path, fps: int = 25) -> int:
    """Copy the H.264 packets of ``parts`` (MP4s of the same size and settings, each starting with a
    key frame) one after the other into ``out``, timestamps shifted by the frames before; no
    re-encoding. Returns the number of video packets written."""
    import av

    written = 0
    with av.open(str(out), mode="w") as oc:
        ost = None
        start = Fraction(0)  # seconds: where the next part begins
        for part in parts:
            with av.open(str(part)) as ic:
                ist = ic.streams.video[0]
                if ost is None:
                    add = getattr(oc, "add_stream_from_template", None)
                    ost = add(ist) if add is not None else oc.add_stream(template=ist)
                    ost.time_base = ist.time_base
                tb = Fraction(ist.time_base)
                shift = round(start / tb)
                n = 0
                for pkt in ic.demux(ist):
                    if pkt.dts is None:  # the demuxer's flush packet
                        continue
                    pkt.pts = None if pkt.pts is None else pkt.pts + shift
                    pkt.dts += shift
                    pkt.stream = ost
                    oc.mux(pkt)
                    n += 1
                start += Fraction(n, fps)
                written += n
    return written
