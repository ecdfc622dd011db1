"""A command refused with bad input part-way takes back what it wrote; finished work stays."""

from __future__ import annotations

import pytest

from stages.errors import BadInput, Transient
from stages.runner.undo import refused_leaves_no_trace


def _files(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_bad_input_takes_back_the_setup_when_no_stage_finished(store):
    store.put_json("actors/a/config.json", {"preset": "tiny"})
    store.put_bytes("assets/flame/abc/asset.json", b"{}")
    before = {k: store.get_bytes(k) for k in store.list("")}
    with pytest.raises(BadInput):
        with refused_leaves_no_trace(store, "a"):
            store.put_bytes("actors/a/input/video.mp4", b"video")
            store.put_json("actors/a/config.json", {"preset": "full"})
            store.put_bytes("assets/parsing/def/bisenet.onnx", b"model")
            store.put_bytes("actors/a/ingest/frames/0000.tar", b"partial")
            raise BadInput("wall.mp4: no face found; upload a video of one person")
    assert {k: store.get_bytes(k) for k in store.list("")} == before
    if hasattr(store, "root"):
        assert not (store.root / "actors" / "a" / "ingest").exists()  # no empty folders left


def test_finished_stages_and_their_setup_stay(store):
    with pytest.raises(BadInput):
        with refused_leaves_no_trace(store, "a"):
            store.put_bytes("actors/a/input/video.mp4", b"video")
            store.put_json("actors/a/config.json", {"preset": "tiny"})
            store.put_bytes("actors/a/ingest/frames/0000.tar", b"frames")
            store.put_json("actors/a/ingest/manifest.json", {"outputs": {"actors/a/ingest/frames/0000.tar": "x"}})
            store.put_bytes("actors/a/landmarks/shards/0000.npz", b"half of a shard")
            raise BadInput("config: stage 'landmarks' has no setting foo; known settings: ...")
    assert store.list("actors/a/") == ["actors/a/config.json", "actors/a/ingest/frames/0000.tar",
                                       "actors/a/ingest/manifest.json", "actors/a/input/video.mp4"]


def test_transient_faults_keep_everything_for_the_retry(store):
    with pytest.raises(Transient):
        with refused_leaves_no_trace(store, "a"):
            store.put_bytes("actors/a/input/video.mp4", b"video")
            raise Transient("s3 unreachable; retry")
    assert store.list("actors/a/") == ["actors/a/input/video.mp4"]
