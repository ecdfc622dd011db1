"""The avatar's Gaussians of one or more frames in world coordinates, as plain activated tensors.

"World" is the face model's space (metres) in which the training cameras are given: FlashAvatar
keeps the head pose in the camera extrinsics, so a tracked frame ``k`` is seen exactly as in
training by the OpenCV camera ``x_cam = R_k x + t_k`` with intrinsics ``K_k``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from stages.gauss.model import GaussianAvatar
from stages.gauss.sh import num_sh_bases
from stages.gauss.surface import FaceSurface


@dataclass
class PosedGaussians:
    """B frames of N Gaussians, activated (what a rasteriser takes).

    Attributes:
        means: [B, N, 3] metres.  quats: [B, N, 4] wxyz, unit norm.  scales: [B, N, 3] standard
        deviations (metres).  opacities: [N] in 0..1 (shared by the frames); opacity_logits: [N]
        the same before the sigmoid (exact, for files that store logits).  sh: [N, K, 3] SH
        coefficients, 3DGS convention ``rgb = SH(d) + 0.5`` (shared).  sh_degree: the model's degree.
    """

    means: Tensor
    quats: Tensor
    scales: Tensor
    opacities: Tensor
    opacity_logits: Tensor
    sh: Tensor
    sh_degree: int

    @property
    def num_frames(self) -> int:
        return self.means.shape[0]


@torch.no_grad()
def pose_gaussians(model: GaussianAvatar, surface: FaceSurface, cond: Tensor, autocast: bool = False) -> PosedGaussians:
    """Pose the avatar for B condition vectors.

    Args:
        model: the trained avatar (any device; ``surface`` and ``cond`` on the same one).
        surface: the face model with the actor's identity.
        cond: [B, 120] condition vectors (expression 100, jaw 6D, eyes 12, eyelids 2).
        autocast: bfloat16 MLP on CUDA (as training and rendering use it).

    Returns:
        :class:`PosedGaussians`; the same numbers :func:`stages.gauss.trainer.render_frames` renders.
    """
    from stages.gauss.model import exact_quats_scales

    g = model.pose(surface.vertices(cond), surface.faces, cond, autocast=autocast)
    quats, scales = exact_quats_scales(g)  # a triangle-frame avatar's covariances as rotation and scales
    quats = quats / quats.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    k = num_sh_bases(model.config.sh_degree)
    return PosedGaussians(means=g.means, quats=quats, scales=scales, opacities=g.opacities[0],
                          opacity_logits=model.opacity_logit.detach(),
                          sh=g.sh[:, :k], sh_degree=model.config.sh_degree)


def camera_center(R: Tensor, t: Tensor) -> Tensor:
    """World position of OpenCV cameras: R [..., 3, 3], t [..., 3] -> [..., 3] (``-Rᵀ t``)."""
    return -(R.transpose(-1, -2) @ t.unsqueeze(-1)).squeeze(-1)
