"""gsplat (CUDA) against the reference rasteriser on random scenes.

Tolerance: mean absolute difference of the images < 2e-3 and of the alphas < 2e-3, fewer than
0.5% of pixels differing by more than 0.05 (float32, sort ties and summation order differ), and
the gradients of a random linear image loss have cosine similarity > 0.98.
"""

from __future__ import annotations

import pytest
import torch

from stages.gauss.render_gsplat import render_gaussians_gsplat
from stages.gauss.render_ref import render_gaussians_reference, viewmat_from_rt

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def _scene(n: int, cams: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n, 3, generator=g) * torch.tensor([0.25, 0.25, 0.1])
    quats = torch.randn(n, 4, generator=g)
    scales = torch.rand(n, 3, generator=g) * 0.02 + 0.003
    opac = torch.rand(n, generator=g) * 0.9 + 0.05
    colors = torch.rand(n, 3, generator=g)
    yaw = torch.linspace(-0.4, 0.4, cams)
    Rs = torch.stack([torch.tensor([[torch.cos(a), 0, torch.sin(a)], [0, 1, 0], [-torch.sin(a), 0, torch.cos(a)]]) for a in yaw])
    ts = torch.tensor([[0.0, 0.0, 1.2]]).expand(cams, 3)
    K = torch.tensor([[220.0, 0, 64], [0, 220.0, 64], [0, 0, 1]]).expand(cams, 3, 3)
    return [x.cuda() for x in (means, quats, scales, opac, colors, viewmat_from_rt(Rs, ts), K)]


def _close(a_img, a_alpha, b_img, b_alpha):
    d = (a_img - b_img).abs()
    assert d.mean().item() < 2e-3, d.mean().item()
    assert (a_alpha - b_alpha).abs().mean().item() < 2e-3
    assert (d.amax(-1) > 0.05).float().mean().item() < 5e-3


def test_gsplat_matches_reference_shared_gaussians():
    means, quats, scales, opac, colors, vms, Ks = _scene(3000, 4)
    bg = torch.tensor([0.0, 1.0, 0.0], device="cuda")
    ri, ra = render_gaussians_reference(means, quats, scales, opac, colors, vms, Ks, 128, 128, bg)
    gi, ga = render_gaussians_gsplat(means, quats, scales, opac, colors, vms, Ks, 128, 128, bg)
    assert gi.shape == ri.shape == (4, 128, 128, 3) and ga.shape == ra.shape == (4, 128, 128)
    _close(ri, ra, gi, ga)


def test_gsplat_matches_reference_per_image_gaussians_and_gradients():
    means, quats, scales, opac, colors, vms, Ks = _scene(2000, 3, seed=1)
    B = 3
    shift = torch.randn(B, 1, 3, device="cuda", generator=torch.Generator("cuda").manual_seed(0)) * 0.02
    base = [means[None] + shift, quats.expand(B, -1, -1), scales.expand(B, -1, -1), opac.expand(B, -1),
            colors.expand(B, -1, -1)]
    w = torch.rand(B, 96, 96, 3, device="cuda")
    bg = torch.tensor([1.0, 1.0, 1.0], device="cuda")
    outs, grads = [], []
    for fn in (render_gaussians_reference, render_gaussians_gsplat):
        args = [x.clone().requires_grad_(True) for x in base]
        img, alpha = fn(*args, vms, Ks, 96, 96, bg)
        (img * w).sum().backward()
        outs.append((img.detach(), alpha.detach()))
        grads.append([a.grad for a in args])
    _close(outs[0][0], outs[0][1], outs[1][0], outs[1][1])
    for name, gr, gg in zip(("means", "quats", "scales", "opacities", "colors"), grads[0], grads[1]):
        cos = torch.nn.functional.cosine_similarity(gr.flatten(), gg.flatten(), dim=0).item()
        assert cos > 0.98, (name, cos)


def test_gsplat_matches_reference_with_covariances_per_image_and_gradients():
    """Triangle-frame avatars hand the renderers covariances (gsplat's ``covars``) instead of quats and
    scales: both renderers agree on them, and on the gradient reaching them."""
    from stages.gauss.render_ref import covariance_3d

    means, quats, scales, opac, colors, vms, Ks = _scene(2000, 3, seed=2)
    B = 3
    squash = torch.diag(torch.tensor([1.0, 0.3, 1.0], device="cuda"))
    cov = covariance_3d(quats, scales)
    covs = torch.stack([cov, squash @ cov @ squash, cov * 1.5])  # [B, N, 3, 3]
    base = [means[None].expand(B, -1, -1), covs, opac.expand(B, -1), colors.expand(B, -1, -1)]
    w = torch.rand(B, 96, 96, 3, device="cuda")
    bg = torch.tensor([0.0, 1.0, 0.0], device="cuda")
    outs, grads = [], []
    for fn in (render_gaussians_reference, render_gaussians_gsplat):
        m, c, o, col = [x.clone().requires_grad_(True) for x in base]
        img, alpha = fn(m, None, None, o, col, vms, Ks, 96, 96, bg, covars=c)
        (img * w).sum().backward()
        outs.append((img.detach(), alpha.detach()))
        grads.append([m.grad, c.grad])
    _close(outs[0][0], outs[0][1], outs[1][0], outs[1][1])
    for name, gr, gg in zip(("means", "covars"), grads[0], grads[1]):
        if name == "covars":  # gsplat reads the upper triangle: compare the symmetrised gradients
            a, b = gr + gr.transpose(-1, -2), gg + gg.transpose(-1, -2)
        else:  # [B, N, 3] positions: compared as they are
            a, b = gr, gg
        cos = torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0).item()
        assert cos > 0.98, (name, cos)
    # the same Gaussians as quats and scales render the same as their covariances
    i1, a1 = render_gaussians_gsplat(means, quats, scales, opac, colors, vms, Ks, 96, 96, bg)
    i2, a2 = render_gaussians_gsplat(means, None, None, opac, colors, vms, Ks, 96, 96, bg, covars=cov)
    _close(i1, a1, i2, a2)
