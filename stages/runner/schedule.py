"""The local run's scheduler: every stage starts as soon as all the stages it needs have finished.

``run_pipeline`` used to run the stages one after another. The graph (:mod:`stages.graph`) allows
more: once ``landmarks`` is done, ``masks`` (CPU-bound with the default backends) and ``calibrate``
then ``track`` (GPU) need nothing from each other, so they run at the same time, each stage in a
thread of this process that calls :func:`~stages.runner.run.run_stage` as before. Everything a
stage does stays as it was: its manifests (per shard, then the stage's, last), skipping a stage or
shard whose manifest matches, the process pools of fan-out stages, ``--device``. The Argo DAG
already runs the stages this way (``depends`` = ``needs``) and does not change.

CPU workers (``jobs``) are shared by :func:`cpu_shares`, decided when a stage starts, from the
stages that have not finished yet:

- a stage that nothing else can run beside (ingest, landmarks, assemble, train, render, or masks
  once calibrate and track are done) gets every worker;
- a GPU-bound stage (``cuda``) keeps its own count (its GPU processes, e.g. track's
  ``PROCESSES_PER_GPU`` per GPU, or one for calibrate): each wants about one core to feed its GPU;
- a CPU-bound stage beside others gets what the GPU-bound ones beside it leave (their processes
  reserved, at most all but one core per CPU-bound stage), split evenly among the CPU-bound stages
  that may run at the same time (two lanes on ``--device cpu``: masks, and calibrate then track).
  On one H100 with 16 cores: masks 12 processes, track 4, calibrate 1.

Failure and Ctrl-C: the first stage that fails stops the others (:mod:`stages.runner.cancel`: at
their next unit of work; their pools' processes are killed), the stages that finished stay
finished (and shards with manifests stay kept), and its exception is raised once the others have
stopped, so the exit code is the failing stage's (2 bad input, 75 transient). Ctrl-C stops the
running stages the same way and re-raises ``KeyboardInterrupt``. A rerun resumes: finished stages
are skipped, kept shards are not redone.

The actor's lock is held for the whole run (stages re-enter it from their threads).

Shard-level overlap (``shard_overlap``, on unless ``AVATAR_SHARD_OVERLAP=0``): a fan-out stage
also starts while a stage it needs still runs, when that stage publishes its shards as they are
written (ingest's shard records, a fan-out stage's shard manifests: :mod:`stages.runner.feed`).
Each of its shards then waits for the upstream shards it reads, so landmarks works on the first
shards while ingest still renders the last ones, and masks follows landmarks shard by shard. Its
stage manifest is still written last, after those stages' manifests. Calibrate needs the landmarks
of keyframes spread over the whole clip, and track needs calibrate, so they start as before.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field
from itertools import combinations
from typing import Iterable

from stages.config import PipelineConfig
from stages.graph import StageDecl
from stages.runner import cancel, lifeline, lock
from stages.runner.context import actor_key
from stages.runner.feed import Stream, publishes_shards
from stages.runner.manifest import MANIFEST
from stages.runner.run import StageResult, resolve_device, run_stage
from stages.store.base import Store

log = logging.getLogger("avatar.schedule")
run_log = logging.getLogger("avatar.run")  # "stage NAME: summary" as before (tools and tests read it)

STOP_GRACE_S = 30.0
"""How long a failure or Ctrl-C waits for the other running stages to stop before raising anyway
(a stage notices at its next unit of work; the threads are daemons and end with the process)."""


@dataclass(frozen=True)
class Demand:
    """What one stage asks of the machine in this run.

    Attributes:
        name: stage name.
        needs: the stages it needs (the DAG's edges; names outside the run are ignored).
        gpu_workers: processes it keeps on GPUs (each wants about one CPU core to feed its GPU);
            0 when the stage is CPU-bound on this run's device.
    """

    name: str
    needs: tuple[str, ...]
    gpu_workers: int = 0


def ancestors(demands: Iterable[Demand]) -> dict[str, set[str]]:
    """``{stage: every stage it needs, directly or not}`` (within ``demands``)."""
    by_name = {d.name: d for d in demands}
    out: dict[str, set[str]] = {}

    def visit(name: str) -> set[str]:
        if name not in out:
            out[name] = set()
            for up in by_name[name].needs:
                if up in by_name:
                    out[name] |= {up} | visit(up)
        return out[name]

    for name in by_name:
        visit(name)
    return out


def cpu_shares(jobs: int, demands: list[Demand]) -> dict[str, int]:
    """CPU workers for each stage of ``demands`` (the stages not finished yet) if it started now.

    Two stages may run at the same time when neither needs the other (directly or not). For a
    stage, every set of stages that may all run together with it (an antichain of the DAG) is
    considered and the smallest share over them taken, so the split holds however the run unfolds:
    a GPU-bound stage keeps ``jobs`` (its process count is bounded by its GPUs); a CPU-bound one
    gets ``(jobs - reserved) // lanes`` (at least 1), ``reserved`` being the GPU workers of the
    GPU-bound stages beside it (at most ``jobs - lanes``) and ``lanes`` the CPU-bound stages in the
    set, itself included.

    Args:
        jobs: CPU worker processes of the run (``--jobs``), >= 1.
        demands: the unfinished stages.

    Returns:
        ``{stage name: workers}``, each in ``1..jobs``.
    """
    jobs = max(1, int(jobs))
    up = ancestors(demands)
    by_name = {d.name: d for d in demands}

    def apart(a: str, b: str) -> bool:
        return a != b and a not in up[b] and b not in up[a]

    shares: dict[str, int] = {}
    for d in demands:
        if d.gpu_workers > 0:
            shares[d.name] = jobs
            continue
        beside = [o for o in by_name if apart(d.name, o)]
        share = jobs
        for k in range(1, len(beside) + 1):
            for group in combinations(beside, k):
                if not all(apart(a, b) for a, b in combinations(group, 2)):
                    continue
                lanes = 1 + sum(1 for o in group if by_name[o].gpu_workers <= 0)
                reserved = min(sum(by_name[o].gpu_workers for o in group), max(0, jobs - lanes))
                share = min(share, max(1, (jobs - reserved) // lanes))
        shares[d.name] = share
    return shares


def stage_demand(decl: StageDecl, pipeline: PipelineConfig, device: str, jobs: int) -> Demand:
    """The :class:`Demand` of ``decl`` with this config and ``--device``: the device it resolves to
    (:func:`~stages.runner.run.resolve_device`) and, on ``cuda``, its GPU processes (a fan-out
    stage's ``processes_per_gpu`` x visible GPUs, at most ``jobs``; 1 otherwise)."""
    module = decl.load()
    config = pipeline.stage_config(decl)
    assets = {k: v for k, v in pipeline.assets.items() if k in getattr(module, "ASSETS", ())}
    fn = getattr(module, "processes_per_gpu", None)
    per_gpu = int(fn(config, assets)) if fn is not None else int(getattr(module, "PROCESSES_PER_GPU", 1))
    if resolve_device(device, decl, per_gpu <= 0) != "cuda":
        return Demand(decl.name, decl.needs, 0)
    if not decl.fan_out:
        return Demand(decl.name, decl.needs, 1)
    from stages.runner.devices import visible_gpus

    return Demand(decl.name, decl.needs, max(1, min(max(1, jobs), per_gpu * max(1, len(visible_gpus())))))


def warm_up_pending(store: Store, actor: str, pipeline: PipelineConfig, decls: list[StageDecl],
                    demands: dict[str, Demand]):
    """Start the GPU warm-up (:mod:`stages.runner.warm_up`) of the stages of this run that run on a
    CUDA device and have no manifest yet; the :class:`~stages.runner.warm_up.WarmUp` or None."""
    from stages.runner.warm_up import start_warm_up

    pending = [d for d in decls if demands[d.name].gpu_workers > 0 and hasattr(d.load(), "warm_up")
               and not store.exists(actor_key(actor, d.name, MANIFEST))]
    return start_warm_up([(d.name, d.load(), pipeline.stage_config(d)) for d in pending])


def worker_preload(decls: list[StageDecl]) -> list[str]:
    """What the run's forkserver imports once for every worker: the runner and each stage's
    ``WORKER_PRELOAD`` (e.g. MediaPipe), in order, without repeats."""
    out = ["stages.runner.run"]
    for d in decls:
        for m in getattr(d.load(), "WORKER_PRELOAD", ()):
            if m not in out:
                out.append(m)
    return out


@dataclass
class _Run:
    """The state of one scheduled run (the main thread's; stage threads only post to ``events``)."""

    t0: float
    stop: threading.Event = field(default_factory=threading.Event)
    events: "queue.Queue[tuple[str, StageResult | None, BaseException | None]]" = field(default_factory=queue.Queue)
    running: dict[str, threading.Thread] = field(default_factory=dict)
    results: dict[str, StageResult] = field(default_factory=dict)
    failure: BaseException | None = None
    stopped: list[str] = field(default_factory=list)
    stop_at: float | None = None
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    live: set[str] = field(default_factory=set)
    shard_overlap: bool = False

    def alive(self, name: str) -> bool:
        """Whether stage ``name`` still runs (read by stage threads; changed by the main thread only
        after a failure has been recorded, so a stage waiting on it sees the stop first)."""
        return name in self.live

    def request_stop(self) -> None:
        if not self.stop.is_set():
            self.stop_at = time.monotonic()
            self.stop.set()


def shard_overlap_default() -> bool:
    """Shard-level overlap unless ``AVATAR_SHARD_OVERLAP`` is ``0`` (or ``off``/``false``)."""
    return os.environ.get("AVATAR_SHARD_OVERLAP", "1").strip().lower() not in ("0", "off", "false", "no")


def streams(up: StageDecl, down: StageDecl) -> bool:
    """Whether ``down`` may start while ``up`` still runs: ``down`` fans out over shards and ``up``
    publishes its shards as they are written."""
    return down.fan_out and publishes_shards(up)


def run_graph(store: Store, actor: str, pipeline: PipelineConfig, decls: list[StageDecl], *, device: str = "auto",
              jobs: int = 1, max_parallel: int | None = None, shard_overlap: bool | None = None) -> list[StageResult]:
    """Run ``decls`` for ``actor``, each stage as soon as the stages it needs have finished.

    Args:
        store, actor, pipeline: as for :func:`~stages.runner.run.run_stage`.
        decls: the stages to run, in dependency order (a stage's needs outside them must have
            finished already).
        device: ``--device`` (``auto``, ``cpu``, ``cuda``).
        jobs: CPU worker processes in all (shared by :func:`cpu_shares`).
        max_parallel: at most this many stages at once (``1``: one after another, as before);
            ``None``: as many as the graph allows.
        shard_overlap: let a fan-out stage start on the shards a stage it needs has published
            while that stage still runs (:func:`streams`); ``None``: :func:`shard_overlap_default`.
            Never with ``max_parallel=1``.

    Returns:
        One :class:`~stages.runner.run.StageResult` per stage, in the order of ``decls``, with
        ``started`` and ``ended`` (seconds since the start of this call).

    Raises:
        Whatever the first failing stage raised (``BadInput``, ``Transient``, ...), once the other
        running stages have stopped; ``KeyboardInterrupt`` likewise.
    """
    run = _Run(time.monotonic())  # the timeline includes the set-up below (importing every stage's module)
    names = [d.name for d in decls]
    demands = {d.name: stage_demand(d, pipeline, device, jobs) for d in decls}
    limit = max(1, max_parallel) if max_parallel is not None else len(decls) or 1
    run.shard_overlap = limit > 1 and (shard_overlap_default() if shard_overlap is None else shard_overlap)
    if jobs > 1:  # shard pools fork from a forkserver, which must outlive every stage thread
        lifeline.start_forkserver(worker_preload(decls))
    with lock.hold(store, actor):
        warm = warm_up_pending(store, actor, pipeline, decls, demands)
        try:
            _run_until_done(run, decls, demands, store, actor, pipeline, device, jobs, limit)
        except BaseException:
            if warm is not None:  # a failed or interrupted run does not wait for it
                warm.join(2)
            raise
        if warm is not None:  # long done unless every stage it warmed was skipped or quick
            warm.join(60)
    results = [run.results[n] for n in names if n in run.results]
    _log_overlap(results, time.monotonic() - run.t0)
    return results


def _run_until_done(run: _Run, decls: list[StageDecl], demands: dict[str, Demand], store: Store, actor: str,
                    pipeline: PipelineConfig, device: str, jobs: int, limit: int) -> None:
    """Start stages as they become ready and collect them until none runs; re-raise the first failure
    once the others have stopped."""
    try:
        while True:
            if run.failure is None and not run.stop.is_set():
                _start_ready(run, decls, demands, store, actor, pipeline, device, jobs, limit)
            if not run.running:
                break
            _collect(run)
    except BaseException as e:  # Ctrl-C in the main thread
        run.failure = run.failure or e
        _stop_all(run)
    if run.failure is not None:
        _stop_all(run)
        if run.stopped:
            done = [d.name for d in decls if d.name in run.results]
            log.info("run stopped: finished %s; stopped %s", ", ".join(done) or "nothing", ", ".join(run.stopped))
        raise run.failure


def _start_ready(run: _Run, decls: list[StageDecl], demands: dict[str, Demand], store: Store, actor: str,
                 pipeline: PipelineConfig, device: str, jobs: int, limit: int) -> None:
    by_name = {d.name: d for d in decls}
    for d in decls:
        if len(run.running) >= limit:
            return
        if d.name in run.results or d.name in run.running:
            continue
        if not all(up in run.results or (run.shard_overlap and up in run.running and streams(by_name[up], d))
                   for up in d.needs if up in by_name):
            continue
        unfinished = [demands[n] for n in demands if n not in run.results]
        share = cpu_shares(jobs, unfinished)[d.name] if limit > 1 else jobs
        if len(unfinished) > 1 and share != jobs:
            log.info("%s: %d of %d CPU workers (the rest for the stages that may run beside it)", d.name, share, jobs)
        run_log.info("stage %s: %s", d.name, d.summary)
        thread = threading.Thread(target=_stage_thread, name=f"stage {d.name}", daemon=True,
                                  args=(run, d.name, store, actor, pipeline, device, share))
        run.running[d.name] = thread
        run.live.add(d.name)
        thread.start()


def _stage_thread(run: _Run, name: str, store: Store, actor: str, pipeline: PipelineConfig, device: str,
                  jobs: int) -> None:
    cancel.bind(run.stop)
    started = time.monotonic() - run.t0
    try:
        stream = Stream(run.run_id, run.alive) if run.shard_overlap else None
        result = run_stage(name, actor, store, pipeline=pipeline, device=device, jobs=jobs, stream=stream)
        result.started, result.ended = started, time.monotonic() - run.t0
        run.events.put((name, result, None))
    except BaseException as e:  # noqa: BLE001 - handed to the main thread, which raises it
        run.events.put((name, None, e))
    finally:
        cancel.bind(None)


def _collect(run: _Run, timeout: float | None = None) -> bool:
    """Wait for one stage to end (polling, so that Ctrl-C reaches the main thread); False on timeout."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        try:
            name, result, error = run.events.get(timeout=0.2)
            break
        except queue.Empty:
            if deadline is not None and time.monotonic() >= deadline:
                return False
    run.running.pop(name, None)
    if result is not None:
        run.results[name] = result
    elif isinstance(error, cancel.Cancelled) or run.failure is not None:  # stopped, or failed while stopping
        run.stopped.append(name)
        log.info("%s stopped %.1f s after it was asked to", name, time.monotonic() - (run.stop_at or 0.0))
    else:
        run.failure = error
        if run.running:
            log.info("stage %s failed; stopping %s", name, ", ".join(run.running))
        run.request_stop()
    run.live.discard(name)  # after the stop: a stage waiting on this one sees the stop, not a vanished upstream
    return True


def _stop_all(run: _Run) -> None:
    """Ask every running stage to stop and wait for them (at most :data:`STOP_GRACE_S`)."""
    run.request_stop()
    deadline = time.monotonic() + STOP_GRACE_S
    while run.running:
        if not _collect(run, timeout=max(0.0, deadline - time.monotonic())):
            log.warning("still stopping after %.0f s: %s", STOP_GRACE_S, ", ".join(run.running))
            return


def _log_overlap(results: list[StageResult], wall: float) -> None:
    ran = [r for r in results if r.status != "skipped"]
    if len(ran) > 1:
        total = sum(r.seconds for r in results)
        log.info("run: %.1f s wall clock, %.1f s in stages (%.1f s ran beside other stages)", wall, total, total - wall)
