"""How much the cross-reenactment test's mouth r depends on actor B's training draw.

    python bench/mouth_seed_bench.py --dir D --seeds 0 1 2 3 [--jobs 2]

Uses the clips of ``tests/drive/test_cross_reenactment.py`` (``D/a.mp4``, ``D/a.npz``, ``D/b.mp4``: made by
that test with ``AVATAR_DRIVE_TEST_DIR=D``, or here when absent). For each seed: actor ``b<seed>`` is
trained as the test trains B (tiny preset, 128-px avatar) with ``train.seed`` = seed, driven by A's video,
and MediaPipe FaceMesh reads drive.mp4's frames; the mouth opening (inner lips 13-14 over the outer eye
corners 33-263) is correlated with A's ground truth (Pearson r). Prints one JSON line per seed. The store
(``D/seeds``) is resumable.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def mouth_r(mp4: Path, truth: Path) -> tuple[float, int]:
    """Pearson r of drive.mp4's mouth opening with the driver's true one, and the frames used."""
    import av

    from stages.video.facemesh import FaceMeshTracker

    with av.open(str(mp4)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    with FaceMeshTracker(score_every=0) as fm:
        pts = np.stack([fm.process(f).points[:, :2] for f in frames])
    gt = np.load(truth)["landmarks478"]

    def mouth(p: np.ndarray) -> np.ndarray:
        return np.linalg.norm(p[:, 13] - p[:, 14], axis=1) / np.linalg.norm(p[:, 33] - p[:, 263], axis=1)

    ok = np.isfinite(pts).all(axis=(1, 2))
    return float(np.corrcoef(mouth(pts)[ok], mouth(gt)[ok])[0, 1]), int(ok.sum())


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args(argv)
    from stages.cli import main as cli
    from stages.face.model import load_face_model
    from stages.face.synth import SynthSpec, generate_params, render_video
    from stages.runner.pipeline import prepare_actor
    from stages.store.local import LocalStore

    d = Path(args.dir)
    d.mkdir(parents=True, exist_ok=True)
    for name, seed in (("a", 2), ("b", 1)):  # the test's A_SEED, B_SEED, 48 frames at 256 px
        if not (d / f"{name}.mp4").is_file():
            model = load_face_model(None)
            spec = SynthSpec(n_frames=48, size=256, seed=seed)
            render_video(model, generate_params(model, spec), d / f"{name}.mp4", spec=spec, batch=16)
    store = d / "seeds"
    jobs = ["--device", "cpu", "--jobs", str(args.jobs)]
    for seed in args.seeds:
        actor = f"b{seed}"
        prepare_actor(LocalStore(store), actor, d / "b.mp4", None, "tiny",
                      overrides={"train": {"resolution": 128, "uv_resolution": 64, "seed": seed}})
        assert cli(["run", "--actor", actor, "--video", str(d / "b.mp4"), "--store", str(store), "--preset", "tiny",
                    *jobs]) == 0
        assert cli(["drive", "--actor", actor, "--video", str(d / "a.mp4"), "--name", "a", "--store", str(store),
                    "--resolution", "512", *jobs]) == 0
        r, n = mouth_r(store / "actors" / actor / "drive" / "a" / "drive.mp4", d / "a.npz")
        print(json.dumps({"train_seed": seed, "mouth_r": round(r, 4), "frames": n}), flush=True)


if __name__ == "__main__":
    main()
