"""Issue 19 on the GPU: the default preset on wojtek's dataset, before and after a training change.

    python bench/gpu_quality.py DATASET_DIR [--variants '{"base": {}, "fix": {"silhouette_weight": 0.1}}']
        [--seeds 0 1] [--eval-res 512] [--png-dir DIR] [--timeout 600]

Runs bench/heldout_breakdown.py once per (variant, seed) with ``--preset full --device cuda`` (the
train stage's defaults plus the variant's overrides; 512 px training and scoring, gsplat) in a
fresh process each, and prints one JSON object: for every run the held-out PSNR (mean, worst), the
PSNR of 40 training frames, the held-out error's split by region and the training seconds (one
line per run as it finishes), then a last line with every run, the mean over seeds per variant and
its difference to the first variant. On a CPU-only machine it
refuses (exit 2): the default preset needs CUDA.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_VARIANTS = {"base": {}, "silhouette": {"silhouette_weight": 0.1}, "pose": {"pose_condition": True}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("dataset")
    ap.add_argument("--variants", default=json.dumps(DEFAULT_VARIANTS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--eval-res", type=int, default=512)
    ap.add_argument("--png-dir")
    ap.add_argument("--timeout", type=int, default=300, help="seconds per run")
    a = ap.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("gpu_quality.py: no CUDA device here; run it on the GPU machine", file=sys.stderr)
        raise SystemExit(2)
    variants = json.loads(a.variants)
    runs = []
    for name, over in variants.items():
        for seed in a.seeds:
            cmd = [sys.executable, str(HERE / "heldout_breakdown.py"), a.dataset, json.dumps({**over, "seed": seed}),
                   "--preset", "full", "--device", "cuda", "--eval-res", str(a.eval_res)]
            if a.png_dir:
                cmd += ["--png-dir", str(Path(a.png_dir) / f"{name}_s{seed}")]
            try:
                p = subprocess.run(cmd, capture_output=True, text=True, timeout=a.timeout)
            except subprocess.TimeoutExpired:
                runs.append({"variant": name, "seed": seed, "error": f"over {a.timeout} s"})
                continue
            if p.returncode != 0:
                runs.append({"variant": name, "seed": seed, "error": p.stderr[-2000:]})
                continue
            r = json.loads(p.stdout.strip().splitlines()[-1])
            runs.append({"variant": name, "seed": seed, "held_out_psnr": r["held_out"]["psnr"],
                         "held_out_min": r["held_out"]["psnr_min"], "train_psnr": r["train"]["psnr"],
                         "share": r["held_out"]["share"], "train_wall_s": r["train_wall_s"],
                         "gaussians": r["gaussians"]})
            print(json.dumps(runs[-1]), flush=True)  # one line per run: what a cut-off call still shows
    means = {}
    for name in variants:
        ok = [r["held_out_psnr"] for r in runs if r["variant"] == name and "held_out_psnr" in r]
        means[name] = round(sum(ok) / len(ok), 2) if ok else None
    first = next(iter(variants))
    out = {"device": torch.cuda.get_device_name(0), "runs": runs, "mean_held_out_psnr": means,
           "delta_vs_" + first: {k: (round(v - means[first], 2) if v is not None and means[first] is not None else None)
                                 for k, v in means.items()}}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
