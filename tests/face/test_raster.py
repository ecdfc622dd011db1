"""The mesh rasteriser: fast paths (torch, Warp) against the brute-force reference, and gradients."""

from __future__ import annotations

import functools
import math

import pytest
import torch

from stages.face.raster import (
    Fragments,
    barycentrics,
    interpolate,
    perspective_correct,
    rasterize,
    rasterize_reference,
)

try:
    import warp  # noqa: F401

    HAVE_WARP = True
except ImportError:
    HAVE_WARP = False

FAST = ["torch", pytest.param("warp", marks=pytest.mark.skipif(not HAVE_WARP, reason="needs warp-lang"))]


# ---------------------------------------------------------------- inputs


def uv_sphere(n_lat: int, n_lon: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit sphere: verts float64 [V, 3], faces int64 [F, 3] with outward right-hand normals."""
    verts = [[0.0, 0.0, 1.0]]
    for i in range(1, n_lat):
        th = math.pi * i / n_lat
        for j in range(n_lon):
            ph = 2 * math.pi * j / n_lon
            verts.append([math.sin(th) * math.cos(ph), math.sin(th) * math.sin(ph), math.cos(th)])
    verts.append([0.0, 0.0, -1.0])
    faces = []
    ring = lambda i, j: 1 + (i - 1) * n_lon + (j % n_lon)  # noqa: E731
    for j in range(n_lon):
        faces.append([0, ring(1, j), ring(1, j + 1)])
        for i in range(1, n_lat - 1):
            a, b, c, d = ring(i, j), ring(i + 1, j), ring(i + 1, j + 1), ring(i, j + 1)
            faces += [[a, b, c], [a, c, d]]
        faces.append([len(verts) - 1, ring(n_lat - 1, j + 1), ring(n_lat - 1, j)])
    return torch.tensor(verts, dtype=torch.float64), torch.tensor(faces)


def random_rotation(gen: torch.Generator) -> torch.Tensor:
    q = torch.randn(4, generator=gen, dtype=torch.float64)
    w, x, y, z = (q / q.norm()).tolist()
    return torch.tensor(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ],
        dtype=torch.float64,
    )


def project(points: torch.Tensor, focal: float, size: int) -> torch.Tensor:
    """Pinhole (OpenCV camera: x right, y down, z forward) -> [..., 3] pixels x, y and depth z."""
    z = points[..., 2]
    return torch.stack([focal * points[..., 0] / z + size / 2, focal * points[..., 1] / z + size / 2, z], -1)


def sphere_batch(bsz: int, size: int, seed: int, n_lat: int = 10, n_lon: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """A bumpy rotated sphere per batch element, projected: verts_pix float32 [B, V, 3], faces."""
    gen = torch.Generator().manual_seed(seed)
    verts, faces = uv_sphere(n_lat, n_lon)
    out = []
    for _ in range(bsz):
        bump = 1 + 0.15 * torch.rand(verts.shape[0], 1, generator=gen, dtype=torch.float64)
        p = (verts * bump) @ random_rotation(gen).T
        p = p + torch.tensor([0.3, -0.2, 4.0], dtype=torch.float64) + 0.2 * torch.randn(3, generator=gen, dtype=torch.float64)
        out.append(project(p, focal=1.4 * size, size=size))
    return torch.stack(out).float(), faces


def triangle_soup(bsz: int, nfaces: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Independent random triangles of varied sizes, some off screen: float32 [B, 3F, 3], faces."""
    gen = torch.Generator().manual_seed(seed)
    centre = torch.rand(bsz, nfaces, 1, 2, generator=gen) * (size + 16) - 8
    scale = torch.exp(torch.rand(bsz, nfaces, 1, 1, generator=gen) * math.log(40.0))
    xy = centre + scale * torch.randn(bsz, nfaces, 3, 2, generator=gen)
    z = 1 + 9 * torch.rand(bsz, nfaces, 3, 1, generator=gen)
    verts = torch.cat([xy, z], -1).reshape(bsz, 3 * nfaces, 3)
    return verts, torch.arange(3 * nfaces).view(nfaces, 3)


def unambiguous(verts_pix: torch.Tensor, faces: torch.Tensor, size: int, *, edge_eps=1e-4, depth_rtol=1e-5, cull=False):
    """bool [B, H, W]: pixels whose centre is >= edge_eps px from every triangle's boundary and
    whose two nearest covering triangles differ in depth by more than depth_rtol (float64)."""
    tri = verts_pix.double()[:, faces]  # [B, F, 3, 3]
    x, y, z = (t[:, None] for t in tri.unbind(-1))  # [B, 1, F, 3]
    area = (x[..., 1] - x[..., 0]) * (y[..., 2] - y[..., 0]) - (y[..., 1] - y[..., 0]) * (x[..., 2] - x[..., 0])
    usable = (area != 0) & (z > 0).all(-1)
    if cull:
        usable = usable & (area < 0)
    sign = torch.sign(area)
    safe_area = torch.where(area == 0, torch.ones_like(area), area)
    ys, xs = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    xs, ys = xs.reshape(-1).double(), ys.reshape(-1).double()
    edges = []
    for i, (a, b) in enumerate(((1, 2), (2, 0), (0, 1))):
        ex, ey = x[..., b] - x[..., a], y[..., b] - y[..., a]
        scale = sign / torch.sqrt(ex * ex + ey * ey).clamp(min=1e-30)
        edges.append((ex, ey, x[..., a], y[..., a], scale, 1.0 / (safe_area * z[..., i])))
    out = []
    step = max(1, (1 << 19) // (tri.shape[0] * tri.shape[1]))
    for s in range(0, size * size, step):
        px, py = xs[s : s + step].view(1, -1, 1), ys[s : s + step].view(1, -1, 1)
        dist = None
        inv_depth = 0
        for ex, ey, ax, ay, scale, q in edges:
            w = ex * (py - ay) - ey * (px - ax)  # [B, P, F]
            d = w * scale
            dist = d if dist is None else torch.minimum(dist, d)  # signed distance to the boundary
            inv_depth = inv_depth + w * q
        near_edge = (usable & (dist.abs() < edge_eps)).any(-1)
        inside = usable & (dist >= edge_eps)
        depth = torch.where(inside, 1.0 / inv_depth, torch.full_like(dist, math.inf))
        if depth.shape[-1] >= 2:
            two = depth.topk(2, dim=-1, largest=False).values
            tie = torch.isfinite(two[..., 1]) & ((two[..., 1] - two[..., 0]) <= depth_rtol * two[..., 0])
        else:
            tie = torch.zeros_like(near_edge)
        out.append(~near_edge & ~tie)
    return torch.cat(out, 1).view(-1, size, size)


@functools.lru_cache(maxsize=None)
def oracle(kind: str, cull: bool):
    """(verts_pix, faces, size, reference fragments, unambiguous mask) for one input, computed once."""
    if kind == "soup":
        verts, faces = triangle_soup(bsz=3, nfaces=120, size=64, seed=1)
    else:
        verts, faces = sphere_batch(bsz=4, size=64, seed=2)
    ref = rasterize_reference(verts, faces, 64, 64, cull_backfaces=cull)
    return verts, faces, 64, ref, unambiguous(verts, faces, 64, cull=cull)


def assert_matches_reference(kind, backend, cull=False, min_fraction=0.97):
    verts, faces, size, ref, ok = oracle(kind, cull)
    got = rasterize(verts, faces, size, size, backend=backend, cull_backfaces=cull)
    assert ok.float().mean() > min_fraction  # the comparison below covers almost every pixel
    assert torch.equal(got.face_idx[ok], ref.face_idx[ok])
    fg = ok & (ref.face_idx >= 0)
    assert fg.any() and (~fg & ok).any()  # both covered and background pixels are compared
    torch.testing.assert_close(got.bary[fg], ref.bary[fg], atol=2e-4, rtol=0)
    torch.testing.assert_close(got.depth[fg], ref.depth[fg], rtol=1e-5, atol=0)
    assert torch.all(got.depth[got.face_idx < 0] == math.inf)
    assert torch.all(got.bary[got.face_idx < 0] == 0)
    return got, ref


# ---------------------------------------------------------------- known answers


@pytest.mark.parametrize("backend", ["reference", *FAST])
def test_single_triangle_known_pixels_and_barycentrics(backend):
    # right triangle (0,0), (8,0), (0,8): centres (j+.5, i+.5) with i + j <= 7 are inside
    verts = torch.tensor([[[0.0, 0.0, 2.0], [8.0, 0.0, 2.0], [0.0, 8.0, 2.0]]])
    faces = torch.tensor([[0, 1, 2]])
    frag = rasterize(verts, faces, 12, 10, backend=backend)
    assert frag.face_idx.shape == (1, 12, 10) and frag.bary.shape == (1, 12, 10, 3)
    i, j = torch.meshgrid(torch.arange(12), torch.arange(10), indexing="ij")
    assert torch.equal(frag.face_idx[0] == 0, (i + j) <= 7)
    assert torch.all(frag.face_idx[0][(i + j) > 7] == -1)
    # pixel row 2, column 1: centre (1.5, 2.5) -> weights (1 - x/8 - y/8, x/8, y/8)
    torch.testing.assert_close(frag.bary[0, 2, 1], torch.tensor([0.5, 0.1875, 0.3125]))
    torch.testing.assert_close(frag.bary.sum(-1)[frag.mask], torch.ones(36))
    assert torch.all(frag.depth[frag.mask] == 2.0)
    assert torch.all(frag.depth[~frag.mask] == math.inf)


@pytest.mark.parametrize("backend", ["reference", *FAST])
def test_depth_is_pinhole_depth_and_perspective_correction(backend):
    verts = torch.tensor([[[0.0, 0.0, 1.0], [16.0, 0.0, 4.0], [0.0, 16.0, 2.0]]], dtype=torch.float64)
    faces = torch.tensor([[0, 1, 2]])
    frag = rasterize(verts, faces, 16, 16, backend=backend)
    b = frag.bary[0, 3, 5]  # centre (5.5, 3.5)
    torch.testing.assert_close(b, torch.tensor([1 - 9 / 16, 5.5 / 16, 3.5 / 16], dtype=torch.float64))
    inv = b[0] / 1.0 + b[1] / 4.0 + b[2] / 2.0
    torch.testing.assert_close(frag.depth[0, 3, 5], 1 / inv)
    pc = perspective_correct(frag.bary, verts, faces, frag.face_idx)
    torch.testing.assert_close(pc[0, 3, 5], torch.stack([b[0] / 1.0, b[1] / 4.0, b[2] / 2.0]) / inv)
    # the perspective-correct weights reproduce the 3D point: its z is the depth
    z = (pc * verts[0, :, 2]).sum(-1)
    torch.testing.assert_close(z[frag.mask], frag.depth[frag.mask])
    assert torch.all(pc[~frag.mask] == 0)


@pytest.mark.parametrize("backend", ["reference", *FAST])
def test_nearest_wins_and_exact_ties_pick_lowest_face(backend):
    tri = [[1.0, 1.0], [14.0, 2.0], [3.0, 13.0]]
    far = [p + [5.0] for p in tri]
    near = [p + [3.0] for p in tri]
    verts = torch.tensor([far + near + near])  # faces 0 (far), 1 and 2 (identical, near)
    faces = torch.tensor([[0, 1, 2], [3, 4, 5], [6, 7, 8]])
    frag = rasterize(verts, faces, 16, 16, backend=backend)
    assert frag.mask.sum() > 40
    assert torch.all(frag.face_idx[frag.mask] == 1)
    torch.testing.assert_close(frag.depth[frag.mask], torch.full((int(frag.mask.sum()),), 3.0))
    # depth decides before the index: with the near face listed first it wins too
    frag2 = rasterize(verts, faces[[2, 0]], 16, 16, backend=backend)
    assert torch.equal(frag2.mask, frag.mask) and torch.all(frag2.face_idx[frag2.mask] == 0)


@pytest.mark.parametrize("backend", ["reference", *FAST])
def test_skips_behind_camera_degenerate_and_offscreen(backend):
    verts = torch.tensor(
        [
            [
                [1.0, 1.0, -1.0], [9.0, 1.0, 2.0], [1.0, 9.0, 2.0],  # a vertex behind the camera
                [1.0, 1.0, 2.0], [5.0, 5.0, 2.0], [9.0, 9.0, 2.0],  # zero area
                [-30.0, 1.0, 2.0], [-20.0, 1.0, 2.0], [-25.0, 9.0, 2.0],  # left of the image
                [2.0, 2.0, 2.0], [8.0, 2.0, float("nan")], [2.0, 8.0, 2.0],  # not finite
            ]
        ]
    )
    faces = torch.arange(12).view(4, 3)
    frag = rasterize(verts, faces, 10, 10, backend=backend)
    assert torch.all(frag.face_idx == -1)
    empty = rasterize(verts, faces[:0], 10, 10, backend=backend)
    assert torch.all(empty.face_idx == -1) and empty.face_idx.shape == (1, 10, 10)


@pytest.mark.parametrize("backend", ["reference", *FAST])
def test_backface_culling_follows_winding(backend):
    verts = torch.tensor([[[2.0, 2.0, 2.0], [12.0, 2.0, 2.0], [2.0, 12.0, 2.0]]])
    front = torch.tensor([[0, 2, 1]])  # signed pixel area < 0: normal towards the camera
    back = torch.tensor([[0, 1, 2]])
    for faces, kept in ((front, True), (back, False)):
        both = rasterize(verts, faces, 14, 14, backend=backend)
        culled = rasterize(verts, faces, 14, 14, backend=backend, cull_backfaces=True)
        assert both.mask.sum() > 20
        assert torch.equal(culled.mask, both.mask if kept else torch.zeros_like(both.mask))


@pytest.mark.parametrize("backend", FAST)
def test_huge_triangle_and_many_faces(backend):
    # one triangle far larger than the image (its box is clipped to the screen), listed last among
    # 70,000 faces (the key's face-index field needs 17 bits), the others degenerate
    big = torch.tensor([[-900.0, -700.0, 3.0], [1300.0, 40.0, 5.0], [-800.0, 1500.0, 4.0]])
    verts = torch.cat([torch.zeros(1, 3) + 1.0, big])[None]  # vertex 0: a point
    faces = torch.zeros(70_000, 3, dtype=torch.int64)
    faces[-1] = torch.tensor([1, 2, 3])
    frag = rasterize(verts, faces, 40, 56, backend=backend)
    assert torch.all(frag.face_idx == 69_999)
    ref = rasterize_reference(verts, faces[-1:], 40, 56)
    torch.testing.assert_close(frag.bary, ref.bary, atol=1e-5, rtol=0)
    torch.testing.assert_close(frag.depth, ref.depth, rtol=1e-5, atol=0)


# ---------------------------------------------------------------- against the reference


@pytest.mark.parametrize("backend", FAST)
def test_random_triangles_match_reference(backend):
    got, ref = assert_matches_reference("soup", backend)
    assert len(torch.unique(ref.face_idx)) > 60  # many faces visible


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("cull", [False, True])
def test_sphere_meshes_match_reference(backend, cull):
    got, ref = assert_matches_reference("sphere", backend, cull=cull)
    verts, faces, _, _, ok = oracle("sphere", False)
    assert faces.shape[0] == 288
    # a closed outward mesh looks the same with and without culling
    other = rasterize(verts, faces, 64, 64, backend=backend, cull_backfaces=not cull)
    assert torch.equal(other.face_idx[ok], got.face_idx[ok])


@pytest.mark.parametrize("backend", FAST)
def test_batch_elements_are_independent(backend):
    verts, faces = sphere_batch(bsz=3, size=48, seed=3)
    whole = rasterize(verts, faces, 48, 40, backend=backend)
    for b in range(3):
        one = rasterize(verts[b : b + 1], faces, 48, 40, backend=backend)
        assert torch.equal(one.face_idx[0], whole.face_idx[b])


@pytest.mark.parametrize("backend", FAST)
def test_shared_edges_through_pixel_centres_leave_no_holes(backend):
    # a jittered grid mesh; the boundary and every other row of vertices sit exactly on pixel
    # centres, so many shared edges pass exactly through centres
    n, step, size = 9, 6.0, 50
    gen = torch.Generator().manual_seed(4)
    gy, gx = torch.meshgrid(torch.arange(n) * step + 0.5, torch.arange(n) * step + 0.5, indexing="ij")
    jitter = torch.rand(n, n, 2, generator=gen) * 4 - 2
    jitter[::2] = 0
    jitter[[0, -1]] = 0
    jitter[:, [0, -1]] = 0
    xy = torch.stack([gx, gy], -1) + jitter
    z = 2 + torch.rand(n, n, 1, generator=gen)
    verts = torch.cat([xy, z], -1).reshape(1, -1, 3)
    faces = []
    for i in range(n - 1):
        for j in range(n - 1):
            a, b, c, d = i * n + j, i * n + j + 1, (i + 1) * n + j + 1, (i + 1) * n + j
            faces += [[a, b, c], [a, c, d]] if (i + j) % 2 else [[a, b, d], [b, c, d]]
    faces = torch.tensor(faces)
    frag = rasterize(verts, faces, size, size, backend=backend)
    lo, hi = 0, int((n - 1) * step)  # pixels whose centres are inside the square [0.5, 48.5]^2
    assert torch.all(frag.face_idx[0, lo : hi + 1, lo : hi + 1] >= 0)
    assert torch.all(frag.face_idx[0, hi + 1 :] == -1) and torch.all(frag.face_idx[0, :, hi + 1 :] == -1)


@pytest.mark.parametrize("backend", FAST)
def test_shared_edges_with_rounding_noise_leave_no_holes(backend):
    # quads split along a diagonal whose endpoints have "ugly" float32 coordinates but which passes
    # (in exact arithmetic) through pixel centres: there each triangle's edge function is rounding
    # noise; the canonical edge evaluation must still give the centre to one of the two triangles
    gen = torch.Generator().manual_seed(9)
    size, quads = 48, 128
    verts, on_line = [], []
    for _ in range(quads):
        d = torch.randint(1, 8, (2,), generator=gen).double() * torch.tensor([1.0, -1.0], dtype=torch.float64)
        d = d.flip(0) if torch.rand((), generator=gen) < 0.5 else d
        c = torch.tensor([23.5, 23.5], dtype=torch.float64)
        t0 = -2.0 - 0.7 * torch.rand((), generator=gen).item()
        t1 = 2.0 + 0.7 * torch.rand((), generator=gen).item()
        a, b = c + t0 * d, c + t1 * d
        normal = torch.stack([-d[1], d[0]]) / d.norm() * 6
        m = c + (0.5 * (t0 + t1) + 0.1) * d
        xy = torch.stack([a, b, m + normal, m - normal]).float()
        z = 2 + torch.rand(4, 1, generator=gen)
        verts.append(torch.cat([xy, z], 1))
        on_line.append([c + k * d for k in (-2, -1, 0, 1, 2)])  # pixel centres on the diagonal
    verts = torch.stack(verts)  # [quads, 4, 3]
    faces = torch.tensor([[0, 1, 2], [1, 0, 3]])  # vertex 0 < 1: one of them sees the edge reversed
    frag = rasterize(verts, faces, size, size, backend=backend)
    for q in range(quads):
        for p in on_line[q]:
            j, i = int(p[0]), int(p[1])
            assert frag.face_idx[q, i, j] >= 0, (q, i, j)


# ---------------------------------------------------------------- gradients


def test_interpolate_gradients_reach_positions_and_attributes():
    verts, faces = sphere_batch(bsz=1, size=12, seed=5, n_lat=4, n_lon=5)
    verts = verts.double()
    face_idx = rasterize(verts, faces, 12, 12, backend="torch").face_idx
    assert (face_idx >= 0).sum() > 30 and len(torch.unique(face_idx)) > 5
    attrs = torch.randn(1, verts.shape[1], 2, dtype=torch.float64)

    def shade(v, a):
        bary = barycentrics(v, faces, face_idx)
        return interpolate(a, faces, Fragments(face_idx, bary, bary[..., 0]))

    v = verts.clone().requires_grad_(True)
    a = attrs.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(shade, (v, a), eps=1e-6, atol=1e-6)
    # through rasterize() itself: its bary carries the gradient to the positions
    frag = rasterize(v, faces, 12, 12, backend="torch")
    interpolate(a, faces, frag).square().sum().backward()
    assert v.grad is not None and v.grad[..., :2].abs().sum() > 0
    assert a.grad is not None and a.grad.abs().sum() > 0
    assert torch.isfinite(v.grad).all()


def test_interpolate_values_and_background_zeros():
    verts, faces = sphere_batch(bsz=2, size=32, seed=6)
    frag = rasterize(verts, faces, 32, 32, backend="torch")
    pos = interpolate(verts, faces, frag)  # interpolating x, y gives back the pixel centres
    ys, xs = torch.meshgrid(torch.arange(32) + 0.5, torch.arange(32) + 0.5, indexing="ij")
    m = frag.mask
    torch.testing.assert_close(pos[..., 0][m], xs.expand(2, -1, -1)[m], atol=1e-3, rtol=0)
    torch.testing.assert_close(pos[..., 1][m], ys.expand(2, -1, -1)[m], atol=1e-3, rtol=0)
    assert torch.all(pos[~m] == 0)
    shared = interpolate(torch.ones(verts.shape[1], 1), faces, frag)  # [V, C] attrs broadcast
    torch.testing.assert_close(shared[..., 0], m.float())


def test_bad_arguments_raise():
    verts = torch.rand(1, 3, 3)
    with pytest.raises(ValueError):
        rasterize(verts[0], torch.tensor([[0, 1, 2]]), 4, 4)
    with pytest.raises(ValueError):
        rasterize(verts, torch.tensor([[0, 1, 3]]), 4, 4)
    with pytest.raises(ValueError):
        rasterize(verts, torch.tensor([[0, 1, 2]]), 4, 4, backend="opengl")


@pytest.mark.slow
def test_torch_compile_backend_matches_eager():
    # torch.compile on CPU needs a C++ compiler and compiles for tens of seconds
    for kind in ("soup", "sphere"):
        verts, faces, size, _, ok = oracle(kind, False)
        eager = rasterize(verts, faces, size, size, backend="torch")
        fused = rasterize(verts, faces, size, size, backend="torch-compile")
        assert torch.equal(fused.face_idx[ok], eager.face_idx[ok])
        assert (fused.face_idx == eager.face_idx).float().mean() > 0.999


# ---------------------------------------------------------------- GPU


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("backend", [*FAST, "torch-compile"])
def test_cuda_fast_path_equals_cpu_path(backend):
    verts, faces = sphere_batch(bsz=6, size=96, seed=7, n_lat=24, n_lon=40)
    soup, soup_faces = triangle_soup(bsz=2, nfaces=400, size=96, seed=8)
    for v, f in ((verts, faces), (soup, soup_faces)):
        cpu = rasterize(v, f, 96, 96, backend="torch")
        gpu = rasterize(v.cuda(), f.cuda(), 96, 96, backend=backend)
        assert gpu.face_idx.is_cuda and gpu.bary.is_cuda
        ok = unambiguous(v, f, 96)
        assert ok.float().mean() > 0.97
        assert torch.equal(gpu.face_idx.cpu()[ok], cpu.face_idx[ok])
        assert (gpu.face_idx.cpu() == cpu.face_idx).float().mean() > 0.999
        fg = ok & cpu.mask
        torch.testing.assert_close(gpu.bary.cpu()[fg], cpu.bary[fg], atol=1e-5, rtol=0)
        torch.testing.assert_close(gpu.depth.cpu()[fg], cpu.depth[fg], rtol=1e-6, atol=0)
    # gradients flow on the GPU too
    v = verts.cuda().requires_grad_(True)
    attrs = torch.rand(verts.shape[1], 3, device="cuda", requires_grad=True)
    frag = rasterize(v, faces.cuda(), 96, 96, backend=backend)
    interpolate(attrs, faces.cuda(), frag).square().sum().backward()
    assert v.grad.abs().sum() > 0 and attrs.grad.abs().sum() > 0 and torch.isfinite(v.grad).all()
