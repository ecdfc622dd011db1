"""The landmarks stage: MediaPipe FaceMesh 478 points per 512x512 frame, one shard at a time.

Per shard, ``landmarks/<shard>.npz``:

- ``frames`` int32 [N]: frame numbers (``00001.jpg`` is 1);
- ``points`` float32 [N,478,3]: x, y in crop pixels (0..512), z in MediaPipe's relative depth
  scaled to pixels; NaN for failed frames (never zero-filled);
- ``confidence`` float32 [N]: MediaPipe face detector score in [0, 1], run on every
  ``score_every``-th frame and wherever tracking fails, recovers or jumps, held in between
  (:mod:`stages.video.facemesh`);
- ``ok`` bool [N]: whether FaceMesh found the face;

and ``landmarks/reports/<shard>.json`` (failed frames, frames touching the crop border).
``finish`` sums those up in ``landmarks/report.json``.

Within a shard FaceMesh tracks from frame to frame (``static_image_mode=False``), which is much
faster than detecting in every frame; shards are independent (tracking restarts per shard).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from stages.errors import bad_input
from stages.frameshard import frame_name, read_shard_tar
from stages.runner.context import StageContext
from stages.runner.shards import Shard
from stages.video.facemesh import N_POINTS, FaceMeshTracker

log = logging.getLogger("avatar.landmarks")

ASSETS = ()
WORKER_PRELOAD = ("cv2", "mediapipe")  # imported once by the local run's forkserver


@dataclass
class Config:
    """Attributes:
        static: detect in every frame instead of tracking (slower; for debugging).
        min_detection_confidence, min_tracking_confidence: MediaPipe thresholds.
        edge_margin: a frame whose landmarks come within this many pixels of the crop border is
            counted as leaving the crop.
        score_every: the face detector scores the confidence on every this-many-th frame (and on
            frames where tracking fails, recovers or jumps); 1 = every frame (about 1.5x slower).
    """

    static: bool = False
    min_detection_confidence: float = 0.5
    min_tracking_confidence: float = 0.5
    edge_margin: float = 2.0
    score_every: int = 8


PRESETS: dict[str, dict[str, Any]] = {}


def decode_jpeg(data: bytes) -> np.ndarray:
    """RGB uint8 [H,W,3] from JPEG bytes."""
    import cv2

    img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError("not a JPEG image")
    return img[:, :, ::-1]


def runs(mask: np.ndarray) -> int:
    """Length of the longest run of True in a bool [N] array."""
    best = cur = 0
    for v in mask:
        cur = cur + 1 if v else 0
        best = max(best, cur)
    return best


def landmark_shard(frames_tar, shard: Shard, cfg: Config, progress=None) -> dict[str, np.ndarray]:
    """Landmarks of every frame in a shard's tar (numbered ``shard.start .. shard.stop-1``).

    Returns the arrays of the ``.npz`` (see the module docstring). Raises bad input when the tar
    does not hold exactly the shard's frames."""
    n = len(shard)
    frames = np.arange(shard.start, shard.stop, dtype=np.int32)
    points = np.full((n, N_POINTS, 3), np.nan, dtype=np.float32)
    conf = np.zeros(n, dtype=np.float32)
    ok = np.zeros(n, dtype=bool)
    seen = 0
    with FaceMeshTracker(static=cfg.static, min_detection_confidence=cfg.min_detection_confidence,
                         min_tracking_confidence=cfg.min_tracking_confidence, score_every=cfg.score_every) as tracker:
        for i, (name, data) in enumerate(read_shard_tar(frames_tar)):
            expected = frame_name(shard.start + i)
            if i >= n or name != expected:
                raise bad_input(frames_tar, f"shard {shard.name} holds {name} where {expected if i < n else 'nothing'} "
                                "was expected", "re-run the ingest stage for this actor")
            r = tracker.process(decode_jpeg(data))
            conf[i] = r.confidence
            if r.ok:
                points[i], ok[i] = r.points, True
            seen += 1
            if progress is not None:
                progress.advance(1)
    if seen != n:
        raise bad_input(frames_tar, f"shard {shard.name} holds {seen} frames, expected {n}",
                        "re-run the ingest stage for this actor")
    return {"frames": frames, "points": points, "confidence": conf, "ok": ok}


def shard_report(arrays: dict[str, np.ndarray], size: int, margin: float) -> dict[str, Any]:
    """Per-shard summary: failed frames, frames whose landmarks touch the crop border."""
    ok = arrays["ok"]
    pts = arrays["points"][ok]
    near = np.zeros(ok.shape, dtype=bool)
    if pts.size:
        lo = np.nanmin(pts[:, :, :2], axis=1).min(axis=1)
        hi = np.nanmax(pts[:, :, :2], axis=1).max(axis=1)
        near[ok] = (lo < margin) | (hi > size - margin)
    return {"frames": int(ok.size), "ok": int(ok.sum()), "failed_frames": arrays["frames"][~ok].tolist(),
            "longest_failed_run": runs(~ok), "near_edge_frames": arrays["frames"][near].tolist(),
            "confidence_mean": round(float(arrays["confidence"].mean()) if ok.size else 0.0, 4)}


def run_shard(ctx: StageContext, shard: Shard) -> None:
    cfg: Config = ctx.config
    if cfg.score_every < 0:
        raise bad_input("landmarks config", f"score_every is {cfg.score_every}",
                        "use 0 (never score), 1 (every frame) or more")
    tar = ctx.fetch(f"frames/{shard.name}.tar", stage="ingest")
    arrays = landmark_shard(tar, shard, cfg, ctx.progress)
    size = int(ctx.get_json("crop.json", "ingest").get("out_size", 512))
    local = ctx.scratch / f"landmarks-{shard.name}.npz"
    np.savez(local, **arrays)
    ctx.put_file(f"{shard.name}.npz", local)
    report = shard_report(arrays, size, cfg.edge_margin)
    ctx.put_json(f"reports/{shard.name}.json", report)
    ctx.count_frames(len(shard))
    ctx.stats.update({"ok": report["ok"]})
    if report["ok"] < report["frames"]:
        log.warning("landmarks shard %s: FaceMesh failed on %d of %d frames", shard.name,
                    report["frames"] - report["ok"], report["frames"])


def finish(ctx: StageContext) -> None:
    """Sum the per-shard reports up in ``landmarks/report.json``."""
    reports = []
    for s in ctx.shards():
        key = ctx.key(f"reports/{s.name}.json")
        reports.append(json.loads(ctx.store.get_bytes(key, ctx.outputs.get(key))))  # verified when recorded
    frames = sum(r["frames"] for r in reports)
    ok = sum(r["ok"] for r in reports)
    failed = [f for r in reports for f in r["failed_frames"]]
    near = [f for r in reports for f in r["near_edge_frames"]]
    warnings = []
    if frames and ok / frames < 0.9:
        warnings.append(f"FaceMesh failed on {frames - ok} of {frames} frames; check the video shows the face throughout")
    if frames and len(near) / frames > 0.05:
        warnings.append(f"the face touches the crop border in {len(near)} of {frames} frames")
    ctx.put_json("report.json", {
        "frames": frames, "ok": ok, "ok_fraction": round(ok / frames, 4) if frames else 0.0,
        "failed_frames": failed, "longest_failed_run": max((r["longest_failed_run"] for r in reports), default=0),
        "near_edge_fraction": round(len(near) / frames, 4) if frames else 0.0,
        "confidence_mean": round(sum(r["confidence_mean"] * r["frames"] for r in reports) / frames, 4) if frames else 0.0,
        "shards": len(reports), "warnings": warnings})
    ctx.stats.update({"ok_fraction": round(ok / frames, 4) if frames else 0.0})
