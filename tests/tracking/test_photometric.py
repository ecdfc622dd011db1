"""Photometric term: SH shading, albedo sampling, and a loss that is lowest at the true pose and
whose gradient points back to it (frames rendered by stages.face.synth)."""

import numpy as np
import pytest
import torch

from stages.face.flame import FLAME
from stages.face.synth import render_frames
from stages.tracking.face_assets import face_region
from stages.tracking.photometric import Photometric, ambient_sh, sample_vertex_colours, sh_basis, shade, vertex_normals
from tracking.synthetic import make_clip, standin

S = 96


def test_sh_ambient_is_uniform_and_basis_orthonormal():
    n = torch.nn.functional.normalize(torch.randn(1, 2000, 3), dim=-1)
    colour = shade(torch.full((2000, 3), 0.5), ambient_sh(), n)
    torch.testing.assert_close(colour, torch.full_like(colour, 0.5))
    # Monte-Carlo check of orthonormality over the sphere: E[Y Y^T] * 4 pi = I
    m = torch.nn.functional.normalize(torch.randn(200000, 3, dtype=torch.float64), dim=-1)
    Y = sh_basis(m)
    gram = Y.T @ Y / len(m) * 4 * np.pi
    torch.testing.assert_close(gram, torch.eye(9, dtype=torch.float64), atol=0.03, rtol=0)


@pytest.fixture(scope="module")
def scene():
    data = standin()
    model = FLAME(data)
    clip = make_clip(model, 20, seed=0)  # (very short synthetic clips are degenerate: use 20, keep 2)
    clip.params = {k: (v[:2] if getattr(v, "ndim", 0) and v.shape[0] == 20 else v) for k, v in clip.params.items()}
    tex = torch.full((3, 64, 64), 0.6)
    tex[0] = torch.linspace(0.3, 0.9, 64)[None, :]  # a colour gradient across the face
    img = render_frames(model, data, clip.params, 0, 2, tex)
    small = torch.nn.functional.interpolate(img.permute(0, 3, 1, 2).float(), size=S, mode="area")
    images = small.round().to(torch.uint8).permute(0, 2, 3, 1)
    p = clip.params
    with torch.no_grad():
        verts = model(**{k: torch.as_tensor(p[k]) for k in ("shape", "expression", "jaw", "eyes", "eyelids")}).vertices
    R, t = torch.as_tensor(p["R"]), torch.as_tensor(p["t"])
    focal = torch.tensor([p["K"][0, 0, 0], p["K"][0, 1, 1]])
    pp = torch.tensor([p["K"][0, 0, 2], p["K"][0, 1, 2]])
    return data, model, images, verts, R, t, focal, pp


def test_loss_lowest_at_true_pose_and_gradient_points_back(scene):
    data, model, images, verts, R, t, focal, pp = scene
    albedo, seen = sample_vertex_colours(images, verts, R, t, focal, pp, model.faces)
    assert (seen > 0).float().mean() > 0.5
    photo = Photometric(images, model.faces, torch.as_tensor(face_region(data)), albedo, ambient_sh())
    frames = torch.arange(2)
    at_truth = photo(verts, R, t, focal, pp, frames, 0)
    shift = torch.tensor([0.004, 0.0, 0.0])  # 4 mm sideways: about 5 px at 512, 1 px at 96
    t_off = (t + shift).requires_grad_(True)
    off = photo(verts, R, t_off, focal, pp, frames, 0)
    assert off > at_truth * 1.05, (float(off), float(at_truth))
    off.backward()
    assert t_off.grad[:, 0].sum() > 0  # increasing x makes it worse: the gradient points back
    colour, mask, face_idx = photo.render(verts, R, t, focal, pp)
    assert colour.shape == (2, S, S, 3) and mask.sum() > 0.05 * S * S


def test_vertex_normals_face_the_camera_on_the_front(scene):
    _, model, _, verts, R, t, _, _ = scene
    cam = verts @ R.transpose(-1, -2) + t[:, None]
    n = vertex_normals(cam, model.faces)
    nose = 1  # MediaPipe nose tip = stand-in vertex 1
    assert (n[:, nose] * -torch.nn.functional.normalize(cam[:, nose], dim=-1)).sum(-1).min() > 0.5


def test_fixed_geometry_appearance_fit_takes_the_same_steps(scene):
    """Calibrate's appearance level with the geometry computed once (Photometric.fixed_geometry +
    fit.fit_appearance) ends where fit.fit, which evaluates the model and rasterises every step,
    ends: the same albedo and lighting (and the loss it starts from is the term's own value)."""
    from stages.face.rotation import matrix_to_rotation_6d
    from stages.tracking import fit as fitting
    from stages.tracking.params import FrameParams
    from stages.tracking.schedule import LossWeights, calibrate_schedule

    data, model, images, verts, R, t, focal, pp = scene
    p = make_clip(model, 20, seed=0).params  # the scene's clip (same seed), first 2 frames
    init = FrameParams(exp=torch.as_tensor(p["expression"][:2]), jaw=torch.as_tensor(p["jaw"][:2]),
                       eyes=torch.as_tensor(p["eyes"][:2]), eyelids=torch.as_tensor(p["eyelids"][:2]),
                       rot=matrix_to_rotation_6d(R), t=t.clone())
    shared = fitting.Shared(torch.as_tensor(p["shape"][0]), focal, pp)
    albedo, _ = sample_vertex_colours(images, verts, R, t, focal, pp, model.faces)
    region = torch.as_tensor(face_region(data))
    frames = torch.arange(2)
    schedule = calibrate_schedule(0, 0, 12)
    w = LossWeights()
    slow = Photometric(images, model.faces, region, albedo, ambient_sh(), refresh=4)
    n = model.mp_index.numel()
    problem = fitting.Problem(targets=torch.zeros(2, n, 2), point_w=torch.ones(n),
                              frame_w=torch.ones(2), link=torch.zeros(1), frames=frames)
    fitting.fit(model, problem, init, shared, schedule, w, photo=slow)
    fast = Photometric(images, model.faces, region, albedo, ambient_sh())
    loss_fn = fast.fixed_geometry(verts, R, t, focal, pp, frames)
    assert float(loss_fn()) == pytest.approx(float(Photometric(images, model.faces, region, albedo, ambient_sh())(
        verts, R, t, focal, pp, frames, 0)), rel=1e-6)
    history = fitting.fit_appearance(loss_fn, fast.parameters(), schedule, w.photometric)
    assert set(history) == {"appearance"}
    assert not torch.equal(fast.albedo, albedo)  # it moved
    torch.testing.assert_close(fast.albedo, slow.albedo, atol=1e-6, rtol=0)  # moved by 0.1
    torch.testing.assert_close(fast.sh, slow.sh, atol=1e-6, rtol=0)
