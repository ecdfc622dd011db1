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
from stages.tracking.sequence import Appearance, SequenceInputs, track_sequence
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


def run_shard(ctx, shard) -> None:  # noqa: ANN001 - StageContext, Shard
    cfg: Config = ctx.config
    t0 = time.monotonic()
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
    lm = _neighbourhood(ctx, shard, cfg.overlap)
    if not lm.ok.any():
        raise bad_input(ctx.key(f"{shard.name}.npz", "landmarks"), "no frame of this shard or its overlaps has a face",
                        "trim the video to the part where the face is visible and run again with a new --actor")
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
    done = [0.0]
    per_step = n / max(1, schedule.total_steps * max(1, -(-len(lm.frames) // cfg.batch_size)))

    def on_step(level: str, step: int) -> None:
        done[0] += per_step
        whole = int(done[0]) - ctx.progress.done
        if whole > 0:
            ctx.progress.advance(min(whole, n - ctx.progress.done))

    result = track_sequence(model, shared, inputs, LandmarkWeights().per_point()[mp_index].to(device), schedule,
                            batch_size=cfg.batch_size, chunk_overlap=cfg.chunk_overlap, appearance=appearance,
                            image_size=IMAGE_SIZE, refresh=cfg.refresh, on_step=on_step, lids=lid_index(mp_index),
                            lid_basis=lid_expression_basis(model))
    R = FrameParams.from_numpy(result.params).R.numpy()
    core = (result.frames >= shard.start) & (result.frames < shard.stop)
    with tempfile.TemporaryDirectory(dir=ctx.scratch) as tmp:
        path = Path(tmp) / f"{shard.name}.npz"
        with open(path, "wb") as f:
            np.savez(f, frames=result.frames.astype(np.int64), core=core, filled=result.filled,
                     error_px=result.error_px, R=R.astype(np.float32), focal=calib.focal, pp=calib.pp,
                     overlap=np.int64(cfg.overlap), **result.params)
        ctx.put_file(f"{shard.name}.npz", path)
    if ctx.progress.done < n:
        ctx.progress.advance(n - ctx.progress.done)
    err = result.error_px[core & ~result.filled]
    ctx.stats.update({"landmark_error_px_median": float(np.median(err)) if err.size else None,
                      "filled_frames": int(result.filled[core].sum()), "steps": schedule.total_steps,
                      "photometric": use_photo, "appearance": mode if use_photo else None,
                      "seconds_fit": round(time.monotonic() - t0, 2)})
    ctx.count_frames(n)
