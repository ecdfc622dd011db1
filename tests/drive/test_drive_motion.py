"""``avatar drive --motion``: neutral motion, audio, bad files, reruns (an untrained toy avatar, CPU)."""

from __future__ import annotations

import wave

import numpy as np
import pytest

from stages.cli import main

RES = 64  # the reference renderer on a CPU: small frames keep these tests fast


def _wav(path, seconds: float, sr: int = 16000):
    t = np.arange(int(seconds * sr)) / sr
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(sr)
        w.writeframes((0.3 * np.sin(2 * np.pi * 440 * t) * 32767).astype(np.int16).tobytes())
    return path


def _frames(path):
    import av

    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def _args(store, actor, *extra):
    return ["drive", "--actor", actor, "--store", str(store), "--device", "cpu", "--resolution", str(RES), *extra]


def test_zero_motion_renders_the_actor_neutral_face(toy_actor, tmp_path):
    import torch

    from stages.drive.render import DriveInputs, render_motion
    from stages.motion.format import load_motion
    from stages.motion.transfer import median_rotation

    store, actor, info = toy_actor
    n = 6
    np.savez(tmp_path / "zeros.npz", expr=np.zeros((n, 50), np.float32), jaw_pose=np.zeros((n, 3), np.float32))
    assert main(_args(store, actor, "--motion", str(tmp_path / "zeros.npz"))) == 0
    out = store / "actors" / actor / "drive" / "zeros"
    m = load_motion(out / "motion.npz")
    assert len(m) == n
    train = slice(0, info["train_frames"])  # the actor's neutral: the median over its training frames
    np.testing.assert_allclose(m.exp, np.tile(np.median(info["params"]["exp"][train], 0), (n, 1)), atol=1e-5)
    np.testing.assert_allclose(m.R, np.tile(median_rotation(info["R"][train]), (n, 1, 1)), atol=1e-5)
    # every frame is the render of that neutral face
    video = _frames(out / "drive.mp4")
    assert video.shape == (n, RES, RES, 3)
    ref = next(render_motion(info["model"], info["surface"], DriveInputs(m.cond()[:1], m.R[:1], m.t[:1], m.K),
                             resolution=RES, background=(0.0, 1.0, 0.0)))
    from stages.gauss.preview import PreviewWriter

    with PreviewWriter(tmp_path / "ref.mp4", RES, RES, 25, crf=20) as w:  # the same encoder, same settings
        for _ in range(n):
            w.write(ref.rgb_uint8()[0])
    diff = np.abs(video.astype(int) - _frames(tmp_path / "ref.mp4").astype(int))
    assert diff.mean() < 0.5, diff.mean()
    assert np.abs(video[1:].astype(int) - video[:1].astype(int)).mean() < 1
    assert (ref.alpha > 0.5).sum() > 20  # a face is there, not an empty frame
    assert not (out / "side_by_side.mp4").exists()  # a motion file has no driver footage


@pytest.mark.parametrize("seconds, frames", [(0.6, 15), (2.0, 20)])
def test_audio_is_muxed_and_trimmed_to_the_shorter(toy_actor, tmp_path, seconds, frames, caplog):
    import av

    store, actor, _ = toy_actor
    np.savez(tmp_path / "talk.npz", expr=np.zeros((20, 10), np.float32))
    wav = _wav(tmp_path / "speech.wav", seconds)
    assert main(_args(store, actor, "--motion", str(tmp_path / "talk.npz"), "--audio", str(wav))) == 0
    assert "trimmed" in caplog.text  # one warning line either way
    path = store / "actors" / actor / "drive" / "talk" / "drive.mp4"
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        a = c.streams.audio[0]
        assert a.codec_context.name == "aac"
        assert (v.codec_context.name, v.average_rate, v.width, v.height) == ("h264", 25, RES, RES)
        a_dur = float(a.duration * a.time_base)
    assert len(_frames(path)) == frames
    assert abs(a_dur - frames / 25) <= 1 / 25, (a_dur, frames)


def test_rerun_is_skipped_and_another_motion_under_the_same_name_is_refused(toy_actor, tmp_path, capsys):
    store, actor, _ = toy_actor
    np.savez(tmp_path / "a" , expr=np.zeros((3, 10), np.float32))
    motion = tmp_path / "a.npz"
    assert main(_args(store, actor, "--motion", str(motion), "--name", "take")) == 0
    manifest = (store / "actors" / actor / "drive" / "take" / "manifest.json").read_bytes()
    assert main(_args(store, actor, "--motion", str(motion), "--name", "take")) == 0
    assert "already done" in capsys.readouterr().out
    np.savez(tmp_path / "b", expr=np.ones((3, 10), np.float32))
    assert main(_args(store, actor, "--motion", str(tmp_path / "b.npz"), "--name", "take")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "never overwritten" in err[0]
    assert (store / "actors" / actor / "drive" / "take" / "manifest.json").read_bytes() == manifest


@pytest.mark.parametrize("arrays, key", [
    ({"expr": np.zeros((4, 101))}, "expr"),
    ({"expr": np.zeros((4, 10)), "jaw_pose": np.zeros((4, 6))}, "jaw_pose"),
    ({"expr": np.zeros((4, 10)), "eyelids": np.zeros((5, 2))}, "eyelids"),
])
def test_bad_motion_file_is_one_line_exit_2_and_nothing_done(toy_actor, tmp_path, capsys, arrays, key):
    store, actor, _ = toy_actor
    np.savez(tmp_path / "bad.npz", **arrays)
    before = sorted(p for p in store.rglob("*"))
    assert main(_args(store, actor, "--motion", str(tmp_path / "bad.npz"))) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"'{key}'" in err[0] and "expected" in err[0], err
    assert sorted(p for p in store.rglob("*")) == before


def test_missing_avatar_and_usage_errors_exit_2(tmp_path, capsys):
    np.savez(tmp_path / "m.npz", expr=np.zeros((3, 10), np.float32))
    assert main(_args(tmp_path / "store", "nobody", "--motion", str(tmp_path / "m.npz"))) == 2
    assert "no trained avatar" in capsys.readouterr().err
    assert main(_args(tmp_path / "store", "nobody")) == 2
    assert "exactly one of" in capsys.readouterr().err
    assert main(_args(tmp_path / "store", "nobody", "--motion", str(tmp_path / "m.npz"), "--pose", "wobbly")) == 2
    assert "--pose wobbly" in capsys.readouterr().err


def test_full_frame_puts_the_driven_avatar_into_the_actors_footage(toy_actor, tmp_path, capsys):
    """``--full-frame``: ``drive_full.mp4`` is the actor's source size, shows the source outside the crop,
    the avatar inside it, and carries the drive's sound; an actor without a crop record is refused first."""
    import av

    from stages.video.avclip import write_flash_clip
    from stages.video.crop_record import CropRecord

    store, actor, _ = toy_actor
    np.savez(tmp_path / "nod.npz", expr=np.zeros((8, 10), np.float32))
    wav = _wav(tmp_path / "speech.wav", 8 / 25)
    # an actor assembled before crop records: refused in one line before anything is rendered
    assert main(_args(store, actor, "--motion", str(tmp_path / "nod.npz"), "--full-frame")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "crop record" in err[0] and "--full-frame" in err[0]
    assert not (store / "actors" / actor / "drive" / "nod" / "manifest.json").exists()

    clip = write_flash_clip(tmp_path / "src.mp4", seconds=0.2, width=320, height=180, flashes=(), audio=False)
    (store / "actors" / actor / "input").mkdir(parents=True, exist_ok=True)
    (store / "actors" / actor / "input" / "video.mp4").write_bytes(clip.path.read_bytes())
    (store / "actors" / actor / "dataset" / "crop.json").write_text(
        __import__("json").dumps(CropRecord(120, 40, 96, 320, 180, out_size=512).to_dict()))
    assert main(_args(store, actor, "--motion", str(tmp_path / "nod.npz"), "--audio", str(wav), "--full-frame")) == 0
    out = store / "actors" / actor / "drive" / "nod"
    full = _frames(out / "drive_full.mp4")
    src = _frames(clip.path)
    assert full.shape == (8, 180, 320, 3)
    outside = np.ones((180, 320), bool)
    outside[40 - 4:40 + 96 + 4, 120 - 4:120 + 96 + 4] = False  # the crop plus the encoder's chroma blocks
    for k in range(8):  # frame k over source frame k, looped back and forth past its end (5 frames)
        s = src[[0, 1, 2, 3, 4, 4, 3, 2][k]]
        assert np.abs(full[k][outside].astype(int) - s[outside].astype(int)).mean() < 2
    inside = full[:, 40 + 30:40 + 66, 120 + 30:120 + 66].astype(int)
    assert np.abs(inside - src[0, 70:106, 150:186].astype(int)).mean() > 10  # the avatar is there
    with av.open(str(out / "drive_full.mp4")) as c:
        assert c.streams.audio and c.streams.audio[0].codec_context.name == "aac"


def test_a_drive_finished_before_a_setting_was_added_is_kept(toy_actor, tmp_path, capsys, monkeypatch):
    """DriveConfig gains a field (at its default) after a drive finished: the rerun skips it, and
    nothing of it is rewritten (stages/config_match.py)."""
    import dataclasses

    import stages.drive.stage as drive_stage

    store, actor, _ = toy_actor
    np.savez(tmp_path / "m", expr=np.zeros((3, 10), np.float32))
    args = _args(store, actor, "--motion", str(tmp_path / "m.npz"), "--name", "take")
    assert main(args) == 0
    folder = store / "actors" / actor / "drive" / "take"
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    new = dataclasses.make_dataclass("DriveConfig", [("grain", float, dataclasses.field(default=0.0))],
                                     bases=(drive_stage.DriveConfig,))
    monkeypatch.setattr(drive_stage, "DriveConfig", new)
    capsys.readouterr()
    assert main(args) == 0
    assert "already done" in capsys.readouterr().out
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_render_size_on_a_cpu_follows_the_avatars_training_size():
    from stages.drive.render import render_size

    assert render_size(512, "cuda", 96) == 512  # a GPU renders at the output size
    assert render_size(512, "cpu", 96) == 288 and render_size(512, "cpu", 128) == 384  # tiny, demo
    assert render_size(512, "cpu", 512) == 512 and render_size(256, "cpu", 512) == 256  # the full preset
    assert render_size(512, "cpu", None) == 512  # an avatar file without its training config
    assert render_size(512, "cuda", 96, asked=128) == 128 and render_size(64, "cpu", 96, asked=128) == 64


def test_a_lower_render_resolution_is_scaled_to_the_output_size(toy_actor, tmp_path):
    """--render-resolution 32 with --resolution 64: drive.mp4 is still 64 px, close to the 64-px render, and the
    drive's report says what it rendered at."""
    import json

    store, actor, _ = toy_actor
    n = 4
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "m.npz", expr=rng.normal(0, 0.5, (n, 50)).astype(np.float32),
             jaw_pose=np.zeros((n, 3), np.float32))
    assert main(_args(store, actor, "--motion", str(tmp_path / "m.npz"), "--name", "full")) == 0
    assert main(_args(store, actor, "--motion", str(tmp_path / "m.npz"), "--name", "half",
                      "--render-resolution", "32")) == 0
    drive = store / "actors" / actor / "drive"
    full, half = _frames(drive / "full" / "drive.mp4"), _frames(drive / "half" / "drive.mp4")
    assert full.shape == half.shape == (n, RES, RES, 3)
    diff = np.abs(full.astype(int) - half.astype(int))
    # another render of the same picture (this toy's Gaussians are sized for 512 px, so 32 px blurs them)
    assert 0 < diff.mean() < 8, diff.mean()
    assert np.corrcoef(full.ravel(), half.ravel())[0, 1] > 0.95
    reports = [json.loads((drive / d / "manifest.json").read_text())["config"]["render_resolution"]
               for d in ("full", "half")]
    assert reports == [0, 32]
    assert main(_args(store, actor, "--motion", str(tmp_path / "m.npz"), "--render-resolution", "96")) == 2
