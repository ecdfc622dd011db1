"""An actor's dataset with or without the tracker's image-based levels (issues #17/#19).

    python bench/actor_photo_run.py STORE [--actor w] [--video /work/shared/data/wojtek.mp4]
        [--variant photo|landmarks] [--until assemble|train|render] [--device cpu|cuda] [--train-seed 0] [--preset tiny]

Runs the full preset's pipeline (``avatar run --device cpu --until assemble``) of the video into a fresh
actor of STORE, with the tracker's photometric level as the preset has it (``photo``) or without it
(``landmarks``: ``calibrate.appearance_steps = 0``, ``track.photometric_steps = 0``, the settings drivers
use). Each stage group runs in its own process (ingest + landmarks + masks, then calibrate, then track,
then assemble) so that its CPU seconds (user + system of the process tree, ``getrusage``) can be told
apart; a last no-op run (everything finished) measures the per-process start-up, which is subtracted.
With ``OMP_NUM_THREADS=1`` the CPU seconds hardly depend on what else the machine runs; on a GPU they are
only a proxy for the cost. Prints one JSON object: per stage CPU and wall seconds, calibrate's and
assemble's landmark error (px), assemble's head steadiness. The dataset (``STORE/actors/ACTOR/dataset``)
is what ``bench/heldout_breakdown.py`` scores. ``--until render`` (on the GPU: ``--device cuda``) goes on to
the full preset's training and the render stage's held-out PSNR (``avatar/report.json``), ``--train-seed``
setting ``train.seed``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stages.drive.sources import DRIVER_STAGE_SETTINGS  # noqa: E402

PHOTOMETRIC_LEVELS = {"calibrate": {"appearance_steps": 150}, "track": {"photometric_steps": 80}}
"""The image-based levels as they were the default before 2026-12-07 (the ``photo`` arm sets them explicitly)."""
VARIANTS = {"photo": PHOTOMETRIC_LEVELS, "landmarks": DRIVER_STAGE_SETTINGS}
GROUPS = ("masks", "calibrate", "track", "assemble", "train", "render")
"""``until`` of each process: the first runs ingest, landmarks and masks, each later one a single stage."""

_CHILD = """
import json, sys
sys.path.insert(0, {root!r})
from stages.config import PipelineConfig
from stages.runner.pipeline import run_pipeline
from stages.store import open_store
cfg = PipelineConfig.from_dict(json.loads({cfg!r}))
res = run_pipeline(open_store({store!r}), {actor!r}, cfg, device={device!r}, jobs=1, until={until!r})
print(json.dumps([[r.stage, r.status, round(r.seconds, 2)] for r in res]))
"""


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_group(store: str, actor: str, cfg: dict, until: str, device: str = "cpu") -> dict:
    """Run the pipeline up to ``until`` in a fresh process; its CPU and wall seconds and the stages' results."""
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    code = _CHILD.format(root=str(ROOT), cfg=json.dumps(cfg), store=store, actor=actor, until=until, device=device)
    cpu0, t0 = _children_cpu(), time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    cpu, wall = _children_cpu() - cpu0, time.perf_counter() - t0
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"pipeline up to {until} failed (exit {proc.returncode})")
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"cpu_s": round(cpu, 1), "wall_s": round(wall, 1),
            "ran": [s for s, status, _ in results if status == "ran"]}


def run_staged(store: str, actor: str, cfg: dict, groups: tuple[str, ...] = GROUPS[:4], device: str = "cpu") -> dict:
    """Each group in its own process, then a no-op process (start-up cost), subtracted from each group's CPU."""
    out = {g: run_group(store, actor, cfg, g, device) for g in groups}
    idle = run_group(store, actor, cfg, groups[-1], device)
    for g in groups:
        out[g]["cpu_s_net"] = round(out[g]["cpu_s"] - idle["cpu_s"], 1)
    out["startup"] = {"cpu_s": idle["cpu_s"], "wall_s": idle["wall_s"]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("store")
    ap.add_argument("--actor", default="w")
    ap.add_argument("--video", type=Path, default=Path("/work/shared/data/wojtek.mp4"))
    ap.add_argument("--variant", choices=sorted(VARIANTS), default="landmarks")
    ap.add_argument("--until", default="assemble", choices=GROUPS)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--train-seed", type=int, default=None)
    ap.add_argument("--preset", default=None, help="default: full (tiny: a smoke run of this script)")
    args = ap.parse_args()
    from stages.runner.pipeline import prepare_actor
    from stages.store import open_store

    overrides = {k: dict(v) for k, v in (VARIANTS[args.variant] or {}).items()}
    if args.train_seed is not None:
        overrides["train"] = {"seed": args.train_seed}
    overrides = overrides or None
    cfg = prepare_actor(open_store(args.store), args.actor, args.video, None, args.preset, overrides=overrides)
    groups = GROUPS[:GROUPS.index(args.until) + 1]
    out: dict = {"video": str(args.video), "variant": args.variant, "overrides": overrides,
                 "device": args.device, "stages": run_staged(args.store, args.actor, cfg.to_dict(), groups, args.device)}
    root = Path(args.store) / "actors" / args.actor
    for stage in ("calibrate", "track", "assemble"):
        m = root / stage / "manifest.json"
        if m.exists():
            stats = json.loads(m.read_text()).get("stats", {})
            out.setdefault("stats", {})[stage] = {k: v for k, v in stats.items() if k != "phases_s"}
    rep = root / "assemble" / "report.json"
    if rep.exists():
        r = json.loads(rep.read_text())
        lm = r.get("landmark_error_px", {})
        out["landmark_error_px"] = {k: lm.get(k) for k in ("median", "p95", "max")}
        out["steadiness"] = r.get("steadiness")
    avatar = root / "avatar" / "report.json"
    if avatar.exists():
        r = json.loads(avatar.read_text())
        out["held_out"] = {k: r.get(k) for k in ("psnr_mean", "psnr_min", "ssim_mean", "train_steps", "frames")}
    print(json.dumps(out, default=str))


if __name__ == "__main__":
    main()
