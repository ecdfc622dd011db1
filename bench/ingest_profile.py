"""Where ingest's face-detection pass and the landmarks stage spend their time on this machine:
per-process start-up, decoding, MediaPipe, with one process and with one per core.

    python bench/ingest_profile.py [--video ../shared/data/wojtek.mp4] [--seconds 60] [--jobs N]

Prints one JSON object (timings in seconds). Diagnostics for tuning, not a figure of the record.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def detect_worker(path: str, pts: list[int], t_submit: float) -> dict:
    t0 = time.time()
    from stages.video.decode import index_frames, iter_frames, probe
    from stages.video.detect import FaceDetector

    info = probe(path)
    index = index_frames(info)
    t1 = time.time()
    with FaceDetector(min_score=0.5) as det:
        t2 = time.time()
        dec = obs = 0.0
        t = time.time()
        for p, img in iter_frames(info, index, pts, threads=1):
            t3 = time.time()
            dec += t3 - t
            det.observe(img, key=p)
            t = time.time()
            obs += t - t3
    return {"start_delay": t0 - t_submit, "probe_index": t1 - t0, "init": t2 - t1, "decode": dec, "observe": obs,
            "total": time.time() - t_submit}


def mesh_worker(jpegs: list[bytes], score_every: int, t_submit: float) -> dict:
    t0 = time.time()
    import cv2
    import numpy as np

    from stages.video.facemesh import FaceMeshTracker

    with FaceMeshTracker(score_every=score_every) as tr:
        t1 = time.time()
        dec = mesh = 0.0
        for data in jpegs:
            t2 = time.time()
            img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
            t3 = time.time()
            tr.process(img)
            t4 = time.time()
            dec += t3 - t2
            mesh += t4 - t3
    return {"start_delay": t0 - t_submit, "init": t1 - t0, "decode": dec, "mesh_and_score": mesh,
            "frames": len(jpegs), "total": time.time() - t_submit}


def summary(rows: list[dict]) -> dict:
    keys = rows[0].keys()
    return {k: round(sum(r[k] for r in rows) / len(rows), 3) for k in keys}


def main() -> None:
    from ingest_bench import CANDIDATES, make_1080p

    ap = argparse.ArgumentParser()
    ap.add_argument("--video", type=Path, default=next((p for p in CANDIDATES if p.is_file()), CANDIDATES[0]))
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    from stages.ingest import OUTPUT_FPS, sample_pts
    from stages.video.decode import index_frames, iter_frames, probe
    from stages.video.render import encode_jpeg
    from stages.video.resample import fps_selection

    out: dict = {"cpus": os.cpu_count(), "jobs": args.jobs}
    with tempfile.TemporaryDirectory() as d:
        clip = Path(d) / "clip.mp4"
        make_1080p(args.video, clip, args.seconds)
        info = probe(clip)
        index = index_frames(info)
        sel = fps_selection(index.pts, index.end_pts, info.time_base, OUTPUT_FPS, info.start_pts)
        pts = sample_pts(index, sel, 64)
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["stages.video.render", "av", "cv2", "mediapipe"])
        for jobs in (1, args.jobs):
            chunks = [pts[i::jobs] for i in range(jobs)]
            t0 = time.time()
            with ctx.Pool(jobs) as pool:
                rows = pool.starmap(detect_worker, [(str(clip), sorted(c), time.time()) for c in chunks])
            out[f"detect_{jobs}_procs"] = {"wall": round(time.time() - t0, 3), "samples": len(pts), **summary(rows)}
        # 512x512 crops of the clip's middle (JPEG, as ingest writes them) for the landmarks part
        want = [int(index.pts[i]) for i in sel[: 250 * 2]]
        jpegs = []
        for _, img in iter_frames(info, index, want, threads=0):
            h, w = img.shape[:2]
            s = 700
            y0, x0 = (h - s) // 2, (w - s) // 2
            import cv2

            jpegs.append(encode_jpeg(cv2.resize(img[y0:y0 + s, x0:x0 + s], (512, 512), interpolation=cv2.INTER_AREA)))
        for score_every in (1, 8):
            for jobs in (1, args.jobs):
                t0 = time.time()
                with ctx.Pool(jobs) as pool:
                    rows = pool.starmap(mesh_worker, [(jpegs, score_every, time.time()) for _ in range(jobs)])
                wall = time.time() - t0
                out[f"mesh_every{score_every}_{jobs}_procs"] = {"wall": round(wall, 3),
                                                                 "frames_per_s": round(jobs * len(jpegs) / wall, 1),
                                                                 **summary(rows)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
