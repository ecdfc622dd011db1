"""FLAME texture space: the file convention (0..255, BGR, row 0 = v = 1), the module's forward,
UV look-ups against a plain-torch oracle, the colour fit, and refusal of wrong files."""

import numpy as np
import pytest
import torch

from stages.errors import BadInput
from stages.face.texture import (FlameTexture, pixel_uv, read_flame_texture, sample_uv, sample_uv_reference,
                                 standin_texture_space, write_flame_texture)


@pytest.fixture(scope="module")
def space():
    mean, basis = standin_texture_space(size=64, n_components=140, seed=1)
    return mean, basis


def test_file_convention_round_trip(space, tmp_path):
    mean, basis = space
    vt = np.array([[0.1, 0.2], [0.9, 0.2], [0.5, 0.8]])
    ft = np.array([[0, 1, 2]])
    path = write_flame_texture(tmp_path / "FLAME_texture.npz", mean, basis, vt, ft)
    with np.load(path) as z:  # FLAME's convention on disk: 0..255 units, BGR
        np.testing.assert_allclose(z["mean"][..., 0], mean[..., 2] * 255, rtol=1e-6)
        np.testing.assert_allclose(z["tex_dir"][:, :, 2, 7], basis[:, :, 0, 7] * 255, rtol=1e-6)
    data = read_flame_texture(path, n_components=140, size=None)
    assert data.value_scale == 255.0 and data.source_size == (64, 64)
    np.testing.assert_allclose(data.mean, mean, atol=1e-6)
    np.testing.assert_allclose(data.basis, basis, atol=1e-6)
    np.testing.assert_array_equal(data.ft, ft)
    np.testing.assert_allclose(data.vt, vt, atol=1e-7)
    # fewer components on request; resampled (area) maps are block means
    small = read_flame_texture(path, n_components=20, size=32)
    assert small.basis.shape == (32, 32, 3, 20)
    np.testing.assert_allclose(small.mean, mean.reshape(32, 2, 32, 2, 3).mean((1, 3)), atol=1e-6)
    np.testing.assert_allclose(small.basis[..., 5], basis[..., 5].reshape(32, 2, 32, 2, 3).mean((1, 3)), atol=1e-6)


def test_forward_is_mean_plus_basis(space, tmp_path):
    mean, basis = space
    path = write_flame_texture(tmp_path / "t.npz", mean, basis)
    tex = FlameTexture.from_file(path, size=None)
    assert tex.n_components == 140 and tex.size == 64 and not tex.has_uv
    c = torch.randn(2, 140)
    out = tex(c)
    assert out.shape == (2, 3, 64, 64)
    expect = mean[None] + np.einsum("hwck,bk->bhwc", basis, c.numpy())
    np.testing.assert_allclose(out.permute(0, 2, 3, 1).numpy(), expect, atol=1e-5)
    # the model's UV layout is used where the file has none
    with_uv = FlameTexture.from_file(path, size=None, vt=np.zeros((3, 2)), ft=np.array([[0, 1, 2]]))
    assert with_uv.has_uv and with_uv.ft.dtype == torch.int64


def test_sample_uv_matches_reference_and_orientation():
    g = torch.Generator().manual_seed(0)
    maps = torch.rand(3, 4, 16, 16, generator=g, dtype=torch.float64)
    uv = torch.rand(3, 5, 7, 2, generator=g, dtype=torch.float64) * 1.2 - 0.1  # some outside: border clamp
    torch.testing.assert_close(sample_uv(maps, uv), sample_uv_reference(maps, uv))
    one = maps[:1]
    torch.testing.assert_close(sample_uv(one, uv), sample_uv_reference(one, uv))
    # texel (row 0, column 0) sits at u = 0.5/W, v = 1 - 0.5/H (row 0 is v = 1)
    got = sample_uv(maps[:1], torch.tensor([[[[0.5 / 16, 1 - 0.5 / 16]]]], dtype=torch.float64))
    torch.testing.assert_close(got[0, 0, 0], maps[0, :, 0, 0])
    got = sample_uv(maps[:1], torch.tensor([[[[1 - 0.5 / 16, 0.5 / 16]]]], dtype=torch.float64))
    torch.testing.assert_close(got[0, 0, 0], maps[0, :, 15, 15])


def test_pixel_uv_interpolates_uv_corners():
    from stages.face.raster import rasterize

    verts = torch.tensor([[[2.0, 2.0, 1.0], [14.0, 2.0, 1.0], [2.0, 14.0, 1.0]]])
    faces = torch.tensor([[0, 2, 1]])  # counter-clockwise seen from the camera
    vt = torch.tensor([[0.0, 0.0], [0.5, 0.5], [1.0, 0.0], [0.3, 0.9]])
    ft = torch.tensor([[1, 3, 2]])  # UV corners differ from vertex indices
    frags = rasterize(verts, faces, 16, 16, backend="reference")
    uv = pixel_uv(frags, vt, ft)
    i, j = 4, 5  # pixel centre (5.5, 4.5)
    b = frags.bary[0, i, j]
    assert frags.face_idx[0, i, j] == 0
    torch.testing.assert_close(uv[0, i, j], b[0] * vt[1] + b[1] * vt[3] + b[2] * vt[2])
    assert (uv[0][frags.face_idx[0] < 0] == 0).all()


def test_fit_colours_recovers_coefficients(space, tmp_path):
    mean, basis = space
    tex = FlameTexture.from_file(write_flame_texture(tmp_path / "t.npz", mean, basis), size=None)
    true = torch.randn(140, generator=torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(4)
    uv = torch.rand(6000, 2, generator=g)
    colours = sample_uv(tex(true[None]), uv.view(1, -1, 1, 2))[0, :, 0]
    got = tex.fit_colours(uv, colours, torch.ones(6000), ridge=1e-6)
    torch.testing.assert_close(got, true, atol=2e-2, rtol=0)


@pytest.mark.parametrize("case", ["missing", "shape", "nan", "ft", "garbage"])
def test_wrong_files_are_refused(case, tmp_path, space):
    mean, basis = space
    path = tmp_path / "FLAME_texture.npz"
    if case == "missing":
        np.savez(path, mean=mean)
    elif case == "shape":
        np.savez(path, mean=mean, tex_dir=basis[:32])
    elif case == "nan":
        bad = basis.copy()
        bad[0, 0, 0, 0] = np.nan
        write_flame_texture(path, mean, bad)
    elif case == "ft":
        write_flame_texture(path, mean, basis, np.zeros((3, 2)), np.array([[0, 1, 3]]))
    else:
        path.write_bytes(b"not a zip file")
    with pytest.raises(BadInput) as err:
        FlameTexture.from_file(path)
    assert err.value.exit_code == 2
    assert str(path) in str(err.value) and "FLAME_texture.npz" in str(err.value)
