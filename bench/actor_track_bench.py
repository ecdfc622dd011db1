"""What an actor's tracking gains from the image-based levels: synthetic clips with ground truth.

    python bench/actor_track_bench.py [--frames 150] [--size 512] [--seeds 2,3] [--variants photo,landmarks]
        [--workdir DIR] [--png-dir DIR]

For each seed a synthetic talking-head clip with ground truth (:mod:`stages.face.synth`: identity, head
turns, talking jaw, blinks, one wink per eye) is tracked as an actor's video is (``avatar run --until
track``, full preset, CPU: ingest, MediaPipe landmarks, masks, calibrate, track), once per variant:

- ``photo``: the full preset as it is (calibrate's 150-step appearance fit, track's 80-step photometric
  level at 128 px);
- ``landmarks``: without them (``calibrate.appearance_steps = 0``, ``track.photometric_steps = 0``).

Scores, per variant (all frames):

- ``lm_fit_px``: track's own landmark error (against MediaPipe's points; median over frames);
- ``lm_true_px``: the tracked model's MediaPipe points, projected with the tracked camera, against the
  ground truth's (mapped into ingest's crop); mean over points, then median / mean over frames;
- ``vertex_mm``: the posed mesh in camera space (``R v + t``) against the truth's, after ONE similarity
  alignment for the whole sequence (focal length and depth trade off); mean vertex distance, mm;
- ``motion_error_mm``, ``jaw_r``, ``lip_gap_r``, ``eye_r``: the face's motion without identity and pose,
  as ``bench/driver_track_bench.py`` scores a driver;
- ``vertex_px``: every mesh vertex projected with the tracked camera against the truth's (crop pixels): the
  mesh-to-pixel alignment an avatar is trained on; mean over vertices, then mean / p95 over frames;
- ``rot_deg``: the head rotation's error (angle of ``R_est R_gt^T``), mean and 95th percentile, degrees;
  ``relative_*`` after removing the sequence's mean offset (one rotation): the error of the head's motion;
- ``depth_ratio``: tracked over true distance (the calibrated head's size trades off with its distance);
- ``identity_mm``: the calibrated neutral head against the true one (similarity-aligned), mm;
- ``cpu_s``: calibrate's and track's CPU seconds (own process each, start-up subtracted; a proxy for
  their GPU cost, see ``bench/actor_photo_run.py``).

Prints one JSON object (and each variant's line on stderr as it finishes).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from actor_photo_run import VARIANTS, run_staged  # noqa: E402
from driver_track_bench import scores as motion_scores  # noqa: E402
from track_bench import identity_error_mm, similarity  # noqa: E402


@dataclass
class Motion:
    """The per-frame face parameters ``driver_track_bench.scores`` reads (``[N, ...]`` each)."""

    exp: np.ndarray
    jaw: np.ndarray
    eyes: np.ndarray
    eyelids: np.ndarray

    def __len__(self) -> int:
        return len(self.exp)


def posed(model, shape: np.ndarray, p: dict, R: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # noqa: ANN001
    """Camera-space vertices ``[N,V,3]`` and MediaPipe points ``[N,L,3]`` (metres) of per-frame parameters."""
    f = lambda a: torch.as_tensor(np.asarray(a, np.float32))  # noqa: E731
    n = R.shape[0]
    e = model.n_expression
    exp = np.pad(p["exp"][:, :e], ((0, 0), (0, max(0, e - p["exp"].shape[1]))))
    with torch.no_grad():
        out = model(f(shape)[None].expand(n, -1), f(exp), f(p["jaw"]), f(p["eyes"]), eyelids=f(p["eyelids"]))
    cam = lambda v: np.einsum("nij,nvj->nvi", R, v.numpy()) + t[:, None]  # noqa: E731
    return cam(out.vertices), cam(out.landmarks_mp)


def pixels(points: np.ndarray, focal: np.ndarray, pp: np.ndarray) -> np.ndarray:
    """``[..., 2]`` pinhole pixels of camera-space ``points [..., 3]`` (``focal [2]``, ``pp [2]`` in pixels)."""
    return points[..., :2] / points[..., 2:3] * focal + pp


def rot_error_deg(Ra: np.ndarray, Rb: np.ndarray) -> np.ndarray:
    """``[N]`` angle of ``Ra Rb^T``, degrees."""
    c = (np.einsum("nij,nij->n", Ra, Rb) - 1) / 2
    return np.degrees(np.arccos(np.clip(c, -1, 1)))


def score(model, gt: dict, track: dict, calib: dict, crop: dict) -> tuple[dict, dict]:  # noqa: ANN001
    """The accuracy figures of one tracked clip against its ground truth (see the module docstring), and
    per frame: ``frames [N]`` (0-based), ``mesh_src [N,V,2]`` (the tracked mesh in source pixels),
    ``lm_true [N]`` (px, crop)."""
    keep = track["core"].astype(bool)
    frames = track["frames"][keep] - 1  # ingest numbers frames from 1
    tr = {k: track[k][keep] for k in ("exp", "jaw", "eyes", "eyelids", "R", "t", "error_px")}
    true = {"exp": gt["expression"][frames], "jaw": gt["jaw"][frames], "eyes": gt["eyes"][frames],
            "eyelids": gt["eyelids"][frames]}
    shape, true_shape = np.asarray(calib["shape"], np.float32), gt["shape"][0]
    v_est, lm_est = posed(model, shape, tr, tr["R"], tr["t"])
    v_gt, _ = posed(model, true_shape, true, gt["R"][frames], gt["t"][frames])
    s, Rs, ts = similarity(v_est, v_gt)
    v_al = s * v_est @ Rs.T + ts
    vertex_mm = np.linalg.norm(v_al - v_gt, axis=-1).mean(1) * 1000                       # [N]
    # pixels in ingest's crop: the tracked camera's projection against the truth's (source pixels mapped in)
    scale = float(crop["out_size"]) / float(crop["side"])
    corner = np.array([crop["x0"], crop["y0"]], np.float64)
    est_pix = lambda p: pixels(p, np.asarray(track["focal"], np.float64), np.asarray(track["pp"], np.float64))  # noqa: E731
    K = gt["K"][0].astype(np.float64)
    true_pix = lambda p: (pixels(p, K[[0, 1], [0, 1]], K[:2, 2]) - corner) * scale  # noqa: E731
    lm_true = np.linalg.norm(est_pix(lm_est) - (gt["landmarks_mp"][frames] - corner) * scale, axis=-1).mean(1)  # [N]
    vertex_px = np.linalg.norm(est_pix(v_est) - true_pix(v_gt), axis=-1).mean(1)                              # [N]
    Re, Rg = tr["R"].astype(np.float64), gt["R"][frames].astype(np.float64)
    rot = rot_error_deg(Re, Rg)
    U, _, Vt = np.linalg.svd(np.einsum("nij,nkj->ik", Re, Rg))                              # mean of Re Rg^T
    offset = U @ np.diag([1, 1, np.sign(np.linalg.det(U @ Vt))]) @ Vt
    rot_rel = rot_error_deg(np.einsum("ji,njk->nik", offset, Re), Rg)
    motion = Motion(tr["exp"], tr["jaw"], tr["eyes"], tr["eyelids"])
    gt_m = {"shape": gt["shape"], **{k: gt[k][frames] for k in ("expression", "jaw", "eyes", "eyelids")}}
    r3 = lambda x: round(float(x), 3)  # noqa: E731
    per_frame = {"frames": frames, "mesh_src": est_pix(v_est) / scale + corner, "lm_true": lm_true}
    return {"frames": int(keep.sum()),
            "lm_fit_px": r3(np.nanmedian(tr["error_px"])),
            "lm_true_px": {"median": r3(np.median(lm_true)), "mean": r3(lm_true.mean()), "max": r3(lm_true.max())},
            "vertex_mm": {"mean": r3(vertex_mm.mean()), "p95": r3(np.percentile(vertex_mm, 95)),
                          "similarity_scale": round(s, 4)},
            "vertex_px": {"mean": r3(vertex_px.mean()), "p95": r3(np.percentile(vertex_px, 95))},
            "rot_deg": {"mean": r3(rot.mean()), "p95": r3(np.percentile(rot, 95)),
                        "relative_mean": r3(rot_rel.mean()), "relative_p95": r3(np.percentile(rot_rel, 95))},
            "depth_ratio": r3(np.median(tr["t"][:, 2] / gt["t"][frames, 2])),
            "identity_mm": identity_error_mm(model, shape, true_shape, "cpu"),
            **motion_scores(model, gt_m, motion, shape)}, per_frame


def draw_worst(clip: Path, gt: dict, faces: np.ndarray, looks: dict[str, dict], png: Path) -> dict:
    """The frame where any variant's projected mesh lies farthest from the truth: one tile per variant
    (tracked mesh in blue, its points red, the true points green), source pixels. Returns the frame and errors."""
    import av
    from PIL import Image

    from stages.tracking.overlay import draw_overlay

    worst = max(looks.values(), key=lambda lk: lk["lm_true"].max())
    j = int(np.argmax(worst["lm_true"]))
    frame = int(worst["frames"][j])
    with av.open(str(clip)) as c:
        img = next(f.to_ndarray(format="rgb24") for i, f in enumerate(c.decode(video=0)) if i == frame)
    tiles = [draw_overlay(img, lk["mesh_src"][j], faces, gt["landmarks_mp"][frame], lk["mesh_src"][j],
                          f"{name} frame {frame}: {lk['lm_true'][j]:.1f} px") for name, lk in looks.items()]
    png.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(tiles, 1)).save(png)
    return {"png": str(png), "frame": frame, "px": {n: round(float(lk["lm_true"][j]), 2) for n, lk in looks.items()}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=150)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--seeds", default="2,3")
    ap.add_argument("--variants", default="photo,landmarks")
    ap.add_argument("--workdir", type=Path)
    ap.add_argument("--png-dir", type=Path, help="draw each seed's worst frame, every variant side by side")
    a = ap.parse_args()
    from stages.face.flame import FLAME
    from stages.face.model import load_face_model
    from stages.face.synth import SynthSpec, generate_params, render_video
    from stages.runner.pipeline import prepare_actor
    from stages.store.local import LocalStore

    work = a.workdir or Path(tempfile.mkdtemp(prefix="actor-track-"))
    work.mkdir(parents=True, exist_ok=True)
    data = load_face_model(None)
    model = FLAME(data)
    store = LocalStore(work / "store")
    out: dict = {"frames": a.frames, "size": a.size, "device": "cpu", "preset": "full", "seeds": {}}
    for seed in (int(s) for s in a.seeds.split(",")):
        clip = work / f"actor-{a.frames}-{seed}.mp4"
        if not clip.is_file():
            spec = SynthSpec(n_frames=a.frames, size=a.size, seed=seed, winks=((1.2, 0.4, 0), (3.0, 0.4, 1)))
            render_video(data, generate_params(data, spec), clip, spec=spec, batch=16)
        gt = dict(np.load(clip.with_suffix(".npz")))
        looks = {}
        for name in a.variants.split(","):
            actor = f"s{seed}-{name}"
            cfg = prepare_actor(store, actor, clip, None, "full", overrides=VARIANTS[name])
            root = work / "store" / "actors" / actor
            cost_file = work / f"cost-{actor}.json"  # a rerun in the same workdir re-scores, keeping the costs
            if cost_file.is_file():
                cost = json.loads(cost_file.read_text())
            else:
                cost = run_staged(str(work / "store"), actor, cfg.to_dict(), ("masks", "calibrate", "track"))
                cost_file.write_text(json.dumps(cost))
            track = dict(np.load(root / "track" / "0000.npz"))
            calib = dict(np.load(root / "calibrate" / "calibration.npz"))
            crop = json.loads((root / "ingest" / "crop.json").read_text())
            figures, looks[name] = score(model, gt, track, calib, crop)
            res = {**figures,
                   "cpu_s": {g: cost[g]["cpu_s_net"] for g in ("calibrate", "track")},
                   "wall_s": {g: cost[g]["wall_s"] for g in ("calibrate", "track")}}
            out["seeds"].setdefault(str(seed), {})[name] = res
            print(json.dumps({"seed": seed, name: res}), file=sys.stderr, flush=True)
        if a.png_dir is not None:
            out.setdefault("worst_frames", {})[str(seed)] = draw_worst(
                clip, gt, data.faces, looks, a.png_dir / f"worst-seed{seed}.png")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
