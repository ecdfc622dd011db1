"""MICA in calibrate: the identity from the keyframes, averaged (``mica`` asset)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stages.tracking.arcface_align import align_faces, five_points, usable_for_arcface
from stages.tracking.stage_io import fetch_frames

log = logging.getLogger("avatar.calibrate")
IMAGE_SIZE = 512


def mica_shapes(model: torch.nn.Module, images: np.ndarray, points: np.ndarray, device: torch.device,
                batch: int = 8) -> np.ndarray:
    """``[K,300]`` MICA shape coefficients of K faces.

    Args:
        model: :class:`stages.nets.mica.MICA` (eval mode, on ``device``).
        images: uint8 ``[K,H,W,3]`` RGB. points: ``[K,478,2+]`` MediaPipe landmarks, pixels.
    """
    from stages.nets.mica import normalise

    crops = align_faces(images, five_points(points))
    out = []
    with torch.no_grad():
        for i in range(0, len(crops), batch):
            x = normalise(torch.as_tensor(crops[i:i + batch], device=device))
            out.append(model(x).float().cpu().numpy())
    return np.concatenate(out)


def mica_identity(ctx: Any, path: Path, lm: Any, picks: np.ndarray, shards: Any, device: torch.device) -> np.ndarray:
    """float32 ``[300]``: the mean of MICA's coefficients over the calibration keyframes whose five
    points fit the ArcFace template within 3 px (near-frontal; at least the best one)."""
    from stages.nets.mica import load_mica

    t0 = time.monotonic()
    model = load_mica(path).to(device)
    keep = usable_for_arcface(five_points(lm.points[picks]))
    picks = np.asarray(picks)[keep]
    images = fetch_frames(ctx, shards, lm.frames[picks].tolist(), IMAGE_SIZE)
    shapes = mica_shapes(model, images, lm.points[picks], device)
    log.info("MICA identity from %d of %d keyframes (the others too far from frontal) in %.1f s (%.1f frames/s)",
             len(picks), len(keep), time.monotonic() - t0, len(picks) / max(time.monotonic() - t0, 1e-9))
    return shapes.mean(0).astype(np.float32)
