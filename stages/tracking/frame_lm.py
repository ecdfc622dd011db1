"""Levenberg-Marquardt fit of many frames at once, every frame alone: the frame-by-frame fit of
the steadiness figures (:mod:`stages.tracking.jitter`), in a few batched Gauss-Newton iterations
instead of the tracker's 470 Adam steps.

Each frame ``k`` minimises its own objective (:func:`frame_objective`), the tracker's per-frame
terms without the temporal ones (:func:`stages.tracking.fit.fit` with ``smooth_*`` = 0 and
``frame_w`` = 1 sums exactly their mean over frames)::

    f_k = w_lmk * sum_l pw_l |pix_kl - target_kl|^2 / (size^2 sum_l pw_l)      landmark term
        + w_lid * mean_e (opening_e(pix_k) - opening_e(target_k))^2           per-eye lid opening
        + w_exp |exp_k|^2 + w_jaw |jaw_k - I|^2 + w_eyes |eyes_k - I|^2 + w_lids |eyelids_k|^2

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
from stages.tracking.lm import _IDENT6, _Layout, _LinearPart
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
        shared: identity, focal (fx, fy) and principal point, pixels; held.
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
    from torch.func import jacrev, jvp, vmap

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
    n_model = n_pose - n_rigid                                                         # jaw, eyes, eyelids

    def model_points(xm: Tensor, exp: Tensor) -> Tensor:
        """[B, L, 3] model-space landmarks of ``xm [B, n_model]`` (jaw, eyes, eyelids) and expression."""
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

    def tangents(fn, at: Tensor, n: int) -> Tensor:
        """Forward-mode Jacobian of a frame-wise ``fn: [B, n] -> [B, ...]`` with respect to its
        input, frame by frame: one batched call per basis direction (under ``vmap``) ->
        ``[B, ..., n]`` (frames are independent, so the Jacobian is block-diagonal)."""
        basis = torch.eye(n, dtype=f64, device=dev)[:, None, :].expand(n, at.shape[0], n)
        cols = vmap(lambda v: jvp(fn, (at,), (v,))[1])(basis)                            # [n, B, ...]
        return cols.movedim(0, -1)

    def system(x: Tensor, rows: Tensor, rigid_only: bool) -> tuple[Tensor, Tensor]:
        """The Gauss-Newton matrix ``[B, P, P]`` (with the priors) and gradient ``[B, P]`` at ``x``
        (``rigid_only``: of the rotation and translation alone, ``[B, n_rigid, n_rigid]``, ``[B, n_rigid]``)."""
        b = len(rows)
        xr, xm, exp = x[:, :n_rigid], x[:, n_rigid:n_pose], x[:, n_pose:]
        pts = model_points(xm, exp)                                                     # [B, L, 3]
        pix = camera_pixels(xr, pts)
        j_rigid = tangents(lambda v: camera_pixels(v, pts), xr, n_rigid)                # [B, L, 2, n_rigid]
        if rigid_only:
            return _normal(j_rigid.reshape(b, -1, n_rigid), pix, x, rows)
        q = lay.unpack(x)
        d_pts = pose_jac(q["jaw"], q["eyes"], exp, shape)                               # [B, L, 3, n_model]
        p = FrameParams(**{n: (q_to_t(v) if n == "t" else v) for n, v in q.items()})
        R = p.R
        cam = pts @ R.transpose(1, 2) + p.t[:, None]
        z = cam[..., 2].clamp_min(1e-4)
        zero = torch.zeros_like(z)
        dproj = torch.stack([torch.stack([1 / z, zero, -cam[..., 0] / z ** 2], -1),
                             torch.stack([zero, 1 / z, -cam[..., 1] / z ** 2], -1)], -2) * focal.view(2, 1)
        j_model = (dproj @ R[:, None]) @ d_pts                                          # [B, L, 2, n_model]
        j_exp, _ = lin.landmark_jacobians(p, shape, focal.view(2, 1), pp)               # [B, 2L, E]
        J = torch.cat([j_rigid.reshape(b, -1, n_rigid), j_model.reshape(b, -1, n_model), j_exp], 2)  # pixels
        return _normal(J, pix, x, rows)

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
                nu[rows] = torch.where(better, torch.full_like(lam_r, 2.0), torch.where(pending, nu[rows] * 2, nu[rows]))
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


class _PoseJacobian:
    """The model-space landmarks' Jacobian with respect to the jaw, eyes (6D each) and eyelids,
    from the model's structure (the counterpart of :class:`stages.tracking.lm._LinearPart`).

    With ``R_j`` the joints' local rotations (global and neck identity), ``G_j = G_parent R_j`` and
    the posed joints ``o_j = o_parent + G_parent (J_j - J_parent)``, a vertex is
    ``v_u = sum_j w_uj (G_j vp_u + o_j - G_j J_j) + eyelids . E_u`` with the corrected rest vertex
    ``vp_u = vs_u + P_u vec(R_1..R_{J-1} - I)``. A change ``dR_j`` of one joint's rotation moves
    ``G`` and ``o`` of that joint's subtree only (``dG_j = G_parent dR_j``, ``dG_c = dG_parent R_c``,
    ``do_c = do_parent + dG_parent (J_c - J_parent)``) and the correctives ``vp`` by ``P_u vec(dR_j)``;
    the eyelids are linear. Only the vertices the landmarks use are touched, and the 6D map's own
    derivative is a ``[6, 3, 3]`` forward-mode Jacobian per joint: the ``T = 20`` columns cost a
    few batched products instead of ``T`` passes through the whole model (forward mode would
    push every column through every vertex). Checked against ``torch.func.jvp`` in the tests.
    """

    def __init__(self, model: nn.Module, lin: _LinearPart):
        vidx = model.mp_vert_idx
        used = torch.unique(vidx.reshape(-1))
        V = model.n_vertices
        self.lin, self.model = lin, model
        self.used = used
        self.corner, self.bary = lin.corner, lin.bary                      # [L, 3] rows into used; [L, 3]
        self.w = model.lbs_weights[used]                                    # [U, J]
        self.tmpl = model.v_template[used]                                  # [U, 3]
        self.sd = model.shapedirs.view(V, 3, -1)[used]                      # [U, 3, S]
        self.ed = model.exprdirs.view(V, 3, -1)[used]                       # [U, 3, E]
        nj = model.n_joints
        self.pd = model.posedirs.view((nj - 1) * 9, V, 3)[:, used]          # [(J-1)*9, U, 3]
        self.lid = model.eyelid_dirs.view(2, V, 3)[:, used]                 # [2, U, 3]
        self.j0 = model.J_regressor @ model.v_template                      # [J, 3]
        self.parents = lin.parents

    def __call__(self, jaw: Tensor, eyes: Tensor, exp: Tensor, shape: Tensor) -> Tensor:
        """d(landmarks_mp)/d(jaw [6], eyes [12], eyelids [2]) -> ``[B, L, 3, 20]``, metres per unit,
        at ``jaw [B, 6]``, ``eyes [B, 12]``, expression ``exp [B, E]``, identity ``shape [S]``."""
        from torch.func import jacfwd, vmap

        b, nj = jaw.shape[0], len(self.parents)
        ne, ns = exp.shape[1], shape.numel()
        ident = torch.tensor(_IDENT6, dtype=jaw.dtype, device=jaw.device).expand(b, 6)
        d6 = torch.cat([ident, ident, jaw, eyes], 1).view(b, nj, 6)
        R = rotation_6d_to_matrix(d6)                                       # [B, J, 3, 3]
        # the rotating joints (2..J-1) own 6 tangent columns each
        n_rot = 6 * (nj - 2)
        dR6 = vmap(vmap(jacfwd(rotation_6d_to_matrix)))(d6[:, 2:])          # [B, J-2, 3, 3, 6]
        Rdot = R.new_zeros(b, n_rot, nj, 3, 3)
        for i in range(nj - 2):
            Rdot[:, 6 * i:6 * i + 6, 2 + i] = dR6[:, i].permute(0, 3, 1, 2)
        vs = self.tmpl + torch.einsum("uan,bn->bua", self.ed[..., :ne], exp)
        J = self.j0 + torch.einsum("jan,bn->bja", self.lin.je[..., :ne], exp)  # [B, J, 3]
        if ns:
            vs = vs + torch.einsum("uan,n->ua", self.sd[..., :ns], shape)
            J = J + torch.einsum("jan,n->ja", self.lin.js[..., :ns], shape)
        eye3 = torch.eye(3, dtype=R.dtype, device=R.device)
        vp = vs + torch.einsum("bp,pua->bua", (R[:, 1:] - eye3).reshape(b, -1), self.pd)   # [B, U, 3]
        G: list[Tensor] = []
        Gd: list[Tensor] = []
        od: list[Tensor] = []
        for j, par in enumerate(self.parents):
            if par < 0:
                G.append(R[:, j])
                Gd.append(Rdot[:, :, j])
                od.append(R.new_zeros(b, n_rot, 3))
            else:
                G.append(G[par] @ R[:, j])
                Gd.append(G[par][:, None] @ Rdot[:, :, j] + Gd[par] @ R[:, j][:, None])
                od.append(od[par] + (Gd[par] @ (J[:, j] - J[:, par])[:, None, :, None])[..., 0])
        Gs, Gds, ods = torch.stack(G, 1), torch.stack(Gd, 2), torch.stack(od, 2)   # [B,J,3,3], [B,T,J,3,3], [B,T,J,3]
        gd = ods - (Gds @ J[:, None, :, :, None])[..., 0]                   # [B, T, J, 3]
        Md = torch.einsum("uj,btjxy->btuxy", self.w, Gds)                   # [B, T, U, 3, 3]
        M = torch.einsum("uj,bjxy->buxy", self.w, Gs)                       # [B, U, 3, 3]
        dvp = torch.einsum("btp,pua->btua", Rdot[:, :, 1:].reshape(b, n_rot, -1), self.pd)  # [B, T, U, 3]
        dv = (Md @ vp[:, None, :, :, None])[..., 0] + torch.einsum("uj,btja->btua", self.w, gd) \
            + (M[:, None] @ dvp[..., None])[..., 0]                         # [B, T, U, 3]
        dv = torch.cat([dv, self.lid[None].expand(b, -1, -1, -1)], 1)       # + eyelids: [B, T + 2, U, 3]
        dl = (dv[:, :, self.corner] * self.bary[None, None, :, :, None]).sum(-2)   # [B, T + 2, L, 3]
        return dl.permute(0, 2, 3, 1)
