"""H.264 encoding of a drive's outputs: one x264 encoder against segments encoded in parallel
(:class:`stages.video.segments.SegmentedWriter`), at drive.mp4's size (512x512) and side_by_side.mp4's
(1024x512). Prints one JSON object (frames/s of each).

    python bench/encode_bench.py [--frames 600] [--workers N] [--segment 64]

The frames are a smooth moving picture (a blurred random image rolled by a few pixels a frame), closer to
a render than noise, which x264 cannot compress. Also measured: JPEG decoding of 512x512 crops (what
side_by_side.mp4 does per frame to show the driver), one thread.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stages.gauss.preview import PreviewWriter  # noqa: E402
from stages.video.segments import SEGMENT_FRAMES, SegmentedWriter, default_workers  # noqa: E402


def frames_of(n: int, w: int, h: int = 512) -> list[np.ndarray]:
    import cv2

    rng = np.random.default_rng(0)
    base = cv2.resize(rng.integers(0, 255, (h // 16, w // 16, 3), np.uint8), (w, h), interpolation=cv2.INTER_CUBIC)
    return [np.roll(base, 2 * i, axis=1) for i in range(n)]


def rate(writer, frames: list[np.ndarray]) -> float:  # noqa: ANN001
    t0 = time.perf_counter()
    with writer as w:
        for f in frames:
            w.write(f)
    return round(len(frames) / (time.perf_counter() - t0), 1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=600)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--segment", type=int, default=SEGMENT_FRAMES)
    a = ap.parse_args()
    import cv2

    work = Path(tempfile.mkdtemp(prefix="encode-bench-"))
    out: dict = {"frames": a.frames, "workers": a.workers or default_workers(), "segment_frames": a.segment}
    for w in (512, 1024):
        fr = frames_of(a.frames, w)
        out[f"one_encoder_fps_{w}x512"] = rate(PreviewWriter(work / f"one{w}.mp4", w, 512), fr)
        out[f"segmented_fps_{w}x512"] = rate(SegmentedWriter(work / f"seg{w}.mp4", w, 512, segment_frames=a.segment,
                                                             workers=a.workers), fr)
    jpgs = [cv2.imencode(".jpg", f[:, :, ::-1])[1].tobytes() for f in frames_of(min(a.frames, 200), 512)]
    t0 = time.perf_counter()
    for j in jpgs:
        cv2.cvtColor(cv2.imdecode(np.frombuffer(j, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    out["jpeg_decode_512_fps"] = round(len(jpgs) / (time.perf_counter() - t0), 1)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
