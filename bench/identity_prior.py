"""Given identity in calibration: held fixed, a strong prior, or no identity at all (our own fit),
measured on synthetic ground truth (stand-in model, exact or 1 px-noisy landmarks).

The given identity is the truth plus an error of a chosen size (MICA's published NoW error is about
1 mm mean; 0 mm is the ideal case). Reports, per setting, the neutral-mesh error of the calibrated
identity against the true one (mm, mean over vertices after one similarity alignment) and the
keyframes' landmark error (px). Prints JSON.

    OMP_NUM_THREADS=1 python bench/identity_prior.py [--keyframes 12] [--seeds 2]
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
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from stages.face.flame import FLAME  # noqa: E402
from stages.tracking.calibration import CalibrationInputs, calibrate  # noqa: E402
from stages.tracking.identity import calibrate_with_identity  # noqa: E402
from stages.tracking.losses import LandmarkWeights  # noqa: E402
from stages.tracking.schedule import calibrate_schedule  # noqa: E402
from tracking.synthetic import make_clip, similarity_aligned_error, standin  # noqa: E402


def neutral(model: FLAME, shape: np.ndarray) -> np.ndarray:
    z = torch.zeros(1, 0)
    six = torch.tensor([[1.0, 0, 0, 0, 1, 0]])
    with torch.no_grad():
        return model(shape=torch.as_tensor(shape, dtype=torch.float32)[None], expression=z, jaw=six,
                     eyes=six.repeat(1, 2)).vertices.numpy()


def perturb(model: FLAME, truth: np.ndarray, error_mm: float, rng: np.random.Generator) -> np.ndarray:
    """truth + a random shape offset scaled so that the neutral mesh is ``error_mm`` off on average
    after a similarity alignment (the measure the results use)."""
    if error_mm == 0:
        return truth.copy()
    d = rng.normal(size=truth.shape).astype(np.float32) * (1.0 / (1.0 + np.arange(truth.size) / 4.0)) ** 1.5
    base = neutral(model, truth)
    lo, hi = 0.0, 1.0
    while 1000 * similarity_aligned_error(neutral(model, truth + hi * d), base) < error_mm:
        hi *= 2
    for _ in range(30):  # the aligned error grows monotonically with the scale: bisect
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if 1000 * similarity_aligned_error(neutral(model, truth + mid * d), base) < error_mm else (lo, mid)
    return (truth + d * hi).astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--keyframes", type=int, default=12)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--rigid", type=int, default=100)
    ap.add_argument("--identity-steps", type=int, default=300)
    args = ap.parse_args()
    torch.manual_seed(0)
    model = FLAME(standin())
    pw = LandmarkWeights().per_point()[model.mp_index]
    sched = calibrate_schedule(args.rigid, args.identity_steps, 0)
    rows = []
    for seed in range(args.seeds):
        clip = make_clip(model, 60, seed=seed + 2)
        truth = clip.params["shape"][0]
        keys = np.linspace(0, 59, args.keyframes).round().astype(int)
        rng = np.random.default_rng(seed)
        for noise_px in (0.0, 1.0):
            lm = clip.landmarks[keys] + rng.normal(size=clip.landmarks[keys].shape) * noise_px
            inputs = CalibrationInputs(torch.as_tensor(lm, dtype=torch.float32), pw, keys + 1)
            settings = [("own fit (no identity)", None, None, None)]
            for err in (0.0, 1.0, 2.0):
                settings += [(f"fixed, identity error {err} mm", err, "fixed", None)]
                settings += [(f"prior 1e-4, identity error {err} mm", err, "prior", 1e-4)]
                settings += [(f"prior 1e-6, identity error {err} mm", err, "prior", 1e-6)]
            for name, err, mode, prior in settings:
                t0 = time.monotonic()
                if mode is None:
                    calib = calibrate(model, inputs, schedule=sched, refine_iterations=300)
                else:
                    given = perturb(model, truth, err, np.random.default_rng(100 + seed))
                    calib = calibrate_with_identity(model, inputs, given, mode=mode, prior=prior, schedule=sched,
                                                    refine_iterations=300)
                mesh_mm = 1000 * similarity_aligned_error(neutral(model, calib.shape), neutral(model, truth))
                rows.append({"seed": seed + 2, "landmark_noise_px": noise_px, "setting": name,
                             "identity_error_mm": round(mesh_mm, 3),
                             "landmark_error_px": round(float(np.median(calib.error_px)), 3),
                             "seconds": round(time.monotonic() - t0, 1)})
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    summary: dict[str, dict[str, float]] = {}
    for r in rows:
        key = f"{r['setting']} | landmark noise {r['landmark_noise_px']} px"
        s = summary.setdefault(key, {"identity_error_mm": 0.0, "landmark_error_px": 0.0, "n": 0})
        s["identity_error_mm"] += r["identity_error_mm"]
        s["landmark_error_px"] += r["landmark_error_px"]
        s["n"] += 1
    for s in summary.values():
        s["identity_error_mm"] = round(s["identity_error_mm"] / s["n"], 3)
        s["landmark_error_px"] = round(s["landmark_error_px"] / s["n"], 3)
    print(json.dumps({"device": "cpu", "keyframes": args.keyframes, "seeds": args.seeds, "mean": summary,
                      "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
