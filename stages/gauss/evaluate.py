"""Held-out evaluation of a trained avatar: metrics per frame, preview frames, render speed."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from stages.gauss.data import AvatarFrames, make_loader
from stages.gauss.metrics import psnr, ssim
from stages.gauss.model import GaussianAvatar
from stages.gauss.surface import FaceSurface
from stages.gauss.trainer import render_frames


@dataclass
class Evaluation:
    """Per-frame PSNR (dB) and SSIM of held-out frames, in checkpoint order."""

    indices: list[int] = field(default_factory=list)
    psnr: list[float] = field(default_factory=list)
    ssim: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, float | int]:
        return {"frames": len(self.indices), "psnr_mean": float(np.mean(self.psnr)) if self.psnr else float("nan"),
                "ssim_mean": float(np.mean(self.ssim)) if self.ssim else float("nan"),
                "psnr_min": float(np.min(self.psnr)) if self.psnr else float("nan")}


@torch.no_grad()
def evaluate(model: GaussianAvatar, surface: FaceSurface, frames: AvatarFrames, background: Tensor, renderer: str,
             device: str, batch_size: int = 8, workers: int = 0,
             on_frames: Callable[[np.ndarray, np.ndarray], None] | None = None) -> Evaluation:
    """Render every frame of ``frames`` and score it against its ground truth.

    Args:
        on_frames: called per batch with uint8 ground truth and render [B, H, W, 3] (e.g. the preview).
    """
    model.eval()
    ev = Evaluation()
    loader = make_loader(frames, batch_size=batch_size, workers=workers, pin_memory=str(device).startswith("cuda"))
    for batch in loader:
        b = {k: v.to(device) for k, v in batch.items()}
        img, _ = render_frames(model, surface, b["cond"], b["R"], b["t"], b["K"], frames.resolution,
                               background.to(device), renderer)
        img = img.clamp(0, 1)
        gt = frames.ground_truth(b)
        ev.indices += [int(i) for i in b["index"]]
        ev.psnr += psnr(img, gt).tolist()
        ev.ssim += ssim(img, gt).tolist()
        if on_frames is not None:
            on_frames((gt * 255).round().byte().cpu().numpy(), (img * 255).round().byte().cpu().numpy())
    return ev


@torch.no_grad()
def render_fps(model: GaussianAvatar, surface: FaceSurface, cond: Tensor, R: Tensor, t: Tensor, K: Tensor,
               resolution: int, renderer: str, device: str, repeats: int = 3) -> float:
    """Frames per second of rendering (face model + MLP + SH + rasteriser) for the given batch of
    frames at ``resolution`` (K must be scaled to it), best of ``repeats`` timed passes after a warm-up."""
    model.eval()
    args = [x.to(device) for x in (cond, R, t, K)]
    bg = torch.zeros(3, device=device)
    on_cuda = str(device).startswith("cuda")
    render_frames(model, surface, *args, resolution, bg, renderer)
    best = float("inf")
    for _ in range(repeats):
        if on_cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        render_frames(model, surface, *args, resolution, bg, renderer)
        if on_cuda:
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return cond.shape[0] / max(best, 1e-9)
