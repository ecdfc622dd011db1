"""Toy join of the diamond (:mod:`toy_overlap`): needs ``fan`` and ``side``."""

from __future__ import annotations

from toy_overlap import Config, note  # noqa: F401 - Config is the stage's


def run(ctx) -> None:
    note(ctx, "start")
    total = sum(sum(int(x) for x in ctx.fetch(rel, "fan").read_text().split()) for rel in ctx.input_keys("fan", "0"))
    ctx.put_json("join.json", {"total": total, "side_frames": ctx.get_json("side.json", "side")["frames"]})
    note(ctx, "end")
