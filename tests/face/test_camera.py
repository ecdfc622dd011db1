"""OpenCV projection and the PyTorch3D (metrical-tracker .frame) camera fields."""

import numpy as np
import pytest
import torch

from stages.face.camera import intrinsics, opencv_to_pytorch3d, project, project_pytorch3d, pytorch3d_to_opencv
from stages.face.rotation import axis_angle_to_matrix


def _cameras(b: int, seed: int = 0, fy_scale: float = 1.0):
    g = torch.Generator().manual_seed(seed)
    rv = torch.randn(b, 3, generator=g, dtype=torch.float64) * 0.4
    R = axis_angle_to_matrix(rv)
    t = torch.tensor([0.01, -0.02, 1.2], dtype=torch.float64) + 0.05 * torch.randn(b, 3, generator=g, dtype=torch.float64)
    fx = 1500 + 300 * torch.rand(b, generator=g, dtype=torch.float64)
    K = intrinsics(fx, fx * fy_scale, 250 + 10 * torch.rand(b, generator=g, dtype=torch.float64),
                   260 + 10 * torch.rand(b, generator=g, dtype=torch.float64), dtype=torch.float64)
    pts = 0.1 * torch.randn(b, 50, 3, generator=g, dtype=torch.float64)
    return K, R, t, pts


def test_project_matches_opencv_formula():
    K, R, t, pts = _cameras(3)
    pix, depth = project(pts, K, R, t)
    assert pix.shape == (3, 50, 2) and depth.shape == (3, 50)
    for b in range(3):
        cam = pts[b].numpy() @ R[b].numpy().T + t[b].numpy()
        uvw = cam @ K[b].numpy().T
        np.testing.assert_allclose(pix[b].numpy(), uvw[:, :2] / uvw[:, 2:], rtol=1e-12)
        np.testing.assert_allclose(depth[b].numpy(), cam[:, 2], rtol=1e-12)


def test_project_known_point():
    K = intrinsics(1000.0, 1000.0, 256.0, 256.0, dtype=torch.float64)
    R, t = torch.eye(3, dtype=torch.float64)[None], torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64)
    pix, depth = project(torch.tensor([[[0.1, -0.05, 0.0]]], dtype=torch.float64), K, R, t)
    torch.testing.assert_close(pix[0, 0], torch.tensor([356.0, 206.0], dtype=torch.float64))
    assert depth.item() == pytest.approx(1.0)


def test_pytorch3d_fields_for_a_centred_square_camera():
    K = intrinsics(2048.0, 2048.0, 256.0, 256.0, dtype=torch.float64)
    cam = opencv_to_pytorch3d(K, torch.eye(3, dtype=torch.float64)[None],
                              torch.tensor([[0.1, 0.2, 1.0]], dtype=torch.float64), (512, 512))
    assert cam.fl.shape == (1, 1) and cam.fl.item() == pytest.approx(8.0)   # 2048 / 256
    torch.testing.assert_close(cam.pp, torch.zeros(1, 2, dtype=torch.float64))
    torch.testing.assert_close(cam.t, torch.tensor([[-0.1, -0.2, 1.0]], dtype=torch.float64))
    # R_p3d = diag(-1,-1,1) for an identity OpenCV rotation; 6D = its first two rows
    torch.testing.assert_close(cam.R, torch.tensor([[-1.0, 0, 0, 0, -1, 0]], dtype=torch.float64))


@pytest.mark.parametrize("size,fy_scale", [((512, 512), 1.0), ((480, 640), 1.0), ((512, 512), 1.1)])
def test_pytorch3d_projection_agrees_and_round_trips(size, fy_scale):
    K, R, t, pts = _cameras(4, seed=1, fy_scale=fy_scale)
    cam = opencv_to_pytorch3d(K, R, t, size)
    assert cam.fl.shape == ((4, 1) if fy_scale == 1.0 else (4, 2))
    pix_cv, z_cv = project(pts, K, R, t)
    pix_p3d, z_p3d = project_pytorch3d(pts, cam, size)
    torch.testing.assert_close(pix_p3d, pix_cv, atol=1e-9, rtol=0)
    torch.testing.assert_close(z_p3d, z_cv)
    K2, R2, t2 = pytorch3d_to_opencv(cam, size)
    torch.testing.assert_close(K2, K)
    torch.testing.assert_close(R2, R)
    torch.testing.assert_close(t2, t)


def test_non_square_uses_min_side():
    K = intrinsics(600.0, 600.0, 320.0, 240.0, dtype=torch.float64)
    cam = opencv_to_pytorch3d(K, torch.eye(3, dtype=torch.float64)[None], torch.zeros(1, 3, dtype=torch.float64),
                              (480, 640))
    assert cam.fl.item() == pytest.approx(600.0 / 240.0)
    torch.testing.assert_close(cam.pp, torch.zeros(1, 2, dtype=torch.float64))


def test_gradients_flow_through_projection():
    K, R, t, pts = _cameras(2, seed=3)
    t = t.clone().requires_grad_(True)
    pts = pts.clone().requires_grad_(True)
    pix, _ = project(pts, K, R, t)
    pix.sum().backward()
    assert t.grad.abs().sum() > 0 and pts.grad.abs().sum() > 0
