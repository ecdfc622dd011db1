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


def test_ssim_with_the_separable_window_equals_the_2d_window():
    """ssim() blurs rows then columns with one 1D Gaussian; the plain definition convolves with the 2D
    window (gaussian_window): the same local statistics, so the same SSIM."""
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(3)
    x = torch.rand(3, 40, 36, 3, generator=g)
    y = (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    a, b = x.permute(0, 3, 1, 2).double(), y.permute(0, 3, 1, 2).double()
    w = gaussian_window(11, 1.5, torch.float64).expand(3, 1, 11, 11)

    def blur(t):
        return F.conv2d(t, w, groups=3)

    mx, my = blur(a), blur(b)
    sxx, syy, sxy = blur(a * a) - mx * mx, blur(b * b) - my * my, blur(a * b) - mx * my
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    ref = (((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))).flatten(1).mean(1)
    assert torch.allclose(ssim(x, y).double(), ref, atol=1e-7)
