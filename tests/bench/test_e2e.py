"""The end-to-end benchmark's summary: the sum of the stages against the wall clock, and the GPUs used."""

from __future__ import annotations

from stages.bench.e2e import BenchResult
from stages.runner.run import StageResult


def test_table_says_sum_of_stages_wall_clock_and_gpus():
    res = BenchResult(100, [StageResult("ingest", "ran", 100, 2.0), StageResult("track", "ran", 100, 5.0)], 6.5,
                      {}, {"track": ["0", "1"]})
    assert res.stage_seconds == 7.0 and res.gpus_used == ["0", "1"]
    text = res.table()
    assert "sum of stages: 7.00 s, wall clock: 6.50 s (overlap 0.50 s); GPUs used: 2 (0, 1)" in text
    assert text.splitlines()[2].split()[-1] == "0,1" and text.splitlines()[1].split()[-1] == "-"
    assert "GPUs used: 0" in BenchResult(1, [], 1.0, {}).table()
