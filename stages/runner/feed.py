"""Shard-level readiness: a downstream shard reads an upstream shard's outputs before the upstream
stage has finished, and its manifest records exactly what it read.

The digest rule. A stage's manifest records, as before, every upstream stage's ``outputs_digest``
(so a stage manifest can only be written once every stage it needs has finished). A *shard*
manifest records instead its own inputs (video, assets: :func:`own_inputs`) and, for every
upstream object the shard read through :meth:`~stages.runner.context.StageContext.fetch`,
``"file:<stage>:<key>": sha256`` (:func:`read_name`). A shard is done when its manifest has the
current config digest and every file it read still has that digest among the upstream stage's
current outputs (:func:`reads_match`). Shard manifests written under the old rule (the upstream
stage digests) still match when those are equal.

Where the current digest of an upstream object comes from (:class:`Feed`):

- the upstream stage's manifest, once it exists (authoritative, as before);
- while the upstream stage still runs in this run (``pending``): its published shard records,
  ``<stage>/shards/NNNN.manifest.json``:

  - a fan-out stage's shard manifests, trusted when they are done by the rule above (checked
    recursively against *their* upstream, non-blocking);
  - a stage that does not fan out but publishes its shards as it writes them (ingest:
    ``PUBLISHES_SHARDS``), trusted only when written by this run (``stats.run`` equals the run's
    id), so a record left by an earlier, interrupted run is never used.

Every object is written atomically before its record, and a record before anything depends on it,
so nothing half-written is read. Waiting is polled: it stops with
:class:`~stages.runner.cancel.Cancelled` when the scheduler stops the stage, and with
:class:`~stages.errors.BadInput` when the upstream stage ended without finishing (``alive``).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from stages.config import PipelineConfig, digest_of
from stages.errors import BadInput
from stages.graph import StageDecl, stage as get_stage
from stages.runner import cancel
from stages.runner.context import actor_key
from stages.runner.manifest import MANIFEST, Manifest
from stages.store.base import Store

READ = "file:"
"""Prefix of the read entries of a shard manifest's ``inputs``."""

PENDING = "pending"
"""What :meth:`Feed.current` returns for an object whose upstream shard is not published yet (no
sha256 is spelled like this)."""

POLL_S = 0.05
POLL_MAX_S = 0.5
"""Waiting polls the store every POLL_S seconds at first, backing off to POLL_MAX_S (a waiting
shard worker lists the upstream's records each time: cheap locally, a request on S3): it adds at
most a quarter of the time already waited."""


def _poll_s(since: float) -> float:
    """The next poll's delay: a quarter of the time waited so far, within POLL_S..POLL_MAX_S."""
    return min(POLL_MAX_S, max(POLL_S, 0.25 * (time.monotonic() - since)))


def read_name(stage: str, key: str) -> str:
    """``file:<stage>:<key>``: the name of one upstream object read, in a shard manifest's inputs."""
    return f"{READ}{stage}:{key}"


def split_read(name: str) -> tuple[str, str]:
    """``(stage, key)`` of a :func:`read_name`."""
    stage, key = name[len(READ):].split(":", 1)
    return stage, key


def publishes_shards(decl: StageDecl) -> bool:
    """Whether ``decl``'s shards become readable before it finishes: a fan-out stage (its shard
    manifests) or one whose module says ``PUBLISHES_SHARDS`` (ingest's per-shard records)."""
    return decl.fan_out or bool(getattr(decl.load(), "PUBLISHES_SHARDS", False))


def own_inputs(decl: StageDecl, actor: str, store: Store, pipeline: PipelineConfig, module: Any) -> dict[str, str]:
    """The inputs of a stage that are not upstream outputs: the uploaded video (the first stage)
    and the chosen assets the module declares in ``ASSETS``."""
    inputs: dict[str, str] = {}
    if not decl.needs:
        key = actor_key(actor, "input", "video.mp4")
        try:
            inputs["video"] = store.sha256(key)
        except KeyError:
            raise BadInput(f"{store.uri}/{key}: no input video for actor {actor!r}; "
                           "upload one (avatar run --video PATH, or avatar submit --video PATH)") from None
    for kind in getattr(module, "ASSETS", ()) if module is not None else ():
        if kind in pipeline.assets:
            inputs[f"asset:{kind}"] = pipeline.assets[kind]
    return inputs


def reads_match(inputs: dict[str, str], own: dict[str, str], resolve: Callable[[str, str], str | None]) -> bool:
    """Whether a shard manifest's ``inputs`` (read entries plus own inputs) still hold: its own
    inputs equal ``own`` and every file it read has the digest ``resolve(stage, key)`` gives now.
    A manifest with no read entries (the old rule) never matches here."""
    reads = {n: v for n, v in inputs.items() if n.startswith(READ)}
    if not reads or {n: v for n, v in inputs.items() if n not in reads} != own:
        return False
    return all(resolve(*split_read(n)) == sha for n, sha in sorted(reads.items()))


def record_key(actor: str, stage: str, shard_name: str) -> str:
    """Where a stage's shard manifest (or published shard record) lives."""
    return actor_key(actor, stage, "shards", f"{shard_name}.manifest.json")


@dataclass(frozen=True)
class Stream:
    """What the local scheduler gives a stage it starts before the stages it needs have finished.

    Attributes:
        run_id: this run's id (stamped on the records a ``PUBLISHES_SHARDS`` stage writes).
        alive: ``alive(stage)``: whether that stage still runs in this run.
    """

    run_id: str
    alive: Callable[[str], bool]


@dataclass
class Feed:
    """Current digests of upstream objects, for one process of one stage.

    Attributes:
        store, actor, pipeline: the run's.
        pending: upstream stages still running in this run whose shards may be read before they
            finish (empty: only finished stages' manifests count, as before).
        run_id: the id of this run (trusted records of a ``PUBLISHES_SHARDS`` stage carry it).
        alive: ``alive(stage)``: whether that upstream stage still runs (the scheduler's view, in
            its process; ``None`` in shard worker processes, which their parent stops).
    """

    store: Store
    actor: str
    pipeline: PipelineConfig
    pending: frozenset[str] = frozenset()
    run_id: str | None = None
    alive: Callable[[str], bool] | None = None
    _final: dict[str, Manifest] = field(default_factory=dict)
    _published: dict[str, dict[str, str]] = field(default_factory=dict)
    _trusted: set[str] = field(default_factory=set)
    _lock: threading.RLock = field(default_factory=threading.RLock)
    waited_s: float = 0.0
    """Seconds spent waiting for upstream objects so far (a shard's time less this is its work)."""

    def final(self, stage: str) -> Manifest | None:
        """The stage's manifest once it exists (cached), else ``None``."""
        with self._lock:
            if stage not in self._final:
                try:
                    self._final[stage] = Manifest.from_dict(self.store.get_json(actor_key(self.actor, stage, MANIFEST)))
                except KeyError:
                    return None
            return self._final[stage]

    def current(self, stage: str, key: str) -> str | None:
        """The digest of ``key`` among ``stage``'s outputs now: from its manifest (``None`` when the
        finished stage did not write it), else from its trusted published shards, else
        :data:`PENDING` (also for a stage that has not finished and is not pending)."""
        with self._lock:
            m = self.final(stage)
            if m is not None:
                return m.outputs.get(key)
            if stage not in self.pending:
                return PENDING
            got = self._published.get(stage, {}).get(key)
            if got is None:
                self._refresh(stage)
                got = self._published.get(stage, {}).get(key)
            return PENDING if got is None else got

    def wait(self, stage: str, key: str) -> str | None:
        """:meth:`current`, waiting (polled) while it is :data:`PENDING`.

        Raises:
            Cancelled: the scheduler stopped this stage meanwhile.
            BadInput: ``stage`` has not finished and does not run (any more) in this run.
        """
        since = None
        while True:
            got = self.current(stage, key)
            if got != PENDING:
                if since is not None:
                    self.waited_s += time.monotonic() - since
                return got
            since = since or time.monotonic()
            self.check_upstream(stage)
            cancel.check()
            time.sleep(_poll_s(since))

    def check_upstream(self, stage: str) -> None:
        """BadInput when ``stage`` has no manifest and is neither pending nor still running."""
        if self.final(stage) is not None:
            return
        gone = stage not in self.pending or (self.alive is not None and not self.alive(stage))
        if gone and self.final(stage) is None:
            key = actor_key(self.actor, stage, MANIFEST)
            raise BadInput(f"{self.store.uri}/{key}: stage {stage!r} has not finished for actor {self.actor!r}; "
                           f"run it first (avatar stage {stage} --actor {self.actor} --store {self.store.uri})")

    def wait_final(self, stage: str) -> Manifest:
        """The stage's manifest, waiting (polled) until it is written; raises as :meth:`wait`."""
        since = None
        while True:
            m = self.final(stage)
            if m is not None:
                if since is not None:
                    self.waited_s += time.monotonic() - since
                return m
            since = since or time.monotonic()
            self.check_upstream(stage)
            cancel.check()
            time.sleep(_poll_s(since))

    # -- published shard records ------------------------------------------------------------------

    def _refresh(self, stage: str) -> None:
        """Read ``stage``'s shard records not trusted yet; add the outputs of those now trusted."""
        prefix = actor_key(self.actor, stage, "shards") + "/"
        for key in self.store.list(prefix):
            if not key.endswith(".manifest.json") or key in self._trusted:
                continue
            try:
                rec = Manifest.from_dict(self.store.get_json(key))
            except KeyError:
                continue
            if self._trust(stage, rec):
                self._trusted.add(key)
                self._published.setdefault(stage, {}).update(rec.outputs)

    def _trust(self, stage: str, rec: Manifest) -> bool:
        decl = get_stage(stage)
        module = decl.load()
        if rec.config_digest != digest_of(self.pipeline.stage_config(decl)):
            return False
        own = own_inputs(decl, self.actor, self.store, self.pipeline, module)
        if not decl.fan_out:  # a record published while the stage runs: only this run's
            return self.run_id is not None and rec.stats.get("run") == self.run_id and rec.inputs == own
        return reads_match(rec.inputs, own, self.current)
