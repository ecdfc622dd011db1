"""Shard-level overlap with the real ingest, landmarks and masks stages on a generated clip of five
shards: landmarks and masks start on the shards ingest has published, the outputs equal a run one
stage after another, a crash in the middle resumes shard by shard (never trusting an interrupted
run's records), and an upstream failure stops the waiting stages instead of leaving them hanging.

Where a test needs the stages to interleave in a given order, ingest's publication of a shard
(``_Plan.publish_record``, in the run's own process) is held until a downstream shard has finished:
were the downstream stage not running beside ingest, the hold would time out and the test fail."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from stages.errors import BadInput, Transient
from stages.runner import run as runner_run
from stages.runner.feed import READ, read_name
from stages.store.local import LocalStore

STAGES3 = ("ingest", "landmarks", "masks")
OVERRIDES = {"ingest": {"shard_size": 8, "fixed_crop": [0, 0, 192]}}  # 40 frames: 5 shards, no face detection
HOLD_S = 60.0


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    from stages.face.model import load_face_model
    from stages.face.synth import SynthSpec, generate_params, render_video

    path = tmp_path_factory.mktemp("clip") / "talking.mp4"
    model = load_face_model(None)
    spec = SynthSpec(n_frames=40, size=192, seed=3)
    render_video(model, generate_params(model, spec), path, spec=spec, batch=16)
    return path


def _run(store, clip, *, shard_overlap: bool, jobs: int = 1, overrides=None):
    from stages.runner.pipeline import prepare_actor, run_pipeline

    pipeline = prepare_actor(store, "s", clip, None, "tiny", overrides or OVERRIDES)
    return {r.stage: r for r in run_pipeline(store, "s", pipeline, device="cpu", jobs=jobs, until="masks",
                                             shard_overlap=shard_overlap)}


@pytest.fixture(scope="module")
def sequential(clip, tmp_path_factory) -> LocalStore:
    """The reference: the same stages one after another (no overlap)."""
    st = LocalStore(tmp_path_factory.mktemp("seq") / "store")
    results = _run(st, clip, shard_overlap=False)
    spans = sorted((r.started, r.ended) for r in results.values())
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:])), spans
    return st


def _outputs(store, stage: str) -> dict[str, str]:
    return store.get_json(f"actors/s/{stage}/manifest.json")["outputs"]


def _kept(store, stage: str) -> set[int]:
    return {int(Path(k).name.split(".")[0]) for k in store.list(f"actors/s/{stage}/shards/")
            if k.endswith(".manifest.json")}


def _hold_publication(monkeypatch, store, holds: dict[int, str], then_raise: BaseException | None = None):
    """Hold ingest's publication of shard ``i`` until ``holds[i]`` (a store key) exists; after the
    last hold, raise ``then_raise`` instead of publishing (a crash in the middle of ingest)."""
    original = runner_run._Plan.publish_record
    seen: list[int] = []

    def publish_record(self, index, outputs):
        if index in holds:
            deadline = time.monotonic() + HOLD_S
            while not store.exists(holds[index]):
                if time.monotonic() > deadline:
                    raise AssertionError(f"{holds[index]} never appeared while ingest was still running")
                time.sleep(0.02)
            seen.append(index)
            if then_raise is not None and index == max(holds):
                raise then_raise
        original(self, index, outputs)

    monkeypatch.setattr(runner_run._Plan, "publish_record", publish_record)
    return seen


def test_landmarks_and_masks_work_on_published_shards_and_write_what_a_sequential_run_writes(
        clip, sequential, tmp_path, monkeypatch):
    st = LocalStore(tmp_path / "store")
    # ingest may publish shard 2 only once landmarks has finished shard 0, and shard 3 once masks
    # has finished shard 0: both must run beside ingest
    seen = _hold_publication(monkeypatch, st, {2: "actors/s/landmarks/shards/0000.manifest.json",
                                               3: "actors/s/masks/shards/0000.manifest.json"})
    results = _run(st, clip, shard_overlap=True)
    assert seen == [2, 3]
    assert [results[n].status for n in STAGES3] == ["ran"] * 3
    ingest, landmarks, masks = (results[n] for n in STAGES3)
    # the timeline shows it: landmarks and masks start with ingest, not after it
    assert landmarks.started < ingest.ended and masks.started < landmarks.ended, results
    assert sum(r.seconds for r in results.values()) > masks.ended + 0.5
    ingest_done = st.local_path("actors/s/ingest/manifest.json").stat().st_mtime
    for stage in ("landmarks", "masks"):
        assert st.local_path(f"actors/s/{stage}/shards/0000.manifest.json").stat().st_mtime < ingest_done

    # the same bytes as one stage after another, and the same stage manifests' inputs
    for stage in STAGES3:
        assert _outputs(st, stage) == _outputs(sequential, stage), stage
        assert st.get_json(f"actors/s/{stage}/manifest.json")["inputs"] == \
            sequential.get_json(f"actors/s/{stage}/manifest.json")["inputs"], stage
    # a shard manifest records the upstream files it read, with the digests ingest finished with
    ingest_out = _outputs(st, "ingest")
    shard = st.get_json("actors/s/masks/shards/0003.manifest.json")
    tar = "actors/s/ingest/frames/0003.tar"
    assert shard["inputs"][read_name("ingest", tar)] == ingest_out[tar]
    npz = "actors/s/landmarks/0003.npz"
    assert shard["inputs"][read_name("landmarks", npz)] == _outputs(st, "landmarks")[npz]
    assert all(k.startswith(READ) for k in shard["inputs"])  # masks has no own inputs (no assets chosen)
    # ingest's shard records are not among its outputs; a rerun skips every stage
    assert not any("/shards/" in k for k in ingest_out)
    assert {r.status for r in _run(st, clip, shard_overlap=True).values()} == {"skipped"}


def test_a_crash_in_the_middle_resumes_shard_by_shard_and_ignores_the_crashed_runs_records(
        clip, sequential, tmp_path, monkeypatch):
    st = LocalStore(tmp_path / "store")
    _hold_publication(monkeypatch, st, {2: "actors/s/landmarks/shards/0001.manifest.json",
                                        3: "actors/s/masks/shards/0001.manifest.json"},
                      then_raise=Transient("simulated crash of ingest"))
    t0 = time.monotonic()
    with pytest.raises(Transient, match="simulated crash"):
        _run(st, clip, shard_overlap=True)
    assert time.monotonic() - t0 < 60, "the waiting stages did not stop"
    for stage in STAGES3:
        assert not st.exists(f"actors/s/{stage}/manifest.json"), stage
    kept_lm, kept_masks = _kept(st, "landmarks"), _kept(st, "masks")
    assert {0, 1} <= kept_lm and kept_lm < set(range(5)), kept_lm  # shards 3, 4 were never published
    assert {0, 1} <= kept_masks and kept_masks < set(range(5)), kept_masks
    assert not st.list(".locks/"), "the run's lock outlived it"

    # the crashed run's ingest records stay behind; one of them now lies about its tar. A rerun
    # must wait for its own ingest's records, not trust these (else: a digest mismatch)
    rec_key = "actors/s/ingest/shards/0000.manifest.json"
    rec = st.get_json(rec_key)
    rec["outputs"]["actors/s/ingest/frames/0000.tar"] = "0" * 64
    st.put_json(rec_key, rec)

    monkeypatch.undo()
    results = _run(st, clip, shard_overlap=True)
    assert results["ingest"].status == "ran"
    assert set(results["landmarks"].shards_run) == set(range(5)) - kept_lm, "kept landmarks shards were redone"
    assert set(results["masks"].shards_run) == set(range(5)) - kept_masks, "kept masks shards were redone"
    for stage in STAGES3:
        assert _outputs(st, stage) == _outputs(sequential, stage), stage


def test_a_half_done_shard_is_redone_and_a_changed_upstream_file_redoes_only_its_shard(clip, sequential, tmp_path):
    """Shard-level digests: a landmarks shard whose output exists without its manifest (killed
    between the two) is redone; a masks shard manifest whose recorded ingest tar digest no longer
    matches is redone, the others kept."""
    st = LocalStore(tmp_path / "store")
    _run(st, clip, shard_overlap=True)
    for stage in ("landmarks", "masks"):  # as if the stages were stopped before their finish
        st.delete(f"actors/s/{stage}/manifest.json")
    st.delete("actors/s/landmarks/shards/0002.manifest.json")  # 0002.npz is there, unvouched
    m = st.get_json("actors/s/masks/shards/0004.manifest.json")
    m["inputs"][read_name("ingest", "actors/s/ingest/frames/0004.tar")] = "f" * 64
    st.put_json("actors/s/masks/shards/0004.manifest.json", m)
    results = _run(st, clip, shard_overlap=True)
    assert results["ingest"].status == "skipped"
    assert results["landmarks"].shards_run == (2,)
    # masks 2 read landmarks 0002.npz: rewritten with the same bytes, so it is kept; 4 is redone
    assert results["masks"].shards_run == (4,)
    for stage in STAGES3:
        assert _outputs(st, stage) == _outputs(sequential, stage), stage


def test_an_upstream_failure_stops_the_stages_waiting_in_worker_processes(clip, tmp_path, monkeypatch):
    """jobs 2: landmarks and masks wait for later shards in their worker processes when ingest
    fails; the run raises ingest's error (exit class kept) promptly and leaves no stage manifest."""
    st = LocalStore(tmp_path / "store")
    _hold_publication(monkeypatch, st, {2: "actors/s/landmarks/shards/0001.manifest.json"},
                      then_raise=BadInput("ingest told to fail at shard 2"))
    t0 = time.monotonic()
    with pytest.raises(BadInput, match="told to fail"):
        _run(st, clip, shard_overlap=True, jobs=2)
    assert time.monotonic() - t0 < 90
    assert not any(st.exists(f"actors/s/{n}/manifest.json") for n in STAGES3)
    assert {0, 1} <= _kept(st, "landmarks") and 4 not in _kept(st, "landmarks")


def test_an_ingest_that_fails_before_publishing_anything_stops_the_others(clip, tmp_path):
    st = LocalStore(tmp_path / "store")
    bad = {"ingest": {**OVERRIDES["ingest"], "pad": "bogus"}}
    t0 = time.monotonic()
    with pytest.raises(BadInput, match="pad 'bogus' is unknown"):
        _run(st, clip, shard_overlap=True, overrides=bad)
    assert time.monotonic() - t0 < 30
    assert not st.list("actors/s/landmarks/") and not st.list("actors/s/masks/")


# -- the trust rule, on records alone -------------------------------------------------------------

def test_a_feed_trusts_only_this_runs_ingest_records_and_fan_out_records_whose_reads_hold(tmp_path):
    from stages.config import PipelineConfig, digest_of
    from stages.graph import BY_NAME
    from stages.runner.feed import PENDING, Feed, reads_match
    from stages.runner.manifest import Manifest

    st = LocalStore(tmp_path / "store")
    video = st.put_bytes("actors/a/input/video.mp4", b"a video")
    cfg = PipelineConfig(preset="tiny")
    tar = "actors/a/ingest/frames/0000.tar"

    def record(stage, inputs, outputs, stats=None):
        st.put_json(f"actors/a/{stage}/shards/0000.manifest.json", Manifest(
            stage, "a", inputs, digest_of(cfg.stage_config(BY_NAME[stage])), {}, outputs, 0,
            stats=stats or {}).to_dict())

    record("ingest", {"video": video}, {tar: "1" * 64}, {"run": "earlier"})
    pending = frozenset({"ingest", "landmarks"})
    assert Feed(st, "a", cfg, pending, "now").current("ingest", tar) == PENDING  # an earlier run's record
    assert Feed(st, "a", cfg, frozenset(), "earlier").current("ingest", tar) == PENDING  # ingest not pending
    assert Feed(st, "a", cfg, pending, "earlier").current("ingest", tar) == "1" * 64

    npz = "actors/a/landmarks/0000.npz"
    record("landmarks", {read_name("ingest", tar): "2" * 64}, {npz: "3" * 64})  # read another tar
    assert Feed(st, "a", cfg, pending, "earlier").current("landmarks", npz) == PENDING
    record("landmarks", {read_name("ingest", tar): "1" * 64}, {npz: "3" * 64})
    assert Feed(st, "a", cfg, pending, "earlier").current("landmarks", npz) == "3" * 64
    # once a stage's manifest exists it alone counts
    st.put_json("actors/a/ingest/manifest.json", Manifest("ingest", "a", {"video": video}, "c", {},
                                                          {tar: "4" * 64}).to_dict())
    assert Feed(st, "a", cfg, pending, "earlier").current("ingest", tar) == "4" * 64
    assert Feed(st, "a", cfg, pending, "earlier").current("ingest", "actors/a/ingest/nothing") is None
    assert Feed(st, "a", cfg, pending, "earlier").current("landmarks", npz) == PENDING  # its read changed
    # the match rule: own inputs equal, every read still holds; the old (stage digest) form never matches here
    look = {("ingest", tar): "4" * 64}.get
    assert reads_match({read_name("ingest", tar): "4" * 64}, {}, lambda s, k: look((s, k)))
    assert not reads_match({read_name("ingest", tar): "4" * 64}, {"asset:flame": "x"}, lambda s, k: look((s, k)))
    assert not reads_match({"ingest": "stage digest"}, {}, lambda s, k: look((s, k)))


def test_on_the_s3_store(clip, sequential, s3_env, monkeypatch):
    """The same on the real S3 server: records listed and read there, the lease lock re-entered by
    the stage threads. (In-process shards: worker processes fork from the run's forkserver, whose
    environment an earlier test of this session may have fixed before the S3 settings were set.)"""
    from stages.store.uri import open_store

    st = open_store(f"s3://{s3_env['bucket']}/prefix")
    seen = _hold_publication(monkeypatch, st, {2: "actors/s/landmarks/shards/0000.manifest.json"})
    results = _run(st, clip, shard_overlap=True)
    assert seen == [2] and results["landmarks"].started < results["ingest"].ended
    for stage in STAGES3:
        assert _outputs(st, stage) == _outputs(sequential, stage), stage
    assert not st.list(".locks/")
