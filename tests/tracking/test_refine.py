"""The float64 L-BFGS identity refinement: lowers calibrate's objective from Adam's result,
moves the identity towards the truth, and never returns something worse than its start."""

import numpy as np
import torch

from stages.face.flame import FLAME
from stages.tracking import fit as fitting
from stages.tracking.losses import LandmarkWeights
from stages.tracking.params import FrameParams
from stages.tracking.refine import objective, refine_identity
from stages.tracking.schedule import LossWeights, Schedule, calibrate_schedule
from tracking.synthetic import make_clip, similarity_aligned_error, standin


def _neutral(model, shape):
    kw = model.neutral(1)
    kw["shape"] = torch.as_tensor(shape).reshape(1, -1).float()
    with torch.no_grad():
        return model(**kw).vertices.numpy()


def test_refinement_lowers_the_objective_and_the_identity_error():
    model = FLAME(standin())
    clip = make_clip(model, 48, seed=2)
    keys = np.arange(0, 48, 3)
    tg = torch.as_tensor(clip.landmarks[keys])
    pw = LandmarkWeights().per_point()[model.mp_index]
    k = len(keys)
    shared = fitting.Shared(torch.zeros(300), torch.full((2,), 2304.0), torch.full((2,), 256.0))
    problem = fitting.Problem(tg, pw, torch.ones(k), torch.zeros(k - 1))
    init = fitting.initial_pose(model, shared.shape, tg, pw, shared.focal, shared.pp)
    sched = calibrate_schedule(100, 200, 0)
    res = fitting.fit(model, problem, init, shared, Schedule(sched.levels[:2]), LossWeights())
    ref = refine_identity(model, res.shared.shape, res.params, res.shared.focal, res.shared.pp, tg, pw,
                          iterations=300)
    assert ref.loss_after < 0.95 * ref.loss_before, (ref.loss_before, ref.loss_after)
    assert ref.shape.dtype == torch.float32 and ref.params.exp.shape == (k, 100) and 0 < ref.iterations <= 300
    # the objective of the returned float32 values matches what was reported
    w = LossWeights()
    loss, pix = objective(model, ref.shape, ref.params, res.shared.focal, res.shared.pp, tg, pw, 512, w)
    assert abs(float(loss) / ref.loss_after - 1) < 0.05
    assert float(ref.error_px.median()) < float(res.error_px.median())
    true = clip.params["shape"][0]
    before = similarity_aligned_error(_neutral(model, res.shared.shape), _neutral(model, true))
    after = similarity_aligned_error(_neutral(model, ref.shape), _neutral(model, true))
    assert after < before, (before, after)


def test_no_iterations_returns_the_start():
    model = FLAME(standin())
    clip = make_clip(model, 4, seed=0)
    tg = torch.as_tensor(clip.landmarks)
    pw = LandmarkWeights().per_point()[model.mp_index]
    p = FrameParams.neutral(4)
    shape = torch.zeros(300)
    ref = refine_identity(model, shape, p, torch.full((2,), 2304.0), torch.full((2,), 256.0), tg, pw, iterations=0)
    assert torch.equal(ref.shape, shape) and torch.equal(ref.params.t, p.t) and ref.iterations == 0
    assert ref.loss_after == ref.loss_before


def test_refinement_gives_up_early_where_it_would_be_refused():
    """Noisy landmarks (as on real footage) after calibrate's Adam levels: the landmark term cannot
    fall by the 10% the result needs, so the refinement stops after about 100 iterations instead
    of running all of them, and returns its start unchanged."""
    model = FLAME(standin())
    clip = make_clip(model, 48, seed=3)
    keys = np.arange(0, 48, 3)
    noisy = clip.landmarks[keys] + np.random.default_rng(0).normal(0, 0.5, clip.landmarks[keys].shape)
    tg = torch.as_tensor(noisy.astype(np.float32))
    pw = LandmarkWeights().per_point()[model.mp_index]
    k = len(keys)
    shared = fitting.Shared(torch.zeros(300), torch.full((2,), 2304.0), torch.full((2,), 256.0))
    problem = fitting.Problem(tg, pw, torch.ones(k), torch.zeros(k - 1))
    init = fitting.initial_pose(model, shared.shape, tg, pw, shared.focal, shared.pp)
    res = fitting.fit(model, problem, init, shared, Schedule(calibrate_schedule(150, 500, 0).levels[:2]), LossWeights())
    ref = refine_identity(model, res.shared.shape, res.params, res.shared.focal, res.shared.pp, tg, pw,
                          iterations=1000)
    assert ref.iterations <= 150, ref.iterations
    assert ref.loss_after == ref.loss_before and torch.equal(ref.shape, res.shared.shape)
