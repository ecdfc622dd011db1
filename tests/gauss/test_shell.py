"""Shell Gaussians beyond the face mesh (stages.gauss.shell) and their anchoring in the avatar."""

import numpy as np
import pytest
import torch

from stages.face.model import load_face_model
from stages.face.rotation import axis_angle_to_matrix, matrix_to_rotation_6d
from stages.gauss.model import GaussianAvatar
from stages.gauss.render_ref import render_gaussians_reference
from stages.gauss.shell import ShellConfig, bind_to_mesh, rigid_faces, shell_points
from stages.gauss.surface import EXPRESSION_DIM, JAW_DIM, flame_surface, neutral_condition
from stages.gauss.trainer import TrainConfig, build_avatar, cameras, load_avatar


@pytest.fixture(scope="module")
def standin():
    return flame_surface(load_face_model(None), np.zeros(300, np.float32))


def _jaw_open(batch: int = 1, angle: float = 0.3) -> torch.Tensor:
    cond = neutral_condition(batch)
    cond[:, EXPRESSION_DIM:EXPRESSION_DIM + JAW_DIM] = matrix_to_rotation_6d(
        axis_angle_to_matrix(torch.tensor([[angle, 0.0, 0.0]])))
    return cond


def test_shell_covers_scalp_and_neck_not_the_face(standin):
    v, f = standin.neutral(), standin.faces
    p = shell_points(v, f, spacing=0.004, cfg=ShellConfig(density=0.5))
    assert p.shape[1] == 3 and len(p) > 500
    lo, hi = v.min(0).values, v.max(0).values
    assert float(p[:, 1].max()) > float(hi[1]) + 0.03  # above the forehead: the scalp
    assert float(p[:, 1].min()) < float(lo[1]) - 0.08  # below the chin: the neck
    assert float(p[:, 0].min()) < float(lo[0]) and float(p[:, 0].max()) > float(hi[0])  # beside the ears
    # nothing sits in front of the face or hidden right behind its central part
    centre = (p[:, 0].abs() < 0.03) & (p[:, 1] > float(lo[1]) + 0.02) & (p[:, 1] < float(hi[1]) - 0.02)
    assert not centre.any()
    # deterministic, and the count follows the density
    assert torch.equal(p, shell_points(v, f, 0.004, ShellConfig(density=0.5)))
    q = shell_points(v, f, 0.004, ShellConfig(density=0.25))
    assert 0.35 < len(q) / len(p) < 0.65
    assert len(shell_points(v, f, 0.004, ShellConfig(density=0.0))) == 0
    only_scalp = shell_points(v, f, 0.004, ShellConfig(density=0.5, neck=False))
    assert float(only_scalp[:, 1].min()) > float(lo[1])


def test_bind_to_mesh_reproduces_the_points():
    v = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [5, 5, 0]])
    f = torch.tensor([[0, 1, 2], [1, 3, 2]])
    p = torch.tensor([[0.2, 0.2, 1.0], [4.0, 4.0, 0.0]])
    idx, bary, off = bind_to_mesh(p, v, f)
    assert idx.tolist() == [0, 1]
    cent = v[f[idx]].mean(1)
    assert torch.allclose(cent + off, p) and torch.allclose(bary, torch.full((2, 3), 1 / 3))
    idx, _, _ = bind_to_mesh(p, v, f, allowed=torch.tensor([True, False]))
    assert idx.tolist() == [0, 0]


def test_rigid_faces_exclude_what_the_jaw_moves(standin):
    v0 = standin.neutral()
    v1 = standin.vertices(_jaw_open())[0]
    rigid = rigid_faces(v0, v1, standin.faces)
    moved = (v1 - v0).norm(dim=-1) > 1e-4
    assert 0 < int(rigid.sum()) < len(rigid)
    assert not moved[standin.faces[rigid]].any()


def test_shell_gaussians_ride_the_skull_not_the_jaw(standin):
    cfg = TrainConfig(uv_resolution=32, sh_degree=0, mlp_width=16, mlp_depth=1, pe_freqs=2, shell_density=0.5)
    plain = build_avatar(standin, TrainConfig(**{**cfg.__dict__, "shell": "off"}))
    model = build_avatar(standin, cfg)
    n = plain.num_gaussians
    assert model.num_gaussians > n
    assert torch.equal(model.face_idx[:n], plain.face_idx) and not model.anchor_offset[:n].any()
    cond = torch.cat([neutral_condition(1), _jaw_open()])
    pts = model.base_points(standin.vertices(cond), standin.faces)
    assert torch.allclose(pts[0], model.canonical, atol=1e-6)  # neutral: the canonical positions
    assert float((pts[1, n:] - pts[0, n:]).norm(dim=-1).max()) <= 1e-4  # the jaw moves no shell Gaussian
    assert float((pts[1, :n] - pts[0, :n]).norm(dim=-1).max()) > 5e-3  # but it moves the face's


def test_avatar_files_round_trip_and_old_files_load(standin, tmp_path):
    from stages.gauss.trainer import avatar_dict

    cfg = TrainConfig(uv_resolution=16, sh_degree=0, mlp_width=8, mlp_depth=1, pe_freqs=1, shell_density=0.25)
    model = build_avatar(standin, cfg)
    torch.save(avatar_dict(model, standin, cfg, 0, 0), tmp_path / "a.pt")
    back, _ = load_avatar(tmp_path / "a.pt")
    assert torch.equal(back.anchor_offset, model.anchor_offset) and back.anchor_offset.any()
    old = {k: v for k, v in model.state_dict().items() if k != "anchor_offset"}  # written before the shell
    m2 = GaussianAvatar(old["face_idx"], old["bary"], old["canonical"], model.config)
    m2.load_state_dict(old)
    assert not m2.anchor_offset.any()


@torch.no_grad()
def test_shell_fills_the_scalp_in_a_render(standin):
    """Rendered from the front at initialisation, the region above the forehead is covered with
    the shell and mostly empty without it."""
    base = dict(uv_resolution=32, sh_degree=0, mlp_width=8, mlp_depth=1, pe_freqs=1, init_opacity=0.9)
    cond = neutral_condition(1)
    R = torch.diag(torch.tensor([1.0, -1.0, -1.0]))[None]  # camera looking at the face (+z towards it)
    t = torch.tensor([[0.0, 0.0, 0.6]])
    K = torch.tensor([[[120.0, 0, 32], [0, 120.0, 32], [0, 0, 1]]])
    viewmats, _ = cameras(R, t)
    cover = []
    for shell in ("off", "auto"):
        m = build_avatar(standin, TrainConfig(**base, shell=shell))
        g = m(m.base_points(standin.vertices(cond), standin.faces), cond)
        colors = torch.full((1, m.num_gaussians, 3), 0.5)
        _, alpha = render_gaussians_reference(g.means[0], g.quats[0], g.scales[0], g.opacities[0], colors, viewmats,
                                              K, 64, 64, torch.zeros(3))
        top = float(standin.neutral()[:, 1].max())
        row = int(32 - 120 * (top + 0.03) / 0.6)  # 3 cm above the forehead's top
        cover.append(float(alpha[0, row, 26:38].mean()))
    assert cover[0] < 0.2 and cover[1] > 0.8, cover


def test_shell_auto_only_on_face_only_meshes(standin):
    from stages.gauss.synthetic import toy_surface

    small = dict(uv_resolution=16, sh_degree=0, mlp_width=8, mlp_depth=1, pe_freqs=1)
    assert standin.face_only and not toy_surface().face_only
    n_off = build_avatar(standin, TrainConfig(**small, shell="off")).num_gaussians
    assert build_avatar(standin, TrainConfig(**small)).num_gaussians > n_off
    toy = toy_surface()
    n_toy = build_avatar(toy, TrainConfig(**small)).num_gaussians
    assert build_avatar(toy, TrainConfig(**small, shell="on")).num_gaussians > n_toy
    with pytest.raises(Exception, match="train.shell"):
        build_avatar(standin, TrainConfig(**small, shell="maybe"))


def test_bundle_keeps_shell_offsets_and_pose_reference(standin, tmp_path):
    from stages.export.actor import ActorAvatar
    from stages.export.bundle import read_bundle, write_bundle

    cfg = TrainConfig(uv_resolution=16, sh_degree=0, mlp_width=8, mlp_depth=1, pe_freqs=1, pose_condition=True)
    model = build_avatar(standin, cfg)
    model.pose_ref.copy_(torch.tensor([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]]))
    meta = {"shape": standin.shape, "num_vertices": 478, "num_faces": 906, "steps": 0}
    out = write_bundle(tmp_path / "b", ActorAvatar("a", model, meta, standin, None, {"kind": "standin"}))
    back, _ = read_bundle(out)
    ref = model.state_dict()
    assert set(back.state_dict()) == set(ref)
    for k, v in back.state_dict().items():
        assert torch.equal(v, ref[k]), k


# --- fitting the shell to the training silhouettes (a radial visual hull) ---

def _sphere_views(radius: float = 0.1, size: int = 64, yaws=(-0.5, 0.0, 0.5)) -> "Silhouettes":
    """Masks of a sphere at the origin seen from ``yaws`` (radians about +y), 1 m away, f = size."""
    from stages.gauss.shell import Silhouettes

    flip = torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64))  # model +z faces the camera
    K = torch.tensor([[size, 0, size / 2], [0, size, size / 2], [0, 0, 1]], dtype=torch.float64)
    uu, vv = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="xy")
    ray = torch.stack([(uu - size / 2) / size, (vv - size / 2) / size, torch.ones_like(uu)], -1).double()
    ray = ray / ray.norm(dim=-1, keepdim=True)
    # the sphere's centre is at (0, 0, 1) in every camera: a ray hits it where its distance to it < radius
    ez = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    dist = (ez - ray[..., 2:3] * ray).norm(dim=-1)  # |c - (c.r) r| with c = (0,0,1)
    mask = dist < radius
    Rs = []
    for a in yaws:
        c, s = np.cos(a), np.sin(a)
        Rs.append(flip @ torch.tensor([[c, 0, s], [0, 1, 0], [-s, 0, c]], dtype=torch.float64))
    n = len(yaws)
    return Silhouettes(mask.expand(n, -1, -1).clone(), torch.stack(Rs), torch.tensor([[0.0, 0, 1]] * n).double(),
                       K.expand(n, -1, -1).clone())


def test_hull_votes_count_the_masks_holding_a_point():
    from stages.gauss.shell import hull_votes

    sil = _sphere_views()
    p = torch.tensor([[0.0, 0, 0], [0.0, 0.09, 0], [0.0, 0.2, 0], [5.0, 0, 0]])
    v = hull_votes(p, sil)
    assert v.tolist() == [1.0, 1.0, 0.0, 0.0]  # centre and just inside the top: all views; outside: none
    # a mask emptied in one view: the point is held by 2 of the 3 frames
    sil.masks[1] = False
    assert abs(float(hull_votes(p[:1], sil)[0]) - 2 / 3) < 1e-9
    # a point no frame sees (behind every camera) gets no vote
    assert float(hull_votes(torch.tensor([[0.0, 0, -3.0]]), sil)[0]) == 0.0
    assert hull_votes(torch.zeros(4, 5, 3), sil).shape == (4, 5)


def _random_candidates(seed: int, n: int = 3000) -> torch.Tensor:
    """Points around the sphere of :func:`_sphere_views` and far off: inside, outside, off every
    image's edge, behind the cameras, and some exactly at a pixel's edge."""
    g = torch.Generator().manual_seed(seed)
    p = torch.randn(n, 3, generator=g, dtype=torch.float64) * torch.tensor([0.12, 0.12, 0.12], dtype=torch.float64)
    p[: n // 10] *= 20  # far off: off the images, behind the cameras (1 m away)
    p[n // 10: n // 5, :2] = torch.round(p[n // 10: n // 5, :2] * 64) / 64  # on the frontal view's pixel grid
    # just past the frontal view's right and bottom edges (u or v in [64, 65)) and before its left one
    edge = p[n // 5: n // 4]
    edge[:, 2] = 0.0
    edge[0::3, 0] = 0.5 + 0.01 * torch.rand(len(edge[0::3]), generator=g, dtype=torch.float64)
    edge[1::3, 1] = -0.5 - 0.01 * torch.rand(len(edge[1::3]), generator=g, dtype=torch.float64)
    edge[2::3, 0] = -0.5 - 0.01 * torch.rand(len(edge[2::3]), generator=g, dtype=torch.float64)
    return p.reshape(-1, 5, 3)


@pytest.mark.parametrize("chunk", [None, 7, 1 << 20])
def test_hull_votes_fast_path_equals_the_reference(chunk):
    """The blocked, flat-gather votes are the reference's, bit for bit, whatever the block size."""
    from stages.gauss.shell import hull_votes, hull_votes_reference

    sil = _sphere_views(radius=0.1, size=64, yaws=(-0.5, -0.2, 0.0, 0.3, 0.5))
    sil.masks[2, :10] = False  # views that disagree
    sil.masks[4, :, 40:] = False
    sil.masks[2, :, 0] = True  # the frontal view's edge columns and rows: a wrapped-around index would hit them
    sil.masks[2, :, -1] = True
    sil.masks[2, 0] = True
    p = _random_candidates(0)
    ref = hull_votes_reference(p, sil)
    fast = hull_votes(p, sil, chunk=chunk)
    assert fast.shape == ref.shape == (600, 5) and fast.dtype == torch.float64
    assert 0 < float((ref == 0).double().mean()) < 1 and 0 < float((ref == 1).double().mean()) < 1
    assert float(((ref > 0) & (ref < 1)).double().mean()) > 0.01  # partial votes are exercised too
    assert torch.equal(fast, ref.double())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_hull_votes_on_the_gpu_equal_the_cpu():
    from stages.gauss.shell import fit_radially, hull_votes

    sil = _sphere_views(radius=0.1, size=256, yaws=(-0.5, 0.0, 0.5))
    p = _random_candidates(1, 30000)
    cpu = hull_votes(p, sil)
    gpu = hull_votes(p, sil.to("cuda"))
    assert gpu.device == p.device
    # float64 on both; a projection within rounding of a pixel's edge may land on the other side
    assert float((gpu != cpu).double().mean()) < 1e-4
    u = p.reshape(-1, 3)[:2000]
    a = fit_radially(u, torch.zeros_like(u), sil)
    b = fit_radially(u, torch.zeros_like(u), sil.to("cuda"))
    assert a.shape == b.shape and torch.allclose(a, b)


def test_fit_radially_moves_points_to_the_hull_boundary():
    from stages.gauss.shell import _fibonacci_sphere, fit_radially

    sil = _sphere_views(radius=0.1, size=512)  # 2 mm pixels at 1 m
    u = _fibonacci_sphere(400)
    u = u[u[:, 2] > -0.3]
    for r0 in (0.07, 0.13):  # an ellipsoid inside the hair, or one sticking out of it
        out = fit_radially(r0 * u, torch.zeros_like(u), sil, inset=0.0, scales=(0.5, 2.0, 151))
        assert len(out) == len(u)  # every ray meets the hull
        r = out.norm(dim=-1)
        step = r0 * 1.5 / 150
        # never outside the sphere's silhouette in any view, never inside the sphere by more than a step
        # plus a pixel and a half (2 mm each)
        assert float(r.min()) > 0.1 - step - 0.003
        top = out[out[:, 1] > 0.9 * r]  # the top: on the rim of every view, so the hull is the sphere there
        assert len(top) and float((top.norm(dim=-1) - 0.1).abs().max()) < step + 0.003
    # the inset pulls every point back towards its centre by that much
    a = fit_radially(0.07 * u, torch.zeros_like(u), sil, inset=0.0)
    b = fit_radially(0.07 * u, torch.zeros_like(u), sil, inset=0.01)
    assert torch.allclose(a.norm(dim=-1) - b.norm(dim=-1), torch.full((len(a),), 0.01, dtype=torch.float64))
    # rays that never meet the hull (empty masks) drop their points
    sil.masks[:] = False
    assert len(fit_radially(0.07 * u, torch.zeros_like(u), sil)) == 0


def test_fitted_shell_lies_in_the_silhouettes_and_follows_them(standin):
    """On the stand-in, with masks of a made-up head larger than the plain ellipsoid: the fitted
    shell's points sit inside the masks and further out than the plain shell's."""
    from stages.gauss.shell import Silhouettes, hull_votes

    v, f = standin.neutral(), standin.faces
    plain = shell_points(v, f, 0.004, ShellConfig(density=0.5))
    # a frontal camera 0.6 m away; the mask: the plain shell's and the face's projections, dilated
    R = torch.diag(torch.tensor([1.0, -1.0, -1.0]))[None]
    t = torch.tensor([[0.0, 0.0, 0.6]]) - torch.einsum("ij,j->i", R[0], v.mean(0))[None]
    size = 160  # the whole head in view: 1 px = 3 mm
    K = torch.tensor([[[200.0, 0, size / 2], [0, 200.0, size / 2], [0, 0, 1]]])
    pts = torch.cat([plain, v])
    cam = pts @ R[0].T + t[0]
    uv = (cam @ K[0].T)[:, :2] / (cam @ K[0].T)[:, 2:]
    mask = torch.zeros(size, size, dtype=torch.bool)
    ij = uv.floor().long().clamp(0, size - 1)
    mask[ij[:, 1], ij[:, 0]] = True
    mask = torch.nn.functional.max_pool2d(mask[None, None].float(), 9, 1, 4)[0, 0] > 0  # 4 px wider all round
    sil = Silhouettes(mask[None], R, t, K)
    fitted = shell_points(v, f, 0.004, ShellConfig(density=0.5), silhouettes=sil)
    assert len(fitted) > 0.5 * len(plain)
    assert float(hull_votes(fitted, sil).min()) >= 0.7
    # the masks reach past the plain shell: the fitted points' outline is wider and taller
    assert float(fitted[:, 0].max() - fitted[:, 0].min()) > float(plain[:, 0].max() - plain[:, 0].min())
    assert float(fitted[:, 1].max()) > float(plain[:, 1].max())
    assert torch.equal(fitted, shell_points(v, f, 0.004, ShellConfig(density=0.5), silhouettes=sil))


def test_shell_silhouettes_read_the_training_masks(toy_dataset):
    from stages.dataset.layout import DatasetLayout
    from stages.gauss.data import TrackedSequence, find_dataset_root
    from stages.gauss.trainer import shell_silhouettes

    layout = find_dataset_root([p for p in toy_dataset.rglob("*") if p.is_file()])
    seq = TrackedSequence.load(layout)
    sil = shell_silhouettes(layout, seq, list(range(20)), 5, resolution=32)
    assert sil.masks.shape == (5, 32, 32) and sil.masks.dtype == torch.bool
    assert 0 < float(sil.masks.float().mean()) < 1  # a head, not the whole frame
    assert torch.allclose(sil.R[-1], torch.from_numpy(np.asarray(seq.R[19], np.float32)))
    assert shell_silhouettes(layout, seq, list(range(20)), 0) is None
    assert isinstance(layout, DatasetLayout)


def test_training_fits_the_shell_to_its_own_frames(toy_dataset, tmp_path, one_thread):
    """train() places the shell from the training frames' masks (the held-out frames play no part)
    and ``shell_fit_frames=0`` keeps the plain ellipsoid and tube (on the toy head, hairless, the
    two agree: the fit falls back to the plain shell)."""
    from stages.dataset.layout import DatasetLayout
    from stages.gauss.data import TrackedSequence
    from stages.gauss.synthetic import toy_surface
    from stages.gauss.trainer import plan_training, shell_silhouettes, train

    layout = DatasetLayout(toy_dataset)
    surface = toy_surface()
    cfg = TrainConfig(steps=1, batch_size=1, resolution=32, sh_degree=0, mlp_width=8, mlp_depth=1, pe_freqs=1,
                      uv_resolution=16, test_frames=0, test_fraction=0.15, checkpoint_every=0, workers=0,
                      shell="on", shell_density=0.5, shell_fit_frames=6)
    seq = TrackedSequence.load(layout)
    train_idx = plan_training(cfg, len(seq), seq.face_span()).split.train
    assert max(train_idx) < 20  # frames 20..23 are held out
    fitted = build_avatar(surface, cfg, shell_silhouettes(layout, seq, train_idx, 6))
    plain = build_avatar(surface, cfg)
    got = train(cfg, surface, layout, tmp_path / "a", "cpu").model
    assert torch.equal(got.canonical.cpu(), fitted.canonical)
    off = train(TrainConfig(**{**cfg.__dict__, "shell_fit_frames": 0}), surface, layout, tmp_path / "b", "cpu").model
    assert torch.equal(off.canonical.cpu(), plain.canonical)


def test_fit_radially_stops_at_max_z():
    """Frontal masks cannot bound depth; ``max_z`` (the face's front) does."""
    from stages.gauss.shell import _fibonacci_sphere, fit_radially

    sil = _sphere_views(radius=0.1, size=128)
    u = _fibonacci_sphere(200)
    u = u[u[:, 2] > 0.3]  # rays heading forward
    free = fit_radially(0.07 * u, torch.zeros_like(u), sil)
    capped = fit_radially(0.07 * u, torch.zeros_like(u), sil, max_z=0.05)
    assert float(free[:, 2].max()) > 0.06
    assert len(capped) == len(u) and float(capped[:, 2].max()) <= 0.05 + 1e-12


def test_thin_to_grid_keeps_one_point_per_cell():
    from stages.gauss.shell import thin_to_grid

    g = torch.arange(0, 0.05, 0.001, dtype=torch.float64)
    x, y = torch.meshgrid(g, g, indexing="ij")
    p = torch.stack([x.flatten(), y.flatten(), torch.zeros(x.numel(), dtype=torch.float64)], -1) + 1e-4
    q = thin_to_grid(p, 0.005)
    assert len(q) == 100  # 10 x 10 cells of 5 mm on a 5 cm square
    cells = torch.floor(q / 0.005).long()
    assert len(torch.unique(cells, dim=0)) == len(q)
    assert all(bool((p == r).all(-1).any()) for r in q[:10])  # a subset of the input, in order
    assert torch.equal(thin_to_grid(q, 0.005), q) and len(thin_to_grid(p[:0], 0.005)) == 0


def test_a_shell_carved_away_leaves_no_shell(standin):
    """Masks holding only the face (no hair, no neck: a bald or synthetic head) leave next to no shell
    points: then there is no shell at all (nothing beyond the face to draw; the plain one cost 35% more
    Gaussians for no gain on a hairless clip, docs/quality.md), and an avatar built so has only face
    Gaussians."""
    from stages.gauss.shell import MIN_FITTED, Silhouettes

    v, f = standin.neutral(), standin.faces
    plain = shell_points(v, f, 0.004, ShellConfig(density=0.5))
    R = torch.diag(torch.tensor([1.0, -1.0, -1.0]))[None]
    t = torch.tensor([[0.0, 0.0, 0.6]]) - torch.einsum("ij,j->i", R[0], v.mean(0))[None]
    K = torch.tensor([[[200.0, 0, 80], [0, 200.0, 80], [0, 0, 1]]])
    cam = v @ R[0].T + t[0]
    uv = ((cam @ K[0].T)[:, :2] / (cam @ K[0].T)[:, 2:]).floor().long().clamp(0, 159)
    mask = torch.zeros(160, 160, dtype=torch.bool)
    mask[uv[:, 1], uv[:, 0]] = True  # the face's vertices only
    sil = Silhouettes(mask[None], R, t, K)
    assert 0 < MIN_FITTED < 1
    assert len(plain) > 100
    assert shell_points(v, f, 0.004, ShellConfig(density=0.5), silhouettes=sil).shape == (0, 3)
    from stages.gauss.trainer import TrainConfig, build_avatar

    cfg = TrainConfig(uv_resolution=24, area_samples=800, shell="on")
    fitted = build_avatar(standin, cfg, sil)
    no_shell = build_avatar(standin, TrainConfig(**{**cfg.__dict__, "shell": "off"}))
    assert fitted.num_gaussians == no_shell.num_gaussians and not fitted.anchor_offset.any()
    assert build_avatar(standin, cfg).num_gaussians > no_shell.num_gaussians + 100  # no masks: the plain shell
