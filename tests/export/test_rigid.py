"""Baking the head pose into exported Gaussians: SH rotation and the camera equivalence."""

from __future__ import annotations

import numpy as np
import torch

from stages.export.ply import SplatCloud, activated
from stages.export.rigid import head_pose_transform, sh_rotation, transform_cloud
from stages.face.rotation import axis_angle_to_matrix
from stages.gauss.metrics import psnr
from stages.gauss.render_ref import render_gaussians_reference, viewmat_from_rt
from stages.gauss.sh import eval_sh


def test_rotated_sh_evaluate_like_rotated_directions():
    g = torch.Generator().manual_seed(0)
    M = axis_angle_to_matrix(torch.tensor([0.4, -1.1, 0.7], dtype=torch.float64)).numpy()
    c = torch.randn(20, 16, 3, generator=g, dtype=torch.float64)
    c2 = torch.from_numpy(np.einsum("jk,nkc->njc", sh_rotation(M), c.numpy()))
    d = torch.randn(20, 3, generator=g, dtype=torch.float64)
    want = eval_sh(3, c, d @ torch.from_numpy(M))  # f(Mᵀ d)
    torch.testing.assert_close(eval_sh(3, c2, d), want, atol=1e-9, rtol=0)
    assert np.abs(sh_rotation(M)[1:, 1:] - np.eye(15)).max() > 0.1  # it is not the identity


def _render(cloud: SplatCloud, R, t, K, res):
    g = activated(cloud)
    R, t = torch.as_tensor(R, dtype=torch.float32), torch.as_tensor(t, dtype=torch.float32)
    eye = -(R.T @ t)
    img, _ = render_gaussians_reference(g["means"], g["quats"], g["scales"], g["opacities"],
                                        eval_sh(3, g["sh"], g["means"] - eye), viewmat_from_rt(R, t), K, res, res,
                                        torch.tensor([0.0, 1.0, 0.0]))
    return img


def test_baked_frame_seen_from_camera_0_equals_frame_k_from_its_camera():
    r = np.random.default_rng(1)
    n = 400
    q = r.normal(size=(n, 4)).astype(np.float32)
    cloud = SplatCloud(means=(r.normal(size=(n, 3)) * 0.05).astype(np.float32), quats=q / np.linalg.norm(q, axis=1, keepdims=True),
                       log_scales=r.normal(-5.0, 0.3, (n, 3)).astype(np.float32),
                       opacity_logits=r.normal(1, 1, n).astype(np.float32), sh=(r.normal(size=(n, 16, 3)) * 0.3).astype(np.float32))
    rot = lambda *aa: axis_angle_to_matrix(torch.tensor(aa, dtype=torch.float64)).numpy()  # noqa: E731
    R0, t0 = rot(0.05, 0.1, 0.0), np.array([0.0, 0.01, 0.5])
    Rk, tk = rot(-0.2, 0.35, 0.1), np.array([0.02, -0.01, 0.55])
    K = torch.tensor([[120.0, 0, 32], [0, 120.0, 32], [0, 0, 1]])
    want = _render(cloud, Rk, tk, K, 64)
    M, d = head_pose_transform(Rk, tk, R0, t0)
    got = _render(transform_cloud(cloud, M, d), R0, t0, K, 64)
    assert (want - torch.tensor([0.0, 1.0, 0.0])).abs().sum(-1).gt(0.05).float().mean() > 0.1  # something is drawn
    assert float(psnr(got.clamp(0, 1)[None], want.clamp(0, 1)[None])) >= 40.0
