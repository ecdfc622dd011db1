"""The train stage through the runner, on a synthetic dataset published as the assemble stage's output."""

from __future__ import annotations

import json

import pytest
import torch

from stages.config import PipelineConfig
from stages.errors import BadInput
from stages.gauss import checkpoint as ckpt
from stages.gauss.synthetic import publish_as_assemble, write_synthetic_dataset
from stages.runner.context import actor_key
from stages.runner.run import run_stage
from stages.store.uri import open_store

SMALL = {"steps": 12, "batch_size": 2, "resolution": 32, "uv_resolution": 16, "checkpoint_every": 4,
         "mlp_width": 32, "log_every": 4}




@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_synthetic_dataset(tmp_path_factory.mktemp("ds") / "actor", 12, image_size=48, n_gaussians=2000)


def test_train_stage_writes_avatar_and_report(tmp_path, dataset, one_thread):
    store = open_store(str(tmp_path / "store"))
    publish_as_assemble(store, "a", dataset)
    pipeline = PipelineConfig(preset="tiny", stages={"train": SMALL})
    result = run_stage("train", "a", store, pipeline=pipeline, device="cpu")
    assert result.status == "ran" and result.frames == 24  # 12 steps x 2 images
    manifest = store.get_json(actor_key("a", "train", "manifest.json"))
    outs = set(manifest["outputs"])
    for rel in ("avatar.pt", "checkpoint.pt", "train_report.json"):
        assert actor_key("a", "avatar", rel) in outs
    report = json.loads(store.get_bytes(actor_key("a", "avatar", "train_report.json")))
    assert report["steps"] == 12 and report["images_per_s"] > 0 and report["renderer"] == "reference"
    assert report["gaussians"] > 50  # UV texels of the stand-in face model
    # the fixed cost, phase by phase: the stage's inputs, train()'s set-up, the first step
    setup = report["setup"]
    assert {"fetch_dataset", "face_model"} <= set(setup["wall_s"]) and set(setup["wall_s"]) == set(setup["cpu_s"])
    assert {"load", "build_avatar", "frame_cache", "first_step"} <= set(setup["wall_s"])
    assert all(v >= 0 for v in setup["wall_s"].values()) and setup["cpu_s"]["first_step"] > 0
    avatar = ckpt.load(store.local_path(actor_key("a", "avatar", "avatar.pt")), ckpt.AVATAR_FORMAT)
    assert avatar["steps"] == 12 and avatar["shape"].shape == (300,)
    # the in-progress checkpoint used for resuming is not an output but is in the store
    assert store.exists(actor_key("a", "train", "resume", "checkpoint.pt"))
    assert run_stage("train", "a", store, pipeline=pipeline, device="cpu").status == "skipped"


def test_train_stage_resumes_from_the_stored_checkpoint(tmp_path, dataset, one_thread):
    """A first attempt that died after its step-8 checkpoint (here: one that ran 8 steps; the step
    count does not enter the resume digest): the rerun continues from step 8."""
    from stages.face.model import load_face_model
    from stages.gauss.data import TrackedSequence
    from stages.dataset.layout import DatasetLayout
    from stages.gauss.surface import flame_surface
    from stages.gauss.trainer import TrainConfig, train
    from stages.train import PRESETS

    store = open_store(str(tmp_path / "store"))
    publish_as_assemble(store, "a", dataset)
    cfg = TrainConfig(**{**PRESETS["tiny"], **SMALL, "steps": 8})
    seq = TrackedSequence.load(DatasetLayout(dataset))
    surface = flame_surface(load_face_model(None), seq.shape)
    first = tmp_path / "first"
    train(cfg, surface, DatasetLayout(dataset), first, "cpu")
    store.put_file(actor_key("a", "train", "resume", "checkpoint.pt"), first / "checkpoint.pt")
    run_stage("train", "a", store, pipeline=PipelineConfig(preset="tiny", stages={"train": SMALL}), device="cpu")
    report = json.loads(store.get_bytes(actor_key("a", "avatar", "train_report.json")))
    assert report["resumed_from"] == 8 and report["steps_this_run"] == 4 and report["steps"] == 12


def test_train_stage_without_dataset_is_bad_input(tmp_path):
    store = open_store(str(tmp_path / "store"))
    with pytest.raises(BadInput, match="assemble"):
        run_stage("train", "nobody", store, pipeline=PipelineConfig(preset="tiny"), device="cpu")


def test_train_stage_leaves_out_frames_without_a_face(tmp_path, dataset, one_thread):
    """assemble's tracking.npz flags the first 4 frames as found without a face (landmarks failed):
    the train stage trains and holds out only frames 5..12 and its report says so."""
    import shutil

    import numpy as np

    root = tmp_path / "ds"
    shutil.copytree(dataset, root)
    filled = np.zeros(12, bool)
    filled[:4] = True
    np.savez(root / "tracking.npz", filled=filled)
    store = open_store(str(tmp_path / "store"))
    publish_as_assemble(store, "a", root)
    pipeline = PipelineConfig(preset="tiny", stages={"train": {**SMALL, "steps": 2}})
    assert run_stage("train", "a", store, pipeline=pipeline, device="cpu").status == "ran"
    report = json.loads(store.get_bytes(actor_key("a", "avatar", "train_report.json")))
    held = report["held_out"]
    assert (held["first"], held["last"], held["frames"], held["train_frames"]) == (11, 11, 1, 7)
    assert "the first 4 frames show no face" in held["rule"]
