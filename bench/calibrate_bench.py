"""Where calibration's time goes, and what cutting it costs in identity error (prints JSON lines).

    python bench/calibrate_bench.py [--frames 400] [--seeds 2,3] [--configs default,short]
                                    [--noise 0.5] [--threads 1]

A synthetic clip per seed (the stand-in face model, :mod:`stages.face.synth` parameters, exact
landmarks plus ``--noise`` pixels of Gaussian noise), keyframes chosen automatically, then
:func:`stages.tracking.calibration.calibrate` with each named configuration, on the GPU when torch
sees one, else on the CPU. Per run: seconds of each part (Adam geometry levels, L-BFGS
refinement), the refinement's iterations, and the identity error (mm, mean distance of the neutral
heads after one similarity alignment) against the clip's true identity. No images: the appearance
level (albedo and SH, which do not touch the identity) is timed by the track bench.

Configurations are ``keyframes/rigid/identity/refine`` (keyframes, Adam steps of the rigid and
identity levels, most L-BFGS iterations) or ``lm:keyframes/iterations`` (the Levenberg-Marquardt
solve of :mod:`stages.tracking.lm`); ``default`` is the calibrate stage's defaults (``lm:32/40``),
``adam`` the previous defaults (32/150/500/1000), ``short`` a cheaper Adam schedule (16/60/200/150)
that measurably raises the identity error. ``--frames`` takes a list (e.g. ``250,10000``: a short
clip and the 10k-frame benchmark's length; only keyframe choice depends on it, and is timed too).

``--appearance 150`` adds the appearance level as the stage runs it (the keyframes rendered by
:mod:`stages.face.synth` at ``--photo-size``; rendering is not timed): the stage's whole solver.

One GPU command for the record (short clip and 10k frames, old and new solver, two seeds)::

    python bench/calibrate_bench.py --frames 250,10000 --seeds 2,3 --configs default,adam

Measured on the dev CPU (1 thread, 300 frames, 0.5 px noise, seed 2, a loaded 2-core machine):
``adam`` 15.3 s, identity error 0.457 mm (the refinement refused after 95 iterations);
``default`` (LM, 5-8 iterations) 0.313 mm.
Measured on the dev CPU (1 thread, 300 frames, seed 2): the refinement ran all 1000 iterations and
was then refused on both noise-free and 0.5 px landmarks; it now gives up after about 100 iterations
on noisy landmarks (identity error unchanged, 0.457 mm), and the short schedule gives 1.42 mm.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stages.calibrate import Config as CalibrateConfig  # noqa: E402
from stages.face.camera import project  # noqa: E402
from stages.face.flame import FLAME  # noqa: E402
from stages.face.model import load_face_model  # noqa: E402
from stages.face.synth import SynthSpec, generate_params  # noqa: E402
from stages.tracking.calibration import CalibrationInputs, calibrate  # noqa: E402
from stages.tracking.face_assets import face_region  # noqa: E402
from stages.tracking.keyframes import select_keyframes  # noqa: E402
from stages.tracking.losses import LandmarkWeights  # noqa: E402
from stages.tracking.schedule import calibrate_schedule  # noqa: E402
from track_bench import umeyama_error  # noqa: E402  (bench/ is this script's folder)

_D = CalibrateConfig()
NAMED = {"default": f"lm:{_D.keyframes}/{_D.lm_iterations}",
         "adam": f"{_D.keyframes}/{_D.rigid_steps}/{_D.identity_steps}/{_D.refine_iterations}",
         "short": "16/60/200/150"}
KEYS = ("shape", "expression", "jaw", "eyes", "eyelids")


def identity_error_mm(model, shape: np.ndarray, true_shape: np.ndarray) -> float:
    dev = model.v_template.device
    ident6 = torch.tensor([[1.0, 0.0, 0.0, 0.0, 1.0, 0.0]], device=dev)
    neutral = {"expression": torch.zeros(1, 0, device=dev), "jaw": ident6, "eyes": ident6.repeat(1, 2)}
    with torch.no_grad():
        a = model(shape=torch.as_tensor(shape[None], device=dev).float(), **neutral).vertices[0]
        b = model(shape=torch.as_tensor(true_shape[None], device=dev).float(), **neutral).vertices[0]
    return round(1000 * umeyama_error(a.cpu().numpy(), b.cpu().numpy()), 3)


def clip(model, n: int, seed: int, noise: float) -> tuple[np.ndarray, np.ndarray, dict]:
    """(landmarks [n, L, 2] px with noise, true shape [S], the clip's parameters (``t`` centred as the
    landmarks are))."""
    dev = model.v_template.device
    p = generate_params(model, SynthSpec(n_frames=n, seed=seed))
    with torch.no_grad():
        out = model(**{k: torch.as_tensor(p[k], device=dev) for k in KEYS})
        K, R, t = (torch.as_tensor(p[k], device=dev) for k in ("K", "R", "t"))
        t[:, :2] -= (out.vertices @ R.transpose(-1, -2) + t[:, None])[..., :2].mean(dim=(0, 1))
        pix, _ = project(out.landmarks_mp, K, R, t)
    p["t"] = t.cpu().numpy().astype(np.float32)
    pts = pix.cpu().numpy()
    pts = pts + np.random.default_rng(seed).normal(0, noise, pts.shape).astype(np.float32) if noise > 0 else pts
    return pts.astype(np.float32), np.asarray(p["shape"][0]), p


def keyframe_images(model, data, params: dict, picks: np.ndarray, size: int) -> torch.Tensor:
    """uint8 [K, size, size, 3]: the keyframes rendered (stages.face.synth, a colour-gradient texture)
    and area-downsampled to the appearance level's resolution."""
    from stages.face.synth import render_frames

    dev = model.v_template.device
    tex = torch.full((3, 64, 64), 0.6, device=dev)
    tex[0] = torch.linspace(0.3, 0.9, 64, device=dev)[None, :]
    img = torch.cat([render_frames(model, data, params, int(k), int(k) + 1, tex) for k in picks])
    small = torch.nn.functional.interpolate(img.permute(0, 3, 1, 2).float(), size=size, mode="area")
    return small.round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", default="400", help="clip lengths, comma-separated")
    ap.add_argument("--seeds", default="2,3")
    ap.add_argument("--configs", default="default,short")
    ap.add_argument("--noise", type=float, default=0.5, help="landmark noise, pixels (per coordinate)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--appearance", type=int, default=0,
                    help="Adam steps of the appearance level (the stage's default is 150) on the keyframes rendered "
                         "at --photo-size; 0: geometry only")
    ap.add_argument("--photo-size", type=int, default=128)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    data = load_face_model(None)
    model = FLAME(data).to(dev)
    pw = LandmarkWeights().per_point()[model.mp_index.cpu()].to(dev)
    mp_index = model.mp_index.cpu().numpy()
    device = torch.cuda.get_device_name(0) if dev.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    if dev.type == "cuda":  # CUDA context and kernels warmed up first, as in a run (ingest, landmarks came before)
        warm, _, _ = clip(model, 8, 0, args.noise)
        calibrate(model, CalibrationInputs(torch.as_tensor(warm, device=dev), pw, np.arange(1, 9)),
                  schedule=calibrate_schedule(2, 2, 0), refine_iterations=2, lm_iterations=2)
        torch.cuda.synchronize()
    for frames in (int(f) for f in args.frames.split(",")):
        for seed in (int(s) for s in args.seeds.split(",")):
            pts, true_shape, params = clip(model, frames, seed, args.noise)
            full = np.repeat(pts.mean(1, keepdims=True), 478, axis=1)
            full[:, mp_index] = pts
            for name in args.configs.split(","):
                spec = NAMED.get(name, name)
                if spec.startswith("lm:"):
                    k, lm_iters = (int(x) for x in spec[3:].split("/"))
                    rigid = ident = refine = 0
                else:
                    k, rigid, ident, refine = (int(x) for x in spec.split("/"))
                    lm_iters = 0
                t0, c0 = time.perf_counter(), time.process_time()
                picks = select_keyframes(full, np.ones(frames, bool), np.ones(frames), k)
                t_pick = time.perf_counter() - t0
                images = region = None
                if args.appearance > 0:
                    images = keyframe_images(model, data, params, picks, args.photo_size)
                    region = torch.as_tensor(face_region(data), device=dev)
                t_images = time.perf_counter() - t0 - t_pick
                inputs = CalibrationInputs(torch.as_tensor(pts[picks], device=dev), pw, picks + 1, images=images,
                                           face_region=region)
                calib = calibrate(model, inputs, schedule=calibrate_schedule(rigid, ident, args.appearance),
                                  refine_iterations=refine, lm_iterations=lm_iters)
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                print(json.dumps({"device": device, "seed": seed, "frames": frames, "config": name, "spec": spec,
                                  "keyframes": len(picks), "rigid_steps": rigid, "identity_steps": ident,
                                  "refine_iterations": refine, "lm": calib.lm, "seconds": round(time.perf_counter() - t0 - t_images, 3),
                                  "render_keyframes_s": round(t_images, 3), "appearance_steps": args.appearance,
                                  "keyframe_choice_s": round(t_pick, 3), "cpu_s": round(time.process_time() - c0, 3),
                                  "parts_s": calib.seconds, "refine": calib.refine, "noise_px": args.noise,
                                  "focal_px": round(float(calib.focal[0]), 2),
                                  "landmark_error_px_median": round(float(np.median(calib.error_px)), 3),
                                  "identity_error_mm": identity_error_mm(model, calib.shape, true_shape)}), flush=True)


if __name__ == "__main__":
    main()
