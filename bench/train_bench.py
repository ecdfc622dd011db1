"""Training and rendering speed of the Gaussian avatar on one GPU (prints one JSON object).

    python bench/train_bench.py [--batch 16] [--steps 60] [--resolution 512] [--gaussians-uv 118]

A synthetic set: the toy head of :mod:`stages.gauss.synthetic` carrying about 14k Gaussians (UV
texels, like FLAME at 128x128), ground truth rendered once on the GPU and kept there. Measured:

- ``train_images_per_s``: full training steps (face model, MLP in bf16, SH, gsplat forward+backward
  for the whole batch in one call, loss, Adam) on in-memory batches; ``hours_150k_images`` from it;
- ``loader_images_per_s``: the real DataLoader (JPEG decode + compositing in worker processes) on a
  written 512x512 dataset, alone, to show whether the input pipeline keeps up;
- ``end_to_end_images_per_s``: :func:`stages.gauss.trainer.train` on that dataset (loader + GPU);
- ``render_fps_batch`` / ``render_fps_single``: rendering incl. face model and MLP, batched and one by one.
Goals: >= 1,500 training images/s, >= 1,000 render FPS at 512x512.

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
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stages.dataset.layout import DatasetLayout  # noqa: E402
from stages.gauss.data import AvatarFrames, TrackedSequence, make_loader  # noqa: E402
from stages.gauss.losses import avatar_loss  # noqa: E402
from stages.gauss.render_gsplat import render_gaussians_gsplat  # noqa: E402
from stages.gauss.render_ref import render_gaussians_reference  # noqa: E402
from stages.gauss.synthetic import write_synthetic_dataset, toy_surface  # noqa: E402
from stages.gauss.trainer import TrainConfig, build_avatar, render_frames, train  # noqa: E402


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--resolution", type=int, default=512)
    ap.add_argument("--gaussians-uv", type=int, default=118)
    ap.add_argument("--frames", type=int, default=64)
    ap.add_argument("--workers", type=int, default=min(12, os.cpu_count() or 1))
    ap.add_argument("--smoke", action="store_true", help="CPU, reference renderer, toy sizes")
    args = ap.parse_args()
    if args.smoke:
        args.batch, args.steps, args.resolution, args.gaussians_uv, args.frames, args.workers = 2, 2, 32, 12, 8, 1
        dev, renderer = "cpu", "reference"
    else:
        assert torch.cuda.is_available(), "needs a CUDA GPU"
        dev, renderer = "cuda", "gsplat"
    res, B = args.resolution, args.batch
    out: dict = {"device": torch.cuda.get_device_name(0) if dev == "cuda" else "cpu (smoke)", "torch": torch.__version__, "batch": B, "resolution": res}

    t0 = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="gauss-bench-")) / "dataset"
    write_synthetic_dataset(root, args.frames, image_size=res, n_gaussians=20000, device=dev)
    out["dataset_seconds"] = round(time.perf_counter() - t0, 2)
    layout = DatasetLayout(root)
    seq = TrackedSequence.load(layout)
    cfg = TrainConfig(steps=args.steps, batch_size=B, resolution=res, uv_resolution=args.gaussians_uv, test_frames=0,
                      test_fraction=0.1, checkpoint_every=0, workers=args.workers, log_every=10 ** 9, renderer=renderer)
    surface = toy_surface().to(dev)
    model = build_avatar(surface, cfg).to(dev)
    out["gaussians"] = model.num_gaussians
    frames = AvatarFrames(layout, seq, list(range(len(seq))), res, (0.0, 1.0, 0.0))
    allb = torch.utils.data.default_collate([frames[j] for j in range(len(frames))])
    allb = {k: v.to(dev) for k, v in allb.items()}
    bg = torch.tensor([0.0, 1.0, 0.0], device=dev)
    opt = torch.optim.Adam(model.param_groups(), eps=1e-15, fused=(dev == "cuda") or None)

    t0 = time.perf_counter()
    first_call = render_gaussians_gsplat if renderer == "gsplat" else render_gaussians_reference
    first_call(torch.zeros(1, 3, device=dev) + torch.tensor([0, 0, 1.0], device=dev),
                            torch.tensor([[1.0, 0, 0, 0]], device=dev), torch.full((1, 3), 0.01, device=dev),
                            torch.ones(1, device=dev), torch.ones(1, 3, device=dev), torch.eye(4, device=dev),
                            torch.tensor([[100.0, 0, 8], [0, 100, 8], [0, 0, 1]], device=dev), 16, 16)
    _sync()
    out["gsplat_first_call_seconds"] = round(time.perf_counter() - t0, 2)

    def step(i: int) -> None:
        idx = torch.arange(i * B, (i + 1) * B, device=dev) % len(frames)
        b = {k: v[idx] for k, v in allb.items()}
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
    out["train_images_per_s"] = round(ips, 1)
    out["seconds_150k_images"] = round(150_000 / ips, 1)
    out["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2 ** 30, 2)

    loader = make_loader(frames, batch_size=B, workers=args.workers, pin_memory=dev == "cuda")
    n, t0 = 0, time.perf_counter()
    for _ in range(2):
        for batch in loader:
            n += batch["img"].shape[0]
    out["loader_images_per_s"] = round(n / (time.perf_counter() - t0), 1)
    out["loader_workers"] = args.workers

    with tempfile.TemporaryDirectory() as work:
        r = train(cfg, toy_surface(), layout, work, dev)
    out["end_to_end_images_per_s"] = round(r.images_per_s, 1)

    with torch.no_grad():
        for bs, key in ((B, "render_fps_batch"), (1, "render_fps_single")):
            b = {k: v[:bs] for k, v in allb.items()}
            for _ in range(3):
                render_frames(model, surface, b["cond"], b["R"], b["t"], b["K"], res, bg, renderer, amp=True)
            _sync()
            reps = 2 if args.smoke else max(20, 200 // bs)
            t0 = time.perf_counter()
            for _ in range(reps):
                render_frames(model, surface, b["cond"], b["R"], b["t"], b["K"], res, bg, renderer, amp=True)
            _sync()
            out[key] = round(reps * bs / (time.perf_counter() - t0), 1)
    out["goals"] = {"train_images_per_s": 1500, "render_fps": 1000}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
