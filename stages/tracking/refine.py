"""Second-order refinement of the identity over the keyframes (calibrate's last geometric step).

Adam (:func:`stages.tracking.fit.fit`) gets the keyframes' landmarks to a fraction of a pixel, but
the joint problem (identity, per-keyframe pose and expression) has long, flat valleys: a small
rotation of every keyframe's head against a deformation of the identity, depth against scale.
Adam in float32 stops somewhere along such a valley, and the identity it leaves can be off by
1-2 mm although every landmark fits. Here the same objective (landmark term plus the priors of
:class:`stages.tracking.schedule.LossWeights`) is minimised further with L-BFGS (strong-Wolfe line
search) in float64, starting from Adam's result: quasi-Newton steps follow the valleys that
first-order steps crawl along. Focal length and principal point are held.

One batched problem over all keyframes (K frames per model evaluation); on the GPU a few hundred
iterations take seconds.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from stages.tracking import losses
from stages.tracking.fit import q_to_t, t_to_q
from stages.tracking.params import FrameParams, project
from stages.tracking.schedule import LossWeights

_IDENT6 = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


@dataclass
class RefineResult:
    """Attributes:
        shape: [S] refined identity (float32, on the inputs' device).
        params: refined per-keyframe parameters (float32, detached).
        error_px: [K] mean landmark error per keyframe, pixels.
        loss_before, loss_after: the objective at the start and the end (image-size units squared);
            equal when the refinement was not kept.
        iterations: L-BFGS iterations done.
    """

    shape: Tensor
    params: FrameParams
    error_px: Tensor
    loss_before: float
    loss_after: float
    iterations: int


def objective(model: nn.Module, shape: Tensor, p: FrameParams, focal: Tensor, pp: Tensor, targets: Tensor,
              point_w: Tensor, image_size: float, w: LossWeights) -> tuple[Tensor, Tensor]:
    """Calibrate's geometric objective (no temporal term): weighted landmark term plus priors.

    Args:
        shape: [S]. p: K frames. focal, pp: [2] pixels. targets: [K, L, 2] pixels. point_w: [L].

    Returns:
        (scalar loss, [K, L, 2] projected landmarks in pixels).
    """
    k = len(p)
    out = model(shape=shape.expand(k, -1), expression=p.exp, jaw=p.jaw, eyes=p.eyes, eyelids=p.eyelids)
    pix, _ = project(out.landmarks_mp, p.R, p.t, focal, pp)
    frame_w = torch.ones(k, dtype=pix.dtype, device=pix.device)
    ident6 = torch.tensor(_IDENT6, dtype=pix.dtype, device=pix.device)
    total = w.landmarks * losses.landmark_loss(pix, targets, point_w, frame_w, image_size)
    total = total + w.exp * losses.prior_loss(p.exp) + w.jaw * losses.prior_loss(p.jaw, ident6) \
        + w.eyes * losses.prior_loss(p.eyes, ident6.repeat(2)) + w.eyelids * losses.prior_loss(p.eyelids) \
        + w.shape * shape.pow(2).sum()
    return total, pix


def refine_identity(model: nn.Module, shape: Tensor, params: FrameParams, focal: Tensor, pp: Tensor,
                    targets: Tensor, point_w: Tensor, *, image_size: int = 512, iterations: int = 600,
                    weights: LossWeights | None = None, history: int = 100,
                    min_fit_gain: float = 0.1, chunk: int = 25, converged: float = 1e-5,
                    give_up_after: int = 100) -> RefineResult:
    """Minimise :func:`objective` over the identity and every keyframe's parameters with L-BFGS in
    float64, from a converged-ish start (calibrate's Adam result).

    Args:
        model: the face model (left untouched; a float64 copy is used).
        shape: [S] starting identity. params: K keyframes' starting parameters.
        focal, pp: [2] pixels (held). targets: [K, L, 2] pixels. point_w: [L].
        iterations: most L-BFGS iterations (each costs about 1.1 model evaluations of K frames).
        weights: loss weights (default :class:`LossWeights`, as calibrate's Adam levels).
        history: L-BFGS memory (pairs of steps).
        min_fit_gain: the landmark term must fall by at least this fraction for the result to be kept.
        chunk, converged: the iterations run in chunks of ``chunk``; it stops early after a chunk that
            lowered the objective by less than ``converged`` of its value.
        give_up_after: it also stops after this many iterations when the landmark term has not
            fallen by a quarter of ``min_fit_gain`` (the result would be refused: the refinement is
            then only trading prior cost along a valley; on noisy real landmarks that is the usual
            case, and the 1000 iterations it ran before were all spent on it).

    Returns:
        :class:`RefineResult`. The refinement is kept only where it lowers the objective and the
        landmark term by at least ``min_fit_gain`` of its start: it exists to leave valleys where Adam stopped with landmarks not fitted,
        not to buy a lower prior cost with a worse fit (the priors pull the identity towards the
        mean face, and fully converged they bias it: on synthetic clips that made the tracked
        vertex error worse). Otherwise (or when non-finite) the start is returned unchanged.
    """
    w = weights or LossWeights()
    dev, f64 = targets.device, torch.float64
    m64 = copy.deepcopy(model).to(dtype=f64)
    tg, pw = targets.to(f64), point_w.to(f64)
    fo, pp64 = focal.to(f64), pp.to(f64)
    # scale the loss so that L-BFGS's absolute tolerances and first step are well-sized
    scale = float(image_size) ** 2
    x = {k: v.detach().to(f64).clone() for k, v in params.as_dict().items()}
    x["t"] = t_to_q(x["t"])
    x["shape"] = shape.detach().to(f64).clone()
    for v in x.values():
        v.requires_grad_(True)

    def unpack() -> FrameParams:
        return FrameParams(**{k: (q_to_t(v) if k == "t" else v) for k, v in x.items() if k != "shape"})

    opt = torch.optim.LBFGS(list(x.values()), lr=1.0, max_iter=iterations, history_size=history,
                            line_search_fn="strong_wolfe", tolerance_grad=1e-12, tolerance_change=1e-15)

    def closure() -> Tensor:
        opt.zero_grad(set_to_none=True)
        loss, _ = objective(m64, x["shape"], unpack(), fo, pp64, tg, pw, image_size, w)
        loss = loss * scale
        loss.backward()
        return loss

    def fit_term(pix: Tensor) -> float:
        ones = torch.ones(pix.shape[0], dtype=pix.dtype, device=pix.device)
        return float(losses.landmark_loss(pix, tg, pw, ones, image_size))

    with torch.no_grad():
        before_t, pix_before = objective(m64, x["shape"], unpack(), fo, pp64, tg, pw, image_size, w)
        before, fit_before = float(before_t), fit_term(pix_before)
    # L-BFGS in chunks, stopping once a chunk no longer lowers the objective by ``converged`` of its
    # value: converged (or stuck), more iterations would change nothing the acceptance test sees
    # (on synthetic clips the default 1000 iterations mostly ran on after that point).
    done_iters, last = 0, before * scale
    while done_iters < iterations:
        n = min(chunk, iterations - done_iters)
        opt.param_groups[0]["max_iter"], opt.param_groups[0]["max_eval"] = n, n * 5 // 4
        opt.step(closure)
        done_iters += n
        with torch.no_grad():
            now_t, pix_now = objective(m64, x["shape"], unpack(), fo, pp64, tg, pw, image_size, w)
            now = float(now_t) * scale
        if not math.isfinite(now) or last - now <= converged * abs(last):
            break
        if done_iters >= give_up_after and fit_term(pix_now) > (1.0 - min_fit_gain / 4) * fit_before:
            break  # the landmark term is not falling: only the priors are, and the result would be refused
        last = now
    with torch.no_grad():
        p = unpack()
        after_t, pix = objective(m64, x["shape"], p, fo, pp64, tg, pw, image_size, w)
        after = float(after_t)
    state = opt.state.get(opt._params[0], {})
    done = int(state.get("n_iter", 0))
    if not math.isfinite(after) or after > before or fit_term(pix) > (1.0 - min_fit_gain) * fit_before:
        p0 = params.detach()
        with torch.no_grad():
            _, pix0 = objective(model, shape, p0, focal, pp, targets, point_w, image_size, w)
        return RefineResult(shape.detach().clone(), p0, losses.landmark_error_px(pix0, targets), before, before, done)
    p32 = p.map(lambda v: v.detach().to(dtype=torch.float32, device=dev))
    return RefineResult(x["shape"].detach().to(dtype=torch.float32, device=dev), p32,
                        losses.landmark_error_px(pix, tg).to(torch.float32), before, after, done)
