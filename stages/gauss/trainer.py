"""Training the Gaussian avatar: batched, checkpointed, resumable with identical results.

One step renders ``batch_size`` frames at once (the face model, the MLP and the rasteriser are all
batched; there is no per-image Python loop), computes FlashAvatar's loss and takes one Adam step.

Determinism and resume: the model is initialised from ``seed``; batch ``s`` is a pure function of
(seed, s) (:class:`stages.gauss.data.StepBatchSampler`); a checkpoint holds parameters, Adam state,
the step and the RNG states. A run killed after a checkpoint and resumed ends with the same
parameters as an uninterrupted run (bit-identical on CPU with the reference renderer; on CUDA up
to the non-determinism of atomics in the rasteriser's backward pass).

Mixed precision: only the MLP runs in bfloat16 autocast (on CUDA, ``amp=True``); rasterisation,
SH colours, losses and the optimiser stay float32 (alpha compositing and small Gaussians are
precision-sensitive).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from stages.config import digest_of
from stages.dataset.layout import DatasetLayout
from stages.gauss import checkpoint as ckpt
from stages.gauss.data import (AvatarFrames, PipelineInfo, Split, StepBatchSampler, TrackedSequence, background_rgb,
                               choose_split, first_use_order, start_cache, training_batches)
from stages.gauss.losses import avatar_loss, binding_loss, silhouette_loss
from stages.gauss.model import AvatarConfig, GaussianAvatar, Gaussians, avatar_config_from_dict
from stages.gauss.render_gsplat import gsplat_available, render_gaussians_gsplat, start_warmup
from stages.gauss.render_ref import render_gaussians_reference, viewmat_from_rt
from stages.gauss.sampling import area_samples, surface_points, triangle_size, uv_texel_samples
from stages.gauss.shell import Silhouettes
from stages.gauss.surface import FaceSurface, split_condition

log = logging.getLogger("avatar.gauss")


FLASHAVATAR_LPIPS_WEIGHT = 0.05  # FlashAvatar's weight of its LPIPS (VGG) term


@dataclass
class TrainConfig:
    """Attributes:
        steps: optimiser steps (images seen = steps * batch_size; upstream: 150k images at batch 1).
            ``None`` (the default): the budget rule of :func:`training_budget`, which follows the
            number of training frames.
        budget_images_per_frame, budget_min_images, budget_max_images: the budget rule: images =
            ``clamp(images_per_frame * training frames, min_images, max_images)``.
        lr_final_fraction: every learning rate decays along a half cosine over the last
            ``lr_decay_fraction`` of the steps to this fraction of its value (1.0: constant, upstream).
        batch_size: frames per step.
        resolution: training image size (square, px).
        sh_degree, mlp_width, mlp_depth, pe_freqs, init_opacity, offset_scale, triangle_scale: see
            :class:`AvatarConfig` (``triangle_scale``: Gaussians grow and shrink with their triangle;
            off by default; docs/motion-format.md has what it does to winks, PSNR and mouth r).
        triangle_frame: Gaussians live in their triangle's local frame (offsets, rotations and
            shapes follow the triangle's deformation; :mod:`stages.gauss.triangle_frame`). Off by
            default (measured in docs/motion-format.md: a driven blink reaches the render, the drive
            test's mouth r moves below 0.9 at its seed); off where ``triangle_scale`` (the older,
            isotropic form) is set. ``triangle_frame_region``: which Gaussians (:func:`region_mask`:
            ``all``, ``eyes``, ``eyes_grown``, ``no_mouth``).
        shut_eye_repeat: training frames with an eye shut (an ``eyelids`` value >= 0.5) are drawn this
            many times per epoch instead of once (:func:`shut_eye_repeats`). Blinks are 3-5% of a real
            clip's frames and the avatar underfits them: on the drive test's actor B, 8 took the
            driven blink's eye closure r from 0.45-0.59 to 0.60-0.93 (three seeds, two drivers; 0.94 with
            ``triangle_frame``). Default 8 since 2026-12-07 (1, off, before; finished actors keep theirs,
            ``FORMER_DEFAULTS``): on the H100, wojtek.mp4's held-out PSNR at the default preset 27.17 ->
            27.12 dB. The tiny and demo presets keep 1: there it cost 0.3-0.5 dB (docs/motion-format.md,
            "Blinks and winks").
        eye_face_samples: extra Gaussians on every face of the eye region (0, 1, 3 or 4 at fixed
            barycentric points, :func:`stages.gauss.sampling.face_samples`), beside the UV texels'
            (which leave about a quarter of the stand-in's eye-region faces without any). Off:
            measured without benefit (docs/motion-format.md).
        binding_region, binding_pos_weight, binding_pos_threshold, binding_scale_weight,
            binding_scale_threshold: the binding regulariser (:func:`stages.gauss.losses.binding_loss`):
            weights of the position and scale terms (0: off, the default: on the drive test's actor
            it cost 0.4-2.3 dB and did not shut the eye, docs/motion-format.md), their thresholds in
            triangle sizes, and where they apply (:func:`region_mask`). Positions count from the head's
            mean offset (the avatar's common shift against the tracked mesh stays free).
        uv_resolution: UV map size for texel sampling (FLAME: 128).
        area_samples: Gaussians when the face model has no UVs.
        pose_condition: the MLP also sees the head's rotation relative to the training frames' mean
            (:meth:`stages.gauss.model.GaussianAvatar.pose_feature`; upstream: off).
        shell: Gaussians on a scalp shell and a neck tube beyond the face model's mesh
            (:mod:`stages.gauss.shell`): ``auto`` (default) where the mesh covers only the face
            (the built-in stand-in, ``FaceSurface.face_only``; FLAME has its own scalp and neck),
            ``on`` or ``off`` (upstream). ``shell_density``: shell Gaussians per area relative to
            the face Gaussians' density; ``shell_neck_length``: how far the neck tube reaches below
            the chin, in face heights; ``shell_scalp_scale``: size of the scalp ellipsoid
            (:class:`stages.gauss.shell.ShellConfig`); ``shell_fit_frames``: training frames whose
            head masks the shell is fitted to before training (each point slides along its ray to
            the visual hull's boundary, :func:`stages.gauss.shell.fit_radially`; 0: the plain
            ellipsoid and tube); ``shell_fit_inset``: how far inside that boundary, in shell point
            spacings.
        lr_scale: multiplier of every learning rate; mlp_lr: the MLP's learning rate before scaling.
            The base rates are upstream's batch-1 values (SH 2.5e-3, opacity 5e-2, scale 5e-3,
            rotation 1e-3, MLP 1e-4, Adam betas 0.9/0.999). For batch ``B`` Adam follows the
            square-root scaling rule (Malladi et al. 2022, "On the SDEs and scaling rules for
            adaptive gradient algorithms"): averaging B frames cuts the gradient noise by sqrt(B)
            while Adam's step size does not grow with the gradient, so ``lr_scale = sqrt(B)``; the
            default 4.0 is sqrt(16). Linear scaling (16x) would put the opacity logits' rate at 0.8
            a step, past where Adam stays stable. The tiny preset (batch 2, 200 steps) uses 4.0 too.
        huber_delta, mouth_weight: the loss (Huber 0.1, 40x inside the mouth).
        silhouette_weight: weight of an L1 term between the render's alpha and the ground truth's
            matte x neckhead (:func:`stages.gauss.losses.silhouette_loss`; 0: off, upstream).
        lpips_weight, lpips_start: LPIPS inside neck-and-head from this fraction of the steps on,
            only where a ``vgg16`` asset exists. Default 0 (off): measured with real VGG-16 weights
            on wojtek.mp4 (docs/identity.md), FlashAvatar's :data:`FLASHAVATAR_LPIPS_WEIGHT` lowered
            held-out LPIPS but also PSNR (1.2-2.1 dB) and SSIM; ``avatar run --lpips-term`` sets it.
        background: ``green`` (upstream default), ``white`` or ``black``.
        test_frames, test_fraction, max_train_frames: the split (:func:`stages.gauss.data.choose_split`;
            both unset, the default: the last 10% of the clip, 5 to 500 frames).
        checkpoint_every: steps between checkpoints (0: only at the end).
        seed: initialisation and batch order.
        renderer: ``auto`` (gsplat on CUDA, else reference), ``gsplat`` or ``reference``.
        workers: decoding processes: the per-item DataLoader's workers (``frame_cache`` off), and
            when > 0 the frame cache is built on every core (0: in this process).
        frame_cache: ``auto`` (default: decode every training frame once into a memory-mapped
            cache under ``<workdir>/frame-cache`` when the disk has room, else decode per item),
            ``on`` or ``off`` (:mod:`stages.gauss.frame_cache`). The same bytes reach the model either way.
            With ``workers`` > 0 training starts on the first decoded rows, not on the whole cache.
        init_color_frames: read the Gaussians' starting colours from this many training frames,
            evenly spaced (:mod:`stages.gauss.color_init`); 0: grey (upstream). For short runs.
        prefetch: batches kept ready on the device ahead of the step (a background thread).
        amp: bfloat16 autocast for the MLP on CUDA.
        log_every: steps between log lines.
    """

    FORMER_DEFAULTS = {"shut_eye_repeat": (1,)}  # before 2026-12-07 (stages.config_match)

    steps: int | None = None
    budget_images_per_frame: float = 60.0
    budget_min_images: int = 30_000
    budget_max_images: int = 150_000
    lr_final_fraction: float = 0.1
    lr_decay_fraction: float = 0.5
    batch_size: int = 16
    resolution: int = 512
    sh_degree: int = 3
    mlp_width: int = 256
    mlp_depth: int = 3
    pe_freqs: int = 8
    init_opacity: float = 0.5
    offset_scale: float = 0.01
    triangle_scale: bool = False
    triangle_frame: bool = False
    triangle_frame_region: str = "all"
    shut_eye_repeat: int = 8
    eye_face_samples: int = 0
    binding_region: str = "eyes"
    binding_pos_weight: float = 0.0
    binding_pos_threshold: float = 1.0
    binding_scale_weight: float = 0.0
    binding_scale_threshold: float = 0.6
    uv_resolution: int = 128
    area_samples: int = 14000
    pose_condition: bool = False
    shell: str = "auto"
    shell_density: float = 0.25
    shell_neck_length: float = 0.7
    shell_scalp_scale: float = 1.0
    shell_fit_frames: int = 24
    shell_fit_inset: float = 1.5
    lr_scale: float = 4.0
    mlp_lr: float = 1e-4
    huber_delta: float = 0.1
    mouth_weight: float = 40.0
    silhouette_weight: float = 0.0
    lpips_weight: float = 0.0
    lpips_start: float = 0.1
    background: str = "green"
    test_frames: int | None = None
    test_fraction: float | None = None
    max_train_frames: int = 10000
    checkpoint_every: int = 1000
    seed: int = 0
    renderer: str = "auto"
    workers: int = 8
    frame_cache: str = "auto"
    prefetch: int = 3
    init_color_frames: int = 0
    amp: bool = True
    log_every: int = 100

    def avatar_config(self) -> AvatarConfig:
        return AvatarConfig(sh_degree=self.sh_degree, mlp_width=self.mlp_width, mlp_depth=self.mlp_depth,
                            pe_freqs=self.pe_freqs, init_opacity=self.init_opacity, offset_scale=self.offset_scale,
                            triangle_scale=self.triangle_scale, pose_dim=6 if self.pose_condition else 0,
                            triangle_frame=self.triangle_frame and not self.triangle_scale)


def training_budget(cfg: TrainConfig, n_train: int) -> tuple[int, str]:
    """Optimiser steps for ``n_train`` training frames, and the sentence that says why.

    ``cfg.steps`` when set; otherwise the budget rule: images = ``clamp(budget_images_per_frame x
    n_train, budget_min_images, budget_max_images)``, rounded up to whole batches. The defaults
    (60 images a frame, 30k to 150k) take upstream FlashAvatar's 150k images, which are about 60
    passes over its 2,500-frame training sets, as the rate, and give a short clip at least 30k
    images (1,875 steps of 16): the Gaussians need a number of optimiser steps whatever the number
    of frames. A 250-frame clip (225 training frames) trains on 30k images, a 750-frame one on
    40.5k, 2,500 frames and more on 150k.
    """
    if cfg.steps is not None:
        return int(cfg.steps), f"{cfg.steps} steps x {cfg.batch_size} images (train.steps)"
    images = min(cfg.budget_max_images, max(cfg.budget_min_images, round(cfg.budget_images_per_frame * n_train)))
    steps = max(1, math.ceil(images / cfg.batch_size))
    return steps, (f"{steps} steps x {cfg.batch_size} = {steps * cfg.batch_size} images: "
                   f"{cfg.budget_images_per_frame:g} x {n_train} training frames, clamped to "
                   f"[{cfg.budget_min_images}, {cfg.budget_max_images}] (the budget rule; set train.steps to override)")


@dataclass(frozen=True)
class TrainPlan:
    """What a training run will do: the split, the steps and the reasons for both.

    Attributes:
        split: :class:`stages.gauss.data.Split` (train and held-out indices, rule).
        steps: optimiser steps in all (a resumed run counts the steps done before).
        budget_rule: why that many steps (:func:`training_budget`).
    """

    split: Split
    steps: int
    budget_rule: str

    def report(self) -> dict:
        """The ``held_out`` and ``budget`` entries of the train report."""
        return {"held_out": self.split.describe(), "budget": {"steps": self.steps, "rule": self.budget_rule}}


def plan_training(cfg: TrainConfig, n_frames: int, span: tuple[int, int] | None = None) -> TrainPlan:
    """The split of ``n_frames`` tracked frames (``span``: those with a face, see
    :func:`stages.gauss.data.choose_split`) and the step budget of its training frames."""
    split = choose_split(n_frames, cfg.test_frames, cfg.test_fraction, cfg.max_train_frames, span)
    steps, rule = training_budget(cfg, len(split.train))
    return TrainPlan(split, steps, rule)


def lr_factor(cfg: TrainConfig, step: int, steps: int) -> float:
    """Learning-rate multiplier at ``step`` of ``steps``: 1 until the last ``lr_decay_fraction`` of
    the steps, then a half cosine down to ``lr_final_fraction`` at the last step."""
    if cfg.lr_final_fraction >= 1.0 or cfg.lr_decay_fraction <= 0:
        return 1.0
    start = steps * (1.0 - cfg.lr_decay_fraction)
    if step <= start:
        return 1.0
    x = min(1.0, (step - start) / max(steps - start, 1e-9))
    return cfg.lr_final_fraction + (1.0 - cfg.lr_final_fraction) * 0.5 * (1.0 + math.cos(math.pi * x))


@dataclass
class TrainResult:
    """Attributes: model (trained, on the training device), steps done in total, steps and images
    run by this call, seconds of this call, images per second, last loss, resumed_from step; ``setup``:
    :meth:`stages.phase_clock.PhaseClock.report` of what ran before the steps (load, shell_masks,
    build_avatar, to_device, colours, frame_cache) and of the first step (``first_step``)."""

    model: GaussianAvatar
    steps: int
    steps_run: int
    images: int
    seconds: float
    images_per_s: float
    last_loss: float
    resumed_from: int = 0
    losses: list[float] = field(default_factory=list)
    pipeline: PipelineInfo | None = None
    plan: TrainPlan | None = None
    stop_reason: str = ""
    setup: dict = field(default_factory=dict)


def choose_renderer(name: str, device: str) -> str:
    """Resolve ``auto``: gsplat on CUDA where it imports, else the reference renderer."""
    if name not in ("auto", "gsplat", "reference"):
        raise ValueError(f"unknown renderer {name!r}; use auto, gsplat or reference")
    if name == "auto":
        return "gsplat" if str(device).startswith("cuda") and gsplat_available() else "reference"
    return name


def shell_active(surface: FaceSurface, cfg: TrainConfig) -> bool:
    """Whether the avatar gets shell Gaussians (``cfg.shell``, the face model's coverage)."""
    return cfg.shell_density > 0 and (cfg.shell == "on" or (cfg.shell == "auto" and surface.face_only))


def build_avatar(surface: FaceSurface, cfg: TrainConfig, silhouettes: Silhouettes | None = None) -> GaussianAvatar:
    """Place the Gaussians (UV texels where the model has UVs, else area samples) and build the
    model, deterministically from ``cfg.seed``. CPU tensors. ``silhouettes``: training frames' head
    masks the shell is fitted to (:func:`shell_silhouettes`), or None (the plain shell)."""
    g = torch.Generator().manual_seed(cfg.seed)
    neutral = surface.neutral().cpu()
    faces = surface.faces.cpu()
    if surface.has_uv:
        face_idx, bary = uv_texel_samples(surface.vt, surface.ft, cfg.uv_resolution, surface.face_mask)
    else:
        face_idx, bary = area_samples(neutral, faces, cfg.area_samples, generator=g, face_mask=surface.face_mask)
    if cfg.eye_face_samples > 0:
        from stages.gauss.eye_region import eye_region_faces
        from stages.gauss.sampling import face_samples

        eye = eye_region_faces(surface.masks, faces)
        if surface.face_mask is not None:
            eye &= surface.face_mask.cpu()
        e_idx, e_bary = face_samples(torch.nonzero(eye).reshape(-1), cfg.eye_face_samples)
        face_idx, bary = torch.cat([face_idx, e_idx]), torch.cat([bary, e_bary])
    canonical = surface_points(neutral, faces, face_idx, bary)
    offset = None
    if cfg.shell not in ("auto", "on", "off"):
        from stages.errors import bad_input

        raise bad_input("config", f"unknown train.shell {cfg.shell!r}", "use auto, on or off")
    if shell_active(surface, cfg):
        face_idx, bary, canonical, offset = _add_shell(surface, cfg, face_idx, bary, canonical, silhouettes)
    torch.manual_seed(cfg.seed)
    from stages.gauss.triangle_frame import triangle_basis

    config = cfg.avatar_config()
    frame_mask = None
    if config.triangle_frame:
        frame_mask = region_mask(surface, face_idx, cfg.triangle_frame_region, "triangle_frame_region")
        if not bool(frame_mask.any()):  # e.g. "eyes" on a face model without eye-region masks
            config = dataclasses.replace(config, triangle_frame=False)
    return GaussianAvatar(face_idx, bary, canonical, config,
                          canonical_size=triangle_size(neutral, faces, face_idx), anchor_offset=offset,
                          canonical_basis=triangle_basis(neutral, faces, face_idx), frame_mask=frame_mask)


def region_mask(surface: FaceSurface, face_idx: Tensor, region: str, setting: str) -> Tensor:
    """bool [N]: the Gaussians of ``region``: ``eyes`` (:func:`stages.gauss.eye_region.eye_region_gaussians`),
    ``eyes_grown`` (the same grown by one ring of faces: the skin between lids and brows that
    stretches over a shut eye), ``all``, or ``no_mouth`` (all but those on triangles with a vertex in the face model's ``lips``
    mask: the lips and the triangles that close the mouth, which stretch when the jaw opens);
    BadInput naming ``train.<setting>`` for anything else."""
    if region == "all":
        return torch.ones(face_idx.shape[0], dtype=torch.bool)
    if region == "no_mouth":
        lips = surface.masks.get("lips")
        if lips is None or len(lips) == 0:
            return torch.ones(face_idx.shape[0], dtype=torch.bool)
        faces = surface.faces.cpu().long()
        on_lips = torch.zeros(int(faces.max()) + 1, dtype=torch.bool)
        on_lips[torch.as_tensor(np.asarray(lips, np.int64))] = True
        return ~on_lips[faces[face_idx.long().cpu()]].any(-1)
    if region in ("eyes", "eyes_grown"):
        from stages.gauss.eye_region import eye_region_gaussians

        return eye_region_gaussians(surface.masks, surface.faces.cpu(), face_idx.cpu(), 1 if region == "eyes_grown" else 0)
    from stages.errors import bad_input

    raise bad_input("config", f"unknown train.{setting} {region!r}", "use eyes, eyes_grown, no_mouth or all")


def shell_silhouettes(layout: DatasetLayout, seq: TrackedSequence, train_idx: list[int], frames: int,
                      resolution: int = 256) -> Silhouettes | None:
    """Head masks (matte x neckhead > 0.5) and cameras of ``frames`` training frames spread evenly
    over ``train_idx``, at ``resolution`` px, for fitting the shell; None when ``frames <= 0``."""
    if frames <= 0 or not train_idx:
        return None
    pick = sorted({train_idx[round(i * (len(train_idx) - 1) / max(frames - 1, 1))] for i in range(frames)})
    data = AvatarFrames(layout, seq, pick, resolution, (0.0, 0.0, 0.0))
    items = [data[j] for j in range(len(data))]
    masks = torch.stack([(it["alpha"].float() / 255) * (it["neckhead"].float() / 255) > 0.5 for it in items])
    return Silhouettes(masks, torch.stack([it["R"] for it in items]), torch.stack([it["t"] for it in items]),
                       torch.stack([it["K"] for it in items]))


def _add_shell(surface: FaceSurface, cfg: TrainConfig, face_idx: Tensor, bary: Tensor, canonical: Tensor,
               silhouettes: Silhouettes | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The face Gaussians followed by the shell's (:mod:`stages.gauss.shell`), bound to the
    triangles the jaw does not move; returns face_idx, bary, canonical, anchor offsets (zero for
    the face Gaussians)."""
    import math

    from stages.face.rotation import axis_angle_to_matrix, matrix_to_rotation_6d
    from stages.gauss.shell import ShellConfig, bind_to_mesh, rigid_faces, shell_points
    from stages.gauss.surface import EXPRESSION_DIM, JAW_DIM, neutral_condition

    neutral = surface.neutral().cpu()
    faces = surface.faces.cpu()
    v = neutral.double()[faces]
    area = 0.5 * torch.linalg.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0]).norm(dim=-1)
    used = area if surface.face_mask is None else area[surface.face_mask.cpu()]
    spacing = math.sqrt(float(used.sum()) / max(1, face_idx.shape[0]))
    pts = shell_points(neutral, faces, spacing, ShellConfig(cfg.shell_density, neck_length=cfg.shell_neck_length,
                                                              scalp_scale=cfg.shell_scalp_scale,
                                                              fit_inset=cfg.shell_fit_inset), silhouettes)
    zeros = torch.zeros(face_idx.shape[0], 3)
    if len(pts) == 0:  # the masks hold nothing beyond the face (shell.MIN_FITTED): no shell
        log.info("shell: the training frames' head masks hold nothing beyond the face; no shell Gaussians")
        return face_idx, bary, canonical, zeros
    cond = neutral_condition(1, surface.shape.device)
    jaw = matrix_to_rotation_6d(axis_angle_to_matrix(torch.tensor([[0.3, 0.0, 0.0]])))
    cond[:, EXPRESSION_DIM:EXPRESSION_DIM + JAW_DIM] = jaw.to(cond)
    rigid = rigid_faces(neutral, surface.vertices(cond)[0].cpu(), faces)
    s_idx, s_bary, s_off = bind_to_mesh(pts, neutral, faces, rigid if rigid.any() else None)
    return (torch.cat([face_idx, s_idx]), torch.cat([bary, s_bary]), torch.cat([canonical, pts]),
            torch.cat([zeros, s_off]))


def mean_rotation(R: Tensor) -> Tensor:
    """The chordal L2 mean of rotations: R [N, 3, 3] -> [3, 3] (the rotation nearest their average)."""
    u, _, vh = torch.linalg.svd(R.mean(0))
    d = torch.sign(torch.det(u @ vh))
    return u @ torch.diag(torch.stack([torch.ones_like(d), torch.ones_like(d), d])) @ vh


def cameras(R: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """World-to-camera matrices [B, 4, 4] and camera centres [B, 3] from R [B, 3, 3], t [B, 3]."""
    centers = -(R.transpose(-1, -2) @ t.unsqueeze(-1)).squeeze(-1)
    return viewmat_from_rt(R, t), centers


def render_frames(model: GaussianAvatar, surface: FaceSurface, cond: Tensor, R: Tensor, t: Tensor, K: Tensor,
                  resolution: int, background: Tensor, renderer: str, amp: bool = False) -> tuple[Tensor, Tensor]:
    """:func:`render_frames_and_gaussians` without the Gaussians."""
    image, alpha, _ = render_frames_and_gaussians(model, surface, cond, R, t, K, resolution, background, renderer, amp)
    return image, alpha


def render_frames_and_gaussians(model: GaussianAvatar, surface: FaceSurface, cond: Tensor, R: Tensor, t: Tensor,
                                K: Tensor, resolution: int, background: Tensor, renderer: str, amp: bool = False
                                ) -> tuple[Tensor, Tensor, Gaussians]:
    """Render B frames of the avatar (face model, MLP, SH colours, rasteriser; all batched).

    Args:
        cond: [B, 120]; R: [B, 3, 3]; t: [B, 3]; K: [B, 3, 3] intrinsics at ``resolution``.
        background: [3] colour.  renderer: ``gsplat`` or ``reference``.

    Returns:
        image [B, H, W, 3], alpha [B, H, W], and the posed :class:`stages.gauss.model.Gaussians`.
    """
    g = model.pose(surface.vertices(cond), surface.faces, cond, autocast=amp, R=R)
    viewmats, centers = cameras(R, t)
    colors = model.colors(g, centers)
    render = render_gaussians_gsplat if renderer == "gsplat" else render_gaussians_reference
    image, alpha = render(g.means, g.quats, g.scales, g.opacities, colors, viewmats, K, resolution, resolution,
                          background, covars=g.covars)
    return image, alpha, g


RESUME_IGNORES = ("steps", "budget_images_per_frame", "budget_min_images", "budget_max_images", "workers", "log_every", "checkpoint_every", "frame_cache", "prefetch")
"""Settings that do not change what a step computes: a checkpoint resumes across changes of these
(so a finished run can also be extended with more steps)."""


def resume_digest(cfg: TrainConfig) -> str:
    """Digest of the settings a checkpoint must share with the run that resumes it."""
    return digest_of({k: v for k, v in asdict(cfg).items() if k not in RESUME_IGNORES})


def resume_holds(state: dict, cfg: TrainConfig) -> bool:
    """Whether a training checkpoint may be resumed with ``cfg``: its settings (less
    :data:`RESUME_IGNORES`) equal ``cfg``'s, fields added to the config since it was written counting
    at their defaults (:mod:`stages.config_match`)."""
    from stages.config_match import config_holds

    return config_holds(state.get("config"), str(state.get("config_digest", "")), cfg, ignore=RESUME_IGNORES)


def _checkpoint_dict(cfg: TrainConfig, model: GaussianAvatar, opt: torch.optim.Optimizer, step: int, images: int) -> dict:
    return {"format": ckpt.CHECKPOINT_FORMAT, "config": asdict(cfg), "config_digest": resume_digest(cfg), "step": step,
            "images": images, "model": model.state_dict(), "optimizer": opt.state_dict(), "rng": ckpt.rng_state()}


def avatar_dict(model: GaussianAvatar, surface: FaceSurface, cfg: TrainConfig, steps: int, images: int,
                extra: dict | None = None) -> dict:
    """The final avatar file's content (see docs/checkpoint-format.md)."""
    return {"format": ckpt.AVATAR_FORMAT, "avatar_config": asdict(model.config), "train_config": asdict(cfg),
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "shape": surface.shape.detach().cpu(), "num_vertices": int(surface.neutral().shape[0]),
            "num_faces": int(surface.faces.shape[0]), "steps": steps, "images": images, **(extra or {})}


def load_avatar(path: str | Path) -> tuple[GaussianAvatar, dict]:
    """Rebuild a :class:`GaussianAvatar` from an avatar file; returns (model on CPU, the file's dict)."""
    d = ckpt.load(path, ckpt.AVATAR_FORMAT)
    sd = d["state_dict"]
    model = GaussianAvatar(sd["face_idx"], sd["bary"], sd["canonical"], avatar_config_from_dict(d["avatar_config"]),
                           canonical_size=sd.get("canonical_size"), canonical_basis=sd.get("canonical_basis"),
                           frame_mask=sd.get("frame_mask"))
    model.load_state_dict(sd)  # files without anchor_offset (before the shell) load with zero offsets
    return model, d


def check_face_model(meta: dict, surface: FaceSurface, where: object) -> None:
    """BadInput unless ``surface`` is the face model the avatar in ``meta`` was trained on (by size)."""
    from stages.errors import bad_input

    nv, nf = int(surface.neutral().shape[0]), int(surface.faces.shape[0])
    if (meta.get("num_vertices"), meta.get("num_faces")) != (nv, nf):
        raise bad_input(where, f"the avatar was trained on a face model with {meta.get('num_vertices')} vertices and "
                        f"{meta.get('num_faces')} faces, this one has {nv} and {nf}",
                        "render with the same FLAME file (or the stand-in) used for training")


def _perceptual_imports():  # noqa: ANN202 - kept local: the term is optional
    from stages.gauss.perceptual import lpips_on
    from stages.nets.vgg import masked_lpips

    return lpips_on, masked_lpips


def shut_eye_repeats(seq: TrackedSequence, train_idx: list[int], repeat: int) -> list[int] | None:
    """[len(train_idx)] draws per epoch: ``repeat`` for the training frames with an eye shut (its
    eyelid parameter >= 0.5), 1 for the others; None (plain epochs) when ``repeat <= 1`` or no eye shuts."""
    if repeat <= 1:
        return None
    eyelids = split_condition(torch.from_numpy(seq.cond[train_idx]))[3]  # [n, 2]
    shut = (eyelids.amax(dim=1) >= 0.5).tolist()
    return [repeat if s else 1 for s in shut] if any(shut) else None


def train(cfg: TrainConfig, surface: FaceSurface, layout: DatasetLayout, workdir: str | Path, device: str = "cpu", *,
          on_step: Callable[[int], None] | None = None, on_checkpoint: Callable[[Path, int], None] | None = None,
          resume_from: Path | None = None, perceptual: torch.nn.Module | None = None) -> TrainResult:
    """Train an avatar on a dataset.

    Args:
        cfg: settings.  surface: the face model with the actor's identity.  layout: the dataset.
        workdir: where ``checkpoint.pt`` is written (atomically, every ``cfg.checkpoint_every`` steps
            and at the end); an existing one with the same settings (see :data:`RESUME_IGNORES`) and
            no more steps than ``cfg.steps`` is resumed.
        device: ``cpu`` or ``cuda``.
        on_step: called after each step with the number of steps done (progress).
        on_checkpoint: called with (path, step) after each checkpoint (e.g. to upload it).
        resume_from: a checkpoint to resume instead of ``workdir/checkpoint.pt``.
        perceptual: an :class:`stages.nets.vgg.LPIPS` on ``device`` to add FlashAvatar's LPIPS term
            (``cfg.lpips_weight`` inside neck and head from ``cfg.lpips_start`` of the steps), or None.

    Returns:
        :class:`TrainResult`.
    """
    from stages.phase_clock import PhaseClock

    clock = PhaseClock()
    w0, c0 = time.monotonic(), time.process_time()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    lpips_on, masked_lpips = _perceptual_imports()
    ck_path = workdir / "checkpoint.pt"
    renderer = choose_renderer(cfg.renderer, device)
    use_amp = cfg.amp and str(device).startswith("cuda")
    seq = TrackedSequence.load(layout)
    plan = plan_training(cfg, len(seq), seq.face_span())
    train_idx = plan.split.train
    cfg = dataclasses.replace(cfg, steps=plan.steps)
    log.info("held out %s", plan.split.rule)
    log.info("budget: %s", plan.budget_rule)
    bg = torch.tensor(background_rgb(cfg.background), device=device)
    if cfg.lpips_weight > 0 and perceptual is None:
        log.info("LPIPS term off: no LPIPS (VGG) weights asset is available; training uses the Huber terms only")

    clock.add("load", time.monotonic() - w0, time.process_time() - c0)
    frames = AvatarFrames(layout, seq, train_idx, cfg.resolution, background_rgb(cfg.background))
    repeats = shut_eye_repeats(seq, train_idx, cfg.shut_eye_repeat)
    # the frame cache's decoding processes are forked now and decode while the avatar is built, the
    # frames the first steps draw first (a fresh run's order; training starts on them, not on the whole cache)
    with clock.phase("cache_start"):
        order = first_use_order(StepBatchSampler(len(frames), cfg.batch_size, cfg.seed, 0, cfg.steps, repeats),
                                len(frames))
        started = start_cache(frames, frame_cache=cfg.frame_cache, cache_dir=workdir / "frame-cache",
                              workers=cfg.workers, order=order)
    # torch._dynamo (Adam's first use) and gsplat's CUDA extension load while the avatar is built
    # (a thread started after the fork above)
    start_warmup(device if renderer == "gsplat" else "cpu")
    try:
        with clock.phase("shell_masks"):
            sil = (shell_silhouettes(layout, seq, train_idx, cfg.shell_fit_frames) if shell_active(surface, cfg)
                   else None)
            if sil is not None:  # the shell's fit (its visual-hull votes) runs on the training device
                sil = sil.to(device)
        with clock.phase("build_avatar"):
            model = build_avatar(surface, cfg, sil)
        if sil is not None:
            log.info("shell fitted to %d training frames' head masks: %d Gaussians in all", len(sil.masks),
                     model.num_gaussians)
        if cfg.pose_condition:
            model.pose_ref.copy_(mean_rotation(torch.from_numpy(seq.R[train_idx]).double()).float())
        with clock.phase("to_device"):
            model = model.to(device)
            surface = surface.to(device)
        on_cuda = str(device).startswith("cuda")
        opt = torch.optim.Adam(model.param_groups(cfg.lr_scale, cfg.mlp_lr), eps=1e-15, fused=on_cuda or None)
        start, images = 0, 0
        src = resume_from if resume_from is not None else ck_path
        if src.is_file():
            state = ckpt.load(src, ckpt.CHECKPOINT_FORMAT)
            same_layout = tuple(state["model"].get("face_idx", torch.empty(0)).shape) == tuple(model.face_idx.shape)
            if resume_holds(state, cfg) and int(state["step"]) <= cfg.steps and same_layout:
                model.load_state_dict(state["model"])
                opt.load_state_dict(state["optimizer"])
                ckpt.set_rng_state(state["rng"])
                start, images = int(state["step"]), int(state["images"])
                log.info("resuming from %s at step %d", src, start)
            else:
                log.warning("%s was written with another config, for another avatar layout (Gaussian count) or is "
                            "past step %d; starting afresh", src, cfg.steps)

        binding = binding_terms(model, surface, cfg)
        if cfg.init_color_frames > 0 and start == 0:
            with clock.phase("colours"):
                seen = init_colors_from_frames(model, surface, frames, cfg.init_color_frames)
            log.info("starting colours from %d training frames (%d of %d Gaussians seen)", cfg.init_color_frames,
                     seen, model.num_gaussians)
    except BaseException:
        started.cancel()
        raise
    sampler = StepBatchSampler(len(frames), cfg.batch_size, cfg.seed, start, cfg.steps, repeats)
    with clock.phase("frame_cache"):  # what is left of the cache's decoding (none with decoding processes)
        batches, pipeline = training_batches(frames, sampler, device, frame_cache=cfg.frame_cache,
                                             cache_dir=workdir / "frame-cache", workers=cfg.workers,
                                             prefetch=cfg.prefetch, started=started)
    log.info("input: %s%s", pipeline.source, f" ({'built' if pipeline.cache_built else 'reused'} "
             f"{pipeline.cache_path} in {pipeline.cache_seconds:.2f} s)" if pipeline.source == "cache" else "")

    t0, c0 = time.monotonic(), time.process_time()
    step = start
    losses: list[float] = []
    last = math.nan
    base_lr = [g["lr"] for g in model.param_groups(cfg.lr_scale, cfg.mlp_lr)]  # not the resumed (decayed) ones
    for b in batches:  # on the device already, in the sampler's order
        f = lr_factor(cfg, step, cfg.steps)
        for g, lr in zip(opt.param_groups, base_lr):
            g["lr"] = lr * f
        gt = frames.ground_truth(b)
        mouth = b["mouth"].float() / 255.0
        image, alpha, g = render_frames_and_gaussians(model, surface, b["cond"], b["R"], b["t"], b["K"], cfg.resolution,
                                                      bg, renderer, use_amp)
        loss, parts = avatar_loss(image, gt, mouth, delta=cfg.huber_delta, mouth_weight=cfg.mouth_weight)
        if cfg.silhouette_weight > 0:
            head = (b["alpha"].float() / 255.0) * (b["neckhead"].float() / 255.0)
            loss = loss + cfg.silhouette_weight * silhouette_loss(alpha, head)
        if binding is not None:
            size, mask = binding
            # offsets against the head's mean offset (the avatar's common shift against the tracked mesh)
            rel = g.offsets - g.offsets[:, model.on_surface].mean(1, keepdim=True)
            l_pos, l_scale = binding_loss(rel, g.base_scales, size, mask, pos_threshold=cfg.binding_pos_threshold,
                                          scale_threshold=cfg.binding_scale_threshold)
            loss = loss + cfg.binding_pos_weight * l_pos + cfg.binding_scale_weight * l_scale
        if perceptual is not None and cfg.lpips_weight > 0 and lpips_on(step, cfg.steps, cfg.lpips_start):
            loss = loss + cfg.lpips_weight * masked_lpips(perceptual, image, gt, b["neckhead"].float() / 255.0,
                                                           amp=use_amp)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if step == start + 1:  # the first step: kernels compiled or loaded, caches warmed
            if on_cuda:
                torch.cuda.synchronize()
            clock.add("first_step", time.monotonic() - t0, time.process_time() - c0)
            log.info("set-up before the first step and the first step: %s", clock.line())
        images += gt.shape[0]
        if step % max(1, cfg.log_every) == 0 or step == cfg.steps:
            last = float(loss.detach())
            losses.append(last)
            el = time.monotonic() - t0
            log.info("step %d/%d loss %.5f (huber %.5f, mouth %.5f) %.1f images/s", step, cfg.steps, last,
                     float(parts["huber"]), float(parts["mouth"]), (step - start) * cfg.batch_size / max(el, 1e-9))
        if on_step is not None:
            on_step(step)
        if (cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or step == cfg.steps:
            ckpt.save_atomic(_checkpoint_dict(cfg, model, opt, step, images), ck_path)
            if on_checkpoint is not None:
                on_checkpoint(ck_path, step)
    if on_cuda:
        torch.cuda.synchronize()
    seconds = time.monotonic() - t0
    run_images = (step - start) * cfg.batch_size
    if math.isnan(last) and step > start:
        last = float(loss.detach())
    stop = (f"stopped at step {step} of {cfg.steps}: the budget ({plan.budget_rule}) was spent; learning rates "
            f"decayed to {cfg.lr_final_fraction:g}x over the last {cfg.lr_decay_fraction:.0%} of the steps")
    return TrainResult(model=model, steps=step, steps_run=step - start, images=run_images, seconds=seconds,
                       images_per_s=run_images / max(seconds, 1e-9), last_loss=last, resumed_from=start, losses=losses,
                       pipeline=pipeline, plan=plan, stop_reason=stop, setup=clock.report())


def binding_terms(model: GaussianAvatar, surface: FaceSurface, cfg: TrainConfig) -> tuple[Tensor, Tensor] | None:
    """(triangle sizes [N] on the neutral mesh, bool [N] Gaussians the binding regulariser applies to)
    on the model's device, or None when its weights are zero or no Gaussian is in the region. Shell
    Gaussians (anchor offsets) are never in it; neither are Gaussians on degenerate triangles."""
    if cfg.binding_pos_weight <= 0 and cfg.binding_scale_weight <= 0:
        return None
    from stages.gauss.model import MIN_TRIANGLE_SIZE

    dev = model.face_idx.device
    faces = surface.faces.to(dev)
    size = triangle_size(surface.neutral().to(dev), faces, model.face_idx)
    mask = (size > MIN_TRIANGLE_SIZE) & model.on_surface
    mask &= region_mask(surface, model.face_idx, cfg.binding_region, "binding_region").to(dev)
    if not bool(mask.any()):
        log.info("binding regulariser: no Gaussian in region %r; off", cfg.binding_region)
        return None
    log.info("binding regulariser on %d Gaussians (%s): position x%g above %g triangle sizes, scale x%g above %g",
             int(mask.sum()), cfg.binding_region, cfg.binding_pos_weight, cfg.binding_pos_threshold,
             cfg.binding_scale_weight, cfg.binding_scale_threshold)
    return size, mask


@torch.no_grad()
def init_colors_from_frames(model: GaussianAvatar, surface: FaceSurface, frames: AvatarFrames, count: int) -> int:
    """Set the model's colours (SH DC; higher bands stay 0) from ``count`` evenly spaced frames of
    ``frames`` (:func:`stages.gauss.color_init.initial_colors`); return how many Gaussians were seen."""
    from stages.gauss.color_init import initial_colors
    from stages.gauss.sh import rgb_to_sh0

    n = len(frames)
    picks = sorted({round(i * (n - 1) / max(1, count - 1)) for i in range(min(count, n))})
    b = torch.utils.data.default_collate([frames[j] for j in picks])
    dev = model.sh_dc.device
    b = {k: v.to(dev) for k, v in b.items()}
    points = model.base_points(surface.vertices(b["cond"]), surface.faces)
    inside = (b["alpha"].float() / 255.0) * (b["neckhead"].float() / 255.0)
    rgb, seen = initial_colors(points, b["R"], b["t"], b["K"], b["img"].float() / 255.0, inside)
    model.sh_dc.copy_(rgb_to_sh0(rgb).unsqueeze(1))
    return int(seen.sum())


def config_from_dict(d: dict) -> TrainConfig:
    """A :class:`TrainConfig` from a dict, ignoring unknown keys (older files)."""
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in d.items() if k in known})
