"""Small real stages for the runner tests: an ingest that plans shards, a fan-out stage that can be
killed mid-shard on cue, and a downstream stage that reads every shard's output."""

from __future__ import annotations

import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import stages.graph as graph
from stages.graph import StageDecl
from stages.runner.shards import plan_shards, shards_document

DECLS = (
    StageDecl("ingest", (), "tracker", "cpu", False, "toy_stages", False, "toy ingest"),
    StageDecl("count", ("ingest",), "tracker", "cheap-gpu", True, "toy_stages_count", True, "toy fan-out"),
    StageDecl("total", ("count",), "tracker", "cpu", False, "toy_stages_total", False, "toy join"),
)


def install() -> None:
    """Replace the stage graph with the toy stages (tests only)."""
    sys.path.insert(0, str(Path(__file__).parent))
    graph.BY_NAME.clear()
    graph.BY_NAME.update({d.name: d for d in DECLS})
    sys.modules.setdefault("toy_stages", sys.modules[__name__])


# -- ingest ---------------------------------------------------------------------------------------

@dataclass
class Config:
    frames: int = 20
    shard_size: int = 5


def run(ctx) -> None:
    video = ctx.fetch_video().read_bytes()
    shards = plan_shards(ctx.config.frames, ctx.config.shard_size)
    ctx.put_json("shards.json", shards_document(ctx.config.frames, 25.0, shards))
    ctx.put_bytes("video-copy.bin", video)
    ctx.count_frames(ctx.config.frames)
