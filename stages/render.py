"""The ``render`` stage: held-out metrics, the side-by-side preview and the render speed.

Reads the dataset (assemble) and ``train/avatar.pt``; renders the held-out frames (the split the
training used) and writes, under ``actors/<a>/render/``:

- ``preview.mp4``: ground truth | render side by side, 25 fps, H.264, with the held-out frames'
  sound (AAC) when the dataset has ``audio.wav``;
- ``preview_full.mp4`` (config ``full_frame``): the renders composited into the source footage at
  source resolution (:mod:`stages.video.fullframe`), with sound;
- ``report.json`` and ``report.md``: PSNR and SSIM (mean, min), the eye region's PSNR (a mask
  around both eyes from the held-out frames' landmarks, :mod:`stages.gauss.eye_region`), the
  head's jitter (assemble's ``steadiness``), render frames/s including the
  face model and the MLP at ``fps_resolution`` (batched and one frame at a time), LPIPS only where available (not yet: reported as
  not computed), and ``phases``: the stage's wall and CPU seconds by phase (also one log line).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from stages.runner.context import StageContext

log = logging.getLogger("avatar.render")

ASSETS = ("flame", "vgg16", "lpips")


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
        full_frame: also write ``preview_full.mp4``: the held-out frames' renders composited into
            the actor's source video at source resolution (the dataset's ``crop.json``).
    """

    resolution: int = 512
    fps_resolution: int = 512
    fps_batch: int = 16
    batch_size: int = 8
    renderer: str = "auto"
    fps: int = 25
    max_frames: int = 0
    workers: int = 4
    full_frame: bool = False


PRESETS = {"tiny": {"resolution": 96, "fps_resolution": 96, "fps_batch": 2, "batch_size": 4, "workers": 0},
           "demo": {"resolution": 256, "fps_resolution": 256}}  # + tiny's (config.PRESET_BASE)


def run(ctx: StageContext) -> None:
    import numpy as np
    import torch

    from stages.gauss.data import AvatarFrames, TrackedSequence, background_rgb, choose_split
    from stages.gauss.evaluate import evaluate, render_fps
    from stages.video.segments import SegmentedWriter
    from stages.gauss.trainer import check_face_model, choose_renderer, config_from_dict, load_avatar
    from stages.train import face_surface, fetch_dataset

    from stages.phase_clock import PhaseClock

    cfg: Config = ctx.config
    clock = PhaseClock()
    with clock.phase("fetch_dataset"):
        layout = fetch_dataset(ctx)
    with clock.phase("load"):
        seq = TrackedSequence.load(layout)
        model, meta = load_avatar(ctx.fetch("avatar.pt", "train", folder="avatar"))
    tcfg = config_from_dict(meta["train_config"])
    surface = face_surface(ctx, meta["shape"].numpy())
    check_face_model(meta, surface, ctx.key("avatar.pt", "train"))
    surface = surface.to(ctx.device)
    model = model.to(ctx.device)
    split = choose_split(len(seq), tcfg.test_frames, tcfg.test_fraction, tcfg.max_train_frames, seq.face_span())
    test_idx = split.test
    if cfg.max_frames:
        test_idx = test_idx[:cfg.max_frames]
    renderer = choose_renderer(cfg.renderer, ctx.device)
    bg_rgb = background_rgb(tcfg.background)
    frames = AvatarFrames(layout, seq, test_idx, cfg.resolution, bg_rgb)
    ctx.progress.set_total(len(frames))
    preview = ctx.scratch / "preview.mp4"
    # encoded in segments by worker threads while the evaluation renders (stages.video.segments)
    writer = SegmentedWriter(preview, 2 * cfg.resolution, cfg.resolution, cfg.fps)

    eyes = held_out_eye_points(ctx, test_idx)
    eye_psnr: list[float | None] = []

    from stages.gauss.perceptual import load_stage_lpips, lpips_uint8

    perceptual, lpips_note = load_stage_lpips(ctx, ctx.device)
    lpips_values: list[float] = []

    def on_frames(gt, img) -> None:
        if perceptual is not None:
            lpips_values.extend(lpips_uint8(perceptual, gt, img))
        for g, r in zip(gt, img):
            writer.write(np.concatenate([g, r], axis=1))  # ground truth | render
            if eyes is not None:
                eye_psnr.append(eye_score(eyes[len(eye_psnr)], g, r, cfg.resolution))
        ctx.progress.advance(len(gt))

    try:
        with clock.phase("evaluate"):
            ev = evaluate(model, surface, frames, torch.tensor(bg_rgb), renderer, ctx.device, cfg.batch_size,
                          cfg.workers, on_frames)
    except BaseException:
        writer.abort()
        raise
    with clock.phase("preview_encode"):  # what is left of the encoding once the last frame is in
        writer.close()
    ctx.count_frames(len(ev.indices))

    with clock.phase("render_fps"):
        fps_frames = AvatarFrames(layout, seq, test_idx[:cfg.fps_batch], cfg.fps_resolution, bg_rgb)
        b = torch.utils.data.default_collate([fps_frames[j] for j in range(len(fps_frames))])
        fps = render_fps(model, surface, b["cond"], b["R"], b["t"], b["K"], cfg.fps_resolution, renderer, ctx.device)
        fps_single = render_fps(model, surface, b["cond"][:1], b["R"][:1], b["t"][:1], b["K"][:1],
                                cfg.fps_resolution, renderer, ctx.device)

    summary = ev.summary()
    lpips_value = round(float(np.mean(lpips_values)), 5) if lpips_values else None
    report = {**summary, "lpips": lpips_value,
              "lpips_note": f"{lpips_note}, mean over {len(lpips_values)} held-out frames" if lpips_values
              else f"not computed: {lpips_note}",
              "render_fps": round(fps, 2), "render_fps_single": round(fps_single, 2), "fps_resolution": cfg.fps_resolution, "fps_batch": len(fps_frames),
              "resolution": cfg.resolution, "renderer": renderer, "device": ctx.device,
              "gaussians": model.num_gaussians, "held_out": [test_idx[0], test_idx[-1]],
              "held_out_rule": split.rule, "train_frames": len(split.train),
              "train_steps": meta.get("steps"), "per_frame": {"index": ev.indices, "psnr": ev.psnr, "ssim": ev.ssim}}
    wav = layout.root / "audio.wav"
    first, count = test_idx[0], len(test_idx)
    contiguous = test_idx == list(range(first, first + count))
    if contiguous:
        from stages.gauss.fullframe_render import with_audio

        with clock.phase("preview_audio"):
            report["preview_audio"] = with_audio(preview, wav, first, count, cfg.fps)
    if cfg.full_frame:
        from stages.errors import BadInput

        try:
            with clock.phase("full_frame"):
                report["full_frame"] = _full_frame(ctx, cfg, layout, seq, test_idx, model, surface, renderer,
                                                   wav if contiguous else None)
        except BadInput as e:  # the optional preview only: the metrics and the preview stand
            log.warning("no full-frame preview: %s", e)
            report["full_frame"] = {"error": str(e)}
    report["steadiness"] = assemble_steadiness(ctx)
    scored = [e for e in eye_psnr if e is not None]
    report["eye_region"] = ({"psnr_mean": float(np.mean(scored)), "psnr_min": float(np.min(scored)),
                             "frames": len(scored), "per_frame": eye_psnr} if scored else None)
    report["phases"] = clock.report()
    ctx.put_file("preview.mp4", preview, folder="avatar")
    ctx.put_json("report.json", report, folder="avatar")
    ctx.put_bytes("report.md", render_markdown(report).encode(), folder="avatar")
    ctx.stats.update({"psnr": summary["psnr_mean"], "ssim": summary["ssim_mean"], "render_fps": report["render_fps"]})
    log.info("held-out PSNR %.2f dB, SSIM %.4f over %d frames; %.1f render FPS at %dpx (%s)", summary["psnr_mean"],
             summary["ssim_mean"], summary["frames"], fps, cfg.fps_resolution, renderer)
    log.info("render phases: %s", clock.line())


def _full_frame(ctx: StageContext, cfg: Config, layout, seq, test_idx, model, surface, renderer, wav) -> dict:
    """Write ``avatar/preview_full.mp4``; return its figures."""
    import torch

    from stages.errors import bad_input
    from stages.gauss.fullframe_render import render_full_frame, with_audio
    from stages.video.crop_record import CropRecord

    crop = layout.root / "crop.json"
    if not crop.is_file():
        raise bad_input(ctx.key("crop.json", folder="dataset"), "no crop record in the dataset",
                        "re-run ingest and assemble (they record the crop since full-frame output exists)")
    idx = torch.as_tensor(test_idx)
    out = ctx.scratch / "preview_full.mp4"
    stats = render_full_frame(model, surface, torch.from_numpy(seq.cond)[idx], torch.from_numpy(seq.R)[idx].float(),
                              torch.from_numpy(seq.t)[idx].float(), torch.from_numpy(seq.K)[idx].float(), test_idx,
                              out, ctx.fetch_video(), CropRecord.load(crop), renderer=renderer, device=ctx.device,
                              batch=cfg.batch_size)
    stats["audio"] = with_audio(out, wav, test_idx[0], len(test_idx), cfg.fps) if wav is not None else False
    ctx.put_file("preview_full.mp4", out, folder="avatar")
    log.info("full-frame preview: %d frames at %dx%d, %.1f frames/s", stats["frames"], stats["width"],
             stats["height"], stats["fps"])
    return stats


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
        f"| LPIPS | {report['lpips'] if report.get('lpips') is not None else report['lpips_note']} |",
        *([f"| eye region PSNR (mean / worst frame) | {report['eye_region']['psnr_mean']:.2f} / "
           f"{report['eye_region']['psnr_min']:.2f} dB over {report['eye_region']['frames']} frames |"]
          if report.get("eye_region") else []),
        f"| render speed | {report['render_fps']:.1f} frames/s at {report['fps_resolution']}px in batches of "
        f"{report['fps_batch']}, {report['render_fps_single']:.1f} frames/s one at a time "
        f"({report['renderer']} on {report['device']}, face model + MLP + rasteriser) |", "",
        "`preview.mp4`: ground truth (left) and render (right), 25 fps.", "",
        *steadiness_markdown(report.get("steadiness"))])


def held_out_eye_points(ctx: StageContext, test_idx: list[int]):
    """MediaPipe landmarks float [n,478,3] of the held-out frames (checkpoint ``i`` is frame
    ``i + 1``) from the landmarks stage, NaN where a frame has none; ``None`` where the actor has no
    landmarks stage (a dataset made elsewhere)."""
    import numpy as np

    from stages.errors import BadInput
    from stages.tracking.stage_io import fetch_landmarks

    try:
        wanted = {i + 1 for i in test_idx}
        found: dict[int, np.ndarray] = {}
        for s in ctx.shards():
            if any(s.start <= k < s.stop for k in wanted):
                lm = fetch_landmarks(ctx, s)
                found.update({int(k): (p if ok else np.full_like(p, np.nan))
                              for k, p, ok in zip(lm.frames, lm.points, lm.ok) if int(k) in wanted})
    except (BadInput, KeyError):
        return None
    return np.stack([found.get(i + 1, np.full((478, 3), np.nan, np.float32)) for i in test_idx]) if found else None


def eye_score(points, gt, img, resolution: int) -> float | None:
    """Eye-region PSNR of one held-out frame (:mod:`stages.gauss.eye_region`); None without landmarks."""
    import numpy as np

    from stages.gauss.eye_region import eye_region_mask, masked_psnr

    if not np.isfinite(points[:, :2]).all():
        return None
    return masked_psnr(img, gt, eye_region_mask(points, resolution, resolution / 512.0))


def assemble_steadiness(ctx: StageContext) -> dict | None:
    """Assemble's ``steadiness`` block (the head's jitter), or None where its report lacks one."""
    from stages.errors import BadInput

    try:
        return ctx.get_json("report.json", "assemble").get("steadiness")
    except (BadInput, KeyError):
        return None


def steadiness_markdown(steady: dict | None) -> list[str]:
    """Lines of the report on the head's jitter (assemble's ``steadiness``, see
    :mod:`stages.tracking.jitter`); none when assemble did not measure it."""
    if not steady:
        return []
    ours = steady["ours"]
    lines = ["## Steadiness", "",
             "Head jitter: RMS of the second difference of the head centre's position and of its rotation "
             "from frame to frame (lower is steadier).", "",
             "| track | frames | position | rotation |", "|---|---|---|---|",
             f"| ours, whole clip | {ours['frames']} | {ours['position_mm']:.3f} mm | {ours['rotation_deg']:.3f} deg |"]
    if "per_frame_fit" in steady:
        a, b = steady["window"]
        o, f = steady["ours_window"], steady["per_frame_fit"]
        lines += [f"| ours, frames {a}..{b} | {o['frames']} | {o['position_mm']:.3f} mm | {o['rotation_deg']:.3f} deg |",
                  f"| each frame fitted alone, frames {a}..{b} | {f['frames']} | {f['position_mm']:.3f} mm | "
                  f"{f['rotation_deg']:.3f} deg |", "",
                  f"Ours is {steady['ratio_position']:.2f}x the frame-by-frame fit's position jitter and "
                  f"{steady['ratio_rotation']:.2f}x its rotation jitter."]
    return lines + [""]
