"""The run's timeline: start/end per stage, the sum of the stages against the wall clock, bars."""

from __future__ import annotations

from stages.runner.run import StageResult
from stages.runner.timeline import Timeline


def _overlapping() -> Timeline:
    return Timeline([StageResult("landmarks", "ran", 100, 2.0, started=0.0, ended=2.0),
                     StageResult("masks", "ran", 100, 4.0, started=2.0, ended=6.0),
                     StageResult("calibrate", "ran", 0, 3.0, started=2.0, ended=5.0),
                     StageResult("track", "ran", 100, 3.0, started=5.0, ended=8.0)], 8.0)


def test_sum_of_stages_wall_clock_and_overlap():
    t = _overlapping()
    assert t.stage_sum_s == 12.0 and t.overlap_s == 4.0
    d = t.to_dict()
    assert d["wall_s"] == 8.0 and d["stage_sum_s"] == 12.0 and d["overlap_s"] == 4.0
    assert [s["started"] for s in d["stages"]] == [0.0, 2.0, 2.0, 5.0]
    assert d["stages"][1] == {"stage": "masks", "status": "ran", "frames": 100, "seconds": 4.0, "fps": 25.0,
                              "started": 2.0, "ended": 6.0}


def test_table_bars_show_which_stages_ran_together():
    text = _overlapping().table()
    rows = {line.split()[0]: line for line in text.splitlines()[1:5]}
    bar = {k: v[-40:] for k, v in rows.items()}
    assert bar["landmarks"] == "#" * 10 + " " * 30
    assert bar["masks"] == " " * 10 + "#" * 20 + " " * 10
    assert bar["calibrate"] == " " * 10 + "#" * 15 + " " * 15
    assert bar["track"] == " " * 25 + "#" * 15
    assert text.splitlines()[-1] == "wall clock 8.0 s, sum of stages 12.0 s: 4.0 s of stage time ran beside other stages"


def test_unknown_times_leave_the_bar_empty():
    t = Timeline([StageResult("ingest", "skipped")], 0.5)
    assert t.bar(t.stages[0]) == "" and t.to_dict()["stages"][0]["started"] is None
    assert "ingest" in t.table() and "skipped" in t.table()


def test_a_rerun_with_every_stage_finished_says_so():
    t = Timeline([StageResult("ingest", "skipped", started=0.0, ended=0.0),
                  StageResult("train", "skipped", started=0.1, ended=0.2)], 0.2)
    assert t.table().splitlines()[-1] == ("nothing to do: every stage had already finished (its manifest matches); "
                                          "checked in 0.2 s")
    partly = Timeline([StageResult("ingest", "skipped", started=0.0, ended=0.0),
                       StageResult("train", "ran", 10, 1.0, started=0.1, ended=1.2)], 1.2)
    assert partly.table().splitlines()[-1].endswith(": 0.0 s of stage time ran beside other stages")
