"""Sound on the 25 fps frame timeline: ingest's ``audio.wav`` against white flashes in its frames,
and muxing audio into finished videos."""

from __future__ import annotations

import logging
from fractions import Fraction

import cv2
import numpy as np
import pytest

from stages.runner.context import actor_key
from stages.runner.run import run_stage
from stages.video.audio import mux_audio, read_wav, slice_frames, write_wav
from stages.video.avclip import beep_onsets, write_flash_clip
from tests.stages.test_ingest import frames_of, put_video

CLIPS = {
    "25fps": ({"fps": 25}, "mp4"),
    "29.97fps": ({"fps": Fraction(30000, 1001)}, "mp4"),
    "vfr": ({"fps": 30, "vfr": True}, "mp4"),
    "start-time": ({"fps": Fraction(30000, 1001), "start": 1.0, "audio_lead": 0.2, "flashes": (0.3, 1.14)}, "mkv"),
}


def ingest(tmp_path, clip):
    store = put_video(tmp_path / "s", "a", clip, {"fixed_crop": [800, 300, 512], "size": 64, "shard_size": 40})
    run_stage("ingest", "a", store, jobs=1)
    return store


@pytest.mark.parametrize("name", list(CLIPS))
def test_beep_onsets_fall_on_the_flash_frames(tmp_path, name):
    """1080p clip, white flash + 1 kHz beep at the same instants: in ``audio.wav`` each beep starts
    within half a frame of the output frame that first shows the flash (``-vf fps=25``'s rounding
    makes half a frame the bound), and within 2 ms of the flash frame's own time."""
    kw, ext = CLIPS[name]
    clip = write_flash_clip(tmp_path / f"c.{ext}", seconds=1.8, **kw)
    store = ingest(tmp_path, clip.path)
    doc, frames = frames_of(store, "a")
    bright = np.array([cv2.imdecode(np.frombuffer(d, np.uint8), cv2.IMREAD_GRAYSCALE).mean() for _, d in frames])
    white = bright > 150
    flash_out = np.flatnonzero(white & ~np.r_[False, white[:-1]]).tolist()  # first white frame of each flash
    assert len(flash_out) == len(clip.flash_frames) == 2, (flash_out, bright.round())
    wav = store.get_file(actor_key("a", "ingest", "audio.wav"), tmp_path / "a.wav")
    samples, rate = read_wav(wav)
    assert rate == 16000 and samples.shape == (doc["frames"] * 640, 1)
    onsets = np.array(beep_onsets(samples[:, 0], rate)) * 25  # in frames
    assert len(onsets) == 2, onsets
    assert np.all(np.abs(onsets - np.array(flash_out)) <= 0.5 + 0.02), (onsets, flash_out)
    # exact placement: the flash frame's time on the timeline (video start relative to frame 0)
    report = store.get_json(actor_key("a", "ingest", "report.json"))
    lead = 0 if name != "start-time" else 5  # 0.2 s of audio before the video: 5 frames of the first picture
    expect = np.array([float(t) * 25 + lead for t in clip.flash_times])
    assert np.all(np.abs(onsets - expect) <= 0.05), (onsets, expect)
    assert report["audio"]["sample_rate"] == 16000 and report["audio"]["channels_in"] == 2
    crop = store.get_json(actor_key("a", "ingest", "crop.json"))
    assert crop["bbox"] == [800, 1312, 300, 812] and crop["box"] == [800, 300, 1312, 812]
    assert (crop["source_width"], crop["source_height"], crop["scale"]) == (1920, 1080, 64 / 512)


def test_no_audio_track_means_no_wav_and_a_note(tmp_path):
    clip = write_flash_clip(tmp_path / "c.mp4", seconds=1.2, width=640, height=360, audio=False)
    store = put_video(tmp_path / "s", "a", clip.path, {"fixed_crop": [0, 0, 256], "size": 64})
    run_stage("ingest", "a", store, jobs=1)
    assert not store.exists(actor_key("a", "ingest", "audio.wav"))
    report = store.get_json(actor_key("a", "ingest", "report.json"))
    assert report["audio"] is None and "no audio track" in report["audio_note"]
    import torch

    bbox = torch.load(store.get_file(actor_key("a", "ingest", "bbox.pt"), tmp_path / "b.pt"))
    assert bbox.tolist() == [0, 256, 0, 256]


def _stream_seconds(path):
    import av

    with av.open(str(path)) as c:
        out = {}
        for s in c.streams:
            if s.type == "audio":
                out["audio"] = sum(f.samples for f in c.decode(s)) / s.codec_context.sample_rate
        c.seek(0)
        v = c.streams.video[0]
        out["frames"] = sum(1 for _ in c.decode(v))
        return out


def _video(path, n):
    from stages.gauss.preview import PreviewWriter

    with PreviewWriter(path, 64, 48, 25) as w:
        for i in range(n):
            w.write(np.full((48, 64, 3), (i * 5) % 255, np.uint8))
    return path


@pytest.mark.parametrize("audio_s,frames_out,warns", [(2.0, 50, False), (3.0, 50, True), (1.2, 30, True)])
def test_mux_audio_trims_to_the_shorter(tmp_path, caplog, audio_s, frames_out, warns):
    video = _video(tmp_path / "v.mp4", 50)
    t = np.arange(int(audio_s * 16000)) / 16000
    wav = write_wav(tmp_path / "a.wav", (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16))
    with caplog.at_level(logging.WARNING, logger="avatar.audio"):
        mux_audio(video, wav, tmp_path / "o.mp4")
    got = _stream_seconds(tmp_path / "o.mp4")
    assert got["frames"] == frames_out
    assert abs(got["audio"] - frames_out / 25) <= 1 / 25 + 1024 / 16000  # one frame (+ one AAC frame of padding)
    lines = [r for r in caplog.records if "trimmed" in r.getMessage()]
    assert bool(lines) == warns and all("\n" not in r.getMessage() for r in lines)


def test_slice_frames_pads_with_silence(tmp_path):
    wav = write_wav(tmp_path / "a.wav", np.arange(640 * 4, dtype=np.int16))
    part, rate = read_wav(slice_frames(wav, tmp_path / "p.wav", 2, 3))
    assert rate == 16000 and part.shape == (640 * 3, 1)
    assert part[:1280, 0].tolist() == list(range(1280, 2560)) and not part[1280:].any()


@pytest.mark.parametrize("offset", [0.3, -0.2])
def test_audio_shifted_by_an_edit_list_keeps_its_shift(tmp_path, offset):
    """The sound moved by ``offset`` s against the picture (an mp4 edit list written by ffmpeg's
    ``-itsoffset``): the beeps land ``offset * 25`` frames from the flashes."""
    import subprocess

    import imageio_ffmpeg

    from stages.video.audio import extract_audio, timeline_origin
    from stages.video.decode import index_frames, probe

    clip = write_flash_clip(tmp_path / "c.mp4", seconds=1.6, width=320, height=180)
    out = tmp_path / "shifted.mp4"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(clip.path), "-itsoffset", str(offset),
                    "-i", str(clip.path), "-map", "0:v", "-map", "1:a", "-c", "copy", str(out)], check=True, timeout=60)
    info = probe(out)
    index = index_frames(info)
    assert extract_audio(out, tmp_path / "a.wav", timeline_origin(info, index), 40) is not None
    samples, rate = read_wav(tmp_path / "a.wav")
    onsets = np.array(beep_onsets(samples[:, 0], rate)) * 25
    expect = np.array([float(t) * 25 + offset * 25 for t in clip.flash_times])
    assert onsets.shape == expect.shape and np.abs(onsets - expect).max() <= 0.05, (onsets, expect)
