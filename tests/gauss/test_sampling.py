"""Placing Gaussians on the surface."""

import torch

from stages.gauss.sampling import area_samples, surface_points, uv_texel_samples
from stages.gauss.synthetic import uv_sphere


def test_uv_square_gives_one_sample_per_texel_at_its_centre():
    vt = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    ft = torch.tensor([[0, 1, 2], [0, 2, 3]])
    face, bary = uv_texel_samples(vt, ft, 16)
    assert face.shape == (256,) and bary.shape == (256, 3)
    uv = surface_points(vt, ft, face, bary)
    centres = torch.stack(torch.meshgrid((torch.arange(16) + 0.5) / 16, (torch.arange(16) + 0.5) / 16, indexing="xy"), -1)
    assert torch.allclose(uv.sort(0).values, centres.reshape(-1, 2).sort(0).values, atol=1e-6)
    assert len({(round(u, 5), round(v, 5)) for u, v in uv.tolist()}) == 256
    assert torch.all(bary >= 0) and torch.allclose(bary.sum(-1), torch.ones(256))


def test_face_mask_excludes_faces():
    vt = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    ft = torch.tensor([[0, 1, 2], [0, 2, 3]])
    face, _ = uv_texel_samples(vt, ft, 16, face_mask=torch.tensor([True, False]))
    assert set(face.tolist()) == {0} and 100 < face.numel() < 156


def test_sphere_uv_sampling_covers_the_map():
    v, f, vt, ft = uv_sphere(8, 16)
    face, bary = uv_texel_samples(vt, ft, 32)
    assert face.numel() == 32 * 32  # the lat-long map is fully covered
    pts = surface_points(v, f, face, bary)
    r = pts.norm(dim=-1)  # on the flat triangles of a sphere of radius 0.1
    assert r.max() <= 0.1 + 1e-6 and r.min() > 0.09


def test_area_sampling_is_proportional_to_area():
    verts = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [3, 0, 0], [0, 3, 0]])
    faces = torch.tensor([[0, 1, 2], [0, 3, 4]])  # areas 0.5 and 4.5
    face, bary = area_samples(verts, faces, 20000, generator=torch.Generator().manual_seed(0))
    frac = (face == 0).float().mean().item()
    assert abs(frac - 0.1) < 0.01
    assert torch.all(bary >= 0) and torch.allclose(bary.sum(-1), torch.ones(20000))
    # points are uniform inside the triangle: mean = centroid
    pts = surface_points(verts, faces, face[face == 1], bary[face == 1])
    assert torch.allclose(pts.mean(0), torch.tensor([1.0, 1.0, 0.0]), atol=0.03)


def test_triangle_size_equals_herons_formula_and_follows_the_mesh():
    from stages.gauss.sampling import triangle_size, triangle_size_reference

    g = torch.Generator().manual_seed(0)
    verts = torch.randn(30, 3, generator=g) * 0.05
    faces = torch.randint(0, 30, (40, 3), generator=g)
    face_idx = torch.randint(0, 40, (25,), generator=g)
    fast = triangle_size(verts, faces, face_idx)
    assert fast.shape == (25,)
    assert torch.allclose(fast.double(), triangle_size_reference(verts, faces, face_idx), rtol=1e-4, atol=1e-7)
    batch = torch.stack([verts, 2.0 * verts, verts * torch.tensor([1.0, 0.0, 0.0])])  # scaled; flattened to a line
    sizes = triangle_size(batch, faces, face_idx)
    assert sizes.shape == (3, 25)
    assert torch.allclose(sizes[1], 2.0 * sizes[0], rtol=1e-5) and sizes[2].abs().max() < 1e-6
