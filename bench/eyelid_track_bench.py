"""Blinks and winks into the eyelid parameters: the tracker on a synthetic clip with known eyelids.

    python bench/eyelid_track_bench.py [--frames 200] [--seed 2] [--source gt|mediapipe]
        [--noise 0.5] [--schedule default|tiny] [--weights '{"lid_expression": 0}']
        [--lr '{"eyelids": 0.02}'] [--cache DIR]

The clip comes from the project's generator (:mod:`stages.face.synth`, the stand-in face model):
talking, blinks every 3-5 s, and one wink of each eye (0.4 s shut). Its landmarks are either the
ground truth's own (``gt``, plus ``--noise`` px of Gaussian noise) or MediaPipe's on the rendered
512-px frames (``mediapipe``; cached under ``--cache``). The tracker (``track_sequence``, the track
stage's landmark levels, the true identity and intrinsics) fits them, and the script prints one
JSON object:

- ``eyelid_r``: Pearson r of the tracked ``eyelids[:, e]`` with the ground truth's, per eye
  (0 = the subject's left, 1 = right);
- ``exp_lid_r_max``: the largest |r| of any tracked expression coefficient with either eye's
  ground-truth eyelids, which coefficient, and its change per unit of blink (``exp_lid_slope_argmax``);
- ``exp_closure_at_blink``: the expression's share of a blink: the slope of the eye closure it carries
  (``exp @ M^T``, :func:`stages.tracking.eyelids.lid_expression_basis`) against the true eyelids (0: none,
  1: all of it); ``exp_lid_motion_share``: the lid region's motion the expression makes per unit of
  blink over a blink's (any direction, not only closing), and per coefficient (``..._max``);
- ``wink_closed`` / ``wink_other``: the tracked eyelid of the winking eye and of the other eye
  while the wink is shut (mean over the two winks);
- mouth and jaw against the ground truth: ``jaw_deg_rmse`` (jaw opening angle), ``jaw_r``,
  ``exp0_rmse`` (the stand-in's mouth-open coefficient), ``mouth_px`` (mean error of the 40 lip
  landmarks of the fit against the exact ones) and ``mouth_open_r`` (inner-lip gap 13-14 of the
  fit against the truth's), ``landmark_px`` (all points);
- ``seconds``: the fit's wall time.
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

from stages.face.camera import project as cv_project  # noqa: E402
from stages.face.flame import FLAME  # noqa: E402
from stages.face.model import load_face_model  # noqa: E402
from stages.face.synth import SynthSpec, generate_params  # noqa: E402
from stages.tracking import regions  # noqa: E402
from stages.tracking.calibration import personalised  # noqa: E402
from stages.tracking.eyelids import lid_expression_basis, lid_index  # noqa: E402
from stages.tracking.fit import Shared, run_model  # noqa: E402
from stages.tracking.losses import LandmarkWeights  # noqa: E402
from stages.tracking.params import FrameParams, project  # noqa: E402
from stages.tracking.schedule import LossWeights, track_schedule  # noqa: E402
from stages.tracking.sequence import SequenceInputs, track_sequence  # noqa: E402

FRAME_KEYS = ("shape", "expression", "jaw", "eyes", "eyelids", "neck", "rotation", "translation")
SCHEDULES = {"default": (80, 390), "tiny": (40, 120)}


def clip_spec(frames: int, seed: int, size: int = 512) -> SynthSpec:
    """Blinks every 3-5 s, the subject's left eye winks at 1.4 s and the right at 4.6 s (0.4 s shut)."""
    winks = tuple(w for w in ((1.4, 0.4, 0), (4.6, 0.4, 1)) if w[0] + 0.6 < frames / 25.0)
    return SynthSpec(n_frames=frames, seed=seed, size=size, yaw_deg=20.0, winks=winks)


def exact_landmarks(model: FLAME, params: dict[str, np.ndarray]) -> np.ndarray:
    """[N, 478, 2] projected ground-truth landmarks (points the model lacks: NaN)."""
    with torch.no_grad():
        out = model(**{k: torch.as_tensor(params[k]) for k in FRAME_KEYS})
        pix, _ = cv_project(out.landmarks_mp, *(torch.as_tensor(params[k]) for k in ("K", "R", "t")))
    pts = np.full((len(params["R"]), 478, 2), np.nan)
    pts[:, model.mp_index.numpy()] = pix.numpy()
    return pts


def mediapipe_landmarks(data, params: dict[str, np.ndarray], spec: SynthSpec, cache: Path) -> np.ndarray:
    """[N, 478, 2] MediaPipe FaceMesh points of the rendered clip (NaN where no face), cached."""
    key = cache / f"mp_{spec.n_frames}_{spec.seed}_{spec.size}.npy"
    if key.is_file():
        return np.load(key)
    import av
    from mediapipe.python.solutions.face_mesh import FaceMesh

    from stages.face.synth import render_video

    cache.mkdir(parents=True, exist_ok=True)
    mp4 = cache / f"clip_{spec.n_frames}_{spec.seed}_{spec.size}.mp4"
    render_video(data, params, mp4, batch=8, spec=spec)
    with av.open(str(mp4)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    pts = np.full((len(frames), 478, 2), np.nan)
    with FaceMesh(static_image_mode=False, max_num_faces=1, refine_landmarks=True) as fm:
        for i, f in enumerate(frames):
            res = fm.process(f)
            if res.multi_face_landmarks:
                pts[i] = [(p.x * spec.size, p.y * spec.size) for p in res.multi_face_landmarks[0].landmark]
    np.save(key, pts)
    return pts


def lid_region(model: FLAME) -> tuple[np.ndarray, np.ndarray]:
    """The expression blendshapes ``[3Vr, E]`` and the eyelid blendshapes ``[2, 3Vr]`` over the
    vertices the eyelid blendshapes move (as :func:`stages.tracking.eyelids.lid_expression_basis`)."""
    lid = model.eyelid_dirs.double().reshape(2, -1, 3)
    mag = lid.norm(dim=-1)
    region = (mag > 0.05 * mag.amax(dim=1, keepdim=True)).any(0)
    E = model.exprdirs.double().reshape(-1, 3, model.exprdirs.shape[1])[region]
    return E.reshape(-1, E.shape[-1]).numpy(), lid[:, region].reshape(2, -1).numpy()


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    if np.std(a) < 1e-9 or np.std(b) < 1e-9:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def jaw_angle(jaw6: np.ndarray) -> np.ndarray:
    """Rotation angle (degrees) of [N, 6] 6D jaw rotations."""
    R = FrameParams.from_numpy({"exp": np.zeros((len(jaw6), 100)), "jaw": jaw6, "eyes": np.zeros((len(jaw6), 12)),
                                "eyelids": np.zeros((len(jaw6), 2)), "rot": jaw6, "t": np.zeros((len(jaw6), 3))}).R
    return np.degrees(np.arccos(np.clip((R.diagonal(dim1=-2, dim2=-1).sum(-1).numpy() - 1) / 2, -1, 1)))


def evaluate(tracked: dict[str, np.ndarray], truth: dict[str, np.ndarray], fit_pts: np.ndarray,
             true_pts: np.ndarray, winks: tuple, lid_basis: np.ndarray | None = None,
             lid_motion: tuple[np.ndarray, np.ndarray] | None = None) -> dict:
    """The figures of the module docstring."""
    lids_gt, lids = truth["eyelids"], tracked["eyelids"]
    out: dict = {"eyelid_r": [round(pearson(lids[:, e], lids_gt[:, e]), 4) for e in (0, 1)]}
    best = (0.0, -1)
    for k in range(tracked["exp"].shape[1]):
        for e in (0, 1):
            r = abs(pearson(tracked["exp"][:, k], lids_gt[:, e]))
            best = max(best, (r, k))
    out["exp_lid_r_max"], out["exp_lid_r_argmax"] = round(best[0], 4), best[1]
    k = best[1]
    slope = np.polyfit(lids_gt.mean(1), tracked["exp"][:, k], 1)[0]
    out["exp_lid_slope_argmax"] = round(float(slope), 4)  # that coefficient's change per unit of blink
    if lid_basis is not None:
        carried = tracked["exp"] @ lid_basis.T                       # [N, 2] eye closure in the expression
        out["exp_closure_r"] = [round(pearson(carried[:, e], lids_gt[:, e]), 4) for e in (0, 1)]
        out["exp_closure_at_blink"] = round(float(np.polyfit(lids_gt.mean(1), carried.mean(1), 1)[0]), 4)
    if lid_motion is not None:
        # the lid region's motion the expression makes per unit of blink, over the eyelid blendshapes'
        E, B = lid_motion
        disp = tracked["exp"] @ E.T                                    # [N, 3Vr]
        slope = np.polyfit(lids_gt.mean(1), disp, 1)[0]                # [3Vr]
        out["exp_lid_motion_share"] = round(float(np.linalg.norm(slope) / np.linalg.norm(B.sum(0))), 4)
        share = [abs(np.polyfit(lids_gt.mean(1), tracked["exp"][:, j], 1)[0]) * np.linalg.norm(E[:, j])
                 / np.linalg.norm(B.sum(0)) for j in range(E.shape[1])]
        out["exp_lid_motion_share_max"] = round(float(max(share)), 4)
        out["exp_lid_motion_share_argmax"] = int(np.argmax(share))
    out["exp2_lid_r"] = round(pearson(tracked["exp"][:, 2], lids_gt.mean(1)), 4)
    t = np.arange(len(lids_gt)) / 25.0
    closed, other = [], []
    for start, hold, eye in winks:
        shut = (t >= start + 0.1) & (t <= start + 0.1 + hold) & (lids_gt[:, 1 - eye] < 0.01)
        if shut.any():
            closed.append(lids[shut, eye].mean())
            other.append(lids[shut, 1 - eye].mean())
    out["wink_closed"] = round(float(np.mean(closed)), 3) if closed else None
    out["wink_other"] = round(float(np.mean(other)), 3) if other else None
    ja, ja_gt = jaw_angle(tracked["jaw"]), jaw_angle(truth["jaw"])
    out["jaw_deg_rmse"] = round(float(np.sqrt(np.mean((ja - ja_gt) ** 2))), 3)
    out["jaw_r"] = round(pearson(ja, ja_gt), 4)
    out["exp0_rmse"] = round(float(np.sqrt(np.mean((tracked["exp"][:, 0] - truth["expression"][:, 0]) ** 2))), 4)
    lips = list(regions.LIPS)
    out["mouth_px"] = round(float(np.nanmean(np.linalg.norm(fit_pts[:, lips] - true_pts[:, lips], axis=-1))), 3)
    gap = lambda p: np.linalg.norm(p[:, 13] - p[:, 14], axis=-1)  # noqa: E731
    out["mouth_open_r"] = round(pearson(gap(fit_pts), gap(true_pts)), 4)
    out["landmark_px"] = round(float(np.nanmean(np.linalg.norm(fit_pts - true_pts, axis=-1))), 3)
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--seed", type=int, default=2)
    ap.add_argument("--source", choices=("gt", "mediapipe"), default="gt")
    ap.add_argument("--noise", type=float, default=0.5, help="px of Gaussian noise on gt landmarks")
    ap.add_argument("--schedule", choices=tuple(SCHEDULES), default="default")
    ap.add_argument("--weights", default="{}", help="LossWeights overrides, JSON")
    ap.add_argument("--lr", default="{}", help="learning-rate overrides, JSON")
    ap.add_argument("--cache", default="/tmp/eyelid_bench_cache")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    torch.set_num_threads(1)
    data = load_face_model(None)
    model = FLAME(data)
    spec = clip_spec(args.frames, args.seed)
    truth = generate_params(data, spec)
    true_pts = exact_landmarks(model, truth)
    if args.source == "gt":
        pts = true_pts + np.random.default_rng(0).normal(scale=args.noise, size=true_pts.shape)
    else:
        pts = mediapipe_landmarks(data, truth, spec, Path(args.cache))
    mp = model.mp_index.numpy()
    targets = pts[:, mp]
    ok = np.isfinite(targets).all(axis=(1, 2))
    K = truth["K"][0]
    pm = personalised(model, torch.as_tensor(truth["shape"][0]))
    shared = Shared(torch.zeros(0), torch.tensor([K[0, 0], K[1, 1]]), torch.tensor([K[0, 2], K[1, 2]]))
    rigid, landmarks = SCHEDULES[args.schedule]
    schedule = track_schedule(rigid, landmarks, 0)
    schedule.lr = {**schedule.lr, **json.loads(args.lr)}
    weights = LossWeights(**json.loads(args.weights))
    t0 = time.perf_counter()
    basis = lid_expression_basis(pm)
    res = track_sequence(pm, shared, SequenceInputs(np.arange(1, len(pts) + 1), targets.astype(np.float32), ok),
                         LandmarkWeights().per_point()[mp], schedule, weights, lids=lid_index(mp), lid_basis=basis)
    seconds = time.perf_counter() - t0
    p = FrameParams.from_numpy(res.params)
    with torch.no_grad():
        pix, _ = project(run_model(pm, torch.zeros(0), p).landmarks_mp, p.R, p.t, shared.focal, shared.pp)
    fit_pts = np.full_like(true_pts, np.nan)
    fit_pts[:, mp] = pix.numpy()
    out = {"source": args.source, "frames": args.frames, "seed": args.seed, "schedule": args.schedule,
           "weights": json.loads(args.weights), "lr": json.loads(args.lr), "mediapipe_found": float(ok.mean()),
           **evaluate(res.params, truth, fit_pts, true_pts, spec.winks, basis.numpy(), lid_region(pm)), "seconds": round(seconds, 1)}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
