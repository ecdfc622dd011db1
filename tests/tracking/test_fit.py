"""Accuracy of the batched tracker on synthetic ground truth (stand-in model, stages.face.synth):
noise-free landmarks -> sub-pixel reprojection and sub-millimetre vertices; 1 px landmark noise ->
no more jitter than the ground truth's own motion allows; failed frames filled; batches joined."""

import numpy as np
import pytest
import torch

from stages.face.flame import FLAME
from stages.tracking.calibration import personalised
from stages.tracking.fit import Shared
from stages.tracking.losses import LandmarkWeights
from stages.tracking.params import FrameParams
from stages.tracking.schedule import track_schedule
from stages.tracking.sequence import SequenceInputs, track_sequence
from tracking.synthetic import jitter, make_clip, similarity_aligned_error, standin

N = 40


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = FLAME(standin())
    clip = make_clip(model, N, seed=1)
    K = clip.params["K"][0]
    pm = personalised(model, torch.as_tensor(clip.params["shape"][0]))
    shared = Shared(torch.zeros(0), torch.tensor([K[0, 0], K[1, 1]]), torch.tensor([K[0, 2], K[1, 2]]))
    pw = LandmarkWeights().per_point()[model.mp_index]
    return pm, clip, shared, pw


def _camera_vertices(pm, params):
    p = FrameParams.from_numpy(params)
    with torch.no_grad():
        v = pm(shape=torch.zeros(len(p), 0), expression=p.exp, jaw=p.jaw, eyes=p.eyes, eyelids=p.eyelids).vertices
        return (v @ p.R.transpose(-1, -2) + p.t[:, None]).numpy()


def _track(setup, targets, ok=None, **kw):
    pm, clip, shared, pw = setup
    ok = np.ones(len(targets), bool) if ok is None else ok
    inputs = SequenceInputs(np.arange(1, len(targets) + 1), targets.astype(np.float32), ok)
    return track_sequence(pm, shared, inputs, pw, track_schedule(photometric=0), **kw)


def test_noise_free_landmarks_give_subpixel_and_submillimetre_fit(setup):
    pm, clip, _, _ = setup
    res = _track(setup, clip.landmarks)
    assert np.median(res.error_px) < 1.0
    err_mm = 1000 * similarity_aligned_error(_camera_vertices(pm, res.params), clip.vertices_cam)
    assert err_mm < 1.0, err_mm
    assert not res.filled.any()


def test_noisy_landmarks_jitter_bounded_by_true_motion(setup):
    pm, clip, _, _ = setup
    rng = np.random.default_rng(0)
    res = _track(setup, clip.landmarks + rng.normal(size=clip.landmarks.shape))
    est, gt = 1000 * jitter(_camera_vertices(pm, res.params)), 1000 * jitter(clip.vertices_cam)
    assert est <= 1.5 * gt + 0.2, (est, gt)


def test_failed_frames_are_filled_and_batches_joined(setup):
    pm, clip, shared, _ = setup
    targets = clip.landmarks.copy()
    ok = np.ones(N, bool)
    ok[[0, 17, 18, 33]] = False
    targets[~ok] = np.nan
    res = _track(setup, targets, ok, batch_size=24, chunk_overlap=8)  # two overlapping batches
    assert res.filled.tolist() == (~ok).tolist()
    assert all(np.isfinite(v).all() for v in res.params.values())
    assert np.isnan(res.error_px[~ok]).all() and np.median(res.error_px[ok]) < 1.0
    # the filled frames follow their neighbours: close to the truth, with no jump
    from stages.tracking.sequence import frame_errors

    clean = frame_errors(pm, shared, res.params, clip.landmarks, "cpu")
    assert clean[~ok].max() < 3.0, clean[~ok]


def test_loss_scale_gives_each_frame_the_steps_of_a_smaller_batch(setup):
    """k copies of n frames (no temporal link between the copies) with ``loss_scale`` k take, frame by
    frame, the Adam steps of the n frames alone: every loss term is a mean over frames, so the scale
    undoes the 1/k of each frame's gradient (what grouped shards use: stages.track.run_shard_group).
    (Without the scale the copies end measurably elsewhere: this comparison fails.)"""
    from stages.tracking.fit import Problem, fit, initial_pose

    pm, clip, shared, pw = setup
    n, k = 10, 3
    tg = torch.as_tensor(clip.landmarks[:n], dtype=torch.float32)

    def run(copies, scale):
        t = tg.repeat(copies, 1, 1)
        link = torch.ones(n * copies - 1)
        link[n - 1::n] = 0  # no temporal term across copies
        problem = Problem(targets=t, point_w=pw, frame_w=torch.ones(n * copies), link=link)
        init = initial_pose(pm, shared.shape, t, pw, shared.focal, shared.pp)
        return fit(pm, problem, init, shared, track_schedule(20, 30, 0), loss_scale=scale)

    one, many = run(1, 1.0), run(k, float(k))
    for name in ("t", "rot", "exp", "eyelids"):
        a, b = getattr(one.params, name), getattr(many.params, name)
        for c in range(k):
            torch.testing.assert_close(b[c * n:(c + 1) * n], a, atol=2e-5, rtol=1e-4, msg=name)
    assert many.history.keys() == one.history.keys()
    for level, loss in one.history.items():  # history is the unscaled loss
        assert abs(many.history[level] - loss) <= 1e-3 * abs(loss)
