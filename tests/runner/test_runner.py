"""The stage runner: manifests, skipping, resuming after a SIGKILL, refusing overwrites, integrity."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from factories.subprocess_env import subprocess_env
from stages.config import PipelineConfig
from stages.errors import BadInput
from stages.runner.run import run_stage
from stages.store.base import IntegrityError

HERE = Path(__file__).parent


@pytest.fixture
def toy_graph(monkeypatch):
    import stages.graph as graph
    import toy_stages  # noqa: F401  (tests/runner is on sys.path via install)

    saved = dict(graph.BY_NAME)
    sys.path.insert(0, str(HERE))
    import toy_stages as toy

    toy.install()
    yield toy
    graph.BY_NAME.clear()
    graph.BY_NAME.update(saved)


sys.path.insert(0, str(HERE))


def _with_video(store, actor="a"):
    store.put_bytes(f"actors/{actor}/input/video.mp4", b"not really a video, the toy ingest only copies it")
    return store


def _kill_mid_stage(store, log: Path, die_at: int) -> subprocess.CompletedProcess:
    code = ("import toy_stages; toy_stages.install();"
            "from stages.store.uri import open_store; from stages.runner.run import run_stage;"
            f"run_stage('count', 'a', open_store({store.uri!r}))")
    env = subprocess_env({"TOY_DIE_AT": str(die_at), "TOY_LOG": str(log),
                          "PYTHONPATH": f"{HERE}:{subprocess_env()['PYTHONPATH']}"})
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


def test_kill_mid_shard_then_resume(toy_graph, store, tmp_path, monkeypatch):
    _with_video(store)
    assert run_stage("ingest", "a", store).status == "ran"
    log = tmp_path / "ran.log"

    proc = _kill_mid_stage(store, log, die_at=13)  # frame 13 is in shard 2 (frames 11..15)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert log.read_text().split() == ["0", "1", "2"]
    assert store.exists("actors/a/count/shards/0000.manifest.json")
    assert store.exists("actors/a/count/shards/0001.manifest.json")
    assert not store.exists("actors/a/count/shards/0002.manifest.json")
    assert not store.exists("actors/a/count/manifest.json"), "no stage manifest before every shard is done"
    before = store.get_bytes("actors/a/count/0000.txt")

    monkeypatch.setenv("TOY_LOG", str(log))
    result = run_stage("count", "a", store)
    assert result.status == "ran"
    assert result.shards_run == (2, 3), "finished shards must not be redone"
    assert log.read_text().split() == ["0", "1", "2", "2", "3"]
    assert store.get_bytes("actors/a/count/0000.txt") == before
    manifest = store.get_json("actors/a/count/manifest.json")
    assert sorted(manifest["outputs"]) == [f"actors/a/count/{i:04d}.txt" for i in range(4)]
    assert manifest["stats"]["frames"] == 20

    assert run_stage("count", "a", store).status == "skipped"
    assert run_stage("total", "a", store).status == "ran"
    assert store.get_json("actors/a/total/total.json") == {"total": 2 * sum(range(1, 21))}


def test_single_shard_invocations_finish_the_stage(toy_graph, store):
    """What the Argo fan-out does: one invocation per shard; the last one writes the manifest."""
    _with_video(store)
    run_stage("ingest", "a", store)
    statuses = [run_stage("count", "a", store, shard=i).status for i in (3, 1, 0, 2)]
    assert statuses == ["partial", "partial", "partial", "ran"]
    assert store.exists("actors/a/count/manifest.json")
    with pytest.raises(BadInput, match="shards 0..3"):
        run_stage("count", "a", store, shard=9)


def test_rerun_with_other_config_refuses_to_overwrite(toy_graph, store):
    _with_video(store)
    run_stage("ingest", "a", store)
    run_stage("count", "a", store)
    outputs = {k: store.get_bytes(k) for k in store.list("actors/a/count/")}
    other = PipelineConfig(stages={"count": {"scale": 3}})
    with pytest.raises(BadInput, match="never overwritten"):
        run_stage("count", "a", store, pipeline=other)
    assert {k: store.get_bytes(k) for k in store.list("actors/a/count/")} == outputs


def test_missing_upstream_and_video_are_bad_input(toy_graph, store):
    with pytest.raises(BadInput, match="no input video"):
        run_stage("ingest", "a", store)
    _with_video(store)
    with pytest.raises(BadInput, match="has not finished"):
        run_stage("count", "a", store)


def test_unknown_setting_is_bad_input(toy_graph, store):
    _with_video(store)
    with pytest.raises(BadInput, match="no setting shard_sise"):
        run_stage("ingest", "a", store, pipeline=PipelineConfig(stages={"ingest": {"shard_sise": 3}}))


def test_corrupted_output_is_detected_downstream(toy_graph, tmp_path):
    from stages.store.local import LocalStore

    store = _with_video(LocalStore(tmp_path / "s"))
    run_stage("ingest", "a", store)
    run_stage("count", "a", store)
    (tmp_path / "s/actors/a/count/0001.txt").write_text("999")  # bit rot
    with pytest.raises(IntegrityError, match="0001.txt"):
        run_stage("total", "a", store)
    assert not store.exists("actors/a/total/manifest.json")


def test_parallel_local_shards(toy_graph, tmp_path):
    """jobs > 1 runs shards in worker processes with the same outputs."""
    from stages.store.local import LocalStore

    serial = _with_video(LocalStore(tmp_path / "serial"))
    parallel = _with_video(LocalStore(tmp_path / "parallel"))
    for st, jobs in ((serial, 1), (parallel, 2)):
        run_stage("ingest", "a", st)
        assert run_stage("count", "a", st, jobs=jobs).status == "ran"
    for i in range(4):
        assert serial.get_bytes(f"actors/a/count/{i:04d}.txt") == parallel.get_bytes(f"actors/a/count/{i:04d}.txt")


def test_processes_per_gpu_follows_the_stage_module():
    """A stage says how many shard processes share a GPU: a constant, or a function of its config
    whose 0 means CPU-bound (all jobs); the masks stage is CPU-bound with its default backends."""
    from types import SimpleNamespace

    import stages.masks as masks
    from stages.runner.run import _processes_per_gpu

    def plan(module, config=None, assets=None):
        return SimpleNamespace(module=module, config=config, assets=assets or {}, jobs=16)

    assert _processes_per_gpu(plan(SimpleNamespace())) == 1
    assert _processes_per_gpu(plan(SimpleNamespace(PROCESSES_PER_GPU=4))) == 4
    assert _processes_per_gpu(plan(masks, masks.Config())) == 16
    assert _processes_per_gpu(plan(masks, masks.Config(), {"matting": "ab" * 32})) == masks.PROCESSES_PER_GPU
    assert _processes_per_gpu(plan(masks, masks.Config(parsing="bisenet"))) == masks.PROCESSES_PER_GPU
    assert masks.backends(masks.Config(), {"parsing": "cd" * 32}) == ("default", "bisenet")


def test_gpu_slots_and_visible_gpus(monkeypatch):
    from stages.runner.devices import SIMULATED_GPUS_ENV, gpu_slots, visible_gpus

    assert gpu_slots(5, ["0", "1"]) == ["0", "1", "0", "1", "0"] and gpu_slots(3, []) == []
    monkeypatch.setenv(SIMULATED_GPUS_ENV, "3")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert visible_gpus() == ["0", "1", "2"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6,7,9")  # the user's own selection is kept, in order
    assert visible_gpus() == ["4", "6", "7"]


@pytest.mark.parametrize("gpus", [3, 1])
def test_shard_workers_spread_over_every_gpu(toy_graph, tmp_path, monkeypatch, gpus):
    """With N (simulated) GPUs a fan-out stage runs N x processes-per-GPU workers, each pinned to one
    GPU by CUDA_VISIBLE_DEVICES, round robin; the shard manifests say which GPU each shard used.
    With one GPU the shards run in this process, nothing pinned (as before)."""
    from stages.runner.devices import SIMULATED_GPUS_ENV
    from stages.store.local import LocalStore

    monkeypatch.setenv(SIMULATED_GPUS_ENV, str(gpus))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    st = _with_video(LocalStore(tmp_path / "s"))
    run_stage("ingest", "a", st)
    assert run_stage("count", "a", st, device="cuda", jobs=8).status == "ran"
    stats = [st.get_json(f"actors/a/count/shards/{i:04d}.manifest.json")["stats"] for i in range(4)]
    used = [s["gpu"] for s in stats]
    if gpus == 3:
        assert [s["cuda_visible_devices"] for s in stats] == used  # the worker saw only its GPU
        assert set(used) <= {"0", "1", "2"} and len(set(used)) >= 2  # 3 workers for 4 shards: at least 2 GPUs busy
        assert st.get_json("actors/a/count/manifest.json")["stats"]["gpus"] == sorted(set(used))
    else:
        assert used == ["0"] * 4 and [s["cuda_visible_devices"] for s in stats] == [None] * 4
    assert [st.get_bytes(f"actors/a/count/{i:04d}.txt") for i in range(4)][0] == b"2 4 6 8 10"


def test_device_picks_the_device_of_gpu_stages_only(monkeypatch):
    """``--device cuda`` (or auto on a GPU machine) sends GPU stages to the GPU; ingest, landmarks,
    assemble and the default (MediaPipe) masks stay on the CPU with every core whatever it says."""
    import torch

    from stages.graph import stage
    from stages.runner.run import resolve_device

    from stages.runner.devices import SIMULATED_GPUS_ENV

    monkeypatch.setenv(SIMULATED_GPUS_ENV, "1")  # a GPU machine, seen from here
    for name in ("ingest", "landmarks", "assemble"):
        for device in ("auto", "cpu", "cuda"):
            assert resolve_device(device, stage(name)) == "cpu", (name, device)
    for name in ("calibrate", "track", "train", "render"):
        assert resolve_device("cuda", stage(name)) == "cuda" and resolve_device("auto", stage(name)) == "cuda"
        assert resolve_device("cpu", stage(name)) == "cpu"
    assert resolve_device("cuda", stage("masks"), cpu_bound=True) == "cpu"
    assert resolve_device("cuda", stage("masks")) == "cuda"
    monkeypatch.delenv(SIMULATED_GPUS_ENV)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(BadInput, match="no CUDA GPU"):
        resolve_device("cuda", stage("track"))
    assert resolve_device("cuda", stage("landmarks")) == "cpu"  # a CPU stage never needs the GPU
    with pytest.raises(BadInput, match="unknown device"):
        resolve_device("gpu", stage("ingest"))
