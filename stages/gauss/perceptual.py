"""FlashAvatar's LPIPS (VGG) term for training and held-out LPIPS for the report, from the actor's
``vgg16`` asset (torchvision's ImageNet checkpoint) and LPIPS v0.1's linear layers (the ``lpips``
asset, else the installed lpips package's data file). See :mod:`stages.nets.vgg`.

FlashAvatar: ``0.05 * LPIPS(image * neckhead, gt * neckhead)`` from step 15k of 150k on; here from
``lpips_start`` (a fraction, default 0.1) of the run's steps, whatever the schedule's length.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

ASSETS = ("vgg16", "lpips")


def load_stage_lpips(ctx: Any, device: str) -> tuple[Any, str]:
    """``(LPIPS module on device, note)``, or ``(None, why not)`` when the actor has no ``vgg16`` asset."""
    vgg = ctx.asset("vgg16")
    if vgg is None:
        return None, "no LPIPS (VGG) weights asset: add torchvision's vgg16-397923af.pth (avatar run --lpips-vgg)"
    from stages.nets.vgg import load_lpips

    return load_lpips(vgg, ctx.asset("lpips")).to(device), "LPIPS v0.1 (VGG)"


def lpips_on(step: int, steps: int, start_fraction: float) -> bool:
    """Whether the LPIPS term is on at 0-based ``step`` of ``steps`` (FlashAvatar: 15k of 150k = 0.1)."""
    return step >= int(round(start_fraction * steps))


@torch.no_grad()
def lpips_uint8(model: Any, gt: np.ndarray, img: np.ndarray) -> list[float]:
    """Per-frame LPIPS of uint8 ``[B,H,W,3]`` renders against ground truth (already composited on
    the background outside neck and head, as FlashAvatar's masked evaluation)."""
    dev = next(model.buffers()).device
    x = torch.as_tensor(img, device=dev).permute(0, 3, 1, 2).float() / 127.5 - 1
    y = torch.as_tensor(gt, device=dev).permute(0, 3, 1, 2).float() / 127.5 - 1
    return model(x, y).tolist()
