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
from stages.runner.run import StageResult, load_pipeline_config, run_stage  # noqa: F401 - re-exported
from stages.store.base import Store

log = logging.getLogger("avatar.run")


def prepare_actor(store: Store, actor: str, video: Path | None, flame: Path | None, preset: str | None,
                  overrides: dict | None = None, assets: dict[str, Path] | None = None) -> PipelineConfig:
    """Check, then upload the video and assets and store the actor's pipeline config; return that
    config (:mod:`stages.runner.setup`: nothing is written unless everything is valid).

    ``assets`` maps further asset kinds (``matting``, ``parsing``, ...) to files to add and choose."""
    from stages.runner.setup import apply_setup, plan_setup

    setup = plan_setup(store, actor, video, preset, {"flame": flame, **(assets or {})}, overrides,
                       check=check_face_assets)
    return apply_setup(store, setup)


def check_face_assets(pipeline: PipelineConfig, flame: Path | None) -> None:
    """Refuse, before any stage runs, a FLAME model without the MediaPipe embedding the tracker fits
    (it would otherwise stop at calibrate, after ingest, landmarks and masks)."""
    if "flame" in pipeline.assets and "mediapipe-embedding" not in pipeline.assets:
        where = flame if flame is not None else "the actor's flame asset"
        raise BadInput(f"{where}: a FLAME model needs MediaPipe's landmark embedding on it, which the tracker fits; "
                       "add --mediapipe-embedding mediapipe_landmark_embedding.npz (metrical-tracker's file)")


def run_pipeline(store: Store, actor: str, pipeline: PipelineConfig, *, device: str = "auto", jobs: int = 1,
                 until: str | None = None, max_parallel: int | None = None,
                 shard_overlap: bool | None = None) -> list[StageResult]:
    """Run every stage (all shards of fan-out stages), skipping finished ones; ``until``: the stages
    of the dependency order up to that one. Each stage starts once those it needs have finished,
    so independent ones overlap (:mod:`stages.runner.schedule`; ``max_parallel=1``: one at a time),
    and landmarks and masks start on the shards ingest has written (``shard_overlap``).
    The results carry each stage's ``started``/``ended`` (seconds since the start)."""
    from stages.runner.schedule import run_graph

    decls = []
    for decl in topological_order():
        decls.append(decl)
        if decl.name == until:
            break
    return run_graph(store, actor, pipeline, decls, device=device, jobs=jobs, max_parallel=max_parallel,
                     shard_overlap=shard_overlap)
