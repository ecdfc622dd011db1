"""Rotation representations: 6D (Zhou et al. 2019), rotation matrices, axis-angle.

Convention (the one metrical-tracker's ``.frame`` files use, through PyTorch3D):

- The 6D vector of a rotation matrix ``R`` is its first two **rows**, ``[R[0,:], R[1,:]]``.
  PyTorch3D's ``matrix_to_rotation_6d`` takes ``matrix[..., :2, :]`` and its
  ``rotation_6d_to_matrix`` Gram-Schmidt-orthonormalises the two 3-vectors and stacks them,
  with their cross product, as the rows of the result (``torch.stack((b1, b2, b3), dim=-2)``).
  Zhou et al. describe columns; PyTorch3D's rows are what the files hold, so rows it is here.
- Rotation matrices act on column vectors: ``x' = R @ x``. Axis-angle vectors are
  ``angle * unit_axis`` (radians), right-handed, and :func:`axis_angle_to_matrix` gives the
  same matrix as PyTorch3D's (Rodrigues' formula).

All functions are batched over any leading dimensions and differentiable.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def rotation_6d_to_matrix(d6: Tensor) -> Tensor:
    """6D rotation ``[..., 6]`` -> rotation matrix ``[..., 3, 3]``.

    The two 3-vectors ``a1 = d6[..., :3]`` and ``a2 = d6[..., 3:]`` are orthonormalised
    (Gram-Schmidt) into ``b1, b2``; ``b3 = b1 x b2``; the result's rows are ``b1, b2, b3``.
    Any 6-vector whose halves are not parallel maps to a proper rotation.
    """
    a1, a2 = d6[..., :3], d6[..., 3:]
    b1 = F.normalize(a1, dim=-1)
    b2 = F.normalize(a2 - (b1 * a2).sum(-1, keepdim=True) * b1, dim=-1)
    b3 = torch.cross(b1, b2, dim=-1)
    return torch.stack((b1, b2, b3), dim=-2)


def matrix_to_rotation_6d(matrix: Tensor) -> Tensor:
    """Rotation matrix ``[..., 3, 3]`` -> 6D ``[..., 6]``: its first two rows, concatenated."""
    return matrix[..., :2, :].reshape(*matrix.shape[:-2], 6)


def identity_6d(batch: int | tuple[int, ...] = (), *, dtype: torch.dtype = torch.float32,
                device: torch.device | str | None = None) -> Tensor:
    """The identity rotation in 6D, ``[1, 0, 0, 0, 1, 0]``, shaped ``[*batch, 6]``."""
    shape = (batch,) if isinstance(batch, int) else tuple(batch)
    ident = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0], dtype=dtype, device=device)
    return ident.expand(*shape, 6).clone()


def _skew(v: Tensor) -> Tensor:
    """Cross-product matrix ``[..., 3, 3]`` of ``v [..., 3]`` (``skew(v) @ x == v x x``)."""
    x, y, z = v.unbind(-1)
    o = torch.zeros_like(x)
    return torch.stack((o, -z, y, z, o, -x, -y, x, o), dim=-1).reshape(*v.shape[:-1], 3, 3)


def axis_angle_to_matrix(axis_angle: Tensor) -> Tensor:
    """Axis-angle ``[..., 3]`` (radians) -> rotation matrix ``[..., 3, 3]`` (Rodrigues).

    ``R = I + sin(t)/t K + (1 - cos(t))/t^2 K^2`` with ``K = skew(axis_angle)``, ``t = |axis_angle|``.
    The two coefficients use their Taylor series below ``t = 1e-3`` (and exact values above),
    so the function and its gradient are finite and accurate at and near zero.
    """
    theta2 = (axis_angle * axis_angle).sum(-1)[..., None, None]
    small = theta2 < 1e-6
    theta2_safe = torch.where(small, torch.ones_like(theta2), theta2)
    theta = theta2_safe.sqrt()
    a = torch.where(small, 1.0 - theta2 / 6.0 + theta2 * theta2 / 120.0, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24.0 + theta2 * theta2 / 720.0,
                    (1.0 - torch.cos(theta)) / theta2_safe)
    k = _skew(axis_angle)
    eye = torch.eye(3, dtype=axis_angle.dtype, device=axis_angle.device)
    return eye + a * k + b * (k @ k)


def matrix_to_axis_angle(matrix: Tensor) -> Tensor:
    """Rotation matrix ``[..., 3, 3]`` -> axis-angle ``[..., 3]`` with angle in ``[0, pi]``.

    Goes through the unit quaternion (Shepperd's method: the largest of the four candidate
    components is computed by a square root, the others from it), which stays accurate at
    angles near 0 and near pi.
    """
    m = matrix
    m00, m11, m22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    # 4 * q_i^2 for (w, x, y, z)
    cand = torch.stack((1 + m00 + m11 + m22, 1 + m00 - m11 - m22,
                        1 - m00 + m11 - m22, 1 - m00 - m11 + m22), dim=-1)
    best = cand.argmax(-1, keepdim=True)
    s = 2.0 * cand.clamp_min(1e-12).sqrt()  # 4 * |q_i| for each candidate i
    d21, d02, d10 = m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]
    s01, s02, s12 = m[..., 0, 1] + m[..., 1, 0], m[..., 0, 2] + m[..., 2, 0], m[..., 1, 2] + m[..., 2, 1]
    quats = torch.stack((
        torch.stack((s[..., 0] / 4, d21 / s[..., 0], d02 / s[..., 0], d10 / s[..., 0]), -1),
        torch.stack((d21 / s[..., 1], s[..., 1] / 4, s01 / s[..., 1], s02 / s[..., 1]), -1),
        torch.stack((d02 / s[..., 2], s01 / s[..., 2], s[..., 2] / 4, s12 / s[..., 2]), -1),
        torch.stack((d10 / s[..., 3], s02 / s[..., 3], s12 / s[..., 3], s[..., 3] / 4), -1),
    ), dim=-2)  # [..., candidate, (w,x,y,z)]
    q = torch.gather(quats, -2, best[..., None].expand(*best.shape[:-1], 1, 4)).squeeze(-2)
    q = q * torch.where(q[..., :1] < 0, -1.0, 1.0)  # w >= 0: angle in [0, pi]
    q = F.normalize(q, dim=-1)
    w, xyz = q[..., 0], q[..., 1:]
    sin_half = xyz.norm(dim=-1)
    angle = 2.0 * torch.atan2(sin_half, w)
    small = sin_half < 1e-6
    # angle / sin(angle/2) -> 2 + angle^2/12 as angle -> 0
    factor = torch.where(small, 2.0 + angle * angle / 12.0, angle / torch.where(small, 1.0, sin_half))
    return xyz * factor[..., None]
