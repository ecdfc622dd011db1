"""Toy fan-out stage with shard groups: ``run_shard_group`` takes runs of consecutive shards in one
call (logged as ``g<first>-<last>``; a lone shard goes to ``run_shard``, logged as its index) and
writes each shard's own file through that shard's context."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import stages.graph as graph
from stages.graph import StageDecl

DECL = StageDecl("count", ("ingest",), "tracker", "cheap-gpu", True, "toy_stages_group", True, "toy grouped fan-out")


def install() -> None:
    """The toy graph (tests/runner/toy_stages.py) with this module as its fan-out stage."""
    import toy_stages

    toy_stages.install()
    sys.path.insert(0, str(Path(__file__).parent))
    graph.BY_NAME["count"] = DECL


@dataclass
class Config:
    """Attributes:
        scale: each frame's value is frame x scale.
        group_frames: the group limit (``shard_group_frames``).
        upstream: a fan-out stage whose ``<shard>.txt`` each shard reads and adds to its values
            ("" none).
        log, barrier: ``$TOY_LOG`` and ``$TOY_BARRIER`` for worker processes (a forkserver started
            by an earlier test keeps that test's environment; the config reaches every worker).
    """

    scale: int = 2
    group_frames: int = 12
    upstream: str = ""
    log: str = ""
    barrier: str = ""


def shard_group_frames(config: Config) -> int:
    return config.group_frames


def _log(line: str, config: Config | None = None) -> None:
    path = (config.log if config is not None else "") or os.environ.get("TOY_LOG")
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")


def _write(ctx, shard) -> None:  # noqa: ANN001
    values = [k * ctx.config.scale for k in shard.frames]
    if ctx.config.upstream:  # waits, in a shard-overlapped run, until that shard is published
        up = ctx.fetch(f"{shard.name}.txt", ctx.config.upstream).read_text().split()
        values = [v + int(u) for v, u in zip(values, up, strict=True)]
    out = ctx.scratch / f"{shard.name}.txt"
    out.write_text(" ".join(map(str, values)))
    ctx.put_file(f"{shard.name}.txt", out)
    ctx.stats["cuda_visible_devices"] = os.environ.get("CUDA_VISIBLE_DEVICES")
    ctx.count_frames(len(shard))


def run_shard(ctx, shard) -> None:  # noqa: ANN001
    _log(str(shard.index), ctx.config)
    _write(ctx, shard)
    ctx.progress.advance(len(shard))


def _barrier(config: Config) -> None:
    """With ``TOY_BARRIER=DIR:N``: wait (at most 20 s) until N groups have started, so that N groups
    are seen running at the same time (a pool worker that finished a quick group could otherwise
    take the next one before the pool's other workers are up)."""
    spec = config.barrier or os.environ.get("TOY_BARRIER")
    if not spec:
        return
    folder, n = spec.rsplit(":", 1)
    Path(folder).mkdir(parents=True, exist_ok=True)
    (Path(folder) / str(os.getpid())).touch()
    deadline = time.monotonic() + 20
    while len(list(Path(folder).iterdir())) < int(n) and time.monotonic() < deadline:
        time.sleep(0.02)


def run_shard_group(items) -> None:  # noqa: ANN001
    config = items[0][0].config
    _log(f"g{items[0][1].index}-{items[-1][1].index}", config)
    _barrier(config)
    assert [s.index for _, s in items] == list(range(items[0][1].index, items[-1][1].index + 1))
    assert len({id(ctx) for ctx, _ in items}) == len(items), "one context per shard"
    for ctx, shard in items:
        _write(ctx, shard)
        ctx.progress.advance(len(shard))
