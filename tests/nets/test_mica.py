"""MICA written to load mica.tar: the full iresnet100 + mapping network structure has the published
key names and shapes (checked on the meta device, no memory); a stand-in mica.tar with those keys
(reduced-depth ArcFace for speed where marked) loads strictly and predicts 300 coefficients; wrong
or truncated files are refused in one line; the mica asset computes the identity in calibrate."""

import numpy as np
import pytest
import torch

from stages.errors import BadInput
from stages.nets.mica import FLAME_BUFFERS, MICA, load_mica, normalise
from stages.tracking.mica_stage import mica_shapes


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Single-threaded torch (the shared CPU machine; see tests/conftest.py)."""


def test_full_structure_has_the_published_keys_and_shapes():
    with torch.device("meta"):
        m = MICA()
    arc = m.arcface.state_dict()
    # iresnet100: 3 + 13 + 30 + 3 = 49 blocks of 2 convs, 3 BNs and a PReLU; 4 downsamples (conv + BN);
    # stem conv, BN, PReLU; bn2, fc (weight, bias) and the 1-d BN "features"; 5 tensors a BN
    n_bn = 49 * 3 + 4 + 1 + 1 + 1
    assert len(arc) == 49 * 3 + 4 + 1 + 1 + 2 + n_bn * 5
    assert sum(v.numel() for k, v in arc.items() if not k.endswith("num_batches_tracked")) > 65_000_000
    shapes = {"conv1.weight": (64, 3, 3, 3), "prelu.weight": (64,), "layer1.0.bn1.weight": (64,),
              "layer1.0.conv2.weight": (64, 64, 3, 3), "layer1.0.downsample.0.weight": (64, 64, 1, 1),
              "layer2.12.conv1.weight": (128, 128, 3, 3), "layer3.29.prelu.weight": (256,),
              "layer4.0.downsample.1.running_var": (512,), "fc.weight": (512, 25088),
              "features.running_mean": (512,)}
    for k, s in shapes.items():
        assert tuple(arc[k].shape) == s, k
    assert "layer2.13.conv1.weight" not in arc and "layer3.30.conv1.weight" not in arc
    fm = m.flameModel.state_dict()
    assert tuple(fm["regressor.network.0.weight"].shape) == (300, 512)
    assert tuple(fm["regressor.network.3.weight"].shape) == (300, 300)
    assert tuple(fm["regressor.output.weight"].shape) == (300, 300) and "regressor.network.4.weight" not in fm
    assert {k.split(".", 1)[1] for k in fm if k.startswith("generator.")} == set(FLAME_BUFFERS)


def _standin_tar(path, layers, seed=0):
    torch.manual_seed(seed)
    m = MICA(layers)
    torch.save({"arcface": m.arcface.state_dict(), "flameModel": m.flameModel.state_dict(), "opt": {}}, path)
    return m.eval()


@pytest.mark.slow
def test_full_size_standin_loads_strictly_and_runs(tmp_path):
    """The real size (65M ArcFace parameters, about 0.3 GB): strict load and one forward pass."""
    ref = _standin_tar(tmp_path / "mica.tar", (3, 13, 30, 3))
    m = load_mica(tmp_path / "mica.tar")
    x = torch.randn(1, 3, 112, 112)
    with torch.no_grad():
        torch.testing.assert_close(m(x), ref(x))


def test_small_standin_loads_and_predicts_identity(tmp_path):
    layers = (1, 1, 1, 1)
    ref = _standin_tar(tmp_path / "mica.tar", layers)
    m = load_mica(tmp_path / "mica.tar", layers)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 256, 256, 3), dtype=np.uint8)
    points = rng.uniform(60, 200, (3, 478, 2))
    shapes = mica_shapes(m, images, points, torch.device("cpu"), batch=2)
    assert shapes.shape == (3, 300) and np.isfinite(shapes).all() and shapes.std(0).max() > 0
    from stages.tracking.arcface_align import align_faces, five_points

    with torch.no_grad():
        direct = ref(normalise(torch.as_tensor(align_faces(images, five_points(points))))).numpy()
    np.testing.assert_allclose(shapes, direct, atol=1e-5)
    with pytest.raises(BadInput, match=r"675 missing \(layer1\.1\.bn1\.weight"):  # the full depth refuses a shallow file
        load_mica(tmp_path / "mica.tar")


def test_wrong_and_truncated_files_are_refused_in_one_line(tmp_path):
    _standin_tar(tmp_path / "mica.tar", (1, 1, 1, 1))
    data = (tmp_path / "mica.tar").read_bytes()
    (tmp_path / "cut.tar").write_bytes(data[: len(data) // 3])
    with pytest.raises(BadInput, match=r"cut\.tar: not a readable PyTorch checkpoint") as e:
        load_mica(tmp_path / "cut.tar", (1, 1, 1, 1))
    assert "\n" not in str(e.value)
    torch.save({"arcface": {"conv1.weight": torch.zeros(64, 3, 3, 3)}}, tmp_path / "other.tar")
    with pytest.raises(BadInput, match=r"other\.tar: not MICA's checkpoint \(arcface\): \d+ missing") as e:
        load_mica(tmp_path / "other.tar", (1, 1, 1, 1))
    assert "\n" not in str(e.value)
    sd = torch.load(tmp_path / "mica.tar", weights_only=True)
    del sd["flameModel"]
    torch.save(sd, tmp_path / "noflame.tar")
    with pytest.raises(BadInput, match=r"has no 'flameModel' entry"):
        load_mica(tmp_path / "noflame.tar", (1, 1, 1, 1))


@pytest.mark.slow
def test_mica_asset_gives_calibrate_its_identity(tmp_path, one_thread):
    """calibrate with a full-size stand-in mica.tar on a synthetic actor: the report says MICA, the
    shape is finite and non-zero (about 15 s and 0.3 GB of disk on one core)."""
    from stages.assets import add_asset
    from stages.config import PipelineConfig
    from stages.face.flame import FLAME
    from stages.runner.run import run_stage
    from stages.store.local import LocalStore
    from stages.tracking.calibration import Calibration
    from tracking.synthetic import landmarks478, make_clip, publish_upstream, standin

    model = FLAME(standin())
    clip = make_clip(model, 8, seed=6)
    store = LocalStore(tmp_path / "store")
    publish_upstream(store, "syn", landmarks478(clip, model.mp_index.numpy()), shard_size=8)
    _standin_tar(tmp_path / "mica.tar", (3, 13, 30, 3))
    sha = add_asset(store, "mica", tmp_path / "mica.tar")["sha256"]
    cfg = PipelineConfig(preset="tiny", stages={"calibrate": {"identity_mode": "fixed"}}, assets={"mica": sha})
    assert run_stage("calibrate", "syn", store, pipeline=cfg, device="cpu").status == "ran"
    import json

    report = json.loads((store.root / "actors/syn/calibrate/report.json").read_text())
    assert report["identity"] == "mica"
    calib = Calibration.load(store.root / "actors/syn/calibrate/calibration.npz")
    assert calib.shape.shape == (300,) and np.isfinite(calib.shape).all() and np.abs(calib.shape).max() > 0


def test_run_refuses_mica_without_flame(tmp_path, capsys):
    from stages.cli import main

    (tmp_path / "mica.tar").write_bytes(b"x")
    (tmp_path / "v.mp4").write_bytes(b"x")
    assert main(["run", "--actor", "a", "--video", str(tmp_path / "v.mp4"), "--mica", str(tmp_path / "mica.tar"),
                 "--store", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.strip()
    assert "built-in stand-in face model" in err and len(err.splitlines()) == 1 and not (tmp_path / "s").exists()


def test_flame_buffers_are_what_mica_builds_from_its_files():
    """MICA's FLAME decoder registers, from FLAME 2020 (5023 vertices, 9976 faces, 400 directions,
    5 joints) and its data/FLAME2020/landmark_embedding.npy (static 51, dynamic 79x17, full 1x68):
    the faces, template, bases, the static set as lmk_*, the dynamic contour and full_* as they are,
    eye/neck pose parameters and the neck chain [1, 0]. Our stand-in's entries have those shapes."""
    facts = {"faces_tensor": (9976, 3), "v_template": (5023, 3), "shapedirs": (5023, 3, 300 + 100),
             "posedirs": (4 * 9, 5023 * 3), "J_regressor": (5, 5023), "parents": (5,), "lbs_weights": (5023, 5),
             "eye_pose": (1, 6), "neck_pose": (1, 3), "lmk_faces_idx": (51,), "lmk_bary_coords": (51, 3),
             "dynamic_lmk_faces_idx": (79, 17), "dynamic_lmk_bary_coords": (79, 17, 3),
             "full_lmk_faces_idx": (1, 68), "full_lmk_bary_coords": (1, 68, 3), "neck_kin_chain": (2,)}
    with torch.device("meta"):
        fm = MICA((1, 1, 1, 1)).flameModel.state_dict()
    got = {k.split(".", 1)[1]: tuple(v.shape) for k, v in fm.items() if k.startswith("generator.")}
    assert got == facts
    ints = {k for k, v in fm.items() if v.dtype == torch.int64}
    assert ints == {f"generator.{k}" for k in ("faces_tensor", "parents", "lmk_faces_idx", "dynamic_lmk_faces_idx",
                                               "full_lmk_faces_idx", "neck_kin_chain")}
