"""Shard groups in the local runner: a fan-out stage with ``run_shard_group`` gets runs of
consecutive shards in one call (limit respected, done shards left out), each shard keeps its own
manifest (so resume works shard by shard); stages without it run one shard a call as before."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from stages.runner.run import _group_frames, run_stage, shard_groups
from stages.runner.shards import Shard, plan_shards
from stages.store.local import LocalStore

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))


@pytest.fixture
def group_graph():
    import stages.graph as graph

    saved = dict(graph.BY_NAME)
    import toy_stages_group

    toy_stages_group.install()
    yield toy_stages_group
    graph.BY_NAME.clear()
    graph.BY_NAME.update(saved)


def _names(groups):
    return [[s.index for s in g] for g in groups]


def test_shard_groups_are_consecutive_within_the_limit():
    shards = plan_shards(50, 5)  # 10 shards of 5 frames
    assert _names(shard_groups(shards, 12)) == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    assert _names(shard_groups(shards, 50)) == [list(range(10))]
    assert _names(shard_groups(shards, 0)) == [[i] for i in range(10)]  # no grouping
    assert _names(shard_groups(shards, 3)) == [[i] for i in range(10)]  # a shard over the limit: alone
    for limit in (5, 7, 12, 23):
        for g in shard_groups(shards, limit):
            assert sum(len(s) for s in g) <= limit or len(g) == 1
    # done shards (not given) end a group; order of the input does not matter
    todo = [shards[i] for i in (7, 0, 1, 2, 5, 6, 9)]
    assert _names(shard_groups(todo, 100)) == [[0, 1, 2], [5, 6, 7], [9]]
    assert shard_groups(todo, 100) == shard_groups(list(reversed(todo)), 100)  # deterministic
    # parts: at least that many groups where the shards allow (one per GPU)
    assert _names(shard_groups(shards, 100, parts=2)) == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    assert _names(shard_groups(shards, 100, parts=3)) == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    assert _names(shard_groups(shards[:2], 100, parts=4)) == [[0], [1]]
    uneven = [Shard(0, 1, 501), Shard(1, 501, 1001), Shard(2, 1001, 1251)]
    assert _names(shard_groups(uneven, 1000)) == [[0, 1], [2]]
    assert shard_groups([], 10) == []


def test_group_limit_needs_both_entry_points():
    cfg = SimpleNamespace(group_frames=12)
    assert _group_frames(SimpleNamespace(shard_group_frames=lambda c: c.group_frames,
                                         run_shard_group=lambda items: None), cfg) == 12
    assert _group_frames(SimpleNamespace(shard_group_frames=lambda c: 12), cfg) == 0  # no run_shard_group
    assert _group_frames(SimpleNamespace(run_shard_group=lambda items: None), cfg) == 0
    assert _group_frames(SimpleNamespace(), cfg) == 0
    import stages.track as track

    assert _group_frames(track, track.Config()) == track.Config().landmark_batch_size - 2 * track.Config().overlap
    assert _group_frames(track, track.Config(photometric_steps=80)) == 0  # photometric: one shard a call
    assert _group_frames(track, track.Config(landmark_batch_size=0)) == 0
    import stages.landmarks as landmarks
    import stages.masks as masks

    assert _group_frames(landmarks, landmarks.Config()) == 0 and _group_frames(masks, masks.Config()) == 0


def _video(store):
    store.put_bytes("actors/a/input/video.mp4", b"toy video")
    run_stage("ingest", "a", store)  # 20 frames, 4 shards of 5
    return store


def _video_only(store):
    store.put_bytes("actors/a/input/video.mp4", b"toy video")
    return store


def _manifest(store, i):
    return store.get_json(f"actors/a/count/shards/{i:04d}.manifest.json")


def test_groups_run_in_one_call_with_a_manifest_per_shard(group_graph, store, tmp_path, monkeypatch):
    log = tmp_path / "ran.log"
    monkeypatch.setenv("TOY_LOG", str(log))
    _video(store)
    res = run_stage("count", "a", store)
    assert res.status == "ran" and sorted(res.shards_run) == [0, 1, 2, 3] and res.frames == 20
    assert log.read_text().split() == ["g0-1", "g2-3"]  # 12-frame limit: two shards of 5 a group
    for i in range(4):
        m = _manifest(store, i)
        assert list(m["outputs"]) == [f"actors/a/count/{i:04d}.txt"]  # its own outputs only
        assert m["shard"] == i and m["stats"]["frames"] == 5
        assert m["stats"]["group"] == ("0000-0001" if i < 2 else "0002-0003")
        assert "file:ingest:actors/a/ingest/shards.json" in m["inputs"]  # its own reads
        assert store.get_bytes(f"actors/a/count/{i:04d}.txt").decode() == \
            " ".join(str(2 * k) for k in range(5 * i + 1, 5 * i + 6))
    stage = store.get_json("actors/a/count/manifest.json")
    assert stage["stats"]["frames"] == 20 and stage["stats"]["shards"] == 4
    assert run_stage("count", "a", store).status == "skipped"


def test_resume_runs_only_the_missing_shards(group_graph, tmp_path, monkeypatch):
    store = _video(LocalStore(tmp_path / "s"))
    log = tmp_path / "ran.log"
    monkeypatch.setenv("TOY_LOG", str(log))
    run_stage("count", "a", store)
    kept = store.get_bytes("actors/a/count/0000.txt")
    store.delete("actors/a/count/manifest.json")
    store.delete("actors/a/count/shards/0002.manifest.json")
    again = run_stage("count", "a", store)
    assert again.status == "ran" and again.shards_run == (2,)
    assert log.read_text().split() == ["g0-1", "g2-3", "2"]  # a lone shard: run_shard
    store.delete("actors/a/count/manifest.json")
    for i in (1, 2):
        store.delete(f"actors/a/count/shards/{i:04d}.manifest.json")
    assert run_stage("count", "a", store).shards_run == (1, 2)
    assert log.read_text().split()[-1] == "g1-2"  # the rest of two groups, consecutive: one group
    assert store.get_bytes("actors/a/count/0000.txt") == kept


def test_groups_over_gpus_in_worker_processes(group_graph, tmp_path, monkeypatch):
    """Two (simulated) GPUs: at least one group per GPU, each group in a worker pinned to its GPU."""
    from stages.runner.devices import SIMULATED_GPUS_ENV

    monkeypatch.setenv(SIMULATED_GPUS_ENV, "2")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    log = tmp_path / "ran.log"
    store = _video(LocalStore(tmp_path / "s"))
    # the log and a barrier (both groups at once: two workers) through the config: workers may come from
    # a forkserver that an earlier test started with its own environment
    cfg = __import__("stages.config", fromlist=["PipelineConfig"]).PipelineConfig(
        stages={"count": {"group_frames": 100, "log": str(log), "barrier": f"{tmp_path / 'barrier'}:2"}})
    res = run_stage("count", "a", store, pipeline=cfg, device="cuda", jobs=8)
    assert res.status == "ran" and sorted(res.shards_run) == [0, 1, 2, 3]
    assert sorted(log.read_text().split()) == ["g0-1", "g2-3"]  # 100-frame limit, but one group per GPU
    stats = [_manifest(store, i)["stats"] for i in range(4)]
    assert stats[0]["gpu"] == stats[1]["gpu"] != stats[2]["gpu"] == stats[3]["gpu"]
    assert [s["cuda_visible_devices"] for s in stats] == [s["gpu"] for s in stats]


def test_stage_without_group_entry_point_runs_shard_by_shard(tmp_path, monkeypatch):
    """The plain toy fan-out stage (no run_shard_group): one call per shard, no group in its stats."""
    import stages.graph as graph
    import toy_stages

    saved = dict(graph.BY_NAME)
    toy_stages.install()
    try:
        log = tmp_path / "ran.log"
        monkeypatch.setenv("TOY_LOG", str(log))
        store = _video(LocalStore(tmp_path / "s"))
        assert run_stage("count", "a", store).shards_run == (0, 1, 2, 3)
        assert log.read_text().split() == ["0", "1", "2", "3"]
        assert all("group" not in _manifest(store, i)["stats"] for i in range(4))
    finally:
        graph.BY_NAME.clear()
        graph.BY_NAME.update(saved)


def test_a_group_streams_from_an_upstream_fan_out_stage(tmp_path):
    """Shard-level overlap: the grouped stage starts while the fan-out stage it reads still runs; each
    shard of a group waits for its own upstream shard, reads it, and its manifest records that read."""
    import stages.graph as graph
    import toy_overlap
    from stages.config import PipelineConfig
    from stages.graph import StageDecl
    from stages.runner.schedule import run_graph

    saved = dict(graph.BY_NAME)
    decls = [toy_overlap.DECLS[0], toy_overlap.DECLS[1],
             StageDecl("grp", ("fan",), "tracker", "cpu", True, "toy_stages_group", False, "grouped, reads fan")]
    graph.BY_NAME.clear()
    graph.BY_NAME.update({d.name: d for d in decls})
    try:
        store = _video_only(LocalStore(tmp_path / "s"))
        cfg = PipelineConfig(preset="tiny", stages={"ingest": {"frames": 20, "shard_size": 5},
                                                    "fan": {"sleep_s": 0.03},
                                                    "grp": {"group_frames": 100, "upstream": "fan"}})
        res = {r.stage: r for r in run_graph(store, "a", cfg, decls, device="cpu", jobs=1, shard_overlap=True)}
        assert {r.status for r in res.values()} == {"ran"}
        assert res["grp"].started < res["fan"].ended  # it started on fan's first shards
        for i in range(4):
            frames = range(5 * i + 1, 5 * i + 6)
            assert store.get_bytes(f"actors/a/grp/{i:04d}.txt").decode() == " ".join(str(3 * k) for k in frames)
            m = store.get_json(f"actors/a/grp/shards/{i:04d}.manifest.json")
            assert f"file:fan:actors/a/fan/{i:04d}.txt" in m["inputs"]
            assert not any(k.startswith("file:fan:") and not k.endswith(f"{i:04d}.txt") for k in m["inputs"])
        assert run_graph(store, "a", cfg, decls, device="cpu", jobs=1)[-1].status == "skipped"
    finally:
        graph.BY_NAME.clear()
        graph.BY_NAME.update(saved)
