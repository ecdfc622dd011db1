"""Stage ``calibrate``: identity (face-model shape), focal length, principal point, appearance and
lighting of one actor, fitted jointly over automatically chosen keyframes.

Appearance: in FLAME texture space (140 coefficients, the ``.frame``'s ``flame.tex``) when the
actor has a ``flame-texture`` asset whose UV layout fits the face model (from the npz's
``vt``/``ft`` or the model's own); otherwise a per-vertex albedo estimated from the keyframes. The
report's ``appearance`` says which (and ``appearance_note`` why not texture, when a texture asset
was given but could not be used).

Reads ``landmarks/<shard>.npz`` of every shard and the keyframes' images from ``ingest``; writes
``calibrate/calibration.npz`` (see :mod:`stages.tracking.calibration`) and ``calibrate/report.json``.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from stages.errors import bad_input
from stages.tracking.calibration import CalibrationInputs, calibrate
from stages.tracking.identity import calibrate_with_identity, given_identity
from stages.tracking.face_assets import FACE_ASSETS, build_model, face_region, load_stage_face_model
from stages.tracking.keyframes import score_frames, select_keyframes
from stages.tracking.losses import LandmarkWeights
from stages.tracking.schedule import calibrate_schedule
from stages.tracking.stage_io import fetch_all_landmarks, fetch_frames

ASSETS = FACE_ASSETS + ("identity", "mica")
IMAGE_SIZE = 512

PRESETS = {"tiny": {"keyframes": 4, "rigid_steps": 40, "identity_steps": 120, "appearance_steps": 0,
                    "refine_iterations": 100, "solver": "adam"},
           "demo": {"keyframes": 8}}  # + tiny's (config.PRESET_BASE)


@dataclass
class Config:
    """Attributes:
        keyframes: how many keyframes (spread over the head poses and the time of the video, see
            :func:`stages.tracking.keyframes.select_keyframes`; fewer if the video is short).
        solver: ``lm`` (default): identity, focal length and the keyframes' poses and expressions by
            Levenberg-Marquardt (:mod:`stages.tracking.lm`, at most ``lm_iterations``) straight from
            the initial poses: seconds, and a lower objective and identity error than the Adam
            schedule on synthetic clips (bench/calibrate_bench.py); ``adam``: the Adam levels
            (``rigid_steps``, ``identity_steps``) then the L-BFGS refinement (``refine_iterations``).
            A given identity (``identity`` or ``mica`` asset) always takes the ``adam`` route, and
            so do the tiny and demo presets: with 4-8 keyframes the converged objective fits the
            landmarks' noise (8 keyframes, synthetic: LM 0.60 mm, Adam 0.41 mm identity error).
        rigid_steps, identity_steps, appearance_steps: Adam steps of the three levels (see
            :func:`stages.tracking.schedule.calibrate_schedule`); 0 leaves a level out. With
            ``solver="lm"`` only ``appearance_steps`` is used. The appearance level (albedo or FLAME
            texture and lighting) only feeds track's photometric level, off by default with it since
            2026-12-07 (150 before; finished actors keep theirs, ``FORMER_DEFAULTS``); a ``.frame``'s
            ``flame.tex`` is then zeros.
        refine_iterations: L-BFGS iterations of the float64 identity refinement after the Adam
            levels (see :mod:`stages.tracking.refine`); 0 leaves it out (``adam`` route only).
        lm_iterations: most Levenberg-Marquardt iterations (``lm`` route; it stops earlier once
            converged).
        initial_focal: starting focal length, pixels of the 512x512 crop (4.5 x 512, about
            metrical-tracker's cameras).
        photo_size: resolution of the photometric (appearance) fit.
        texture_size: texels per side the FLAME texture space is resampled to (texture mode).
        tex_prior: weight of ``sum(tex**2)`` relative to the photometric L1 (texture mode; about
            metrical-tracker's ratio of texture regulariser to photometric weight).
        identity_mode, identity_prior: how a given identity (``identity`` asset, or computed by
            MICA from a ``mica`` asset) is used: ``fixed`` or ``prior`` with that weight (see
            :mod:`stages.tracking.identity`).
    """

    FORMER_DEFAULTS = {"appearance_steps": (150,)}  # before 2026-12-07 (stages.config_match)

    keyframes: int = 32
    solver: str = "lm"
    lm_iterations: int = 40
    rigid_steps: int = 150
    identity_steps: int = 500
    appearance_steps: int = 0
    refine_iterations: int = 1000
    initial_focal: float = 2304.0
    photo_size: int = 128
    texture_size: int = 256
    tex_prior: float = 1e-4
    identity_mode: str = "prior"
    identity_prior: float = 1e-6


def load_stage_texture(ctx, data, size: int):  # noqa: ANN001, ANN201 - StageContext, FaceModelData
    """``(FlameTexture or None, note)``: the actor's ``flame-texture`` asset on the model's UV layout,
    or None with the reason (no asset; no UV layout; a layout for another mesh)."""
    from stages.face.texture import N_COMPONENTS, FlameTexture

    path = ctx.asset("flame-texture")
    if path is None:
        return None, ""
    texture = FlameTexture.from_file(path, N_COMPONENTS, size, vt=data.vt, ft=data.ft)
    problem = texture.layout_problem(np.asarray(data.faces))
    if problem:
        fix = " (add the FLAME model it belongs to)" if texture.has_uv else ""
        return None, f"the flame-texture asset {problem}{fix}"
    return texture, ""


WARM_UP_FRAMES = 8


def warm_up(config: Config, device: str) -> None:
    """Load what calibrate's solve uses on ``device`` (cuBLAS, cuSOLVER's Cholesky, the float64 and
    Jacobian kernels of the Levenberg-Marquardt solve) by solving a tiny synthetic problem: the
    stand-in face model's landmarks in 8 frames of the synthetic-video generator, 2 iterations. No
    output. The local run calls it beside the CPU stages (:mod:`stages.runner.warm_up`); a process
    then pays the libraries' first use there instead of in this stage (6.1-7.7 s against 1.2 s later
    in the same process on the H100)."""
    from stages.face.camera import project
    from stages.face.model import load_face_model
    from stages.face.synth import SynthSpec, generate_params

    dev = torch.device(device)
    model = build_model(load_face_model(None), dev)
    p = generate_params(model, SynthSpec(n_frames=WARM_UP_FRAMES, seed=0))
    with torch.no_grad():
        out = model(**{k: torch.as_tensor(p[k], device=dev) for k in ("shape", "expression", "jaw", "eyes", "eyelids")})
        K, R, t = (torch.as_tensor(p[k], device=dev) for k in ("K", "R", "t"))
        pix, _ = project(out.landmarks_mp, K, R, t)
    point_w = LandmarkWeights().per_point()[model.mp_index.cpu()].to(dev)
    inputs = CalibrationInputs(targets=pix[..., :2].contiguous(), point_w=point_w, frames=np.arange(WARM_UP_FRAMES))
    calibrate(model, inputs, image_size=IMAGE_SIZE, initial_focal=config.initial_focal,
              schedule=calibrate_schedule(0, 0, 0), lm_iterations=2, refine_iterations=0)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def run(ctx) -> None:  # noqa: ANN001 - StageContext
    cfg: Config = ctx.config
    t0 = time.monotonic()
    shards = ctx.shards()
    lm = fetch_all_landmarks(ctx, shards)
    if not lm.ok.any():
        raise bad_input(ctx.key("", "landmarks"), "no frame has a detected face",
                        "record the video with the face visible and well lit, then run again with a new --actor")
    picks = select_keyframes(lm.points[..., :2], lm.ok, lm.confidence, cfg.keyframes)
    data = load_stage_face_model(ctx)
    device = torch.device(ctx.device)
    model = build_model(data, device)
    mp_index = model.mp_index.cpu().numpy()
    targets = torch.as_tensor(lm.points[picks][:, mp_index, :2], device=device)
    point_w = LandmarkWeights().per_point()[mp_index].to(device)
    images = texture = None
    note = ""
    if cfg.appearance_steps > 0:
        images = torch.as_tensor(fetch_frames(ctx, shards, lm.frames[picks].tolist(), cfg.photo_size), device=device)
        texture, note = load_stage_texture(ctx, data, cfg.texture_size)
        texture = texture.to(device) if texture is not None else None
    if cfg.solver not in ("lm", "adam"):
        raise bad_input("calibrate config", f"solver {cfg.solver!r} is unknown", "use lm or adam")
    identity, identity_source = given_identity(ctx, model.n_shape, lm, picks, shards, device)
    use_lm = cfg.solver == "lm" and identity is None and cfg.lm_iterations > 0
    if use_lm:
        schedule = calibrate_schedule(0, 0, cfg.appearance_steps)
        lm_iterations, refine_iterations = cfg.lm_iterations, 0
    else:
        schedule = calibrate_schedule(cfg.rigid_steps, cfg.identity_steps, cfg.appearance_steps)
        lm_iterations, refine_iterations = 0, cfg.refine_iterations
    ctx.progress.set_total(schedule.total_steps + lm_iterations)
    inputs = CalibrationInputs(targets=targets, point_w=point_w, frames=lm.frames[picks], images=images,
                               face_region=torch.as_tensor(face_region(data), device=device))
    kw = dict(image_size=IMAGE_SIZE, initial_focal=cfg.initial_focal, schedule=schedule, model_name=data.name,
              refine_iterations=refine_iterations, texture=texture, tex_prior=cfg.tex_prior,
              on_step=lambda level, step: ctx.progress.advance(1))
    if identity is None:
        calib = calibrate(model, inputs, lm_iterations=lm_iterations, **kw)
    else:
        calib = calibrate_with_identity(model, inputs, identity, mode=cfg.identity_mode, prior=cfg.identity_prior, **kw)
    if not np.isfinite(calib.shape).all() or not np.isfinite(calib.focal).all():
        raise FloatingPointError("calibration diverged (non-finite identity or focal length)")
    with tempfile.TemporaryDirectory(dir=ctx.scratch) as tmp:
        path = Path(tmp) / "calibration.npz"
        calib.save(path)
        ctx.put_file("calibration.npz", path)
    scores = score_frames(lm.points[picks], lm.ok[picks], lm.confidence[picks])
    report = {
        "model": data.name, "frames": int(len(lm.frames)), "frames_with_landmarks": int(lm.ok.sum()),
        "keyframes": lm.frames[picks].tolist(), "keyframe_yaw": np.round(scores.yaw, 3).tolist(),
        "focal_px": calib.focal.tolist(), "principal_point_px": calib.pp.tolist(),
        "landmark_error_px": {"per_keyframe": np.round(calib.error_px, 3).tolist(),
                              "median": float(np.median(calib.error_px))},
        "appearance": calib.appearance_mode, **({"appearance_note": note} if note else {}),
        "identity": identity_source or "fitted", **({"identity_mode": cfg.identity_mode} if identity_source else {}),
        "solver": "lm" if use_lm else "adam", "steps": schedule.total_steps, "refine": calib.refine,
        **({"lm": calib.lm} if calib.lm else {}), "parts_seconds": calib.seconds,
        "seconds": round(time.monotonic() - t0, 2), "device": str(device),
    }
    ctx.put_json("report.json", report)
    if ctx.progress.done < ctx.progress.total:  # the LM solve stopped early (converged)
        ctx.progress.advance(ctx.progress.total - ctx.progress.done)
    ctx.stats.update({"keyframes": len(picks), "landmark_error_px": report["landmark_error_px"]["median"]})
    ctx.count_frames(len(picks))
