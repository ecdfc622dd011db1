"""The batched optimiser: fit FLAME parameters of many frames at once with Adam.

One optimiser step evaluates the face model for every frame of the batch, projects its landmarks
through each frame's camera, and updates every frame's parameters together. There is no Python
loop over frames anywhere in the step; the per-step cost is a few batched matrix products, so a
whole shard (hundreds to thousands of frames) costs about as many GPU launches as one frame.

Shared parameters (identity ``shape``, ``focal``, ``pp`` and the photometric term's appearance)
can be optimised jointly with the per-frame ones (calibrate) or held fixed (track).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Protocol

import torch
from torch import Tensor, nn

from stages.face.landmark_model import landmark_model
from stages.face.rotation import rotation_6d_to_matrix
from stages.tracking import losses
from stages.tracking.eyelids import LidIndex, eyelid_loss, lid_expression_loss
from stages.tracking.params import FrameParams, project
from stages.tracking.schedule import LossWeights, Schedule


class PhotometricTerm(Protocol):
    """What :func:`fit` needs from a photometric term (see :mod:`stages.tracking.photometric`)."""

    def parameters(self) -> dict[str, Tensor]:
        """Its own optimisable tensors by name (e.g. ``albedo``, ``sh``)."""

    def __call__(self, vertices: Tensor, R: Tensor, t: Tensor, focal: Tensor, pp: Tensor, frames: Tensor,
                 step: int) -> Tensor:
        """Scalar loss for world vertices [B, V, 3] seen through cameras R [B,3,3], t [B,3]."""


@dataclass
class Shared:
    """Parameters shared by all frames.

    Attributes:
        shape: [300] identity coefficients.
        focal: [2] (fx, fy) pixels.
        pp: [2] principal point, pixels.
    """

    shape: Tensor
    focal: Tensor
    pp: Tensor


@dataclass
class Problem:
    """What is fitted.

    Attributes:
        targets: [N, L, 2] landmark pixel positions, already in the model's landmark order.
        point_w: [L] weight per landmark.
        frame_w: [N] weight per frame (0: landmarks failed, the frame follows its neighbours).
        link: [N-1] 1 where frame n+1 directly follows frame n (temporal term), 0 across cuts.
        image_size: pixels per side (the loss unit).
        frames: [N] int64 row of each frame in the photometric term's images (default 0..N-1).
        lids: rows of the eyelid points in the landmark list, for the per-eye opening term
            (:mod:`stages.tracking.eyelids`); ``None``: no such term.
        lid_basis: [2, E] the eye closure each expression coefficient carries
            (:func:`stages.tracking.eyelids.lid_expression_basis`), for the term that keeps blinks
            out of the expression; ``None``: no such term.
        lid_closure: [N, 2] each eye's closure read from the target landmarks
            (:func:`stages.tracking.eyelids.eye_closure`: 0 open .. 1 shut) that the eyelid
            parameters are drawn towards; ``None``: no such term.
    """

    targets: Tensor
    point_w: Tensor
    frame_w: Tensor
    link: Tensor
    image_size: int = 512
    frames: Tensor | None = None
    lids: LidIndex | None = None
    lid_basis: Tensor | None = None
    lid_closure: Tensor | None = None


@dataclass
class FitResult:
    """Attributes:
        params: fitted per-frame parameters (detached).
        shared: fitted (or unchanged) shared parameters (detached).
        error_px: [N] mean landmark error per frame, pixels.
        history: total loss at the end of each level.
    """

    params: FrameParams
    shared: Shared
    error_px: Tensor
    history: dict[str, float] = field(default_factory=dict)


def run_model(model: nn.Module, shape: Tensor, p: FrameParams):  # noqa: ANN201 - FlameOutput
    """Evaluate the face model for every frame of ``p`` with one identity ``shape [300]``."""
    b = len(p)
    return model(shape=shape.expand(b, -1), expression=p.exp, jaw=p.jaw, eyes=p.eyes, eyelids=p.eyelids)


def initial_pose(model: nn.Module, shape: Tensor, targets: Tensor, point_w: Tensor, focal: Tensor, pp: Tensor
                 ) -> FrameParams:
    """Neutral faces placed so their landmarks' centroid and spread match each frame's targets.

    A frontal camera is put at the depth where the neutral landmarks' RMS spread (metres) matches
    the targets' spread (pixels), and shifted so the centroids coincide. Batched, no optimisation.

    Args:
        targets: [N, L, 2] pixels. point_w: [L]. focal, pp: [2] pixels.
    """
    n = targets.shape[0]
    p = FrameParams.neutral(n, device=targets.device)
    with torch.no_grad():
        lm = run_model(model, shape, p.select(slice(0, 1))).landmarks_mp[0]  # [L, 3]
        w = (point_w > 0).float()
        c3 = (lm * w[:, None]).sum(0) / w.sum()
        spread3 = (((lm[:, :2] - c3[:2]) ** 2).sum(-1) * w).sum() / w.sum()
        c2 = (targets * w[None, :, None]).sum(1) / w.sum()  # [N, 2]
        spread2 = (((targets - c2[:, None]) ** 2).sum(-1) * w).sum(-1) / w.sum()  # [N]
        f = focal.mean()
        z = f * spread3.sqrt() / spread2.sqrt().clamp_min(1e-3)  # [N]
        cam_c = torch.stack(((c2[:, 0] - pp[0]) * z / focal[0], (c2[:, 1] - pp[1]) * z / focal[1], z), -1)
        R = p.R
        p.t = cam_c - (R @ c3)  # x_cam = R c3 + t
    return p


def t_to_q(t: Tensor) -> Tensor:
    """[N, 3] translation (metres) -> [N, 3] (x/z, y/z, log z)."""
    z = t[:, 2:3].clamp_min(1e-3)
    return torch.cat((t[:, :2] / z, torch.log(z)), dim=1)


def q_to_t(q: Tensor) -> Tensor:
    """Inverse of :func:`t_to_q`."""
    z = torch.exp(q[:, 2:3])
    return torch.cat((q[:, :2] * z, z), dim=1)


def _weighted_terms(model: nn.Module, problem: Problem, p: FrameParams, sh: Shared, w: LossWeights,
                    photo: PhotometricTerm | None, photometric: bool, step: int,
                    focal0: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Total loss and [N, L, 2] projected landmarks for the current parameters."""
    out = run_model(model, sh.shape, p)
    R = rotation_6d_to_matrix(p.rot)
    pix, cam = project(out.landmarks_mp, R, p.t, sh.focal, sh.pp)
    total = w.landmarks * losses.landmark_loss(pix, problem.targets, problem.point_w, problem.frame_w,
                                               problem.image_size)
    if w.eyelid_opening > 0 and problem.lids is not None:
        total = total + w.eyelid_opening * eyelid_loss(pix, problem.targets, problem.lids, problem.frame_w)
    if w.lid_expression > 0 and problem.lid_basis is not None:
        total = total + w.lid_expression * lid_expression_loss(p.exp, problem.lid_basis)
    if w.eyelid_closure > 0 and problem.lid_closure is not None:
        d2 = (p.eyelids - problem.lid_closure).pow(2).sum(-1)
        total = total + w.eyelid_closure * (d2 * problem.frame_w).sum() / problem.frame_w.numel()
    if w.smooth_points > 0:
        total = total + w.smooth_points * losses.temporal_loss(cam * 1000.0, problem.link, order=2)
    if w.smooth_rot > 0:
        total = total + w.smooth_rot * losses.temporal_loss(p.rot, problem.link, order=2)
    if w.smooth_exp > 0:
        total = total + w.smooth_exp * losses.temporal_loss(p.exp, problem.link)
    ident6 = torch.tensor([1.0, 0, 0, 0, 1.0, 0], device=p.jaw.device)
    total = total + w.exp * losses.prior_loss(p.exp) + w.jaw * losses.prior_loss(p.jaw, ident6) \
        + w.eyes * losses.prior_loss(p.eyes, ident6.repeat(2)) + w.eyelids * losses.prior_loss(p.eyelids)
    if sh.shape.requires_grad and w.shape > 0:
        total = total + w.shape * sh.shape.pow(2).sum()
    if sh.focal.requires_grad and w.focal > 0 and focal0 is not None:
        total = total + w.focal * torch.log(sh.focal[0] / focal0).pow(2)
    if photometric and photo is not None:
        frames = problem.frames if problem.frames is not None else torch.arange(len(p), device=p.exp.device)
        total = total + w.photometric * photo(out.vertices, R, p.t, sh.focal, sh.pp, frames, step)
    return total, pix


def fit(model: nn.Module, problem: Problem, init: FrameParams, shared: Shared, schedule: Schedule,
        weights: LossWeights | None = None, *, photo: PhotometricTerm | None = None, on_step=None,
        loss_scale: float = 1.0) -> FitResult:
    """Optimise per-frame (and optionally shared) parameters through the schedule's levels.

    Args:
        model: the face model (``stages.face.FLAME``): forward(shape, expression, jaw, eyes, eyelids)
            -> output with ``landmarks_mp [B, L, 3]`` and ``vertices [B, V, 3]`` in metres.
        problem: targets and weights of ``N`` frames.
        init: starting per-frame parameters (``N`` rows).
        shared: identity, focal, principal point (optimised where a level frees them; an optimised
            focal length is one value, fx = fy).
        schedule: levels and learning rates.
        weights: loss weights (defaults: :class:`LossWeights`).
        photo: photometric term (used by levels with ``photometric=True``); its parameters
            (``albedo``, ``sh``) are optimised where a level frees them.
        on_step: optional ``callable(level_name, step)`` (progress reporting).
        loss_scale: the objective Adam descends is ``loss_scale`` times the loss (``history`` is
            the loss itself). The loss terms are means over frames, so each frame's gradient
            shrinks as ``1 / N``; where it nears Adam's ``eps`` the steps shrink too (slower
            convergence). ``loss_scale = N / N0`` gives every frame the gradients of an ``N0``-frame
            batch (:func:`stages.tracking.sequence.track_sequence`'s ``reference_frames``).

    Without a photometric level (or ``photo``), every step evaluates ``model`` on its landmark
    vertices only (:func:`stages.face.landmark_model.landmark_model`: the same landmarks).

    Returns:
        :class:`FitResult` with detached tensors.
    """
    weights = weights or LossWeights()
    # Without a photometric level only the landmarks are used: pose just their vertices.
    if photo is None or not any(level.photometric for level in schedule.levels):
        model = landmark_model(model)
    size = float(problem.image_size)
    per_frame = {k: v.detach().clone() for k, v in init.as_dict().items()}
    # Translation as (x/z, y/z, log z): depth then scales the face about its projected origin
    # instead of also sliding it, which decouples the three directions for Adam.
    per_frame["t"] = t_to_q(per_frame["t"])
    # Shared parameters in well-scaled forms: focal as log(f / size), pp in image sizes.
    # One focal length (fx = fy, as metrical-tracker and the .frame's single ``fl`` have it).
    shared_raw = {"shape": shared.shape.detach().clone(),
                  "focal": torch.log(shared.focal.detach().mean().reshape(1) / size),
                  "pp": shared.pp.detach().clone() / size}
    focal0 = shared.focal.detach().mean()
    photo_params = photo.parameters() if photo is not None else {}
    history: dict[str, float] = {}

    def current() -> tuple[FrameParams, Shared]:
        return (FrameParams(**{**per_frame, "t": q_to_t(per_frame["t"])}),
                Shared(shared_raw["shape"], (torch.exp(shared_raw["focal"]) * size).expand(2),
                       shared_raw["pp"] * size))

    for level in schedule.levels:
        use_photo = level.photometric and photo is not None
        free: list[tuple[str, Tensor]] = []
        for name in level.free:
            for pool in (per_frame, shared_raw, photo_params):
                if name in pool:
                    free.append((name, pool[name]))
        if not free or (level.photometric and photo is None):
            continue
        def level_loss(step: int, use_photo: bool = use_photo) -> Tensor:
            p, sh = current()
            total = _weighted_terms(model, problem, p, sh, weights, photo, use_photo, step, focal0)[0]
            return total * loss_scale if loss_scale != 1.0 else total

        history[level.name] = _adam_level(level, free, schedule, level_loss, on_step) / loss_scale
        if not math.isfinite(history[level.name]):
            raise FloatingPointError(f"tracking diverged in level {level.name!r} (loss {history[level.name]})")

    p, sh = current()
    with torch.no_grad():
        out = run_model(model, sh.shape, p)
        pix, _ = project(out.landmarks_mp, rotation_6d_to_matrix(p.rot), p.t, sh.focal, sh.pp)
        err = losses.landmark_error_px(pix, problem.targets)
    return FitResult(params=p.detach(), shared=Shared(sh.shape.detach(), sh.focal.detach(), sh.pp.detach()),
                     error_px=err, history=history)



def _adam_level(level, free: list[tuple[str, Tensor]], schedule: Schedule,  # noqa: ANN001 - a schedule level
                loss_at: Callable[[int], Tensor], on_step=None) -> float:  # noqa: ANN001
    """One level of ``schedule``: Adam on the ``free`` (name, tensor) pairs, each at its name's
    learning rate times the schedule's factor, for ``level.steps`` steps of ``loss_at(step)``
    (a scalar); ``on_step(level name, step)`` after each. Returns the last step's loss (may be
    non-finite: the caller says what diverged)."""
    for _, tensor in free:
        tensor.requires_grad_(True)
    opt = torch.optim.Adam([{"params": [t], "lr": schedule.lr[n], "base_lr": schedule.lr[n]} for n, t in free],
                           betas=schedule.betas, fused=all(t.is_cuda for _, t in free) or None)
    loss = torch.zeros(())
    for step in range(level.steps):
        factor = schedule.lr_factor(step, level.steps)
        for g in opt.param_groups:
            g["lr"] = g["base_lr"] * factor
        loss = loss_at(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if on_step is not None:
            on_step(level.name, step)
    for _, tensor in free:
        tensor.requires_grad_(False)
    return float(loss.detach())

def fit_appearance(loss_fn, params: dict[str, Tensor], schedule: Schedule, weight: float,  # noqa: ANN001
                   on_step=None) -> dict[str, float]:
    """The photometric levels of ``schedule`` with the geometry held (calibrate's appearance level):
    Adam on each level's free tensors of ``params`` against ``weight * loss_fn()``, with
    :func:`fit`'s optimiser, learning rates and decay.

    :func:`fit` runs such a level with the whole objective, evaluating the face model, the
    projection, the landmark terms and the rasteriser every step; none of them depends on the
    appearance, so their gradients with respect to it are zero and this gives the same steps (the
    test compares the two). ``loss_fn`` is e.g.
    :meth:`stages.tracking.photometric.Photometric.fixed_geometry`.

    Args:
        loss_fn: ``() -> scalar``, the photometric term at the fixed geometry.
        params: the appearance tensors by name (``albedo``/``tex``, ``sh``), optimised in place.
        schedule: its photometric levels are run (others are skipped).
        weight: the photometric term's weight (:class:`LossWeights` ``photometric``).
        on_step: optional ``callable(level_name, step)``.

    Returns:
        ``{level name: weighted loss at its last step}``.
    """
    history: dict[str, float] = {}
    for level in schedule.levels:
        free = [(name, params[name]) for name in level.free if name in params]
        if not level.photometric or not free:
            continue
        history[level.name] = _adam_level(level, free, schedule, lambda step: weight * loss_fn(), on_step)
        if not math.isfinite(history[level.name]):
            raise FloatingPointError(f"appearance fit diverged in level {level.name!r}")
    return history
