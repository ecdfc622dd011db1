"""Training the avatar on the CPU with the reference renderer: it learns, and resume is exact."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from stages.dataset.layout import DatasetLayout
from stages.gauss import checkpoint as ckpt
from stages.gauss.data import AvatarFrames, TrackedSequence, split_frames
from stages.gauss.evaluate import evaluate
from stages.gauss.synthetic import toy_surface
from stages.gauss.trainer import TrainConfig, avatar_dict, build_avatar, load_avatar, train

PSNR_THRESHOLD = 24.0  # dB on held-out frames at 48x48; an untrained avatar scores about 18

TINY = dict(steps=150, batch_size=4, resolution=48, sh_degree=1, mlp_width=48, mlp_depth=2, pe_freqs=4,
            uv_resolution=32, test_frames=0, test_fraction=0.15, checkpoint_every=0, workers=0, lr_scale=4.0,
            mlp_lr=1e-3, log_every=50)


def _held_out_psnr(model, surface, layout, cfg):
    seq = TrackedSequence.load(layout)
    _, test = split_frames(len(seq), cfg.test_frames, cfg.test_fraction)
    frames = AvatarFrames(layout, seq, test, cfg.resolution, (0.0, 1.0, 0.0))
    ev = evaluate(model, surface, frames, torch.tensor([0.0, 1.0, 0.0]), "reference", "cpu", batch_size=4)
    return ev




def test_tiny_training_reaches_psnr_threshold(toy_dataset, tmp_path, one_thread):
    layout = DatasetLayout(toy_dataset)
    cfg = TrainConfig(**TINY)
    surface = toy_surface()
    before = _held_out_psnr(build_avatar(surface, cfg), surface, layout, cfg).summary()["psnr_mean"]
    result = train(cfg, surface, layout, tmp_path, "cpu")
    assert result.steps == cfg.steps and result.images == cfg.steps * cfg.batch_size
    ev = _held_out_psnr(result.model, surface, layout, cfg)
    s = ev.summary()
    assert s["frames"] == 4 and ev.indices == [20, 21, 22, 23]
    print(f"held-out PSNR {before:.2f} dB untrained -> {s['psnr_mean']:.2f} dB, SSIM {s['ssim_mean']:.3f}, "
          f"{result.images_per_s:.1f} images/s")
    assert s["psnr_mean"] > PSNR_THRESHOLD, (before, s)
    assert s["psnr_mean"] > before + 6
    assert s["ssim_mean"] > 0.8
    # the avatar file round-trips to the same renders
    p = ckpt.save_atomic(avatar_dict(result.model, surface, cfg, result.steps, result.images), tmp_path / "avatar.pt")
    model2, meta = load_avatar(p)
    assert meta["steps"] == cfg.steps
    assert _held_out_psnr(model2, surface, layout, cfg).psnr == ev.psnr


SCRIPT = """
import json, sys, torch
from pathlib import Path
torch.set_num_threads(1)
from stages.dataset.layout import DatasetLayout
from stages.gauss.synthetic import toy_surface
from stages.gauss.trainer import TrainConfig, train
cfg = TrainConfig(**json.loads(sys.argv[3]))
r = train(cfg, toy_surface(), DatasetLayout(Path(sys.argv[1])), sys.argv[2], "cpu")
torch.save({k: v for k, v in r.model.state_dict().items()}, sys.argv[2] + "/final.pt")
"""


def _run(dataset, workdir, cfg: dict) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-c", SCRIPT, str(dataset), str(workdir), json.dumps(cfg)], env=env)


def test_resume_after_kill_gives_identical_parameters(toy_dataset, tmp_path):
    cfg = dict(TINY, steps=24, checkpoint_every=4, resolution=32, uv_resolution=24)
    full, killed = tmp_path / "full", tmp_path / "killed"
    full.mkdir(), killed.mkdir()
    p = _run(toy_dataset, killed, cfg)
    ck = killed / "checkpoint.pt"
    deadline = time.monotonic() + 300
    while not ck.exists() and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert p.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    step_at_kill = ckpt.load(ck, ckpt.CHECKPOINT_FORMAT)["step"]
    assert 0 < step_at_kill < cfg["steps"]
    assert not (killed / "final.pt").exists()

    resumed = _run(toy_dataset, killed, cfg)
    uninterrupted = _run(toy_dataset, full, cfg)
    assert resumed.wait(timeout=600) == 0 and uninterrupted.wait(timeout=600) == 0
    a = torch.load(killed / "final.pt")
    b = torch.load(full / "final.pt")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert ckpt.load(killed / "checkpoint.pt", ckpt.CHECKPOINT_FORMAT)["step"] == cfg["steps"]


def test_a_checkpoint_from_before_a_setting_was_added_resumes():
    """resume_holds: a training checkpoint written by code whose TrainConfig lacked a field (now at
    its default) is resumed; a changed setting starts afresh; the resume-ignored ones never count."""
    from dataclasses import asdict, replace

    from stages.config import digest_of
    from stages.gauss.trainer import RESUME_IGNORES, resume_digest, resume_holds

    cfg = TrainConfig(**TINY)
    older = {k: v for k, v in asdict(cfg).items() if k != "init_color_frames"}  # as older code wrote it
    state = {"config": older, "config_digest": digest_of({k: v for k, v in older.items() if k not in RESUME_IGNORES})}
    assert state["config_digest"] != resume_digest(cfg), "the digest alone would start afresh"
    assert resume_holds(state, cfg)
    assert resume_holds(state, replace(cfg, steps=300, log_every=7))
    assert not resume_holds(state, replace(cfg, init_color_frames=cfg.init_color_frames + 4))
    assert not resume_holds(state, replace(cfg, resolution=64))
    assert not resume_holds({"config": {}, "config_digest": state["config_digest"]}, cfg)


def _alpha_error(model, surface, layout, cfg):
    """Mean |render alpha - matte x neckhead| over the training frames at the training resolution."""
    seq = TrackedSequence.load(layout)
    train_idx, _ = split_frames(len(seq), cfg.test_frames, cfg.test_fraction)
    frames = AvatarFrames(layout, seq, train_idx, cfg.resolution, (0.0, 1.0, 0.0))
    b = torch.utils.data.default_collate([frames[j] for j in range(len(frames))])
    from stages.gauss.trainer import render_frames

    with torch.no_grad():
        _, alpha = render_frames(model, surface, b["cond"], b["R"], b["t"], b["K"], cfg.resolution,
                                 torch.tensor([0.0, 1.0, 0.0]), "reference")
    head = (b["alpha"].float() / 255) * (b["neckhead"].float() / 255)
    return float((alpha - head).abs().mean())


def test_silhouette_term_pulls_the_render_alpha_to_the_head_masks(toy_dataset, tmp_path, one_thread):
    """train.silhouette_weight: the same short training with the term ends with the render's alpha
    closer to the training frames' matte x neckhead than without it."""
    from dataclasses import replace

    layout = DatasetLayout(toy_dataset)
    surface = toy_surface()
    cfg = TrainConfig(**{**TINY, "steps": 30})
    plain = train(cfg, surface, layout, tmp_path / "plain", "cpu").model
    sil = train(replace(cfg, silhouette_weight=1.0), surface, layout, tmp_path / "sil", "cpu").model
    e_plain, e_sil = _alpha_error(plain, surface, layout, cfg), _alpha_error(sil, surface, layout, cfg)
    print(f"alpha error on training frames: {e_plain:.4f} plain, {e_sil:.4f} with the silhouette term")
    assert e_sil < 0.93 * e_plain  # measured 0.0113 -> 0.0101


def test_a_checkpoint_of_another_avatar_layout_starts_afresh(toy_dataset, tmp_path, caplog):
    """A checkpoint whose Gaussians differ in number from the avatar the code builds now (e.g. written
    before a change to the shell) is not loaded (it could not be): training starts afresh and says so."""
    import logging
    from dataclasses import replace

    from stages.gauss.trainer import _checkpoint_dict

    torch.set_num_threads(1)
    cfg = TrainConfig(**dict(TINY, steps=2, checkpoint_every=0, resolution=32, uv_resolution=24))
    other = build_avatar(toy_surface(), replace(cfg, uv_resolution=20))
    opt = torch.optim.Adam(other.param_groups(cfg.lr_scale, cfg.mlp_lr))
    ckpt.save_atomic(_checkpoint_dict(cfg, other, opt, 1, 16), tmp_path / "checkpoint.pt")
    with caplog.at_level(logging.WARNING, logger="avatar.gauss"):
        r = train(cfg, toy_surface(), DatasetLayout(toy_dataset), tmp_path, "cpu")
    assert r.model.num_gaussians != other.num_gaussians
    assert r.steps == 2 and r.images == 2 * cfg.batch_size  # both steps ran: nothing was resumed
    assert any("another avatar layout" in m for m in caplog.messages)


def test_training_on_a_frame_cache_still_decoding_gives_the_same_avatar(toy_dataset, tmp_path, one_thread):
    """With decoding processes the first steps run on the rows decoded so far (the cache's other rows still
    decoding); every step sees the bytes it would have seen from per-item decoding, so the avatar is the same."""
    cfg = TrainConfig(**dict(TINY, steps=8, resolution=24, uv_resolution=16, checkpoint_every=0, frame_cache="on",
                             workers=2, log_every=1000))
    layout = DatasetLayout(toy_dataset)
    a = train(cfg, toy_surface(), layout, tmp_path / "cache", "cpu")
    b = train(TrainConfig(**{**cfg.__dict__, "frame_cache": "off", "workers": 0}), toy_surface(), layout,
              tmp_path / "decode", "cpu")
    assert a.pipeline.source == "cache" and a.pipeline.cache_built and b.pipeline.source == "decode"
    fa, fb = a.model.state_dict(), b.model.state_dict()
    assert a.steps == b.steps == 8 and fa.keys() == fb.keys() and all(torch.equal(fa[k], fb[k]) for k in fa)
