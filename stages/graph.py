"""The stage graph, declared once.

The local runner walks :data:`STAGES` in order, the Hera builder in ``workflows/`` translates it into
the Argo WorkflowTemplate, and the tests check both against it. Adding a stage is one
:class:`StageDecl` here plus its module.

A stage module (``decl.module``) provides:

- ``Config``: a dataclass of the stage's settings (its JSON form is digested into the manifest);
- ``run(ctx: StageContext) -> None`` for a stage that does not fan out, or
  ``run_shard(ctx: StageContext, shard: Shard) -> None`` for one that does (one call per shard,
  possibly in different pods), optionally followed by ``finish(ctx) -> None`` once all shards are
  done (runs where the last shard finished, or in the local run);
- optionally ``PROCESSES_PER_GPU``: how many shard processes may share one GPU in a local run
  (default 1; CPU-device stages use ``--jobs`` processes), or ``processes_per_gpu(config, assets)
  -> int`` when that depends on the config (0: the work is CPU-bound, use ``--jobs``);
- optionally ``WORKER_PRELOAD``: modules that local shard processes should find imported (the
  runner's forkserver imports them once, e.g. ``("mediapipe",)``);
- optionally ``run_shard_group(items)`` with ``shard_group_frames(config) -> int``: the local run
  hands runs of consecutive shards (``[(StageContext, Shard), ...]``, one context per shard, at most
  that many frames; 0: no grouping) to one call, and still writes each shard's own manifest
  (``stages.runner.run.shard_groups``; track tracks them as one sequence). A pod runs one shard;
- optionally ``warm_up(config, device) -> None``: a small job that loads the GPU libraries and
  kernels the stage will use, run by the local run in a background thread while the CPU stages
  before it work (:mod:`stages.runner.warm_up`; calibrate has one).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from types import ModuleType

IMAGES = ("tracker", "masks", "train")
NODE_CLASSES = ("cpu", "cheap-gpu", "a100")


@dataclass(frozen=True)
class StageDecl:
    """One stage of the pipeline.

    Attributes:
        name: stage name, also its folder under ``actors/<actor>/`` and its CLI name.
        needs: stages whose outputs it reads (the DAG's edges).
        image: container image that runs it (one of :data:`IMAGES`).
        node_class: where it runs on a cluster (one of :data:`NODE_CLASSES`).
        fan_out: whether it runs once per shard of the ingested frames.
        module: dotted module path that implements it.
        gpu: whether it wants a GPU (CPU fallback exists for every stage).
        summary: one line for ``--help`` and the Argo UI.
    """

    name: str
    needs: tuple[str, ...]
    image: str
    node_class: str
    fan_out: bool
    module: str
    gpu: bool
    summary: str

    def load(self) -> ModuleType:
        """Import the stage's implementation."""
        return import_module(self.module)


STAGES: tuple[StageDecl, ...] = (
    StageDecl("ingest", (), "tracker", "cpu", False, "stages.ingest", False,
              "decode, resample to 25 fps, choose one stable face crop, write 512x512 frames in shards"),
    StageDecl("landmarks", ("ingest",), "tracker", "cpu", True, "stages.landmarks", False,
              "MediaPipe 478-point landmarks with confidence per frame"),
    StageDecl("masks", ("ingest", "landmarks"), "masks", "cheap-gpu", True, "stages.masks", True,
              "alpha matte and neckhead/mouth parsing per frame"),
    StageDecl("calibrate", ("ingest", "landmarks"), "tracker", "cheap-gpu", False, "stages.calibrate", True,
              "identity (face-model shape), focal length and principal point from keyframes"),
    StageDecl("track", ("ingest", "landmarks", "calibrate"), "tracker", "cheap-gpu", True, "stages.track", True,
              "per-frame expression, jaw, eyes, eyelids and head pose, all frames of a shard batched"),
    StageDecl("assemble", ("ingest", "masks", "track", "calibrate"), "tracker", "cpu", False, "stages.assemble", False,
              "join shards, write and verify the FlashAvatar dataset and .frame files"),
    StageDecl("train", ("assemble",), "train", "a100", False, "stages.train", True,
              "train the Gaussian avatar (gsplat on a GPU, the reference rasteriser on a CPU)"),
    StageDecl("render", ("assemble", "train"), "train", "a100", False, "stages.render", True,
              "preview video, held-out metrics and render FPS"),
)

BY_NAME: dict[str, StageDecl] = {s.name: s for s in STAGES}


@dataclass(frozen=True)
class PipelineDecl:
    """One pipeline over the stage graph (each declared once; it feeds the local run and its
    WorkflowTemplate).

    Attributes:
        name: ``avatar`` (video to avatar) or ``drive`` (a driver video's tracking, then the drive render).
        root: the store folder of its entries: ``actors`` or ``drivers`` (``drivers/<name>/``).
        stages: the stages of :data:`STAGES` it runs for an entry, in dependency order.
        final: a last step that is not a per-entry stage (the drive render reads an actor's avatar
            and a driver's tracking), or None.
    """

    name: str
    root: str
    stages: tuple[str, ...]
    final: StageDecl | None = None


DRIVE_STEP = StageDecl("drive", ("track",), "train", "cheap-gpu", False, "stages.drive.stage", True,
                       "render the actor's avatar with the driver's motion, mux the sound")
"""The drive render: reads ``drivers/<name>/`` (or a motion file) and ``actors/<actor>/avatar``,
writes ``actors/<actor>/drive/<name>/``. Not a per-entry stage, so not in :data:`STAGES`."""

PIPELINES: dict[str, PipelineDecl] = {
    "avatar": PipelineDecl("avatar", "actors", tuple(s.name for s in STAGES)),
    "drive": PipelineDecl("drive", "drivers", ("ingest", "landmarks", "calibrate", "track"), DRIVE_STEP),
}


def pipeline_stages(name: str) -> list[StageDecl]:
    """The stages pipeline ``name`` runs for one entry, in dependency order (checked: every stage's
    ``needs`` lie inside the pipeline)."""
    p = PIPELINES[name]
    chosen = [s for s in STAGES if s.name in p.stages]
    names = {s.name for s in chosen}
    for s in chosen:
        if not set(s.needs) <= names:
            raise ValueError(f"pipeline {name!r}: stage {s.name!r} needs {sorted(set(s.needs) - names)}")
    return [s for s in topological_order() if s.name in names]


def stage(name: str) -> StageDecl:
    """The declaration of stage ``name``; unknown names raise ``KeyError`` listing the known ones."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown stage {name!r}; stages are: {', '.join(BY_NAME)}") from None


def topological_order() -> list[StageDecl]:
    """Stages ordered so that every stage comes after all it needs (checked, not assumed)."""
    done: list[StageDecl] = []
    seen: set[str] = set()
    pending = list(STAGES)
    while pending:
        ready = [s for s in pending if set(s.needs) <= seen]
        if not ready:
            raise ValueError(f"cycle or unknown dependency among {[s.name for s in pending]}")
        for s in ready:
            done.append(s)
            seen.add(s.name)
            pending.remove(s)
    return done
