"""Posed Gaussians as viser's splat buffer.

viser (1.x) takes per Gaussian 8 uint32 words: centre (3 x float32), one reserved word, the upper
triangle of the 3D covariance (6 x float16) and RGBA (4 x uint8, ``clip(255 x, 0, 255)`` truncated).
:func:`pack_splats` builds that buffer with torch on the Gaussians' device (one host copy per
frame); :func:`pack_splats_reference` does it through viser's own ``add_gaussian_splats`` packing
rules in NumPy, as the oracle of the tests.

Units: viser's covariances are float16, whose smallest normal number is 6e-5; a head's Gaussians in
metres have variances near 1e-7. The viewer therefore scales the scene by ``scale`` (default 10:
decimetres), so centres are multiplied by ``scale`` and covariances by ``scale²``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from stages.export.rigid import rotmat_to_wxyz  # noqa: F401 - re-exported for the server
from stages.gauss.render_ref import covariance_3d

TRIU = (0, 1, 2, 4, 5, 8)  # upper-triangle entries of a flattened 3x3, viser's order


def splat_colors(sh: Tensor, sh_degree: int, means: Tensor, eye: Tensor) -> Tensor:
    """View-dependent RGB seen from ``eye``: sh [N, K, 3], means [N, 3], eye [3] -> [N, 3] in 0..1."""
    from stages.gauss.sh import eval_sh

    return eval_sh(sh_degree, sh, means - eye).clamp(0, 1)


def pack_splats(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, rgb: Tensor,
                scale: float = 1.0) -> np.ndarray:
    """viser's splat buffer from activated Gaussians.

    Args:
        means: [N, 3] metres.  quats: [N, 4] wxyz.  scales: [N, 3] standard deviations (metres).
        opacities: [N] 0..1.  rgb: [N, 3] 0..1.  scale: scene units per metre.

    Returns:
        uint32 [N, 8] (NumPy, on the host), what ``GaussianSplatHandle.buffer`` holds.
    """
    n = means.shape[0]
    cov = covariance_3d(quats.float(), scales.float() * scale).reshape(n, 9)[:, list(TRIU)]
    centers = (means.float() * scale).contiguous().view(torch.int32)  # [N, 3]
    cov16 = cov.to(torch.float16).contiguous().view(torch.int32)  # [N, 3]
    rgba = torch.cat([rgb.float(), opacities.float().reshape(n, 1)], 1)
    rgba = (rgba * 255.0).clamp(0, 255).to(torch.uint8).contiguous().view(torch.int32)  # [N, 1]
    buf = torch.cat([centers, torch.zeros(n, 1, dtype=torch.int32, device=means.device), cov16, rgba], 1)
    return buf.cpu().numpy().view(np.uint32)


def pack_splats_reference(means: np.ndarray, quats: np.ndarray, scales: np.ndarray, opacities: np.ndarray,
                          rgb: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """The same buffer by viser's own NumPy packing (``add_gaussian_splats``'s rules), for tests."""
    from viser._assignable_props_api import colors_to_uint8

    q = torch.as_tensor(quats, dtype=torch.float32)
    cov = covariance_3d(q, torch.as_tensor(scales, dtype=torch.float32) * scale).numpy()
    n = means.shape[0]
    cov_triu = cov.reshape((-1, 9))[:, np.array(TRIU)]
    return np.concatenate([
        np.ascontiguousarray(means * scale, dtype=np.float32).view(np.uint8),
        np.zeros((n, 4), dtype=np.uint8),
        np.ascontiguousarray(cov_triu, dtype=np.float16).view(np.uint8),
        colors_to_uint8(np.asarray(rgb, np.float32)),
        colors_to_uint8(np.asarray(opacities, np.float32).reshape(n, 1)),
    ], axis=-1).view(np.uint32)
