"""Head jitter (stages.tracking.jitter): the figures on known motion, and the tracker against a
frame-by-frame fit of the same noisy landmarks."""

import numpy as np
import pytest
import torch

from stages.face.flame import FLAME
from stages.face.rotation import axis_angle_to_matrix
from stages.tracking.calibration import personalised
from stages.tracking.fit import Shared
from stages.tracking.jitter import head_jitter, params_jitter, per_frame_fit, rotation_angle_deg, window
from stages.tracking.losses import LandmarkWeights
from stages.tracking.schedule import track_schedule
from stages.tracking.sequence import SequenceInputs, track_sequence
from tracking.synthetic import make_clip, standin


def _rot(axis_angle):
    return axis_angle_to_matrix(torch.as_tensor(np.asarray(axis_angle, np.float64))).numpy()


def test_steady_motion_has_no_jitter():
    n = 50
    k = np.arange(n)
    R = _rot(np.stack([0.01 * k, 0.004 * k, np.zeros(n)], 1))  # constant angular velocity
    t = np.stack([0.001 * k, np.zeros(n), 0.5 + 0.0005 * k], 1)  # constant velocity
    j = head_jitter(R, t, np.array([0.0, 0.0, 0.05]))
    # turning steadily, a point 5 cm off the axis only has its centripetal acceleration
    # (omega^2 r = 0.0108^2 x 50 mm = 0.006 mm per frame^2)
    assert j.frames == n and j.position_mm < 0.007 and j.rotation_deg < 1e-4
    assert head_jitter(R, t, np.zeros(3)).position_mm < 1e-6


def test_noise_gives_the_expected_rms():
    """Independent noise of sigma per axis: the second difference has variance 6 sigma^2 per axis."""
    rng = np.random.default_rng(0)
    n, sigma = 4000, 0.0002  # 0.2 mm
    t = rng.normal(scale=sigma, size=(n, 3)) + [0, 0, 0.6]
    R = np.repeat(np.eye(3)[None], n, 0)
    j = head_jitter(R, t, np.zeros(3))
    assert j.position_mm == pytest.approx(np.sqrt(18) * 0.2, rel=0.05) and j.rotation_deg < 1e-6
    # rotation noise of 0.1 degree about one axis: second difference RMS sqrt(6) * 0.1 degree
    ang = np.deg2rad(rng.normal(scale=0.1, size=n))
    Rn = _rot(np.stack([np.zeros(n), ang, np.zeros(n)], 1))
    jr = head_jitter(Rn, np.zeros((n, 3)), np.zeros(3))
    assert jr.rotation_deg == pytest.approx(np.sqrt(6) * 0.1, rel=0.05)
    # a rotation about the model origin moves an off-centre head point: position jitter follows
    assert head_jitter(Rn, np.zeros((n, 3)), np.array([0.0, 0.0, 0.1])).position_mm > 0.3
    # a cut (link False) leaves out the second differences that span it
    t2 = np.zeros((6, 3))
    t2[3:] = 0.05
    link = np.array([1, 1, 0, 1, 1], bool)
    assert head_jitter(np.repeat(np.eye(3)[None], 6, 0), t2, np.zeros(3), link).position_mm == 0.0
    assert head_jitter(np.repeat(np.eye(3)[None], 6, 0), t2, np.zeros(3)).position_mm > 10
    assert rotation_angle_deg(_rot([0.0, 0.0, np.deg2rad(30)])) == pytest.approx(30, abs=1e-6)
    assert window(400, 100) == slice(150, 250) and window(20, 100) == slice(0, 20)


def test_temporal_tracking_is_steadier_than_a_frame_by_frame_fit():
    """Synthetic clip, 0.8 px landmark noise: our tracker's head jitter is well below the jitter of
    the same tracker with every frame fitted alone, and near the truth's."""
    torch.manual_seed(0)
    model = FLAME(standin())
    n = 40
    clip = make_clip(model, n, seed=3)
    K = clip.params["K"][0]
    pm = personalised(model, torch.as_tensor(clip.params["shape"][0]))
    shared = Shared(torch.zeros(0), torch.tensor([K[0, 0], K[1, 1]]), torch.tensor([K[0, 2], K[1, 2]]))
    pw = LandmarkWeights().per_point()[model.mp_index]
    rng = np.random.default_rng(1)
    targets = (clip.landmarks + rng.normal(scale=0.8, size=clip.landmarks.shape)).astype(np.float32)
    ok = np.ones(n, bool)
    schedule = track_schedule(40, 160, 0)
    ours = track_sequence(pm, shared, SequenceInputs(np.arange(1, n + 1), targets, ok), pw, schedule).params
    alone = per_frame_fit(pm, shared, targets, ok, pw, schedule)
    centre = standin().v_template.mean(0)
    j_ours, j_alone = params_jitter(ours, centre), params_jitter(alone, centre)
    j_true = head_jitter(clip.params["R"], clip.params["t"], centre)
    print(f"synthetic jitter: ours {j_ours}, frame by frame {j_alone}, truth {j_true}")
    assert j_ours.position_mm < 0.5 * j_alone.position_mm
    assert j_ours.rotation_deg < 0.5 * j_alone.rotation_deg
