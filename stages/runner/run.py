"""Run one stage for one actor: skip it when its manifest matches, resume it shard by shard."""

from __future__ import annotations

import logging
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from stages.config import CONFIG_FILE, PipelineConfig, digest_of
from stages.errors import BadInput
from stages.graph import BY_NAME, StageDecl, stage as get_stage


def graph_decls() -> list[StageDecl]:
    """The stage graph as this process sees it."""
    return list(BY_NAME.values())
from stages.names import check_entry
from stages.runner import cancel, interrupt, lifeline, lock, scratch as scratch_dirs
from stages.runner.context import StageContext, actor_key
from stages.runner.feed import Feed, Stream, own_inputs, publishes_shards, reads_match, record_key
from stages.runner.manifest import MANIFEST, Manifest
from stages.runner.progress import Progress
from stages.runner.shards import Shard
from stages.store.base import Store
from stages.store.uri import open_store

log = logging.getLogger("avatar.runner")


@dataclass
class StageResult:
    """What one invocation of a stage did.

    Attributes:
        stage: stage name.
        status: ``ran`` (work done and the stage finished), ``skipped`` (manifest matched),
            ``partial`` (some shards done, others still missing).
        frames: frames processed by this invocation.
        seconds: wall-clock seconds of this invocation.
        shards_run: indices of the shards this invocation ran.
        started: when it started, seconds since the start of the run (set by
            :mod:`stages.runner.schedule`; ``None`` outside a scheduled run).
        ended: when it ended, seconds since the start of the run (likewise).
    """

    stage: str
    status: str
    frames: int = 0
    seconds: float = 0.0
    shards_run: tuple[int, ...] = ()
    started: float | None = None
    ended: float | None = None

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def load_pipeline_config(store: Store, actor: str) -> PipelineConfig:
    """The actor's stored pipeline config, or the defaults when none was stored."""
    try:
        return PipelineConfig.from_dict(store.get_json(actor_key(actor, CONFIG_FILE)))
    except KeyError:
        return PipelineConfig()


def resolve_device(device: str, decl: StageDecl, cpu_bound: bool = False) -> str:
    """The device a stage runs on. ``--device`` picks the device of GPU stages only: a CPU stage
    (``decl.gpu`` false: ingest, landmarks, assemble) or one that is CPU-bound with its config
    (``cpu_bound``: masks with the default MediaPipe backends) runs on the CPU, with every core
    (``--jobs`` processes), whatever it says. ``auto`` picks ``cuda`` for GPU stages when torch
    sees a GPU, else ``cpu``; ``cuda`` without a GPU is refused."""
    if device not in ("auto", "cpu", "cuda"):
        raise BadInput(f"--device {device}: unknown device; use auto, cpu or cuda")
    if device == "cpu" or not decl.gpu or cpu_bound:
        return "cpu"
    from stages.runner.devices import gpu_count

    has_cuda = gpu_count() > 0
    if device == "cuda" and not has_cuda:
        raise BadInput("--device cuda: no CUDA GPU is visible to torch; use --device cpu or auto")
    return "cuda" if has_cuda else "cpu"


def check_device(device: str) -> str:
    """The device GPU stages would run on (BadInput for an unknown one, or ``cuda`` without a GPU):
    checked before a command writes anything."""
    gpu = next((d for d in BY_NAME.values() if d.gpu), None)
    return resolve_device(device, gpu) if gpu is not None else "cpu"


def stage_inputs(decl: StageDecl, actor: str, store: Store, pipeline: PipelineConfig, module: Any,
                 pending: frozenset[str] = frozenset()) -> dict[str, str]:
    """Digests of everything the stage reads: the video (first stage), upstream outputs, assets.
    An upstream stage in ``pending`` (still running in this shard-overlapped run) that has not
    finished yet is left out (:mod:`stages.runner.feed`)."""
    own = own_inputs(decl, actor, store, pipeline, module)
    inputs = {k: v for k, v in own.items() if k == "video"}  # the order manifests have always had
    for up in decl.needs:
        key = actor_key(actor, up, MANIFEST)
        try:
            inputs[up] = Manifest.from_dict(store.get_json(key)).outputs_digest
        except KeyError:
            if up in pending:
                continue
            raise BadInput(f"{store.uri}/{key}: stage {up!r} has not finished for actor {actor!r}; "
                           f"run it first (avatar stage {up} --actor {actor} --store {store.uri})") from None
    inputs.update({k: v for k, v in own.items() if k != "video"})
    return inputs


def _read_manifest(store: Store, key: str) -> Manifest | None:
    try:
        return Manifest.from_dict(store.get_json(key))
    except KeyError:
        return None


def _shard_manifest_key(actor: str, stage: str, shard: Shard) -> str:
    return actor_key(actor, stage, "shards", f"{shard.name}.manifest.json")


class _Plan:
    """Everything needed to run a stage, computed once per invocation."""

    def __init__(self, name: str, actor: str, store: Store, pipeline: PipelineConfig | None, device: str,
                 jobs: int, scratch: Path, pending: frozenset[str] = frozenset(), run_id: str | None = None,
                 alive: Callable[[str], bool] | None = None):
        self.decl = get_stage(name)
        self.actor = actor
        self.store = store
        self.pipeline = pipeline or load_pipeline_config(store, actor)
        pending = frozenset(pending) & set(self.decl.needs)
        stage_inputs(self.decl, actor, store, self.pipeline, None, pending)  # fail fast on a missing video/upstream
        self.module = self.decl.load()
        self.config = self.pipeline.stage_config(self.decl)
        self.config_digest = digest_of(self.config)
        self.inputs = stage_inputs(self.decl, actor, store, self.pipeline, self.module, pending)
        self.own = own_inputs(self.decl, actor, store, self.pipeline, self.module)
        # upstream stages read shard by shard while they still run (their manifests come later)
        self.waiting = frozenset(u for u in self.decl.needs if u not in self.inputs)
        self.run_id = run_id
        self.feed = Feed(store, actor, self.pipeline, self.waiting, run_id, alive)
        self.jobs = max(1, jobs)
        cpu_fn = getattr(self.module, "processes_per_gpu", None)
        cpu_bound = cpu_fn is not None and int(cpu_fn(self.config, self.pipeline.assets)) <= 0
        self.device = resolve_device(device, self.decl, cpu_bound)
        self.scratch = scratch
        self.assets = {k: v for k, v in self.pipeline.assets.items() if k in getattr(self.module, "ASSETS", ())}
        self.group_frames = _group_frames(self.module, self.config)

    def context(self, progress: Progress) -> StageContext:
        return StageContext(decl=self.decl, actor=self.actor, store=self.store, config=self.config,
                            assets=self.assets, device=self.device, scratch=self.scratch, progress=progress,
                            jobs=self.jobs, feed=self.feed if self.waiting else None,
                            publish=self.publish_record if self.run_id else None)

    def manifest(self, outputs: dict[str, str], shard: int | None, stats: dict[str, Any],
                 inputs: dict[str, str] | None = None) -> Manifest:
        from dataclasses import asdict

        return Manifest(stage=self.decl.name, actor=self.actor, inputs=self.inputs if inputs is None else inputs,
                        config_digest=self.config_digest, config=asdict(self.config),
                        outputs=dict(sorted(outputs.items())), shard=shard, stats=stats)

    def publish_record(self, index: int, outputs: dict[str, str]) -> None:
        """Write the record of shard ``index`` of a stage that publishes its shards while it runs
        (ingest): its outputs so far, stamped with this run's id (:mod:`stages.runner.feed`)."""
        lock.check_held(self.store, self.actor)
        self.store.put_json(record_key(self.actor, self.decl.name, f"{index:04d}"),
                            self.manifest(outputs, index, {"run": self.run_id}).to_dict())

    def check_upstream(self) -> None:
        """BadInput when an upstream stage this one reads shard by shard ended without finishing."""
        for up in sorted(self.waiting):
            self.feed.check_upstream(up)

    def await_upstream(self) -> None:
        """Wait until every upstream stage read shard by shard has finished, then take the
        stage-level inputs (their manifests' digests) as every stage does."""
        if not self.waiting:
            return
        for up in sorted(self.waiting):
            self.feed.wait_final(up)
        self.inputs = stage_inputs(self.decl, self.actor, self.store, self.pipeline, self.module)
        self.waiting = frozenset()
        self.feed = Feed(self.store, self.actor, self.pipeline)


def _shard_done(plan: _Plan, shard: Shard, wait: bool = False) -> bool:
    """Whether the shard has a manifest for the current config and inputs: every upstream file it
    read still has the digest it read (``wait``: waiting for upstream shards still being written),
    or (a manifest written before shard-level digests) the same stage-level inputs."""
    sm = _read_manifest(plan.store, _shard_manifest_key(plan.actor, plan.decl.name, shard))
    if sm is None or not sm.config_holds(plan.config):
        return False
    if not plan.waiting and sm.inputs == plan.inputs:
        return True
    return reads_match(sm.inputs, plan.own, plan.feed.wait if wait else plan.feed.current)


def _stats(frames: int, seconds: float, extra: dict[str, Any]) -> dict[str, Any]:
    return {"frames": frames, "seconds": round(seconds, 3),
            "frames_per_s": round(frames / seconds, 2) if seconds > 0 else None, **extra}


def _worker_context(plan: _Plan):  # noqa: ANN202 - a multiprocessing context
    """How shard processes start: forked from a forkserver that has imported the runner, the stage
    module and what it names in ``WORKER_PRELOAD`` (e.g. MediaPipe) once, so that sixteen workers
    do not each spend a second or more importing them; ``spawn`` where there is no forkserver.
    Neither inherits the parent's state (a CUDA context included): the forkserver is a fresh
    interpreter. Its preload list is fixed when a process first starts it (a local run's first
    fan-out stage); later stages' workers import the rest themselves."""
    return lifeline.forkserver_context(["stages.runner.run", plan.decl.module,
                                        *getattr(plan.module, "WORKER_PRELOAD", ())])


def _processes_per_gpu(plan: _Plan) -> int:
    """Shard processes that share one GPU: the module's ``processes_per_gpu(config, assets)`` when
    it has one (0 means the work is CPU-bound with this config: use ``jobs``), else its
    ``PROCESSES_PER_GPU`` (default 1)."""
    fn = getattr(plan.module, "processes_per_gpu", None)
    n = int(fn(plan.config, plan.assets)) if fn is not None else int(getattr(plan.module, "PROCESSES_PER_GPU", 1))
    return plan.jobs if n <= 0 else n


def _gpu_stat(plan: _Plan) -> dict[str, Any]:
    """``{"gpu": id}`` of the GPU this process runs the stage on (``{}`` on the CPU): which GPU
    each shard used, in its manifest (``avatar bench`` counts them)."""
    if plan.device != "cuda":
        return {}
    from stages.runner.devices import current_gpu

    return {"gpu": current_gpu()}


def _run_shard(plan: _Plan, shard: Shard, show_progress: bool = True, recheck: bool = False) -> int | None:
    """Run one shard and write its manifest; return frames processed. ``recheck``: first check
    again, waiting for the upstream shards it read, whether its manifest is still good (``None``:
    it was, nothing ran). The manifest's inputs are the shard's own reads (:mod:`stages.runner.feed`)."""
    if recheck and _shard_done(plan, shard, wait=True):
        log.info("%s shard %s: already finished, skipped", plan.decl.name, shard.name)
        return None
    t0, waited0 = time.monotonic(), plan.feed.waited_s
    with Progress(f"{plan.decl.name} shard {shard.name}", len(shard), enabled=show_progress) as progress:
        ctx = plan.context(progress)
        ctx.shards()  # the shard plan is an input of every shard: among its reads
        plan.module.run_shard(ctx, shard)
    waited = plan.feed.waited_s - waited0  # waiting for upstream shards is not this shard's work
    seconds = time.monotonic() - t0 - waited
    frames = ctx.frames_done or len(shard)
    _put_shard_manifest(plan, ctx, shard, frames, seconds, {**({"waited_s": round(waited, 3)} if waited else {})})
    log.info("%s shard %s: %d frames in %.1f s (%.1f frames/s)", plan.decl.name, shard.name, frames, seconds,
             frames / max(seconds, 1e-9))
    return frames


def _put_shard_manifest(plan: _Plan, ctx: StageContext, shard: Shard, frames: int, seconds: float,
                        extra: dict[str, Any]) -> None:
    """Write ``shard``'s manifest: its outputs, its own reads, its stats (the GPU, the stage's stats,
    ``extra``), once the run still holds the shard's and the actor's locks."""
    stats = _stats(frames, seconds, {**_gpu_stat(plan), **ctx.stats, **extra})
    m = plan.manifest(ctx.outputs, shard.index, stats, inputs={**plan.own, **ctx.reads})
    lock.check_held(plan.store, lock.lock_scope(plan.actor, plan.decl.name, shard.index))
    lock.check_held(plan.store, plan.actor)
    plan.store.put_json(_shard_manifest_key(plan.actor, plan.decl.name, shard), m.to_dict())


def _group_frames(module: Any, config: Any) -> int:
    """The most frames one shard group may hold: the module's ``shard_group_frames(config)`` when it
    also has ``run_shard_group``, else 0 (no grouping: one shard per call, as always)."""
    fn = getattr(module, "shard_group_frames", None)
    if fn is None or not hasattr(module, "run_shard_group"):
        return 0
    return max(0, int(fn(config)))


def shard_groups(shards: list[Shard], limit: int, parts: int = 1) -> list[list[Shard]]:
    """Cut the shards to run into groups of consecutive shards (consecutive indices: a shard not in
    ``shards``, e.g. one already done, ends a group), each of at most ``limit`` frames, filled
    greedily in index order; with ``parts > 1`` the limit is lowered to about ``1/parts`` of the
    frames so that at least ``parts`` workers get a group (when there are that many shards). A
    shard longer than the limit is a group of its own. ``limit <= 0``: one shard per group.
    Deterministic: the same shards, limit and parts give the same groups."""
    ordered = sorted(shards, key=lambda s: s.index)
    if limit <= 0:
        return [[s] for s in ordered]
    total = sum(len(s) for s in ordered)
    cap = min(limit, -(-total // max(1, parts)))
    groups: list[list[Shard]] = []
    for s in ordered:
        g = groups[-1] if groups else None
        if g and g[-1].index + 1 == s.index and sum(len(x) for x in g) + len(s) <= cap:
            g.append(s)
        else:
            groups.append([s])
    return groups


def _group_name(group: list[Shard]) -> str:
    return group[0].name if len(group) == 1 else f"{group[0].name}-{group[-1].name}"


def _run_group(plan: _Plan, group: list[Shard], show_progress: bool = True,
               recheck: bool = False) -> list[tuple[Shard, int]]:
    """Run a group of consecutive shards with the module's ``run_shard_group`` in one call (one
    shard: :func:`_run_shard`) and write each shard's own manifest, as :func:`_run_shard` does:
    its outputs, its own reads (one context per shard). ``recheck``: shards found done (waiting
    for the upstream shards they read) are left out. Returns ``[(shard, frames)]`` of those run."""
    name = plan.decl.name
    if recheck:
        left = []
        for s in group:
            if _shard_done(plan, s, wait=True):
                log.info("%s shard %s: already finished, skipped", name, s.name)
            else:
                left.append(s)
        group = left
    if len(group) <= 1:
        out = []
        for s in group:
            n = _run_shard(plan, s, show_progress)
            if n is not None:
                out.append((s, n))
        return out
    label = _group_name(group)
    t0, waited0 = time.monotonic(), plan.feed.waited_s
    with Progress(f"{name} shards {label}", sum(len(s) for s in group), enabled=show_progress) as progress:
        items = []
        for s in group:
            ctx = plan.context(progress)
            ctx.shards()  # the shard plan is an input of every shard: among its reads
            items.append((ctx, s))
        plan.module.run_shard_group(items)
    waited = plan.feed.waited_s - waited0
    seconds = time.monotonic() - t0 - waited
    total = sum(ctx.frames_done or len(s) for ctx, s in items)
    out = []
    for ctx, s in items:
        frames = ctx.frames_done or len(s)
        share = seconds * frames / max(total, 1)  # the group's time, shared by frames
        _put_shard_manifest(plan, ctx, s, frames, share,
                            {"group": label, "group_seconds": round(seconds, 3),
                             **({"waited_s": round(waited * frames / max(total, 1), 3)} if waited else {})})
        log.info("%s shard %s: %d frames (group %s)", name, s.name, frames, label)
        out.append((s, frames))
    log.info("%s shards %s: %d shards, %d frames in %.1f s (%.1f frames/s)", name, label, len(group), total,
             seconds, total / max(seconds, 1e-9))
    return out


def _shard_worker(store_uri: str, actor: str, name: str, pipeline: dict[str, Any], device: str,
                  scratch: str, index: int, decls: tuple[StageDecl, ...], pool_size: int,
                  pending: tuple[str, ...] = (), run_id: str | None = None) -> int | None:
    """Process-pool entry point: rebuild the plan in the worker (:func:`_worker_plan`) and run one
    shard."""
    plan = _worker_plan(store_uri, actor, name, pipeline, device, scratch, decls, pool_size, pending, run_id)
    shard = next(s for s in plan.context(Progress("", enabled=False)).shards() if s.index == index)
    return _run_shard(plan, shard, show_progress=False, recheck=bool(pending))


def _worker_plan(store_uri: str, actor: str, name: str, pipeline: dict[str, Any], device: str, scratch: str,
                 decls: tuple[StageDecl, ...], pool_size: int, pending: tuple[str, ...],
                 run_id: str | None) -> _Plan:
    """The stage's plan rebuilt in a pool worker, with the parent's stage graph. ``ctx.jobs`` is the
    pool size there, so a stage sizes its threads to its share of the cores."""
    from stages import graph
    from stages.runner.threads import limit_worker_threads

    graph.BY_NAME.clear()
    graph.BY_NAME.update({d.name: d for d in decls})
    Path(scratch).mkdir(parents=True, exist_ok=True)
    plan = _Plan(name, actor, open_store(store_uri), PipelineConfig.from_dict(pipeline), device, pool_size,
                 Path(scratch), frozenset(pending), run_id)
    limit_worker_threads(pool_size)  # its share of the cores: pool_size workers of all-core torch thrash
    return plan


def _group_worker(store_uri: str, actor: str, name: str, pipeline: dict[str, Any], device: str,
                  scratch: str, indices: tuple[int, ...], decls: tuple[StageDecl, ...], pool_size: int,
                  pending: tuple[str, ...] = (), run_id: str | None = None) -> list[tuple[int, int]]:
    """Process-pool entry point for a group of shards (:func:`_run_group`), set up as
    :func:`_shard_worker`. Returns ``[(shard index, frames)]`` of the shards run."""
    plan = _worker_plan(store_uri, actor, name, pipeline, device, scratch, decls, pool_size, pending, run_id)
    by_index = {s.index: s for s in plan.context(Progress("", enabled=False)).shards()}
    ran = _run_group(plan, [by_index[i] for i in indices], show_progress=False, recheck=bool(pending))
    return [(s.index, n) for s, n in ran]


def run_stage(name: str, actor: str, store: Store, *, pipeline: PipelineConfig | None = None,
              shard: int | None = None, device: str = "auto", jobs: int = 1,
              stream: Stream | None = None) -> StageResult:
    """Run stage ``name`` for ``actor`` on ``store``.

    - A stage whose manifest matches its inputs and config is skipped.
    - A finished stage whose manifest does *not* match is never overwritten: :class:`BadInput`.
    - A fan-out stage runs the given ``shard`` only, or every unfinished shard when ``shard`` is
      ``None`` (in ``jobs`` processes). Once every shard has a matching manifest, ``finish`` runs and
      the stage manifest is written, last.

    ``stream`` (the local scheduler's shard-level overlap): a fan-out stage may start while
    upstream stages that publish their shards still run in this run; each shard then waits for
    the upstream shards it reads (:mod:`stages.runner.feed`), and the stage manifest is written
    only once those stages have finished.

    One writer at a time: the actor's lock (the shard's, for one ``shard``) is held meanwhile
    (:mod:`stages.runner.lock`); worker processes die with this one (:mod:`stages.runner.lifeline`);
    the scratch folder goes at the end, and those of ended runs at the start
    (:mod:`stages.runner.scratch`).

    Raises:
        BadInput: bad actor name, missing upstream stage or video, bad config, refused overwrite, bad data.
        Transient: the store or another service is unreachable; :class:`~stages.runner.lock.Busy`
            when another process holds the lock.
    """
    check_entry(actor)
    interrupt.note(store, actor)
    decl = get_stage(name)
    pending: frozenset[str] = frozenset()
    if stream is not None and decl.fan_out and shard is None:
        pending = frozenset(u for u in decl.needs if stream.alive(u) and publishes_shards(get_stage(u))
                            and stage_finished(store, actor, u) is None)
    # fail fast, before the lock (which creates a local store's folder): missing video or upstream stage
    stage_inputs(decl, actor, store, pipeline or load_pipeline_config(store, actor), None, pending)
    scratch_dirs.sweep()
    with lock.hold(store, lock.lock_scope(actor, name, shard)):
        return _run_stage_locked(name, actor, store, pipeline, shard, device, jobs, pending, stream)


def _run_stage_locked(name: str, actor: str, store: Store, pipeline: PipelineConfig | None, shard: int | None,
                      device: str, jobs: int, pending: frozenset[str] = frozenset(),
                      stream: Stream | None = None) -> StageResult:
    t0 = time.monotonic()
    scratch = scratch_dirs.make_scratch(name)
    try:
        plan = _Plan(name, actor, store, pipeline, device, jobs, scratch, pending,
                     stream.run_id if stream is not None else None, stream.alive if stream is not None else None)
        if plan.waiting:
            log.info("%s: starts on the shards %s has written so far", name, " and ".join(sorted(plan.waiting)))
        mkey = actor_key(actor, name, MANIFEST)
        log.info("%s: runs on %s", name, "the GPU (cuda)" if plan.device == "cuda" else
                 f"the CPU ({plan.jobs} worker processes)" if plan.decl.fan_out and plan.jobs > 1 else "the CPU")
        if plan.decl.fan_out:
            all_shards = plan.context(Progress("", enabled=False)).shards()
            if shard is not None and not any(s.index == shard for s in all_shards):
                raise BadInput(f"--shard {shard}: actor {actor!r} has shards 0..{len(all_shards) - 1}; "
                               "pick one of those")
        done = _read_manifest(store, mkey)
        if done is not None:
            plan.await_upstream()
            if done.matches(plan.inputs, plan.config):
                log.info("%s: already finished for %s (manifest matches), skipped", name, actor)
                return StageResult(name, "skipped")
            raise BadInput(
                f"{store.uri}/{mkey}: stage {name!r} already finished for actor {actor!r} with other inputs or "
                f"config ({done.mismatch(plan.inputs, plan.config)}), and finished outputs are never overwritten; "
                f"use a new --actor name, or move {store.uri}/{actor_key(actor, name)}/ aside yourself to redo it")

        if not plan.decl.fan_out:
            with Progress(name, 0) as progress:
                ctx = plan.context(progress)
                plan.module.run(ctx)
            seconds = time.monotonic() - t0
            frames = ctx.frames_done
            lock.check_held(store, actor)
            store.put_json(mkey, plan.manifest(ctx.outputs, None,
                                               _stats(frames, seconds, {**_gpu_stat(plan), **ctx.stats})).to_dict())
            log.info("%s: %d frames in %.1f s (%.1f frames/s)", name, frames, seconds, frames / max(seconds, 1e-9))
            return StageResult(name, "ran", frames, seconds)

        targets = [s for s in all_shards if shard is None or s.index == shard]
        frames = 0
        ran: list[Shard] = []
        while True:  # a second pass once shard-by-shard upstream stages have finished (normally nothing left)
            streaming = bool(plan.waiting)
            todo = []
            for s in targets:
                if not _shard_done(plan, s):
                    todo.append(s)
                elif not ran:
                    log.info("%s shard %s: already finished, skipped", name, s.name)
            n, done_shards = _run_shards(plan, todo, scratch, streaming)
            frames += n
            ran += done_shards
            if not streaming:
                break
            plan.await_upstream()
        todo = ran

        # Finish the stage once every shard has a matching manifest (whoever gets here last).
        outputs: dict[str, str] = {}
        shard_stats = []
        for s in all_shards:
            sm = _read_manifest(store, _shard_manifest_key(actor, name, s))
            if sm is None or not _shard_done(plan, s):
                seconds = time.monotonic() - t0
                return StageResult(name, "partial", frames, seconds, tuple(s.index for s in todo))
            outputs.update(sm.outputs)
            shard_stats.append(sm.stats)
        if shard is not None:  # one shard's pod: finish under the actor's lock, once
            with lock.hold(store, actor, wait=max(lock.wait_seconds(), 2 * lock.lease_seconds())):
                done = _read_manifest(store, mkey)
                if done is not None and done.matches(plan.inputs, plan.config):
                    return StageResult(name, "ran", frames, time.monotonic() - t0, tuple(s.index for s in todo))
                return _finish(plan, store, mkey, outputs, shard_stats, all_shards, frames, t0, todo)
        return _finish(plan, store, mkey, outputs, shard_stats, all_shards, frames, t0, todo)
    finally:
        scratch_dirs.remove_scratch(scratch)


def _run_shards(plan: _Plan, todo: list[Shard], scratch: Path, streaming: bool) -> tuple[int, list[Shard]]:
    """Run shards ``todo``, in worker processes where there are several (``streaming``: their
    upstream shards may still be being written; each waits for its own). A stage with
    ``run_shard_group`` gets them in groups of consecutive shards (:func:`shard_groups`), one
    group a call. Returns the frames processed and the shards that ran (a shard found done on its
    re-check did not)."""
    name, store, actor = plan.decl.name, plan.store, plan.actor
    frames, ran = 0, []
    # Shards in parallel processes: as many as jobs on a CPU; on GPUs as many as the stage says
    # share one GPU well (PROCESSES_PER_GPU: launch-bound or CPU-bound stages overlap there),
    # times the GPUs, each worker pinned to one GPU (see stages.runner.devices).
    per_device, gpus = plan.jobs, []
    if plan.device == "cuda":
        from stages.runner.devices import visible_gpus

        gpus = visible_gpus()
        per_device = _processes_per_gpu(plan) * max(1, len(gpus))
    # A stage with run_shard_group takes runs of consecutive shards in one call (one optimisation
    # for track): as few groups as its frame limit allows, but one per GPU (one per job on a CPU).
    groups = [[s] for s in todo]
    if plan.group_frames > 0:
        groups = shard_groups(todo, plan.group_frames, max(1, len(gpus)) if plan.device == "cuda" else plan.jobs)
        if any(len(g) > 1 for g in groups):
            log.info("%s: %d shards in %d groups (%s; at most %d frames a group)", name, len(todo), len(groups),
                     ", ".join(_group_name(g) for g in groups), plan.group_frames)
    workers = min(plan.jobs, len(groups), per_device)
    if workers > 1:
        mp_context = _worker_context(plan)
        pin: dict[str, Any] = {"initializer": lifeline.worker_init}
        if len(gpus) > 1:
            from stages.runner.devices import gpu_slots, is_simulated, pin_worker

            slots = mp_context.Queue()
            for g in gpu_slots(workers, gpus):
                slots.put(g)
            pin = {"initializer": lifeline.worker_init, "initargs": (pin_worker, slots, is_simulated())}
            log.info("%s: %d worker processes over %d GPUs (%s)", name, workers, len(gpus), ", ".join(gpus))
        with Progress(name, sum(len(s) for s in todo)) as progress, ProcessPoolExecutor(
                max_workers=workers, mp_context=mp_context, **pin) as pool:
            try:
                common = (tuple(graph_decls()), workers, tuple(sorted(plan.waiting)), plan.run_id)
                if plan.group_frames > 0:
                    futures = {pool.submit(_group_worker, store.uri, actor, name, plan.pipeline.to_dict(),
                                           plan.device, str(scratch / f"w{g[0].index}"),
                                           tuple(s.index for s in g), *common): g for g in groups}
                else:
                    futures = {pool.submit(_shard_worker, store.uri, actor, name, plan.pipeline.to_dict(),
                                           plan.device, str(scratch / f"w{s.index}"), s.index, *common): [s]
                               for s in todo}
                pending = set(futures)
                while pending:  # polled, so that the scheduler can stop this stage (stages.runner.cancel)
                    finished, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                    cancel.check()
                    if streaming:  # an upstream stage that ended without finishing fails this one
                        plan.check_upstream()
                    for fut in finished:
                        group, got = futures[fut], fut.result()
                        if plan.group_frames > 0:
                            by_index = {s.index: s for s in group}
                            for i, n in got:
                                frames += n
                                ran.append(by_index[i])
                        elif got is not None:
                            frames += got
                            ran.append(group[0])
                        progress.advance(sum(len(s) for s in group))
            except BaseException:  # Ctrl-C, a failed shard: stop the others now, not after their shards
                lifeline.kill_pool(pool)
                raise
    elif plan.group_frames > 0:
        for g in groups:
            cancel.check()
            for s, n in _run_group(plan, g, recheck=streaming):
                frames += n
                ran.append(s)
    else:
        for s in todo:
            cancel.check()
            n = _run_shard(plan, s, recheck=streaming)
            if n is not None:
                frames += n
                ran.append(s)
    return frames, ran


def _finish(plan: _Plan, store: Store, mkey: str, outputs: dict[str, str], shard_stats: list[dict[str, Any]],
            all_shards: list[Shard], frames: int, t0: float, todo: list[Shard]) -> StageResult:
    """The stage's ``finish`` (if any) over every shard's outputs, then the stage manifest, last."""
    name = plan.decl.name
    extra: dict[str, Any] = {}
    if hasattr(plan.module, "finish"):
        with Progress(f"{name} finish", 0) as progress:
            ctx = plan.context(progress)
            ctx.outputs.update(outputs)
            plan.module.finish(ctx)
            outputs = ctx.outputs
            extra = ctx.stats
    seconds = time.monotonic() - t0
    total_frames = sum(int(st.get("frames", 0)) for st in shard_stats)
    shard_seconds = sum(float(st.get("seconds", 0.0)) for st in shard_stats)
    waited = sum(float(st.get("waited_s", 0.0)) for st in shard_stats)
    if waited:
        extra = {**extra, "shard_waited_s": round(waited, 3)}
    stats = {"frames": total_frames, "shard_seconds": round(shard_seconds, 3),
             "frames_per_s_per_worker": round(total_frames / shard_seconds, 2) if shard_seconds else None,
             "shards": len(all_shards), **extra}
    used = sorted({str(st["gpu"]) for st in shard_stats if st.get("gpu") is not None})
    if used:
        stats["gpus"] = used
    lock.check_held(store, plan.actor)
    store.put_json(mkey, plan.manifest(outputs, None, stats).to_dict())
    log.info("%s: finished, %d frames in %d shards; this invocation ran %d frames in %.1f s (%.1f frames/s)",
             name, total_frames, len(all_shards), frames, seconds, frames / max(seconds, 1e-9))
    return StageResult(name, "ran", frames, seconds, tuple(s.index for s in todo))


def stage_finished(store: Store, actor: str, name: str) -> Manifest | None:
    """The stage's manifest if it finished (whatever its inputs), else ``None``."""
    return _read_manifest(store, actor_key(actor, name, MANIFEST))
