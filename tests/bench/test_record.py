"""The benchmark record: JSON is the source, markdown is rendered from it, figures keep their command."""

from __future__ import annotations

import json

from stages.bench.record import Figure, record


def test_record_merges_and_renders(tmp_path):
    path = tmp_path / "benchmarks.json"
    record({"track_fps": Figure(150.0, "frames/s", "H100", "python bench/track_bench.py", "2026-11-24")}, path)
    data = record({"masks_fps": Figure(120.0, "frames/s", "H100", "python bench/masks_bench.py", "2026-11-24"),
                   "track_fps": Figure(180.0, "frames/s", "H100", "python bench/track_bench.py --b 512", "2026-11-24")},
                  path)
    assert json.loads(path.read_text()) == data
    assert data["track_fps"]["value"] == 180.0 and data["masks_fps"]["unit"] == "frames/s"
    md = path.with_suffix(".md").read_text()
    assert "| track (full schedule, 512x512) (`track_fps`) | 180 frames/s | H100 |" in md
    assert "| yes |" in md  # track goal >= 100 met
    assert "| no |" in md   # masks goal >= 300 not met
    assert "`python bench/track_bench.py --b 512`" in md
    assert "Not measured yet:" in md and "`e2e_10k_seconds`" in md
