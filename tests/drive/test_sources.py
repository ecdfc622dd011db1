"""The driver's entry (stages/drive/sources.py): what `avatar drive --video` stores before tracking."""

from __future__ import annotations

from pathlib import Path

import pytest

from stages.config import PipelineConfig
from stages.drive.sources import DRIVER_STAGE_SETTINGS, driver_entry, prepare_driver
from stages.errors import BadInput
from stages.runner.context import actor_key
from stages.store.local import LocalStore


def _store(tmp_path: Path) -> LocalStore:
    st = LocalStore(tmp_path / "store")
    st.put_json(actor_key("roman", "config.json"),
                PipelineConfig(preset="full", stages={"train": {"steps": 10}},
                               assets={"flame": "actors/roman/assets/flame.pkl", "identity": "x"}).to_dict())
    return st


def test_a_driver_is_tracked_from_its_landmarks_with_the_actors_preset_and_face_model(tmp_path):
    st = _store(tmp_path)
    video = tmp_path / "driver.mp4"
    video.write_bytes(b"not decoded here")
    cfg = prepare_driver(st, "roman", "d", video)
    stored = PipelineConfig.from_dict(st.get_json(actor_key(driver_entry("d"), "config.json")))
    assert stored == cfg
    assert cfg.preset == "full"
    assert cfg.stages == DRIVER_STAGE_SETTINGS  # no image-based levels; none of the actor's training settings
    assert cfg.stages["track"]["photometric_steps"] == 0 and cfg.stages["calibrate"]["appearance_steps"] == 0
    assert cfg.assets == {"flame": "actors/roman/assets/flame.pkl"}  # the face model, not the actor's identity


def test_a_driver_tracked_earlier_keeps_its_config(tmp_path):
    st = _store(tmp_path)
    video = tmp_path / "driver.mp4"
    video.write_bytes(b"v1")
    key = actor_key(driver_entry("old"), "config.json")
    old = PipelineConfig(preset="full", assets={"flame": "actors/roman/assets/flame.pkl"})  # before the settings
    st.put_json(key, old.to_dict())
    assert prepare_driver(st, "roman", "old", video) == old
    assert PipelineConfig.from_dict(st.get_json(key)) == old
    other = tmp_path / "other.mp4"
    other.write_bytes(b"v2")
    with pytest.raises(BadInput, match="another --name"):
        prepare_driver(st, "roman", "old", other)
    assert PipelineConfig.from_dict(st.get_json(key)) == old


def test_ordered_map_keeps_the_order_with_work_finishing_out_of_order():
    import random
    import time

    from stages.drive.sources import ordered_map

    rng = random.Random(0)
    delays = [rng.uniform(0, 0.004) for _ in range(100)]

    def slow_square(i: int) -> int:
        time.sleep(delays[i])
        return i * i

    assert list(ordered_map(slow_square, range(100), threads=4, window=8)) == [i * i for i in range(100)]
    assert list(ordered_map(slow_square, iter(range(3)), threads=1, window=1)) == [0, 1, 4]
    assert list(ordered_map(slow_square, [], threads=2)) == []


def test_reading_a_drivers_frames_leaves_its_ingest_output_in_the_store(store, tmp_path):
    """driver_frames reads each shard's tar and drops its downloaded copy; a local store hands out its own
    object, which must stay (it is the driver's finished ingest output: a second drive reads it again)."""
    import io

    import numpy as np
    from PIL import Image

    from stages.drive.sources import driver_frames
    from stages.frameshard import write_shard_tar
    from stages.runner.manifest import MANIFEST, Manifest
    from stages.runner.shards import SHARDS_FILE, plan_shards, shards_document
    from stages.store.base import sha256_file

    entry = driver_entry("d")
    shards = plan_shards(4, 2)
    store.put_json(actor_key(entry, "ingest", SHARDS_FILE), shards_document(4, 25.0, shards))
    outputs = {}
    for s in shards:
        tar = tmp_path / f"{s.name}.tar"
        frames = []
        for i in range(s.start, s.stop):
            buf = io.BytesIO()
            Image.fromarray(np.full((512, 512, 3), 40 * i, np.uint8)).save(buf, "JPEG", quality=95)
            frames.append((f"{i:05d}.jpg", buf.getvalue()))
        write_shard_tar(tar, frames)
        key = actor_key(entry, "ingest", "frames", f"{s.name}.tar")
        store.put_file(key, tar)
        outputs[key] = sha256_file(tar)
    store.put_json(actor_key(entry, "ingest", MANIFEST),
                   Manifest(stage="ingest", actor=entry, inputs={}, config_digest="x", config={}, outputs=outputs).to_dict())
    for attempt in range(2):  # a second drive with the same driver reads the same frames
        got = list(driver_frames(store, "d", tmp_path / f"scratch{attempt}", threads=2))
        assert [int(round(f.mean())) for f in got] == [40, 80, 120, 160]  # frames numbered from 1
    assert all(store.exists(k) for k in outputs)
