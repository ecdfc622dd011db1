"""Finished stages stay finished when the code gains config fields (at their defaults); a changed
value is still refused, and a refused command changes nothing in the store.

"Old code" is the stage module as it is; "new code" is the same module whose ``Config`` gained a
field (monkeypatched in, as an upgrade would). The manifests are written by the real runner."""

from __future__ import annotations

import sys
from dataclasses import field, make_dataclass
from pathlib import Path

import pytest

from stages.config import PipelineConfig
from stages.errors import BadInput
from stages.runner.run import run_stage
from stages.runner.setup import apply_setup, plan_setup

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))


@pytest.fixture
def toy_graph():
    import stages.graph as graph
    import toy_stages as toy

    saved = dict(graph.BY_NAME)
    toy.install()
    yield toy
    graph.BY_NAME.clear()
    graph.BY_NAME.update(saved)


def upgrade(monkeypatch, module, **new_fields):
    """Give ``module.Config`` new fields ``name=default`` (or redefine existing defaults): the code
    after an upgrade."""
    old = module.Config
    new = make_dataclass("Config", [(k, type(v), field(default=v)) for k, v in new_fields.items()], bases=(old,))
    monkeypatch.setattr(module, "Config", new)
    return new


def snapshot(store, prefix="actors/a/"):
    return {k: store.get_bytes(k) for k in store.list(prefix)}


def finish_old(store):
    store.put_bytes("actors/a/input/video.mp4", b"the toy ingest only copies it")
    assert run_stage("ingest", "a", store).status == "ran"
    assert run_stage("count", "a", store).status == "ran"


def test_a_field_added_at_its_default_keeps_finished_stages(toy_graph, store, monkeypatch):
    import toy_stages_count

    finish_old(store)
    before = snapshot(store)
    upgrade(monkeypatch, toy_stages_count, mode="plain")
    upgrade(monkeypatch, toy_graph, fps=25.0)  # the ingest config too
    assert run_stage("ingest", "a", store).status == "skipped"
    assert run_stage("count", "a", store).status == "skipped"
    assert snapshot(store) == before, "a skipped stage writes nothing"
    plan_setup(store, "a")  # what `avatar run` checks first: accepted
    assert run_stage("total", "a", store).status == "ran"
    assert store.get_json("actors/a/total/total.json") == {"total": 2 * sum(range(1, 21))}


def test_old_shards_are_kept_when_new_code_finishes_the_stage(toy_graph, store, monkeypatch, tmp_path):
    import toy_stages_count

    store.put_bytes("actors/a/input/video.mp4", b"the toy ingest only copies it")
    run_stage("ingest", "a", store)
    assert run_stage("count", "a", store, shard=0).status == "partial"  # old code: one shard finished
    shard0 = store.get_bytes("actors/a/count/shards/0000.manifest.json")
    upgrade(monkeypatch, toy_stages_count, mode="plain")
    log = tmp_path / "ran.log"
    monkeypatch.setenv("TOY_LOG", str(log))
    result = run_stage("count", "a", store)
    assert result.status == "ran" and result.shards_run == (1, 2, 3), "the old shard is not redone"
    assert log.read_text().split() == ["1", "2", "3"]
    assert store.get_bytes("actors/a/count/shards/0000.manifest.json") == shard0
    assert store.get_json("actors/a/count/manifest.json")["config"] == {"scale": 2, "mode": "plain"}


def test_a_new_field_set_to_another_value_is_refused(toy_graph, store, monkeypatch):
    import toy_stages_count

    finish_old(store)
    before = snapshot(store)
    upgrade(monkeypatch, toy_stages_count, mode="plain")
    other = PipelineConfig(stages={"count": {"mode": "fancy"}})
    with pytest.raises(BadInput, match="never overwritten") as e:
        run_stage("count", "a", store, pipeline=other)
    assert 'mode "plain" -> "fancy"' in str(e.value) and "\n" not in str(e.value)
    assert snapshot(store) == before


def test_a_changed_default_is_still_refused(toy_graph, store, monkeypatch):
    import toy_stages_count

    finish_old(store)
    store.put_json("actors/a/config.json", PipelineConfig().to_dict())
    before = snapshot(store)
    upgrade(monkeypatch, toy_stages_count, scale=3)  # an existing field's default changed
    with pytest.raises(BadInput, match="scale 2 -> 3"):
        run_stage("count", "a", store)
    with pytest.raises(BadInput, match=r"config\.json: actor 'a' already finished count with other settings "
                                       r"than this command, code and config give \(count: scale 2 -> 3\)"):
        plan_setup(store, "a")
    assert snapshot(store) == before


def test_pinning_the_old_value_in_the_config_resumes(toy_graph, store, monkeypatch):
    """The refusal's advice works: the old value set in config.json, the finished stage holds."""
    import toy_stages_count

    finish_old(store)
    upgrade(monkeypatch, toy_stages_count, scale=3)
    setup = plan_setup(store, "a", overrides={"count": {"scale": 2}})
    apply_setup(store, setup)
    assert run_stage("count", "a", store).status == "skipped"


def test_real_ingest_finished_by_old_code_is_kept(wojtek, tmp_path, monkeypatch):
    """The real ingest stage on 30 frames of wojtek.mp4: its Config gains a field at its default,
    the finished stage is skipped (not refused, not redone); the field set otherwise is refused."""
    import av

    import stages.ingest as ingest
    from stages.store.uri import open_store

    clip = tmp_path / "clip.mp4"
    with av.open(str(wojtek)) as inp, av.open(str(clip), "w") as out:
        s = out.add_stream("libx264", rate=25)
        s.width = s.height = 256
        s.pix_fmt = "yuv420p"
        s.options = {"preset": "ultrafast"}
        for i, frame in enumerate(inp.decode(video=0)):
            if i >= 30:
                break
            for p in s.encode(frame.reformat(width=256, height=256, format="yuv420p")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    store = open_store(str(tmp_path / "store"))
    apply_setup(store, plan_setup(store, "a", clip, "tiny"))
    assert run_stage("ingest", "a", store).status == "ran"
    before = snapshot(store)

    upgrade(monkeypatch, ingest, new_knob=0)
    plan_setup(store, "a", clip, "tiny")  # `avatar run` again with the same video: accepted
    assert run_stage("ingest", "a", store).status == "skipped"
    assert snapshot(store) == before
    with pytest.raises(BadInput, match="new_knob 0 -> 1"):
        run_stage("ingest", "a", store, pipeline=PipelineConfig(preset="tiny", stages={"ingest": {"new_knob": 1}}))
    assert snapshot(store) == before


def test_a_pod_of_the_upgraded_image_skips_the_finished_shard(toy_graph, store, monkeypatch, capsys):
    """The Argo path: each pod runs `avatar stage NAME --actor A --store URI [--shard N]` (the same
    runner and manifests, here on the local folder and on the S3 server)."""
    import toy_stages_count

    from stages.cli import main

    store.put_bytes("actors/a/input/video.mp4", b"the toy ingest only copies it")
    assert main(["stage", "ingest", "--actor", "a", "--store", store.uri]) == 0
    assert main(["stage", "count", "--actor", "a", "--store", store.uri, "--shard", "1"]) == 0  # old image
    shard1 = store.get_bytes("actors/a/count/shards/0001.manifest.json")
    upgrade(monkeypatch, toy_stages_count, mode="plain")  # the new image
    capsys.readouterr()
    assert main(["stage", "count", "--actor", "a", "--store", store.uri, "--shard", "1"]) == 0
    assert main(["stage", "ingest", "--actor", "a", "--store", store.uri]) == 0
    assert capsys.readouterr().out.split() == ["count:", "partial", "ingest:", "skipped"]
    assert store.get_bytes("actors/a/count/shards/0001.manifest.json") == shard1
    for s in (0, 2, 3):
        assert main(["stage", "count", "--actor", "a", "--store", store.uri, "--shard", str(s)]) == 0
    assert store.get_json("actors/a/count/manifest.json")["stats"]["frames"] == 20
