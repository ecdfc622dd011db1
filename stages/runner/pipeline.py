"""The whole pipeline for one actor on one store: upload the video and assets, store the actor's
config, run every stage in dependency order. What ``avatar run``, ``avatar demo``, ``avatar submit``
and the end-to-end benchmark share (the library half; the commands live in :mod:`stages.cli`)."""

from __future__ import annotations

import logging
from pathlib import Path

from stages.config import CONFIG_FILE, PipelineConfig
from stages.errors import BadInput
from stages.graph import topological_order
from stages.runner.context import actor_key
from stages.runner.run import StageResult, load_pipeline_config, run_stage
from stages.store.base import Store, sha256_file

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

    ``assets`` maps further asset kinds (``matting``, ``parsing``, ...) to files to add and choose."""
    from stages.assets import add_asset

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
