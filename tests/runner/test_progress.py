"""Progress reporting: N/M in $ARGO_PROGRESS_FILE inside an Argo pod."""

from __future__ import annotations

from stages.runner.progress import Progress


def test_argo_progress_file(tmp_path, monkeypatch):
    target = tmp_path / "progress"
    monkeypatch.setenv("ARGO_PROGRESS_FILE", str(target))
    with Progress("track", 40, min_interval=0.0) as p:
        p.advance(10)
        assert target.read_text().strip() == "10/40"
        p.advance(30)
    assert target.read_text().strip() == "40/40"
    assert p.rate > 0
