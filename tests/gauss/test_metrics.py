"""PSNR and SSIM."""

import math

import pytest
import torch

from stages.gauss.metrics import gaussian_window, psnr, ssim


def test_psnr_of_known_error():
    a = torch.zeros(2, 8, 8, 3)
    b = a + 0.1
    assert torch.allclose(psnr(a, b), torch.full((2,), 20.0), atol=1e-4)


def test_ssim_identity_and_constants():
    x = torch.rand(2, 32, 32, 3)
    assert torch.allclose(ssim(x, x), torch.ones(2), atol=1e-6)
    a, b = 0.3, 0.7
    c1 = 0.01 ** 2
    got = ssim(torch.full((16, 16, 3), a), torch.full((16, 16, 3), b)).item()
    assert got == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), abs=1e-6)


def test_ssim_falls_with_noise_and_window_is_normalised():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 32, 32, 3, generator=g)
    small = ssim(x, (x + 0.02 * torch.randn(x.shape, generator=g)).clamp(0, 1)).item()
    large = ssim(x, (x + 0.2 * torch.randn(x.shape, generator=g)).clamp(0, 1)).item()
    assert 1 > small > large
    w = gaussian_window(11, 1.5)
    assert w.shape == (11, 11) and math.isclose(w.sum().item(), 1.0, abs_tol=1e-6)
    assert w[5, 5] == w.max()
