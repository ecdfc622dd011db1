"""A rigid motion applied to exported Gaussians, spherical-harmonics colours included.

Used to bake the tracked head pose into PLY files (``--head-pose``): frame ``k``'s Gaussians moved by
``x' = M x + d`` with ``M = R0ᵀ R_k`` and ``d = R0ᵀ (t_k - t0)`` are seen by frame 0's camera exactly as
frame ``k``'s camera sees the unmoved ones, so a viewer with one fixed camera shows the head motion.

SH rotation: real SH of each degree span a space closed under rotation, so the rotated coefficients
``c'`` (with ``f'(d) = f(Mᵀ d)``) solve a linear system on sample directions:
``Y(d) c' = Y(Mᵀ d) c``; with more directions than bases the least-squares solution is exact (to
float64 rounding), whatever the basis' sign conventions.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import torch

from stages.export.ply import SplatCloud
from stages.gauss.sh import sh_basis


def _directions(n: int = 64) -> np.ndarray:
    """[n, 3] unit vectors spread over the sphere (Fibonacci lattice), float64."""
    i = np.arange(n) + 0.5
    z = 1 - 2 * i / n
    r = np.sqrt(1 - z * z)
    phi = i * math.pi * (3 - math.sqrt(5))
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], -1)


def sh_rotation(M: np.ndarray, degree: int = 3) -> np.ndarray:
    """[K, K] matrix ``A`` (K = (degree+1)²) with ``c' = A c`` the SH coefficients of ``f(Mᵀ ·)``."""
    d = torch.from_numpy(_directions())
    B = sh_basis(degree, d).numpy()  # [D, K]
    B_rot = sh_basis(degree, d @ torch.from_numpy(np.asarray(M, np.float64))).numpy()  # Y(Mᵀ d)
    A, *_ = np.linalg.lstsq(B, B_rot, rcond=None)
    return A


def rotmat_to_wxyz(R: np.ndarray) -> np.ndarray:
    """A rotation matrix [3, 3] as a unit quaternion (w, x, y, z), w >= 0."""
    R = np.asarray(R, np.float64)
    m = np.array([
        [R[0, 0] - R[1, 1] - R[2, 2], 0, 0, 0],
        [R[0, 1] + R[1, 0], R[1, 1] - R[0, 0] - R[2, 2], 0, 0],
        [R[0, 2] + R[2, 0], R[1, 2] + R[2, 1], R[2, 2] - R[0, 0] - R[1, 1], 0],
        [R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1], R[0, 0] + R[1, 1] + R[2, 2]]]) / 3.0
    w, v = np.linalg.eigh(m)  # Bar-Itzhack: the eigenvector of the largest eigenvalue
    x, y, z, qw = v[:, np.argmax(w)]
    q = np.array([qw, x, y, z])
    return q * (1 if qw >= 0 else -1)


def _quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product of wxyz quaternions, broadcast: a [..., 4], b [..., 4] -> [..., 4]."""
    aw, ax, ay, az = np.moveaxis(a, -1, 0)
    bw, bx, by, bz = np.moveaxis(b, -1, 0)
    return np.stack([aw * bw - ax * bx - ay * by - az * bz, aw * bx + ax * bw + ay * bz - az * by,
                     aw * by - ax * bz + ay * bw + az * bx, aw * bz + ax * by - ay * bx + az * bw], -1)


def transform_cloud(cloud: SplatCloud, M: np.ndarray, d: np.ndarray) -> SplatCloud:
    """The cloud moved by ``x' = M x + d`` (M a rotation [3, 3], d [3] metres): centres, rotations and
    SH colours (view-dependent terms rotated with the scene); scales and opacities unchanged."""
    M = np.asarray(M, np.float64)
    q = rotmat_to_wxyz(M)
    quats = _quat_mul(q[None], cloud.quats.astype(np.float64))
    A = sh_rotation(M, 3)
    sh = np.einsum("jk,nkc->njc", A, cloud.sh.astype(np.float64))
    return replace(cloud, means=(cloud.means @ M.T + np.asarray(d)).astype(np.float32),
                   quats=quats.astype(np.float32), sh=sh.astype(np.float32))


def head_pose_transform(R_k: np.ndarray, t_k: np.ndarray, R0: np.ndarray, t0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(M, d) that carry frame ``k``'s head pose into frame 0's camera: ``M = R0ᵀ R_k``, ``d = R0ᵀ (t_k - t0)``."""
    R0 = np.asarray(R0, np.float64)
    return R0.T @ np.asarray(R_k, np.float64), R0.T @ (np.asarray(t_k, np.float64) - np.asarray(t0, np.float64))
