"""viser's splat buffer packed on the device equals viser's own packing; the small pose helpers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

pytest.importorskip("viser", reason="viser is in the viewer extra (pip install -e '.[viewer]')")

from stages.face.rotation import axis_angle_to_matrix, matrix_to_rotation_6d, rotation_6d_to_matrix  # noqa: E402
from stages.gauss.render_ref import quat_to_rotmat  # noqa: E402
from stages.viewer.server import jaw_with_offset  # noqa: E402
from stages.viewer.splats import pack_splats, pack_splats_reference, rotmat_to_wxyz  # noqa: E402


def test_pack_splats_matches_viser_packing():
    g = torch.Generator().manual_seed(0)
    n = 500
    means = torch.randn(n, 3, generator=g) * 0.1
    quats = torch.randn(n, 4, generator=g)
    scales = torch.rand(n, 3, generator=g) * 3e-3 + 1e-4
    opac = torch.rand(n, generator=g)
    rgb = torch.rand(n, 3, generator=g) * 1.2 - 0.1  # out-of-range values are clipped like viser does
    fast = pack_splats(means, quats, scales, opac, rgb, scale=10.0)
    ref = pack_splats_reference(means.numpy(), quats.numpy(), scales.numpy(), opac.numpy(), rgb.numpy(), scale=10.0)
    assert fast.dtype == np.uint32 and fast.shape == (n, 8)
    np.testing.assert_array_equal(fast[:, [0, 1, 2, 3, 7]], ref[:, [0, 1, 2, 3, 7]])
    # covariances: float16 of float32 products computed in a different order may differ by one ulp
    a = fast[:, 4:7].copy().view(np.float16).astype(np.float32)
    b = ref[:, 4:7].copy().view(np.float16).astype(np.float32)
    np.testing.assert_allclose(a, b, rtol=2e-3, atol=1e-7)
    assert (np.abs(a) > 6.1e-5).mean() > 0.3  # the scene scale keeps variances in float16's normal range


def test_rotmat_to_wxyz_round_trips():
    for aa in ([0.3, -0.2, 0.9], [math.pi - 1e-3, 0, 0], [0, 0, 0]):
        R = axis_angle_to_matrix(torch.tensor(aa, dtype=torch.float64))
        q = rotmat_to_wxyz(R.numpy())
        assert abs(np.linalg.norm(q) - 1) < 1e-9
        np.testing.assert_allclose(quat_to_rotmat(torch.from_numpy(q)).numpy(), R.numpy(), atol=1e-6)


def test_jaw_offset_opens_about_x():
    jaw = matrix_to_rotation_6d(axis_angle_to_matrix(torch.tensor([0.1, 0.0, 0.0])))[None]
    out = rotation_6d_to_matrix(jaw_with_offset(jaw, 0.25))[0]
    np.testing.assert_allclose(out.numpy(), axis_angle_to_matrix(torch.tensor([0.35, 0.0, 0.0])).numpy(), atol=1e-6)
