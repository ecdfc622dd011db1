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
