"""6D / axis-angle / matrix conversions: PyTorch3D's row convention, inverses, edge angles."""

import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from stages.face.rotation import (
    axis_angle_to_matrix, identity_6d, matrix_to_axis_angle, matrix_to_rotation_6d,
    rotation_6d_to_matrix,
)


def _random_rotvecs(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    axis = torch.nn.functional.normalize(torch.randn(n, 3, generator=g, dtype=torch.float64), dim=-1)
    angle = torch.rand(n, 1, generator=g, dtype=torch.float64) * math.pi
    return axis * angle


def test_axis_angle_matches_scipy():
    rv = _random_rotvecs(64)
    ours = axis_angle_to_matrix(rv).numpy()
    ref = Rotation.from_rotvec(rv.numpy()).as_matrix()
    np.testing.assert_allclose(ours, ref, atol=1e-12)


def test_6d_is_first_two_rows():
    rv = _random_rotvecs(8, seed=1)
    m = axis_angle_to_matrix(rv)
    d6 = matrix_to_rotation_6d(m)
    assert d6.shape == (8, 6)
    torch.testing.assert_close(d6[:, :3], m[:, 0, :])
    torch.testing.assert_close(d6[:, 3:], m[:, 1, :])
    torch.testing.assert_close(rotation_6d_to_matrix(d6), m, atol=1e-12, rtol=0)


def test_6d_gram_schmidt_orthonormalises_rows():
    g = torch.Generator().manual_seed(2)
    d6 = torch.randn(5, 7, 6, generator=g, dtype=torch.float64)
    m = rotation_6d_to_matrix(d6)
    assert m.shape == (5, 7, 3, 3)
    eye = torch.eye(3, dtype=torch.float64).expand_as(m)
    torch.testing.assert_close(m @ m.transpose(-1, -2), eye, atol=1e-12, rtol=0)
    torch.testing.assert_close(torch.linalg.det(m), torch.ones(5, 7, dtype=torch.float64))
    # the first row is the normalised first half: rows, not columns
    torch.testing.assert_close(m[..., 0, :], torch.nn.functional.normalize(d6[..., :3], dim=-1))


def test_identity_6d():
    i6 = identity_6d((2, 3))
    assert i6.shape == (2, 3, 6)
    torch.testing.assert_close(rotation_6d_to_matrix(i6), torch.eye(3).expand(2, 3, 3, 3))
    assert identity_6d(4).shape == (4, 6)


@pytest.mark.parametrize("angle", [0.0, 1e-9, 1e-4, 0.5, 3.0, math.pi - 1e-6, math.pi])
def test_matrix_to_axis_angle_inverts(angle):
    g = torch.Generator().manual_seed(3)
    axis = torch.nn.functional.normalize(torch.randn(16, 3, generator=g, dtype=torch.float64), dim=-1)
    rv = axis * angle
    back = matrix_to_axis_angle(axis_angle_to_matrix(rv))
    if angle > math.pi - 1e-3:  # axis and -axis are the same rotation at pi
        torch.testing.assert_close(axis_angle_to_matrix(back), axis_angle_to_matrix(rv), atol=1e-9, rtol=0)
    else:
        torch.testing.assert_close(back, rv, atol=1e-9, rtol=0)


def test_gradients_finite_at_zero():
    rv = torch.zeros(3, 3, dtype=torch.float64, requires_grad=True)
    m = axis_angle_to_matrix(rv)
    (m * torch.arange(9.0, dtype=torch.float64).view(3, 3)).sum().backward()
    assert torch.isfinite(rv.grad).all()
    # d R / d rv at 0 is skew(): d(R[2,1])/d(x) = 1
    rv2 = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    axis_angle_to_matrix(rv2)[2, 1].backward()
    torch.testing.assert_close(rv2.grad, torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))
    m3 = torch.eye(3, dtype=torch.float64, requires_grad=True)
    matrix_to_axis_angle(m3).sum().backward()
    assert torch.isfinite(m3.grad).all()
