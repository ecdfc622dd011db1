"""A given identity (MICA's identity.npy): the asset check, calibrate around it (held fixed or as a
prior), the calibrate -> track -> assemble path carrying it into every .frame, and the one-line
refusals (wrong size, NaN, no FLAME model) of the stage and of ``avatar run``."""

import json

import numpy as np
import pytest
import torch

from stages.assets import add_asset
from stages.cli import main
from stages.config import PipelineConfig
from stages.dataset.frame_file import read_frame
from stages.dataset.layout import DatasetLayout
from stages.errors import BadInput
from stages.face.flame import FLAME
from stages.runner.run import run_stage
from stages.store.local import LocalStore
from stages.tracking.calibration import CalibrationInputs
from stages.tracking.identity import IdentityOffset, calibrate_with_identity, validate_identity
from stages.tracking.losses import LandmarkWeights
from stages.tracking.schedule import calibrate_schedule
from tracking.synthetic import landmarks478, make_clip, publish_upstream, standin


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Single-threaded torch (the shared CPU machine; see tests/conftest.py)."""


@pytest.fixture(scope="module")
def model():
    return FLAME(standin())


def test_offset_model_equals_model_at_identity_plus_offset(model):
    ident = torch.randn(300) * 0.5
    d = torch.randn(2, 300) * 0.1
    six = torch.tensor([[1.0, 0, 0, 0, 1, 0]]).repeat(2, 1)
    kw = dict(expression=torch.randn(2, 100) * 0.2, jaw=six, eyes=six.repeat(1, 2))
    a = IdentityOffset(model, ident)(shape=d, **kw).vertices
    b = model(shape=ident + d, **kw).vertices
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    assert IdentityOffset(model, ident).faces is model.faces  # attributes are the wrapped model's


def test_fixed_identity_is_kept_and_fits_the_landmarks(model):
    clip = make_clip(model, 16, seed=4)
    keys = np.arange(0, 16, 4)
    pw = LandmarkWeights().per_point()[model.mp_index]
    inputs = CalibrationInputs(torch.as_tensor(clip.landmarks[keys]), pw, keys + 1)
    truth = clip.params["shape"][0]
    sched = calibrate_schedule(40, 80, 0)
    fixed = calibrate_with_identity(model, inputs, truth, mode="fixed", schedule=sched)
    np.testing.assert_array_equal(fixed.shape, truth)
    assert np.median(fixed.error_px) < 1.5  # a short schedule: the point is the identity stays put
    # a prior lets the shape move away from a wrong identity (towards the landmarks)
    wrong = truth + np.random.default_rng(0).normal(size=300).astype(np.float32) * 0.3
    prior = calibrate_with_identity(model, inputs, wrong, mode="prior", prior=1e-7, schedule=sched,
                                    refine_iterations=0)
    held = calibrate_with_identity(model, inputs, wrong, mode="fixed", schedule=sched)
    assert not np.allclose(prior.shape, wrong)
    assert np.median(prior.error_px) < np.median(held.error_px)


def test_identity_file_check(tmp_path):
    good = tmp_path / "identity.npy"
    np.save(good, np.zeros((1, 300), np.float32))
    assert validate_identity(good) == {"coefficients": 300}
    nan = tmp_path / "nan.npy"
    np.save(nan, np.full(300, np.nan, np.float32))
    with pytest.raises(BadInput, match=r"nan\.npy: holds 300 NaN"):
        validate_identity(nan)
    ints = tmp_path / "ints.npy"
    np.save(ints, np.zeros(300, np.int64))
    with pytest.raises(BadInput, match="not floats"):
        validate_identity(ints)
    text = tmp_path / "text.npy"
    text.write_text("300 numbers")
    with pytest.raises(BadInput, match="not a NumPy .npy array"):
        validate_identity(text)


def _synthetic_actor(tmp_path, model, n=12):
    clip = make_clip(model, n, seed=6)
    store = LocalStore(tmp_path / "store")
    publish_upstream(store, "syn", landmarks478(clip, model.mp_index.numpy()), shard_size=6)
    return store, clip


def test_identity_reaches_every_frame(tmp_path, model):
    store, clip = _synthetic_actor(tmp_path, model)
    ident = clip.params["shape"][0].astype(np.float32)
    path = tmp_path / "identity.npy"
    np.save(path, ident[None])  # metrical-tracker's files come as [1, 300] too
    cfg = PipelineConfig(preset="tiny", stages={"calibrate": {"identity_mode": "fixed"}},
                         assets={"identity": add_asset(store, "identity", path)["sha256"]})
    for stage in ("calibrate", "track", "assemble"):
        assert run_stage(stage, "syn", store, pipeline=cfg, device="cpu").status == "ran"
    report = json.loads((store.root / "actors/syn/calibrate/report.json").read_text())
    assert report["identity"] == "identity.npy" and report["identity_mode"] == "fixed"
    layout = DatasetLayout(store.root / "actors/syn/dataset")
    frames = sorted(layout.checkpoint_dir.iterdir())
    assert len(frames) == 12
    for f in frames:
        np.testing.assert_array_equal(read_frame(f)["flame"]["shape"][0], ident)


@pytest.mark.parametrize("values, problem", [(np.zeros(100, np.float32), "100 shape coefficients, but the face "
                                                                         "model has 300"),
                                            (np.full(300, np.nan, np.float32), "NaN")])
def test_stage_refuses_a_wrong_identity(tmp_path, model, values, problem):
    store, _ = _synthetic_actor(tmp_path, model, n=6)
    path = tmp_path / "identity.npy"
    np.save(path, values)
    if np.isnan(values).any():  # the asset check already refuses it; store it by hand as a corrupted upload would
        with pytest.raises(BadInput, match="NaN"):
            add_asset(store, "identity", path)
        return
    cfg = PipelineConfig(preset="tiny", assets={"identity": add_asset(store, "identity", path)["sha256"]})
    with pytest.raises(BadInput, match=problem) as e:
        run_stage("calibrate", "syn", store, pipeline=cfg, device="cpu")
    assert "\n" not in str(e.value)
    assert not (store.root / "actors/syn/calibrate/calibration.npz").exists()


@pytest.mark.parametrize("values, flame, problem", [
    (np.zeros(300, np.float32), False, "built-in stand-in face model"),
    (np.zeros(299, np.float32), True, "299 shape coefficients, but the face model has 300"),
    (np.full((1, 300), np.inf, np.float32), True, "NaN or infinite")])
def test_run_refuses_a_wrong_identity_before_storing_anything(tmp_path, capsys, values, flame, problem):
    from stages.face.flame_file import write_fake_flame_pkl

    ident = tmp_path / "identity.npy"
    np.save(ident, values)
    video = tmp_path / "video.mp4"
    video.write_bytes(b"not looked at")
    args = ["run", "--actor", "a", "--video", str(video), "--identity", str(ident), "--store", str(tmp_path / "s"),
            "--device", "cpu"]
    if flame:
        args += ["--flame", str(write_fake_flame_pkl(tmp_path / "generic_model.pkl"))]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert problem in err and str(ident) in err and len(err.splitlines()) == 1
    assert not (tmp_path / "s").exists() or not any((tmp_path / "s").rglob("*.*"))
