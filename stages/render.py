"""The ``render`` stage: held-out metrics, the side-by-side preview and the render speed.

Reads the dataset (assemble) and ``train/avatar.pt``; renders the held-out frames (the split the
training used) and writes, under ``actors/<a>/render/``:

- ``preview.mp4``: ground truth | render side by side, 25 fps, H.264;
- ``report.json`` and ``report.md``: PSNR and SSIM (mean, min), render frames/s including the
  face model and the MLP at ``fps_resolution`` (batched and one frame at a time), LPIPS only where available (not yet: reported as
  not computed).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from stages.runner.context import StageContext

log = logging.getLogger("avatar.render")

ASSETS = ("flame",)


@dataclass
class Config:
    """Attributes:
        resolution: size the held-out frames are rendered and scored at (px, square).
        fps_resolution: size the render speed is measured at (px).
        fps_batch: frames rendered per call when measuring speed.
        batch_size: frames per render call for the metrics.
        renderer: ``auto`` (gsplat on CUDA, else reference), ``gsplat`` or ``reference``.
        fps: preview frame rate.
        max_frames: at most this many held-out frames (0: all).
        workers: DataLoader workers.
    """

    resolution: int = 512
    fps_resolution: int = 512
    fps_batch: int = 16
    batch_size: int = 8
    renderer: str = "auto"
    fps: int = 25
    max_frames: int = 0
    workers: int = 4


PRESETS = {"tiny": {"resolution": 96, "fps_resolution": 96, "fps_batch": 2, "batch_size": 4, "workers": 0},
           "demo": {"resolution": 256, "fps_resolution": 256}}  # + tiny's (config.PRESET_BASE)


def run(ctx: StageContext) -> None:
    import numpy as np
    import torch

    from stages.gauss.data import AvatarFrames, TrackedSequence, background_rgb, choose_split
    from stages.gauss.evaluate import evaluate, render_fps
    from stages.gauss.preview import PreviewWriter
    from stages.gauss.trainer import check_face_model, choose_renderer, config_from_dict, load_avatar
    from stages.train import face_surface, fetch_dataset

    cfg: Config = ctx.config
    layout = fetch_dataset(ctx)
    seq = TrackedSequence.load(layout)
    model, meta = load_avatar(ctx.fetch("avatar.pt", "train", folder="avatar"))
    tcfg = config_from_dict(meta["train_config"])
    surface = face_surface(ctx, meta["shape"].numpy())
    check_face_model(meta, surface, ctx.key("avatar.pt", "train"))
    surface = surface.to(ctx.device)
    model = model.to(ctx.device)
    split = choose_split(len(seq), tcfg.test_frames, tcfg.test_fraction, tcfg.max_train_frames)
    test_idx = split.test
    if cfg.max_frames:
        test_idx = test_idx[:cfg.max_frames]
    renderer = choose_renderer(cfg.renderer, ctx.device)
    bg_rgb = background_rgb(tcfg.background)
    frames = AvatarFrames(layout, seq, test_idx, cfg.resolution, bg_rgb)
    ctx.progress.set_total(len(frames))
    preview = ctx.scratch / "preview.mp4"
    writer = PreviewWriter(preview, 2 * cfg.resolution, cfg.resolution, cfg.fps)

    def on_frames(gt, img) -> None:
        for g, r in zip(gt, img):
            writer.write(np.concatenate([g, r], axis=1))  # ground truth | render
        ctx.progress.advance(len(gt))

    try:
        ev = evaluate(model, surface, frames, torch.tensor(bg_rgb), renderer, ctx.device, cfg.batch_size,
                      cfg.workers, on_frames)
    finally:
        writer.close()
    ctx.count_frames(len(ev.indices))

    fps_frames = AvatarFrames(layout, seq, test_idx[:cfg.fps_batch], cfg.fps_resolution, bg_rgb)
    b = torch.utils.data.default_collate([fps_frames[j] for j in range(len(fps_frames))])
    fps = render_fps(model, surface, b["cond"], b["R"], b["t"], b["K"], cfg.fps_resolution, renderer, ctx.device)
    fps_single = render_fps(model, surface, b["cond"][:1], b["R"][:1], b["t"][:1], b["K"][:1], cfg.fps_resolution,
                            renderer, ctx.device)

    summary = ev.summary()
    report = {**summary, "lpips": None, "lpips_note": "not computed: no LPIPS (VGG) weights asset",
              "render_fps": round(fps, 2), "render_fps_single": round(fps_single, 2), "fps_resolution": cfg.fps_resolution, "fps_batch": len(fps_frames),
              "resolution": cfg.resolution, "renderer": renderer, "device": ctx.device,
              "gaussians": model.num_gaussians, "held_out": [test_idx[0], test_idx[-1]],
              "held_out_rule": split.rule, "train_frames": len(split.train),
              "train_steps": meta.get("steps"), "per_frame": {"index": ev.indices, "psnr": ev.psnr, "ssim": ev.ssim}}
    ctx.put_file("preview.mp4", preview, folder="avatar")
    ctx.put_json("report.json", report, folder="avatar")
    ctx.put_bytes("report.md", render_markdown(report).encode(), folder="avatar")
    ctx.stats.update({"psnr": summary["psnr_mean"], "ssim": summary["ssim_mean"], "render_fps": report["render_fps"]})
    log.info("held-out PSNR %.2f dB, SSIM %.4f over %d frames; %.1f render FPS at %dpx (%s)", summary["psnr_mean"],
             summary["ssim_mean"], summary["frames"], fps, cfg.fps_resolution, renderer)


def render_markdown(report: dict) -> str:
    """The human-readable report."""
    return "\n".join([
        "# Avatar report", "",
        f"Held-out frames {report['held_out'][0]}..{report['held_out'][1]} ({report['frames']} frames) "
        f"at {report['resolution']}x{report['resolution']}, {report['gaussians']} Gaussians, "
        f"{report['train_steps']} training steps.", "",
        *([f"Held out: {report['held_out_rule']}.", ""] if report.get("held_out_rule") else []),
        "| metric | value |", "|---|---|",
        f"| PSNR (mean) | {report['psnr_mean']:.2f} dB |",
        f"| PSNR (worst frame) | {report['psnr_min']:.2f} dB |",
        f"| SSIM (mean) | {report['ssim_mean']:.4f} |",
        f"| LPIPS | {report['lpips_note']} |",
        f"| render speed | {report['render_fps']:.1f} frames/s at {report['fps_resolution']}px in batches of "
        f"{report['fps_batch']}, {report['render_fps_single']:.1f} frames/s one at a time "
        f"({report['renderer']} on {report['device']}, face model + MLP + rasteriser) |", "",
        "`preview.mp4`: ground truth (left) and render (right), 25 fps.", ""])
