"""The local scheduler: independent stages run at the same time, needs are respected, a failure
stops the others with its exit code kept, Ctrl-C stops everything, and a rerun resumes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from factories.subprocess_env import sigint_as_at_a_terminal, subprocess_env
from stages.config import PipelineConfig
from stages.errors import BadInput, Transient
from stages.graph import STAGES
from stages.runner.schedule import Demand, cpu_shares, run_graph

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))


@pytest.fixture
def diamond():
    """The toy graph ingest -> (fan, side) -> join in place of the real one."""
    import stages.graph as graph
    import toy_overlap

    saved = dict(graph.BY_NAME)
    toy_overlap.install()
    yield toy_overlap
    graph.BY_NAME.clear()
    graph.BY_NAME.update(saved)


def _store(tmp_path):
    from stages.store.local import LocalStore

    st = LocalStore(tmp_path / "store")
    st.put_bytes("actors/a/input/video.mp4", b"the toy ingest only copies it")
    return st


def _pipeline(log: Path, sleep_s: float = 0.03, frames: int = 20, **side) -> PipelineConfig:
    toy = {"sleep_s": sleep_s, "log": str(log)}
    return PipelineConfig(preset="tiny", stages={"ingest": {"frames": frames, "shard_size": 5}, "fan": dict(toy),
                                                 "side": {**toy, **side}, "join": {"log": str(log)}})


def _events(log: Path) -> list[tuple[str, str, float]]:
    rows = [line.split() for line in log.read_text().splitlines()]
    return [(stage, what, float(t)) for stage, what, t in rows]


def _span(events, stage: str) -> tuple[float, float]:
    """First and last time ``stage`` wrote (from the stage itself, not the scheduler)."""
    times = [t for s, _, t in events if s == stage]
    return min(times), max(times)


# -- CPU split ------------------------------------------------------------------------------------

def _real_demands(gpu: bool, jobs: int) -> list[Demand]:
    """The avatar pipeline with default (CPU-bound) masks; on a GPU: calibrate 1 process, track 4."""
    gpu_workers = {"calibrate": 1, "track": min(jobs, 4), "masks": 0, "train": 1, "render": 1}
    return [Demand(s.name, s.needs, gpu_workers.get(s.name, 0) if gpu else 0) for s in STAGES]


def test_cpu_split_on_one_gpu_leaves_track_its_cores():
    shares = cpu_shares(16, _real_demands(gpu=True, jobs=16))
    assert shares["masks"] == 12, shares  # 16 cores less track's 4 GPU processes
    assert shares["calibrate"] == 16 and shares["track"] == 16  # bounded by their GPU process count
    assert all(shares[s] == 16 for s in ("ingest", "landmarks", "assemble", "train", "render")), shares


def test_cpu_split_on_the_cpu_is_two_lanes_and_masks_gets_all_once_alone():
    shares = cpu_shares(2, _real_demands(gpu=False, jobs=2))
    assert (shares["masks"], shares["calibrate"], shares["track"]) == (1, 1, 1), shares
    assert shares["ingest"] == shares["assemble"] == 2
    later = [d for d in _real_demands(gpu=False, jobs=8) if d.name not in ("ingest", "landmarks", "calibrate", "track")]
    assert cpu_shares(8, later)["masks"] == 8  # calibrate and track done: nothing beside it
    assert cpu_shares(1, _real_demands(gpu=False, jobs=1))["masks"] == 1


def test_demands_of_the_real_stages_follow_the_device_and_the_gpus(monkeypatch):
    from stages.graph import BY_NAME
    from stages.runner.schedule import stage_demand

    cfg = PipelineConfig(preset="tiny")
    assert {n: stage_demand(BY_NAME[n], cfg, "cpu", 16).gpu_workers for n in ("masks", "calibrate", "track")} == \
        {"masks": 0, "calibrate": 0, "track": 0}
    monkeypatch.setenv("AVATAR_SIMULATED_GPUS", "2")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    on_gpus = {n: stage_demand(BY_NAME[n], cfg, "cuda", 16).gpu_workers
               for n in ("ingest", "landmarks", "masks", "calibrate", "track")}
    assert on_gpus == {"ingest": 0, "landmarks": 0, "masks": 0, "calibrate": 1, "track": 8}  # 4 per GPU
    assert stage_demand(BY_NAME["track"], cfg, "cuda", 6).gpu_workers == 6  # never above --jobs
    demands = [stage_demand(d, cfg, "cuda", 16) for d in STAGES]
    assert cpu_shares(16, demands)["masks"] == 8  # 16 cores less track's 8 processes


def test_cpu_split_of_a_chain_is_everything():
    chain = [Demand("a", ()), Demand("b", ("a",), 3), Demand("c", ("b",))]
    assert cpu_shares(6, chain) == {"a": 6, "b": 6, "c": 6}


# -- overlap and order ----------------------------------------------------------------------------

def test_independent_stages_run_at_the_same_time_and_needs_are_respected(diamond, tmp_path):
    log = tmp_path / "times.log"
    st = _store(tmp_path)
    results = run_graph(st, "a", _pipeline(log), list(diamond.DECLS), device="cpu", jobs=1)
    assert [r.stage for r in results] == ["ingest", "fan", "side", "join"]
    assert all(r.status == "ran" for r in results)
    ev = _events(log)
    fan, side, join = _span(ev, "fan"), _span(ev, "side"), _span(ev, "join")
    # Seen from the stages' own log: fan and side overlap (each ~0.6 s of sleep) ...
    assert fan[0] < side[1] and side[0] < fan[1], (fan, side)
    overlap = min(fan[1], side[1]) - max(fan[0], side[0])
    assert overlap > 0.3, (fan, side)
    # ... and join starts only after both have ended; ingest's manifest came before either started.
    assert join[0] >= max(fan[1], side[1])
    ingest_done = st.local_path("actors/a/ingest/manifest.json").stat().st_mtime
    assert ingest_done <= min(fan[0], side[0]) + 0.01
    by = {r.stage: r for r in results}
    assert by["fan"].started >= by["ingest"].ended and by["join"].started >= max(by["fan"].ended, by["side"].ended)
    wall = by["join"].ended
    assert sum(r.seconds for r in results) > wall + 0.3  # the overlap shows in the timeline
    assert st.get_json("actors/a/join/join.json") == {"total": sum(range(1, 21)), "side_frames": 20}


def test_overlap_failure_and_resume_on_both_stores(diamond, store, tmp_path):
    """The same on a local folder and on the real S3 server (its lease lock renewed by a thread,
    re-entered by the stage threads): side fails while fan runs, exit class kept, the rerun resumes."""
    log = tmp_path / "times.log"
    store.put_bytes("actors/a/input/video.mp4", b"the toy ingest only copies it")
    with pytest.raises(BadInput, match="told to fail"):
        run_graph(store, "a", _pipeline(log, sleep_s=0.05, fail_at=8), list(diamond.DECLS), device="cpu", jobs=1)
    ev = _events(log)
    assert {s for s, _, _ in ev} == {"fan", "side"}
    fan, side = _span(ev, "fan"), _span(ev, "side")
    assert fan[0] < side[1] and side[0] < fan[1], "fan and side did not run at the same time"
    assert store.exists("actors/a/ingest/manifest.json") and not store.exists("actors/a/fan/manifest.json")
    assert not store.list(".locks/"), "the run's lock outlived it"
    cfg = _pipeline(log, sleep_s=0.05)
    results = {r.stage: r for r in run_graph(store, "a", cfg, list(diamond.DECLS), device="cpu", jobs=1)}
    assert [results[n].status for n in ("ingest", "fan", "side", "join")] == ["skipped", "ran", "ran", "ran"]
    assert store.get_json("actors/a/join/join.json") == {"total": sum(range(1, 21)), "side_frames": 20}


def test_one_at_a_time_does_not_overlap(diamond, tmp_path):
    log = tmp_path / "times.log"
    results = run_graph(_store(tmp_path), "a", _pipeline(log, sleep_s=0.01), list(diamond.DECLS), device="cpu",
                        jobs=1, max_parallel=1)
    ev = _events(log)
    fan, side = _span(ev, "fan"), _span(ev, "side")
    assert fan[1] <= side[0] or side[1] <= fan[0]
    spans = sorted((r.started, r.ended) for r in results)
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))


# -- failure, resume ------------------------------------------------------------------------------

@pytest.mark.parametrize("kind,exc", [("bad", BadInput), ("transient", Transient)])
def test_a_failing_stage_stops_the_other_and_a_rerun_resumes(diamond, tmp_path, kind, exc):
    log = tmp_path / "times.log"
    st = _store(tmp_path)
    # fan: 8 shards of 5 frames at 0.1 s in 2 worker processes (4 jobs, two lanes): 2 s of work;
    # side fails at its 10th frame (1 s)
    slow = _pipeline(log, sleep_s=0.1, frames=40, fail_at=10, fail=kind)
    with pytest.raises(exc, match="told to fail"):
        run_graph(st, "a", slow, list(diamond.DECLS), device="cpu", jobs=4)
    ev = _events(log)
    failed_at = next(t for s, what, t in ev if s == "side" and what == "fail")
    assert [what for s, what, t in ev if s == "fan" and t > failed_at + 0.5] == [], "fan went on after the failure"
    assert any(s == "fan" for s, _, _ in ev), "fan never ran beside side"
    assert st.exists("actors/a/ingest/manifest.json"), "the finished stage stays finished"
    assert not st.exists("actors/a/fan/manifest.json") and not st.exists("actors/a/side/manifest.json")
    assert not st.exists("actors/a/join/manifest.json") and "join" not in {s for s, _, _ in ev}
    kept = {int(Path(k).name.split(".")[0]) for k in st.list("actors/a/fan/shards/") if k.endswith(".manifest.json")}
    assert len(kept) < 8
    ingest_before = st.get_json("actors/a/ingest/manifest.json")

    cfg = _pipeline(log, sleep_s=0.1, frames=40)
    cfg.stages["side"] = {"sleep_s": 0.001}  # side fixed; fan's config as before, so its kept shards match
    results = {r.stage: r for r in run_graph(st, "a", cfg, list(diamond.DECLS), device="cpu", jobs=4)}
    assert results["ingest"].status == "skipped" and results["fan"].status == "ran"
    assert results["side"].status == "ran" and results["join"].status == "ran"
    assert set(results["fan"].shards_run) == set(range(8)) - kept, "kept shards are not redone"
    assert st.get_json("actors/a/ingest/manifest.json") == ingest_before
    assert st.get_json("actors/a/join/join.json")["total"] == sum(range(1, 41))


# -- Ctrl-C ---------------------------------------------------------------------------------------

def _group_gone(pgid: int, within: float = 5.0) -> bool:
    """Whether no process of group ``pgid`` is left (the forkserver may take a moment to go)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


_INTERRUPTED = """
import sys, toy_overlap
toy_overlap.install()
from stages.config import PipelineConfig
from stages.runner import interrupt
from stages.runner.schedule import run_graph
from stages.store.uri import open_store
st = open_store(sys.argv[1])
toy = {{"sleep_s": 0.15, "log": sys.argv[2]}}  # fan: 3 s of work in 2 processes; side: 6 s
cfg = PipelineConfig(preset="tiny", stages={{"ingest": {{"frames": 40, "shard_size": 5}}, "fan": toy, "side": toy,
                                             "join": {{"log": sys.argv[2]}}}})
interrupt.note(st, "a")
try:
    run_graph(st, "a", cfg, list(toy_overlap.DECLS), device="cpu", jobs={jobs})
except KeyboardInterrupt:
    print(interrupt.summary(["run", "--actor", "a"]), flush=True)
    sys.exit(130)
"""


def test_ctrl_c_stops_every_stage_and_a_rerun_resumes(diamond, tmp_path):
    log = tmp_path / "times.log"
    st = _store(tmp_path)
    env = subprocess_env({"PYTHONPATH": f"{HERE}:{subprocess_env()['PYTHONPATH']}"})
    proc = subprocess.Popen([sys.executable, "-c", _INTERRUPTED.format(jobs=4), st.uri, str(log)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=sigint_as_at_a_terminal)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # wait until a shard of fan is kept and side is under way
        if log.exists() and "end-shard" in log.read_text() and "side start" in log.read_text():
            break
        time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail(f"the stages did not start: {proc.communicate()}")
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole process group
    t0 = time.monotonic()
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert time.monotonic() - t0 < 3, "the stages were not stopped promptly (side had 4 s of work left)"
    assert "finished: ingest" in out and "fan:" in out and "shard(s) kept" in out, out
    assert _group_gone(proc.pid), "a worker process outlived the run"
    lines = log.read_text().count("\n")
    time.sleep(0.3)
    assert log.read_text().count("\n") == lines, "a stage kept working after the run ended"
    assert not st.exists("actors/a/side/manifest.json") and not st.exists("actors/a/fan/manifest.json")
    kept = {int(Path(k).name.split(".")[0]) for k in st.list("actors/a/fan/shards/") if k.endswith(".manifest.json")}
    assert kept and len(kept) < 8

    toy = {"sleep_s": 0.15, "log": str(log)}  # the interrupted run's config: its kept shards match
    cfg = PipelineConfig(preset="tiny", stages={"ingest": {"frames": 40, "shard_size": 5}, "fan": toy,
                                                "side": {"sleep_s": 0.001},
                                                "join": {"log": str(log)}})
    results = {r.stage: r for r in run_graph(st, "a", cfg, list(diamond.DECLS), device="cpu", jobs=4)}
    assert results["ingest"].status == "skipped"
    assert set(results["fan"].shards_run) == set(range(8)) - kept
    assert results["join"].status == "ran"


# -- the real pipeline ----------------------------------------------------------------------------

def _manifest_span(store, actor: str, stage: str) -> tuple[float, float]:
    """(start, end) of a stage in epoch seconds, from its manifests alone: each is written when its
    work ended, ``stats.seconds`` after that work started (a fan-out stage: its shards' manifests)."""
    base = f"actors/{actor}/{stage}/"
    shards = [k for k in store.list(base + "shards/") if k.endswith(".manifest.json")]
    starts = [store.local_path(k).stat().st_mtime - float(store.get_json(k)["stats"]["seconds"])
              for k in (shards or [base + "manifest.json"])]
    return min(starts), store.local_path(base + "manifest.json").stat().st_mtime


def test_masks_runs_beside_calibrate_on_a_tiny_synthetic_clip(tmp_path):
    """The real stages on a generated clip (tiny preset, calibrate shortened): calibrate starts when
    landmarks finishes, masks (CPU) already with ingest (shard-level overlap: it works on each shard
    once landmarks has written it), and their manifests show masks and calibrate running together."""
    from stages.face.model import load_face_model
    from stages.face.synth import SynthSpec, generate_params, render_video
    from stages.runner.pipeline import prepare_actor, run_pipeline
    from stages.store.local import LocalStore

    clip = tmp_path / "talking.mp4"
    model = load_face_model(None)
    spec = SynthSpec(n_frames=30, size=192, seed=3)
    render_video(model, generate_params(model, spec), clip, spec=spec, batch=16)
    st = LocalStore(tmp_path / "store")
    short = {"calibrate": {"rigid_steps": 20, "identity_steps": 40, "refine_iterations": 20}}
    pipeline = prepare_actor(st, "s", clip, None, "tiny", short)
    results = run_pipeline(st, "s", pipeline, device="cpu", jobs=2, until="calibrate")
    assert [r.stage for r in results] == ["ingest", "landmarks", "masks", "calibrate"]
    by = {r.stage: r for r in results}
    masks, calibrate, landmarks = (_manifest_span(st, "s", n) for n in ("masks", "calibrate", "landmarks"))
    assert masks[0] < calibrate[1] and calibrate[0] < masks[1], (masks, calibrate)
    assert calibrate[0] >= landmarks[1] - 0.05, "calibrate started before landmarks finished"
    assert by["calibrate"].started >= by["landmarks"].ended
    assert by["masks"].started < by["landmarks"].ended  # started on the shards as they came
    assert sum(r.seconds for r in results) > by["calibrate"].ended  # the sum of stages exceeds the wall clock
    # a rerun skips everything
    assert {r.status for r in run_pipeline(st, "s", pipeline, device="cpu", jobs=2, until="calibrate")} == {"skipped"}


_CHAIN_OF_POOLS = """
import sys, toy_overlap
from stages.graph import StageDecl
decls = [toy_overlap.DECLS[0], toy_overlap.DECLS[1],
         StageDecl("fan2", ("fan",), "tracker", "cpu", True, "toy_overlap_fan", False, "a second fan-out")]
import stages.graph as graph
graph.BY_NAME.clear(); graph.BY_NAME.update({d.name: d for d in decls})
from stages.config import PipelineConfig
from stages.runner.schedule import run_graph
from stages.store.uri import open_store
toy = {"sleep_s": 0.001}
cfg = PipelineConfig(preset="tiny", stages={"ingest": {"frames": 20, "shard_size": 5}, "fan": toy, "fan2": toy})
print([r.status for r in run_graph(open_store(sys.argv[1]), "a", cfg, decls, device="cpu", jobs=2)])
import os, time
from multiprocessing import forkserver
time.sleep(0.5)  # every stage thread has ended: a forkserver tied to one of them is gone by now
pid = forkserver._forkserver._forkserver_pid
print("forkserver", "alive" if pid and os.waitpid(pid, os.WNOHANG) == (0, 0) else "gone")
"""


def test_a_pool_after_the_thread_that_started_the_first_pool_has_ended(tmp_path):
    """Two fan-out stages one after the other, each with worker processes, in a fresh process: the
    forkserver is the run's (started from its main thread), not the first stage thread's, which the
    kernel's parent-death signal would take down with that thread."""
    st = _store(tmp_path)
    env = subprocess_env({"PYTHONPATH": f"{HERE}:{subprocess_env()['PYTHONPATH']}"})
    proc = subprocess.run([sys.executable, "-c", _CHAIN_OF_POOLS, st.uri], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-2:] == ["['ran', 'ran', 'ran']", "forkserver alive"], proc.stdout
    assert len([k for k in st.list("actors/a/fan2/shards/") if k.endswith(".manifest.json")]) == 4


@pytest.mark.gpu
def test_on_the_gpu_masks_runs_beside_calibrate_and_track_keeps_its_processes(wojtek, tmp_path):
    """On a GPU machine with the real clip (tiny preset): calibrate and track run on cuda, masks
    (CPU-bound with the default backends) runs beside them on the cores track's processes leave."""
    from stages.graph import BY_NAME
    from stages.runner.devices import visible_gpus
    from stages.runner.pipeline import prepare_actor, run_pipeline
    from stages.runner.schedule import stage_demand
    from stages.store.local import LocalStore

    jobs = os.cpu_count() or 1
    st = LocalStore(tmp_path / "store")
    pipeline = prepare_actor(st, "w", wojtek, None, "tiny")
    track = stage_demand(BY_NAME["track"], pipeline, "cuda", jobs)
    assert track.gpu_workers == min(jobs, 4 * len(visible_gpus()))
    assert stage_demand(BY_NAME["masks"], pipeline, "cuda", jobs).gpu_workers == 0
    results = {r.stage: r for r in run_pipeline(st, "w", pipeline, device="cuda", jobs=jobs, until="track")}
    assert all(r.status == "ran" for r in results.values())
    masks, calibrate, track_span = (_manifest_span(st, "w", n) for n in ("masks", "calibrate", "track"))
    assert masks[0] < calibrate[1] and calibrate[0] < masks[1], (masks, calibrate)
    assert track_span[0] >= calibrate[1] - 0.05
    assert st.get_json("actors/w/track/manifest.json")["stats"].get("gpus"), "track ran on no GPU"
