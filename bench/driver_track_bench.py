"""What a driver's tracking needs: the motion a drive transfers, with and without the image-based levels.

    python bench/driver_track_bench.py [--frames 150] [--size 512] [--seed 2] [--device cpu] [--jobs 2]
        [--variants full,landmarks]

A synthetic driver clip with ground truth (:mod:`stages.face.synth`, blinks, winks, talking jaw) is
tracked as ``avatar drive --video`` tracks a driver (:func:`stages.drive.sources.track_driver`: ingest,
landmarks, calibrate, track; the full preset) once per variant, each as its own driver entry:

- ``full``: with the image-based levels (calibrate's appearance level, track's photometric level at
  128 px: the full preset's defaults before 2026-12-07);
- ``landmarks``: the same without the image-based levels (``calibrate.appearance_steps = 0``,
  ``track.photometric_steps = 0``).

What is scored is what a drive takes from the driver (:mod:`stages.motion.transfer`): the face's motion
without identity and head pose. For each frame the face model with the driver's own calibrated identity,
its tracked expression, jaw, eyes and eyelids, minus the same identity's neutral face, against the ground
truth's (its identity, its parameters) the same way: ``motion_error_mm`` (mean vertex distance of that
displacement, mm), and Pearson r with the ground truth of the jaw's opening angle, the inner-lip gap and each
eye's lid gap (the mesh's, identity-free). Also each stage's seconds. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stages.drive.sources import DRIVER_STAGE_SETTINGS  # noqa: E402

VARIANTS = {"full": {"calibrate": {"appearance_steps": 150}, "track": {"photometric_steps": 80}},  # the old defaults
            "landmarks": DRIVER_STAGE_SETTINGS}
LIPS = (13, 14)  # MediaPipe inner-lip midpoints (upper, lower)
LIDS = ((159, 145), (386, 374))  # MediaPipe upper / lower lid midpoints: subject's right eye, left eye


def displacement(model, shape: np.ndarray, exp: np.ndarray, jaw: np.ndarray, eyes: np.ndarray,  # noqa: ANN001
                 lids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[N, V, 3] vertices minus the identity's neutral (metres) and [N, L, 3] MediaPipe points, both in the head's frame."""
    n = exp.shape[0]
    t = lambda a: torch.as_tensor(np.asarray(a, np.float32))  # noqa: E731
    s = t(shape)[None].expand(n, -1)
    with torch.no_grad():
        out = model(s, t(exp), t(jaw), t(eyes), eyelids=t(lids))
        ident6 = torch.tensor([1.0, 0, 0, 0, 1, 0]).expand(n, 6)
        neutral = model(s, torch.zeros_like(t(exp)), ident6, ident6.repeat(1, 2), eyelids=torch.zeros(n, 2))
    return (out.vertices - neutral.vertices).numpy(), out.landmarks_mp.numpy()


def scores(model, gt: dict, motion, shape: np.ndarray) -> dict:  # noqa: ANN001
    n = min(len(motion), gt["expression"].shape[0])
    e = model.n_expression
    pad = lambda a: np.pad(a[:, :e], ((0, 0), (0, max(0, e - a.shape[1]))))  # noqa: E731
    d_est, p_est = displacement(model, shape, pad(motion.exp[:n]), motion.jaw[:n], motion.eyes[:n], motion.eyelids[:n])
    d_gt, p_gt = displacement(model, np.asarray(gt["shape"]).reshape(-1, gt["shape"].shape[-1])[0], pad(gt["expression"][:n]), gt["jaw"][:n], gt["eyes"][:n],
                              gt["eyelids"][:n])
    r = lambda a, b: float(np.corrcoef(a, b)[0, 1])  # noqa: E731
    at = {int(m): i for i, m in enumerate(model.mp_index.tolist())}  # MediaPipe index -> row of landmarks_mp
    gap = lambda p, ij: np.linalg.norm(p[:, at[ij[0]]] - p[:, at[ij[1]]], axis=-1)  # noqa: E731
    jaw = lambda j: np.arctan2(-j[:, 5], j[:, 4])  # noqa: E731 - x-rotation of the 6D's second row (0, cos, -sin)
    return {"motion_error_mm": round(float(np.linalg.norm(d_est - d_gt, axis=-1).mean() * 1000), 3),
            "jaw_r": round(r(jaw(motion.jaw[:n]), jaw(gt["jaw"][:n])), 4),
            "lip_gap_r": round(r(gap(p_est, LIPS), gap(p_gt, LIPS)), 4),
            "eye_r": [round(r(gap(p_est, ij), gap(p_gt, ij)), 4) for ij in LIDS]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=150)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--seed", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--variants", default="full,landmarks",
                    help="names from VARIANTS, or a JSON object {name: stage settings} (added to the driver default)")
    ap.add_argument("--workdir", type=Path)
    a = ap.parse_args()
    from stages.config import PipelineConfig
    from stages.drive.sources import driver_entry, driver_motion, prepare_driver, track_driver
    from stages.face.flame import FLAME
    from stages.face.model import load_face_model
    from stages.face.synth import SynthSpec, generate_params, render_video
    from stages.runner.context import actor_key
    from stages.store.local import LocalStore

    work = a.workdir or Path(tempfile.mkdtemp(prefix="driver-track-"))
    work.mkdir(parents=True, exist_ok=True)
    data = load_face_model(None)
    clip = work / f"driver-{a.frames}-{a.seed}.mp4"
    if not clip.is_file():
        spec = SynthSpec(n_frames=a.frames, size=a.size, seed=a.seed, winks=((1.2, 0.4, 0), (3.0, 0.4, 1)))
        render_video(data, generate_params(data, spec), clip, spec=spec, batch=16, device=a.device)
    gt = dict(np.load(clip.with_suffix(".npz")))
    model = FLAME(data)
    store = LocalStore(work / "store")
    store.put_json(actor_key("actor", "config.json"), PipelineConfig(preset="full").to_dict())
    out: dict = {"frames": a.frames, "size": a.size, "seed": a.seed, "device": a.device, "variants": {}}
    if a.variants.lstrip().startswith("{"):  # e.g. '{"lm200": {"track": {"landmark_steps": 200}}}'
        for name, extra in json.loads(a.variants).items():
            VARIANTS[name] = {k: {**VARIANTS["landmarks"].get(k, {}), **extra.get(k, {})}
                              for k in {*VARIANTS["landmarks"], *extra}}
        names = list(json.loads(a.variants))
    else:
        names = a.variants.split(",")
    for name in names:
        prepare_driver(store, "actor", name, clip)
        cfg_key = actor_key(driver_entry(name), "config.json")
        cfg = PipelineConfig.from_dict(store.get_json(cfg_key))
        store.put_json(cfg_key, PipelineConfig(cfg.preset, dict(VARIANTS[name]), cfg.assets).to_dict())
        t0 = time.perf_counter()
        results = track_driver(store, name, device=a.device, jobs=a.jobs)
        seconds = time.perf_counter() - t0
        motion = driver_motion(store, name, work / f"scratch-{name}")
        shape = np.asarray(motion.shape if motion.shape is not None else np.zeros(data.n_shape), np.float32)
        out["variants"][name] = {"seconds": round(seconds, 1),
                                 "stage_seconds": {r.stage: round(r.seconds, 1) for r in results},
                                 **scores(model, gt, motion, shape)}
        print(json.dumps({name: out["variants"][name]}), file=sys.stderr, flush=True)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
