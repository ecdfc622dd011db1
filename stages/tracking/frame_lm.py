"""Levenberg-Marquardt fit of many frames at once, every frame alone: the frame-by-frame fit of
the steadiness figures (:mod:`stages.tracking.jitter`), in a few batched Gauss-Newton iterations
instead of the tracker's 470 Adam steps.

Each frame ``k`` minimises its own objective (:func:`frame_objective`), the tracker's per-frame
terms without the temporal ones (:func:`stages.tracking.fit.fit` with ``smooth_*`` = 0 and
``frame_w`` = 1 sums exactly their mean over frames)::

    f_k = w_lmk * sum_l pw_l |pix_kl - target_kl|^2 / (size^2 sum_l pw_l)      landmark term
        + w_lid * mean_e (opening_e(pix_k) - opening_e(target_k))^2           per-eye lid opening
        + w_exp |exp_k|^2 + w_jaw |jaw_k - I|^2 + w_eyes |eyes_k - I|^2 + w_lids |eyelids_k|^2

(the tracker's two eyelid terms, ``lid_expression`` and ``eyelid_closure`` of
:class:`stages.tracking.schedule.LossWeights`, are left out: they weigh only the eyelids and the
expression's eye closure, and this fit is the head-pose reference of the steadiness figures)
over ``x_k`` = (head rotation 6D, translation as (x/z, y/z, log z), jaw, eyes, eyelids, expression),
with the identity, focal length and principal point held. Frames share nothing: each has its own
damping ``lambda_k``, accepts or rejects its own steps and stops on its own, so a frame's result
does not depend on which other frames are in the batch (the batch is only for speed, as in
:func:`stages.tracking.jitter.per_frame_fit`, the Adam reference this replaces in the report).

Per iteration: the residuals ``r_k [R]`` (``R = 2 L`` landmark coordinates + 2 lid openings) and
their Jacobian ``A_k [R, P]`` (forward mode for the pose part, the model's linear structure for
expression: :class:`stages.tracking.lm._LinearPart`), then ``K`` batched ``P x P`` Cholesky
solves of ``(A^T A + D_prior + lambda_k diag) dx = -g``; rejected frames retry with a larger
``lambda_k`` from the same Jacobian. A rigid phase (rotation and translation only, as the tracker's
first level) comes first. Float64 throughout.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from stages.face.rotation import matrix_to_rotation_6d, rotation_6d_to_matrix
from stages.tracking import losses
from stages.tracking.eyelids import LidIndex, eye_opening
from stages.tracking.fit import Shared, initial_pose, q_to_t, run_model
from stages.tracking.lm import _IDENT6, _Layout, _LinearPart, _PoseJacobian, pixel_jacobian, view_jacobian
from stages.tracking.params import FrameParams, project
from stages.tracking.schedule import LossWeights


@dataclass
class FrameFit:
    """Attributes:
        params: fitted per-frame parameters (float32, on the inputs' device).
        objective: [K] each frame's :func:`frame_objective` at the end (float64).
        error_px: [K] mean landmark error per frame, pixels.
        iterations: [K] Jacobians each frame took (rigid and full phases together).
    """

    params: FrameParams
    objective: Tensor
    error_px: Tensor
    iterations: Tensor


def frame_objective(model: nn.Module, shared: Shared, p: FrameParams, targets: Tensor, point_w: Tensor,
                    lids: LidIndex | None = None, weights: LossWeights | None = None,
                    image_size: int = 512) -> Tensor:
    """Reference: each frame's objective ``f_k`` (module docstring) written with the tracker's own
    loss functions; ``f.mean()`` is :func:`stages.tracking.fit.fit`'s total with no temporal term
    and ``frame_w = 1``.

    Args:
        model: face model (identity baked in: ``shared.shape`` of width 0, or a full ``shape [S]``).
        p: K frames. targets: [K, L, 2] pixels. point_w: [L].
        lids: the lid rows of the landmark list (None: no lid term).

    Returns:
        [K] float.
    """
    w = weights or LossWeights()
    out = run_model(model, shared.shape, p)
    pix, _ = project(out.landmarks_mp, p.R, p.t, shared.focal, shared.pp)
    d2 = ((pix - targets) / float(image_size)).pow(2).sum(-1)
    f = w.landmarks * (d2 * point_w).sum(-1) / point_w.sum()
    if w.eyelid_opening > 0 and lids is not None:
        f = f + w.eyelid_opening * (eye_opening(pix, lids) - eye_opening(targets, lids)).pow(2).mean(-1)
    ident6 = torch.tensor(_IDENT6, dtype=p.jaw.dtype, device=p.jaw.device)
    return f + w.exp * p.exp.pow(2).sum(-1) + w.jaw * (p.jaw - ident6).pow(2).sum(-1) \
        + w.eyes * (p.eyes - ident6.repeat(2)).pow(2).sum(-1) + w.eyelids * p.eyelids.pow(2).sum(-1)


def solve_frames(model: nn.Module, shared: Shared, targets: Tensor, point_w: Tensor, *,
                 lids: LidIndex | None = None, weights: LossWeights | None = None, image_size: int = 512,
                 init: FrameParams | None = None, rigid_iterations: int = 8, iterations: int = 40,
                 tolerance: float = 1e-4, lam: float = 1e-3) -> FrameFit:
    """Minimise every frame's :func:`frame_objective` alone (see the module docstring).

    Args:
        model: face model with the identity baked in (``shared.shape`` of width 0; see
            :func:`stages.tracking.calibration.personalised`); left untouched (a float64 copy is used).
        shared: identity, focal (fx = fy, as calibrate fits it) and principal point, pixels; held.
        targets: [K, L, 2] landmark pixels in the model's landmark order (every frame with landmarks).
        point_w: [L] landmark weights.
        lids: the lid rows (:func:`stages.tracking.eyelids.lid_index`), None: no lid term.
        init: starting parameters (default: :func:`stages.tracking.fit.initial_pose`).
        rigid_iterations, iterations: most Jacobians of the rigid phase (rotation, translation) and
            of the full phase, per frame.
        tolerance: a frame stops once two accepted steps in a row each lower its objective by less
            than this fraction.
        lam: starting damping, relative to the normal matrix's diagonal.

    Returns:
        :class:`FrameFit`.
    """
    from torch.func import jacrev, vmap

    w = weights or LossWeights()
    dev, f64 = targets.device, torch.float64
    size = float(image_size)
    k = int(targets.shape[0])
    m64 = copy.deepcopy(model).to(dtype=f64)
    if init is None:
        init = initial_pose(model, shared.shape, targets.float(), point_w, shared.focal, shared.pp)
    dims = {n: int(v.shape[-1]) for n, v in init.as_dict().items()}
    lay = _Layout(dims, 0)
    n_pose = lay.slices["exp"].start                                                   # rot .. eyelids
    shape = shared.shape.detach().to(f64).reshape(-1)
    focal, pp = shared.focal.detach().to(f64).reshape(2), shared.pp.detach().to(f64).reshape(2)
    tg, pw = targets.to(f64), point_w.to(f64)
    use_lids = lids is not None and w.eyelid_opening > 0
    rw = (w.landmarks * pw / pw.sum()).sqrt() / size                                  # [L]
    lid_w = math.sqrt(w.eyelid_opening / 2.0) if use_lids else 0.0
    open_t = eye_opening(tg, lids) if use_lids else None                               # [K, 2]
    ident6 = torch.tensor(_IDENT6, dtype=f64, device=dev)
    prior_w = torch.zeros(lay.P, dtype=f64, device=dev)
    rest = torch.zeros(lay.P, dtype=f64, device=dev)
    for name, wt in (("exp", w.exp), ("jaw", w.jaw), ("eyes", w.eyes), ("eyelids", w.eyelids)):
        prior_w[lay.slices[name]] = wt
    rest[lay.slices["jaw"]] = ident6
    rest[lay.slices["eyes"]] = ident6.repeat(2)
    lin = _LinearPart(m64)
    pose_jac = _PoseJacobian(m64, lin)

    n_rigid = lay.slices["jaw"].start                                                  # rot, t

    def model_points(xm: Tensor, exp: Tensor) -> Tensor:
        """[B, L, 3] model-space landmarks of ``xm`` (jaw, eyes, eyelids: [B, 20]) and expression."""
        q = lay.unpack(torch.cat([torch.zeros(xm.shape[0], n_rigid, dtype=f64, device=dev), xm, exp], 1))
        return m64(shape=shape.expand(xm.shape[0], -1), expression=q["exp"], jaw=q["jaw"], eyes=q["eyes"],
                   eyelids=q["eyelids"]).landmarks_mp

    def camera_pixels(xr: Tensor, pts: Tensor) -> Tensor:
        """[B, L, 2] pixels of model-space points ``pts`` seen with head pose ``xr [B, n_rigid]`` (rot, t)."""
        q = lay.unpack(torch.cat([xr, torch.zeros(xr.shape[0], lay.P - n_rigid, dtype=f64, device=dev)], 1))
        return project(pts, rotation_6d_to_matrix(q["rot"]), q_to_t(q["t"]), focal, pp)[0]

    def pixels(x: Tensor) -> Tensor:
        """[B, L, 2] projected landmarks of packed parameters ``x [B, P]``."""
        return camera_pixels(x[:, :n_rigid], model_points(x[:, n_rigid:n_pose], x[:, n_pose:]))

    def residual_of(pix: Tensor, tk: Tensor, ok_open: Tensor | None) -> Tensor:
        """Weighted residuals [..., R] of pixels [..., L, 2] against targets [..., L, 2]."""
        r = ((pix - tk) * rw[:, None]).flatten(-2)
        if not use_lids:
            return r
        return torch.cat([r, lid_w * (eye_opening(pix, lids) - ok_open)], -1)

    open_jac = vmap(jacrev(lambda pix: eye_opening(pix, lids))) if use_lids else None

    def cost(x: Tensor, rows: Tensor) -> Tensor:
        """[B] objective of ``x [B, P]`` for frames ``rows``."""
        r = residual_of(pixels(x), tg[rows], open_t[rows] if use_lids else None)
        return r.pow(2).sum(-1) + (prior_w * (x - rest).pow(2)).sum(-1)

    log_f, pp_n = torch.log(focal.mean() / size), pp / size  # calibrate fits one focal length: fx = fy

    def system(x: Tensor, rows: Tensor, rigid_only: bool) -> tuple[Tensor, Tensor]:
        """The Gauss-Newton matrix ``[B, P, P]`` (with the priors) and gradient ``[B, P]`` at ``x``
        (``rigid_only``: of the rotation and translation alone, ``[B, n_rigid, n_rigid]``, ``[B, n_rigid]``)."""
        b = len(rows)
        q = lay.unpack(x)
        if rigid_only:
            pts = model_points(x[:, n_rigid:n_pose], x[:, n_pose:])
            pix, j_view = view_jacobian(pts, q["rot"], q["t"], log_f, pp_n, size)        # [B, L, 2, 12]
            return _normal(j_view[..., :n_rigid].reshape(b, -1, n_rigid), pix, x, rows)
        p = FrameParams(**{n: (q_to_t(v) if n == "t" else v) for n, v in q.items()})
        pix, d_pose, _, d_exp, _ = pixel_jacobian(lin, pose_jac, p, q["t"], shape, log_f, pp_n, size)
        return _normal(torch.cat([d_pose, d_exp], 2), pix, x, rows)

    def _normal(J: Tensor, pix: Tensor, x: Tensor, rows: Tensor) -> tuple[Tensor, Tensor]:
        """From the pixel Jacobian ``J [B, 2L, P]`` to the weighted residuals' normal equations."""
        b = len(rows)
        A = J * rw.repeat_interleave(2)[None, :, None]
        if use_lids:
            dopen = open_jac(pix).flatten(-2)                                           # [B, 2, 2L]
            A = torch.cat([A, lid_w * (dopen @ J)], 1)
        r = residual_of(pix, tg[rows], open_t[rows] if use_lids else None)
        n = J.shape[2]
        U = A.transpose(1, 2) @ A + torch.diag_embed(prior_w[:n]).expand(b, -1, -1)
        g = (A.transpose(1, 2) @ r[..., None])[..., 0] + prior_w[:n] * (x[:, :n] - rest[:n])
        return U, g

    x = lay.pack(init.map(lambda v: v.detach().to(f64)))
    rs = lay.slices["rot"]
    with torch.no_grad():
        cur = cost(x, torch.arange(k, device=dev))
    taken = torch.zeros(k, dtype=torch.long, device=dev)
    # the rigid phase moves rotation and translation (the first n_rigid entries), then everything
    for n_free, most in ((n_rigid, rigid_iterations), (lay.P, iterations)):
        damp = torch.full((k,), lam, dtype=f64, device=dev)
        nu = torch.full((k,), 2.0, dtype=f64, device=dev)
        last_small = torch.zeros(k, dtype=torch.bool, device=dev)
        active = torch.ones(k, dtype=torch.bool, device=dev)
        eye = torch.eye(n_free, dtype=f64, device=dev)
        for _ in range(most):
            rows = torch.nonzero(active).flatten()
            if len(rows) == 0:
                break
            with torch.no_grad():
                U, g = system(x[rows], rows, rigid_only=n_free < lay.P)
            taken[rows] += 1
            dU = torch.diagonal(U, dim1=-2, dim2=-1)
            floor = 1e-12 * dU.mean(-1, keepdim=True).clamp_min(1e-30)
            pending = torch.ones(len(rows), dtype=torch.bool, device=dev)
            small = torch.zeros(len(rows), dtype=torch.bool, device=dev)
            accepted = torch.zeros(len(rows), dtype=torch.bool, device=dev)
            for _try in range(12):
                lam_r = damp[rows]
                L, info = torch.linalg.cholesky_ex(U + torch.diag_embed(lam_r[:, None] * dU + floor))
                good = info == 0
                safe = torch.where(good[:, None, None], L, eye.expand_as(L))
                dx = -torch.cholesky_solve(g[..., None], safe)[..., 0]
                dx = torch.where((good & pending)[:, None], dx, torch.zeros_like(dx))
                dx = torch.cat([dx, dx.new_zeros(len(rows), lay.P - n_free)], 1)
                with torch.no_grad():
                    c_new = cost(x[rows] + dx, rows)
                c_old = cur[rows]
                better = pending & good & torch.isfinite(c_new) & (c_new < c_old)
                # the reduction the Gauss-Newton model predicts (undamped H): -2 d.g - d.H.d
                d = dx[:, :n_free]
                predicted = -2 * (g * d).sum(-1) - (d[:, None] @ U @ d[..., None])[:, 0, 0]
                rho = torch.where(predicted > 0, (c_old - c_new) / predicted.clamp_min(1e-300),
                                  torch.zeros_like(predicted))
                xn = x[rows] + dx
                rot = matrix_to_rotation_6d(rotation_6d_to_matrix(xn[:, rs]))          # same R, unit 6D
                xn = torch.cat([xn[:, : rs.start], rot, xn[:, rs.stop:]], 1)
                x[rows] = torch.where(better[:, None], xn, x[rows])
                small |= better & ((c_old - c_new) <= tolerance * c_new.abs())
                cur[rows] = torch.where(better, c_new, c_old)
                # Nielsen's update where accepted (down to 1/10), lambda * nu where not
                down = lam_r * torch.clamp(1.0 - (2.0 * rho - 1.0) ** 3, min=0.1)
                damp[rows] = torch.where(better, down.clamp_min(1e-12), torch.where(pending, lam_r * nu[rows], lam_r))
                nu[rows] = torch.where(better, torch.full_like(lam_r, 2.0),
                                       torch.where(pending, nu[rows] * 2, nu[rows]))
                accepted |= better
                pending &= ~better & (damp[rows] < 1e12)
                if not bool(pending.any()):
                    break
            stop = ~accepted | (small & last_small[rows])
            last_small[rows] = small
            active[rows] = ~stop
    q = lay.unpack(x)
    p = FrameParams(**{n: (q_to_t(v) if n == "t" else v).to(torch.float32).contiguous() for n, v in q.items()})
    with torch.no_grad():
        pix = project(run_model(model, shared.shape, p).landmarks_mp, p.R, p.t, shared.focal, shared.pp)[0]
        err = losses.landmark_error_px(pix, targets.float())
    return FrameFit(p, cur, err, taken)

