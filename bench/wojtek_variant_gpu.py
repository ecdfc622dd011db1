"""wojtek.mp4 through ``avatar run``'s stages with the default preset plus train overrides, on the GPU.

    python bench/wojtek_variant_gpu.py --train '{"triangle_frame": true}' [--store /tmp/wv] [--actor w]

Prints one JSON line: the overrides, the held-out PSNR (mean, worst), the whole run's seconds and the
train stage's. Compare with tests/cli/test_default_preset_gpu.py's GPU-RECORD (no overrides) on the same card.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", default="{}", help="train-stage overrides (JSON)")
    ap.add_argument("--store", default="/tmp/wv")
    ap.add_argument("--actor", default="w")
    ap.add_argument("--video", default=str(ROOT.parent / "shared" / "data" / "wojtek.mp4"))
    a = ap.parse_args()
    from stages.runner.pipeline import prepare_actor, run_pipeline
    from stages.store.local import LocalStore

    st = LocalStore(Path(a.store))
    overrides = {"train": json.loads(a.train)}
    t0 = time.monotonic()
    pipeline = prepare_actor(st, a.actor, Path(a.video), None, None, overrides=overrides)
    run_pipeline(st, a.actor, pipeline, device="cuda", jobs=os.cpu_count() or 1)
    root = Path(a.store) / "actors" / a.actor
    report = json.loads((root / "avatar" / "report.json").read_text())
    train = json.loads((root / "train" / "manifest.json").read_text()).get("stats", {})
    print(json.dumps({"train": overrides["train"], "psnr_mean": report["psnr_mean"], "psnr_min": report["psnr_min"],
                      "seconds": round(time.monotonic() - t0, 1), "train_seconds": train.get("seconds")}), flush=True)


if __name__ == "__main__":
    main()
