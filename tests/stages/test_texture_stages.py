"""calibrate -> track -> assemble with a flame-texture asset (stand-in model, stand-in texture space
on its UV layout): the calibration holds tex, track uses the texture mode, every .frame carries it.
Without a usable texture the per-vertex mode runs as before; a broken texture file is refused."""

import json

import numpy as np
import pytest

from stages.assets import add_asset
from stages.config import PipelineConfig
from stages.dataset.frame_file import read_frame
from stages.dataset.layout import DatasetLayout
from stages.errors import BadInput
from stages.face.flame import FLAME
from stages.face.texture import standin_texture_space, write_flame_texture
from stages.runner.run import run_stage
from stages.store.local import LocalStore
from stages.tracking.calibration import Calibration
from tracking.synthetic import landmarks478, make_clip, publish_upstream, standin

STAGES = {"calibrate": {"appearance_steps": 25, "photo_size": 64, "texture_size": 32},
          "track": {"photometric_steps": 8, "photo_size": 64}}


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Single-threaded torch (the shared CPU machine; see tests/conftest.py)."""


def _store(tmp_path, seed=6):
    model = FLAME(standin())
    clip = make_clip(model, 12, seed=seed)
    store = LocalStore(tmp_path / "store")
    publish_upstream(store, "syn", landmarks478(clip, model.mp_index.numpy()), shard_size=6)
    return store


def _texture_asset(store, path, vt, ft, nan=False):
    mean, basis = standin_texture_space(size=64, n_components=140, seed=0)
    if nan:
        mean = mean.copy()
        mean[3, 3, 0] = np.nan
    write_flame_texture(path, mean, basis, vt, ft)
    return add_asset(store, "flame-texture", path)["sha256"]


def test_texture_mode_end_to_end(tmp_path):
    store = _store(tmp_path)
    data = standin()
    sha = _texture_asset(store, tmp_path / "FLAME_texture.npz", data.vt, data.ft)
    cfg = PipelineConfig(preset="tiny", stages=STAGES, assets={"flame-texture": sha})
    assert run_stage("calibrate", "syn", store, pipeline=cfg, device="cpu").status == "ran"
    calib = Calibration.load(store.root / "actors/syn/calibrate/calibration.npz")
    assert calib.appearance_mode == "texture" and calib.albedo is None
    assert calib.tex.shape == (140,) and np.abs(calib.tex).max() > 0.05
    assert calib.tex_map.shape == (32, 32, 3)
    report = json.loads((store.root / "actors/syn/calibrate/report.json").read_text())
    assert report["appearance"] == "texture" and "appearance_note" not in report
    for stage in ("track", "assemble"):
        assert run_stage(stage, "syn", store, pipeline=cfg, device="cpu").status == "ran"
    shard_manifests = sorted((store.root / "actors/syn/track/shards").glob("*.manifest.json"))
    assert len(shard_manifests) == 2
    for path in shard_manifests:
        assert json.loads(path.read_text())["stats"]["appearance"] == "texture"
    layout = DatasetLayout(store.root / "actors/syn/dataset")
    for i in (0, 11):
        f = read_frame(layout.frame_path(i))
        assert f["flame"]["tex"].shape == (1, 140)
        np.testing.assert_array_equal(f["flame"]["tex"][0], calib.tex.astype(np.float32))
        np.testing.assert_array_equal(f["flame"]["sh"][0], calib.sh)


def test_without_a_usable_texture_the_vertex_mode_runs(tmp_path):
    store = _store(tmp_path, seed=7)
    # a texture whose UV layout belongs to another mesh (3 triangles): refused for texture mode, noted
    sha = _texture_asset(store, tmp_path / "other.npz", np.array([[0, 0], [1, 0], [0, 1.0]]), np.array([[0, 1, 2]] * 3))
    cfg = PipelineConfig(preset="tiny", stages=STAGES, assets={"flame-texture": sha})
    run_stage("calibrate", "syn", store, pipeline=cfg, device="cpu")
    calib = Calibration.load(store.root / "actors/syn/calibrate/calibration.npz")
    assert calib.appearance_mode == "vertex" and calib.tex is None and calib.albedo.shape == (standin().n_vertices, 3)
    report = json.loads((store.root / "actors/syn/calibrate/report.json").read_text())
    assert report["appearance"] == "vertex" and "3 triangles" in report["appearance_note"]
    run_stage("track", "syn", store, pipeline=cfg, device="cpu")
    run_stage("assemble", "syn", store, pipeline=cfg, device="cpu")
    f = read_frame(DatasetLayout(store.root / "actors/syn/dataset").frame_path(0))
    assert not f["flame"]["tex"].any()


def test_broken_texture_file_is_refused(tmp_path):
    store = _store(tmp_path, seed=8)
    data = standin()
    sha = _texture_asset(store, tmp_path / "FLAME_texture.npz", data.vt, data.ft, nan=True)  # headers are fine
    cfg = PipelineConfig(preset="tiny", stages=STAGES, assets={"flame-texture": sha})
    with pytest.raises(BadInput, match="non-finite") as err:
        run_stage("calibrate", "syn", store, pipeline=cfg, device="cpu")
    assert err.value.exit_code == 2 and "FLAME_texture.npz" in str(err.value)
