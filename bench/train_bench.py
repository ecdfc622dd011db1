"""Training and rendering speed of the Gaussian avatar on one GPU (prints one JSON object).

    python bench/train_bench.py [--batch 16] [--steps 60] [--resolution 512] [--frames 256] [--e2e-steps 200]
    python bench/train_bench.py --quality [--lr-scales 4] [--quality-frames 2200] [--dataset-dir D]

A synthetic set: the toy head of :mod:`stages.gauss.synthetic` (``write_synthetic_dataset``, rendered
on the GPU, written as JPEG/PNG files exactly like the assemble stage), the avatar carrying about 14k
Gaussians (UV texels, like FLAME at 128x128). Measured by default:

- ``train_images_per_s``: full training steps (face model, MLP in bf16, SH, gsplat forward+backward
  for the whole batch in one call, loss, Adam) on batches already on the GPU; ``seconds_150k_images``;
- ``cache_build_s``: decoding every frame once into the frame cache (all cores), ``cache_frames``;
- ``loader_startup_s`` / ``loader_images_per_s``: the default input pipeline (frame cache + background
  prefetch to the GPU on a side stream): time to the first batch on the GPU, then the steady rate
  (warm-up batches excluded), with no training;
- ``decode_loader_startup_s`` / ``decode_loader_images_per_s``: the same for the per-item decoding
  DataLoader (``frame_cache: off``; PIL in worker processes);
- ``end_to_end_images_per_s``: :func:`stages.gauss.trainer.train` on the written dataset
  (``--e2e-steps`` steps, its training loop incl. the first batches), ``end_to_end_wall_s`` the whole
  call incl. building the cache; ``end_to_end_decode_images_per_s`` the same with ``frame_cache: off``;
- ``render_fps_batch`` / ``render_fps_single``: rendering incl. face model and MLP, batched and one by one.
Goals: >= 1,500 training images/s end to end, >= 1,000 render FPS at 512x512.

``--quality`` instead trains the full preset (TrainConfig defaults, batch 16, 512x512) for the full
150k-image budget on a synthetic set of ``--quality-frames`` frames (the last ``--test-frames`` held
out), once per value of ``--lr-scales``, evaluating held-out PSNR every ``--eval-every`` images; it
reports the PSNR curve, the final PSNR and the training seconds until PSNR first reached 30 dB.
``--dataset-dir`` keeps the written set for later runs (it is reused when its frame count matches).

``--smoke`` runs every code path on the CPU with the reference renderer at toy sizes (a check of
the script itself, not a measurement).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stages.dataset.layout import DatasetLayout  # noqa: E402
from stages.gauss.data import (AvatarFrames, CachedBatches, StepBatchSampler, TrackedSequence,  # noqa: E402
                               split_frames, split_pixels, training_batches)
from stages.gauss.frame_cache import default_processes, ensure_frame_cache  # noqa: E402
from stages.gauss.losses import avatar_loss  # noqa: E402
from stages.gauss.metrics import psnr  # noqa: E402
from stages.gauss.render_gsplat import render_gaussians_gsplat  # noqa: E402
from stages.gauss.render_ref import render_gaussians_reference  # noqa: E402
from stages.gauss.synthetic import toy_surface, write_synthetic_dataset  # noqa: E402
from stages.gauss.trainer import TrainConfig, build_avatar, render_frames, train  # noqa: E402


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _dataset(root: Path, frames: int, res: int, dev: str) -> tuple[DatasetLayout, float]:
    """Write (or reuse, when it has ``frames`` frames) the synthetic set; returns (layout, seconds)."""
    layout = DatasetLayout(root)
    if layout.checkpoint_dir.is_dir() and layout.frame_count() == frames and layout.image_path(frames).is_file():
        return layout, 0.0
    t0 = time.perf_counter()
    write_synthetic_dataset(root, frames, image_size=res, n_gaussians=20000, device=dev)
    return layout, round(time.perf_counter() - t0, 2)


def _time_pipeline(make, batches: int, warmup: int, B: int) -> tuple[float, float]:
    """(seconds to the first batch on the device, steady images/s over ``batches`` after ``warmup``)."""
    t0 = time.perf_counter()
    it = make()
    next(it)
    _sync()
    startup = time.perf_counter() - t0
    for _ in range(warmup):
        next(it)
    _sync()
    t0 = time.perf_counter()
    n = 0
    for _ in range(batches):
        b = next(it)
        n += b["img"].shape[0]
    _sync()
    rate = n / (time.perf_counter() - t0)
    it.close()
    return round(startup, 3), round(rate, 1)


def speed(args, dev: str, renderer: str, out: dict) -> None:
    res, B = args.resolution, args.batch
    scratch = Path(tempfile.mkdtemp(prefix="gauss-bench-"))
    layout, out["dataset_seconds"] = _dataset(scratch / "dataset", args.frames, res, dev)
    out["frames"] = args.frames
    seq = TrackedSequence.load(layout)
    cfg = TrainConfig(steps=args.e2e_steps, batch_size=B, resolution=res, uv_resolution=args.gaussians_uv, test_frames=0,
                      test_fraction=0.1, checkpoint_every=0, workers=args.workers, log_every=10 ** 9, renderer=renderer)
    surface = toy_surface().to(dev)
    model = build_avatar(surface, cfg).to(dev)
    out["gaussians"] = model.num_gaussians
    idx = list(range(len(seq)))
    frames = AvatarFrames(layout, seq, idx, res, (0.0, 1.0, 0.0))

    # the frame cache: build time (all cores), then every frame on the device for the in-memory steps
    t0 = time.perf_counter()
    cache, _ = ensure_frame_cache(layout, idx, res, scratch / "cache", None if args.workers > 0 else 0)
    out["cache_build_s"] = round(time.perf_counter() - t0, 3)
    out["cache_frames"] = len(idx)
    out["cache_processes"] = default_processes() if args.workers > 0 else 1
    allb = split_pixels({k: v.to(dev) for k, v in CachedBatches(cache, frames, []).gather(idx).items()})
    bg = torch.tensor([0.0, 1.0, 0.0], device=dev)
    opt = torch.optim.Adam(model.param_groups(cfg.lr_scale, cfg.mlp_lr), eps=1e-15, fused=(dev == "cuda") or None)

    t0 = time.perf_counter()
    first_call = render_gaussians_gsplat if renderer == "gsplat" else render_gaussians_reference
    first_call(torch.zeros(1, 3, device=dev) + torch.tensor([0, 0, 1.0], device=dev),
               torch.tensor([[1.0, 0, 0, 0]], device=dev), torch.full((1, 3), 0.01, device=dev),
               torch.ones(1, device=dev), torch.ones(1, 3, device=dev), torch.eye(4, device=dev),
               torch.tensor([[100.0, 0, 8], [0, 100, 8], [0, 0, 1]], device=dev), 16, 16)
    _sync()
    out["gsplat_first_call_seconds"] = round(time.perf_counter() - t0, 2)

    def step(i: int) -> None:
        sel = torch.arange(i * B, (i + 1) * B, device=dev) % len(frames)
        b = {k: v[sel] for k, v in allb.items()}
        img, _ = render_frames(model, surface, b["cond"], b["R"], b["t"], b["K"], res, bg, renderer, amp=True)
        loss, _ = avatar_loss(img, frames.ground_truth(b), b["mouth"].float() / 255)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for i in range(5):
        step(i)
    _sync()
    t0 = time.perf_counter()
    for i in range(args.steps):
        step(i)
    _sync()
    dt = time.perf_counter() - t0
    ips = args.steps * B / dt
    out["train_step_ms"] = round(1000 * dt / args.steps, 3)
    if args.profile and dev == "cuda":  # where a step's time goes: the top operators by GPU time, to stderr
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for i in range(10):
                step(i)
            _sync()
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=30), file=sys.stderr)
    out["train_images_per_s"] = round(ips, 1)
    out["seconds_150k_images"] = round(150_000 / ips, 1)
    if dev == "cuda":
        out["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2 ** 30, 2)
    del allb

    # input pipelines alone (no training): startup, then steady state
    n_b, warm = (3, 1) if args.smoke else (args.loader_batches, 5)
    sampler = StepBatchSampler(len(frames), B, 0, 0, 10 ** 6)
    out["loader_startup_s"], out["loader_images_per_s"] = _time_pipeline(  # the cache exists: opened, not built
        lambda: training_batches(frames, sampler, dev, frame_cache="on", cache_dir=scratch / "cache",
                                 workers=args.workers)[0], n_b, warm, B)
    out["decode_loader_startup_s"], out["decode_loader_images_per_s"] = _time_pipeline(
        lambda: training_batches(frames, sampler, dev, frame_cache="off", workers=args.workers)[0],
        max(2, n_b // 4), warm, B)
    out["loader_workers"] = args.workers

    # the real trainer, end to end
    for mode, key in (("auto", "end_to_end"), ("off", "end_to_end_decode")):
        with tempfile.TemporaryDirectory(dir=scratch) as work:
            t0 = time.perf_counter()
            r = train(replace(cfg, frame_cache=mode), toy_surface(), layout, work, dev)
            wall = time.perf_counter() - t0
        out[f"{key}_images_per_s"] = round(r.images_per_s, 1)
        if mode == "auto":
            out["end_to_end_wall_s"] = round(wall, 2)
            out["end_to_end_images"] = r.images
            out["end_to_end_source"] = r.pipeline.source
            out["end_to_end_cache_s"] = round(r.pipeline.cache_seconds, 3)

    b16 = split_pixels({k: v.to(dev) for k, v in CachedBatches(cache, frames, []).gather(idx[:B]).items()})
    with torch.no_grad():
        for bs, key in ((B, "render_fps_batch"), (1, "render_fps_single")):
            b = {k: v[:bs] for k, v in b16.items()}
            for _ in range(3):
                render_frames(model, surface, b["cond"], b["R"], b["t"], b["K"], res, bg, renderer, amp=True)
            _sync()
            reps = 2 if args.smoke else max(20, 200 // bs)
            t0 = time.perf_counter()
            for _ in range(reps):
                render_frames(model, surface, b["cond"], b["R"], b["t"], b["K"], res, bg, renderer, amp=True)
            _sync()
            out[key] = round(reps * bs / (time.perf_counter() - t0), 1)
    out["goals"] = {"end_to_end_images_per_s": 1500, "train_images_per_s": 1500, "render_fps": 1000}


@torch.no_grad()
def held_out_psnr(model, surface, test_batches: list[dict], res: int, bg, renderer: str, frames: AvatarFrames) -> float:
    """Mean PSNR (dB) over the held-out frames (batches already on the device)."""
    model.eval()
    vals = []
    for b in test_batches:
        img, _ = render_frames(model, surface, b["cond"], b["R"], b["t"], b["K"], res, bg, renderer)
        vals += psnr(img.clamp(0, 1), frames.ground_truth(b)).tolist()
    model.train()
    return sum(vals) / len(vals)


def quality(args, dev: str, renderer: str, out: dict) -> None:
    res, B = args.resolution, args.batch
    root = Path(args.dataset_dir) if args.dataset_dir else Path(tempfile.mkdtemp(prefix="gauss-quality-")) / "dataset"
    layout, out["dataset_seconds"] = _dataset(root, args.quality_frames, res, dev)
    out["dataset"] = f"stages.gauss.synthetic.write_synthetic_dataset({args.quality_frames} frames, {res}px)"
    if args.dataset_only:
        return
    seq = TrackedSequence.load(layout)
    base = TrainConfig()  # the full preset
    cfg0 = replace(base, batch_size=B, resolution=res, test_frames=args.test_frames, test_fraction=None,
                   uv_resolution=args.gaussians_uv, checkpoint_every=0, log_every=10 ** 9, workers=args.workers,
                   renderer=renderer)
    train_idx, test_idx = split_frames(len(seq), cfg0.test_frames, cfg0.test_fraction, cfg0.max_train_frames)
    out.update(train_frames=len(train_idx), test_frames=len(test_idx), images_budget=args.images, batch=B)
    test_frames = AvatarFrames(layout, seq, test_idx, res, (0.0, 1.0, 0.0))
    scratch = root.parent / "quality-work"
    tcache, _ = ensure_frame_cache(layout, test_idx, res, scratch / "test-cache", None if args.workers > 0 else 0)
    gat = CachedBatches(tcache, test_frames, [])
    test_batches = [split_pixels({k: v.to(dev) for k, v in gat.gather(list(range(s, min(s + B, len(test_idx))))).items()})
                    for s in range(0, len(test_idx), B)]
    bg = torch.tensor([0.0, 1.0, 0.0], device=dev)
    total_steps = max(1, args.images // B)
    seg = max(1, args.eval_every // B)
    runs = []
    for lr_scale in args.lr_scales:
        cfg = replace(cfg0, lr_scale=lr_scale)
        work = scratch / f"lr{lr_scale:g}"
        if work.exists():
            import shutil

            shutil.rmtree(work)
        surface = toy_surface().to(dev)
        curve, train_s, reached = [], 0.0, None
        step = 0
        while step < total_steps:
            step = min(total_steps, step + seg)
            r = train(replace(cfg, steps=step), toy_surface(), layout, work, dev)
            train_s += r.seconds
            p = held_out_psnr(r.model, surface, test_batches, res, bg, renderer, test_frames)
            curve.append({"images": step * B, "train_s": round(train_s, 2), "psnr": round(p, 3),
                          "images_per_s": round(r.images_per_s, 1)})
            if reached is None and p >= args.psnr_goal:
                reached = round(train_s, 2)
            print(json.dumps({"lr_scale": lr_scale, **curve[-1]}), file=sys.stderr, flush=True)
        runs.append({"lr_scale": lr_scale, "mlp_lr": cfg.mlp_lr, "final_psnr": curve[-1]["psnr"],
                     "best_psnr": max(c["psnr"] for c in curve), "train_seconds": round(train_s, 2),
                     "seconds_to_goal": reached, "curve": curve})
    out["runs"] = runs
    best = max(runs, key=lambda r: r["final_psnr"])
    out["best_lr_scale"], out["best_final_psnr"] = best["lr_scale"], best["final_psnr"]
    out["goal_psnr_db"] = args.psnr_goal


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=60, help="timed in-memory training steps")
    ap.add_argument("--resolution", type=int, default=512)
    ap.add_argument("--gaussians-uv", type=int, default=118)
    ap.add_argument("--frames", type=int, default=256, help="frames of the written set (speed runs)")
    ap.add_argument("--e2e-steps", type=int, default=200, help="steps of the end-to-end train() runs")
    ap.add_argument("--loader-batches", type=int, default=200, help="timed batches of the input pipeline")
    ap.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 1))
    ap.add_argument("--quality", action="store_true", help="train the full preset for the 150k-image budget")
    ap.add_argument("--lr-scales", type=lambda s: [float(x) for x in s.split(",")], default=None,
                    help="comma list of lr_scale values for --quality (default: the full preset's)")
    ap.add_argument("--quality-frames", type=int, default=2200)
    ap.add_argument("--test-frames", type=int, default=200)
    ap.add_argument("--images", type=int, default=150_000)
    ap.add_argument("--eval-every", type=int, default=15_000, help="images between held-out evaluations")
    ap.add_argument("--psnr-goal", type=float, default=30.0)
    ap.add_argument("--dataset-dir", default=None, help="where --quality writes (and later reuses) its set")
    ap.add_argument("--dataset-only", action="store_true", help="with --quality: only write the set")
    ap.add_argument("--smoke", action="store_true", help="CPU, reference renderer, toy sizes")
    ap.add_argument("--profile", action="store_true", help="also profile 10 steps (top operators by GPU time, stderr)")
    args = ap.parse_args()
    if args.lr_scales is None:
        args.lr_scales = [TrainConfig().lr_scale]
    if args.smoke:
        args.batch, args.steps, args.resolution, args.gaussians_uv, args.frames, args.workers = 2, 2, 32, 12, 8, 1
        args.e2e_steps, args.quality_frames, args.test_frames, args.images, args.eval_every = 3, 10, 2, 8, 4
        dev, renderer = "cpu", "reference"
        torch.set_num_threads(1)
    else:
        assert torch.cuda.is_available(), "needs a CUDA GPU"
        dev, renderer = "cuda", "gsplat"
    out: dict = {"device": torch.cuda.get_device_name(0) if dev == "cuda" else "cpu (smoke)", "torch": torch.__version__,
                 "batch": args.batch, "resolution": args.resolution, "cpu_cores": default_processes()}
    t0 = time.perf_counter()
    (quality if args.quality else speed)(args, dev, renderer, out)
    out["bench_seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
