"""Track a contiguous run of frames (a shard plus its overlaps) with a fixed calibration.

The frames go to the optimiser in batches of up to ``batch_size`` (all of them at once when they
fit); consecutive batches overlap by ``chunk_overlap`` frames and are cross-faded. Frames whose
landmarks failed take no landmark term, and afterwards get parameters interpolated from their
neighbours (flagged ``filled``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from stages.face.landmark_model import landmark_model
from stages.tracking import fit as fitting
from stages.tracking.eyelids import LidIndex, eye_closure, eye_opening
from stages.tracking.losses import landmark_error_px
from stages.tracking.params import FrameParams, project
from stages.tracking.schedule import LossWeights, Schedule
from stages.tracking.smoothing import fill_missing, join_segments


@dataclass
class SequenceInputs:
    """Attributes:
        frames: int [N] consecutive frame numbers.
        targets: float [N, L, 2] landmark pixels in the model's landmark order (NaN where failed).
        ok: bool [N] landmarks found.
        images: uint8 [N, S, S, 3] frames at the photometric resolution, or None (no photometric term).
    """

    frames: np.ndarray
    targets: np.ndarray
    ok: np.ndarray
    images: np.ndarray | None = None


@dataclass
class Appearance:
    """What the photometric term needs besides the frames, in one of two modes (see
    :mod:`stages.tracking.photometric`).

    Attributes:
        albedo: [V, 3] per-vertex albedo 0..1 (per-vertex mode), or None in the texture mode.
        sh: [9, 3] SH lighting (camera space).
        face_region: bool [F] triangles of the face region.
        tex_map: [H, W, 3] albedo map 0..1 in UV space (row 0 = v = 1): the FLAME-texture mode
            (the calibration's baked ``tex_map``), with ``vt`` [T, 2] and ``ft`` int [F, 3].
    """

    albedo: np.ndarray | None
    sh: np.ndarray
    face_region: np.ndarray
    tex_map: np.ndarray | None = None
    vt: np.ndarray | None = None
    ft: np.ndarray | None = None

    @property
    def mode(self) -> str:
        """``"texture"`` or ``"vertex"``."""
        return "texture" if self.tex_map is not None else "vertex"


@dataclass
class SequenceResult:
    """Attributes:
        frames: int [N]. params: ``{name: float32 [N, ...]}`` (see :class:`FrameParams`).
        filled: bool [N] parameters interpolated from neighbours (landmarks failed).
        error_px: float [N] mean landmark error, pixels (NaN where filled).
    """

    frames: np.ndarray
    params: dict[str, np.ndarray]
    filled: np.ndarray
    error_px: np.ndarray


def chunk_bounds(n: int, batch_size: int, overlap: int) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` covering ``0..n`` with chunks of at most ``batch_size`` rows that
    overlap by ``overlap`` rows (one chunk when ``n <= batch_size``)."""
    if n <= batch_size:
        return [(0, n)]
    overlap = min(overlap, batch_size // 2)
    step = batch_size - overlap
    bounds, start = [], 0
    while True:
        stop = min(start + batch_size, n)
        bounds.append((start, stop))
        if stop == n:
            return bounds
        start += step


def track_sequence(model: nn.Module, shared: fitting.Shared, inputs: SequenceInputs, point_w: torch.Tensor,
                   schedule: Schedule, weights: LossWeights | None = None, *, batch_size: int = 2048,
                   chunk_overlap: int = 16, appearance: Appearance | None = None, image_size: int = 512,
                   refresh: int = 8, on_step=None, lids: LidIndex | None = None,
                   lid_basis: torch.Tensor | None = None, reference_frames: int | None = None) -> SequenceResult:
    """Fit every frame of ``inputs`` (see the module docstring).

    Args:
        model: face model on the target device; with the identity baked in (see
            :func:`stages.tracking.calibration.personalised`) pass ``shared.shape`` of width 0.
        shared: identity, focal, principal point (held fixed).
        point_w: [L] landmark weights on the model's device.
        appearance: albedo (per-vertex or a UV map), lighting and face region for the photometric
            term (with ``inputs.images``).
        lids: the eyelid rows of the landmark list (:func:`stages.tracking.eyelids.lid_index`) for
            the per-eye opening term; ``None``: the landmark term alone moves the lids.
        lid_basis: [2, E] (:func:`stages.tracking.eyelids.lid_expression_basis` of ``model``) for
            the term that keeps the lids' closing out of the expression; ``None``: no such term.
        reference_frames: give each frame of a batch the gradients it would have in a batch of this
            many frames (:func:`stages.tracking.fit.fit`'s ``loss_scale``: batch frames / this).
            The loss terms are means over frames, so without it a frame's gradient shrinks as
            ``1 / batch``, and near Adam's ``eps`` so do its steps: at 10,000 frames, measured as a
            50x larger ``eps`` at 200 frames, the median landmark error was 0.173 against 0.135 px
            (clean landmarks) and 1.261 against 1.231 px (1 px noise). Grouped shards pass their
            mean neighbourhood (a 500-frame shard's 516) to take the steps each shard took alone.
            ``None``: no scaling.

    Raises:
        ValueError: when no frame has landmarks.
    """
    dev = point_w.device
    ok = np.asarray(inputs.ok, dtype=bool) & np.isfinite(inputs.targets).all(axis=(1, 2))
    if not ok.any():
        raise ValueError("no frame of the sequence has landmarks")
    n = len(inputs.frames)
    targets = fill_missing(inputs.targets, ok).astype(np.float32)
    closure = None
    if lids is not None:
        opening = eye_opening(torch.as_tensor(targets, dtype=torch.float64), lids).numpy()
        opening[~ok] = np.nan
        closure = np.nan_to_num(eye_closure(opening), nan=0.0).astype(np.float32)
    photo = None
    if appearance is not None and inputs.images is not None:
        from stages.tracking.photometric import Photometric, UVAlbedo

        faces = model.faces
        if appearance.mode == "texture":
            albedo = UVAlbedo(torch.as_tensor(appearance.vt, device=dev), torch.as_tensor(appearance.ft, device=dev),
                              albedo_map=torch.as_tensor(appearance.tex_map, device=dev).float().permute(2, 0, 1))
        else:
            albedo = torch.as_tensor(appearance.albedo, device=dev)
        photo = Photometric(torch.as_tensor(inputs.images, device=dev), faces,
                            torch.as_tensor(appearance.face_region, device=dev), albedo,
                            torch.as_tensor(appearance.sh, device=dev), image_size=image_size, refresh=refresh)
    segments = []
    for start, stop in chunk_bounds(n, batch_size, chunk_overlap):
        tg = torch.as_tensor(targets[start:stop], device=dev)
        m = stop - start
        problem = fitting.Problem(targets=tg, point_w=point_w,
                                  frame_w=torch.as_tensor(ok[start:stop], dtype=torch.float32, device=dev),
                                  link=torch.ones(max(m - 1, 0), device=dev), image_size=image_size,
                                  frames=torch.arange(start, stop, device=dev),
                                  lids=lids.to(dev) if lids is not None else None,
                                  lid_basis=lid_basis.to(dev) if lid_basis is not None else None,
                                  lid_closure=torch.as_tensor(closure[start:stop], device=dev)
                                  if closure is not None else None)
        init = fitting.initial_pose(model, shared.shape, tg, point_w, shared.focal, shared.pp)
        res = fitting.fit(model, problem, init, shared, schedule, weights, photo=photo, on_step=on_step,
                          loss_scale=m / reference_frames if reference_frames else 1.0)
        segments.append((np.asarray(inputs.frames[start:stop]), res.params.to_numpy()))
    frames, params = join_segments(segments, ramp=chunk_overlap)
    filled = ~ok
    if filled.any():
        params = {k: fill_missing(v, ok).astype(np.float32) for k, v in params.items()}
    params = FrameParams.from_numpy(params).to_numpy()  # re-orthonormalise blended rotations
    err = frame_errors(model, shared, params, targets, dev)
    err[filled] = np.nan
    return SequenceResult(frames=frames, params=params, filled=filled, error_px=err)


def frame_errors(model: nn.Module, shared: fitting.Shared, params: dict[str, np.ndarray], targets: np.ndarray,
                 device: torch.device | str, batch: int = 4096) -> np.ndarray:
    """[N] mean landmark error in pixels of parameters against targets [N, L, 2]."""
    out = []
    model = landmark_model(model)
    with torch.no_grad():
        for s in range(0, len(targets), batch):
            p = FrameParams.from_numpy({k: v[s:s + batch] for k, v in params.items()}, device)
            lm = fitting.run_model(model, shared.shape, p).landmarks_mp
            pix, _ = project(lm, p.R, p.t, shared.focal, shared.pp)
            out.append(landmark_error_px(pix, torch.as_tensor(targets[s:s + batch], device=device)).cpu().numpy())
    return np.concatenate(out).astype(np.float32)
