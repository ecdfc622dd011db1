"""``avatar run``: the whole pipeline in-process on one machine, resumable."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import typer

from stages.cli import app
from stages.config import CONFIG_FILE, PRESETS, PipelineConfig
from stages.errors import BadInput
from stages.graph import BY_NAME, topological_order
from stages.runner.context import actor_key
from stages.runner.run import StageResult, load_pipeline_config, run_stage
from stages.store.base import Store, sha256_file
from stages.store.uri import open_store

log = logging.getLogger("avatar.run")


def upload_video(store: Store, actor: str, video: Path) -> str:
    """Put the user's video at ``actors/<actor>/input/video.mp4`` unless the same bytes are there.

    A different video already stored for the actor is never overwritten (BadInput)."""
    if not video.is_file():
        raise BadInput(f"{video}: no such file; give the path to the talking-head video")
    key = actor_key(actor, "input", "video.mp4")
    sha = sha256_file(video)
    if store.exists(key):
        if store.sha256(key) == sha:
            return sha
        raise BadInput(f"{store.uri}/{key}: actor {actor!r} already has a different video, and uploads are never "
                       f"overwritten; use another --actor name for {video}")
    store.put_file(key, video)
    return sha


def prepare_actor(store: Store, actor: str, video: Path | None, flame: Path | None, preset: str | None,
                  overrides: dict | None = None, assets: dict[str, Path] | None = None) -> PipelineConfig:
    """Upload the video and assets, and store the actor's pipeline config; return that config.

    ``assets`` maps further asset kinds (``matting``, ``parsing``, ...) to files to add and choose.
    Every file is checked (and a FLAME model without its MediaPipe embedding refused) before
    anything is uploaded or written."""
    from stages.assets import add_asset

    check_actor_inputs(store, actor, video, flame, assets)
    if video is not None:
        upload_video(store, actor, video)
    pipeline = load_pipeline_config(store, actor)
    if preset is not None:
        pipeline.preset = preset
        pipeline.__post_init__()
    if flame is not None:
        pipeline.assets["flame"] = add_asset(store, "flame", flame)["sha256"]
    for kind_name, path in (assets or {}).items():
        if path is not None:
            pipeline.assets[kind_name] = add_asset(store, kind_name, path)["sha256"]
    for stage, values in (overrides or {}).items():
        pipeline.stages.setdefault(stage, {}).update(values)
    store.put_json(actor_key(actor, CONFIG_FILE), pipeline.to_dict())
    return pipeline


def check_actor_inputs(store: Store, actor: str, video: Path | None, flame: Path | None,
                       assets: dict[str, Path | None] | None = None) -> None:
    """Everything a run or submit is given, checked before anything is uploaded or written: the
    video exists, every asset file is valid for its kind, and a FLAME model (given now or chosen
    before for the actor) comes with its MediaPipe embedding. Reads the store, writes nothing."""
    from stages.assets import check_asset_files

    if video is not None and not video.is_file():
        raise BadInput(f"{video}: no such file; give the path to the talking-head video")
    check_asset_files({"flame": flame, **(assets or {})})
    chosen = set(load_pipeline_config(store, actor).assets) | {k for k, v in (assets or {}).items() if v is not None}
    chosen |= {"flame"} if flame is not None else set()
    check_face_assets(PipelineConfig(assets={k: "" for k in chosen}), flame)


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
    if until is not None and until not in BY_NAME:
        raise BadInput(f"--until {until}: unknown stage; stages are {', '.join(BY_NAME)}")
    st = open_store(store)
    pipeline = prepare_actor(st, actor, video, flame, preset, assets={
        "matting": matting, "parsing": parsing, "mediapipe-embedding": mediapipe_embedding,
        "flame-masks": flame_masks, "flame-texture": flame_texture})
    check_face_assets(pipeline, flame)
    t0 = time.monotonic()
    results = run_pipeline(st, actor, pipeline, device=device, jobs=jobs, until=until)
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
                          "the demo preset on a CPU (a 256 px avatar in about 5 minutes on 2 cores), full size on a GPU.")
def demo_command(
    store: str = typer.Option("./avatar-store", "--store", help="Local folder or s3://bucket[/prefix]."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    frames: int = typer.Option(150, "--frames", help="Frames of the synthetic clip when the demo clip is absent."),
) -> None:
    import tempfile

    import torch

    from stages.bench.e2e import synthetic_clip

    gpu = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    preset = "full" if gpu else "demo"
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
