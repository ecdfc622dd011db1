"""Toy single stage of the diamond (:mod:`toy_overlap`): goes over every frame, writes one file."""

from __future__ import annotations

from toy_overlap import Config, note, work  # noqa: F401 - Config is the stage's


def run(ctx) -> None:
    note(ctx, "start")
    n = sum(len(s) for s in ctx.shards())
    values = work(ctx, range(n))
    ctx.put_json("side.json", {"frames": len(values)})
    ctx.count_frames(len(values))
    note(ctx, "end")
