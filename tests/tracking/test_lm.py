"""Levenberg-Marquardt calibration (stages.tracking.lm): its Jacobians against forward-mode autodiff
of the model, its objective against the plain reference, and its identity error against the Adam
route's on a synthetic clip with a known identity."""

import numpy as np
import pytest
import torch
from torch.func import jacfwd

from stages.face.flame import FLAME
from stages.face.rotation import axis_angle_to_matrix, matrix_to_rotation_6d
from stages.tracking import fit as fitting
from stages.tracking.calibration import CalibrationInputs, calibrate
from stages.tracking.keyframes import select_keyframes
from stages.tracking.lm import _LinearPart, _PoseJacobian, jacobian_reference, objective, pixel_jacobian, solve_lm
from stages.tracking.losses import LandmarkWeights
from stages.tracking.params import FrameParams, project
from stages.tracking.schedule import LossWeights, calibrate_schedule
from tracking.synthetic import landmarks478, make_clip, standin

FRONTAL = ((1.0, 0, 0), (0, -1.0, 0), (0, 0, -1.0))


@pytest.fixture(scope="module")
def model():
    return FLAME(standin())


def _random_params(k: int, seed: int = 0) -> FrameParams:
    g = torch.Generator().manual_seed(seed)
    d = torch.float64

    def r6(n: int, scale: float) -> torch.Tensor:
        return matrix_to_rotation_6d(axis_angle_to_matrix(torch.randn(n, 3, generator=g, dtype=d) * scale))

    p = FrameParams.neutral(k).map(lambda v: v.double())
    p.exp = torch.randn(k, 100, generator=g, dtype=d) * 0.5
    p.jaw, p.eyes = r6(k, 0.2), torch.cat([r6(k, 0.2), r6(k, 0.2)], 1)
    p.eyelids = torch.rand(k, 2, generator=g, dtype=d)
    R = axis_angle_to_matrix(torch.randn(k, 3, generator=g, dtype=d) * 0.3) @ torch.tensor(FRONTAL, dtype=d)
    p.rot = matrix_to_rotation_6d(R)
    return p


def test_linear_jacobians_equal_forward_mode(model):
    """The expression and identity Jacobians from the model's structure equal torch.func.jacfwd
    through the whole model (random pose, jaw, eyes, eyelids, identity and intrinsics)."""
    m = FLAME(standin()).double()
    k = 2
    p = _random_params(k)
    shape = torch.randn(300, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 0.5
    focal, pp = torch.tensor(2304.0, dtype=torch.float64), torch.tensor([250.0, 260.0], dtype=torch.float64)
    je, js = _LinearPart(m).landmark_jacobians(p, shape, focal, pp)

    def pixels(s: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        out = m(shape=s.expand(k, -1), expression=e, jaw=p.jaw, eyes=p.eyes, eyelids=p.eyelids)
        return project(out.landmarks_mp, p.R, p.t, focal.expand(2), pp)[0].reshape(k, -1)

    ref_s, ref_e = jacfwd(pixels, argnums=(0, 1))(shape, p.exp)        # [k,R,S], [k,R,k,E]
    ref_e = torch.stack([ref_e[i, :, i] for i in range(k)])
    assert js.shape == ref_s.shape and je.shape == ref_e.shape
    torch.testing.assert_close(js, ref_s, atol=1e-9 * ref_s.abs().max().item(), rtol=0)
    torch.testing.assert_close(je, ref_e, atol=1e-9 * ref_e.abs().max().item(), rtol=0)
    assert ref_s.abs().max() > 1.0 and ref_e.abs().max() > 1.0  # pixels per unit coefficient: not degenerate


def _keyframes(model, n: int, seed: int, count: int, noise: float):
    clip = make_clip(model, n, seed=seed)
    pts = clip.landmarks + np.random.default_rng(seed).normal(0, noise, clip.landmarks.shape).astype(np.float32)
    keys = select_keyframes(landmarks478(clip, model.mp_index.numpy()), np.ones(n, bool), np.ones(n), count)
    pw = LandmarkWeights().per_point()[model.mp_index]
    return clip, CalibrationInputs(torch.as_tensor(pts[keys], dtype=torch.float32), pw, keys + 1)


def _identity_error_mm(model, shape: np.ndarray, true_shape: np.ndarray) -> float:
    from tracking.synthetic import similarity_aligned_error

    ident6 = torch.tensor([[1.0, 0, 0, 0, 1.0, 0]])
    with torch.no_grad():
        a, b = (model(shape=torch.as_tensor(s[None]).float(), expression=torch.zeros(1, 0), jaw=ident6,
                      eyes=ident6.repeat(1, 2)).vertices.numpy() for s in (shape, true_shape))
    return 1000 * similarity_aligned_error(a, b)


def _objective(model, calib, inputs) -> float:
    m64 = FLAME(standin()).double()
    p = FrameParams.from_numpy(calib.keyframe_params).map(lambda v: v.double())
    return float(objective(m64, torch.as_tensor(calib.shape).double(), p, torch.as_tensor(calib.focal).double(),
                           torch.as_tensor(calib.pp).double(), inputs.targets.double(), inputs.point_w.double(), 512.0,
                           LossWeights(), focal0=2304.0))


def test_pixel_jacobian_equals_forward_mode_through_the_model():
    """The solver's Jacobians of the view (head pose, focal, principal point) and of jaw, eyes and
    eyelids, built from the model's structure, equal forward mode through the whole model
    (jacobian_reference, the solver's previous route), at random poses with an identity."""
    m = FLAME(standin()).double()
    k = 3
    p = _random_params(k, seed=5)
    p.t = torch.tensor([[0.01, -0.02, 0.9], [0.0, 0.0, 1.1], [-0.03, 0.01, 1.0]], dtype=torch.float64)
    shape = torch.randn(300, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 0.5
    log_f, pp_n = torch.tensor(1.5, dtype=torch.float64), torch.tensor([0.49, 0.51], dtype=torch.float64)
    lin = _LinearPart(m)
    q = fitting.t_to_q(p.t)
    pix, d_pose, d_view, d_exp, d_shape = pixel_jacobian(lin, _PoseJacobian(m, lin), p, q, shape, log_f, pp_n, 512.0)
    ref_pose, ref_view = jacobian_reference(m, p, shape, log_f, pp_n, 512.0)
    n = m.mp_index.numel()
    assert pix.shape == (k, n, 2) and d_pose.shape == ref_pose.shape == (k, 2 * n, 29)
    assert d_view.shape == ref_view.shape == (k, 2 * n, 3) and d_exp.shape == (k, 2 * n, 100)
    for got, want in ((d_pose, ref_pose), (d_view, ref_view)):
        assert want.abs().max() > 1.0
        assert torch.allclose(got, want, atol=1e-8, rtol=1e-9), (got - want).abs().max()
    want_pix = project(m(shape=shape.expand(k, -1), expression=p.exp, jaw=p.jaw, eyes=p.eyes,
                         eyelids=p.eyelids).landmarks_mp, p.R, p.t, (torch.exp(log_f) * 512).expand(2), pp_n * 512)[0]
    assert torch.allclose(pix, want_pix, atol=1e-9)


def test_lm_cost_is_the_reference_objective_and_falls(model):
    """The solver's starting and final costs are :func:`objective` at its start and its result
    (the residual form sums the same terms), and it lowers them."""
    _, inputs = _keyframes(model, 60, seed=4, count=4, noise=0.5)
    f0 = 2304.0
    shared = fitting.Shared(torch.zeros(300), torch.full((2,), f0), torch.full((2,), 256.0))
    init = fitting.initial_pose(model, shared.shape, inputs.targets, inputs.point_w, shared.focal, shared.pp)
    w = LossWeights()
    sol = solve_lm(model, shared.shape, init, shared.focal, shared.pp, inputs.targets, inputs.point_w,
                   focal0=f0, iterations=3, tolerance=0.0)
    m64 = FLAME(standin()).double()
    args = (inputs.targets.double(), inputs.point_w.double(), 512.0, w)
    before = float(objective(m64, shared.shape.double(), init.map(lambda v: v.double()), shared.focal.double(),
                             shared.pp.double(), *args, focal0=f0))
    after = float(objective(m64, sol.shape.double(), sol.params.map(lambda v: v.double()), sol.focal.double(),
                            sol.pp.double(), *args, focal0=f0))
    assert sol.loss_before == pytest.approx(before, rel=1e-9)
    assert sol.loss_after == pytest.approx(after, rel=1e-4)  # result rounded to float32
    assert sol.iterations == 3 and sol.loss_after < 0.1 * sol.loss_before
    assert sol.history == sorted(sol.history, reverse=True)
    assert torch.equal(sol.pp, torch.full((2,), 256.0))  # held by default


def test_lm_identity_error_no_worse_than_adam(model):
    """Same synthetic clip (known identity, 0.5 px landmark noise), same keyframes: the LM route's
    identity error is at most the Adam route's (150 + 500 steps, as the stage had them) plus 0.05 mm,
    and its objective is lower. Measured here: LM 0.28 mm, Adam 0.35 mm (with 32 keyframes, 300
    frames, bench/calibrate_bench.py: 0.31 against 0.46 mm on seed 2, 0.37 against 0.67 mm on seed 3).
    With only 8 keyframes the converged objective fits the noise more (LM 0.60, Adam 0.41 mm on
    this clip): the stage uses 32 (tiny: 4, where speed is all that counts)."""
    clip, inputs = _keyframes(model, 200, seed=2, count=16, noise=0.5)
    true_shape = clip.params["shape"][0]
    lm = calibrate(model, inputs, schedule=calibrate_schedule(0, 0, 0), refine_iterations=0, lm_iterations=12)
    adam = calibrate(model, inputs, schedule=calibrate_schedule(150, 500, 0), refine_iterations=0)
    assert lm.lm["loss_after"] < _objective(model, adam, inputs)
    e_lm, e_adam = _identity_error_mm(model, lm.shape, true_shape), _identity_error_mm(model, adam.shape, true_shape)
    assert e_lm <= e_adam + 0.05, (e_lm, e_adam)
    assert lm.lm["loss_after"] < lm.lm["loss_before"] and 1 <= lm.lm["iterations"] <= 12
    assert np.median(lm.error_px) < 1.0  # 0.5 px noise per coordinate
    assert abs(lm.focal[0] / 2304.0 - 1) < 0.05

