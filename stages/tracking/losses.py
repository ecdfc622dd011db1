"""Loss terms of the tracker, each a pure function of batched tensors returning a scalar.

Every term is a mean over frames (and points), so weights mean the same at any batch size and the
per-frame gradients do not depend on how many frames share an optimiser step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from stages.tracking import regions


@dataclass(frozen=True)
class LandmarkWeights:
    """Relative weight of each MediaPipe region in the landmark term (other points weigh 1).

    The face oval is the silhouette in the image but a fixed curve on the mesh, so it weighs less;
    eyes, irises and lips carry the expression and gaze, so they weigh more.
    """

    oval: float = 0.3
    eyes: float = 2.0
    iris: float = 2.0
    lips: float = 2.0
    brows: float = 1.0
    nose: float = 1.0

    def per_point(self) -> Tensor:
        """[478] weight of each MediaPipe point."""
        w = torch.ones(regions.N_POINTS)
        for idx, value in ((regions.FACE_OVAL, self.oval), (regions.NOSE, self.nose),
                           (regions.LEFT_EYEBROW + regions.RIGHT_EYEBROW, self.brows),
                           (regions.LEFT_EYE + regions.RIGHT_EYE, self.eyes),
                           (regions.LEFT_IRIS + regions.RIGHT_IRIS, self.iris), (regions.LIPS, self.lips)):
            w[list(idx)] = value
        return w


def landmark_loss(pred: Tensor, target: Tensor, point_w: Tensor, frame_w: Tensor, scale: float) -> Tensor:
    """Weighted mean squared landmark distance.

    Args:
        pred, target: [B, L, 2] pixel coordinates.
        point_w: [L] weight per landmark.
        frame_w: [B] weight per frame (0 for frames whose landmarks failed).
        scale: pixels per unit (the image size), so the loss is in image-size units squared.

    Returns:
        ``sum_b fw_b sum_l pw_l |pred - target|^2 / scale^2 / (B * sum_l pw_l)``.
    """
    d2 = ((pred - target) / scale).pow(2).sum(-1)  # [B, L]
    per_frame = (d2 * point_w).sum(-1) / point_w.sum()
    return (per_frame * frame_w).sum() / frame_w.numel()


def landmark_error_px(pred: Tensor, target: Tensor) -> Tensor:
    """[B] mean Euclidean landmark error per frame, pixels (unweighted)."""
    return (pred - target).norm(dim=-1).mean(-1)


def temporal_loss(x: Tensor, link: Tensor, order: int = 1) -> Tensor:
    """Mean squared finite difference between neighbouring frames.

    Args:
        x: [B, ...] a per-frame quantity (parameters, or camera-space points).
        link: [B-1] float, 1 where frame b+1 follows frame b in time, 0 across a cut.
        order: 1 penalises velocity ``x[b+1] - x[b]``; 2 penalises acceleration
            ``x[b+1] - 2 x[b] + x[b-1]`` (no pull on steady motion, only on jitter).

    Returns:
        ``sum_b w_b |d_b|^2 / (B * elements per frame)``, ``w_b`` the product of the links the
        difference spans.
    """
    if x.shape[0] <= order:
        return x.sum() * 0.0
    d, w = x, link
    for _ in range(order):
        d = d[1:] - d[:-1]
    if order == 2:
        w = link[1:] * link[:-1]
    d2 = d.reshape(d.shape[0], -1).pow(2).mean(-1)
    return (d2 * w).sum() / x.shape[0]


def prior_loss(x: Tensor, rest: Tensor | None = None) -> Tensor:
    """Mean over frames of the squared distance of ``x [B, D]`` from ``rest [D]`` (0 by default)."""
    d = x if rest is None else x - rest
    return d.pow(2).sum(-1).mean()


def photometric_loss(rendered: Tensor, image: Tensor, mask: Tensor) -> Tensor:
    """Mean L1 colour difference inside a mask.

    Args:
        rendered, image: [B, H, W, 3] colours in 0..1.
        mask: [B, H, W] float, 1 where the term applies (covered by the face region).

    Returns:
        ``sum |rendered - image| * mask / (3 * max(sum mask, 1))``.
    """
    return ((rendered - image).abs().sum(-1) * mask).sum() / (3.0 * mask.sum().clamp_min(1.0))
