"""Calibration: identity, focal length and principal point from keyframe landmarks; appearance
from keyframe images; the calibration file; the personalised model."""

import numpy as np
import pytest
import torch

from stages.face.flame import FLAME
from stages.tracking.calibration import Calibration, CalibrationInputs, calibrate, personalised
from stages.tracking.losses import LandmarkWeights
from stages.tracking.schedule import calibrate_schedule
from tracking.synthetic import make_clip, standin


@pytest.fixture(scope="module")
def model():
    return FLAME(standin())


def test_calibrate_keeps_focal_and_reprojects(model):
    clip = make_clip(model, 60, seed=2)
    keys = np.arange(0, 60, 6)  # 10 keyframes spread over the clip (various head poses)
    pw = LandmarkWeights().per_point()[model.mp_index]
    calib = calibrate(model, CalibrationInputs(torch.as_tensor(clip.landmarks[keys]), pw, keys + 1),
                      schedule=calibrate_schedule(100, 300, 0), model_name="m")
    true_f = clip.params["K"][0, 0, 0]
    # focal length is weakly observable at a face crop's narrow field of view: it must stay near
    # the (here correct) starting value rather than drift off with the identity
    assert abs(calib.focal[0] / true_f - 1) < 0.1, (calib.focal, true_f)
    assert calib.focal[0] == calib.focal[1]
    assert np.abs(calib.pp - 256).max() < 10
    assert np.median(calib.error_px) < 1.0
    assert calib.albedo is None and calib.keyframes.tolist() == (keys + 1).tolist()


def test_calibration_file_round_trip(tmp_path):
    c = Calibration(shape=np.arange(300, dtype=np.float32), focal=np.array([2000, 2000], np.float32),
                    pp=np.array([256, 250], np.float32), keyframes=np.array([3, 9]),
                    keyframe_params={"exp": np.ones((2, 100), np.float32)}, error_px=np.array([0.1, 0.2]),
                    albedo=np.full((5, 3), 0.5, np.float32), sh=np.zeros((9, 3), np.float32), model_name="standin-3")
    c.save(tmp_path / "c.npz")
    d = Calibration.load(tmp_path / "c.npz")
    assert d.model_name == "standin-3" and d.image_size == (512, 512)
    np.testing.assert_array_equal(d.shape, c.shape)
    np.testing.assert_array_equal(d.keyframe_params["exp"], 1)
    assert d.albedo.shape == (5, 3) and d.sh.shape == (9, 3)


def test_personalised_model_equals_model_with_shape(model):
    shape = torch.randn(300) * 0.5
    pm = personalised(model, shape)
    b = 3
    kw = dict(expression=torch.randn(b, 100) * 0.3, jaw=torch.tensor([[1.0, 0, 0, 0, 0.98, 0.2]]).repeat(b, 1),
              eyes=torch.tensor([1.0, 0, 0, 0, 1, 0]).repeat(b, 2), eyelids=torch.rand(b, 2))
    a = model(shape=shape.expand(b, -1), **kw)
    c = pm(shape=torch.zeros(b, 0), **kw)
    torch.testing.assert_close(c.vertices, a.vertices, atol=1e-6, rtol=0)
    torch.testing.assert_close(c.landmarks_mp, a.landmarks_mp, atol=1e-6, rtol=0)


def test_calibrated_identity_tracks_under_a_millimetre():
    """Issue 5's accuracy goal with the identity calibrate estimates (not the true one): noise-free
    landmarks, keyframes chosen automatically, mean vertex error < 1 mm after one similarity
    alignment for the whole sequence. Seed 2 is a clip where Adam alone leaves the identity in a
    flat valley (about 7 mm tracked error without the L-BFGS refinement)."""
    from stages.tracking.fit import Shared
    from stages.tracking.keyframes import select_keyframes
    from stages.tracking.params import FrameParams
    from stages.tracking.schedule import track_schedule
    from stages.tracking.sequence import SequenceInputs, track_sequence
    from tracking.synthetic import landmarks478, similarity_aligned_error

    model = FLAME(standin())
    n = 96
    clip = make_clip(model, n, seed=2)
    keys = select_keyframes(landmarks478(clip, model.mp_index.numpy()), np.ones(n, bool), np.ones(n), 24)
    pw = LandmarkWeights().per_point()[model.mp_index]
    calib = calibrate(model, CalibrationInputs(torch.as_tensor(clip.landmarks[keys]), pw, keys + 1),
                      schedule=calibrate_schedule(150, 500, 0))
    pm = personalised(model, torch.as_tensor(calib.shape))
    shared = Shared(torch.zeros(0), torch.as_tensor(calib.focal), torch.as_tensor(calib.pp))
    res = track_sequence(pm, shared, SequenceInputs(np.arange(1, n + 1), clip.landmarks, np.ones(n, bool)), pw,
                         track_schedule(photometric=0))
    p = FrameParams.from_numpy(res.params)
    with torch.no_grad():
        v = pm(shape=torch.zeros(n, 0), expression=p.exp, jaw=p.jaw, eyes=p.eyes, eyelids=p.eyelids).vertices
        cam = (v @ p.R.transpose(-1, -2) + p.t[:, None]).numpy()
    err_mm = 1000 * similarity_aligned_error(cam, clip.vertices_cam)
    assert err_mm < 1.0, err_mm
    assert np.median(res.error_px) < 0.5
