"""Training on CUDA with gsplat (the production path): it learns like the CPU reference path."""

from __future__ import annotations

import pytest
import torch

from stages.dataset.layout import DatasetLayout
from stages.gauss.data import AvatarFrames, TrackedSequence, split_frames
from stages.gauss.evaluate import evaluate, render_fps
from stages.gauss.synthetic import toy_surface
from stages.gauss.trainer import TrainConfig, train

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_gsplat_training_reaches_psnr_threshold(toy_dataset, tmp_path):
    cfg = TrainConfig(steps=300, batch_size=8, resolution=48, sh_degree=1, mlp_width=64, mlp_depth=2, pe_freqs=4,
                      uv_resolution=48, test_frames=0, test_fraction=0.15, checkpoint_every=100, workers=2,
                      lr_scale=4.0, mlp_lr=1e-3, log_every=100, renderer="gsplat")
    surface = toy_surface()
    result = train(cfg, surface, DatasetLayout(toy_dataset), tmp_path, "cuda")
    assert result.steps == 300
    layout = DatasetLayout(toy_dataset)
    seq = TrackedSequence.load(layout)
    _, test = split_frames(len(seq), cfg.test_frames, cfg.test_fraction)
    frames = AvatarFrames(layout, seq, test, cfg.resolution, (0.0, 1.0, 0.0))
    surface = surface.to("cuda")
    for renderer in ("gsplat", "reference"):  # the trained avatar scores alike under both renderers
        ev = evaluate(result.model, surface, frames, torch.tensor([0.0, 1.0, 0.0]), renderer, "cuda")
        assert ev.summary()["psnr_mean"] > 24.0, (renderer, ev.summary())
    b = torch.utils.data.default_collate([frames[j] for j in range(len(frames))])
    assert render_fps(result.model, surface, b["cond"], b["R"], b["t"], b["K"], 48, "gsplat", "cuda") > 10
