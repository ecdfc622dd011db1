"""What stage overlap gains: the same clip through ingest .. track (or any ``--until``) one stage at
a time, then as the graph allows stage by stage, then shard by shard, in fresh stores (prints one
JSON object).

    python bench/overlap_bench.py [--frames 10000] [--video PATH] [--until track] [--preset full]
                                  [--device cuda] [--jobs N] [--repeat 1] [--workdir DIR]
                                  [--arms sequential,overlap,shards] [--shard-size N]

Per arm (``sequential``: ``max_parallel=1``, the old runner; ``overlap``: the scheduler of
:mod:`stages.runner.schedule` with stage-level overlap only; ``shards``: the same with shard-level
overlap, landmarks and masks starting on the shards ingest has written): the run's wall clock, the
sum of the stages, the overlap saved, and each stage's status, start, end and seconds. ``gain_s``
is the sequential wall clock less the stage-overlapped one, ``shard_gain_s`` the stage-overlapped
wall clock less the shard-overlapped one. ``--until masks`` measures the early stages alone. With
``--until track`` the part of the graph where stages can overlap (masks beside calibrate and track)
is covered; the stages after it run one after another in every arm. Each arm
runs in a fresh Python process (no warm imports, CUDA context or forkserver carried over) and a
fresh store, removed afterwards. ``--repeat N`` alternates the arms N times and reports medians (on a
busy machine one pair is noise: compare the stage seconds, not only the wall clocks).
``same_outputs``: per stage, whether every run of every arm wrote the same outputs (digest of the
stage manifest's output list; GPU stages such as track need not be bit-identical).

Expected on one H100 at 10,000 frames (issue #17's log: masks 15.3 s, calibrate 24.0 s, track 71.4 s):
``gain_s`` about 10-15 s, as long as masks (12 of 16 cores) does not slow calibrate/track's CPU side.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stages.bench.e2e import synthetic_clip  # noqa: E402
from stages.runner.pipeline import prepare_actor, run_pipeline  # noqa: E402
from stages.runner.timeline import Timeline  # noqa: E402
from stages.store.local import LocalStore  # noqa: E402


ACTOR = "bench"  # the same in every arm (its own store each), so that their outputs can be compared
ARMS = {"sequential": {"max_parallel": 1, "shard_overlap": False},
        "overlap": {"max_parallel": None, "shard_overlap": False},
        "shards": {"max_parallel": None, "shard_overlap": True}}


def arm(name: str, clip: Path, workdir: Path, args: argparse.Namespace) -> dict:
    import shutil

    root = Path(tempfile.mkdtemp(prefix=f"store-{name}-", dir=workdir))
    store = LocalStore(root)
    overrides = {"ingest": {"shard_size": args.shard_size}} if args.shard_size else None
    pipeline = prepare_actor(store, ACTOR, clip, None, args.preset, overrides)
    t0 = time.monotonic()
    results = run_pipeline(store, ACTOR, pipeline, device=args.device, jobs=args.jobs, until=args.until,
                           **ARMS[name])
    timeline = Timeline(results, time.monotonic() - t0)
    print(timeline.table(), file=sys.stderr, flush=True)
    digests = {r.stage: store.get_json(f"actors/{ACTOR}/{r.stage}/manifest.json")["outputs_digest"] for r in results}
    shutil.rmtree(root, ignore_errors=True)
    return {**timeline.to_dict(), "outputs_digest": digests}


def main() -> None:
    import torch

    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=10_000)
    ap.add_argument("--video", default=None, help="a clip to use instead of the synthetic one")
    ap.add_argument("--until", default="track")
    ap.add_argument("--preset", default="full")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--arms", default="sequential,overlap,shards", help="arms to run, comma-separated")
    ap.add_argument("--shard-size", type=int, default=0, help="ingest's shard size (0: the preset's)")
    ap.add_argument("--arm", choices=tuple(ARMS), default=None, help="(internal) run one arm")
    args = ap.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="overlap-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    clip = Path(args.video) if args.video else synthetic_clip(workdir / f"synthetic-{args.frames}.mp4", args.frames)
    if args.arm is not None:
        print(json.dumps(arm(args.arm, clip, workdir, args)))
        return
    runs: dict[str, list[dict]] = {name: [] for name in args.arms.split(",")}
    for _ in range(max(1, args.repeat)):
        for name in runs:
            cmd = [sys.executable, __file__, "--arm", name, "--video", str(clip), "--until", args.until, "--preset",
                   args.preset, "--device", args.device, "--jobs", str(args.jobs), "--workdir", str(workdir),
                   "--shard-size", str(args.shard_size)]
            out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
            runs[name].append(json.loads(out.strip().splitlines()[-1]))
    wall = {name: statistics.median(r["wall_s"] for r in rs) for name, rs in runs.items()}
    print(json.dumps({
        "clip": str(clip), "until": args.until, "preset": args.preset, "device": args.device, "jobs": args.jobs,
        "repeat": max(1, args.repeat), "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        **{f"{name}_wall_s": w for name, w in wall.items()},
        "gain_s": round(wall["sequential"] - wall["overlap"], 3) if {"sequential", "overlap"} <= set(wall) else None,
        "shard_gain_s": round(wall["overlap"] - wall["shards"], 3) if {"overlap", "shards"} <= set(wall) else None,
        "stage_seconds": {name: {st["stage"]: statistics.median(r["stages"][i]["seconds"] for r in rs)
                                 for i, st in enumerate(rs[0]["stages"])} for name, rs in runs.items()},
        "same_outputs": {st: len({r["outputs_digest"][st] for rs in runs.values() for r in rs}) == 1
                         for st in next(iter(runs.values()))[0]["outputs_digest"]},
        "runs": runs,
    }, indent=1))


if __name__ == "__main__":
    main()
