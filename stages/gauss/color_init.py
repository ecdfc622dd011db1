"""Starting colours of the Gaussians, read from training frames instead of grey.

A short training run (the CPU ``demo`` preset: a few hundred steps) spends much of its budget
moving every Gaussian's colour from grey towards the skin, hair and eye colours. Looking the colour
up in a few training frames first gives the same start a long run reaches after its first epoch.

For each of F frames, every Gaussian's base position is projected with the frame's camera; a
Gaussian takes the ground-truth colour of the pixel its centre falls on when that pixel is inside
the head (matte x neck-and-head mask > 0.5) and the Gaussian is in front: its depth is within
``depth_tolerance`` of the nearest Gaussian centre in its cell of a coarse depth buffer (cells of
``cell`` px, so that a sparse point set still hides what is behind it). The colours of the frames
where a Gaussian is seen are averaged; Gaussians never seen take the mean of the seen ones.
"""

from __future__ import annotations

import torch
from torch import Tensor


@torch.no_grad()
def initial_colors(points: Tensor, R: Tensor, t: Tensor, K: Tensor, images: Tensor, inside: Tensor, *,
                   cell: int = 4, depth_tolerance: float = 0.02) -> tuple[Tensor, Tensor]:
    """Per-Gaussian colours seen in F frames.

    Args:
        points: [F, N, 3] Gaussian centres per frame (world, metres).
        R: [F, 3, 3], t: [F, 3]: world-to-camera (OpenCV, ``X_cam = R X + t``).
        K: [F, 3, 3] intrinsics at the images' resolution (px).
        images: [F, H, W, 3] ground truth in 0..1.
        inside: [F, H, W] in 0..1: where the head is (matte x neck-and-head mask).
        cell: depth-buffer cell size (px).
        depth_tolerance: how far behind the nearest centre of its cell a Gaussian still counts as
            seen (metres).

    Returns:
        rgb [N, 3] in 0..1 and seen [N] bool (False: never visible inside the head; mean colour).
    """
    F, N, _ = points.shape
    H, W = images.shape[1:3]
    cam = (R.unsqueeze(1) @ points.unsqueeze(-1)).squeeze(-1) + t.unsqueeze(1)  # [F, N, 3]
    z = cam[..., 2]
    zs = z.clamp_min(1e-6)
    u = K[:, None, 0, 0] * cam[..., 0] / zs + K[:, None, 0, 2]  # pixel coordinates, centre of (0, 0) at 0.5
    v = K[:, None, 1, 1] * cam[..., 1] / zs + K[:, None, 1, 2]
    col, row = torch.floor(u).long(), torch.floor(v).long()
    in_image = (z > 0) & (col >= 0) & (col < W) & (row >= 0) & (row < H)
    col_c, row_c = col.clamp(0, W - 1), row.clamp(0, H - 1)
    gw, gh = -(-W // cell), -(-H // cell)
    frame = torch.arange(F, device=points.device).unsqueeze(1).expand(F, N)
    cell_id = (frame * gh + row_c // cell) * gw + col_c // cell
    far = torch.full((F * gh * gw,), float("inf"), dtype=z.dtype, device=z.device)
    zbuf = far.scatter_reduce(0, cell_id[in_image], z[in_image], reduce="amin")
    front = in_image & (z <= zbuf[cell_id] + depth_tolerance)
    pix = (frame * H + row_c) * W + col_c
    head = inside.reshape(-1)[pix] > 0.5
    use = (front & head).to(images.dtype)  # [F, N]
    rgb = images.reshape(-1, 3)[pix]  # [F, N, 3]
    count = use.sum(0)
    seen = count > 0
    mean = (rgb * use.unsqueeze(-1)).sum(0) / count.clamp_min(1).unsqueeze(-1)
    fill = mean[seen].mean(0) if seen.any() else torch.full((3,), 0.5, dtype=images.dtype, device=images.device)
    return torch.where(seen.unsqueeze(-1), mean, fill), seen
