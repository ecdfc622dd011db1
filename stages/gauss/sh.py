"""Real spherical harmonics (degrees 0-3) evaluated to RGB, the 3DGS/gsplat convention.

``rgb = max(sum_k c_k * Y_k(d) + 0.5, 0)`` with ``d`` the unit direction from the camera centre to the
Gaussian and ``Y_k`` the real SH basis in the usual graphics ordering (l = 0..3, m = -l..l).
"""

from __future__ import annotations

import torch
from torch import Tensor

C0 = 0.28209479177387814
C1 = 0.4886025119029199
C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
C3 = (-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154, -0.4570457994644658,
      1.445305721320277, -0.5900435899266435)


def num_sh_bases(degree: int) -> int:
    """Number of SH coefficients per colour channel for ``degree`` (0..3): ``(degree + 1) ** 2``."""
    if not 0 <= degree <= 3:
        raise ValueError(f"SH degree must be 0..3, got {degree}")
    return (degree + 1) ** 2


def rgb_to_sh0(rgb: Tensor) -> Tensor:
    """DC coefficient giving colour ``rgb`` (0..1) at every view direction. Shape kept."""
    return (rgb - 0.5) / C0


def sh_basis(degree: int, dirs: Tensor) -> Tensor:
    """Real SH basis values. ``dirs`` [..., 3] unit vectors -> [..., (degree+1)**2]."""
    x, y, z = dirs.unbind(-1)
    out = [torch.full_like(x, C0)]
    if degree >= 1:
        out += [-C1 * y, C1 * z, -C1 * x]
    if degree >= 2:
        xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
        out += [C2[0] * xy, C2[1] * yz, C2[2] * (2.0 * zz - xx - yy), C2[3] * xz, C2[4] * (xx - yy)]
    if degree >= 3:
        out += [C3[0] * y * (3 * xx - yy), C3[1] * xy * z, C3[2] * y * (4 * zz - xx - yy),
                C3[3] * z * (2 * zz - 3 * xx - 3 * yy), C3[4] * x * (4 * zz - xx - yy),
                C3[5] * z * (xx - yy), C3[6] * x * (xx - 3 * yy)]
    return torch.stack(out, dim=-1)


def eval_sh(degree: int, coeffs: Tensor, dirs: Tensor) -> Tensor:
    """RGB from SH coefficients.

    Args:
        degree: SH degree used (0..3); ``coeffs`` may hold more bases than needed.
        coeffs: [..., K, 3] coefficients, ``K >= (degree+1)**2``.
        dirs: [..., 3] view directions (camera centre -> Gaussian), need not be normalised.

    Returns:
        [..., 3] colour, clamped below at 0 (like 3DGS; not clamped above).
    """
    d = dirs / dirs.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    k = num_sh_bases(degree)
    basis = sh_basis(degree, d)  # [..., k]
    rgb = (basis.unsqueeze(-1) * coeffs[..., :k, :]).sum(-2)
    return (rgb + 0.5).clamp_min(0.0)
