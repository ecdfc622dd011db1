"""The reference rasteriser against analytic cases."""

from __future__ import annotations

import math

import pytest
import torch

from stages.gauss.render_ref import (covariance_3d, project_gaussians, quat_to_rotmat, render_gaussians_reference,
                                     viewmat_from_rt)

W = H = 48
K = torch.tensor([[60.0, 0, 24.0], [0, 60.0, 24.0], [0, 0, 1]], dtype=torch.float64)


def _rot(yaw: float, pitch: float) -> torch.Tensor:
    cy, sy, cp, sp = math.cos(yaw), math.sin(yaw), math.cos(pitch), math.sin(pitch)
    Ry = torch.tensor([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]], dtype=torch.float64)
    Rx = torch.tensor([[1, 0, 0], [0, cp, -sp], [0, sp, cp]], dtype=torch.float64)
    return Rx @ Ry


def _one(mean, scale=0.03, opacity=0.8, quat=(1.0, 0, 0, 0), scales=None):
    m = torch.tensor([mean], dtype=torch.float64)
    q = torch.tensor([quat], dtype=torch.float64)
    s = torch.tensor([scales if scales is not None else [scale] * 3], dtype=torch.float64)
    o = torch.tensor([opacity], dtype=torch.float64)
    return m, q, s, o


def test_quaternion_gives_rotation_and_covariance():
    q = torch.tensor([[0.3, -0.2, 0.5, 0.7]], dtype=torch.float64)
    R = quat_to_rotmat(q)[0]
    assert torch.allclose(R @ R.T, torch.eye(3, dtype=torch.float64), atol=1e-12)
    assert torch.isclose(torch.det(R), torch.tensor(1.0, dtype=torch.float64))
    s = torch.tensor([[0.1, 0.2, 0.05]], dtype=torch.float64)
    cov = covariance_3d(q, s)[0]
    assert torch.allclose(cov, R @ torch.diag(s[0] ** 2) @ R.T, atol=1e-12)


def test_isotropic_gaussian_peak_is_at_projected_centre():
    # x/z * fx + cx = 0.2/2*60+24 = 30 -> pixel centre 29.5? choose u = 30.5 exactly: x = (30.5-24)*2/60
    x, y, z = (30.5 - 24) * 2 / 60, (17.5 - 24) * 2 / 60, 2.0
    m, q, s, o = _one([x, y, z])
    img, alpha = render_gaussians_reference(m, q, s, o, torch.ones(1, 3, dtype=torch.float64), torch.eye(4, dtype=torch.float64), K, W, H)
    assert alpha.shape == (H, W) and img.shape == (H, W, 3)
    row, col = divmod(int(alpha.argmax()), W)
    assert (row, col) == (17, 30)
    assert alpha[17, 30].item() == pytest.approx(0.8, abs=1e-9)  # centre of the pixel = the Gaussian's centre
    # the profile is symmetric about the centre
    assert alpha[17, 29].item() == pytest.approx(alpha[17, 31].item(), abs=1e-12)
    assert alpha[16, 30].item() == pytest.approx(alpha[18, 30].item(), abs=1e-12)


def _perspective(p_cam: torch.Tensor) -> torch.Tensor:
    return torch.stack([K[0, 0] * p_cam[0] / p_cam[2] + K[0, 2], K[1, 1] * p_cam[1] / p_cam[2] + K[1, 2]])


def test_2d_covariance_is_J_W_Sigma_Wt_Jt_plus_dilation():
    R = _rot(0.3, -0.2)
    t = torch.tensor([0.05, -0.02, 2.5], dtype=torch.float64)
    viewmat = viewmat_from_rt(R, t)
    m, q, s, o = _one([0.1, 0.15, 0.2], quat=(0.9, 0.1, -0.3, 0.2), scales=[0.05, 0.02, 0.08])
    proj = project_gaussians(m, q, s, o, viewmat, K, W, H)
    p_cam = R @ m[0] + t
    J = torch.autograd.functional.jacobian(_perspective, p_cam)  # [2, 3], independent of the renderer's formula
    Sigma = covariance_3d(q, s)[0]
    expected = J @ R @ Sigma @ R.T @ J.T + 0.3 * torch.eye(2, dtype=torch.float64)
    assert torch.allclose(proj.cov2d[0, 0], expected, rtol=1e-10, atol=1e-12)
    assert torch.allclose(proj.means2d[0, 0], _perspective(p_cam), atol=1e-10)
    assert proj.depths[0, 0].item() == pytest.approx(p_cam[2].item())


def test_alpha_profile_is_gaussian_with_projected_covariance():
    R = _rot(-0.25, 0.15)
    t = torch.tensor([0.0, 0.0, 2.0], dtype=torch.float64)
    viewmat = viewmat_from_rt(R, t)
    m, q, s, o = _one([0.05, -0.03, 0.1], opacity=0.7, quat=(0.8, 0.3, 0.1, -0.4), scales=[0.06, 0.025, 0.04])
    _, alpha = render_gaussians_reference(m, q, s, o, torch.ones(1, 3, dtype=torch.float64), viewmat, K, W, H)
    p_cam = R @ m[0] + t
    J = torch.autograd.functional.jacobian(_perspective, p_cam)
    cov2d = J @ R @ covariance_3d(q, s)[0] @ R.T @ J.T + 0.3 * torch.eye(2, dtype=torch.float64)
    mu = _perspective(p_cam)
    ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float64) + 0.5, torch.arange(W, dtype=torch.float64) + 0.5, indexing="ij")
    d = torch.stack([xs - mu[0], ys - mu[1]], -1)
    maha = (d @ torch.linalg.inv(cov2d) * d).sum(-1)
    expected = 0.7 * torch.exp(-0.5 * maha)
    expected = torch.where(expected >= 1 / 255, expected, torch.zeros_like(expected))
    assert torch.allclose(alpha, expected, atol=1e-9)
    assert (alpha > 0).sum() > 50  # a real footprint, not a point


def test_front_to_back_compositing_is_independent_of_input_order():
    means = torch.tensor([[0.0, 0.0, 3.0], [0.0, 0.0, 2.0]], dtype=torch.float64)  # second is in front
    quats = torch.tensor([[1.0, 0, 0, 0]] * 2, dtype=torch.float64)
    scales = torch.full((2, 3), 0.2, dtype=torch.float64)
    opac = torch.tensor([0.6, 0.5], dtype=torch.float64)
    colors = torch.tensor([[1.0, 0, 0], [0, 0, 1.0]], dtype=torch.float64)
    bg = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)
    img, alpha = render_gaussians_reference(means, quats, scales, opac, colors, torch.eye(4, dtype=torch.float64), K, W, H, bg)
    # pixel (23, 23): centre at (23.5, 23.5), both Gaussians centred at (24, 24)
    def pick(o: float, var: float) -> float:  # offset (0.5, 0.5) px from the centre, isotropic variance
        return o * math.exp(-0.5 * 0.5 / var)

    a_f = pick(0.5, (60 * 0.2 / 2.0) ** 2 + 0.3)
    a_b = pick(0.6, (60 * 0.2 / 3.0) ** 2 + 0.3)
    expected = colors[1] * a_f + colors[0] * a_b * (1 - a_f) + bg * (1 - a_f) * (1 - a_b)
    assert torch.allclose(img[23, 23], expected, atol=1e-9)
    assert alpha[23, 23].item() == pytest.approx(1 - (1 - a_f) * (1 - a_b), abs=1e-9)
    img2, alpha2 = render_gaussians_reference(means.flip(0), quats, scales, opac.flip(0), colors.flip(0),
                                              torch.eye(4, dtype=torch.float64), K, W, H, bg)
    assert torch.allclose(img, img2) and torch.allclose(alpha, alpha2)


def test_early_termination_is_exclusive():
    # three nearly opaque Gaussians on the same spot: after the first T = 1e-3; the second would
    # bring it to 1e-6 <= 1e-4, so it and everything behind are left out.
    means = torch.tensor([[0.0, 0.0, 2.0], [0.0, 0.0, 2.5], [0.0, 0.0, 3.0]], dtype=torch.float64)
    quats = torch.tensor([[1.0, 0, 0, 0]] * 3, dtype=torch.float64)
    scales = torch.full((3, 3), 0.5, dtype=torch.float64)
    opac = torch.ones(3, dtype=torch.float64)  # alpha is capped at 0.999
    colors = torch.eye(3, dtype=torch.float64)
    bg = torch.tensor([0.2, 0.2, 0.2], dtype=torch.float64)
    img, alpha = render_gaussians_reference(means, quats, scales, opac, colors, torch.eye(4, dtype=torch.float64), K, W, H, bg)
    px = img[24, 24]
    a0 = min(0.999, math.exp(-0.5 * 0.5 / ((60 * 0.5 / 2) ** 2 + 0.3)))
    assert alpha[24, 24].item() == pytest.approx(a0, abs=1e-9)
    assert torch.allclose(px, colors[0] * a0 + bg * (1 - a0), atol=1e-9)


def test_alpha_below_threshold_is_skipped_and_culling():
    m, q, s, o = _one([0.0, 0.0, 2.0], opacity=0.9 / 255)
    _, alpha = render_gaussians_reference(m, q, s, o, torch.ones(1, 3, dtype=torch.float64), torch.eye(4, dtype=torch.float64), K, W, H)
    assert alpha.abs().max() == 0
    m, q, s, o = _one([0.0, 0.0, -2.0])  # behind the camera
    _, alpha = render_gaussians_reference(m, q, s, o, torch.ones(1, 3, dtype=torch.float64), torch.eye(4, dtype=torch.float64), K, W, H)
    assert alpha.abs().max() == 0


def _scene(n=40, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n, 3, generator=g, dtype=dtype) * 0.3 + torch.tensor([0, 0, 2.5], dtype=dtype)
    quats = torch.randn(n, 4, generator=g, dtype=dtype)
    scales = torch.rand(n, 3, generator=g, dtype=dtype) * 0.05 + 0.01
    opac = torch.rand(n, generator=g, dtype=dtype) * 0.8 + 0.1
    colors = torch.rand(n, 3, generator=g, dtype=dtype)
    return means, quats, scales, opac, colors


def test_batched_cameras_match_single_renders():
    means, quats, scales, opac, colors = _scene()
    Rs = torch.stack([_rot(0.2 * i, -0.1 * i) for i in range(3)])
    ts = torch.tensor([[0.0, 0.0, 0.5]] * 3, dtype=torch.float64)
    vms = viewmat_from_rt(Rs, ts)
    bg = torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64)
    img, alpha = render_gaussians_reference(means, quats, scales, opac, colors, vms, K.expand(3, 3, 3), W, H, bg)
    assert img.shape == (3, H, W, 3) and alpha.shape == (3, H, W)
    for c in range(3):
        i1, a1 = render_gaussians_reference(means, quats, scales, opac, colors, vms[c], K, W, H, bg)
        assert torch.allclose(img[c], i1) and torch.allclose(alpha[c], a1)
    # per-camera Gaussians [C, N, ...]
    img2, _ = render_gaussians_reference(means.expand(3, -1, -1), quats.expand(3, -1, -1), scales.expand(3, -1, -1),
                                         opac.expand(3, -1), colors.expand(3, -1, -1), vms, K.expand(3, 3, 3), W, H, bg)
    assert torch.allclose(img, img2)


def test_gradients_match_finite_differences():
    means, quats, scales, opac, colors = _scene(n=6, seed=3)
    means[:, 2] = torch.tensor([2.0, 2.2, 2.4, 2.6, 2.8, 3.0], dtype=torch.float64)
    means[:, :2] *= 0.3
    Ks = torch.tensor([[20.0, 0, 8], [0, 20.0, 8], [0, 0, 1]], dtype=torch.float64)
    vm = torch.eye(4, dtype=torch.float64)

    def f(m, s, o, c):
        img, alpha = render_gaussians_reference(m, quats, s, o, c, vm, Ks, 16, 16, torch.tensor([0.3, 0.3, 0.3], dtype=torch.float64))
        return img.sum() + alpha.square().sum()

    args = tuple(x.clone().requires_grad_(True) for x in (means, scales, opac, colors))
    assert torch.autograd.gradcheck(f, args, eps=1e-7, atol=1e-4, rtol=1e-3)


def test_row_bands_give_the_same_image_and_gradients():
    means, quats, scales, opac, colors = _scene(n=60, seed=5)
    vm = torch.eye(4, dtype=torch.float64)
    outs = []
    for max_pairs in (10 ** 9, 500):  # one pass, and about a dozen bands of rows
        c = colors.clone().requires_grad_(True)
        m = means.clone().requires_grad_(True)
        img, alpha = render_gaussians_reference(m, quats, scales, opac, c, vm, K, W, H,
                                                torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64), max_pairs=max_pairs)
        (img.sum() + alpha.sum()).backward()
        outs.append((img.detach(), alpha.detach(), c.grad, m.grad))
    for a, b in zip(*outs):
        assert torch.allclose(a, b, atol=1e-12)


def test_without_gradients_the_default_bands_are_smaller_and_the_image_the_same(monkeypatch):
    """Rendering a trained avatar (no gradients) bands the pairs by NO_GRAD_MAX_PAIRS (small arrays the
    allocator reuses), recording gradients by MAX_PAIRS; the picture is the same either way."""
    import stages.gauss.render_ref as rr

    means, quats, scales, opac, colors = _scene(n=60, seed=6)
    vm = torch.eye(4, dtype=torch.float64)
    bands = []
    real = rr._composite_rows
    monkeypatch.setattr(rr, "_composite_rows", lambda *a: bands.append(a[-1] - a[-2]) or real(*a))
    monkeypatch.setattr(rr, "NO_GRAD_MAX_PAIRS", 500)
    with torch.no_grad():
        img0, alpha0 = render_gaussians_reference(means, quats, scales, opac, colors, vm, K, W, H)
    no_grad_bands, bands[:] = len(bands), []
    img1, alpha1 = render_gaussians_reference(means, quats, scales, opac, colors.clone().requires_grad_(True), vm,
                                              K, W, H)
    assert no_grad_bands > 1 and len(bands) == 1
    assert torch.allclose(img0, img1.detach(), atol=1e-12) and torch.allclose(alpha0, alpha1.detach(), atol=1e-12)


def test_warmup_loads_dynamo_and_gsplat_only_on_cuda():
    """The background load imports torch._dynamo (once: nothing to do after) and gsplat's extension
    only for a CUDA device where gsplat imports."""
    import sys

    from stages.gauss.render_gsplat import gsplat_available, start_warmup

    thread = start_warmup("cpu")
    if thread is not None:
        assert thread.daemon
        thread.join(120)
    assert "torch._dynamo" in sys.modules and start_warmup("cpu") is None
    if gsplat_available():
        thread = start_warmup("cuda")
        assert thread is not None
        thread.join(600)
        assert not thread.is_alive()
