"""The photometric term in FLAME texture space: equal to the per-vertex path where both describe the
same albedo, a pixel checked by hand (plain torch), and texture coefficients recovered from images
rendered with them (stand-in model and a stand-in FLAME_texture.npz with the model's UV layout)."""

import copy

import numpy as np
import pytest
import torch

from stages.face.flame import FLAME
from stages.face.rotation import matrix_to_rotation_6d
from stages.face.texture import (FlameTexture, sample_uv, sample_uv_reference, standin_texture_space,
                                 write_flame_texture)
from stages.tracking import fit as fitting
from stages.tracking.calibration import Calibration, CalibrationInputs, calibrate, personalised
from stages.tracking.face_assets import face_region
from stages.tracking.losses import LandmarkWeights
from stages.tracking.params import FrameParams
from stages.tracking.photometric import Photometric, UVAlbedo, ambient_sh, sh_basis, vertex_normals
from stages.tracking.schedule import Level, Schedule, calibrate_schedule
from tracking.synthetic import make_clip, standin

S = 112  # the term's resolution in these tests
N = 4  # frames


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Single-threaded torch (the shared CPU machine; see tests/conftest.py)."""


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    torch.manual_seed(0)
    data = standin()
    model = FLAME(data)
    clip = make_clip(model, 40, seed=4)
    rows = np.array([0, 13, 26, 39])  # a spread of head poses
    pm = personalised(model, torch.as_tensor(clip.params["shape"][0]))
    R = torch.as_tensor(clip.params["R"][rows])
    cp = {k: torch.as_tensor(v[rows]) for k, v in clip.params.items() if k in ("expression", "jaw", "eyes", "eyelids")}
    p = FrameParams(exp=cp["expression"], jaw=cp["jaw"], eyes=cp["eyes"], eyelids=cp["eyelids"],
                    rot=matrix_to_rotation_6d(R), t=torch.as_tensor(clip.params["t"][rows]))
    K = clip.params["K"][0]
    shared = fitting.Shared(torch.zeros(0), torch.tensor([K[0, 0], K[1, 1]]), torch.tensor([K[0, 2], K[1, 2]]))
    with torch.no_grad():
        verts = fitting.run_model(pm, shared.shape, p).vertices
    mean, basis = standin_texture_space(size=64, n_components=140, seed=2)
    path = write_flame_texture(tmp_path_factory.mktemp("tex") / "FLAME_texture.npz", mean, basis, data.vt, data.ft)
    texture = FlameTexture.from_file(path, size=None)
    return data, model, pm, clip, rows, p, shared, verts, texture, path


def _sh(seed=0):
    g = torch.Generator().manual_seed(seed)
    sh = ambient_sh() * 0.8
    sh[1:4] += torch.randn(3, 3, generator=g) * 0.25  # a directional light
    sh[4:] += torch.randn(5, 3, generator=g) * 0.05
    return sh


def _photo(scene, albedo, sh, images=None):
    data, model, *_ = scene
    images = torch.zeros(N, S, S, 3, dtype=torch.uint8) if images is None else images
    return Photometric(images, model.faces, torch.ones(model.faces.shape[0], dtype=torch.bool), albedo, sh)


def _render(photo, scene):
    p, shared, verts = scene[5], scene[6], scene[7]
    with torch.no_grad():
        return photo.render(verts, p.R, p.t, shared.focal, shared.pp)


def test_uniform_texture_equals_uniform_vertex_albedo(scene):
    data = scene[0]
    sh = _sh(1)
    colour = torch.tensor([0.55, 0.42, 0.37])
    vt, ft = torch.as_tensor(data.vt).float(), torch.as_tensor(data.ft)
    uv = UVAlbedo(vt, ft, albedo_map=colour[:, None, None].expand(3, 16, 16))
    tex_img, tex_mask, _ = _render(_photo(scene, uv, sh), scene)
    vtx_img, vtx_mask, _ = _render(_photo(scene, colour.expand(data.n_vertices, 3), sh), scene)
    assert tex_mask.sum() > 0.1 * N * S * S
    torch.testing.assert_close(tex_mask, vtx_mask)
    torch.testing.assert_close(tex_img, vtx_img, atol=1e-5, rtol=0)


def test_texture_linear_in_uv_equals_vertex_albedo_at_uv(scene):
    data = scene[0]
    T = 64
    yy, xx = torch.meshgrid(torch.arange(T), torch.arange(T), indexing="ij")
    u, v = (xx + 0.5) / T, 1 - (yy + 0.5) / T
    tex_map = torch.stack((0.2 + 0.6 * u, 0.1 + 0.7 * v, 0.3 + 0.2 * u + 0.2 * v))  # exact under bilinear sampling

    def f(uv):
        return torch.stack((0.2 + 0.6 * uv[:, 0], 0.1 + 0.7 * uv[:, 1], 0.3 + 0.2 * uv[:, 0] + 0.2 * uv[:, 1]), -1)

    vt = torch.as_tensor(data.vt).float().clamp(0.5 / T, 1 - 0.5 / T)  # keep off the border texels
    ft = torch.as_tensor(data.ft)
    assert (ft == torch.as_tensor(data.faces)).all()  # the stand-in's UV vertices are its mesh vertices
    tex_img, mask, _ = _render(_photo(scene, UVAlbedo(vt, ft, albedo_map=tex_map), ambient_sh()), scene)
    vtx_img, _, _ = _render(_photo(scene, f(vt), ambient_sh()), scene)
    on = mask > 0
    torch.testing.assert_close(tex_img[on], vtx_img[on], atol=1e-4, rtol=0)


def test_one_pixel_by_hand(scene):
    """Texture mode at one pixel: UV from the face's UV corners and barycentrics, a bilinear
    look-up (plain-torch oracle), times the SH shading interpolated from the vertices."""
    data, model, pm, clip, rows, p, shared, verts, texture, _ = scene
    sh = _sh(2)
    tex = torch.randn(140, generator=torch.Generator().manual_seed(5))
    uv_albedo = UVAlbedo(texture.vt, texture.ft, texture=texture, tex=tex)
    photo = _photo(scene, uv_albedo, sh)
    img, mask, face_idx = _render(photo, scene)
    from stages.face.raster import barycentrics

    b, i, j = 1, *(int(x) for x in torch.nonzero(mask[1])[len(torch.nonzero(mask[1])) // 2])
    f = int(face_idx[b, i, j])
    bary = barycentrics(photo.screen_vertices(verts, p.R, p.t, shared.focal, shared.pp), model.faces,
                        face_idx)[b, i, j]
    uv = (bary[:, None] * texture.vt[texture.ft[f]]).sum(0)
    albedo = sample_uv_reference(texture(tex[None]), uv.view(1, 1, 1, 2))[0, 0, 0]
    cam = verts @ p.R.transpose(-1, -2) + p.t[:, None]
    shading_v = sh_basis(vertex_normals(cam, model.faces)[b, model.faces[f]]) @ sh  # [3 corners, 3]
    expect = albedo * (bary[:, None] * shading_v).sum(0)
    torch.testing.assert_close(img[b, i, j], expect, atol=1e-5, rtol=0)
    # and the fast look-up agrees with the oracle over the whole batch
    maps = texture(tex[None])
    uvs = torch.rand(2, 9, 9, 2)
    torch.testing.assert_close(sample_uv(maps, uvs), sample_uv_reference(maps, uvs), atol=1e-6, rtol=0)


def _cell_coverage(scene, photo) -> np.ndarray:
    """Pixels seen per texture component cell (the stand-in space's 10 x 14 UV grid)."""
    from stages.face.raster import Fragments, barycentrics
    from stages.face.texture import pixel_uv

    data, model, pm, clip, rows, p, shared, verts, texture, _ = scene
    _, mask, face_idx = _render(photo, scene)
    bary = barycentrics(photo.screen_vertices(verts, p.R, p.t, shared.focal, shared.pp), model.faces, face_idx)
    uv = pixel_uv(Fragments(face_idx, bary, bary[..., 0]), texture.vt, texture.ft)[mask > 0]
    row = ((1 - uv[:, 1]) * 64).floor().clamp(0, 63) * 10 // 64
    col = (uv[:, 0] * 64).floor().clamp(0, 63) * 14 // 64
    return np.bincount((row * 14 + col).long().numpy(), minlength=140)[:140]


def test_texture_coefficients_recovered_from_rendered_images(scene):
    data, model, pm, clip, rows, p, shared, verts, texture, _ = scene
    sh = _sh(3)
    true = torch.randn(140, generator=torch.Generator().manual_seed(7)).clamp(-2.5, 2.5)
    img, _, _ = _render(_photo(scene, UVAlbedo(texture.vt, texture.ft, texture=texture, tex=true), sh), scene)
    images = (img.clamp(0, 1) * 255).round().to(torch.uint8)
    uv_albedo = UVAlbedo(texture.vt, texture.ft, texture=texture, prior=1e-5)
    photo = _photo(scene, uv_albedo, sh, images)
    problem = fitting.Problem(targets=torch.as_tensor(clip.landmarks[rows]), point_w=torch.ones(len(model.mp_index)),
                              frame_w=torch.ones(N), link=torch.zeros(N - 1), frames=torch.arange(N))
    before = float(photo(verts, p.R, p.t, shared.focal, shared.pp, problem.frames, 0))
    sched = Schedule([Level("appearance", 150, ("tex",), photometric=True)], {"tex": 5e-2})
    fitting.fit(pm, problem, p, shared, sched, photo=photo)
    after = float(photo(verts, p.R, p.t, shared.focal, shared.pp, problem.frames, 1))
    assert after < 0.2 * before, (before, after)
    seen = _cell_coverage(scene, photo)
    well = seen >= 40
    assert well.sum() >= 30, seen
    err = (uv_albedo.tex - true).abs().numpy()
    assert np.median(err[well]) < 0.05 and err[well].max() < 0.25, (np.median(err[well]), err[well].max())


def test_calibrate_in_texture_space_fits_tex_and_sh(scene, tmp_path):
    """calibrate() with a texture space: tex + SH over keyframes (geometry from their landmarks),
    saved and reloaded; the rendered appearance matches the keyframes."""
    data, model, pm, clip, rows, p, shared, verts, texture, _ = scene
    sh = _sh(4)
    true = torch.randn(140, generator=torch.Generator().manual_seed(8)).clamp(-2, 2)
    img, _, _ = _render(_photo(scene, UVAlbedo(texture.vt, texture.ft, texture=texture, tex=true), sh), scene)
    images = (img.clamp(0, 1) * 255).round().to(torch.uint8)
    pw = LandmarkWeights().per_point()[model.mp_index]
    inputs = CalibrationInputs(torch.as_tensor(clip.landmarks[rows]), pw, rows + 1, images=images,
                               face_region=torch.as_tensor(face_region(data)))
    calib = calibrate(model, inputs, schedule=calibrate_schedule(60, 150, 120), refine_iterations=30,
                      texture=texture, model_name="m")
    assert calib.appearance_mode == "texture" and calib.albedo is None
    assert calib.tex.shape == (140,) and calib.tex_map.shape == (64, 64, 3) and calib.sh.shape == (9, 3)
    assert np.abs(calib.tex).max() > 0.1
    calib.save(tmp_path / "c.npz")
    back = Calibration.load(tmp_path / "c.npz")
    assert back.appearance_mode == "texture"
    np.testing.assert_array_equal(back.tex, calib.tex)
    np.testing.assert_array_equal(back.tex_ft, data.ft)
    # the baked map is the texture of the fitted coefficients
    np.testing.assert_allclose(back.tex_map, texture(torch.as_tensor(back.tex)[None])[0].clamp(0, 1)
                               .permute(1, 2, 0).numpy(), atol=1e-6)
    # appearance explains the keyframes: low L1 at the (true) geometry with the fitted map and SH
    fitted = UVAlbedo(texture.vt, texture.ft, albedo_map=torch.as_tensor(back.tex_map).permute(2, 0, 1))
    photo = _photo(scene, fitted, torch.as_tensor(back.sh), images)
    loss = float(photo(verts, p.R, p.t, shared.focal, shared.pp, torch.arange(N), 0))
    grey = _photo(scene, UVAlbedo(texture.vt, texture.ft, albedo_map=torch.full((3, 4, 4), 0.5)), ambient_sh(), images)
    assert loss < 0.5 * float(grey(verts, p.R, p.t, shared.focal, shared.pp, torch.arange(N), 0)), loss


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_texture_mode_on_gpu_matches_cpu(scene):
    data, model, pm, clip, rows, p, shared, verts, texture, _ = scene
    sh = _sh(5)
    tex = torch.randn(140, generator=torch.Generator().manual_seed(9))
    cpu = _render(_photo(scene, UVAlbedo(texture.vt, texture.ft, texture=texture, tex=tex), sh), scene)
    dev = torch.device("cuda")
    tg = copy.deepcopy(texture).to(dev)  # Module.to moves in place: keep the fixture's on the CPU
    photo = Photometric(torch.zeros(N, S, S, 3, dtype=torch.uint8, device=dev), model.faces.to(dev),
                        torch.ones(model.faces.shape[0], dtype=torch.bool, device=dev),
                        UVAlbedo(tg.vt, tg.ft, texture=tg, tex=tex.to(dev)), sh.to(dev))
    with torch.no_grad():
        gpu = photo.render(verts.to(dev), p.R.to(dev), p.t.to(dev), shared.focal.to(dev), shared.pp.to(dev))
    same = (gpu[2].cpu() == cpu[2])  # visibility may differ on edge pixels between back-ends
    assert same.float().mean() > 0.995
    torch.testing.assert_close(gpu[0].cpu()[same], cpu[0][same], atol=1e-4, rtol=0)
