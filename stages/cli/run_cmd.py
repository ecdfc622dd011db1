"""``avatar run``: the whole pipeline in-process on one machine, resumable."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import typer

from stages.cli import app
from stages.config import PRESETS, PipelineConfig
from stages.errors import BadInput
from stages.graph import BY_NAME, topological_order
from stages.runner.context import actor_key
from stages.names import check_actor
from stages.runner.lock import hold
from stages.runner.run import StageResult, check_device, run_stage
from stages.runner.setup import apply_setup, plan_setup, rename_user_paths
from stages.runner.undo import refused_leaves_no_trace
from stages.store.base import Store
from stages.store.uri import open_store

log = logging.getLogger("avatar.run")


def prepare_actor(store: Store, actor: str, video: Path | None, flame: Path | None, preset: str | None,
                  overrides: dict | None = None, assets: dict[str, Path] | None = None) -> PipelineConfig:
    """Check, then upload the video and assets and store the actor's pipeline config; return that
    config (:mod:`stages.runner.setup`: nothing is written unless everything is valid).

    ``assets`` maps further asset kinds (``matting``, ``parsing``, ...) to files to add and choose."""
    setup = plan_setup(store, actor, video, preset, {"flame": flame, **(assets or {})}, overrides)
    return apply_setup(store, setup)


def check_face_assets(pipeline: PipelineConfig, flame: Path | None) -> None:
    """Refuse, before any stage runs, a FLAME model without the MediaPipe embedding the tracker fits
    (it would otherwise stop at calibrate, after ingest, landmarks and masks)."""
    if "flame" in pipeline.assets and "mediapipe-embedding" not in pipeline.assets:
        where = flame if flame is not None else "the actor's flame asset"
        raise BadInput(f"{where}: a FLAME model needs MediaPipe's landmark embedding on it, which the tracker fits; "
                       "add --mediapipe-embedding mediapipe_landmark_embedding.npz (metrical-tracker's file)")


def run_pipeline(store: Store, actor: str, pipeline: PipelineConfig, *, device: str = "auto", jobs: int = 1,
                 until: str | None = None) -> list[StageResult]:
    """Run every stage in dependency order (all shards of fan-out stages), skipping finished ones."""
    results = []
    for decl in topological_order():
        log.info("stage %s: %s", decl.name, decl.summary)
        results.append(run_stage(decl.name, actor, store, pipeline=pipeline, device=device, jobs=jobs))
        if decl.name == until:
            break
    return results


@app.command("run", help="Run the whole pipeline on this machine: video in, trained avatar, preview and report out. "
                         "Rerunning after a crash redoes only what is missing.")
def run_command(
    actor: str = typer.Option(..., "--actor", help="Actor name; outputs go under STORE/actors/ACTOR/."),
    video: Path = typer.Option(None, "--video", help="The talking-head video (any common format)."),
    flame: Path = typer.Option(None, "--flame", help="FLAME 2020 generic_model.pkl; without it the built-in "
                                                     "stand-in face model is used. Needs --mediapipe-embedding."),
    mediapipe_embedding: Path = typer.Option(None, "--mediapipe-embedding",
                                             help="mediapipe_landmark_embedding.npz: MediaPipe's points on FLAME "
                                                  "(metrical-tracker's file), which the tracker fits."),
    flame_masks: Path = typer.Option(None, "--flame-masks", help="FLAME_masks.pkl (face region of the photometric "
                                                                 "term; default: the whole mesh)."),
    flame_texture: Path = typer.Option(None, "--flame-texture", help="FLAME_texture.npz: fit appearance in FLAME's "
                                                                     "texture space (.frame tex); default: per-vertex "
                                                                     "albedo."),
    matting: Path = typer.Option(None, "--matting", help="RobustVideoMatting ONNX export for the alpha matte "
                                                         "(default: MediaPipe selfie segmentation, built in)."),
    parsing: Path = typer.Option(None, "--parsing", help="19-class BiSeNet face-parsing ONNX model for the "
                                                         "neckhead/mouth masks (default: from the landmarks)."),
    store: str = typer.Option("./avatar-store", "--store", help="Local folder or s3://bucket[/prefix]."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    preset: str = typer.Option(None, "--preset", help=f"One of {', '.join(PRESETS)} (default full; tiny runs in "
                                                      "minutes on a CPU)."),
    jobs: int = typer.Option(os.cpu_count() or 1, "--jobs", help="Worker processes for CPU shards."),
    until: str = typer.Option(None, "--until", help="Stop after this stage: " + ", ".join(BY_NAME)),
) -> None:
    check_actor(actor)
    if until is not None and until not in BY_NAME:
        raise BadInput(f"--until {until}: unknown stage; stages are {', '.join(BY_NAME)}")
    st = open_store(store)
    check_device(device)
    # Everything is checked before anything is written; a later refusal takes this command's writes back.
    setup = plan_setup(st, actor, video, preset, {"flame": flame, "matting": matting, "parsing": parsing,
                                                  "mediapipe-embedding": mediapipe_embedding,
                                                  "flame-masks": flame_masks, "flame-texture": flame_texture},
                       require_video=True, check=check_face_assets)
    t0 = time.monotonic()
    try:
        with hold(st, actor), refused_leaves_no_trace(st, actor):
            pipeline = apply_setup(st, setup)
            results = run_pipeline(st, actor, pipeline, device=device, jobs=jobs, until=until)
    except BadInput as e:
        raise rename_user_paths(e, setup.user_paths) from None
    total = time.monotonic() - t0
    typer.echo(f"\n{'stage':10s} {'status':8s} {'frames':>7s} {'seconds':>8s} {'frames/s':>9s}")
    for r in results:
        typer.echo(f"{r.stage:10s} {r.status:8s} {r.frames:7d} {r.seconds:8.1f} {r.fps:9.1f}")
    typer.echo(f"{'total':10s} {'':8s} {'':7s} {total:8.1f}")
    avatar = actor_key(actor, "avatar")
    typer.echo(f"\noutputs under {st.uri}/{actor_key(actor)}/ ; avatar, preview and report under {st.uri}/{avatar}/")


DEMO_CLIP = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "wojtek.mp4"


@app.command("demo", help="Run the whole pipeline with no licensed file: the stand-in face model on the shared "
                          "demo clip (../shared/data/wojtek.mp4) when present, else on a generated synthetic clip; "
                          "the tiny preset on a CPU (minutes), full size on a GPU.")
def demo_command(
    store: str = typer.Option("./avatar-store", "--store", help="Local folder or s3://bucket[/prefix]."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    frames: int = typer.Option(150, "--frames", help="Frames of the synthetic clip when the demo clip is absent."),
) -> None:
    import tempfile

    import torch

    from stages.bench.e2e import synthetic_clip

    gpu = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    preset = "full" if gpu else "tiny"
    if DEMO_CLIP.is_file():
        video, actor = DEMO_CLIP, f"demo-wojtek-{preset}"
    else:
        typer.echo(f"{DEMO_CLIP} is absent: generating a {frames}-frame synthetic clip")
        video = synthetic_clip(Path(tempfile.gettempdir()) / f"avatar-demo-synthetic-{frames}.mp4", frames)
        actor = f"demo-synthetic-{preset}"
    typer.echo(f"demo: {video} with the stand-in face model, preset {preset}, actor {actor}")
    st = open_store(store)
    pipeline = prepare_actor(st, actor, video, None, preset)
    results = run_pipeline(st, actor, pipeline, device=device, jobs=os.cpu_count() or 1)
    for r in results:
        typer.echo(f"{r.stage:10s} {r.status:8s} {r.frames:7d} frames {r.seconds:8.1f} s {r.fps:9.1f} frames/s")
    base = f"{st.uri}/{actor_key(actor, 'avatar')}"
    typer.echo(f"\npreview: {base}/preview.mp4\nreport:  {base}/report.md")
