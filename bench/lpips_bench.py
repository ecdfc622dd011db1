"""What FlashAvatar's LPIPS term does to held-out PSNR, SSIM and LPIPS (prints one JSON object).

    python bench/lpips_bench.py [--video ../shared/data/wojtek.mp4] [--vgg vgg16-397923af.pth]
                                [--lin vgg.pth] [--store DIR] [--preset full] [--device cuda]

Runs the whole pipeline twice on the same video, as two actors of one store: ``lpips-off`` (train
``lpips_weight`` 0) and ``lpips-on`` (FlashAvatar's 0.05 from 10 % of the steps). Both actors have the
same ``vgg16`` (and ``lpips``) assets, so both reports carry held-out LPIPS with the same network.
Reports per arm: held-out PSNR, SSIM, LPIPS, train seconds, and the report's training note.

Without ``--vgg`` the backbone is a seeded random stand-in with torchvision's key names and shapes
(no real VGG-16 checkpoint exists on the machines here): the run then exercises the code path and
measures its cost, but its LPIPS figures are not perceptual distances and its effect on PSNR/SSIM
says nothing about the real term. Without ``--lin`` the installed lpips package's
``weights/v0.1/vgg.pth`` is used, else a seeded stand-in.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stages.cli.run_cmd import prepare_actor, run_pipeline  # noqa: E402
from stages.nets.vgg import CHANNELS, CLASSIFIER, LPIPS, installed_lpips_linear  # noqa: E402
from stages.store.uri import open_store  # noqa: E402


def standin_vgg(path: Path) -> Path:
    torch.manual_seed(0)
    feats = LPIPS().features.state_dict()  # PyTorch's default conv init, seeded
    state = {f"features.{k}": v.clone() for k, v in feats.items()}
    state.update({k: torch.zeros(1).expand(*s) for k, s in CLASSIFIER.items()})
    torch.save(state, path)
    return path


def standin_lin(path: Path) -> Path:
    g = torch.Generator().manual_seed(1)
    torch.save({f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1, generator=g) * 0.1 for i, c in enumerate(CHANNELS)},
               path)
    return path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--video", default=str(Path(__file__).resolve().parents[2] / "shared/data/wojtek.mp4"))
    ap.add_argument("--vgg", default=None)
    ap.add_argument("--lin", default=None)
    ap.add_argument("--store", default=None)
    ap.add_argument("--preset", default="full")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="lpips-bench-"))
    vgg = Path(args.vgg) if args.vgg else standin_vgg(tmp / "vgg16-397923af.pth")
    lin = Path(args.lin) if args.lin else installed_lpips_linear()
    lin_source = "given" if args.lin else ("installed lpips package" if lin else "seeded stand-in")
    if lin is None:
        lin = standin_lin(tmp / "vgg.pth")
    store = open_store(args.store or str(tmp / "store"))
    out = {"video": args.video, "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
           "preset": args.preset, "vgg16": "given checkpoint" if args.vgg else "random stand-in (NOT ImageNet weights)",
           "lpips_linear": lin_source, "arms": {}}
    for arm, weight in (("lpips-off", 0.0), ("lpips-on", None)):
        overrides = {"train": {"lpips_weight": weight}} if weight is not None else None
        pipeline = prepare_actor(store, arm, Path(args.video), None, args.preset, overrides=overrides,
                                 assets={"vgg16": vgg, "lpips": lin})
        t0 = time.monotonic()
        results = run_pipeline(store, arm, pipeline, device=args.device, jobs=16)
        report = store.get_json(f"actors/{arm}/avatar/report.json")
        train_report = store.get_json(f"actors/{arm}/avatar/train_report.json")
        out["arms"][arm] = {
            "psnr": report.get("psnr_mean"), "ssim": report.get("ssim_mean"), "lpips": report.get("lpips"),
            "lpips_note": report.get("lpips_note"), "train_note": train_report.get("lpips"),
            "train_seconds": next((r.seconds for r in results if r.stage == "train"), None),
            "wall_seconds": round(time.monotonic() - t0, 1)}
        print(json.dumps({arm: out["arms"][arm]}), file=sys.stderr, flush=True)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
