"""The render stage through the runner: preview video, report with PSNR/SSIM/FPS."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from stages.config import PipelineConfig
from stages.gauss.synthetic import publish_as_assemble, write_synthetic_dataset
from stages.runner.context import actor_key
from stages.runner.run import run_stage
from stages.store.uri import open_store




def test_render_stage_writes_preview_and_report(tmp_path, one_thread):
    import av

    ds = write_synthetic_dataset(tmp_path / "ds", 20, image_size=48, n_gaussians=2000)
    store = open_store(str(tmp_path / "store"))
    publish_as_assemble(store, "a", ds)
    pipeline = PipelineConfig(preset="tiny", stages={
        "train": {"steps": 6, "batch_size": 2, "resolution": 32, "uv_resolution": 16, "mlp_width": 32,
                  "test_fraction": 0.2},
        "render": {"resolution": 40, "fps_resolution": 48, "fps_batch": 2}})
    run_stage("train", "a", store, pipeline=pipeline, device="cpu")
    result = run_stage("render", "a", store, pipeline=pipeline, device="cpu")
    assert result.status == "ran" and result.frames == 4  # the last 20% of 20 frames
    report = json.loads(store.get_bytes(actor_key("a", "avatar", "report.json")))
    assert report["frames"] == 4 and report["held_out"] == [16, 19]
    assert 5 < report["psnr_mean"] < 60 and 0 < report["ssim_mean"] <= 1
    assert report["render_fps"] > 0 and report["render_fps_single"] > 0 and report["fps_resolution"] == 48 and report["lpips"] is None
    assert report["per_frame"]["index"] == [16, 17, 18, 19]
    md = store.get_bytes(actor_key("a", "avatar", "report.md")).decode()
    assert "PSNR" in md and "SSIM" in md
    with av.open(str(store.local_path(actor_key("a", "avatar", "preview.mp4")))) as c:
        s = c.streams.video[0]
        assert s.codec_context.name == "h264" and s.average_rate == 25
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(s)]
    assert len(frames) == 4 and frames[0].shape == (40, 80, 3)
    # left half is the ground truth: its corner is the green background
    assert frames[0][2, 2, 1] > 200 and frames[0][2, 2, 0] < 60


def _streams(path):
    """(frames, (height, width), audio seconds or None) of a video file."""
    import av

    with av.open(str(path)) as c:
        audio = None
        if c.streams.audio:
            a = c.streams.audio[0]
            audio = sum(f.samples for f in c.decode(a)) / a.codec_context.sample_rate
            c.seek(0)
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    return len(frames), frames[0].shape[:2], audio, frames


@pytest.mark.parametrize("sound", [True, False, "no crop"])
def test_full_frame_preview_with_the_sources_sound(tmp_path, one_thread, sound):
    """``full_frame``: ``preview_full.mp4`` is the source's size, shows the source outside the crop,
    and both previews carry the held-out frames' sound (4 frames = 0.16 s) when the source has any."""
    from stages.video.audio import extract_audio
    from stages.video.avclip import write_flash_clip
    from stages.video.crop_record import CropRecord

    ds = write_synthetic_dataset(tmp_path / "ds", 20, image_size=48, n_gaussians=2000)
    clip = write_flash_clip(tmp_path / "src.mp4", seconds=0.8, width=320, height=180, flashes=(0.1,), audio=sound)
    if sound != "no crop":
        (ds / "crop.json").write_text(json.dumps(CropRecord(100, 40, 96, 320, 180, out_size=48).to_dict()))
    if sound is True:
        assert extract_audio(clip.path, ds / "audio.wav", 0, 20) is not None
    store = open_store(str(tmp_path / "store"))
    publish_as_assemble(store, "a", ds)
    store.put_file(actor_key("a", "input", "video.mp4"), clip.path)
    pipeline = PipelineConfig(preset="tiny", stages={
        "train": {"steps": 2, "batch_size": 2, "resolution": 32, "uv_resolution": 16, "mlp_width": 16,
                  "test_fraction": 0.2},
        "render": {"resolution": 32, "fps_resolution": 32, "fps_batch": 1, "full_frame": True}})
    run_stage("train", "a", store, pipeline=pipeline, device="cpu")
    run_stage("render", "a", store, pipeline=pipeline, device="cpu")
    report = json.loads(store.get_bytes(actor_key("a", "avatar", "report.json")))
    if sound == "no crop":  # an old dataset: the preview and metrics stand, the report says why no full frame
        assert "no crop record" in report["full_frame"]["error"] and report["frames"] == 4
        assert not store.exists(actor_key("a", "avatar", "preview_full.mp4"))
        return
    n, size, audio, frames = _streams(store.local_path(actor_key("a", "avatar", "preview_full.mp4")))
    assert n == 4 and size == (180, 320)
    assert np.abs(frames[0][:30].astype(int) - 60).max() < 12  # the grey source (Y 60) above the crop
    n2, _, audio2, _ = _streams(store.local_path(actor_key("a", "avatar", "preview.mp4")))
    if sound:
        assert audio == pytest.approx(0.16, abs=0.04) and audio2 == pytest.approx(0.16, abs=0.04)
    else:
        assert audio is None and audio2 is None
    assert report["full_frame"]["render_size"] == 96 and report["full_frame"]["audio"] == sound
