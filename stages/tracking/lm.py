"""Levenberg-Marquardt solve of calibrate's geometric problem (identity, focal length, principal
point and every keyframe's pose and expression), exploiting its block structure.

The problem is a sum of squares: each keyframe's weighted landmark residuals depend on that
keyframe's own parameters ``x_k`` (head rotation 6D, translation as (x/z, y/z, log z), expression,
jaw, eyes, eyelids: ``P`` numbers) and on the shared ones ``y`` (identity ``S`` coefficients, log
focal length, principal point); the priors are diagonal. Adam crawls along the problem's long
flat valleys (identity against every keyframe's expression and depth) for hundreds of steps; a
Gauss-Newton step crosses them at once. Per iteration:

1. the residuals and their Jacobians ``A_k = dr_k/dx_k [R, P]``, ``B_k = dr_k/dy [R, Y]`` of all
   keyframes in one batched forward-mode pass (``torch.func.jacfwd`` under ``vmap``: one model
   evaluation of ``K * (P + Y)`` tangent frames, a few hundred kernel launches however many frames);
2. the normal equations with the priors, damped by ``lambda * diag`` (Marquardt);
3. the Schur complement on the shared block: ``K`` small ``P x P`` Cholesky solves (batched) and
   one ``Y x Y`` solve, then every keyframe's step by back-substitution;
4. the step is kept when it lowers the objective (``lambda`` falls), else ``lambda`` grows and the
   step is solved again from the same Jacobians.

It stops when two accepted steps in a row lower the objective by less than ``tolerance`` of its
value, or after ``iterations`` Jacobians (synthetic clips: 5-10; wojtek.mp4: about 30). Float64
throughout (the normal equations square the conditioning).

The objective is exactly calibrate's Adam objective (:func:`objective`, the same weights as
:func:`stages.tracking.fit.fit` with ``frame_w = 1`` and no temporal term: the landmark term,
the per-frame priors, the identity prior and the focal-length prior), so the two optimisers are
interchangeable and comparable; :func:`objective` is the plain reference the tests check the
residual form against.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from stages.face.rotation import matrix_to_rotation_6d, rotation_6d_to_matrix
from stages.tracking import losses
from stages.tracking.fit import q_to_t, t_to_q
from stages.tracking.params import FrameParams, project
from stages.tracking.refine import objective as geometric_objective
from stages.tracking.schedule import LossWeights

_IDENT6 = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
_ORDER = ("rot", "t", "jaw", "eyes", "eyelids", "exp")
"""Order of a keyframe's vector: the pose part (forward-mode Jacobian) first, expression (linear) last."""


@dataclass
class LMResult:
    """Attributes:
        shape: [S] identity (float32, on the inputs' device).
        focal: [2] fx = fy, pixels. pp: [2] pixels.
        params: fitted per-keyframe parameters (float32, detached).
        error_px: [K] mean landmark error per keyframe, pixels.
        loss_before, loss_after: the objective at the start and the end.
        iterations: Jacobians computed (Gauss-Newton iterations).
        history: the objective after each iteration; damping: lambda after each iteration.
    """

    shape: Tensor
    focal: Tensor
    pp: Tensor
    params: FrameParams
    error_px: Tensor
    loss_before: float
    loss_after: float
    iterations: int
    history: list[float] = field(default_factory=list)
    damping: list[float] = field(default_factory=list)


def objective(model: nn.Module, shape: Tensor, p: FrameParams, focal: Tensor, pp: Tensor, targets: Tensor,
              point_w: Tensor, image_size: float, w: LossWeights, focal0: float | None = None) -> Tensor:
    """Reference: calibrate's geometric objective as :func:`stages.tracking.fit.fit` sums it
    (:func:`stages.tracking.refine.objective`: landmark term, per-frame priors, identity prior; and ``w.focal * log(f / focal0)^2`` when
    ``focal0`` is given).

    Args:
        shape: [S]. p: K frames. focal, pp: [2] pixels. targets: [K, L, 2] pixels. point_w: [L].

    Returns:
        scalar.
    """
    total, _ = geometric_objective(model, shape, p, focal, pp, targets, point_w, image_size, w)
    if focal0 is not None:
        total = total + w.focal * torch.log(focal[0] / focal0).pow(2)
    return total


class _Layout:
    """Where each parameter sits in a keyframe's vector ``x [P]`` and in the shared ``y [Y]``."""

    def __init__(self, dims: dict[str, int], n_shape: int):
        self.slices: dict[str, slice] = {}
        at = 0
        for name in _ORDER:
            self.slices[name] = slice(at, at + dims[name])
            at += dims[name]
        self.P = at
        self.S = n_shape
        self.Y = n_shape + 3  # shape, log(f / size), pp / size

    def pack(self, p: FrameParams) -> Tensor:
        d = p.as_dict()
        d["t"] = t_to_q(d["t"])
        return torch.cat([d[n] for n in _ORDER], dim=-1)

    def unpack(self, x: Tensor) -> dict[str, Tensor]:
        return {n: x[..., s] for n, s in self.slices.items()}


def solve_lm(model: nn.Module, shape: Tensor, params: FrameParams, focal: Tensor, pp: Tensor, targets: Tensor,
             point_w: Tensor, *, image_size: int = 512, focal0: float | None = None, iterations: int = 30,
             weights: LossWeights | None = None, fit_focal: bool = True, fit_pp: bool = False, tolerance: float = 1e-4,
             lam: float = 1e-4, on_step=None) -> LMResult:
    """Minimise :func:`objective` over the identity, (optionally) focal length and principal
    point, and every keyframe's parameters, by Levenberg-Marquardt (see the module docstring).

    Args:
        model: the face model (left untouched; a float64 copy is used).
        shape: [S] starting identity. params: K keyframes' starting parameters (e.g. after a rigid fit).
        focal, pp: [2] starting intrinsics, pixels (one focal length is fitted: fx = fy).
        targets: [K, L, 2] landmark pixels in the model's landmark order. point_w: [L].
        focal0: the focal-length prior's centre (pixels; default the starting ``focal``).
        iterations: most Jacobians (each costs one batched forward-mode model evaluation).
        fit_focal, fit_pp: fit the focal length, the principal point (else held). The principal point
            is held by default: it trades almost freely against every keyframe's translation (a flat
            direction Adam's small steps never travel far along, but a Gauss-Newton step does).
        tolerance: stop once two accepted steps in a row each lower the objective by less than this
            fraction (one such step is not enough: on real landmarks the objective plateaus for a few
            iterations and then falls by half again, wojtek.mp4).
        lam: starting damping, relative to the normal matrix's diagonal.
        on_step: optional ``callable("lm", iteration)`` after each iteration (progress).

    Returns:
        :class:`LMResult` (float32 tensors on the inputs' device).
    """
    from torch.func import jacfwd, vmap

    w = weights or LossWeights()
    dev, f64 = targets.device, torch.float64
    size = float(image_size)
    m64 = copy.deepcopy(model).to(dtype=f64)
    k = targets.shape[0]
    dims = {n: int(v.shape[-1]) for n, v in params.as_dict().items()}
    lay = _Layout(dims, int(shape.numel()))
    tg, pw = targets.to(f64), point_w.to(f64)
    f0 = float(focal0 if focal0 is not None else focal.detach().double().mean())
    # the landmark term as residuals: sqrt(pw_l / (K sum pw)) * d / size, x and y per point
    rw = (w.landmarks * pw / (k * pw.sum())).sqrt()                                   # [L]
    ident6 = torch.tensor(_IDENT6, dtype=f64, device=dev)
    # per-frame priors: w * |x - rest|^2 / K on exp, jaw, eyes, eyelids (nothing on rot and t)
    prior_w = torch.zeros(lay.P, dtype=f64, device=dev)
    rest = torch.zeros(lay.P, dtype=f64, device=dev)
    for name, wt in (("exp", w.exp), ("jaw", w.jaw), ("eyes", w.eyes), ("eyelids", w.eyelids)):
        prior_w[lay.slices[name]] = wt / k
    rest[lay.slices["jaw"]] = ident6
    rest[lay.slices["eyes"]] = ident6.repeat(2)
    shared_w = torch.zeros(lay.Y, dtype=f64, device=dev)
    shared_w[: lay.S] = w.shape
    log_f0 = math.log(f0 / size)

    lin = _LinearPart(m64)
    n_pose = lay.slices["exp"].start

    def landmark_residual(xpose: Tensor, ycam: Tensor, exp: Tensor, shp: Tensor, tk: Tensor) -> Tensor:
        """One keyframe: pose part [n_pose], camera part [3] (log f/size, pp/size), expression [E],
        identity [S], targets [L, 2] -> weighted residuals [L * 2]."""
        q = lay.unpack(torch.cat([xpose, exp])[None])
        out = m64(shape=shp[None], expression=q["exp"], jaw=q["jaw"], eyes=q["eyes"], eyelids=q["eyelids"])
        f = torch.exp(ycam[0]) * size
        pix, _ = project(out.landmarks_mp, rotation_6d_to_matrix(q["rot"]), q_to_t(q["t"]), f.expand(2),
                         ycam[1:3] * size)
        return ((pix[0] - tk) / size * rw[:, None]).reshape(-1)

    pose_jac = vmap(jacfwd(landmark_residual, argnums=(0, 1)), in_dims=(0, None, 0, None, 0))

    def res(x: Tensor, y: Tensor, tk: Tensor) -> Tensor:
        """[K, L * 2] weighted landmark residuals of every keyframe (one batched model call)."""
        q = lay.unpack(x)
        out = m64(shape=y[: lay.S].expand(k, -1), expression=q["exp"], jaw=q["jaw"], eyes=q["eyes"],
                  eyelids=q["eyelids"])
        pix, _ = project(out.landmarks_mp, rotation_6d_to_matrix(q["rot"]), q_to_t(q["t"]),
                         (torch.exp(y[lay.S]) * size).expand(2), y[lay.S + 1:] * size)
        return ((pix - tk) / size * rw[:, None]).reshape(k, -1)

    def cost(x: Tensor, y: Tensor) -> Tensor:
        """The objective (:func:`objective`) from the packed parameters."""
        c = res(x, y, tg).pow(2).sum() + (prior_w * (x - rest).pow(2)).sum() + (shared_w * y.pow(2)).sum()
        if w.focal > 0 and fit_focal:
            c = c + w.focal * (y[lay.S] - log_f0) ** 2
        return c

    def jac(x: Tensor, y: Tensor, tk: Tensor) -> tuple[Tensor, Tensor]:
        """[K,R,P] and [K,R,Y]: forward mode for the pose and camera, the linear map for
        expression and identity (see :class:`_LinearPart`)."""
        j_pose, j_cam = pose_jac(x[:, :n_pose], y[lay.S:], x[:, n_pose:], y[: lay.S], tk)
        q = lay.unpack(x)
        p = FrameParams(**{n: (q_to_t(v) if n == "t" else v) for n, v in q.items()})
        j_exp, j_shape = lin.landmark_jacobians(p, y[: lay.S], torch.exp(y[lay.S]) * size, y[lay.S + 1:] * size)
        scale = (rw / size).repeat_interleave(2)[None, :, None]
        return (torch.cat([j_pose, j_exp * scale], dim=2), torch.cat([j_shape * scale, j_cam], dim=2))

    x = lay.pack(params.map(lambda v: v.detach().to(f64)))
    y = torch.cat([shape.detach().to(f64).reshape(-1), torch.log(focal.detach().to(f64).mean() / size).reshape(1),
                   pp.detach().to(f64) / size])
    free_y = torch.ones(lay.Y, dtype=torch.bool, device=dev)
    free_y[lay.S] = fit_focal
    free_y[lay.S + 1:] = fit_pp
    with torch.no_grad():
        c0 = float(cost(x, y))
    current, history, damping, done, nu, last_small = c0, [], [], 0, 2.0, False
    eye_y = torch.eye(lay.Y, dtype=f64, device=dev)
    for _ in range(iterations):
        with torch.no_grad():
            A, B = jac(x, y, tg)                                              # [K,R,P], [K,R,Y]
            r = res(x, y, tg)                                                 # [K,R]
        done += 1
        B = B * free_y
        U = A.transpose(1, 2) @ A + torch.diag_embed(prior_w).expand(k, -1, -1)
        gA = (A.transpose(1, 2) @ r[..., None])[..., 0] + prior_w * (x - rest)
        W = A.transpose(1, 2) @ B                                             # [K,P,Y]
        V = (B.transpose(1, 2) @ B).sum(0) + torch.diag(shared_w)
        gB = (B.transpose(1, 2) @ r[..., None])[..., 0].sum(0) + shared_w * y
        if w.focal > 0 and fit_focal:
            V[lay.S, lay.S] += w.focal
            gB[lay.S] += w.focal * (y[lay.S] - log_f0)
        # fixed shared entries: identity rows, zero gradient, so their step is exactly 0
        V = torch.where(free_y[:, None] & free_y[None, :], V, eye_y)
        gB = torch.where(free_y, gB, torch.zeros_like(gB))
        dU = torch.diagonal(U, dim1=-2, dim2=-1)
        dV = torch.diagonal(V, dim1=-2, dim2=-1)
        floor_u = 1e-12 * dU.mean().clamp_min(1e-30)
        floor_v = 1e-12 * dV.mean().clamp_min(1e-30)
        accepted = False
        while lam < 1e12:
            Ud = U + torch.diag_embed(lam * dU + floor_u)
            Vd = V + torch.diag(lam * dV + floor_v)
            Lu, info = torch.linalg.cholesky_ex(Ud)
            if int(info.max()) != 0:
                lam *= 10.0
                continue
            UiW = torch.cholesky_solve(W, Lu)                                  # [K,P,Y]
            Uig = torch.cholesky_solve(gA[..., None], Lu)                      # [K,P,1]
            S = Vd - (W.transpose(1, 2) @ UiW).sum(0)
            rhs = -gB + (W.transpose(1, 2) @ Uig).sum(0)[:, 0]
            S = 0.5 * (S + S.T)
            Ls, info_s = torch.linalg.cholesky_ex(S)
            if int(info_s) != 0:
                lam *= 10.0
                continue
            dy = torch.cholesky_solve(rhs[:, None], Ls)[:, 0]
            dx = -(Uig[..., 0] + (UiW @ dy[:, None])[..., 0])
            with torch.no_grad():
                c_new = float(cost(x + dx, y + dy))
            # the reduction the Gauss-Newton model predicts: -2 d.g - d.H.d (H undamped)
            hd = (dx[:, None] @ U @ dx[..., None]).sum() + 2 * (dx[:, None] @ W @ dy[:, None]).sum() + dy @ V @ dy
            predicted = float(-2 * ((gA * dx).sum() + gB @ dy) - hd)
            if math.isfinite(c_new) and c_new < current:
                x, y = x + dx, y + dy
                # the head rotation has no prior: back to the 6D of its matrix (same R, same cost),
                # so that its scale does not drift along the 6D form's free directions
                rs = lay.slices["rot"]
                rot = matrix_to_rotation_6d(rotation_6d_to_matrix(x[:, rs]))
                x = torch.cat([x[:, : rs.start], rot, x[:, rs.stop:]], 1)
                gain = current - c_new
                current = c_new
                rho = gain / predicted if predicted > 0 else 0.0
                lam = max(lam * max(0.1, 1.0 - (2.0 * rho - 1.0) ** 3), 1e-12)  # Nielsen's update, down to 1/10
                nu = 2.0
                accepted = True
                break
            lam *= nu
            nu *= 2.0
        history.append(current)
        damping.append(lam)
        if on_step is not None:
            on_step("lm", done - 1)
        small = accepted and gain <= tolerance * abs(current)
        if not accepted or (small and last_small):
            break
        last_small = small

    q = lay.unpack(x)
    p = FrameParams(**{n: (q_to_t(v) if n == "t" else v).to(torch.float32).contiguous() for n, v in q.items()})
    shape_out = y[: lay.S].to(torch.float32)
    focal_out = (torch.exp(y[lay.S]) * size).expand(2).to(torch.float32).clone()
    pp_out = (y[lay.S + 1:] * size).to(torch.float32)
    with torch.no_grad():
        out = model(shape=shape_out.expand(k, -1), expression=p.exp, jaw=p.jaw, eyes=p.eyes, eyelids=p.eyelids)
        pix, _ = project(out.landmarks_mp, p.R, p.t, focal_out, pp_out)
        err = losses.landmark_error_px(pix, targets)
    return LMResult(shape_out, focal_out, pp_out, p, err, c0, current, done, history, damping)


class _LinearPart:
    """The landmarks' Jacobians with respect to expression and identity, from the model's structure.

    With the joint rotations fixed, FLAME's posed vertices are linear in the shaped mesh
    ``v_s = T + shapedirs s + exprdirs e``: ``v_u = M_u (v_s,u + pose correctives) + sum_j w_uj g_j``
    with ``M_u = sum_j w_uj G_j`` and ``g_j = o_j - G_j J_j``, where the joints ``J = J_reg v_s``
    and the posed joints ``o_j = o_parent + G_parent (J_j - J_parent)`` are linear in ``v_s`` too.
    So a blendshape direction ``D`` moves the landmarks by ``B (M D + W dg(D))`` (``B`` the
    landmarks' barycentric rows over the vertices they use, ``W`` their skinning weights), and the
    ``E + S`` Jacobian columns cost a few batched products instead of ``E + S`` model evaluations
    (forward mode would push each column through the whole model). Only the vertices the
    landmarks touch are used. Checked against ``torch.func.jacfwd`` of the model in the tests.
    """

    def __init__(self, model: nn.Module):
        vidx = model.mp_vert_idx                                            # [L, 3]
        used, inv = torch.unique(vidx.reshape(-1), return_inverse=True)
        V = model.n_vertices
        self.corner = inv.view(vidx.shape)                                  # [L, 3] rows into the used vertices
        self.bary = model.mp_bary                                           # [L, 3]
        self.w = model.lbs_weights[used]                                    # [U, J]
        self.bw = (self.bary[..., None] * self.w[self.corner]).sum(1)       # [L, J]
        sd = model.shapedirs.view(V, 3, -1)
        ed = model.exprdirs.view(V, 3, -1)
        self.sd, self.ed = sd[used], ed[used]                               # [U, 3, N]
        self.js = torch.einsum("jv,van->jan", model.J_regressor, sd)        # [J, 3, S]
        self.je = torch.einsum("jv,van->jan", model.J_regressor, ed)        # [J, 3, E]
        self.parents = tuple(int(p) for p in model.parents)
        self.model = model

    def _world_rotations(self, p: FrameParams) -> Tensor:
        """[K, J, 3, 3] world rotations G_j of the joints (global and neck identity, as calibrate has them)."""
        k = len(p)
        ident = torch.tensor(_IDENT6, dtype=p.jaw.dtype, device=p.jaw.device).expand(k, 6)
        rot = rotation_6d_to_matrix(torch.cat([ident, ident, p.jaw, p.eyes], dim=1).view(k, -1, 6))
        G: list[Tensor] = []
        for j, par in enumerate(self.parents):
            G.append(rot[:, j] if par < 0 else G[par] @ rot[:, j])
        return torch.stack(G, dim=1)

    def _pixel_moves(self, G: Tensor, jc: Tensor, d: Tensor, dj: Tensor) -> Tensor:
        """[K, L, 2, N] landmark pixel motion per unit of each of N blendshape directions ``d [U, 3, N]``
        (their joints' motion ``dj [J, 3, N]``), given the joints' world rotations ``G [K, J, 3, 3]``
        and the pixels' derivative with respect to the landmarks' model-space position ``jc [K, L, 2, 3]``."""
        M = torch.einsum("uj,kjab->kuab", self.w, G)                        # [K, U, 3, 3]
        # per corner c of each landmark's triangle: jc M_corner, weighted by its barycentric coordinate
        jcm = (jc[:, :, None] @ M[:, self.corner]) * self.bary[None, :, :, None, None]  # [K, L, 3, 2, 3]
        out = torch.einsum("klcab,lcbn->klan", jcm, d[self.corner])
        dgs: list[Tensor] = []
        do: list[Tensor] = []
        for j, par in enumerate(self.parents):
            if par < 0:
                do.append(dj[j].expand(G.shape[0], -1, -1))
            else:
                do.append(do[par] + G[:, par] @ (dj[j] - dj[par]))
            dgs.append(do[j] - G[:, j] @ dj[j])
        dg = torch.stack(dgs, dim=1)                                        # [K, J, 3, N]
        jcw = jc[:, :, None] * self.bw[None, :, :, None, None]              # [K, L, J, 2, 3]
        return out + torch.einsum("kljab,kjbn->klan", jcw, dg)

    def landmark_jacobians(self, p: FrameParams, shape: Tensor, focal: Tensor, pp: Tensor) -> tuple[Tensor, Tensor]:
        """d(pixels)/d(expression) ``[K, L*2, E]`` and d(pixels)/d(identity) ``[K, L*2, S]`` at ``p``
        (``shape [S]``, ``focal`` scalar pixels, ``pp [2]``); rows ``(l, x/y)`` as the residuals'."""
        k = len(p)
        with torch.no_grad():
            out = self.model(shape=shape.expand(k, -1), expression=p.exp, jaw=p.jaw, eyes=p.eyes, eyelids=p.eyelids)
            Rc = p.R
            cam = out.landmarks_mp @ Rc.transpose(1, 2) + p.t[:, None]      # [K, L, 3]
            z = cam[..., 2].clamp_min(1e-4)
            zero = torch.zeros_like(z)
            dpix = torch.stack([torch.stack([1 / z, zero, -cam[..., 0] / z ** 2], -1),
                                torch.stack([zero, 1 / z, -cam[..., 1] / z ** 2], -1)], -2) * focal  # [K,L,2,3]
            jc = dpix @ Rc[:, None]                                         # [K, L, 2, 3] per model-space move
            G = self._world_rotations(p)
            ne, ns = p.exp.shape[1], shape.numel()
            je = self._pixel_moves(G, jc, self.ed[..., :ne], self.je[..., :ne])
            je = je.reshape(k, -1, ne)
            if ns == 0:  # the identity baked into the model (a per-frame fit)
                return je, je.new_zeros(k, je.shape[1], 0)
            js = self._pixel_moves(G, jc, self.sd[..., :ns], self.js[..., :ns])
        return je, js.reshape(k, -1, ns)
