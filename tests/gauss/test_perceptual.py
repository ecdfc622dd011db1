"""FlashAvatar's LPIPS term in training (stand-in VGG and linear weights, CPU reference renderer):
it changes training only from ``lpips_start`` on, and the render report carries held-out LPIPS."""

import dataclasses

import torch

from stages.dataset.layout import DatasetLayout
from stages.gauss.perceptual import lpips_on, lpips_uint8
from stages.gauss.synthetic import toy_surface
from stages.gauss.trainer import FLASHAVATAR_LPIPS_WEIGHT, TrainConfig, train
from stages.nets.vgg import load_lpips
from nets.test_vgg import standin_linear, standin_vgg16

CFG = dict(steps=6, batch_size=2, resolution=48, sh_degree=1, mlp_width=32, mlp_depth=2, pe_freqs=2,
           uv_resolution=24, test_frames=0, test_fraction=0.15, checkpoint_every=0, workers=0, log_every=3,
           lpips_weight=5.0)


def test_schedule_matches_flashavatar():
    assert not lpips_on(14_999, 150_000, 0.1) and lpips_on(15_000, 150_000, 0.1)
    assert lpips_on(0, 10, 0.0) and not lpips_on(9, 10, 1.0)


def test_term_is_used_from_its_start_step_only(toy_dataset, tmp_path, one_thread):
    layout = DatasetLayout(toy_dataset)
    perceptual = load_lpips(standin_vgg16(tmp_path / "vgg16.pth"), standin_linear(tmp_path / "vgg.pth"))

    def params(cfg, p, name):
        r = train(cfg, toy_surface(), layout, tmp_path / name, "cpu", perceptual=p)
        return torch.cat([v.flatten().float() for v in r.model.state_dict().values()])

    plain = params(TrainConfig(**CFG), None, "plain")
    never = params(TrainConfig(**{**CFG, "lpips_start": 1.0}), perceptual, "never")
    used = params(TrainConfig(**{**CFG, "lpips_start": 0.5}), perceptual, "used")
    torch.testing.assert_close(never, plain, rtol=0, atol=0)
    assert (used - plain).abs().max() > 1e-6
    # held-out LPIPS as the report computes it: 0 for identical frames, positive otherwise
    gt = (torch.rand(2, 48, 48, 3) * 255).byte().numpy()
    assert lpips_uint8(perceptual, gt, gt) == [0.0, 0.0]
    assert min(lpips_uint8(perceptual, gt, 255 - gt)) > 0
    # off unless asked for (avatar run --lpips-term): measured, it trades PSNR and SSIM for LPIPS
    assert dataclasses.asdict(TrainConfig())["lpips_weight"] == 0.0 and FLASHAVATAR_LPIPS_WEIGHT == 0.05

