"""Time to the first training batch with the frame cache still decoding, against waiting for the whole cache.

    python bench/frame_cache_bench.py --dataset STORE/actors/A/dataset [--resolution 512] [--batch 16]
        [--processes N] [--steps 0]

Per mode, in a fresh cache folder: ``progressive`` (the trainer's way since 2026-12-07: decoding processes
started with the first epoch's order, batches gathered as their rows are decoded) and ``whole`` (finish()
first, the way before). Prints one JSON line: seconds to the first batch, to the last of ``--steps``
batches (0: one epoch) and until the cache was published. A CPU-only figure (no training step between
batches): on the GPU the steps run while the rest decodes.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--resolution", type=int, default=512)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--processes", type=int, default=0, help="decoding processes (0: every core)")
    ap.add_argument("--steps", type=int, default=0)
    a = ap.parse_args()
    from stages.gauss import frame_cache as fc
    from stages.gauss.data import AvatarFrames, CachedBatches, StepBatchSampler, TrackedSequence, first_use_order
    from stages.gauss.data import find_dataset_root

    layout = find_dataset_root([p for p in Path(a.dataset).rglob("*") if p.is_file()])
    seq = TrackedSequence.load(layout)
    idx = list(range(len(seq)))
    frames = AvatarFrames(layout, seq, idx, a.resolution, (1.0, 1.0, 1.0))
    steps = a.steps or -(-len(idx) // a.batch)
    procs = a.processes or fc.default_processes()
    out = {"frames": len(idx), "resolution": a.resolution, "processes": procs, "steps": steps}
    for mode in ("progressive", "whole"):
        with tempfile.TemporaryDirectory() as tmp:
            sampler = StepBatchSampler(len(idx), a.batch, 0, 0, steps)
            t0 = time.monotonic()
            build = fc.CacheBuild(layout, idx, a.resolution, Path(tmp) / "c.u8", procs,
                                  first_use_order(sampler, len(idx)) if mode == "progressive" else None)
            source = build if mode == "progressive" else build.finish(sync=False)
            first = None
            for _ in CachedBatches(source, frames, sampler):
                first = first if first is not None else time.monotonic() - t0
            last = time.monotonic() - t0
            out[mode] = {"first_batch_s": round(first, 3), "last_batch_s": round(last, 3)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
