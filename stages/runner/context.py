"""What a stage's code sees while it runs: its config, its store keys, its inputs, its progress."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stages.errors import BadInput
from stages.graph import StageDecl
from stages.runner.manifest import MANIFEST, Manifest
from stages.runner.progress import Progress
from stages.runner.shards import SHARDS_FILE, Shard, shards_from_document
from stages.store.base import Store


DRIVER_PREFIX = "drivers/"
"""An entry named ``drivers/<name>`` is a driver of ``avatar drive``: its folder is ``drivers/<name>/``."""


def actor_key(actor: str, *parts: str) -> str:
    """``actors/<actor>/<parts...>``; for a driver entry ``drivers/<name>``, ``drivers/<name>/<parts...>``."""
    if actor.startswith(DRIVER_PREFIX):
        return "/".join((actor,) + parts)
    return "/".join(("actors", actor) + parts)


@dataclass
class StageContext:
    """Handed to a stage's ``run``/``run_shard``/``finish``.

    Attributes:
        decl: the stage's declaration.
        actor: the actor being processed.
        store: where inputs are read and outputs written.
        config: the stage's ``Config`` instance.
        assets: ``{kind: sha256}`` chosen for this actor (only kinds the stage declares in ``ASSETS``).
        device: ``cpu`` or ``cuda`` (``cuda`` only where a GPU is present).
        scratch: a local folder for this run's temporary files and downloaded inputs.
        progress: counts frames (or steps); shown as a bar / ``$ARGO_PROGRESS_FILE``.
        jobs: worker processes the stage may use for CPU work.
        feed: a :class:`~stages.runner.feed.Feed` that gives the digests of upstream objects
            (waiting for an upstream shard still being written in this run), or ``None``: only
            finished stages' manifests.
        publish: ``publish(shard_index, {key: sha256})`` declares a shard's outputs complete while
            the stage still runs (:meth:`publish_shard`); ``None`` outside a shard-overlapped run.
        reads: ``{"file:<stage>:<key>": sha256}`` of every upstream object fetched (a shard's
            manifest records them: :mod:`stages.runner.feed`).
    """

    decl: StageDecl
    actor: str
    store: Store
    config: Any
    assets: dict[str, str]
    device: str
    scratch: Path
    progress: Progress
    jobs: int = 1
    feed: Any = None
    publish: Any = None
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("avatar.stage"))
    outputs: dict[str, str] = field(default_factory=dict)
    frames_done: int = 0
    stats: dict[str, Any] = field(default_factory=dict)
    reads: dict[str, str] = field(default_factory=dict)
    _manifests: dict[str, Manifest] = field(default_factory=dict)

    # -- keys -----------------------------------------------------------------------------------

    def key(self, rel: str, folder: str | None = None) -> str:
        """Store key of ``rel`` inside a folder of the actor: this stage's own by default, or a shared
        output area such as ``dataset`` (assemble) or ``avatar`` (train, render)."""
        return actor_key(self.actor, folder or self.decl.name, rel)

    @property
    def video_key(self) -> str:
        """Where the user's uploaded video lives."""
        return actor_key(self.actor, "input", "video.mp4")

    # -- writing outputs ------------------------------------------------------------------------

    def put_file(self, rel: str, path: str | Path, folder: str | None = None) -> str:
        """Write a file as output ``rel`` (in this stage's folder, or ``folder``); recorded in the
        manifest. Returns its sha256."""
        key = self.key(rel, folder)
        self.outputs[key] = self.store.put_file(key, path)
        return self.outputs[key]

    def put_files(self, items: list[tuple[str, Path]], folder: str | None = None, threads: int = 16) -> None:
        """Write many files at once (parallel uploads on S3): ``[(rel, local_path), ...]``."""
        from concurrent.futures import ThreadPoolExecutor

        keys = [self.key(rel, folder) for rel, _ in items]
        with ThreadPoolExecutor(threads) as pool:
            digests = list(pool.map(lambda kp: self.store.put_file(kp[0], kp[1]), zip(keys, (p for _, p in items))))
        self.outputs.update(zip(keys, digests))

    def put_bytes(self, rel: str, data: bytes, folder: str | None = None) -> str:
        key = self.key(rel, folder)
        self.outputs[key] = self.store.put_bytes(key, data)
        return self.outputs[key]

    def put_json(self, rel: str, obj: Any, folder: str | None = None) -> str:
        return self.put_bytes(rel, (json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n").encode(),
                              folder)

    def publish_shard(self, index: int, rels: list[str], folder: str | None = None) -> None:
        """Declare outputs ``rels`` (already written) to be shard ``index``'s, complete: a downstream
        shard may read them before this stage finishes (no-op outside a shard-overlapped run)."""
        if self.publish is not None:
            keys = [self.key(rel, folder) for rel in rels]
            self.publish(index, {k: self.outputs[k] for k in keys})

    def count_frames(self, n: int) -> None:
        """Record ``n`` more frames processed (for frames/s in the log and the manifest)."""
        self.frames_done += n

    # -- reading inputs -------------------------------------------------------------------------

    def manifest_of(self, stage: str) -> Manifest:
        """The finished manifest of an upstream stage (BadInput if it has not finished)."""
        if stage not in self._manifests:
            key = actor_key(self.actor, stage, MANIFEST)
            try:
                self._manifests[stage] = Manifest.from_dict(self.store.get_json(key))
            except KeyError:
                raise BadInput(f"{self.store.uri}/{key}: stage {stage!r} has not finished for actor "
                               f"{self.actor!r}; run it first (avatar stage {stage} --actor {self.actor})") from None
        return self._manifests[stage]

    def input_keys(self, stage: str, prefix: str = "", folder: str | None = None) -> list[str]:
        """Outputs of an upstream stage under ``folder`` (the stage's own folder by default) whose
        relative path starts with ``prefix``, from its manifest (no listing of the store)."""
        base = actor_key(self.actor, folder or stage) + "/"
        return sorted(k[len(base):] for k in self.manifest_of(stage).outputs if k.startswith(base + prefix))

    def fetch(self, rel: str, stage: str, folder: str | None = None) -> Path:
        """Local path of an upstream output, verified against the digest in its manifest (or, in a
        shard-overlapped run, its published shard record: waits until it is published). Recorded
        in :attr:`reads`."""
        key = actor_key(self.actor, folder or stage, rel)
        if self.feed is not None:
            expected = self.feed.wait(stage, key)
        else:
            expected = self.manifest_of(stage).outputs.get(key)
        if expected is None:
            raise BadInput(f"{self.store.uri}/{key}: not among the outputs of stage {stage!r}; "
                           f"re-run {stage} (its manifest does not list this file)")
        from stages.runner.feed import read_name

        self.reads[read_name(stage, key)] = expected
        return self.store.fetch(key, self.scratch / "inputs", expected)

    def fetch_many(self, rels: list[str], stage: str, folder: str | None = None, threads: int = 16) -> list[Path]:
        """:meth:`fetch` for many files at once (parallel downloads on S3), in the given order."""
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(threads) as pool:
            return list(pool.map(lambda r: self.fetch(r, stage, folder), rels))

    def get_json(self, rel: str, stage: str, folder: str | None = None) -> Any:
        return json.loads(self.fetch(rel, stage, folder).read_text())

    def fetch_video(self) -> Path:
        """Local path of the actor's uploaded video."""
        try:
            return self.store.fetch(self.video_key, self.scratch / "inputs")
        except KeyError:
            raise BadInput(f"{self.store.uri}/{self.video_key}: no input video for actor {self.actor!r}; "
                           "upload one (avatar run --video PATH, or avatar submit --video PATH)") from None

    def shards(self) -> list[Shard]:
        """The shards ingest planned."""
        return shards_from_document(self.get_json(SHARDS_FILE, "ingest"))

    def asset(self, kind: str) -> Path | None:
        """Local path of the user's asset of ``kind`` (verified by sha256), or ``None`` when the
        user supplied none (the stage then uses its stand-in)."""
        from stages.assets import asset_path

        sha = self.assets.get(kind)
        if sha is None:
            return None
        return asset_path(self.store, kind, sha, self.scratch / "assets")


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
