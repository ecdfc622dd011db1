"""The landmarks stage: per-shard .npz from ingest's frames, failures flagged with NaN, summary."""

from __future__ import annotations

import numpy as np
import pytest

from stages.errors import BadInput
from stages.frameshard import frame_name, write_shard_tar
from stages.landmarks import Config, landmark_shard, shard_report
from stages.runner.context import actor_key
from stages.runner.run import run_stage
from stages.runner.shards import Shard
from stages.video.render import encode_jpeg


def wojtek_frames(path, n):
    import av

    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for _, f in zip(range(n), c.decode(video=0))]


def test_failed_frames_are_nan_and_listed(tmp_path, wojtek):
    images = wojtek_frames(wojtek, 6)
    images[2] = np.full((512, 512, 3), 30, dtype=np.uint8)  # no face in frame 13
    tar = tmp_path / "s.tar"
    write_shard_tar(tar, [(frame_name(11 + i), encode_jpeg(img)) for i, img in enumerate(images)])
    arrays = landmark_shard(tar, Shard(0, 11, 17), Config())
    assert arrays["frames"].tolist() == list(range(11, 17)) and arrays["frames"].dtype == np.int32
    assert arrays["points"].shape == (6, 478, 3) and arrays["points"].dtype == np.float32
    assert arrays["ok"].tolist() == [True, True, False, True, True, True]
    assert np.isnan(arrays["points"][2]).all() and np.isfinite(arrays["points"][[0, 1, 3, 4, 5]]).all()
    assert arrays["confidence"][2] < 0.5 < arrays["confidence"][0]
    report = shard_report(arrays, 512, 2.0)
    assert report["failed_frames"] == [13] and report["ok"] == 5 and report["longest_failed_run"] == 1

    with pytest.raises(BadInput, match="holds 00011.jpg where 00010.jpg was expected"):
        landmark_shard(tar, Shard(0, 10, 16), Config())


def test_wojtek_landmarks_stage(tmp_path, wojtek):
    from stages.config import PipelineConfig
    from stages.store.uri import open_store

    store = open_store(str(tmp_path / "store"))
    store.put_file(actor_key("w", "input", "video.mp4"), wojtek)
    store.put_json(actor_key("w", "config.json"),
                   PipelineConfig(stages={"ingest": {"shard_size": 200, "min_shards": 1, "detect_samples": 16}}).to_dict())
    run_stage("ingest", "w", store, jobs=1)
    result = run_stage("landmarks", "w", store, jobs=1)
    assert result.status == "ran" and result.frames == 400

    crop = store.get_json(actor_key("w", "ingest", "crop.json"))
    ingest_report = store.get_json(actor_key("w", "ingest", "report.json"))
    scale = 512 / crop["side"]
    boxes = np.array([s["box"] for s in ingest_report["sample_boxes"] if s["box"]], dtype=float)
    boxes = (boxes - [crop["x0"], crop["y0"], crop["x0"], crop["y0"]]) * scale  # into crop pixels
    lo, hi = boxes[:, :2].min(axis=0), boxes[:, 2:].max(axis=0)
    pad = 0.1 * (hi - lo)
    lo, hi = lo - pad, hi + pad

    oks = 0
    for k in range(2):
        d = np.load(store.get_file(actor_key("w", "landmarks", f"{k:04d}.npz"), tmp_path / f"{k}.npz"))
        assert d["frames"].tolist() == list(range(1 + 200 * k, 201 + 200 * k))
        assert d["points"].shape == (200, 478, 3) and d["confidence"].dtype == np.float32 and d["ok"].dtype == bool
        ok = d["ok"]
        oks += int(ok.sum())
        pts = d["points"][ok]
        # every point of every tracked frame lies inside the sampled face boxes (plus 10%)
        inside = ((pts[:, :, :2] >= lo) & (pts[:, :, :2] <= hi)).all(axis=(1, 2))
        assert inside.mean() >= 0.98
        assert np.isnan(d["points"][~ok]).all()
    assert oks >= 396

    report = store.get_json(actor_key("w", "landmarks", "report.json"))
    assert report["frames"] == 400 and report["ok"] == oks and report["shards"] == 2
    assert report["near_edge_fraction"] == 0.0 and report["confidence_mean"] > 0.5
