"""Render a trained avatar for a motion, in batches: per-frame RGB and alpha at the output size.

:func:`render_motion` is the one renderer of ``avatar drive`` (gsplat on CUDA, the torch reference
on CPU, through :func:`stages.gauss.trainer.render_frames`). It yields :class:`FrameBatch` es of
RGB + alpha so that a consumer can encode them as they are (``drive.mp4``) or composite them into
other footage (the full-frame compositor): nothing here knows about files.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
from torch import Tensor

from stages.gauss.model import GaussianAvatar
from stages.gauss.surface import FaceSurface


@dataclass
class DriveInputs:
    """Everything that varies per frame, plus the intrinsics.

    Attributes:
        cond: [N, 120] condition vectors (expression, jaw 6D, eyes 12, eyelids 2).
        R: [N, 3, 3] OpenCV world-to-camera rotations; t: [N, 3] translations, metres.
        K: [3, 3] intrinsics in pixels of a 512 x 512 image (scaled to the output size here).
    """

    cond: np.ndarray
    R: np.ndarray
    t: np.ndarray
    K: np.ndarray

    def __len__(self) -> int:
        return int(self.cond.shape[0])


@dataclass
class FrameBatch:
    """Rendered frames ``start .. start + B``.

    Attributes:
        start: index of the first frame.
        rgb: [B, H, W, 3] float in 0..1 over the background colour (on the render device).
        alpha: [B, H, W] float in 0..1, the avatar's coverage (on the render device).
    """

    start: int
    rgb: Tensor
    alpha: Tensor

    def rgb_uint8(self) -> np.ndarray:
        """[B, H, W, 3] uint8 on the CPU."""
        return (self.rgb.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()

    def frames(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Per frame: (RGB [H, W, 3] uint8, alpha [H, W] float32), on the CPU."""
        rgb, alpha = self.rgb_uint8(), self.alpha.float().cpu().numpy()
        for i in range(rgb.shape[0]):
            yield rgb[i], alpha[i]


def scaled_K(K: np.ndarray, resolution: int, image_size: int = 512) -> Tensor:
    """[3, 3] intrinsics of an ``image_size`` image, for a ``resolution`` one."""
    s = resolution / image_size
    K = torch.as_tensor(np.asarray(K, np.float32)).clone()
    K[:2] *= s
    return K


def render_size(resolution: int, device: str, train_resolution: int | None, asked: int = 0) -> int:
    """The size (px) to render at for ``resolution`` px frames: ``asked`` when set; else ``resolution``
    on a GPU, and on a CPU at most three times the avatar's training resolution (frames are scaled
    up to ``resolution`` after). A Gaussian trained on 96-px images holds little detail finer than
    those pixels, while the CPU reference rasteriser's time grows with the pixels each Gaussian
    covers: the tiny preset's 1,041 Gaussians took 2.1 s a frame at 512 px and 0.38 s at 256 (2-core
    CPU). Three, not two: at twice its 128-px training size the drive test's actor B opened its
    mouth in the jaw ramp to 69.6% of its mesh's opening as MediaPipe reads it (the test asks 70%;
    at three times all of tests/drive/test_cross_reenactment.py passes as at 512 px)."""
    if asked:
        return min(int(asked), resolution)
    if device.startswith("cuda") or not train_resolution:
        return resolution
    return max(16, min(resolution, 3 * int(train_resolution)))


@torch.no_grad()
def render_motion(model: GaussianAvatar, surface: FaceSurface, inputs: DriveInputs, *, resolution: int = 512,
                  background: tuple[float, float, float] = (0.0, 0.0, 0.0), renderer: str = "reference",
                  device: str = "cpu", batch: int = 32, render_resolution: int | None = None) -> Iterator[FrameBatch]:
    """Render every frame of ``inputs`` with the avatar, ``batch`` frames per call.

    Args:
        model, surface: the trained avatar and its face surface (already on ``device``).
        inputs: per-frame condition and camera.
        resolution: output width = height (px).
        background: RGB 0..1 behind the avatar.
        renderer: ``gsplat`` (CUDA) or ``reference``.
        render_resolution: render at this size and scale the frames (RGB and alpha, bilinear) to
            ``resolution`` (:func:`render_size`); ``None``: at ``resolution``.

    Yields:
        :class:`FrameBatch` in order, covering ``0 .. len(inputs)``.
    """
    from stages.gauss.trainer import render_frames

    n = len(inputs)
    cond = torch.as_tensor(inputs.cond, dtype=torch.float32)
    R = torch.as_tensor(inputs.R, dtype=torch.float32)
    t = torch.as_tensor(inputs.t, dtype=torch.float32)
    size = render_resolution or resolution
    K = scaled_K(inputs.K, size).to(device)
    bg = torch.tensor(background, dtype=torch.float32, device=device)
    for s in range(0, n, batch):
        sl = slice(s, min(n, s + batch))
        b = sl.stop - sl.start
        img, alpha = render_frames(model, surface, cond[sl].to(device, non_blocking=True),
                                   R[sl].to(device, non_blocking=True), t[sl].to(device, non_blocking=True),
                                   K.expand(b, 3, 3), size, bg, renderer)
        if size != resolution:  # [B, H, W, 3] and [B, H, W] together as [B, 4, H, W]
            both = torch.cat([img, alpha[..., None]], -1).permute(0, 3, 1, 2)
            both = torch.nn.functional.interpolate(both, size=(resolution, resolution), mode="bilinear",
                                                   align_corners=False).permute(0, 2, 3, 1)
            img, alpha = both[..., :3].contiguous(), both[..., 3].contiguous()
        yield FrameBatch(s, img, alpha)
