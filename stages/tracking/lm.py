"""Levenberg-Marquardt solve of calibrate's geometric problem (identity, focal length, principal
point and every keyframe's pose and expression), exploiting its block structure.

The problem is a sum of squares: each keyframe's weighted landmark residuals depend on that
keyframe's own parameters ``x_k`` (head rotation 6D, translation as (x/z, y/z, log z), expression,
jaw, eyes, eyelids: ``P`` numbers) and on the shared ones ``y`` (identity ``S`` coefficients, log
focal length, principal point); the priors are diagonal. Adam crawls along the problem's long
flat valleys (identity against every keyframe's expression and depth) for hundreds of steps; a
Gauss-Newton step crosses them at once. Per iteration:

1. the residuals and their Jacobians ``A_k = dr_k/dx_k [R, P]``, ``B_k = dr_k/dy [R, Y]`` of all
   keyframes from the model's structure (:func:`pixel_jacobian`: the view by forward mode through
   the projection alone, jaw, eyes and eyelids by :class:`_PoseJacobian`, expression and identity
   by :class:`_LinearPart`; a few dozen batched products however many frames, no pass of tangent
   frames through the whole model, which :func:`jacobian_reference` makes and the tests compare);
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
    pose = _PoseJacobian(m64, lin)

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
        """[K,R,P] and [K,R,Y] from the model's structure (:func:`pixel_jacobian`; the forward-mode
        reference :func:`jacobian_reference` is what the tests compare it with)."""
        q = lay.unpack(x)
        p = FrameParams(**{n: (q_to_t(v) if n == "t" else v) for n, v in q.items()})
        _, j_pose, j_cam, j_exp, j_shape = pixel_jacobian(lin, pose, p, q["t"], y[: lay.S], y[lay.S], y[lay.S + 1:],
                                                          size)
        scale = (rw / size).repeat_interleave(2)[None, :, None]
        return (torch.cat([j_pose, j_exp], dim=2) * scale, torch.cat([j_shape, j_cam], dim=2) * scale)

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


class _PoseJacobian:
    """The model-space landmarks' Jacobian with respect to the jaw, eyes (6D each) and eyelids,
    from the model's structure (the counterpart of :class:`_LinearPart`).

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
        dv = torch.einsum("btuxy,buy->btux", Md, vp) + torch.einsum("uj,btja->btua", self.w, gd) \
            + torch.einsum("buxy,btuy->btux", M, dvp)                       # [B, T, U, 3]
        dv = torch.cat([dv, self.lid[None].expand(b, -1, -1, -1)], 1)       # + eyelids: [B, T + 2, U, 3]
        dl = (dv[:, :, self.corner] * self.bary[None, None, :, :, None]).sum(-2)   # [B, T + 2, L, 3]
        return dl.permute(0, 2, 3, 1)


def view_jacobian(pts: Tensor, rot: Tensor, q: Tensor, log_f: Tensor, pp_n: Tensor,
                  size: float) -> tuple[Tensor, Tensor]:
    """Pixels of model-space points and their Jacobian with respect to the view: head rotation
    (6D), translation as (x/z, y/z, log z), log(focal / size) and principal point / size.

    Args:
        pts: [K, L, 3] model-space points, metres. rot: [K, 6]. q: [K, 3]. log_f: scalar (fx = fy).
        pp_n: [2]. size: the image size, pixels.

    Returns:
        (pix [K, L, 2], d(pix)/d(rot, q, log_f, pp) [K, L, 2, 12]); forward mode over the 12
        directions, each one batched call of the projection alone (no face model).
    """
    from torch.func import jvp, vmap

    k = pts.shape[0]

    def view(v: Tensor) -> Tensor:
        R = rotation_6d_to_matrix(v[:, :6])
        return project(pts, R, q_to_t(v[:, 6:9]), (torch.exp(v[:, 9:10]) * size).expand(k, 2),
                       v[:, 10:12] * size)[0]

    at = torch.cat([rot, q, log_f.reshape(1, 1).expand(k, 1), pp_n.reshape(1, 2).expand(k, 2)], 1)
    basis = torch.eye(12, dtype=at.dtype, device=at.device)[:, None, :].expand(12, k, 12)
    cols = vmap(lambda v: jvp(view, (at,), (v,))[1])(basis)                            # [12, K, L, 2]
    return view(at), cols.movedim(0, -1)


def pixel_jacobian(lin: _LinearPart, pose: _PoseJacobian, p: FrameParams, q: Tensor, shape: Tensor, log_f: Tensor,
                   pp_n: Tensor, size: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The landmarks' pixels and their Jacobians with respect to every parameter, from the model's
    structure (:class:`_LinearPart`, :class:`_PoseJacobian`, :func:`view_jacobian`), no
    forward-mode pass through the face model.

    Args:
        p: K frames (``t`` in metres); q: [K, 3] the same translation as (x/z, y/z, log z).
        shape: [S] identity. log_f: log(focal / size) (fx = fy). pp_n: [2] principal point / size.

    Returns:
        ``pix [K, L, 2]``, ``d_pose [K, 2L, 29]`` (rot 6D, t as q, jaw, eyes, eyelids: the packed
        order of :class:`_Layout`), ``d_view [K, 2L, 3]`` (log focal, principal point) and
        ``d_shape [K, 2L, S]``, ``d_exp [K, 2L, E]`` are the last two: ``(pix, d_pose, d_view,
        d_exp, d_shape)``; pixels per unit, rows ``(landmark, x/y)``.
    """
    k = len(p)
    with torch.no_grad():
        pts = lin.model(shape=shape.expand(k, -1), expression=p.exp, jaw=p.jaw, eyes=p.eyes,
                        eyelids=p.eyelids).landmarks_mp                              # [K, L, 3]
        pix, j_view = view_jacobian(pts, p.rot, q, log_f, pp_n, size)                 # [K, L, 2, 12]
        R = p.R
        cam = pts @ R.transpose(1, 2) + p.t[:, None]
        z = cam[..., 2].clamp_min(1e-4)
        zero = torch.zeros_like(z)
        f = torch.exp(log_f) * size
        dproj = torch.stack([torch.stack([1 / z, zero, -cam[..., 0] / z ** 2], -1),
                             torch.stack([zero, 1 / z, -cam[..., 1] / z ** 2], -1)], -2) * f   # [K, L, 2, 3]
        j_model = (dproj @ R[:, None]) @ pose(p.jaw, p.eyes, p.exp, shape)             # [K, L, 2, 20]
        j_exp, j_shape = lin.landmark_jacobians(p, shape, f, pp_n * size)
    d_pose = torch.cat([j_view[..., :9], j_model], -1).reshape(k, -1, 9 + j_model.shape[-1])
    return pix, d_pose, j_view[..., 9:].reshape(k, -1, 3), j_exp, j_shape


def jacobian_reference(model: nn.Module, p: FrameParams, shape: Tensor, log_f: Tensor, pp_n: Tensor,
                       size: float) -> tuple[Tensor, Tensor]:
    """Reference for :func:`pixel_jacobian`'s ``d_pose`` and ``d_view``: forward mode through the
    whole face model, every frame under ``vmap`` (what the solver did before; a pass of ``K x 32``
    tangent frames through every vertex)."""
    from torch.func import jacfwd, vmap

    dims = {n: int(v.shape[-1]) for n, v in p.as_dict().items()}
    lay = _Layout(dims, int(shape.numel()))
    n_pose = lay.slices["exp"].start
    x = lay.pack(p)

    def pixels(xpose: Tensor, view: Tensor, exp: Tensor) -> Tensor:
        q = lay.unpack(torch.cat([xpose, exp])[None])
        out = model(shape=shape[None], expression=q["exp"], jaw=q["jaw"], eyes=q["eyes"], eyelids=q["eyelids"])
        pix, _ = project(out.landmarks_mp, rotation_6d_to_matrix(q["rot"]), q_to_t(q["t"]),
                         (torch.exp(view[0]) * size).expand(2), view[1:3] * size)
        return pix[0].reshape(-1)

    view = torch.cat([log_f.reshape(1), pp_n.reshape(2)])
    return vmap(jacfwd(pixels, argnums=(0, 1)), in_dims=(0, None, 0))(x[:, :n_pose], view, x[:, n_pose:])
