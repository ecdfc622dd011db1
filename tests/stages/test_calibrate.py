"""Stage calibrate on synthetic upstream outputs (stand-in model, exact landmarks), tiny preset."""

import json

import numpy as np
import pytest

from stages.config import PipelineConfig
from stages.errors import BadInput
from stages.face.flame import FLAME
from stages.runner.run import run_stage
from stages.store.local import LocalStore
from stages.tracking.calibration import Calibration
from tracking.synthetic import landmarks478, make_clip, publish_upstream, standin


@pytest.fixture(scope="module")
def actor_store(tmp_path_factory):
    model = FLAME(standin())
    clip = make_clip(model, 24, seed=3)
    store = LocalStore(tmp_path_factory.mktemp("store"))
    publish_upstream(store, "syn", landmarks478(clip, model.mp_index.numpy()), shard_size=12, fail=(5,))
    return store, clip


def test_calibrate_writes_calibration_and_report(actor_store):
    store, clip = actor_store
    res = run_stage("calibrate", "syn", store, pipeline=PipelineConfig(preset="tiny"), device="cpu")
    assert res.status == "ran"
    path = store.root / "actors/syn/calibrate/calibration.npz"
    calib = Calibration.load(path)
    assert calib.shape.shape == (300,) and np.isfinite(calib.shape).all()
    assert calib.model_name == standin().name and len(calib.keyframes) == 4
    assert 5 + 1 not in calib.keyframes.tolist()  # the failed frame is never a keyframe
    assert np.median(calib.error_px) < 2.0
    true_f = clip.params["K"][0, 0, 0]
    assert abs(calib.focal[0] / true_f - 1) < 0.5  # tiny preset: rough focal only
    report = json.loads((store.root / "actors/syn/calibrate/report.json").read_text())
    assert report["keyframes"] == calib.keyframes.tolist() and report["frames_with_landmarks"] == 23
    # a rerun with the same inputs is skipped (manifest matches)
    assert run_stage("calibrate", "syn", store, pipeline=PipelineConfig(preset="tiny"), device="cpu").status == "skipped"


def test_calibrate_refuses_a_video_without_faces(tmp_path):
    store = LocalStore(tmp_path / "store")
    publish_upstream(store, "noface", np.zeros((6, 478, 2), np.float32), shard_size=6, fail=tuple(range(6)))
    with pytest.raises(BadInput, match="no frame has a detected face"):
        run_stage("calibrate", "noface", store, pipeline=PipelineConfig(preset="tiny"), device="cpu")


def test_calibrate_default_solver_is_levenberg_marquardt(tmp_path):
    """The full preset's route (``solver="lm"``): the report says so, with the solve's iterations
    and falling objective, and the calibration reprojects (exact landmarks) with the focal length
    kept near the (here true) starting value."""
    model = FLAME(standin())
    clip = make_clip(model, 24, seed=3)
    store = LocalStore(tmp_path / "store")
    publish_upstream(store, "lm", landmarks478(clip, model.mp_index.numpy()), shard_size=12)
    cfg = PipelineConfig(preset="full", stages={"calibrate": {"keyframes": 6, "appearance_steps": 0}})
    assert run_stage("calibrate", "lm", store, pipeline=cfg, device="cpu").status == "ran"
    report = json.loads((store.root / "actors/lm/calibrate/report.json").read_text())
    assert report["solver"] == "lm" and report["steps"] == 0 and report["refine"] == {}
    assert 1 <= report["lm"]["iterations"] <= 40 and report["lm"]["loss_after"] < 0.01 * report["lm"]["loss_before"]
    calib = Calibration.load(store.root / "actors/lm/calibrate/calibration.npz")
    assert np.median(calib.error_px) < 0.5 and len(calib.keyframes) == 6
    assert abs(calib.focal[0] / clip.params["K"][0, 0, 0] - 1) < 0.05
    assert report["parts_seconds"]["lm"] > 0
