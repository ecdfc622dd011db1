"""Benchmark of the batched tracker (calibrate + track) on a synthetic clip, on one GPU.

    python bench/track_bench.py [--frames 2048] [--batches 64,256,1024,2048] [--keyframes 32]
                                [--noise 1.0] [--accuracy-only] [--quick]

Builds a synthetic ground-truth clip with the stand-in face model (stages.face.synth: known
parameters, exact landmarks, frames rendered by our rasteriser), then

1. calibrates (keyframes chosen automatically, default calibrate schedule, appearance on);
2. tracks the whole clip with the full default track schedule, photometric term on, all frames
   per optimiser step (batch = the clip, up to --max-batch), and measures frames/s and accuracy
   (median landmark error px, mean vertex error mm after one similarity alignment, jitter);
3. repeats track for several batch sizes to show how frames/s and peak GPU memory scale;
4. with ``--noise`` > 0, calibrates and tracks again from landmarks with that much Gaussian noise
   (pixels, per coordinate) and reports the vertex jitter against the ground truth's own motion
   (the issue's criterion: jitter <= 1.5 x ground-truth motion + 0.2 mm).

``--accuracy-only`` skips the scaling and timing-only parts (3 and the FLAME-sized timing).

Prints one JSON object to stdout. Uses only torch, numpy and this package.
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
from stages.face.camera import project as cv_project  # noqa: E402
from stages.face.flame import FLAME  # noqa: E402
from stages.face.model import load_face_model  # noqa: E402
from stages.face.synth import SynthSpec, generate_params, render_frames  # noqa: E402
from stages.tracking.calibration import CalibrationInputs, calibrate, personalised  # noqa: E402
from stages.tracking.face_assets import face_region  # noqa: E402
from stages.tracking.fit import Shared  # noqa: E402
from stages.tracking.keyframes import select_keyframes  # noqa: E402
from stages.tracking.losses import LandmarkWeights  # noqa: E402
from stages.tracking.params import FrameParams  # noqa: E402
from stages.tracking.schedule import calibrate_schedule, track_schedule  # noqa: E402
from stages.tracking.sequence import Appearance, SequenceInputs, track_sequence  # noqa: E402

FRAME_KEYS = ("shape", "expression", "jaw", "eyes", "eyelids")


def texture_for(data, size: int = 256) -> torch.Tensor:
    """The synthetic renderer's procedural albedo ([3,T,T]); a smooth numpy one if PIL is absent."""
    try:
        from stages.face.synth import albedo_texture

        tex = albedo_texture(data, size)
    except ImportError:
        rng = np.random.default_rng(0)
        yy, xx = np.mgrid[:size, :size] / size
        tex = np.stack([0.75 + 0.1 * np.sin(6 * xx + rng.uniform(0, 6)) * np.cos(5 * yy),
                        0.55 + 0.08 * np.sin(7 * yy + rng.uniform(0, 6)),
                        0.45 + 0.05 * np.cos(4 * xx)], -1).astype(np.float32)
    return torch.as_tensor(np.ascontiguousarray(np.asarray(tex).transpose(2, 0, 1)))


def similarity(X: np.ndarray, Y: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """The similarity ``(s, R [3,3], t [3])`` minimising ``|s R X + t - Y|^2`` over rows (Umeyama)."""
    X, Y = X.reshape(-1, 3).astype(np.float64), Y.reshape(-1, 3).astype(np.float64)
    mx, my = X.mean(0), Y.mean(0)
    U, S, Vt = np.linalg.svd((Y - my).T @ (X - mx) / len(X))
    D = np.eye(3)
    D[2, 2] = np.sign(np.linalg.det(U @ Vt))
    R = U @ D @ Vt
    s = float((S * np.diag(D)).sum() / ((X - mx) ** 2).sum(1).mean())
    return s, R, my - s * R @ mx


def umeyama_error(est: np.ndarray, gt: np.ndarray) -> float:
    """Mean point distance after the best similarity of ``est`` onto ``gt`` (same units)."""
    s, R, t = similarity(est, gt)
    X, Y = est.reshape(-1, 3).astype(np.float64), gt.reshape(-1, 3).astype(np.float64)
    return float(np.linalg.norm(s * X @ R.T + t - Y, axis=1).mean())


def identity_error_mm(flame, shape: np.ndarray, true_shape: np.ndarray, dev) -> float:
    """Mean distance, mm, between the neutral heads of the fitted and the true identity after one
    similarity alignment (what calibration got wrong about the face's shape)."""
    ident6 = torch.tensor([[1.0, 0.0, 0.0, 0.0, 1.0, 0.0]], device=dev)
    neutral = {"expression": torch.zeros(1, 0, device=dev), "jaw": ident6, "eyes": ident6.repeat(1, 2)}
    with torch.no_grad():
        a = flame(shape=torch.as_tensor(np.asarray(shape)[None], device=dev).float(), **neutral).vertices[0]
        b = flame(shape=torch.as_tensor(np.asarray(true_shape)[None], device=dev).float(), **neutral).vertices[0]
    return round(1000 * umeyama_error(a.cpu().numpy(), b.cpu().numpy()), 3)


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=2048)
    ap.add_argument("--batches", default="64,256,1024,2048")
    ap.add_argument("--max-batch", type=int, default=2048)
    ap.add_argument("--photo-size", type=int, default=128)
    ap.add_argument("--quick", action="store_true", help="a few steps only (smoke test of the script)")
    ap.add_argument("--keyframes", type=int, default=None, help="calibration keyframes (default: the stage's)")
    ap.add_argument("--noise", type=float, default=1.0, help="landmark noise of the jitter run, pixels (0: skip)")
    ap.add_argument("--accuracy-only", action="store_true", help="skip the batch scaling and timing-only runs")
    args = ap.parse_args()
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    out: dict = {"device": torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu",
                 "torch": torch.__version__, "frames": args.frames, "photo_size": args.photo_size}
    t0 = time.perf_counter()
    data = load_face_model(None)
    flame = FLAME(data).to(dev)
    n = args.frames
    params = generate_params(flame, SynthSpec(n_frames=n, seed=0))
    with torch.no_grad():
        o = flame(**{k: torch.as_tensor(params[k], device=dev) for k in FRAME_KEYS})
        K, R, t = (torch.as_tensor(params[k], device=dev) for k in ("K", "R", "t"))
        # centre the face on average (one camera shift for all frames; generate_params may put it off-image)
        t[:, :2] -= (o.vertices @ R.transpose(-1, -2) + t[:, None])[..., :2].mean(dim=(0, 1))
        params["t"] = t.cpu().numpy()
        lmk, _ = cv_project(o.landmarks_mp, K, R, t)
        gt_cam = (o.vertices @ R.transpose(-1, -2) + t[:, None]).cpu().numpy()
    lmk = lmk.cpu().numpy()
    tex = texture_for(data).to(dev)
    frames = []
    for s in range(0, n, 64):
        img = render_frames(flame, data, params, s, min(n, s + 64), tex)  # uint8 [B,512,512,3]
        small = torch.nn.functional.interpolate(img.permute(0, 3, 1, 2).float(), size=args.photo_size, mode="area")
        frames.append(small.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu())
    images = torch.cat(frames).numpy()
    out["synth_seconds"] = round(time.perf_counter() - t0, 2)

    mp_index = flame.mp_index.cpu().numpy()
    pw = LandmarkWeights().per_point()[flame.mp_index.cpu()].to(dev)
    quick = args.quick

    # 1. calibration
    cal_cfg = CalibrateConfig()
    n_key = args.keyframes or cal_cfg.keyframes
    region = torch.as_tensor(face_region(data), device=dev)
    use_lm = cal_cfg.solver == "lm" and not quick  # the calibrate stage's route (quick: a short Adam one)
    cal_sched = calibrate_schedule(*(10, 20, 10) if quick else ((0, 0, 150) if use_lm else (150, 500, 150)))
    cal_refine = 30 if quick else (0 if use_lm else cal_cfg.refine_iterations)

    def calibrate_on(points: np.ndarray):
        full = np.repeat(points.mean(1, keepdims=True), 478, axis=1)
        full[:, mp_index] = points
        picks = select_keyframes(full, np.ones(n, bool), np.ones(n), n_key)
        sync()
        t0 = time.perf_counter()
        calib = calibrate(flame, CalibrationInputs(torch.as_tensor(points[picks], device=dev), pw, picks + 1,
                                                   torch.as_tensor(images[picks], device=dev), region),
                          schedule=cal_sched, model_name=data.name, refine_iterations=cal_refine,
                          lm_iterations=cal_cfg.lm_iterations if use_lm else 0)
        sync()
        return calib, picks, time.perf_counter() - t0

    calib, picks, cal_s = calibrate_on(lmk.astype(np.float32))
    out["calibrate"] = {"seconds": round(cal_s, 2), "keyframes": len(picks),
                        "steps": cal_sched.total_steps, "refine_iterations": cal_refine, "lm": calib.lm,
                        "focal_px": float(calib.focal[0]),
                        "focal_true_px": float(params["K"][0, 0, 0]),
                        "landmark_error_px_median": float(np.median(calib.error_px)),
                        "identity_error_mm": identity_error_mm(flame, calib.shape, params["shape"][0], dev)}

    # 2. track, full schedule, photometric on
    sched = track_schedule(*(5, 10, 5)) if quick else track_schedule()

    def tracker_for(c):
        return (personalised(flame, torch.as_tensor(c.shape, device=dev)),
                Shared(torch.zeros(0, device=dev), torch.as_tensor(c.focal, device=dev), torch.as_tensor(c.pp, device=dev)),
                Appearance(c.albedo, c.sh, face_region(data)))

    model, shared, appearance = tracker_for(calib)

    def run(count: int, batch: int, points: np.ndarray = lmk):
        inputs = SequenceInputs(np.arange(1, count + 1), points[:count].astype(np.float32), np.ones(count, bool),
                                images[:count])
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        sync()
        t1 = time.perf_counter()
        res = track_sequence(model, shared, inputs, pw, sched, batch_size=batch, appearance=appearance)
        sync()
        sec = time.perf_counter() - t1
        mem = torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else None
        return res, sec, mem

    def accuracy(res) -> dict:
        p = FrameParams.from_numpy(res.params, dev)
        with torch.no_grad():
            v = model(shape=torch.zeros(n, 0, device=dev), expression=p.exp, jaw=p.jaw, eyes=p.eyes,
                      eyelids=p.eyelids).vertices
            cam = (v @ p.R.transpose(-1, -2) + p.t[:, None]).cpu().numpy()
        jitter = 1000 * float(np.linalg.norm(np.diff(cam, axis=0), axis=-1).mean())
        gt_motion = 1000 * float(np.linalg.norm(np.diff(gt_cam, axis=0), axis=-1).mean())
        return {"landmark_error_px_median": float(np.median(res.error_px)),
                "vertex_error_mm_aligned": round(1000 * umeyama_error(cam, gt_cam), 3),
                "jitter_mm": round(jitter, 3), "gt_motion_mm": round(gt_motion, 3),
                "jitter_limit_mm": round(1.5 * gt_motion + 0.2, 3)}

    run(min(n, 64), 64)  # warm-up (kernels, allocator)
    res, sec, mem = run(n, args.max_batch)
    out["track"] = {"frames_per_s": round(n / sec, 1), "seconds": round(sec, 2), "steps": sched.total_steps,
                    "batch": min(n, args.max_batch), "peak_gpu_gib": None if mem is None else round(mem, 2),
                    **accuracy(res)}

    if args.noise > 0:  # 4. the jitter criterion: calibrate and track from noisy landmarks
        rng = np.random.default_rng(1)
        noisy = (lmk + rng.normal(0.0, args.noise, lmk.shape)).astype(np.float32)
        calib_n, _, cal_s = calibrate_on(noisy)
        model, shared, appearance = tracker_for(calib_n)
        res_n, sec_n, _ = run(n, args.max_batch, noisy)
        out["track_noisy"] = {"noise_px": args.noise, "calibrate_seconds": round(cal_s, 2),
                              "identity_error_mm": identity_error_mm(flame, calib_n.shape, params["shape"][0], dev),
                              "frames_per_s": round(n / sec_n, 1), **accuracy(res_n)}
        model, shared, appearance = tracker_for(calib)
    if args.accuracy_only:
        print(json.dumps(out))
        return

    # 3. scaling with the batch size (photometric on, full schedule)
    scaling = []
    for b in (int(x) for x in args.batches.split(",") if x):
        if b > n:
            continue
        _, sec, mem = run(b, b)
        scaling.append({"batch": b, "frames_per_s": round(b / sec, 1), "seconds": round(sec, 2),
                        "peak_gpu_gib": None if mem is None else round(mem, 2)})
    out["scaling"] = scaling
    # landmark-only throughput at the largest batch (photometric off)
    sched_lmk = track_schedule(5, 10, 0) if quick else track_schedule(photometric=0)
    inputs = SequenceInputs(np.arange(1, n + 1), lmk.astype(np.float32), np.ones(n, bool))
    sync()
    t1 = time.perf_counter()
    track_sequence(model, shared, inputs, pw, sched_lmk, batch_size=args.max_batch)
    sync()
    out["track_landmarks_only_frames_per_s"] = round(n / (time.perf_counter() - t1), 1)
    try:
        out["flame_sized"] = flame_sized_timing(n, args.max_batch, sched, sched_lmk, images, dev)
    except Exception as err:  # timing only: never lose the figures above
        out["flame_sized"] = {"error": f"{type(err).__name__}: {err}"}
    print(json.dumps(out))


def flame_sized_timing(n: int, batch: int, sched, sched_lmk, images: np.ndarray, dev: torch.device) -> dict:
    """Track throughput with a random model of FLAME's size (5023 vertices, 9976 triangles, 105
    embedded MediaPipe points), timing only: the stand-in has 478 vertices, FLAME ten times more.
    Landmarks are the model's own projections under generate_params' motion; the images are the
    stand-in clip's (the photometric term's cost does not depend on what they show)."""
    import tempfile

    from stages.face import flame_file

    with tempfile.TemporaryDirectory() as d:
        pkl = flame_file.write_fake_flame_pkl(Path(d) / "generic_model.pkl", seed=1)
        rng = np.random.default_rng(0)
        np.savez(Path(d) / "mp.npz", lmk_face_idx=rng.integers(0, 9976, 105),
                 lmk_b_coords=rng.dirichlet([1, 1, 1], 105), landmark_indices=np.sort(rng.choice(468, 105, replace=False)))
        data = load_face_model(pkl, mediapipe_embedding=Path(d) / "mp.npz")
    flame = FLAME(data).to(dev)
    params = generate_params(flame, SynthSpec(n_frames=n, seed=0))
    with torch.no_grad():
        o = flame(**{k: torch.as_tensor(params[k], device=dev) for k in FRAME_KEYS})
        K, R, t = (torch.as_tensor(params[k], device=dev) for k in ("K", "R", "t"))
        lmk, _ = cv_project(o.landmarks_mp, K, R, t)
    lmk = lmk.cpu().numpy().astype(np.float32)
    model = personalised(flame, torch.as_tensor(params["shape"][0], device=dev))
    shared = Shared(torch.zeros(0, device=dev), K[0].diagonal()[:2].clone(), K[0, :2, 2].clone())
    pw = LandmarkWeights().per_point()[flame.mp_index.cpu()].to(dev)
    appearance = Appearance(np.full((data.n_vertices, 3), 0.6, np.float32), np.eye(9, 3, dtype=np.float32) * 3.5,
                            np.ones(data.faces.shape[0], bool))
    res = {}
    for name, sc, app in (("landmarks_only", sched_lmk, None), ("photometric", sched, appearance)):
        inputs = SequenceInputs(np.arange(1, n + 1), lmk, np.ones(n, bool), images[:n] if app is not None else None)
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        sync()
        t1 = time.perf_counter()
        track_sequence(model, shared, inputs, pw, sc, batch_size=batch, appearance=app)
        sync()
        sec = time.perf_counter() - t1
        res[name] = {"frames_per_s": round(n / sec, 1), "seconds": round(sec, 2),
                     "peak_gpu_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if dev.type == "cuda" else None}
    return res


if __name__ == "__main__":
    main()
