"""A run's timeline: when each stage ran, the run's wall clock against the sum of the stages (the
stage time that ran beside other stages, :mod:`stages.runner.schedule`), as a table with a bar per stage and as JSON."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from stages.runner.run import StageResult

BAR_WIDTH = 40


@dataclass
class Timeline:
    """Attributes:
        stages: one result per stage, with ``started``/``ended`` (seconds since the run's start;
            ``None`` where unknown).
        wall_s: the run's wall clock, seconds.
    """

    stages: list[StageResult]
    wall_s: float

    @property
    def stage_sum_s(self) -> float:
        """Sum of the stages' own wall clocks, seconds."""
        return sum(r.seconds for r in self.stages)

    @property
    def overlap_s(self) -> float:
        """Stage time that ran beside other stages: the sum of the stages less the run's wall clock
        (about 0 when they ran one after another). The time saved against a sequential run is at
        most this: stages that share the CPU cores run slower together (compare runs, as
        ``bench/overlap_bench.py`` does, for the gain itself)."""
        return self.stage_sum_s - self.wall_s

    def to_dict(self) -> dict[str, Any]:
        return {"wall_s": round(self.wall_s, 3), "stage_sum_s": round(self.stage_sum_s, 3),
                "overlap_s": round(self.overlap_s, 3),
                "stages": [{"stage": r.stage, "status": r.status, "frames": r.frames, "seconds": round(r.seconds, 3),
                            "fps": round(r.fps, 2),
                            "started": None if r.started is None else round(r.started, 3),
                            "ended": None if r.ended is None else round(r.ended, 3)} for r in self.stages]}

    def bar(self, r: StageResult, width: int = BAR_WIDTH) -> str:
        """``r``'s span on a ``width``-character axis from 0 to the wall clock (``#``; ``|`` for a
        stage shorter than one character; empty when unknown or skipped)."""
        if r.started is None or r.ended is None or self.wall_s <= 0 or r.status == "skipped":
            return ""
        a = min(width - 1, int(r.started / self.wall_s * width))
        b = min(width, max(a + 1, round(r.ended / self.wall_s * width)))
        mark = "#" if r.ended - r.started >= self.wall_s / width else "|"
        return (" " * a + mark * (b - a)).ljust(width)

    def table(self) -> str:
        """One row per stage (status, frames, start, end, seconds, frames/s, bar), then the total
        and the line with the sum of the stages and the overlap saved."""
        rows = [f"{'stage':10s} {'status':8s} {'frames':>7s} {'start':>7s} {'end':>7s} {'seconds':>8s} {'frames/s':>9s}"
                f"  timeline"]
        for r in self.stages:
            start = "" if r.started is None else f"{r.started:.1f}"
            end = "" if r.ended is None else f"{r.ended:.1f}"
            rows.append(f"{r.stage:10s} {r.status:8s} {r.frames:7d} {start:>7s} {end:>7s} {r.seconds:8.1f} "
                        f"{r.fps:9.1f}  {self.bar(r)}")
        rows.append(f"{'total':10s} {'':8s} {'':7s} {'':7s} {self.wall_s:7.1f} {self.wall_s:8.1f}")
        if self.stages and all(r.status == "skipped" for r in self.stages):
            rows.append(f"nothing to do: every stage had already finished (its manifest matches); "
                        f"checked in {self.wall_s:.1f} s")
        else:
            rows.append(f"wall clock {self.wall_s:.1f} s, sum of stages {self.stage_sum_s:.1f} s: "
                        f"{max(0.0, self.overlap_s):.1f} s of stage time ran beside other stages")
        return "\n".join(rows)
