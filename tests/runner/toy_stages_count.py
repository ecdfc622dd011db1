"""Toy fan-out stage: writes one text file per shard; dies by SIGKILL at frame $TOY_DIE_AT."""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Config:
    scale: int = 2


def run_shard(ctx, shard) -> None:
    log = os.environ.get("TOY_LOG")
    if log:
        with open(log, "a") as f:
            f.write(f"{shard.index}\n")
    values = []
    for frame in shard.frames:
        if os.environ.get("TOY_DIE_AT") == str(frame):
            os.kill(os.getpid(), signal.SIGKILL)
        values.append(frame * ctx.config.scale)
        ctx.progress.advance(1)
        time.sleep(0.001)
    out = ctx.scratch / f"{shard.name}.txt"
    out.write_text(" ".join(map(str, values)))
    ctx.put_file(f"{shard.name}.txt", out)
    ctx.stats["cuda_visible_devices"] = os.environ.get("CUDA_VISIBLE_DEVICES")  # what the runner pinned
    ctx.count_frames(len(shard))
