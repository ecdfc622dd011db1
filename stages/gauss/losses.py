"""Training losses of the avatar (FlashAvatar's: Huber on the image, 40x Huber inside the mouth), and
the binding regulariser that keeps Gaussians near their triangles (GaussianAvatars-style)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def huber(pred: Tensor, target: Tensor, delta: float = 0.1) -> Tensor:
    """Mean Huber loss: ``0.5 d²`` where ``|d| < delta``, else ``delta (|d| - 0.5 delta)``. Scalar."""
    return F.huber_loss(pred, target, delta=delta, reduction="mean")


def avatar_loss(image: Tensor, gt: Tensor, mouth: Tensor, *, delta: float = 0.1, mouth_weight: float = 40.0
                ) -> tuple[Tensor, dict[str, Tensor]]:
    """``huber(image, gt) + mouth_weight * huber(image*m, gt*m)``, both means over all pixels.

    Args:
        image, gt: [B, H, W, 3] in 0..1.  mouth: [B, H, W] mask in 0..1.

    Returns:
        (scalar loss, {"huber": ..., "mouth": ...} as detached scalar tensors for logging; turning
        them into floats syncs the GPU, so do it only when logging).
    """
    m = mouth.unsqueeze(-1)
    l_img = huber(image, gt, delta)
    l_mouth = huber(image * m, gt * m, delta)
    return l_img + mouth_weight * l_mouth, {"huber": l_img.detach(), "mouth": l_mouth.detach()}


def silhouette_loss(alpha: Tensor, target: Tensor) -> Tensor:
    """Mean absolute difference of the render's alpha and the ground truth's head mask. Scalar.

    Args:
        alpha: [B, H, W] the render's accumulated opacity, 0..1.
        target: [B, H, W] matte x neckhead, 0..1 (what :func:`stages.gauss.data.composite_gt` keeps).
    """
    return (alpha - target).abs().mean()


def binding_loss(offsets: Tensor, scales: Tensor, size: Tensor, mask: Tensor, *, pos_threshold: float = 1.0,
                 scale_threshold: float = 0.6) -> tuple[Tensor, Tensor]:
    """Keep Gaussians near their triangles and no larger than them (GaussianAvatars' position and
    scale losses), in units of each Gaussian's triangle size on the neutral mesh.

    Args:
        offsets: [B, N, 3] the MLP's position offsets (metres, canonical frame).
        scales: [B, N, 3] standard deviations (metres, canonical frame).
        size: [N] triangle sizes on the neutral mesh (sqrt of the area, metres), > 0.
        mask: [N] bool, the Gaussians the terms apply to (e.g. the eye region's).
        pos_threshold: offsets up to this many triangle sizes cost nothing.
        scale_threshold: a largest standard deviation up to this many triangle sizes costs nothing.

    Returns:
        (position term, scale term): means over the masked Gaussians and frames of
        ``relu(|offset| / size - pos_threshold)`` and ``relu(max(scale) / size - scale_threshold)``;
        zero when the mask is empty.
    """
    if not bool(mask.any()):
        z = offsets.sum() * 0.0
        return z, z
    s = size[mask].to(offsets.dtype)
    pos = F.relu(offsets[:, mask].norm(dim=-1) / s - pos_threshold).mean()
    scl = F.relu(scales[:, mask].amax(dim=-1) / s - scale_threshold).mean()
    return pos, scl
