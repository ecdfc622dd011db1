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


def test_stages_at_the_same_time_share_one_display(monkeypatch):
    """Two stages' bars open at once (rich allows one live display): one display, one line each,
    stopped when the last bar closes; then a later bar starts a new one."""
    import io
    import sys

    from rich.console import Console

    import stages.runner.progress as progress

    monkeypatch.delenv("ARGO_PROGRESS_FILE", raising=False)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    sink = io.StringIO()
    monkeypatch.setattr("rich.progress.get_console", lambda: Console(file=sink, force_terminal=True, width=100))
    masks, calibrate = Progress("masks", 48), Progress("calibrate", 160)
    display = progress._BARS._display
    assert display is not None and masks._bar is display and calibrate._bar is display
    assert [t.description for t in display.tasks] == ["masks", "calibrate"]
    masks.advance(48)
    calibrate.advance(80)
    masks.close()
    assert progress._BARS._display is display and display.live.is_started  # calibrate still shows
    calibrate.close()
    assert progress._BARS._display is None and not display.live.is_started
    assert "masks" in sink.getvalue() and "calibrate" in sink.getvalue() and "48/48" in sink.getvalue()
    with Progress("track", 10) as later:
        assert later._bar is not None and later._bar is not display
    assert progress._BARS._display is None
