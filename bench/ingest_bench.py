"""Throughput of the ingest and landmarks stages on a 1080p source, using all cores.

Builds a 10-minute 1920x1080 29.97 fps H.264 clip (keyframe every 2 s, like phone footage) by
placing the real talking-head clip's frames, scaled to 720x720, on a grey canvas: a 20 s segment
is encoded once and stream-copied back to back; then runs ``ingest`` and ``landmarks`` through the stage runner with ``jobs`` = all cores
and prints one JSON object of figures on stdout (logs go to stderr).

    python bench/ingest_bench.py [--video ../shared/data/wojtek.mp4] [--seconds 600] [--shard-size 500] [--masks]

``--masks`` also runs the masks stage (default backends: MediaPipe selfie matting + landmark
parsing) on the same frames through the runner, as a local run does (``masks_fps``: shard processes,
tar I/O and load balance included).

Needs the ``tracker`` extras (av, mediapipe 0.10.21, opencv-python-headless, numpy<2).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CANDIDATES = [ROOT.parent / "shared" / "data" / "wojtek.mp4", ROOT / "shared" / "data" / "wojtek.mp4"]


def make_1080p(src: Path, dst: Path, seconds: float, loop_seconds: float = 20.0,
               fps: Fraction = Fraction(30000, 1001)) -> int:
    """Write the 1080p clip: ``loop_seconds`` encoded once (closed GOPs), then stream-copied
    back to back with shifted timestamps up to ``seconds``; return its frame count."""
    import av
    import cv2

    with av.open(str(src)) as c:
        faces = [cv2.resize(f.to_ndarray(format="rgb24"), (720, 720), interpolation=cv2.INTER_LINEAR)
                 for f in c.decode(video=0)]
    seg = dst.with_name("segment.mp4")
    n_seg = int(round(min(seconds, loop_seconds) * float(fps)))
    canvas = np.full((1080, 1920, 3), 128, dtype=np.uint8)
    with av.open(str(seg), "w") as out:
        s = out.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = 1920, 1080, "yuv420p"
        s.options = {"preset": "veryfast", "crf": "20", "g": "60", "keyint_min": "60", "sc_threshold": "0"}
        s.codec_context.thread_count = 0
        period = max(1, 2 * len(faces) - 2)
        for i in range(n_seg):
            k = i % period  # ping-pong through the clip: no jump cuts
            k = k if k < len(faces) else period - k
            canvas[200:920, 1000:1720] = faces[k]
            for p in s.encode(av.VideoFrame.from_ndarray(canvas, format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    loops = max(1, int(round(seconds / (n_seg / float(fps)))))
    with av.open(str(seg)) as inp, av.open(str(dst), "w") as out:
        ist = inp.streams.video[0]
        ost = out.add_stream_from_template(ist)
        packets = [p for p in inp.demux(ist) if p.size]
        span = max(p.pts for p in packets) + packets[0].duration - min(p.pts for p in packets)
        for k in range(loops):
            for p in packets:
                q = av.Packet(bytes(p))
                q.pts, q.dts, q.duration = p.pts + k * span, p.dts + k * span, p.duration
                q.is_keyframe = p.is_keyframe
                q.time_base = ist.time_base
                q.stream = ost
                out.mux(q)
    seg.unlink()
    return n_seg * loops


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--video", type=Path, default=next((p for p in CANDIDATES if p.is_file()), CANDIDATES[0]))
    ap.add_argument("--seconds", type=float, default=600.0, help="length of the 1080p clip (a 20 s segment looped)")
    ap.add_argument("--shard-size", type=int, default=500)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--masks", action="store_true", help="run the masks stage too")
    ap.add_argument("--device", default="auto", help="device of the GPU stages (masks): auto, cpu, cuda")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
    if not args.video.is_file():
        sys.exit(f"{args.video}: the talking-head clip is absent; pass --video PATH to a clip with one face")

    from stages.config import PipelineConfig
    from stages.runner.context import actor_key
    from stages.runner.run import run_stage
    from stages.store.uri import open_store

    work = Path(tempfile.mkdtemp(prefix="ingest-bench-"))
    try:
        t0 = time.monotonic()
        clip = work / "clip1080.mp4"
        src_frames = make_1080p(args.video, clip, args.seconds)
        encode_s = time.monotonic() - t0
        store = open_store(str(work / "store"))
        store.put_file(actor_key("b", "input", "video.mp4"), clip)
        store.put_json(actor_key("b", "config.json"),
                       PipelineConfig(stages={"ingest": {"shard_size": args.shard_size}}).to_dict())
        ing = run_stage("ingest", "b", store, jobs=args.jobs)
        lmk = run_stage("landmarks", "b", store, jobs=args.jobs)
        report = store.get_json(actor_key("b", "ingest", "report.json"))
        lreport = store.get_json(actor_key("b", "landmarks", "report.json"))
        istats = store.get_json(actor_key("b", "ingest", "manifest.json"))["stats"]
        out = {
            "source": "1920x1080 29.97 fps H.264 (keyframe every 60 frames)",
            "source_frames": src_frames, "frames_out": ing.frames, "jobs": args.jobs, "cpus": os.cpu_count(),
            "shards": report["shards"],
            "ingest_seconds": round(ing.seconds, 2), "ingest_fps": round(ing.fps, 1),
            "ingest_index_s": istats.get("index_s"), "ingest_detect_s": istats.get("detect_s"),
            "ingest_render_s": istats.get("render_s"),
            "landmarks_seconds": round(lmk.seconds, 2), "landmarks_fps": round(lmk.fps, 1),
            "ingest_plus_landmarks_fps": round(ing.frames / (ing.seconds + lmk.seconds), 1),
            "goal_fps": 500,
            "face_fraction": report["face_fraction"], "face_out_of_crop_fraction": report["face_out_of_crop_fraction"],
            "crop_side_px": report["crop"]["side"], "landmarks_ok_fraction": lreport["ok_fraction"],
            "clip_encode_seconds": round(encode_s, 2),
        }
        if args.masks:
            msk = run_stage("masks", "b", store, jobs=args.jobs, device=args.device)
            mstats = store.get_json(actor_key("b", "masks", "manifest.json"))["stats"]
            out.update({"masks_seconds": round(msk.seconds, 2), "masks_fps": round(msk.fps, 1),
                        "masks_backends": "default matting (MediaPipe selfie) + landmark parsing",
                        "masks_goal_fps": 300, "masks_stats": {k: v for k, v in mstats.items() if k != "shards"}})
        print(json.dumps(out))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
