"""Worker jobs of the ingest stage: observe the face in sampled frames; cut, resize and encode the
output frames of one shard into a tar. Both are plain functions of picklable arguments so they run
in worker processes, each decoding only its own time range of the video (seeking there)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stages.frameshard import frame_name, write_shard_tar
from stages.video.crop import CropBox, cut
from stages.video.decode import FrameIndex, VideoInfo, frame_roi, iter_decoded, iter_frames
from stages.video.detect import FaceDetector, FaceObservation

JPEG_QUALITY = 95  # libjpeg quality of the 512x512 frames (4:2:0); visually lossless for training


def observe_samples(info: VideoInfo, index: FrameIndex, sample_pts: Sequence[int], threads: int = 0,
                    min_score: float = 0.5) -> list[FaceObservation]:
    """Decode the frames at ``sample_pts`` (stream time base) and observe the face in each.

    Returns one observation per decoded sample, ``key`` = its pts, in pts order."""
    out = []
    with FaceDetector(min_score=min_score) as det:
        for pts, image in iter_frames(info, index, sample_pts, threads=threads):
            out.append(det.observe(image, key=pts))
    return out


def encode_jpeg(image: np.ndarray, quality: int = JPEG_QUALITY, order: str = "rgb") -> bytes:
    """JPEG bytes of a uint8 image [H,W,3] whose channels are in ``order`` (``rgb`` or ``bgr``)."""
    import cv2

    bgr = image if order == "bgr" else np.ascontiguousarray(image[:, :, ::-1])
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


@dataclass
class ShardResult:
    """What :func:`render_shard` wrote.

    Attributes:
        path: the tar.
        frames: frames written.
        missing: output frame numbers whose source frame the decoder never produced (they show
            the nearest earlier decoded frame instead, as ffmpeg would).
    """

    path: str
    frames: int
    missing: list[int]


def render_shard(info: VideoInfo, index: FrameIndex, numbers: Sequence[int], src_pts: Sequence[int], crop: CropBox,
                 out_path: str | Path, *, size: int = 512, quality: int = JPEG_QUALITY, pad: str = "edge",
                 threads: int = 0) -> ShardResult:
    """Write output frames ``numbers`` (``00001.jpg`` ...) of one shard to a tar at ``out_path``.

    Args:
        numbers: output frame numbers, ascending.
        src_pts: for each number, the pts of the source frame it shows (non-decreasing).
        crop: the crop of the whole video (display pixels).
        size: output side, pixels.
    The tar is streamed: only the current frame is held in memory.
    """
    numbers = list(numbers)
    src_pts = [int(p) for p in src_pts]
    missing: list[int] = []

    rect = (crop.x0, crop.y0, crop.x0 + crop.side, crop.y0 + crop.side)

    def members() -> Iterator[tuple[str, bytes]]:
        i = 0
        last: bytes | None = None
        for pts, frame in iter_decoded(info, index, src_pts, threads=threads):
            roi, rx, ry = frame_roi(frame, info, rect, "bgr")  # convert only the crop's part of the picture
            data = encode_jpeg(cut(roi, CropBox(crop.x0 - rx, crop.y0 - ry, crop.side), size, pad), quality, "bgr")
            while i < len(numbers) and src_pts[i] <= pts:
                if src_pts[i] < pts:
                    missing.append(numbers[i])
                    yield frame_name(numbers[i]), last if last is not None else data
                else:
                    yield frame_name(numbers[i]), data
                i += 1
            last = data
            if i >= len(numbers):
                break
        while i < len(numbers) and last is not None:
            missing.append(numbers[i])
            yield frame_name(numbers[i]), last
            i += 1

    n = write_shard_tar(out_path, members())
    return ShardResult(str(out_path), n, missing)
