"""Held-out quality with and without Gaussians that follow their triangle (``train.triangle_scale``,
``train.triangle_frame``, or any other train settings given as ``--variants``).

Trains the avatar of one assembled dataset once per variant and seed, identical but for the variant's
settings, and scores the held-out frames as the render stage does (PSNR, SSIM, and the eye region's
PSNR where the actor's landmarks are given). Prints one JSON object. Default variants: triangle
scaling off and on (both without the triangle frame).

    python bench/triangle_scale_bench.py --dataset STORE/actors/A/dataset --landmarks STORE/actors/A/landmarks \
        --preset tiny --seeds 0,1 --device cpu --out result.json
    python bench/triangle_scale_bench.py --video ../shared/data/wojtek.mp4 --store /tmp/ts --preset full \
        --seeds 0,1 --device cuda --out result.json      # runs ingest..assemble first (actor "bench")

    python bench/triangle_scale_bench.py --dataset ... --variants \
        '{"plain": {"triangle_frame": false}, "frame": {"triangle_frame": true}}'

``--preset``: the train stage's preset values (tiny, demo) or ``full`` (the defaults).
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

from stages.dataset.layout import DatasetLayout  # noqa: E402
from stages.gauss.data import AvatarFrames, TrackedSequence, background_rgb, choose_split  # noqa: E402
from stages.gauss.evaluate import evaluate  # noqa: E402
from stages.gauss.trainer import TrainConfig, choose_renderer, train  # noqa: E402


DEFAULT_VARIANTS = {"off": {"triangle_scale": False, "triangle_frame": False},
                    "triangle_scale": {"triangle_scale": True, "triangle_frame": False}}


def train_config(preset: str, **changes) -> TrainConfig:
    """The train stage's config for ``preset`` (its PRESETS, demo on top of tiny), with ``changes``."""
    from stages import train as train_stage
    from stages.config import PRESET_BASE

    values = dict(train_stage.PRESETS.get(PRESET_BASE.get(preset, ""), {}))
    values.update(train_stage.PRESETS.get(preset, {}))
    values.update(changes)
    return TrainConfig(**values)


def held_out_landmarks(folder: Path, test_idx: list[int]) -> np.ndarray | None:
    """[n, 478, 3] MediaPipe points of the held-out frames (checkpoint i = frame i + 1), NaN where none."""
    from stages.tracking.stage_io import read_landmarks

    found: dict[int, np.ndarray] = {}
    for p in sorted(folder.glob("*.npz")):
        lm = read_landmarks(p)
        found.update({int(k): (x if ok else np.full_like(x, np.nan)) for k, x, ok in zip(lm.frames, lm.points, lm.ok)})
    if not found:
        return None
    return np.stack([found.get(i + 1, np.full((478, 3), np.nan, np.float32)) for i in test_idx])


def run_one(cfg: TrainConfig, layout: DatasetLayout, device: str, points: np.ndarray | None) -> dict:
    from stages.face.model import load_face_model
    from stages.gauss.eye_region import eye_region_mask, masked_psnr
    from stages.gauss.surface import flame_surface

    seq = TrackedSequence.load(layout)
    surface = flame_surface(load_face_model(None), seq.shape)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        result = train(cfg, surface, layout, work, device)
    seconds = time.perf_counter() - t0
    split = choose_split(len(seq), cfg.test_frames, cfg.test_fraction, cfg.max_train_frames)
    bg = background_rgb(cfg.background)
    frames = AvatarFrames(layout, seq, split.test, cfg.resolution, bg)
    eyes: list[float] = []

    def on_frames(gt, img) -> None:
        for g, r in zip(gt, img):
            k = len(eyes)
            p = None if points is None else points[k]
            score = None if p is None or not np.isfinite(p[:, :2]).all() else masked_psnr(
                r, g, eye_region_mask(p, cfg.resolution, cfg.resolution / 512.0))
            eyes.append(np.nan if score is None else score)

    ev = evaluate(result.model, surface.to(device), frames, torch.tensor(bg), choose_renderer(cfg.renderer, device),
                  device, on_frames=on_frames)
    s = ev.summary()
    return {"psnr_mean": round(s["psnr_mean"], 3), "psnr_min": round(s["psnr_min"], 3),
            "ssim_mean": round(s["ssim_mean"], 4),
            "eye_region_psnr_mean": None if not np.isfinite(eyes).any() else round(float(np.nanmean(eyes)), 3),
            "train_seconds": round(seconds, 1), "held_out_frames": len(split.test)}


def assemble(video: Path, store: Path, preset: str, device: str) -> tuple[Path, Path]:
    """Run ingest..assemble of ``video`` as actor ``bench`` in the local ``store`` (resumable); return its
    dataset and landmarks folders."""
    from stages.cli import main as cli

    if cli(["run", "--actor", "bench", "--video", str(video), "--store", str(store), "--preset", preset,
            "--device", device, "--until", "assemble"]) != 0:
        raise SystemExit(f"{video}: the pipeline stopped before assemble")
    return store / "actors" / "bench" / "dataset", store / "actors" / "bench" / "landmarks"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", type=Path, help="an assembled dataset folder (actors/A/dataset)")
    ap.add_argument("--landmarks", type=Path, help="the actor's landmarks stage folder (eye-region PSNR)")
    ap.add_argument("--video", type=Path, help="instead of --dataset: run ingest..assemble on this video first")
    ap.add_argument("--store", type=Path, default=Path("bench-store"), help="the local store --video uses")
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--variants", default=json.dumps(DEFAULT_VARIANTS),
                    help="JSON object: variant name -> train settings it changes (the first is the baseline)")
    a = ap.parse_args()
    variants = json.loads(a.variants)
    if a.video is not None:
        a.dataset, a.landmarks = assemble(a.video, a.store, a.preset, a.device)
    elif a.dataset is None:
        ap.error("give --dataset or --video")
    layout = DatasetLayout(a.dataset)
    out: dict = {"dataset": str(a.dataset), "preset": a.preset, "device": a.device, "runs": []}
    out["variants"] = variants
    names = list(variants)
    for seed in [int(s) for s in a.seeds.split(",")]:
        for name in names:
            cfg = train_config(a.preset, seed=seed, **variants[name])
            n = len(TrackedSequence.load(layout))
            split = choose_split(n, cfg.test_frames, cfg.test_fraction, cfg.max_train_frames)
            points = held_out_landmarks(a.landmarks, split.test) if a.landmarks else None
            r = {"seed": seed, "variant": name, **variants[name], **run_one(cfg, layout, a.device, points)}
            print(json.dumps(r), file=sys.stderr, flush=True)
            out["runs"].append(r)
    k = len(names)
    for key in ("psnr_mean", "eye_region_psnr_mean"):
        for j, name in enumerate(names[1:], 1):  # each variant against the first, seed by seed
            pairs = [(x[key], y[key]) for x, y in zip(out["runs"][::k], out["runs"][j::k]) if x[key] is not None]
            out[f"{key}_delta_per_seed" + ("" if k == 2 else f"_{name}")] = [round(b - a_, 3) for a_, b in pairs]
    text = json.dumps(out, indent=1)
    print(text)
    if a.out:
        a.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
