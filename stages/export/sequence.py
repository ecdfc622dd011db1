"""A 3DGS PLY per frame of a motion (the tracked sequence or a motion file), for viewers that play
sequences: ``frame_00000.ply`` ... plus ``sequence.json`` (frame count, fps, and the OpenCV camera of
each frame where the motion has one, so frame ``k`` can be seen exactly as the tracked view)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from stages.export.motion import motion_condition
from stages.export.ply import splat_cloud, write_ply
from stages.export.pose import pose_gaussians
from stages.export.rigid import head_pose_transform, transform_cloud
from stages.gauss.model import GaussianAvatar
from stages.gauss.surface import FaceSurface

log = logging.getLogger("avatar.export")


def write_ply_sequence(out: str | Path, model: GaussianAvatar, surface: FaceSurface, motion, *, fps: float = 25.0,
                       device: str = "cpu", batch: int = 16, head_pose: bool = False,
                       on_frames: Callable[[int], None] | None = None) -> Path:
    """Write one PLY per frame of ``motion`` into the new folder ``out`` (built beside it, then renamed).

    Args:
        motion: an object with ``exp, jaw, eyes, eyelids`` (and optional ``R, t, K, image_size``).
        batch: frames posed per call.  on_frames: called with the number of frames just written.
        head_pose: bake each frame's head pose (its camera relative to frame 0's) into the Gaussians
            (:mod:`stages.export.rigid`), so frame 0's camera sees every frame as tracked; needs cameras.

    Returns:
        ``out``."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".part"))
    cond = motion_condition(motion)
    n = cond.shape[0]
    R, t = getattr(motion, "R", None), getattr(motion, "t", None)
    if head_pose and (R is None or t is None):
        raise ValueError("head_pose needs a motion with cameras (R, t)")
    model, surface = model.to(device), surface.to(device)
    t0 = time.perf_counter()
    try:
        for s in range(0, n, batch):
            g = pose_gaussians(model, surface, cond[s:s + batch].to(device))
            for j in range(g.num_frames):
                cloud = splat_cloud(g, j)
                if head_pose:
                    cloud = transform_cloud(cloud, *head_pose_transform(R[s + j], t[s + j], R[0], t[0]))
                write_ply(tmp / f"frame_{s + j:05d}.ply", cloud)
            if on_frames is not None:
                on_frames(g.num_frames)
        doc = {"format": "avatar-ply-sequence/1", "frames": n, "fps": fps, "pattern": "frame_{:05d}.ply",
               "gaussians": model.num_gaussians}
        if R is not None and t is not None:
            K = getattr(motion, "K", None)
            if head_pose:  # every frame is seen through frame 0's camera
                R, t = np.repeat(np.asarray(R)[:1], n, 0), np.repeat(np.asarray(t)[:1], n, 0)
                doc["head_pose"] = "baked into the Gaussians: every frame is seen as tracked through frame 0's camera"
            doc["cameras"] = {"convention": "OpenCV world-to-camera x_cam = R x + t (metres); K in pixels of image_size",
                              "image_size": [int(v) for v in np.broadcast_to(getattr(motion, "image_size", 512), (2,))],
                              "R": np.asarray(R).round(7).tolist(), "t": np.asarray(t).round(7).tolist(),
                              "K": None if K is None else np.asarray(K).round(4).tolist()}
        (tmp / "sequence.json").write_text(json.dumps(doc) + "\n")
        os.rename(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    seconds = time.perf_counter() - t0
    log.info("%s: %d frames in %.1f s (%.1f frames/s)", out, n, seconds, n / max(seconds, 1e-9))
    return out
