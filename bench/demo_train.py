"""The demo preset's training and held-out scoring alone, on an assembled dataset (CPU).

    python bench/demo_train.py DATASET_DIR ['{"steps": 300, "lr_scale": 8.0}'] [--png out.png]
        [--threads 1] [--eval-res 256] [--eval-frames 0]

DATASET_DIR is an actor's ``dataset/`` folder (e.g. ``avatar-store/actors/demo-wojtek-demo/dataset``
after ``avatar demo``). The JSON overrides the train stage's demo-preset values (tiny's, then demo's,
see stages/train.py). Trains with the reference renderer, scores the held-out frames (the default
split; ``--eval-frames N``: N of them, evenly spaced) at ``--eval-res`` px like the render stage, and
prints one JSON object: PSNR (mean, worst frame), SSIM, steps, Gaussians, CPU seconds and wall
seconds of training and of scoring (CPU seconds of this process: what a loaded machine inflates
least), the (Gaussian, pixel) pairs the rasteriser handled per scored frame, and the load average.
``--png`` writes ground truth | render of the first three scored frames.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dataset")
    ap.add_argument("overrides", nargs="?", default="{}")
    ap.add_argument("--png")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--eval-res", type=int, default=256)
    ap.add_argument("--eval-frames", type=int, default=0)
    a = ap.parse_args()

    import numpy as np
    import torch

    from stages.face.model import load_face_model
    from stages.gauss import render_ref
    from stages.gauss.data import AvatarFrames, TrackedSequence, background_rgb, choose_split, find_dataset_root
    from stages.gauss.evaluate import evaluate
    from stages.gauss.surface import flame_surface
    from stages.gauss.trainer import TrainConfig, train
    from stages.train import PRESETS

    torch.set_num_threads(a.threads)
    over = json.loads(a.overrides)
    layout = find_dataset_root([p for p in Path(a.dataset).rglob("*") if p.is_file()])
    seq = TrackedSequence.load(layout)
    cfg = TrainConfig(**{**PRESETS["tiny"], **PRESETS["demo"], **over})
    surface = flame_surface(load_face_model(None), seq.shape)
    load = os.getloadavg()[0]
    c0, w0 = _cpu(), time.monotonic()
    with tempfile.TemporaryDirectory() as work:
        res = train(cfg, surface, layout, work, "cpu")
    c1, w1 = _cpu(), time.monotonic()
    split = choose_split(len(seq), cfg.test_frames, cfg.test_fraction, cfg.max_train_frames)
    test = split.test[::max(1, len(split.test) // a.eval_frames)] if a.eval_frames else split.test
    frames = AvatarFrames(layout, seq, test, a.eval_res, background_rgb(cfg.background))
    shown: list = []
    pairs: list[int] = []
    original = render_ref._composite_rows

    def counting(proj, colors, rank, boxes, width, lo, hi):  # noqa: ANN001 - counts the pairs, then renders
        pairs.append(int((boxes[3] * (boxes[5].clamp_max(hi - 1) - boxes[4].clamp_min(lo) + 1).clamp_min(0)).sum()))
        return original(proj, colors, rank, boxes, width, lo, hi)

    render_ref._composite_rows = counting
    try:
        ev = evaluate(res.model, surface, frames, torch.tensor(background_rgb(cfg.background)), "reference", "cpu", 8,
                      0, lambda gt, img: shown.append((gt, img)) if not shown else None)
    finally:
        render_ref._composite_rows = original
    c2, w2 = _cpu(), time.monotonic()
    s = ev.summary()
    print(json.dumps({"overrides": over, "steps": res.steps, "batch_size": cfg.batch_size, "resolution": cfg.resolution,
                      "gaussians": res.model.num_gaussians, "train_cpu_s": round(c1 - c0, 1),
                      "train_wall_s": round(w1 - w0, 1), "eval_cpu_s": round(c2 - c1, 1), "eval_wall_s": round(w2 - w1, 1),
                      "eval_res": a.eval_res, "eval_frames": len(ev.indices), "psnr": round(s["psnr_mean"], 2),
                      "psnr_min": round(s["psnr_min"], 2), "ssim": round(s["ssim_mean"], 4),
                      "pairs_per_frame": sum(pairs) // max(1, len(ev.indices)), "threads": a.threads,
                      "load_avg_1min_before": round(load, 2), "cores": os.cpu_count()}))
    if a.png and shown:
        from PIL import Image

        gt, img = shown[0]
        Image.fromarray(np.concatenate([np.concatenate([g, r], 1) for g, r in zip(gt[:3], img[:3])], 0)).save(a.png)


if __name__ == "__main__":
    main()
