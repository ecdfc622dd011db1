"""bench/drive_bench.py's record: which figures a run's JSON gives (the 10k end-to-end one only for a
10,000-frame driver), and that they land in the benchmark page against the drive goals."""

from __future__ import annotations


from stages.bench.record import record

from bench_script import load_bench

def _bench():
    return load_bench("drive_bench")


RUN = {"device": "NVIDIA H100 80GB HBM3", "machine": "NVIDIA H100 80GB HBM3, 16 CPUs", "date": "2026-12-06",
       "frames": 2000, "gaussians": 10638, "render_fps": {"64": 1617.0}, "render_fps_device": {"64": 6506.0},
       "drive_render_fps": 1500.0, "drive_batch": 64, "drive_fps": 645.0, "drive_seconds": 3.1,
       "drive_audio_seconds": 3.3, "encode_fps": 581.0}


def test_figures_of_a_run_without_and_with_the_10k_driver(tmp_path):
    figures = _bench().figures
    assert sorted(figures(RUN, "cmd")) == ["drive_fps", "drive_render_fps"]
    short = {**RUN, "e2e_frames": 40, "e2e_seconds": 46.3}
    assert "drive_e2e_10k_seconds" not in figures(short, "cmd")  # a smoke run's driver is not the 10k goal
    full = {**RUN, "e2e_frames": 10000, "e2e_seconds": 120.5, "e2e_drive_step_seconds": 30.1,
            "e2e_drive_render_fps": 1400.0, "e2e_stages": {"ingest": {"seconds": 5.0}, "track": {"seconds": 60.0}}}
    figs = figures(full, "python bench/drive_bench.py --e2e-frames 10000")
    e2e = figs["drive_e2e_10k_seconds"]
    assert (e2e.value, e2e.unit, e2e.device) == (120.5, "s", "NVIDIA H100 80GB HBM3, 16 CPUs")
    assert "ingest 5.0 s, track 60.0 s" in e2e.note
    record(figs, tmp_path / "benchmarks.json")
    md = (tmp_path / "benchmarks.md").read_text()
    row = next(x for x in md.splitlines() if "`drive_e2e_10k_seconds`" in x)
    assert "120 s" in row and "< 90 s on one H100" in row and row.endswith("| no |")
    assert "`python bench/drive_bench.py --e2e-frames 10000`" in md
