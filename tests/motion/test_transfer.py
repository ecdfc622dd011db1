"""Driver -> actor transfer of expression and head pose."""

from __future__ import annotations

import numpy as np
import torch

from stages.face.rotation import axis_angle_to_matrix, matrix_to_rotation_6d
from stages.motion.format import Motion
from stages.motion.transfer import (median_rotation, neutral_of, ping_pong, transfer_expression, transfer_pose,
                                    zero_neutral)


def _rot(aa) -> np.ndarray:
    return axis_angle_to_matrix(torch.as_tensor(np.asarray(aa, np.float64))).float().numpy()


def _motion(n: int, seed: int, offset: float) -> Motion:
    rng = np.random.default_rng(seed)
    jaw_aa = np.stack([offset + 0.1 * rng.uniform(size=n), np.zeros(n), np.zeros(n)], 1)
    m = Motion.neutral(n)
    m.exp = (offset + rng.normal(size=(n, 100))).astype(np.float32)
    m.jaw = matrix_to_rotation_6d(torch.as_tensor(_rot(jaw_aa))).numpy()
    m.eyelids = (offset + 0.1 * rng.uniform(size=(n, 2))).astype(np.float32)
    m.R = _rot(rng.normal(scale=0.1, size=(n, 3))) @ np.diag([1.0, -1, -1]).astype(np.float32)
    m.t = (np.array([0, 0, 1.0]) + 0.01 * rng.normal(size=(n, 3))).astype(np.float32)
    m.K = np.array([[2000, 0, 256], [0, 2000, 256], [0, 0, 1]], np.float32)
    return m


def test_relative_expression_moves_the_driver_neutral_onto_the_actor_neutral():
    drv, act = _motion(31, 0, 0.5), _motion(41, 1, -0.3)
    out = transfer_expression(drv, neutral_of(drv), neutral_of(act), "relative")
    got = neutral_of(out)
    np.testing.assert_allclose(got.exp, neutral_of(act).exp, atol=1e-5)
    np.testing.assert_allclose(got.eyelids, neutral_of(act).eyelids, atol=1e-5)
    np.testing.assert_allclose(got.jaw, neutral_of(act).jaw, atol=1e-4)
    # the motion around the neutral is the driver's
    np.testing.assert_allclose(np.diff(out.exp, axis=0), np.diff(drv.exp, axis=0), atol=1e-5)
    absolute = transfer_expression(drv, neutral_of(drv), neutral_of(act), "absolute")
    np.testing.assert_array_equal(absolute.exp, drv.exp)
    zero = transfer_expression(Motion.neutral(3), zero_neutral(), neutral_of(act), "relative")
    np.testing.assert_allclose(zero.exp, np.tile(neutral_of(act).exp, (3, 1)), atol=1e-6)


def test_relative_pose_keeps_driver_rotations_around_the_actor_median_camera():
    drv, act = _motion(25, 2, 0.0), _motion(40, 3, 0.0)
    R, t = transfer_pose(drv, act.R, act.t, act.K, "relative")
    # relative rotation between any two frames is the driver's
    np.testing.assert_allclose(R[5] @ R[9].T, drv.R[5] @ drv.R[9].T, atol=1e-5)
    # the median pose lands on the actor's median camera
    np.testing.assert_allclose(median_rotation(R), median_rotation(act.R), atol=2e-2)  # medians: not exact
    np.testing.assert_allclose(np.median(t, 0), np.median(act.t, 0), atol=1e-5)
    still = Motion.neutral(4)
    still.R, still.t, still.K = np.tile(drv.R[:1], (4, 1, 1)), np.tile(drv.t[:1], (4, 1)), drv.K
    R, t = transfer_pose(still, act.R, act.t, act.K, "relative")
    np.testing.assert_allclose(R, np.tile(median_rotation(act.R), (4, 1, 1)), atol=1e-5)


def test_actor_and_fixed_pose():
    drv, act = _motion(10, 4, 0.0), _motion(4, 5, 0.0)
    R, t = transfer_pose(drv, act.R, act.t, act.K, "actor")
    assert ping_pong(4, 10).tolist() == [0, 1, 2, 3, 2, 1, 0, 1, 2, 3]
    np.testing.assert_array_equal(t, act.t[ping_pong(4, 10)])
    R, t = transfer_pose(drv, act.R, act.t, act.K, "fixed")
    assert np.ptp(R, axis=0).max() == 0 and np.ptp(t, axis=0).max() == 0
