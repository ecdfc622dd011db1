"""The demo preset (``make demo`` on a CPU) pins its settings: a 256 px held-out preview, a training
run sized for about 5 minutes on 2 cores, no frame-by-frame jitter fit; and it leaves the full
(default) preset as it was."""

import dataclasses

from stages.config import PipelineConfig
from stages.graph import stage
from stages.gauss.trainer import TrainConfig


def _cfg(preset: str, name: str):
    return PipelineConfig(preset=preset).stage_config(stage(name))


def test_demo_preset_settings():
    train, render = _cfg("demo", "train"), _cfg("demo", "render")
    assert render.resolution >= 256 and render.fps_resolution >= 256  # the preview and PSNR at >= 256 px
    assert (train.steps, train.batch_size, train.resolution, train.uv_resolution) == (500, 2, 128, 64)
    assert train.init_color_frames == 16 and train.lr_scale == 8.0
    assert train.test_frames is None and train.test_fraction is None  # the default split: 10% of the clip
    assert _cfg("demo", "assemble").jitter_frames == 0
    track = _cfg("demo", "track")
    assert (track.rigid_steps, track.landmark_steps, track.photometric_steps) == (40, 200, 0)


def test_full_preset_is_the_stage_defaults():
    for name in ("train", "render", "track", "calibrate", "assemble", "ingest", "masks"):
        cfg = _cfg("full", name)
        assert cfg == type(cfg)(), name
    assert _cfg("full", "train").init_color_frames == 0  # grey start, upstream's
    assert dataclasses.asdict(_cfg("full", "train")) == dataclasses.asdict(TrainConfig())
