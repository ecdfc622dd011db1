"""Tracked eyelids of a real clip over time, beside MediaPipe's own per-eye closure: a PNG and JSON.

    python bench/eyelids_real_plot.py --store STORE --actor A --png out.png [--compare STORE2 --label2 before]

Reads the actor's ``track/*.npz`` (joined as assemble joins them) and ``landmarks/*.npz`` and plots, per
eye (the subject's left, right), the tracked ``eyelids``, the eye closure the expression carries
(``exp @ M^T``, :func:`stages.tracking.eyelids.lid_expression_basis`) and MediaPipe's closure
(:func:`stages.tracking.eyelids.eye_closure` of its lid landmarks). With ``--compare`` the same for a second
store (e.g. the track before a change) in grey. Prints one JSON object: per store, Pearson r of each eye's
eyelids with MediaPipe's closure, the blinks found (frames where MediaPipe's closure of both eyes passes
0.5) with the tracked eyelids there, and the head's jitter over the clip (``stages.tracking.jitter``:
RMS second difference of the head centre's position, mm, and of the rotation, degrees).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stages.face.flame import FLAME  # noqa: E402
from stages.face.model import load_face_model  # noqa: E402
from stages.tracking.eyelids import eye_closure, eye_opening_np, lid_expression_basis  # noqa: E402
from stages.tracking.jitter import head_jitter  # noqa: E402
from stages.tracking.join import join_tracks  # noqa: E402
from stages.tracking.stage_io import read_landmarks  # noqa: E402


def load(store: Path, actor: str) -> dict:
    """The joined track and the landmarks of ``actor`` in a local store."""
    root = store / "actors" / actor
    tracks = []
    for f in sorted((root / "track").glob("*.npz")):
        with np.load(f) as z:
            tracks.append({k: z[k] for k in z.files})
    joined = join_tracks(tracks)
    lms = [read_landmarks(p) for p in sorted((root / "landmarks").glob("*.npz"))]
    pts = np.concatenate([lm.points[:, :, :2] for lm in lms]).astype(np.float64)
    ok = np.concatenate([lm.ok for lm in lms])
    pts[~ok] = np.nan
    return {"params": joined.params, "R": joined.R, "points": pts}


def summary(d: dict, basis: np.ndarray, centre: np.ndarray) -> dict:
    lids = d["params"]["eyelids"]
    mp = eye_closure(eye_opening_np(d["points"]))
    ok = np.isfinite(mp).all(1)
    r = [round(float(np.corrcoef(lids[ok, e], mp[ok, e])[0, 1]), 3) for e in (0, 1)]
    blink = ok & (np.nan_to_num(mp).min(1) > 0.5)
    frames = np.flatnonzero(blink)
    carried = d["params"]["exp"] @ basis.T
    jit = head_jitter(d["R"], d["params"]["t"], centre)
    rest = ok & (np.nan_to_num(mp).max(1) < 0.2)
    return {"eyelids_r_with_mediapipe_closure": r, "blink_frames": (frames + 1).tolist(),
            "eyelids_at_blinks": lids[blink].round(2).tolist(),
            "eyelids_at_rest_median": np.median(lids[rest], 0).round(3).tolist(),
            "expression_closure_at_blinks": carried[blink].round(2).tolist(),
            "jitter": jit.as_dict()}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", required=True)
    ap.add_argument("--actor", required=True)
    ap.add_argument("--png", required=True)
    ap.add_argument("--compare", default=None, help="a second store with the same actor (plotted in grey)")
    ap.add_argument("--label", default="after")
    ap.add_argument("--label2", default="before")
    args = ap.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = load_face_model(None)
    basis = lid_expression_basis(FLAME(data)).numpy()
    centre = np.asarray(data.v_template, np.float64).mean(0)
    runs = [(args.label, load(Path(args.store), args.actor))]
    if args.compare:
        runs.append((args.label2, load(Path(args.compare), args.actor)))
    mp = eye_closure(eye_opening_np(runs[0][1]["points"]))
    fig, axes = plt.subplots(2, 1, figsize=(14, 7), sharex=True)
    frames = np.arange(1, len(mp) + 1)
    for e, (ax, name) in enumerate(zip(axes, ("subject's left eye (eyelids[:, 0])", "subject's right eye (eyelids[:, 1])"))):
        ax.plot(frames, mp[:, e], color="tab:green", lw=1, label="MediaPipe closure (eye_closure)")
        for (label, d), colour in zip(runs, ("tab:red", "0.5")):
            ax.plot(frames, d["params"]["eyelids"][:, e], color=colour, lw=1.3, label=f"tracked eyelids ({label})")
            ax.plot(frames, d["params"]["exp"] @ basis[e], color=colour, lw=0.8, ls=":",
                    label=f"eye closure in the expression ({label})")
        ax.axhline(0, color="k", lw=0.5)
        ax.set_title(name)
        ax.set_ylabel("closure (0 open, 1 shut)")
        ax.legend(fontsize=7, loc="upper right")
    axes[-1].set_xlabel("frame (25 fps)")
    fig.tight_layout()
    fig.savefig(args.png, dpi=80)
    out = {label: summary(d, basis, centre) for label, d in runs}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
