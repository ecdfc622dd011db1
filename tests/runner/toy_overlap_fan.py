"""Toy fan-out stage of the diamond (:mod:`toy_overlap`): one text file per shard."""

from __future__ import annotations

from toy_overlap import Config, note, work  # noqa: F401 - Config is the stage's


def run_shard(ctx, shard) -> None:
    note(ctx, f"start-shard-{shard.index}")
    values = work(ctx, shard.frames)
    out = ctx.scratch / f"{shard.name}.txt"
    out.write_text(" ".join(map(str, values)))
    ctx.put_file(f"{shard.name}.txt", out)
    ctx.count_frames(len(shard))
    note(ctx, f"end-shard-{shard.index}")
