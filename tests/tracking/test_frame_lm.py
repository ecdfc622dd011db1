"""The per-frame Levenberg-Marquardt fit (stages.tracking.frame_lm): its objective is the tracker's
per-frame objective, its analytic Jacobian equals forward-mode autodiff, it ends no higher than the
tracker's Adam schedule on every frame with the same jitter figures, and frames do not influence
each other."""

import numpy as np
import pytest
import torch
from torch.func import jvp, vmap

from stages.face.flame import FLAME
from stages.tracking import fit as fitting
from stages.tracking.calibration import personalised
from stages.tracking.eyelids import lid_index
from stages.tracking.frame_lm import _PoseJacobian, frame_objective, solve_frames
from stages.tracking.jitter import params_jitter, per_frame_fit, per_frame_fit_lm
from stages.tracking.lm import _LinearPart
from stages.tracking.losses import LandmarkWeights
from stages.tracking.params import FrameParams
from stages.tracking.schedule import LossWeights, track_schedule
from tracking.synthetic import make_clip, standin


@pytest.fixture(scope="module")
def problem():
    """A 24-frame synthetic clip with 0.8 px landmark noise, the identity baked into the model."""
    torch.manual_seed(0)
    model = FLAME(standin())
    n = 24
    clip = make_clip(model, n, seed=3)
    K = clip.params["K"][0]
    pm = personalised(model, torch.as_tensor(clip.params["shape"][0]))
    shared = fitting.Shared(torch.zeros(0), torch.tensor([K[0, 0], K[1, 1]]), torch.tensor([K[0, 2], K[1, 2]]))
    pw = LandmarkWeights().per_point()[model.mp_index]
    rng = np.random.default_rng(1)
    targets = (clip.landmarks + rng.normal(scale=0.8, size=clip.landmarks.shape)).astype(np.float32)
    return pm, shared, pw, targets, lid_index(model.mp_index.numpy())


def _random_params(n: int, seed: int = 0) -> FrameParams:
    g = torch.Generator().manual_seed(seed)
    p = FrameParams.neutral(n)
    p.exp = torch.randn(n, 100, generator=g) * 0.5
    p.jaw = p.jaw + torch.randn(n, 6, generator=g) * 0.15
    p.eyes = p.eyes + torch.randn(n, 12, generator=g) * 0.1
    p.eyelids = torch.rand(n, 2, generator=g)
    return p.map(lambda v: v.double())


def test_pose_jacobian_equals_forward_mode():
    """d(landmarks)/d(jaw, eyes, eyelids) from the model's structure against torch.func.jvp of the
    model itself, in float64, at random poses with a non-zero identity."""
    model = FLAME(standin()).double()
    p = _random_params(5)
    shape = torch.randn(300, dtype=torch.float64, generator=torch.Generator().manual_seed(2)) * 0.5
    got = _PoseJacobian(model, _LinearPart(model))(p.jaw, p.eyes, p.exp, shape)   # [B, L, 3, 20]

    def landmarks(x: torch.Tensor) -> torch.Tensor:
        return model(shape=shape.expand(5, -1), expression=p.exp, jaw=x[:, :6], eyes=x[:, 6:18],
                     eyelids=x[:, 18:]).landmarks_mp

    x = torch.cat([p.jaw, p.eyes, p.eyelids], 1)
    basis = torch.eye(20, dtype=torch.float64)[:, None, :].expand(20, 5, 20)
    want = vmap(lambda v: jvp(landmarks, (x,), (v,))[1])(basis).permute(1, 2, 3, 0)
    assert got.shape == want.shape == (5, model.mp_index.numel(), 3, 20)
    assert want.abs().max() > 1e-3  # the jaw and the lids do move landmarks
    assert torch.allclose(got, want, atol=1e-12, rtol=1e-9), (got - want).abs().max()


def test_objective_is_the_trackers_without_temporal_terms(problem):
    """The mean of the per-frame objectives is what fit() minimises with the temporal terms off."""
    pm, shared, pw, targets, lids = problem
    n = len(targets)
    p = _random_params(n, seed=4).map(lambda v: v.float())
    p.t = torch.tensor([0.0, 0.0, 1.0]).expand(n, 3).clone()
    p.rot = FrameParams.neutral(n).rot
    tg = torch.as_tensor(targets)
    w = LossWeights(smooth_points=0.0, smooth_exp=0.0, smooth_rot=0.0)
    problem_ = fitting.Problem(targets=tg, point_w=pw, frame_w=torch.ones(n), link=torch.ones(n - 1), lids=lids)
    total, _ = fitting._weighted_terms(pm, problem_, p, shared, w, None, False, 0)
    per_frame = frame_objective(pm, shared, p, tg, pw, lids, w)
    assert per_frame.shape == (n,)
    assert float(per_frame.mean()) == pytest.approx(float(total), rel=1e-5)


def test_lm_ends_no_higher_than_adam_with_the_same_jitter(problem):
    """Against the tracker's Adam schedule (frame by frame, no temporal terms): every frame's
    objective at most Adam's, the jitter figures within 2%."""
    pm, shared, pw, targets, lids = problem
    n = len(targets)
    ok = np.ones(n, bool)
    adam = per_frame_fit(pm, shared, targets, ok, pw, track_schedule(60, 240, 0))
    lm = per_frame_fit_lm(pm, shared, targets, ok, pw)
    tg = torch.as_tensor(targets)
    f_adam = frame_objective(pm, shared, FrameParams.from_numpy(adam), tg, pw, lids)
    f_lm = frame_objective(pm, shared, FrameParams.from_numpy(lm), tg, pw, lids)
    assert bool((f_lm <= f_adam * (1 + 1e-4)).all()), (f_lm / f_adam)
    centre = standin().v_template.mean(0)
    j_adam, j_lm = params_jitter(adam, centre), params_jitter(lm, centre)
    assert j_lm.position_mm == pytest.approx(j_adam.position_mm, rel=0.02)
    assert j_lm.rotation_deg == pytest.approx(j_adam.rotation_deg, rel=0.02)
    assert j_lm.position_mm > 0.5  # 0.8 px of noise fitted frame by frame does shake


def test_frames_do_not_influence_each_other(problem):
    """A frame's result is the same fitted alone, with a few others, or with a frame whose landmarks
    fit no face (each frame has its own damping and stops on its own)."""
    pm, shared, pw, targets, lids = problem
    tg = torch.as_tensor(targets[:6])
    garbage = torch.as_tensor(np.random.default_rng(0).uniform(150, 360, (1, tg.shape[1], 2)).astype(np.float32))
    together = solve_frames(pm, shared, torch.cat([tg, garbage]), pw, lids=lids)
    alone = solve_frames(pm, shared, tg[2:3], pw, lids=lids)
    for name, v in alone.params.as_dict().items():
        assert torch.allclose(v[0], together.params.as_dict()[name][2], atol=1e-5), name
    assert float(together.error_px[:6].max()) < 2.0 and float(together.error_px[6]) > 20.0
    assert int(together.iterations.max()) <= 8 + 40


def test_frames_without_landmarks_are_filled(problem):
    pm, shared, pw, targets, _ = problem
    t = targets[:8].copy()
    ok = np.ones(8, bool)
    ok[3] = False
    t[3] = np.nan
    got = per_frame_fit_lm(pm, shared, t, ok, pw)
    assert all(np.isfinite(v).all() for v in got.values())
    assert np.allclose(got["t"][3], 0.5 * (got["t"][2] + got["t"][4]), atol=1e-6)
