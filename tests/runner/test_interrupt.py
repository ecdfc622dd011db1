"""The Ctrl-C line: what finished, what is kept, the command that resumes."""

from __future__ import annotations

from stages.runner import interrupt
from stages.store.local import LocalStore


def test_summary_names_finished_stages_kept_shards_and_the_resume_command(tmp_path):
    store = LocalStore(tmp_path)
    store.put_json("actors/roman/ingest/manifest.json", {})
    store.put_json("actors/roman/landmarks/manifest.json", {})
    store.put_json("actors/roman/masks/shards/0000.manifest.json", {})
    store.put_json("actors/roman/masks/shards/0002.manifest.json", {})
    interrupt.note(store, "roman")
    try:
        line = interrupt.summary(["run", "--actor", "roman", "--video", "my video.mp4"])
    finally:
        interrupt.forget()
    assert "\n" not in line
    assert "finished: ingest, landmarks; masks: 2 shard(s) kept" in line
    assert line.endswith("resume with: avatar run --actor roman --video 'my video.mp4'")


def test_summary_before_any_stage(tmp_path):
    assert interrupt.summary(["run", "--actor", "a"]) == "interrupted; resume with: avatar run --actor a"
