"""``avatar render`` end to end (a real process, exit codes)."""

from __future__ import annotations

import os
import subprocess
import sys

import torch

from stages.gauss import checkpoint as ckpt
from stages.gauss.surface import flame_surface
from stages.gauss.trainer import TrainConfig, avatar_dict, build_avatar


def _avatar(tmp_path):
    from stages.face.model import load_face_model

    surface = flame_surface(load_face_model(None), torch.zeros(300))
    cfg = TrainConfig(uv_resolution=16, mlp_width=16, mlp_depth=1, pe_freqs=2, sh_degree=1)
    return ckpt.save_atomic(avatar_dict(build_avatar(surface, cfg), surface, cfg, 0, 0), tmp_path / "avatar.pt")


def _cli(*args):
    return subprocess.run([sys.executable, "-c", "from stages.cli import entry; entry()", *args],
                          capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))


def test_render_command_writes_a_video(tmp_path, toy_dataset):
    import av

    avatar = _avatar(tmp_path)
    out = tmp_path / "out.mp4"
    r = _cli("render", "--checkpoint", str(avatar), "--params", str(toy_dataset / "checkpoint"), "--out", str(out),
             "--resolution", "32", "--device", "cpu", "--batch", "8")
    assert r.returncode == 0, r.stderr
    with av.open(str(out)) as c:
        frames = list(c.decode(video=0))
    assert len(frames) == 24 and frames[0].width == 32


def test_render_command_bad_input_exits_2(tmp_path):
    avatar = _avatar(tmp_path)
    r = _cli("render", "--checkpoint", str(avatar), "--params", str(tmp_path), "--out", str(tmp_path / "o.mp4"))
    assert r.returncode == 2 and "no .frame files" in r.stderr and str(tmp_path) in r.stderr
    r = _cli("render", "--checkpoint", str(tmp_path / "missing.pt"), "--params", str(tmp_path), "--out", "o.mp4")
    assert r.returncode == 2 and "missing.pt" in r.stderr


def test_render_command_refuses_another_face_model(tmp_path, toy_dataset):
    from stages.gauss.synthetic import toy_surface

    surface = toy_surface()  # 561 vertices, not the stand-in's
    cfg = TrainConfig(uv_resolution=8, mlp_width=16, mlp_depth=1, pe_freqs=2, sh_degree=0)
    avatar = ckpt.save_atomic(avatar_dict(build_avatar(surface, cfg), surface, cfg, 0, 0), tmp_path / "toy.pt")
    r = _cli("render", "--checkpoint", str(avatar), "--params", str(toy_dataset / "checkpoint"),
             "--out", str(tmp_path / "o.mp4"), "--device", "cpu")
    assert r.returncode == 2 and "same FLAME file" in r.stderr


def _actor_folder(tmp_path, toy_dataset, sound: bool):
    """The store's layout for one actor: dataset/checkpoint (the toy frames), dataset/crop.json,
    dataset/audio.wav (when ``sound``), input/video.mp4 (320x180, 25 frames)."""
    import json
    import shutil

    from stages.video.audio import extract_audio
    from stages.video.avclip import write_flash_clip
    from stages.video.crop_record import CropRecord

    actor = tmp_path / "actor"
    shutil.copytree(toy_dataset / "checkpoint", actor / "dataset" / "checkpoint")
    clip = write_flash_clip(actor / "input" / "video.mp4", seconds=1.0, width=320, height=180, flashes=(0.2,),
                            audio=sound)
    (actor / "dataset" / "crop.json").write_text(json.dumps(CropRecord(150, 30, 120, 320, 180, 48).to_dict()))
    if sound:
        extract_audio(clip.path, actor / "dataset" / "audio.wav", 0, 25)
    return actor


def test_render_full_frame_has_the_source_size_and_sound(tmp_path, toy_dataset):
    import av

    avatar = _avatar(tmp_path)
    for sound in (True, False):
        actor = _actor_folder(tmp_path / str(sound), toy_dataset, sound)
        out = tmp_path / f"full_{sound}.mp4"
        r = _cli("render", "--checkpoint", str(avatar), "--params", str(actor / "dataset" / "checkpoint"), "--out",
                 str(out), "--full-frame", "--device", "cpu", "--batch", "8")
        assert r.returncode == 0, r.stderr
        assert ("with sound" in r.stdout) == sound and "320x180" in r.stdout
        with av.open(str(out)) as c:
            audio = [s for s in c.streams if s.type == "audio"]
            seconds = sum(f.samples for f in c.decode(audio[0])) / audio[0].codec_context.sample_rate if audio else None
            c.seek(0)
            frames = list(c.decode(video=0))
        assert len(frames) == 24 and (frames[0].width, frames[0].height) == (320, 180)
        assert (seconds is not None) == sound
        if sound:
            assert abs(seconds - 24 / 25) <= 1 / 25


def test_render_full_frame_without_a_crop_record_exits_2(tmp_path, toy_dataset):
    avatar = _avatar(tmp_path)
    actor = _actor_folder(tmp_path, toy_dataset, False)
    (actor / "dataset" / "crop.json").unlink()
    r = _cli("render", "--checkpoint", str(avatar), "--params", str(actor / "dataset" / "checkpoint"), "--out",
             str(tmp_path / "o.mp4"), "--full-frame", "--device", "cpu")
    assert r.returncode == 2 and "crop.json" in r.stderr and len(r.stderr.strip().splitlines()) == 1
