"""Stage ``track`` (fans out over shards): per-frame expression, jaw, eyes, eyelids and head pose
(as the camera's R, t) of every frame of a shard, all frames optimised together on the GPU.

The photometric level uses the calibration's appearance as it is (see
:mod:`stages.tracking.photometric`): the baked FLAME-texture albedo map when calibrate fitted in
texture space (no texture file is read here), else the per-vertex albedo.

Each shard is tracked with the actor's calibration plus ``overlap`` frames of each neighbour shard
(their landmarks and images are read too), so assemble can cross-fade the seams. Output
``track/<shard>.npz``::

    frames int64 [M]        frame numbers (the shard and its overlaps, consecutive)
    core bool [M]           frame belongs to this shard (not an overlap)
    filled bool [M]         landmarks failed; parameters interpolated from the neighbours
    error_px float32 [M]    mean landmark error, pixels (NaN where filled)
    exp [M,100] jaw [M,6] eyes [M,12] eyelids [M,2] rot [M,6] (6D of R)   float32
                            (eyelids: each eye's closure, the subject's left then right, 0 open
                            .. 1 shut; blinks and winks go there, not into exp: see
                            :mod:`stages.tracking.eyelids`)
    R [M,3,3] t [M,3]       OpenCV world-to-camera rotation and translation (metres)
    focal [2] pp [2]        the calibration's intrinsics (pixels)
    overlap int             the overlap used
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from stages.errors import bad_input
from stages.face.texture import uv_layout_problem
from stages.tracking.calibration import Calibration, personalised
from stages.tracking.face_assets import FACE_ASSETS, build_model, face_region, load_stage_face_model
from stages.tracking.fit import Shared
from stages.tracking.losses import LandmarkWeights
from stages.tracking.params import FrameParams
from stages.tracking.schedule import track_schedule
from stages.tracking.eyelids import lid_expression_basis, lid_index
from stages.tracking.sequence import Appearance, SequenceInputs, SequenceResult, track_sequence
from stages.tracking.stage_io import Landmarks, fetch_frames, fetch_landmarks

ASSETS = FACE_ASSETS
PROCESSES_PER_GPU = 4  # a shard is launch-bound: four shard processes overlap on one GPU
IMAGE_SIZE = 512

PRESETS = {"tiny": {"rigid_steps": 40, "landmark_steps": 120, "photometric_steps": 0, "overlap": 4},
           "demo": {"landmark_steps": 200}}  # + tiny's (config.PRESET_BASE)


@dataclass
class Config:
    """Attributes:
        overlap: frames of each neighbour shard tracked with this one (cross-faded by assemble).
        batch_size: most frames per optimiser batch (a longer shard is cut into overlapping batches).
        chunk_overlap: overlap of those batches, frames.
        rigid_steps, landmark_steps, photometric_steps: Adam steps per level (see
            :func:`stages.tracking.schedule.track_schedule`); 0 leaves a level out. The photometric
            level (the frames' colours at ``photo_size``) is off by default since 2026-12-07: on
            wojtek.mp4 the avatar's held-out PSNR is the same without it (26.69 dB both, three seeds),
            the head jitters less and track costs a ninth (docs/tracking.md); 80 was the default before
            (finished actors tracked with it stay finished, ``FORMER_DEFAULTS``).
        photo_size: resolution of the photometric term (pixels per side).
        refresh: steps between visibility passes of the rasteriser in the photometric term.
        landmark_batch_size: with the photometric level off (landmark-only steps), the most frames
            of one optimisation: consecutive shards are tracked together as one sequence (their
            frames plus the outer overlaps) up to this many frames (:func:`run_shard_group`), and
            a longer sequence is cut into batches of this size. 16384 holds a 10,000-frame video
            in one batch (a step costs about the same at any batch on a GPU: docs/performance.md);
            0 tracks each shard on its own in batches of ``batch_size``, as before 2026-12-07.
    """

    FORMER_DEFAULTS = {"photometric_steps": (80,)}  # before 2026-12-07 (stages.config_match)

    overlap: int = 8
    batch_size: int = 2048
    chunk_overlap: int = 16
    rigid_steps: int = 80
    landmark_steps: int = 390
    photometric_steps: int = 0
    photo_size: int = 128
    refresh: int = 8
    landmark_batch_size: int = 16384


def _neighbourhood(ctx, shard, overlap: int) -> Landmarks:  # noqa: ANN001
    """The shard's landmarks plus ``overlap`` frames from each neighbour shard."""
    shards = ctx.shards()
    parts = []
    before = [s for s in shards if s.index == shard.index - 1]
    after = [s for s in shards if s.index == shard.index + 1]
    if before and overlap > 0:
        lm = fetch_landmarks(ctx, before[0])
        parts.append(lm.select(slice(max(0, len(lm.frames) - overlap), None)))
    parts.append(fetch_landmarks(ctx, shard))
    if after and overlap > 0:
        parts.append(fetch_landmarks(ctx, after[0]).select(slice(0, overlap)))
    return Landmarks.cat(parts)


@dataclass
class _Setup:
    """What every shard of an actor shares: the calibration, the face model (``base``; ``model`` with
    the identity baked in) and the fixed shared parameters."""

    calib_path: Path
    calib: Calibration
    data: object  # FaceModelData
    base: torch.nn.Module
    model: torch.nn.Module
    shared: Shared


def _setup(ctx) -> _Setup:  # noqa: ANN001 - StageContext
    calib_path = ctx.fetch("calibration.npz", "calibrate")
    calib = Calibration.load(calib_path)
    data = load_stage_face_model(ctx)
    if calib.model_name and data.name != calib.model_name:
        raise bad_input(calib_path, f"was fitted with face model {calib.model_name!r}, but this run uses {data.name!r}",
                        "use the same FLAME assets for calibrate and track (or re-run calibrate with a new --actor)")
    device = torch.device(ctx.device)
    base = build_model(data, device)
    model = personalised(base, torch.as_tensor(calib.shape, device=device))
    shared = Shared(shape=torch.zeros(0, device=device), focal=torch.as_tensor(calib.focal, device=device).float(),
                    pp=torch.as_tensor(calib.pp, device=device).float())
    return _Setup(calib_path, calib, data, base, model, shared)


def _shard_landmarks(ctx, shard, overlap: int) -> Landmarks:  # noqa: ANN001
    """:func:`_neighbourhood`, refused (BadInput) when none of its frames has a face."""
    lm = _neighbourhood(ctx, shard, overlap)
    if not lm.ok.any():
        raise bad_input(ctx.key(f"{shard.name}.npz", "landmarks"), "no frame of this shard or its overlaps has a face",
                        "trim the video to the part where the face is visible and run again with a new --actor")
    return lm


def _progress_hook(progress, n: int, steps: int):  # noqa: ANN001, ANN202 - Progress, on_step callable
    """An ``on_step`` that advances ``progress`` to ``n`` frames over ``steps`` optimiser steps."""
    done = [0.0]
    per_step = n / max(1, steps)

    def on_step(level: str, step: int) -> None:
        done[0] += per_step
        whole = int(done[0]) - progress.done
        if whole > 0:
            progress.advance(min(whole, n - progress.done))

    return on_step


def _write_shard(ctx, shard, result, calib: Calibration, overlap: int) -> np.ndarray:  # noqa: ANN001
    """Write ``track/<shard>.npz`` from ``result`` (the shard's frames and overlaps); returns ``core``."""
    R = FrameParams.from_numpy(result.params).R.numpy()
    core = (result.frames >= shard.start) & (result.frames < shard.stop)
    with tempfile.TemporaryDirectory(dir=ctx.scratch) as tmp:
        path = Path(tmp) / f"{shard.name}.npz"
        with open(path, "wb") as f:
            np.savez(f, frames=result.frames.astype(np.int64), core=core, filled=result.filled,
                     error_px=result.error_px, R=R.astype(np.float32), focal=calib.focal, pp=calib.pp,
                     overlap=np.int64(overlap), **result.params)
        ctx.put_file(f"{shard.name}.npz", path)
    return core


def _shard_stats(ctx, result, core: np.ndarray, steps: int, use_photo: bool, mode, seconds: float) -> None:  # noqa: ANN001
    err = result.error_px[core & ~result.filled]
    ctx.stats.update({"landmark_error_px_median": float(np.median(err)) if err.size else None,
                      "filled_frames": int(result.filled[core].sum()), "steps": steps,
                      "photometric": use_photo, "appearance": mode if use_photo else None,
                      "seconds_fit": round(seconds, 2)})


def run_shard(ctx, shard) -> None:  # noqa: ANN001 - StageContext, Shard
    cfg: Config = ctx.config
    t0 = time.monotonic()
    setup = _setup(ctx)
    calib_path, calib, data, base, model, shared = (setup.calib_path, setup.calib, setup.data, setup.base,
                                                     setup.model, setup.shared)
    device = shared.focal.device
    lm = _shard_landmarks(ctx, shard, cfg.overlap)
    mp_index = base.mp_index.cpu().numpy()
    mode = calib.appearance_mode
    use_photo = cfg.photometric_steps > 0 and mode is not None
    if use_photo and mode == "texture":
        problem = uv_layout_problem(len(calib.tex_vt), np.shape(calib.tex_ft), int(np.max(calib.tex_ft)),
                                    np.shape(data.faces))
        if problem:
            raise bad_input(calib_path, f"its texture {problem}", "re-run calibrate with the same FLAME assets")
    images = fetch_frames(ctx, ctx.shards(), lm.frames.tolist(), cfg.photo_size) if use_photo else None
    inputs = SequenceInputs(frames=lm.frames, targets=lm.points[:, mp_index, :2], ok=lm.ok, images=images)
    appearance = None
    if use_photo:
        tex = {"tex_map": calib.tex_map, "vt": calib.tex_vt, "ft": calib.tex_ft} if mode == "texture" else {}
        appearance = Appearance(calib.albedo, calib.sh, face_region(data), **tex)
    schedule = track_schedule(cfg.rigid_steps, cfg.landmark_steps, cfg.photometric_steps if use_photo else 0)
    n = len(shard)
    ctx.progress.set_total(n)
    # landmark-only (the default): the landmark batch size, so a shard run alone matches its group
    batch_size = cfg.batch_size if use_photo or cfg.landmark_batch_size <= 0 else cfg.landmark_batch_size
    on_step = _progress_hook(ctx.progress, n, schedule.total_steps * max(1, -(-len(lm.frames) // batch_size)))
    result = track_sequence(model, shared, inputs, LandmarkWeights().per_point()[mp_index].to(device), schedule,
                            batch_size=batch_size, chunk_overlap=cfg.chunk_overlap, appearance=appearance,
                            image_size=IMAGE_SIZE, refresh=cfg.refresh, on_step=on_step, lids=lid_index(mp_index),
                            lid_basis=lid_expression_basis(model))
    core = _write_shard(ctx, shard, result, calib, cfg.overlap)
    if ctx.progress.done < n:
        ctx.progress.advance(n - ctx.progress.done)
    _shard_stats(ctx, result, core, schedule.total_steps, use_photo, mode, time.monotonic() - t0)
    ctx.count_frames(n)


def shard_group_frames(config: Config) -> int:
    """The most frames (shards' own, overlaps excluded) one :func:`run_shard_group` call takes: the
    landmark batch less the two outer overlaps, so that a group is one batch; 0 (one shard a call)
    with the photometric level on (its images of every frame are held at once) or
    ``landmark_batch_size`` 0."""
    if config.photometric_steps > 0 or config.landmark_batch_size <= 0:
        return 0
    return max(1, config.landmark_batch_size - 2 * config.overlap)


def run_shard_group(items) -> None:  # noqa: ANN001 - list of (StageContext, Shard)
    """Track consecutive shards ``items`` (``[(ctx, shard), ...]``, in order, one context per shard)
    as one sequence: the union of their neighbourhoods (the first shard's start less ``overlap``
    to the last one's stop plus ``overlap``), landmark terms only, in batches of up to
    ``landmark_batch_size`` frames. Each shard's ``track/<shard>.npz`` is then cut from the result:
    its own frames and overlaps, the same keys and meaning as :func:`run_shard` writes; each
    context reads (and records) what that shard alone would have read.

    With the photometric level on (the runner does not group then), each shard is tracked alone."""
    ctx0 = items[0][0]
    cfg: Config = ctx0.config
    t0 = time.monotonic()
    setup = _setup(ctx0)
    for ctx, _ in items[1:]:  # every shard's manifest records the calibration it used
        ctx.fetch("calibration.npz", "calibrate")
    if cfg.photometric_steps > 0 and setup.calib.appearance_mode is not None:
        for ctx, shard in items:
            run_shard(ctx, shard)
        return
    hoods = [_shard_landmarks(ctx, shard, cfg.overlap) for ctx, shard in items]
    union = Landmarks.cat(hoods)
    frames, first = np.unique(union.frames, return_index=True)
    union = union.select(first)
    if not np.array_equal(frames, np.arange(frames[0], frames[-1] + 1)):
        raise ValueError(f"shards {items[0][1].name}..{items[-1][1].name} are not consecutive")
    mp_index = setup.base.mp_index.cpu().numpy()
    device = setup.shared.focal.device
    inputs = SequenceInputs(frames=union.frames, targets=union.points[:, mp_index, :2], ok=union.ok)
    schedule = track_schedule(cfg.rigid_steps, cfg.landmark_steps, 0)
    batch = max(1, cfg.landmark_batch_size)
    n = sum(len(shard) for _, shard in items)
    progress = ctx0.progress
    progress.set_total(n)
    on_step = _progress_hook(progress, n, schedule.total_steps * max(1, -(-len(union.frames) // batch)))
    result = track_sequence(setup.model, setup.shared, inputs, LandmarkWeights().per_point()[mp_index].to(device),
                            schedule, batch_size=batch, chunk_overlap=cfg.chunk_overlap, image_size=IMAGE_SIZE,
                            on_step=on_step, lids=lid_index(mp_index), lid_basis=lid_expression_basis(setup.model),
                            reference_frames=round(np.mean([len(h.frames) for h in hoods])))
    seconds = time.monotonic() - t0
    for (ctx, shard), hood in zip(items, hoods):
        rows = np.isin(result.frames, hood.frames)
        part = SequenceResult(frames=result.frames[rows], params={k: v[rows] for k, v in result.params.items()},
                              filled=result.filled[rows], error_px=result.error_px[rows])
        core = _write_shard(ctx, shard, part, setup.calib, cfg.overlap)
        _shard_stats(ctx, part, core, schedule.total_steps, False, None, seconds)
        ctx.stats["group_frames"] = int(len(result.frames))
        ctx.count_frames(len(shard))
    if progress.done < n:
        progress.advance(n - progress.done)
