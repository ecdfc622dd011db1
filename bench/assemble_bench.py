"""Benchmark of the assemble stage alone, on a synthetic store of N frames (CPU is enough).

    python bench/assemble_bench.py [--frames 250,10000] [--shard-size 500] [--repeat 2] [--workdir DIR]
                                   [--jobs N] [--overlay-every 0] [--jitter-frames N] [--device cpu|cuda]
                                   [--profile] [--keep]

On the GPU machine (issue 17: <= 2 s for 250 frames, <= 5 s for 10,000)::

    python bench/assemble_bench.py --frames 250,10000 --repeat 2 --device cuda

Writes what ingest, landmarks, masks, calibrate and track would have written for an N-frame clip
(512x512 JPEG frames with texture, so their size is like real frames; 0/255 PNG masks; a plain
calibration; per-shard track results with overlaps, as the track stage writes them), with their
manifests, into a fresh local store; then runs ``assemble`` on it and times it. Upstream arrays are
random but valid (6D rotations of proper rotations), so the dataset verification runs in full; the
landmarks are the tracked face's own (stand-in model) plus 0.8 px of noise, so the steadiness
figures' frame-by-frame fit has a face to fit.

Prints one JSON object, ``{"runs": [...]}``, one entry per run (also on stderr as it ends): frames,
seconds, frames/s, CPU seconds of this process and its workers
(user + system: what a loaded machine does not inflate), the stage's own phase times
(``report.json``), the machine's core count and its load average before the run. With ``--profile`` the 25 costliest
functions (cumulative, then own time) go to stderr; profile with ``--jobs 1`` (workers are not profiled).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _tar(members: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _frame_images(count: int, size: int = 512, seed: int = 0) -> list[bytes]:
    """``count`` distinct textured JPEGs at quality 95 (about 40 KB: the size of a real 512x512 face
    frame from ingest)."""
    import cv2

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size].astype(np.float32) / size
    out = []
    for i in range(count):
        base = np.stack([120 + 60 * np.sin(6 * xx + i * 0.3) * np.cos(5 * yy),
                         100 + 50 * np.cos(7 * yy - i * 0.2), 90 + 40 * np.sin(4 * (xx + yy))], -1)
        img = np.clip(base + rng.normal(0, 1.5, base.shape), 0, 255).astype(np.uint8)
        out.append(cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes())
    return out


def build_store(root: Path, actor: str, n: int, shard_size: int, overlap: int = 8, seed: int = 0):  # noqa: ANN201
    """A local store holding finished ingest, landmarks, masks, calibrate and track outputs for an
    ``n``-frame clip; returns the store."""
    import cv2
    import torch

    from stages.face.flame import FLAME
    from stages.face.model import load_face_model
    from stages.face.rotation import axis_angle_to_matrix, matrix_to_rotation_6d, rotation_6d_to_matrix
    from stages.tracking.params import FRONTAL_R, FrameParams, project
    from stages.runner.manifest import Manifest
    from stages.runner.shards import plan_shards, shards_document
    from stages.store.local import LocalStore
    from stages.tracking.calibration import Calibration
    from stages.tracking.params import PARAM_DIMS

    store = LocalStore(root)
    shards = plan_shards(n, shard_size)
    rng = np.random.default_rng(seed)
    shape = rng.normal(0, 0.5, 300).astype(np.float32)
    data = load_face_model()
    model = FLAME(data)
    shape_t = torch.as_tensor(shape)[None]
    mp_index = np.asarray(data.mp_index)
    front = torch.tensor(FRONTAL_R)

    def frontal(r6: np.ndarray) -> np.ndarray:
        """Small head turns about the frontal camera (the face towards the camera)."""
        return matrix_to_rotation_6d(rotation_6d_to_matrix(torch.as_tensor(r6)) @ front).numpy()
    outputs: dict[str, dict[str, str]] = {s: {} for s in ("ingest", "landmarks", "masks", "calibrate", "track")}

    def put(stage: str, rel: str, data: bytes) -> None:
        key = f"actors/{actor}/{stage}/{rel}"
        outputs[stage][key] = store.put_bytes(key, data)

    def npz(**arrays: np.ndarray) -> bytes:
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        return buf.getvalue()

    put("ingest", "shards.json", json.dumps(shards_document(n, 25.0, shards)).encode())
    images = _frame_images(16)
    # masks differ from frame to frame (509 variants, more than a chunk's frames); 30% of the mouths
    # are closed (an empty mask, identical bytes), as in talking-head footage
    yy, xx = np.mgrid[:512, :512]
    alphas, necks, mouths = [], [], []
    for v in range(509):
        r, cx, cy = 150 + v % 41, 256 + v % 23 - 11, 240 + v % 17 - 8
        disc = ((((xx - cx) ** 2 + (yy - cy) ** 2) < r ** 2) * 255).astype(np.uint8)
        mouth = np.zeros((512, 512), np.uint8)
        if v % 10 >= 3:
            mouth[330 + v % 9:360 + v % 13, 220 + v % 11:290 + v % 7] = 255
        alphas.append(cv2.imencode(".jpg", cv2.GaussianBlur(disc, (9, 9), 3))[1].tobytes())
        necks.append(cv2.imencode(".png", disc)[1].tobytes())
        mouths.append(cv2.imencode(".png", mouth)[1].tobytes())
    for s in shards:
        put("ingest", f"frames/{s.name}.tar", _tar([(f"{k:05d}.jpg", images[k % len(images)]) for k in s.frames]))
        masks = []
        for k in s.frames:
            v = k % len(necks)
            masks += [(f"alpha/{k:05d}.jpg", alphas[v]), (f"parsing/{k:05d}_neckhead.png", necks[v]),
                      (f"parsing/{k:05d}_mouth.png", mouths[v])]
        put("masks", f"{s.name}.tar", _tar(masks))
        lo, hi = max(1, s.start - overlap), min(n + 1, s.stop + overlap)
        frames = np.arange(lo, hi, dtype=np.int64)
        m = len(frames)

        def rot6(count: int, scale: float) -> np.ndarray:
            aa = torch.as_tensor(rng.normal(0, scale, (count, 3)), dtype=torch.float32)
            return matrix_to_rotation_6d(axis_angle_to_matrix(aa)).numpy()

        params = {"exp": rng.normal(0, 0.3, (m, PARAM_DIMS["exp"])).astype(np.float32), "jaw": rot6(m, 0.05),
                  "eyes": np.concatenate([rot6(m, 0.05), rot6(m, 0.05)], 1), "eyelids": rng.uniform(0, 0.3, (m, 2)).astype(np.float32),
                  "rot": frontal(rot6(m, 0.1)), "t": (np.array([0, 0, 1.0]) + rng.normal(0, 0.005, (m, 3))).astype(np.float32)}
        core = (frames >= s.start) & (frames < s.stop)
        # MediaPipe points: the tracked face's own landmarks plus 0.8 px of noise (what the
        # frame-by-frame steadiness fit then fits)
        p = FrameParams.from_numpy({k: v[core] for k, v in params.items()})
        with torch.no_grad():
            lm = model(shape=shape_t.expand(len(s), -1), expression=p.exp, jaw=p.jaw, eyes=p.eyes,
                       eyelids=p.eyelids).landmarks_mp
            pix, _ = project(lm, p.R, p.t, torch.tensor([1500.0, 1500.0]), torch.tensor([256.0, 256.0]))
        pts = np.zeros((len(s), 478, 3), np.float32)
        pts[:, mp_index, :2] = pix.numpy() + rng.normal(0, 0.8, pix.shape)
        put("landmarks", f"{s.name}.npz", npz(frames=np.arange(s.start, s.stop, dtype=np.int32), points=pts,
                                                 confidence=np.full(len(s), 0.95, np.float32), ok=np.ones(len(s), bool)))
        put("track", f"{s.name}.npz", npz(frames=frames, core=core, filled=np.zeros(m, bool),
                                            error_px=rng.uniform(0.5, 2, m).astype(np.float32),
                                            R=np.zeros((m, 3, 3), np.float32), focal=np.array([1500, 1500], np.float32),
                                            pp=np.array([256, 256], np.float32), overlap=np.int64(overlap), **params))
    calib = Calibration(shape=shape, focal=np.array([1500, 1500], np.float32),
                        pp=np.array([256, 256], np.float32), sh=rng.normal(0, 0.1, (9, 3)).astype(np.float32))
    with tempfile.TemporaryDirectory() as tmp:
        calib.save(Path(tmp) / "c.npz")
        put("calibrate", "calibration.npz", (Path(tmp) / "c.npz").read_bytes())
    for stage, outs in outputs.items():
        m = Manifest(stage=stage, actor=actor, inputs={}, config_digest="bench", config={}, outputs=outs)
        store.put_json(f"actors/{actor}/{stage}/manifest.json", m.to_dict())
    return store


def _clear_assemble(store, actor: str) -> None:  # noqa: ANN001 - LocalStore
    """Remove what assemble wrote (its folder and the dataset), so the stage runs again."""
    for folder in ("assemble", "dataset"):
        for key in list(store.list(f"actors/{actor}/{folder}/")):
            store.delete(key)


def _run_once(store, actor: str, frames: int, args, pipeline, repeat: int) -> dict:  # noqa: ANN001
    import resource

    from stages.runner.run import run_stage

    def cpu() -> float:
        return sum(getattr(resource.getrusage(w), f) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
                   for f in ("ru_utime", "ru_stime"))

    load = os.getloadavg()
    prof = None
    if args.profile:
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
    cpu0, t0 = cpu(), time.monotonic()
    result = run_stage("assemble", actor, store, pipeline=pipeline, device=args.device, jobs=args.jobs)
    seconds, cpu_s = time.monotonic() - t0, cpu() - cpu0
    if prof is not None:
        import pstats

        prof.disable()
        pstats.Stats(prof, stream=sys.stderr).sort_stats("cumulative").print_stats(25)
        pstats.Stats(prof, stream=sys.stderr).sort_stats("tottime").print_stats(25)
    report = store.get_json(f"actors/{actor}/assemble/report.json")
    steady = report.get("steadiness") or {}
    return {"frames": frames, "repeat": repeat, "shard_size": args.shard_size, "jobs": args.jobs,
            "device": args.device, "status": result.status,
            "seconds": round(seconds, 3), "frames_per_s": round(frames / seconds, 1),
            "cpu_s": round(cpu_s, 2), "cpu_ms_per_frame": round(1000 * cpu_s / frames, 2),
            "phases_s": report.get("phases_s"), "overlay_frames": report.get("overlay_frames"),
            "steadiness": {k: steady.get(k) for k in ("window", "ours_window", "per_frame_fit", "ratio_position",
                                                      "seconds_per_frame_fit", "per_frame_fit_device")},
            "cpu_count": os.cpu_count(), "loadavg_before": [round(x, 2) for x in load]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", default="2000", help="clip length, or a comma-separated list (one store each)")
    ap.add_argument("--shard-size", type=int, default=500)
    ap.add_argument("--repeat", type=int, default=1,
                    help="runs of the stage per clip in this one process (the dataset removed in between): "
                         "a first-run-versus-later difference shows here")
    ap.add_argument("--workdir", type=Path, default=None, help="where the store goes (default: a temp dir)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes (ctx.jobs)")
    ap.add_argument("--overlay-every", type=int, default=None, help="assemble's overlay_every (default: the stage's)")
    ap.add_argument("--jitter-frames", type=int, default=None, help="assemble's jitter_frames (default: the stage's)")
    ap.add_argument("--device", default="cpu", help="the stage's device (cuda: the steadiness fit runs on the GPU)")
    ap.add_argument("--profile", action="store_true", help="cProfile the stage (main process only)")
    ap.add_argument("--keep", action="store_true", help="keep the store")
    args = ap.parse_args()

    from stages.config import PipelineConfig

    work = args.workdir or Path(tempfile.mkdtemp(prefix="assemble-bench-"))
    stage = {k: v for k, v in (("overlay_every", args.overlay_every), ("jitter_frames", args.jitter_frames))
             if v is not None}
    pipeline = PipelineConfig(stages={"assemble": stage} if stage else {})
    runs = []
    for frames in (int(f) for f in str(args.frames).split(",")):
        actor = f"bench{frames}"
        t0 = time.monotonic()
        store = build_store(work / "store", actor, frames, args.shard_size)
        build_s = round(time.monotonic() - t0, 1)
        for r in range(args.repeat):
            if r:
                _clear_assemble(store, actor)
            run = _run_once(store, actor, frames, args, pipeline, r)
            run["store_build_s"] = build_s
            print(json.dumps(run), file=sys.stderr, flush=True)  # progress while the rest runs
            runs.append(run)
    print(json.dumps({"runs": runs, "workdir": str(work)}, indent=1))
    if not args.keep and args.workdir is None:
        import shutil

        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
