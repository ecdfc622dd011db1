"""Training losses of the avatar (FlashAvatar's: Huber on the image, 40x Huber inside the mouth)."""

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
