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




def _publish_landmarks(store, actor, n):
    """Finished ingest (shards.json) and landmarks outputs for frames 1..n: MediaPipe's canonical
    face in the middle of the 512 crop, frame 17's landmarks failed."""
    import io
    import sys
    from pathlib import Path

    import numpy as np

    from stages.runner.manifest import MANIFEST, Manifest
    from stages.runner.shards import SHARDS_FILE, plan_shards, shards_document

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "masks"))
    from test_neck import canonical_points

    shards = plan_shards(n, n)
    key = actor_key(actor, "ingest", SHARDS_FILE)
    outs = {key: store.put_json(key, shards_document(n, 25, shards))}
    store.put_json(actor_key(actor, "ingest", MANIFEST), Manifest(stage="ingest", actor=actor, inputs={}, config_digest="t",
                                                                  config={}, outputs=outs).to_dict())
    pts = np.repeat(canonical_points(centre=(256.0, 256.0))[None], n, 0)
    ok = np.ones(n, bool)
    ok[16] = False
    pts[16] = np.nan
    data = io.BytesIO()
    np.savez(data, frames=np.arange(1, n + 1, dtype=np.int32), points=pts, confidence=ok.astype(np.float32), ok=ok)
    key = actor_key(actor, "landmarks", f"{shards[0].name}.npz")
    outs = {key: store.put_bytes(key, data.getvalue())}
    store.put_json(actor_key(actor, "landmarks", MANIFEST), Manifest(stage="landmarks", actor=actor, inputs={},
                                                                     config_digest="t", config={}, outputs=outs).to_dict())


def test_render_stage_writes_preview_and_report(tmp_path, one_thread):
    import av

    ds = write_synthetic_dataset(tmp_path / "ds", 20, image_size=48, n_gaussians=2000)
    store = open_store(str(tmp_path / "store"))
    publish_as_assemble(store, "a", ds)
    pipeline = PipelineConfig(preset="tiny", stages={
        "train": {"steps": 6, "batch_size": 2, "resolution": 32, "uv_resolution": 16, "mlp_width": 32,
                  "test_fraction": 0.2},
        "render": {"resolution": 40, "fps_resolution": 48, "fps_batch": 2}})
    _publish_landmarks(store, "a", 20)
    run_stage("train", "a", store, pipeline=pipeline, device="cpu")
    result = run_stage("render", "a", store, pipeline=pipeline, device="cpu")
    assert result.status == "ran" and result.frames == 4  # the last 20% of 20 frames
    report = json.loads(store.get_bytes(actor_key("a", "avatar", "report.json")))
    assert report["frames"] == 4 and report["held_out"] == [16, 19]
    assert 5 < report["psnr_mean"] < 60 and 0 < report["ssim_mean"] <= 1
    assert report["render_fps"] > 0 and report["render_fps_single"] > 0 and report["fps_resolution"] == 48 and report["lpips"] is None
    assert report["per_frame"]["index"] == [16, 17, 18, 19]
    phases = report["phases"]  # where the stage's time went (wall and CPU seconds)
    assert {"fetch_dataset", "load", "evaluate", "preview_encode", "render_fps"} <= set(phases["wall_s"])
    assert all(v >= 0 for v in phases["wall_s"].values()) and set(phases["cpu_s"]) == set(phases["wall_s"])
    md = store.get_bytes(actor_key("a", "avatar", "report.md")).decode()
    assert "PSNR" in md and "SSIM" in md
    # the eye region's error, from the held-out frames' landmarks (frame 17, checkpoint 16, has none)
    eye = report["eye_region"]
    assert eye["frames"] == 3 and eye["per_frame"][0] is None and 5 < eye["psnr_min"] <= eye["psnr_mean"] < 80
    assert "eye region PSNR" in md
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


def test_report_markdown_shows_steadiness():
    from stages.render import steadiness_markdown

    assert steadiness_markdown(None) == []
    steady = {"ours": {"position_mm": 1.17, "rotation_deg": 0.72, "frames": 400}, "window": [151, 250],
              "ours_window": {"position_mm": 1.75, "rotation_deg": 0.96, "frames": 100},
              "per_frame_fit": {"position_mm": 14.75, "rotation_deg": 1.10, "frames": 100},
              "ratio_position": 0.119, "ratio_rotation": 0.873}
    md = "\n".join(steadiness_markdown(steady))
    assert "| ours, whole clip | 400 | 1.170 mm | 0.720 deg |" in md
    assert "each frame fitted alone, frames 151..250 | 100 | 14.750 mm | 1.100 deg" in md
    assert "0.12x" in md and "0.87x" in md
