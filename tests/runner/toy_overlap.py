"""Toy stages for the scheduler tests: a diamond ``ingest -> (fan, side) -> join`` whose middle
stages sleep per frame, write when they start and end (``Config.log``), and can fail on cue.

``fan`` fans out (one call per shard), ``side`` does not; ``join`` needs both. Each writes
``<stage> start|end <time.time()>`` lines to the log, so a test sees from the stages themselves
whether two of them ran at the same time.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import stages.graph as graph
from stages.errors import BadInput, Transient
from stages.graph import StageDecl

DECLS = (
    StageDecl("ingest", (), "tracker", "cpu", False, "toy_stages", False, "toy ingest"),
    StageDecl("fan", ("ingest",), "tracker", "cpu", True, "toy_overlap_fan", False, "toy fan-out, sleeps"),
    StageDecl("side", ("ingest",), "tracker", "cheap-gpu", False, "toy_overlap_side", True, "toy single, sleeps"),
    StageDecl("join", ("fan", "side"), "tracker", "cpu", False, "toy_overlap_join", False, "toy join"),
)


def install() -> None:
    """Replace the stage graph with the diamond (tests only)."""
    here = str(Path(__file__).parent)
    if here not in sys.path:
        sys.path.insert(0, here)
    graph.BY_NAME.clear()
    graph.BY_NAME.update({d.name: d for d in DECLS})


@dataclass
class Config:
    """Attributes:
        sleep_s: seconds per frame.
        log: file to append ``<stage> start|end <time>`` lines to ("" none).
        fail_at: frame at which to fail (-1: never).
        fail: ``bad`` (BadInput, exit 2) or ``transient`` (Transient, exit 75).
    """

    sleep_s: float = 0.02
    log: str = ""
    fail_at: int = -1
    fail: str = "bad"


def note(ctx, what: str) -> None:
    if ctx.config.log:
        with open(ctx.config.log, "a") as f:
            f.write(f"{ctx.decl.name} {what} {time.time():.6f}\n")


def work(ctx, frames) -> list[int]:
    """Sleep per frame, advancing the progress (where the scheduler can stop the stage)."""
    out = []
    for frame in frames:
        if frame == ctx.config.fail_at:
            note(ctx, "fail")
            kind = BadInput if ctx.config.fail == "bad" else Transient
            raise kind(f"toy stage {ctx.decl.name}: told to fail at frame {frame}")
        time.sleep(ctx.config.sleep_s)
        out.append(frame)
        ctx.progress.advance(1)
    return out
