"""The two sides of a drive as read from a store: the driver entry and the actor's avatar."""

from __future__ import annotations

import itertools
import logging
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stages.config import CONFIG_FILE, PipelineConfig
from stages.errors import BadInput
from stages.motion.format import Motion
from stages.motion.transfer import Neutral, neutral_of
from stages.runner.context import DRIVER_PREFIX, actor_key
from stages.runner.manifest import MANIFEST, Manifest
from stages.runner.run import StageResult, load_pipeline_config
from stages.runner.shards import SHARDS_FILE, shards_from_document
from stages.store.base import Store, sha256_file

log = logging.getLogger("avatar.drive")

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
DRIVER_ASSETS = ("flame", "flame-masks", "mediapipe-embedding", "landmark-embedding", "flame-texture")
DRIVER_STAGE_SETTINGS: dict[str, dict[str, int]] = {"calibrate": {"appearance_steps": 0},
                                                    "track": {"photometric_steps": 0}}
"""What a driver's tracking leaves out: the image-based levels (calibrate's appearance fit, track's
photometric level). A drive takes only the face's motion from the driver, and on a synthetic driver with
ground truth (``python bench/driver_track_bench.py``, docs/motion-format.md) the motion is as close to
the truth without them or closer (seed 2: inner-lip gap r 0.989 against 0.587; seed 3: equal), and the
track stage is several times faster. Actors leave them out by default too (since 2026-12-07); a
driver sets it explicitly, so an actor's own tracking settings never reach its drivers. Set when a
driver is first prepared; a driver tracked earlier keeps its config."""
"""Asset kinds a driver shares with its actor (the same face model, so the parameters mean the same)."""


def driver_entry(name: str) -> str:
    """The runner's entry name of driver ``name``: ``drivers/<name>`` (its folder in the store)."""
    return DRIVER_PREFIX + name


def drive_name(text: str) -> str:
    """A store-safe name from a file stem: lower-case letters, digits, ``. _ -``."""
    name = re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-._")[:63]
    return name or "driver"


def check_name(name: str, option: str = "--name") -> str:
    if not _NAME.match(name):
        raise BadInput(f"{option} {name}: not a valid name; use lower-case letters, digits, '.', '_' and '-' "
                       "(at most 63, starting with a letter or digit)")
    return name


def _manifest(store: Store, key: str) -> Manifest | None:
    try:
        return Manifest.from_dict(store.get_json(key))
    except KeyError:
        return None


# -- the driver --------------------------------------------------------------------------------------


def prepare_driver(store: Store, actor: str, name: str, video: Path,
                   settings: dict[str, dict[str, Any]] | None = None) -> PipelineConfig:
    """Upload ``video`` as ``drivers/<name>/input/video.mp4`` (unless the same bytes are there) and store
    the driver's pipeline config: the actor's preset and face-model assets, so that both are tracked
    in the same parameter space, plus ``settings`` (stage -> values; e.g. the cluster's
    ``ingest.min_shards``) for a driver stored for the first time. A different video under the same
    name is refused (BadInput)."""
    if not video.is_file():
        raise BadInput(f"{video}: no such file; give the driver's talking-head video")
    entry = driver_entry(name)
    key = actor_key(entry, "input", "video.mp4")
    sha = sha256_file(video)
    if store.exists(key) and store.sha256(key) != sha:
        raise BadInput(f"{store.uri}/{key}: driver {name!r} already has a different video, and uploads are never "
                       f"overwritten; give {video} another --name")
    actor_cfg = load_pipeline_config(store, actor)
    stages = {k: dict(v) for k, v in DRIVER_STAGE_SETTINGS.items()}
    for stage, values in (settings or {}).items():
        stages.setdefault(stage, {}).update(values)
    cfg = PipelineConfig(preset=actor_cfg.preset, stages=stages,
                         assets={k: v for k, v in actor_cfg.assets.items() if k in DRIVER_ASSETS})
    cfg_key = actor_key(entry, CONFIG_FILE)
    try:
        old = PipelineConfig.from_dict(store.get_json(cfg_key))
    except KeyError:
        old = None
    if old is not None and old.assets != cfg.assets:
        raise BadInput(f"{store.uri}/{cfg_key}: driver {name!r} was tracked with another face model than actor "
                       f"{actor!r}'s; give {video} another --name")
    if not store.exists(key):
        store.put_file(key, video)
    if old is None:
        store.put_json(cfg_key, cfg.to_dict())
    return old or cfg


def track_driver(store: Store, name: str, *, device: str = "auto", jobs: int = 1) -> list[StageResult]:
    """Run the ``drive`` pipeline's stages (ingest, landmarks, calibrate, track) for the driver, each
    skipped when finished, resumable shard by shard like an actor's, through the same scheduler as an
    actor's run (:func:`stages.runner.schedule.run_graph`: landmarks start on the shards ingest has
    published)."""
    from stages.graph import pipeline_stages
    from stages.runner.schedule import run_graph

    entry = driver_entry(name)
    pipeline = load_pipeline_config(store, entry)
    decls = pipeline_stages("drive")
    log.info("driver %s: stages %s", name, ", ".join(d.name for d in decls))
    return run_graph(store, entry, pipeline, decls, device=device, jobs=jobs)


def driver_track_digest(store: Store, name: str) -> str:
    """The outputs digest of the driver's finished track stage (what a drive records as its input)."""
    key = actor_key(driver_entry(name), "track", MANIFEST)
    m = _manifest(store, key)
    if m is None:
        raise BadInput(f"{store.uri}/{key}: driver {name!r} is not tracked yet; run avatar drive --video again")
    return m.outputs_digest


def driver_motion(store: Store, name: str, scratch: Path) -> Motion:
    """The driver's tracked motion (shards joined as assemble joins them) with its calibrated camera."""
    from stages.tracking.calibration import Calibration
    from stages.tracking.join import join_tracks

    entry = driver_entry(name)
    track = _manifest(store, actor_key(entry, "track", MANIFEST))
    calib = _manifest(store, actor_key(entry, "calibrate", MANIFEST))
    if track is None or calib is None:
        raise BadInput(f"{store.uri}/{actor_key(entry)}: driver {name!r} is not tracked yet; "
                       "run avatar drive --video again")
    shards = shards_from_document(store.get_json(actor_key(entry, "ingest", SHARDS_FILE)))
    tracks = []
    for s in shards:
        key = actor_key(entry, "track", f"{s.name}.npz")
        with np.load(store.fetch(key, scratch / "driver", track.outputs.get(key)), allow_pickle=False) as z:
            tracks.append({k: z[k] for k in z.files})
    joined = join_tracks(tracks)
    ckey = actor_key(entry, "calibrate", "calibration.npz")
    c = Calibration.load(store.fetch(ckey, scratch / "driver", calib.outputs.get(ckey)))
    K = np.array([[c.focal[0], 0, c.pp[0]], [0, c.focal[1], c.pp[1]], [0, 0, 1]], np.float32)
    p = joined.params
    return Motion(exp=p["exp"], jaw=p["jaw"], eyes=p["eyes"], eyelids=p["eyelids"], R=joined.R.astype(np.float32),
                  t=p["t"].astype(np.float32), K=K, image_size=512, shape=np.asarray(c.shape, np.float32))


def driver_frames(store: Store, name: str, scratch: Path, threads: int | None = None):  # noqa: ANN201
    """The driver's 512x512 crops in order, [512, 512, 3] uint8 each (for ``side_by_side.mp4``),
    decoded by ``threads`` threads (default: up to 4 of the CPUs) a little ahead of the reader."""
    from stages.frameshard import read_shard_tar
    from stages.tracking.stage_io import decode_rgb

    threads = threads or max(1, min(4, os.cpu_count() or 1))
    entry = driver_entry(name)
    ingest = _manifest(store, actor_key(entry, "ingest", MANIFEST))
    shards = shards_from_document(store.get_json(actor_key(entry, "ingest", SHARDS_FILE)))
    for s in shards:
        key = actor_key(entry, "ingest", "frames", f"{s.name}.tar")
        tar = store.fetch(key, scratch / "driver-frames", ingest.outputs.get(key) if ingest else None)
        blobs = [blob for _, blob in sorted(read_shard_tar(tar))]
        if store.local_path(key) is None:  # a downloaded copy; a local store hands out its own object: kept
            tar.unlink(missing_ok=True)
        yield from ordered_map(decode_rgb, blobs, threads)


def ordered_map(fn: Callable[[Any], Any], items: Iterable[Any], threads: int, window: int = 32) -> Iterator[Any]:
    """``fn`` over ``items`` in ``threads`` threads, results in the items' order, at most ``window``
    items in flight (for work that releases the GIL, such as OpenCV's JPEG decoding)."""
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    it = iter(items)
    with ThreadPoolExecutor(max(1, threads)) as pool:
        pending = deque(pool.submit(fn, x) for x in itertools.islice(it, max(1, window)))
        while pending:
            done = pending.popleft()
            for x in itertools.islice(it, 1):
                pending.append(pool.submit(fn, x))
            yield done.result()


# -- the actor ---------------------------------------------------------------------------------------


@dataclass
class ActorSide:
    """What a drive needs of the actor.

    Attributes:
        avatar_path: local ``avatar.pt``; avatar_sha: its sha256 (an input of the drive).
        flame_path: the actor's FLAME asset (None: the built-in stand-in).
        neutral: the median over the training frames (expression, jaw, eyes, eyelids, camera).
        R [M, 3, 3], t [M, 3]: the tracked cameras of the training frames; K [3, 3]: intrinsics (512 px).
        background: the avatar's training background colour name.
    """

    avatar_path: Path
    avatar_sha: str
    flame_path: Path | None
    neutral: Neutral
    R: np.ndarray
    t: np.ndarray
    K: np.ndarray
    background: str


def load_actor(store: Store, actor: str, scratch: Path) -> ActorSide:
    """Read the actor's trained avatar and tracking (BadInput naming what is missing)."""
    from stages.assets import asset_path
    from stages.gauss.data import face_span, split_frames
    from stages.gauss.trainer import config_from_dict, load_avatar

    train = _manifest(store, actor_key(actor, "train", MANIFEST))
    akey = actor_key(actor, "avatar", "avatar.pt")
    if train is None or akey not in train.outputs:
        raise BadInput(f"{store.uri}/{akey}: actor {actor!r} has no trained avatar; train it first "
                       f"(avatar run --actor {actor} --video VIDEO --store {store.uri})")
    assemble = _manifest(store, actor_key(actor, "assemble", MANIFEST))
    tkey = actor_key(actor, "dataset", "tracking.npz")
    if assemble is None or tkey not in assemble.outputs:
        raise BadInput(f"{store.uri}/{tkey}: actor {actor!r} has no assembled tracking; re-run avatar run")
    avatar_path = store.fetch(akey, scratch / "actor", train.outputs[akey])
    with np.load(store.fetch(tkey, scratch / "actor", assemble.outputs[tkey]), allow_pickle=False) as z:
        tr = {k: z[k] for k in z.files}
    _, meta = load_avatar(avatar_path)
    tcfg = config_from_dict(meta["train_config"])
    span = face_span(~tr["filled"].astype(bool)) if "filled" in tr else None  # frames with a face, as training
    train_idx, _ = split_frames(len(tr["exp"]), tcfg.test_frames, tcfg.test_fraction, tcfg.max_train_frames, span)
    idx = np.asarray(train_idx)
    m = Motion(exp=tr["exp"][idx], jaw=tr["jaw"][idx], eyes=tr["eyes"][idx], eyelids=tr["eyelids"][idx],
               R=tr["R"][idx].astype(np.float32), t=tr["t"][idx].astype(np.float32))
    pipeline = load_pipeline_config(store, actor)
    flame = pipeline.assets.get("flame")
    flame_path = asset_path(store, "flame", flame, scratch / "assets") if flame else None
    return ActorSide(avatar_path=avatar_path, avatar_sha=train.outputs[akey], flame_path=flame_path,
                     neutral=neutral_of(m), R=m.R, t=m.t, K=np.asarray(tr["K"], np.float32).reshape(3, 3),
                     background=tcfg.background)
