"""The ``train`` stage: train the Gaussian avatar on the assembled FlashAvatar dataset.

Reads the assemble stage's ``dataset/`` (images, mattes, parsing masks, ``.frame`` files) and the
``flame`` asset (the built-in stand-in when none was given); writes, under ``actors/<a>/train/``:

- ``avatar.pt``: the trained avatar (docs/checkpoint-format.md), what the render stage reads;
- ``checkpoint.pt``: the last training checkpoint (parameters + Adam state + RNG, for fine-tuning);
- ``train_report.json``: steps, images, images/s, final loss, renderer, device.

While it runs, a checkpoint is uploaded every ``checkpoint_every`` steps to ``train/resume/checkpoint.pt``
(not an output); a rerun after a kill or preemption resumes from it with the same result.
"""

from __future__ import annotations

import logging
from pathlib import Path

from stages.gauss.data import TrackedSequence, find_dataset_root
from stages.gauss.trainer import TrainConfig, avatar_dict, choose_renderer, plan_training, train
from stages.runner.context import StageContext

log = logging.getLogger("avatar.train")

ASSETS = ("flame", "vgg16", "lpips")

Config = TrainConfig
"""The stage's settings are :class:`stages.gauss.trainer.TrainConfig`."""

PRESETS = {
    "tiny": {"steps": 200, "batch_size": 2, "resolution": 96, "sh_degree": 1, "mlp_width": 64, "mlp_depth": 2,
             "pe_freqs": 4, "uv_resolution": 40, "area_samples": 1500, "test_frames": 0, "test_fraction": 0.1,
             "checkpoint_every": 50, "workers": 0, "lr_scale": 4.0, "mlp_lr": 1e-3, "log_every": 25,
             "shell": "off", "shut_eye_repeat": 1},
    # make demo on a CPU: tiny's values (config.PRESET_BASE) with more Gaussians and images at 128 px,
    # the preview rendered at 256 px; the split is the default one (10% of the clip). Starting colours
    # from 16 training frames and twice tiny's learning rates: on wojtek.mp4, 300 steps went from
    # 21.5 dB (grey start, lr_scale 4; 150 steps) to 24.6 dB held out at 256 px (docs/performance.md)
    # shell Gaussians (scalp, neck) on the face-only stand-in: wojtek.mp4 25.31 -> 26.67 dB on 8 held-out
    # frames at 256 px, 129 -> 119 train CPU-seconds (bench/demo_train.py, docs/quality.md)
    "demo": {"steps": 500, "resolution": 128, "uv_resolution": 64, "test_frames": None, "test_fraction": None,
             "checkpoint_every": 100, "log_every": 50, "init_color_frames": 16, "lr_scale": 8.0, "shell": "auto"},
}

RESUME_KEY = "resume/checkpoint.pt"


def fetch_dataset(ctx: StageContext):
    """Fetch the assemble stage's dataset files (verified) and return their :class:`DatasetLayout`."""
    rels = ctx.input_keys("assemble", "", folder="dataset")
    return find_dataset_root(ctx.fetch_many(rels, "assemble", folder="dataset"))


def face_surface(ctx: StageContext, shape):
    """The actor's face model (the ``flame`` asset, or the built-in stand-in) with identity ``shape``."""
    from stages.face.model import load_face_model
    from stages.gauss.surface import flame_surface

    return flame_surface(load_face_model(ctx.asset("flame")), shape)


def run(ctx: StageContext) -> None:
    import torch

    from stages.gauss import checkpoint as ckpt

    from stages.phase_clock import PhaseClock

    cfg: TrainConfig = ctx.config
    stage_clock = PhaseClock()
    with stage_clock.phase("fetch_dataset"):
        layout = fetch_dataset(ctx)
    with stage_clock.phase("face_model"):
        seq = TrackedSequence.load(layout)
        surface = face_surface(ctx, seq.shape)
    work = ctx.scratch / "train"
    work.mkdir(parents=True, exist_ok=True)
    resume_key = ctx.key(RESUME_KEY)
    if ctx.store.exists(resume_key):
        ctx.store.get_file(resume_key, work / "checkpoint.pt")
        log.info("found a checkpoint of an earlier attempt at %s", resume_key)
    renderer = choose_renderer(cfg.renderer, ctx.device)
    plan = plan_training(cfg, len(seq), seq.face_span())
    log.info("training on %s with the %s renderer: %d steps x %d images at %dpx, %d training frames", ctx.device,
             renderer, plan.steps, cfg.batch_size, cfg.resolution, len(plan.split.train))
    ctx.progress.set_total(plan.steps)
    done = {"n": 0}

    def on_step(step: int) -> None:  # a resumed run's first call also counts the steps done before
        ctx.progress.advance(step - done["n"])
        done["n"] = step

    def on_checkpoint(path: Path, step: int) -> None:
        ctx.store.put_file(resume_key, path)

    from stages.gauss.perceptual import load_stage_lpips

    perceptual, lpips_note = (load_stage_lpips(ctx, ctx.device) if cfg.lpips_weight > 0
                            else (None, "train.lpips_weight 0, the default; avatar run --lpips-term turns it on"))
    result = train(cfg, surface, layout, work, ctx.device, on_step=on_step, on_checkpoint=on_checkpoint,
                   perceptual=perceptual)
    ctx.count_frames(result.images)
    avatar_path = ckpt.save_atomic(avatar_dict(result.model, surface, cfg, result.steps, result.images,
                                               {"renderer": renderer}), work / "avatar.pt")
    ctx.put_file("avatar.pt", avatar_path, folder="avatar")
    ctx.put_file("checkpoint.pt", work / "checkpoint.pt", folder="avatar")
    report = {"steps": result.steps, "steps_this_run": result.steps_run, "resumed_from": result.resumed_from,
              "images_this_run": result.images, "seconds": round(result.seconds, 3),
              "images_per_s": round(result.images_per_s, 2), "final_loss": result.last_loss,
              "gaussians": result.model.num_gaussians, "renderer": renderer, "device": ctx.device,
              "resolution": cfg.resolution, "batch_size": cfg.batch_size,
              "lpips": (f"on ({lpips_note}, weight {cfg.lpips_weight} from {cfg.lpips_start:.0%} of the steps)"
                        if perceptual is not None else f"off ({lpips_note})"),
              "torch": torch.__version__, **plan.report(), "stopped": result.stop_reason,
              # the fixed cost: the stage's inputs, then train()'s set-up before its first step and that step
              "setup": {k: {**stage_clock.report()[k], **v} for k, v in result.setup.items()}}
    ctx.put_json("train_report.json", report, folder="avatar")
    ctx.stats.update({"images_per_s": report["images_per_s"], "gaussians": report["gaussians"],
                      "setup_wall_s": report["setup"].get("wall_s", {})})
    log.info("trained %d steps (%d images this run) at %.1f images/s", result.steps, result.images, result.images_per_s)
