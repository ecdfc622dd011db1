"""Toy join stage: sums every shard output of ``count`` (read through verified fetches)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Config:
    pass


def run(ctx) -> None:
    total = 0
    for rel in ctx.input_keys("count", "0"):
        total += sum(int(x) for x in ctx.fetch(rel, "count").read_text().split())
    ctx.put_json("total.json", {"total": total})
