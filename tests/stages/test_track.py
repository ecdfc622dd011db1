"""Stage track on synthetic upstream outputs: every shard tracked with its overlaps, failed frames
filled and flagged, sub-pixel landmark error; tiny preset, CPU."""

import numpy as np
import pytest

from stages.config import PipelineConfig
from stages.face.flame import FLAME
from stages.runner.run import run_stage
from stages.store.local import LocalStore
from tracking.synthetic import landmarks478, make_clip, publish_upstream, standin

TINY = PipelineConfig(preset="tiny")


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    model = FLAME(standin())
    clip = make_clip(model, 24, seed=4)
    store = LocalStore(tmp_path_factory.mktemp("store"))
    publish_upstream(store, "syn", landmarks478(clip, model.mp_index.numpy()), shard_size=12, fail=(7,))
    run_stage("calibrate", "syn", store, pipeline=TINY, device="cpu")
    res = run_stage("track", "syn", store, pipeline=TINY, device="cpu")
    return store, clip, res


def _load(store, name):
    with np.load(store.root / f"actors/syn/track/{name}.npz") as z:
        return {k: z[k] for k in z.files}


def test_track_writes_every_shard_with_overlaps(tracked):
    store, clip, res = tracked
    assert res.status == "ran" and res.shards_run == (0, 1)
    a, b = _load(store, "0000"), _load(store, "0001")
    overlap = int(a["overlap"])
    assert overlap == 4  # tiny preset
    assert a["frames"].tolist() == list(range(1, 13 + overlap))
    assert b["frames"].tolist() == list(range(13 - overlap, 25))
    assert a["core"].sum() == 12 and b["core"].sum() == 12
    for t in (a, b):
        assert t["exp"].shape[1] == 100 and t["jaw"].shape[1] == 6 and t["eyes"].shape[1] == 12
        assert t["R"].shape[1:] == (3, 3) and t["t"].shape[1] == 3
        np.testing.assert_allclose(t["R"] @ t["R"].transpose(0, 2, 1), np.broadcast_to(np.eye(3), t["R"].shape), atol=1e-5)
    # frame 8 (0-based 7) failed: filled and flagged in shard 0, no error measured
    assert a["filled"].tolist() == [k == 8 for k in a["frames"]]
    assert np.isnan(a["error_px"][7]) and np.nanmedian(a["error_px"]) < 1.5
    # the two shards agree on the frames they share (same calibration, same landmarks)
    shared = np.intersect1d(a["frames"], b["frames"])
    ta = a["t"][np.isin(a["frames"], shared)]
    tb = b["t"][np.isin(b["frames"], shared)]
    assert np.abs(ta - tb).max() < 0.01  # metres


def test_track_one_shard_at_a_time_is_resumable(tmp_path):
    model = FLAME(standin())
    clip = make_clip(model, 12, seed=5)
    store = LocalStore(tmp_path / "store")
    publish_upstream(store, "one", landmarks478(clip, model.mp_index.numpy()), shard_size=6)
    run_stage("calibrate", "one", store, pipeline=TINY, device="cpu")
    first = run_stage("track", "one", store, pipeline=TINY, device="cpu", shard=1)
    assert first.status == "partial" and first.shards_run == (1,)
    second = run_stage("track", "one", store, pipeline=TINY, device="cpu")
    assert second.status == "ran" and second.shards_run == (0,)
