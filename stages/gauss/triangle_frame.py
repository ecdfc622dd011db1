"""Gaussians that live in their triangle's local frame (GaussianAvatars-style binding).

A Gaussian bound to triangle ``(a, b, c)`` is expressed relative to the triangle's affine frame:
its position offset, its rotation and its extent follow the triangle's deformation from the
neutral mesh to the posed one. The deformation of one triangle is the 3x3 linear map

    F = [e1' e2' n'] [e1 e2 n]^-1,    e1 = b - a, e2 = c - a, n = unit normal,

(primes: posed mesh) which takes the neutral triangle's edges onto the posed ones and its unit
normal onto the posed unit normal (thickness is kept). On the neutral mesh ``F`` is the identity,
so an avatar in the triangle frame is the plain avatar there. Where a shut eyelid squashes the
eye-opening triangles to a fifth of their height, ``F`` squashes them vertically and keeps their
width; where the lid skin above stretches down over the eye, ``F`` stretches it.

Per Gaussian, with ``d`` the MLP's position offset, ``R = [r1 r2 r3]`` its rotation and ``s`` its
standard deviations (canonical frame):

- position: ``base + dbar + F (d - dbar)``: each offset's deviation from the mean offset ``dbar`` of
  the head's surface Gaussians rotates and scales with the triangle. The mean itself is the
  avatar's shift against the tracked mesh (10 mm on the synthetic drive actor, 50 mm on wojtek.mp4's
  tiny avatar, whose Gaussians differ from it by about 1 mm), and a lid's stretched skin must not
  stretch it, or those Gaussians fly off (seen on wojtek's shut eyes: blobs on the brows);
- rotation: ``Q R`` with ``Q`` the rotation of the triangle's orthonormal frame (edge ``e1``,
  normal), from neutral to posed (GaussianAvatars' per-triangle rotation);
- shape: the exact image of the Gaussian under ``F``, covariance ``F R S^2 R^T F^T``, which the
  rasterisers take as it is (gsplat's ``covars``; no eigen-decomposition in training, whose
  gradient is undefined for the equal scales every Gaussian starts with). The PLY export and the
  viewer store a quaternion and three scales: :func:`covariance_to_quats_scales` gives them.
  Beside it, the per-axis form: rotation ``Q R``, scales ``s_k |F r_k|`` (equal to the exact one
  when the Gaussian's axes are ``F``'s principal axes, e.g. a squash along a triangle's side, or
  a rotation; an oblique Gaussian shrinks less than exactly).

Shapes: ``B`` frames, ``N`` Gaussians. Positions in metres.
"""

from __future__ import annotations

import torch
from torch import Tensor

from stages.gauss.render_ref import quat_to_rotmat

MIN_DET = 1e-18
"""m^2 (the basis determinant is twice the area times the unit normal's length): below this a
neutral triangle is degenerate and its Gaussians keep the identity frame."""


def triangle_basis(vertices: Tensor, faces: Tensor, face_idx: Tensor) -> Tensor:
    """Each Gaussian's triangle as the columns ``[e1 e2 n]``: vertices [..., V, 3], faces [F, 3],
    face_idx [N] -> [..., N, 3, 3] (``n`` the unit normal; zero for a collapsed triangle)."""
    tri = faces.long()[face_idx]
    a, b, c = (vertices[..., tri[:, k], :] for k in range(3))
    e1, e2 = b - a, c - a
    n = torch.linalg.cross(e1, e2, dim=-1)
    n = n / n.norm(dim=-1, keepdim=True).clamp_min(1e-20)
    return torch.stack([e1, e2, n], dim=-1)


def _orthonormal(basis: Tensor) -> Tensor:
    """[..., 3, 3] columns ``[e1 e2 n]`` -> the rotation with columns ``e1/|e1|, n x e1/|e1|, n``."""
    x = basis[..., 0]
    x = x / x.norm(dim=-1, keepdim=True).clamp_min(1e-20)
    z = basis[..., 2]
    y = torch.linalg.cross(z, x, dim=-1)
    return torch.stack([x, y, z], dim=-1)


def triangle_deformation(posed_basis: Tensor, canonical_basis: Tensor) -> tuple[Tensor, Tensor]:
    """The deformation ``F`` and the frame rotation ``Q`` of each Gaussian's triangle.

    Args:
        posed_basis: [B, N, 3, 3] :func:`triangle_basis` on the posed meshes.
        canonical_basis: [N, 3, 3] on the neutral mesh.

    Returns:
        F [B, N, 3, 3] and Q [B, N, 3, 3]; both the identity for a triangle degenerate on the
        neutral mesh (|det| below :data:`MIN_DET`). A triangle collapsed on the posed mesh (no
        normal: a shut eye's iris disc shrinks to a point) keeps the neutral normal: ``F`` then maps
        the triangle's plane onto the collapsed edges (its Gaussians flatten to nothing seen from the
        front) and ``Q`` is the identity.
    """
    ok = canonical_basis.det().abs() > MIN_DET  # [N]
    eye = torch.eye(3, dtype=canonical_basis.dtype, device=canonical_basis.device)
    canon = torch.where(ok[:, None, None], canonical_basis, eye)
    inv = torch.linalg.inv(canon)
    has_normal = posed_basis[..., 2].norm(dim=-1) > 0.5  # [B, N]: the posed triangle has an area
    posed = torch.where(has_normal[..., None, None], posed_basis,
                        torch.cat([posed_basis[..., :2], canon[..., 2:].expand_as(posed_basis[..., 2:])], -1))
    F = torch.where(ok[:, None, None], posed @ inv, eye)
    Q = _orthonormal(posed_basis) @ _orthonormal(canon).transpose(-1, -2)
    Q = torch.where((ok & has_normal)[..., None, None], Q, eye)
    return F, Q


def rotmat_to_quat(R: Tensor) -> Tensor:
    """Rotation matrices [..., 3, 3] -> unit quaternions [..., 4] ``wxyz`` (w >= 0), branch-free
    (Shepperd's method: the largest of the four candidate denominators is used)."""
    m = R
    tr = m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2]
    cands = torch.stack([
        torch.stack([1 + tr, m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]], -1),
        torch.stack([m[..., 2, 1] - m[..., 1, 2], 1 + m[..., 0, 0] - m[..., 1, 1] - m[..., 2, 2],
                     m[..., 0, 1] + m[..., 1, 0], m[..., 0, 2] + m[..., 2, 0]], -1),
        torch.stack([m[..., 0, 2] - m[..., 2, 0], m[..., 0, 1] + m[..., 1, 0],
                     1 - m[..., 0, 0] + m[..., 1, 1] - m[..., 2, 2], m[..., 1, 2] + m[..., 2, 1]], -1),
        torch.stack([m[..., 1, 0] - m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0], m[..., 1, 2] + m[..., 2, 1],
                     1 - m[..., 0, 0] - m[..., 1, 1] + m[..., 2, 2]], -1),
    ], -2)  # [..., 4 candidates, 4]; candidate k has component k = 4 q_k^2 (unnormalised)
    diag = torch.stack([1 + tr, 1 + m[..., 0, 0] - m[..., 1, 1] - m[..., 2, 2],
                        1 - m[..., 0, 0] + m[..., 1, 1] - m[..., 2, 2], 1 - m[..., 0, 0] - m[..., 1, 1] + m[..., 2, 2]], -1)
    k = diag.argmax(-1, keepdim=True)
    q = torch.gather(cands, -2, k[..., None].expand(*k.shape, 4)).squeeze(-2)
    q = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-20)
    return q * torch.where(q[..., :1] < 0, -1.0, 1.0)


def quat_multiply(a: Tensor, b: Tensor) -> Tensor:
    """Hamilton product of ``wxyz`` quaternions, broadcast: [..., 4] x [..., 4] -> [..., 4]
    (the rotation of ``a`` after ``b``)."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack([aw * bw - ax * bx - ay * by - az * bz,
                        aw * bx + ax * bw + ay * bz - az * by,
                        aw * by - ax * bz + ay * bw + az * bx,
                        aw * bz + ax * by - ay * bx + az * bw], -1)


def in_triangle_frame(points: Tensor, offsets: Tensor, quats: Tensor, scales: Tensor, F: Tensor, Q: Tensor,
                      shift: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Posed Gaussians from canonical-frame ones (see the module docstring).

    Args:
        points: [B, N, 3] base points on the posed mesh.  offsets: [B, N, 3] position offsets in the
            canonical frame (metres on the neutral mesh).  quats: [B, N, 4] ``wxyz`` (any norm > 0).
        scales: [B, N, 3] standard deviations.  F, Q: [B, N, 3, 3] (:func:`triangle_deformation`).
        shift: optional [B, 1, 3] the part of the offsets shared by the whole head (the avatar's
            mean offset against the tracked mesh), applied as it is; only each offset's deviation
            from it, ``offsets - shift``, follows ``F`` (None: all of it does).

    Returns:
        means [B, N, 3]; quats [B, N, 4] (unit) and scales [B, N, 3] of the per-axis form; covars
        [B, N, 3, 3], the exact ``F R S^2 R^T F^T`` (what the renderers draw).
    """
    if shift is None:
        means = points + (F @ offsets.unsqueeze(-1)).squeeze(-1)
    else:
        means = points + shift + (F @ (offsets - shift).unsqueeze(-1)).squeeze(-1)
    axes = quat_to_rotmat(quats)  # [B, N, 3, 3], columns r_k
    FR = F @ axes
    stretch = FR.norm(dim=-2)  # [B, N, 3]: |F r_k|
    qn = quats / quats.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    M = FR * scales.unsqueeze(-2)
    return means, quat_multiply(rotmat_to_quat(Q), qn), scales * stretch, M @ M.transpose(-1, -2)


@torch.no_grad()
def covariance_to_quats_scales(covars: Tensor) -> tuple[Tensor, Tensor]:
    """Rotation and standard deviations of covariances, for consumers that store Gaussians as a
    quaternion and three scales (the PLY export, the viewer): covars [..., 3, 3] -> quats [..., 4]
    (unit, wxyz), scales [..., 3] (eigen-decomposition; no gradient)."""
    evals, evecs = torch.linalg.eigh(covars.double())
    flip = torch.where(torch.linalg.det(evecs) < 0, -1.0, 1.0).to(evecs.dtype)
    evecs = torch.cat([evecs[..., :, :2], evecs[..., :, 2:] * flip[..., None, None]], -1)  # a proper rotation
    return rotmat_to_quat(evecs).to(covars.dtype), evals.clamp_min(0).sqrt().to(covars.dtype)


def deformed_covariance_reference(quats: Tensor, scales: Tensor, F: Tensor) -> Tensor:
    """The exact covariance of a Gaussian mapped by ``F``: ``F R S^2 R^T F^T``, one Gaussian at a
    time in float64 (the test oracle of :func:`in_triangle_frame`). quats [N, 4], scales [N, 3],
    F [N, 3, 3] -> [N, 3, 3]."""
    out = []
    for q, s, f in zip(quats.double(), scales.double(), F.double()):
        R = quat_to_rotmat(q)
        M = f @ R @ torch.diag(s)
        out.append(M @ M.T)
    return torch.stack(out)
