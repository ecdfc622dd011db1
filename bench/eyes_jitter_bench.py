"""Eyelids and steadiness on a real clip already run through ingest, landmarks and calibrate.

    python bench/eyes_jitter_bench.py --store STORE --actor A [--first 216 --last 250]
                                      [--window 151 250] [--device cpu]

1. Eyes: tracks frames ``--first..--last`` (the default schedule without the photometric level)
   with and without the per-eye eyelid opening term (stages.tracking.eyelids) and reports how far
   the fitted eyes' openings are from MediaPipe's (mean absolute difference per eye, scale-free
   units: about 0.2 for an open eye, 0 for a shut one) and the median landmark error.
2. Steadiness: tracks frames ``--window`` with our temporal terms and fits each frame alone
   (stages.tracking.jitter) and reports both head jitters.

Prints one JSON object. Uses the actor's calibration and face model (the stand-in without FLAME).
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

from stages.face.model import load_face_model  # noqa: E402
from stages.runner.context import actor_key  # noqa: E402
from stages.store.uri import open_store  # noqa: E402
from stages.tracking import fit as fitting  # noqa: E402
from stages.tracking.calibration import Calibration, personalised  # noqa: E402
from stages.tracking.eyelids import eye_opening_np, lid_index  # noqa: E402
from stages.tracking.face_assets import build_model  # noqa: E402
from stages.tracking.jitter import params_jitter, per_frame_fit  # noqa: E402
from stages.tracking.losses import LandmarkWeights  # noqa: E402
from stages.tracking.params import FrameParams, project  # noqa: E402
from stages.tracking.schedule import LossWeights, track_schedule  # noqa: E402
from stages.tracking.sequence import SequenceInputs, track_sequence  # noqa: E402
from stages.tracking.stage_io import Landmarks, read_landmarks  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--store", required=True)
    ap.add_argument("--actor", required=True)
    ap.add_argument("--first", type=int, default=216)
    ap.add_argument("--last", type=int, default=250)
    ap.add_argument("--window", type=int, nargs=2, default=(151, 250))
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    store = open_store(a.store)
    tmp = Path("/tmp") / f"eyes-bench-{a.actor}"
    tmp.mkdir(exist_ok=True)
    calib = Calibration.load(store.get_file(actor_key(a.actor, "calibrate", "calibration.npz"), tmp / "calib.npz"))
    names = sorted(k for k in store.list(actor_key(a.actor, "landmarks")) if k.endswith(".npz"))
    lm_all = Landmarks.cat([read_landmarks(store.get_file(k, tmp / Path(k).name)) for k in names])
    data = load_face_model(None)
    dev = torch.device(a.device)
    base = build_model(data, dev)
    model = personalised(base, torch.as_tensor(calib.shape, device=dev))
    shared = fitting.Shared(torch.zeros(0, device=dev), torch.as_tensor(calib.focal, device=dev).float(),
                            torch.as_tensor(calib.pp, device=dev).float())
    mp = base.mp_index.cpu().numpy()
    pw = LandmarkWeights().per_point()[mp].to(dev)
    lids = lid_index(mp)
    schedule = track_schedule(photometric=0)
    out: dict = {"device": a.device}

    def track(lm: Landmarks, weights: LossWeights) -> tuple[dict, np.ndarray, float]:
        r = track_sequence(model, shared, SequenceInputs(lm.frames, lm.points[:, mp, :2], lm.ok), pw, schedule, weights,
                           lids=lids)
        p = FrameParams.from_numpy(r.params, dev)
        with torch.no_grad():
            pix, _ = project(fitting.run_model(model, shared.shape, p).landmarks_mp, p.R, p.t, shared.focal, shared.pp)
        return r.params, eye_opening_np(pix.cpu().numpy()), float(np.nanmedian(r.error_px))

    sel = (lm_all.frames >= a.first) & (lm_all.frames <= a.last)
    lm = lm_all.select(sel)
    seen = eye_opening_np(lm.points[:, :, :2])
    out["eyes"] = {"frames": [a.first, a.last], "mediapipe_min_opening": seen.min(0).round(3).tolist()}
    for name, w in (("with_term", LossWeights()), ("without_term", LossWeights(eyelid_opening=0.0))):
        t0 = time.monotonic()
        _, opening, err = track(lm, w)
        out["eyes"][name] = {"opening_mae": np.abs(opening - seen).mean(0).round(4).tolist(),
                             "min_opening": opening.min(0).round(3).tolist(), "landmark_error_px_median": round(err, 3),
                             "seconds": round(time.monotonic() - t0, 2)}
    sel = (lm_all.frames >= a.window[0]) & (lm_all.frames <= a.window[1])
    lm = lm_all.select(sel)
    centre = np.asarray(data.v_template).mean(0)
    t0 = time.monotonic()
    ours, _, err = track(lm, LossWeights())
    t1 = time.monotonic()
    alone = per_frame_fit(model, shared, lm.points[:, mp, :2], lm.ok, pw, schedule)
    out["steadiness"] = {"frames": list(a.window), "ours": params_jitter(ours, centre).as_dict(),
                         "per_frame_fit": params_jitter(alone, centre).as_dict(), "landmark_error_px_median": round(err, 3),
                         "seconds_ours": round(t1 - t0, 2), "seconds_per_frame_fit": round(time.monotonic() - t1, 2)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
