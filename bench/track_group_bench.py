"""Benchmark of landmark-only tracking: consecutive shards tracked as one sequence (the track stage's
shard groups) against one optimisation per shard (as before), on the current device.

    python bench/track_group_bench.py [--frames 10000] [--shard 500] [--overlap 8]
                                      [--model standin|flame] [--rigid 80] [--landmark 390]
                                      [--per-shard-max 0] [--full-model]

A synthetic clip (stages.face.synth: known parameters, exact landmarks) of ``--frames`` frames is
cut into shards of ``--shard`` frames, each with ``--overlap`` frames of its neighbours (as the
track stage does). Then, with the track stage's landmark-only schedule (``--rigid`` + ``--landmark``
Adam steps, the default 80 + 390):

- ``per_shard``: each shard's neighbourhood is its own optimisation, one after another (the
  stage ran up to 4 such shard processes on one GPU, which time-slice: their sum is the stage's
  time); ``--per-shard-max N`` times only the first N shards and scales the time up;
- ``grouped``: every frame in one optimisation (batches of up to 16384 frames, the stage's
  ``landmark_batch_size``; each frame's gradients scaled to those it has in its shard alone, as the
  stage does), each shard's rows cut from it afterwards;
- ``grouped_full_model`` (``--full-model``): the same with the full face model in every step
  instead of its landmark vertices only (:mod:`stages.face.landmark_model`), to show what that gains.

``--model flame`` uses a FLAME-sized random model (5,023 vertices, 105 MediaPipe points, like
FLAME2020) instead of the 478-vertex stand-in. Prints one JSON object: per arm the seconds, Adam
steps, ms per step, frames/s, median landmark error (px); and how far the grouped parameters are
from the per-shard ones (landmark error and head translation).
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

from stages.face.camera import project  # noqa: E402
from stages.face.flame import FLAME  # noqa: E402
from stages.face.model import FaceModelData, load_face_model  # noqa: E402
from stages.face.synth import SynthSpec, generate_params  # noqa: E402
from stages.runner.shards import plan_shards  # noqa: E402
from stages.tracking import fit as fitting  # noqa: E402
from stages.tracking.calibration import personalised  # noqa: E402
from stages.tracking.eyelids import lid_expression_basis, lid_index  # noqa: E402
from stages.tracking.losses import LandmarkWeights  # noqa: E402
from stages.tracking.schedule import track_schedule  # noqa: E402
from stages.tracking.sequence import SequenceInputs, track_sequence  # noqa: E402

LANDMARK_BATCH = 16384  # the track stage's landmark_batch_size default


def flame_sized(directory: Path) -> FaceModelData:
    """A random FLAME-sized model in FLAME's file formats (105 MediaPipe points, as FLAME2020's embedding)."""
    import pickle

    from stages.face import flame_file as ff

    pkl = ff.write_fake_flame_pkl(directory / "generic_model.pkl", seed=1)
    rng = np.random.default_rng(2)
    np.savez(directory / "mp.npz", lmk_face_idx=rng.integers(0, ff.FLAME_FACES, 105),
             lmk_b_coords=rng.dirichlet([1, 1, 1], 105), landmark_indices=np.sort(rng.choice(478, 105, replace=False)))
    (directory / "masks.pkl").write_bytes(pickle.dumps({"face": np.arange(ff.FLAME_VERTICES)}, protocol=2))
    return load_face_model(pkl, masks=directory / "masks.pkl", mediapipe_embedding=directory / "mp.npz")


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def clip(model: FLAME, n: int, dev: torch.device) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Landmark pixels [N, L, 2] of a synthetic clip and its ground-truth parameters."""
    params = generate_params(model.cpu(), SynthSpec(n_frames=n, seed=3))
    model.to(dev)
    keys = ("shape", "expression", "jaw", "eyes", "eyelids")
    out = []
    with torch.no_grad():
        for s in range(0, n, 4096):
            p = {k: torch.as_tensor(params[k][s:s + 4096], device=dev) for k in keys}
            lm = model(**p).landmarks_mp
            K, R, t = (torch.as_tensor(params[k][s:s + 4096], device=dev) for k in ("K", "R", "t"))
            out.append(project(lm, K, R, t)[0].cpu().numpy())
    pix = np.concatenate(out).astype(np.float32)
    # centre the face on average, as the test clips do (a shift of every frame's pixels)
    return pix - pix.reshape(-1, 2).mean(0) + 256.0, params


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=10000)
    ap.add_argument("--shard", type=int, default=500)
    ap.add_argument("--overlap", type=int, default=8)
    ap.add_argument("--model", choices=("standin", "flame"), default="standin")
    ap.add_argument("--rigid", type=int, default=80)
    ap.add_argument("--landmark", type=int, default=390)
    ap.add_argument("--per-shard-max", type=int, default=0, help="time only this many shards per shard (0: all)")
    ap.add_argument("--full-model", action="store_true", help="also time grouped with the full face model per step")
    args = ap.parse_args()
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    out: dict = {"device": torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu",
                 "torch": torch.__version__, "threads": torch.get_num_threads(), "frames": args.frames,
                 "shard": args.shard, "overlap": args.overlap, "model": args.model}
    with tempfile.TemporaryDirectory() as tmp:
        data = load_face_model(None) if args.model == "standin" else flame_sized(Path(tmp))
    base = FLAME(data)
    targets, params = clip(base, args.frames, dev)
    model = personalised(base.to(dev), torch.as_tensor(params["shape"][0], device=dev))
    K = params["K"][0]
    shared = fitting.Shared(shape=torch.zeros(0, device=dev), focal=torch.tensor([K[0, 0], K[1, 1]], device=dev),
                            pp=torch.tensor([K[0, 2], K[1, 2]], device=dev))
    mp_index = base.mp_index.cpu().numpy()
    point_w = LandmarkWeights().per_point()[mp_index].to(dev)
    schedule = track_schedule(args.rigid, args.landmark, 0)
    lids, lid_basis = lid_index(mp_index), lid_expression_basis(model)
    frames = np.arange(1, args.frames + 1)
    ok = np.ones(args.frames, bool)
    out.update(vertices=base.n_vertices, landmarks=int(len(mp_index)), steps_per_optimisation=schedule.total_steps)

    def track(lo: int, hi: int, batch: int, reference: int | None = None):  # noqa: ANN202 - SequenceResult
        inputs = SequenceInputs(frames=frames[lo:hi], targets=targets[lo:hi], ok=ok[lo:hi])
        return track_sequence(model, shared, inputs, point_w, schedule, batch_size=batch, chunk_overlap=16,
                              lids=lids, lid_basis=lid_basis, reference_frames=reference)

    def timed(fn):  # noqa: ANN001, ANN202
        sync()
        t0 = time.perf_counter()
        r = fn()
        sync()
        return r, time.perf_counter() - t0

    timed(lambda: track(0, min(64, args.frames), LANDMARK_BATCH))  # warm-up: CUDA context, kernels

    def report(name: str, seconds: float, steps: int, errors: np.ndarray, **extra) -> None:
        out[name] = {"seconds": round(seconds, 3), "steps": steps, "ms_per_step": round(1000 * seconds / steps, 3),
                     "frames_per_s": round(args.frames / seconds, 1),
                     "landmark_error_px_median": round(float(np.nanmedian(errors)), 4), **extra}

    # per shard: each neighbourhood alone, one after another
    shards = plan_shards(args.frames, args.shard)
    timed_shards = shards[: args.per_shard_max] if args.per_shard_max > 0 else shards
    per_shard, seconds, steps = {}, 0.0, 0
    for s in timed_shards:
        lo, hi = max(0, s.start - 1 - args.overlap), min(args.frames, s.stop - 1 + args.overlap)
        r, dt = timed(lambda lo=lo, hi=hi: track(lo, hi, LANDMARK_BATCH))
        seconds += dt
        steps += schedule.total_steps
        per_shard[s.index] = r
    scale = len(shards) / len(timed_shards)
    errors = np.concatenate([r.error_px[(r.frames >= s.start) & (r.frames < s.stop)]
                             for s, r in zip(timed_shards, per_shard.values())])
    report("per_shard", seconds * scale, int(steps * scale), errors, shards=len(shards),
           shards_timed=len(timed_shards))

    # grouped: every frame in one optimisation, each frame's gradients as in its shard alone (as the stage)
    reference = round(np.mean([min(args.frames, s.stop - 1 + args.overlap) - max(0, s.start - 1 - args.overlap)
                               for s in shards]))
    n_batches = len(range(0, args.frames, LANDMARK_BATCH))
    grouped, seconds = timed(lambda: track(0, args.frames, LANDMARK_BATCH, reference))
    report("grouped", seconds, schedule.total_steps * n_batches, grouped.error_px, batches=n_batches)

    # how far apart the two are, on the timed shards' own frames
    t_diff = []
    for s, r in zip(timed_shards, per_shard.values()):
        rows = (r.frames >= s.start) & (r.frames < s.stop)
        t_diff.append(np.abs(r.params["t"][rows] - grouped.params["t"][s.start - 1:s.stop - 1]).max(axis=1))
    t_diff = np.concatenate(t_diff)
    out["grouped_vs_per_shard"] = {"translation_mm_median": round(1000 * float(np.median(t_diff)), 3),
                                   "translation_mm_max": round(1000 * float(t_diff.max()), 3)}
    out["speedup"] = round(out["per_shard"]["seconds"] / out["grouped"]["seconds"], 2)

    if args.full_model:
        import stages.tracking.fit as fit_module
        import stages.tracking.sequence as sequence_module

        saved = fit_module.landmark_model, sequence_module.landmark_model
        fit_module.landmark_model = sequence_module.landmark_model = lambda m: m
        try:
            full, seconds = timed(lambda: track(0, args.frames, LANDMARK_BATCH, reference))
        finally:
            fit_module.landmark_model, sequence_module.landmark_model = saved
        report("grouped_full_model", seconds, schedule.total_steps * n_batches, full.error_px)
    if dev.type == "cuda":
        out["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
