"""Spherical harmonics colours."""

import torch

from stages.gauss.sh import eval_sh, num_sh_bases, rgb_to_sh0, sh_basis


def test_dc_only_gives_the_colour_in_every_direction():
    rgb = torch.rand(5, 3)
    coeffs = torch.zeros(5, 16, 3)
    coeffs[:, 0] = rgb_to_sh0(rgb)
    dirs = torch.randn(5, 3)
    assert torch.allclose(eval_sh(3, coeffs, dirs), rgb, atol=1e-6)


def test_basis_is_orthonormal_on_the_sphere():
    g = torch.Generator().manual_seed(0)
    d = torch.randn(200000, 3, generator=g, dtype=torch.float64)
    d = d / d.norm(dim=-1, keepdim=True)
    Y = sh_basis(3, d)  # [M, 16]
    gram = Y.T @ Y * (4 * torch.pi / d.shape[0])
    assert torch.allclose(gram, torch.eye(16, dtype=torch.float64), atol=0.03)
    assert num_sh_bases(3) == 16 and num_sh_bases(0) == 1


def test_view_dependence_and_clamp():
    coeffs = torch.zeros(1, 4, 3)
    coeffs[0, 3] = 2.0  # -C1 * x term
    a = eval_sh(1, coeffs, torch.tensor([[1.0, 0, 0]]))
    b = eval_sh(1, coeffs, torch.tensor([[-1.0, 0, 0]]))
    assert torch.all(a == 0)  # 0.5 - 0.977 < 0, clamped
    assert torch.allclose(b, torch.full((1, 3), 0.5 + 2 * 0.4886025119029199))
