"""Gaussians in their triangle's local frame (stages.gauss.triangle_frame) and the binding regulariser."""

import math

import pytest
import torch

from stages.gauss.render_ref import covariance_3d, quat_to_rotmat
from stages.gauss.surface import neutral_condition
from stages.gauss.synthetic import toy_surface
from stages.gauss.trainer import TrainConfig, build_avatar
from stages.gauss.triangle_frame import (deformed_covariance_reference, in_triangle_frame, quat_multiply,
                                         rotmat_to_quat, triangle_basis, triangle_deformation)


def _random_rotations(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(n, 4, generator=g, dtype=torch.float64)
    return quat_to_rotmat(q)


def test_rotmat_to_quat_inverts_quat_to_rotmat_including_half_turns():
    R = _random_rotations(200)
    half = torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64))  # 180 deg about x: trace -1
    R = torch.cat([R, half[None], torch.eye(3, dtype=torch.float64)[None]])
    q = rotmat_to_quat(R)
    assert torch.allclose(q.norm(dim=-1), torch.ones(len(R), dtype=torch.float64))
    assert torch.allclose(quat_to_rotmat(q), R, atol=1e-12)
    a, b = torch.randn(5, 4, dtype=torch.float64), torch.randn(5, 4, dtype=torch.float64)
    assert torch.allclose(quat_to_rotmat(quat_multiply(a, b)), quat_to_rotmat(a) @ quat_to_rotmat(b), atol=1e-12)


def _triangle(scale_y: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    v = torch.tensor([[0.0, 0.0, 0.0], [0.01, 0.0, 0.0], [0.0, 0.01 * scale_y, 0.0]], dtype=torch.float64)
    return v, torch.tensor([[0, 1, 2]])


def test_deformation_is_the_identity_on_the_neutral_mesh_and_follows_a_rigid_scaled_motion():
    v, f = _triangle()
    idx = torch.zeros(1, dtype=torch.long)
    basis = triangle_basis(v, f, idx)
    F, Q = triangle_deformation(basis[None], basis)
    assert torch.allclose(F, torch.eye(3, dtype=F.dtype)) and torch.allclose(Q, torch.eye(3, dtype=Q.dtype))
    Rm = _random_rotations(1, seed=3)[0]
    moved = 1.7 * v @ Rm.T + torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64)
    F, Q = triangle_deformation(triangle_basis(moved, f, idx)[None], basis)
    # edges map onto the posed edges; the unit normal onto the posed unit normal (thickness kept)
    assert torch.allclose(F[0, 0] @ (v[1] - v[0]), moved[1] - moved[0], atol=1e-12)
    assert torch.allclose(Q[0, 0], Rm, atol=1e-12)
    assert torch.allclose(F[0, 0] @ torch.tensor([0, 0, 1.0], dtype=torch.float64), Rm[:, 2], atol=1e-12)


def test_per_axis_frame_equals_the_exact_deformed_covariance_for_aligned_gaussians():
    """A triangle squashed to a fifth of its height (a shutting eye's opening): a Gaussian whose
    axes lie along the triangle's sides gets exactly the squashed covariance, and its width stays;
    under a rigid motion any Gaussian does. A Gaussian at 45 degrees shrinks less than exactly
    (the per-axis form keeps its axes), never more."""
    v, f = _triangle()
    idx = torch.zeros(1, dtype=torch.long)
    basis = triangle_basis(v, f, idx)
    squashed, _ = _triangle(0.2)
    F, Q = triangle_deformation(triangle_basis(squashed, f, idx)[None], basis)
    s = torch.tensor([[[0.003, 0.002, 0.0005]]], dtype=torch.float64)
    aligned = torch.tensor([[[1.0, 0.0, 0.0, 0.0]]], dtype=torch.float64)
    means, q, sc, _ = in_triangle_frame(torch.zeros(1, 1, 3, dtype=torch.float64),
                                     torch.tensor([[[0.0, 0.004, 0.001]]], dtype=torch.float64), aligned, s, F, Q)
    assert torch.allclose(sc[0, 0], torch.tensor([0.003, 0.0004, 0.0005], dtype=torch.float64))
    assert torch.allclose(means[0, 0], torch.tensor([0.0, 0.0008, 0.001], dtype=torch.float64))  # offset squashed too
    exact = deformed_covariance_reference(aligned[0], s[0], F[0])
    assert torch.allclose(covariance_3d(q[0], sc[0]), exact, atol=1e-15)
    diag = torch.tensor([[[math.cos(math.pi / 8), 0.0, 0.0, math.sin(math.pi / 8)]]], dtype=torch.float64)  # 45 deg about z
    _, q45, s45, _ = in_triangle_frame(torch.zeros(1, 1, 3, dtype=torch.float64), torch.zeros(1, 1, 3, dtype=torch.float64),
                                    diag, s, F, Q)
    ours = torch.linalg.eigvalsh(covariance_3d(q45[0], s45[0]))
    true = torch.linalg.eigvalsh(deformed_covariance_reference(diag[0], s[0], F[0]))
    assert (ours.sum(-1) >= true.sum(-1) - 1e-15).all() and ours.max() < torch.linalg.eigvalsh(covariance_3d(diag[0], s[0])).max()
    # a rigid motion: exact for any orientation
    Rm = _random_rotations(1, seed=5)[0]
    F, Q = triangle_deformation(triangle_basis(v @ Rm.T, f, idx)[None], basis)
    qr = rotmat_to_quat(_random_rotations(1, seed=6))[None]
    _, q2, s2, _ = in_triangle_frame(torch.zeros(1, 1, 3, dtype=torch.float64), torch.zeros(1, 1, 3, dtype=torch.float64),
                                  qr, s, F, Q)
    assert torch.allclose(covariance_3d(q2[0], s2[0]), deformed_covariance_reference(qr[0], s[0], F[0]), atol=1e-15)


def _small(**kw) -> TrainConfig:
    return TrainConfig(uv_resolution=16, sh_degree=1, mlp_width=16, mlp_depth=1, pe_freqs=2,
                       **{"triangle_frame": False, "triangle_frame_region": "all", **kw})


def test_avatar_in_the_triangle_frame_is_the_plain_avatar_on_the_neutral_mesh_and_follows_a_squash():
    surf = toy_surface()
    plain = build_avatar(surf, _small())
    framed = build_avatar(surf, _small(triangle_frame=True))
    torch.nn.init.normal_(plain.mlp.out.weight, std=0.1)
    framed.load_state_dict({**plain.state_dict(), "canonical_basis": framed.canonical_basis,
                            "frame_mask": framed.frame_mask})
    cond = neutral_condition(2)
    v0 = surf.vertices(cond[:1])[0]
    verts = torch.stack([v0, v0 * torch.tensor([1.0, 0.5, 1.0])])  # the whole head squashed to half its height
    gp, gf = plain.pose(verts[:1], surf.faces, cond[:1]), framed.pose(verts, surf.faces, cond)
    assert torch.allclose(gf.means[0], gp.means[0], atol=1e-7)
    assert torch.allclose(covariance_3d(gf.quats[0], gf.scales[0]), covariance_3d(gp.quats[0], gp.scales[0]),
                          atol=1e-9, rtol=1e-4)  # float32 frames: 1e-9 m^2 of 7e-5
    # squashed: an offset's deviation from the head's mean offset, along its triangle's plane, is
    # squashed as the mesh is; its part along the normal stays that long and turns with the normal;
    # the mean offset (the avatar's shift against the mesh) stays; no Gaussian grows
    base = framed.base_points(verts, surf.faces)
    ok = framed.canonical_basis.det().abs() > 1e-18
    n0 = framed.canonical_basis[:, :, 2]
    n1 = triangle_basis(verts[1], surf.faces, framed.face_idx)[:, :, 2]
    dbar = gf.offsets[1].mean(0)
    d = gf.offsets[1] - dbar
    along = (d * n0).sum(-1, keepdim=True)
    expect = dbar + (d - along * n0) * torch.tensor([1.0, 0.5, 1.0]) + along * n1
    assert torch.allclose((gf.means[1] - base[1])[ok], expect[ok], atol=1e-7)
    assert not torch.allclose((gf.means[1] - base[1])[ok], gf.offsets[1][ok], atol=1e-5)
    assert (gf.scales[1] <= gf.base_scales[1] * (1 + 1e-5)).all()
    assert not build_avatar(surf, _small(triangle_frame=True, triangle_scale=True)).config.triangle_frame
    with pytest.raises(ValueError, match="frame"):
        framed(framed.base_points(verts, surf.faces), cond)


def test_triangle_frame_avatar_files_round_trip_and_old_files_load(tmp_path):
    from dataclasses import asdict

    from stages.gauss import checkpoint as ckpt
    from stages.gauss.trainer import avatar_dict, load_avatar

    surf = toy_surface()
    cfg = _small(triangle_frame=True)
    new = build_avatar(surf, cfg)
    ckpt.save_atomic(avatar_dict(new, surf, cfg, 0, 0), tmp_path / "new.pt")
    loaded, _ = load_avatar(tmp_path / "new.pt")
    assert loaded.config.triangle_frame and torch.equal(loaded.canonical_basis, new.canonical_basis)
    old = avatar_dict(build_avatar(surf, _small()), surf, _small(), 0, 0)
    old["avatar_config"] = {k: v for k, v in asdict(build_avatar(surf, _small()).config).items() if k != "triangle_frame"}
    ckpt.save_atomic(old, tmp_path / "old.pt")
    loaded_old, _ = load_avatar(tmp_path / "old.pt")
    assert not loaded_old.config.triangle_frame and "canonical_basis" not in loaded_old.state_dict()


def test_binding_loss_is_zero_near_the_triangle_and_pulls_far_gaussians_back():
    from stages.gauss.losses import binding_loss

    size = torch.tensor([0.002, 0.002, 0.004])
    mask = torch.tensor([True, True, False])
    offsets = torch.tensor([[[0.001, 0, 0], [0.006, 0, 0], [0.05, 0, 0]]], requires_grad=True)
    scales = torch.tensor([[[0.001, 0.001, 0.001], [0.0016, 0.001, 0.001], [0.1, 0.1, 0.1]]])
    pos, scl = binding_loss(offsets, scales, size, mask, pos_threshold=1.0, scale_threshold=0.6)
    pos_v, scl_v = float(pos.detach()), float(scl)
    assert math.isclose(pos_v, (3.0 - 1.0) / 2, rel_tol=1e-5)  # only the second, 3 sizes away, counts
    assert math.isclose(scl_v, (0.8 - 0.6) / 2, rel_tol=1e-4)
    pos.backward()
    assert offsets.grad[0, 1, 0] > 0 and offsets.grad[0, 0].abs().sum() == 0 and offsets.grad[0, 2].abs().sum() == 0
    z, _ = binding_loss(offsets, scales, size, torch.zeros(3, dtype=torch.bool))
    assert float(z) == 0.0


def test_eye_region_gaussians_of_the_standin_are_around_its_eyes():
    from stages.face.model import load_face_model
    from stages.gauss.eye_region import eye_region_gaussians
    from stages.gauss.surface import flame_surface

    data = load_face_model(None)
    surf = flame_surface(data, torch.zeros(300))
    model = build_avatar(surf, TrainConfig(uv_resolution=32, shell="off", sh_degree=0, mlp_width=8, mlp_depth=1,
                                           pe_freqs=1))
    eyes = eye_region_gaussians(surf.masks, surf.faces, model.face_idx)
    assert 0 < eyes.sum() < 0.2 * model.num_gaussians
    neutral = surf.neutral()
    centre_l, centre_r = neutral[473], neutral[468]  # the iris centres
    pts = model.canonical[eyes]
    d = torch.minimum((pts - centre_l).norm(dim=-1), (pts - centre_r).norm(dim=-1))
    assert d.max() < 0.05  # within a few centimetres of an eye (brows included)
    assert (pts[:, 1] > neutral[1, 1]).all()  # all above the nose tip (MediaPipe point 1): no mouth
    assert not eye_region_gaussians({}, surf.faces, model.face_idx).any()


def test_bundle_of_a_triangle_frame_avatar_is_version_3_and_poses_as_the_avatar(tmp_path):
    from stages.export.actor import ActorAvatar
    from stages.export.bundle import read_bundle, write_bundle
    from stages.export.pose import pose_gaussians
    from stages.face.model import load_face_model
    from stages.gauss.surface import flame_surface

    surf = flame_surface(load_face_model(None), torch.zeros(300))
    cfg = TrainConfig(uv_resolution=16, sh_degree=0, mlp_width=8, mlp_depth=1, pe_freqs=1, triangle_frame=True,
                      triangle_frame_region="eyes")
    model = build_avatar(surf, cfg)
    assert model.config.triangle_frame and 0 < int(model.frame_mask.sum()) < model.num_gaussians  # the eyes only
    with torch.no_grad():
        model.mlp.out.weight[:3].normal_(std=0.1)  # position offsets only: the scales change with the mesh alone
    meta = {"shape": surf.shape, "num_vertices": 478, "num_faces": 906, "steps": 0}
    out = write_bundle(tmp_path / "b", ActorAvatar("a", model, meta, surf, None, {"kind": "standin"}))
    back, doc = read_bundle(out)
    assert doc["format"] == "avatar-bundle/3" and doc["avatar_config"]["triangle_frame"]
    ref = model.state_dict()
    assert set(back.state_dict()) == set(ref)
    for k, v in back.state_dict().items():
        assert torch.equal(v, ref[k]), k
    cond = neutral_condition(2)
    cond[1, -2:] = 1.0  # both eyes shut
    mine, theirs = pose_gaussians(back, surf, cond), pose_gaussians(model, surf, cond)
    assert torch.equal(mine.means, theirs.means) and torch.equal(mine.scales, theirs.scales)
    # shutting the eyes squashes the frame's Gaussians only
    moved = (theirs.scales[1] - theirs.scales[0]).abs().amax(-1) > 1e-7
    assert moved.any() and not moved[~model.frame_mask].any()


def test_exact_covariance_of_any_gaussian_and_its_rotation_and_scales():
    """The covariances the renderers draw are ``F R S^2 R^T F^T`` for any orientation; their
    eigen-decomposition (for the PLY export and the viewer) gives back the same covariance."""
    g = torch.Generator().manual_seed(4)
    n = 64
    F = torch.randn(1, n, 3, 3, generator=g, dtype=torch.float64)
    q = torch.randn(1, n, 4, generator=g, dtype=torch.float64)
    s = torch.rand(1, n, 3, generator=g, dtype=torch.float64) * 0.01 + 0.001
    z = torch.zeros(1, n, 3, dtype=torch.float64)
    _, _, _, cov = in_triangle_frame(z, z, q, s, F, torch.eye(3, dtype=torch.float64).expand(1, n, 3, 3))
    assert torch.allclose(cov[0], deformed_covariance_reference(q[0], s[0], F[0]), atol=1e-18, rtol=1e-10)
    from stages.gauss.triangle_frame import covariance_to_quats_scales

    q2, s2 = covariance_to_quats_scales(cov)
    assert torch.allclose(covariance_3d(q2, s2), cov, atol=1e-16, rtol=1e-8)


def test_reference_renderer_draws_covariances_as_their_quats_and_scales():
    from stages.gauss.render_ref import render_gaussians_reference, viewmat_from_rt

    g = torch.Generator().manual_seed(5)
    n = 40
    means = torch.randn(n, 3, generator=g, dtype=torch.float64) * 0.05
    q = torch.randn(n, 4, generator=g, dtype=torch.float64)
    s = torch.rand(n, 3, generator=g, dtype=torch.float64) * 0.01 + 0.002
    o = torch.rand(n, generator=g, dtype=torch.float64) * 0.8 + 0.1
    c = torch.rand(n, 3, generator=g, dtype=torch.float64)
    vm = viewmat_from_rt(torch.eye(3, dtype=torch.float64), torch.tensor([0, 0, 0.5], dtype=torch.float64))
    K = torch.tensor([[60.0, 0, 16], [0, 60.0, 16], [0, 0, 1]], dtype=torch.float64)
    a_img, a_alpha = render_gaussians_reference(means, q, s, o, c, vm, K, 32, 32)
    b_img, b_alpha = render_gaussians_reference(means, None, None, o, c, vm, K, 32, 32, covars=covariance_3d(q, s))
    assert torch.allclose(a_img, b_img, atol=1e-12) and torch.allclose(a_alpha, b_alpha, atol=1e-12)


def test_a_triangle_collapsed_to_a_point_flattens_its_gaussians():
    """A shut eye shrinks the stand-in's iris disc to a point: the Gaussians on it must flatten to
    nothing seen along the normal, not keep their size."""
    v, f = _triangle()
    idx = torch.zeros(1, dtype=torch.long)
    basis = triangle_basis(v, f, idx)
    point = v.mean(0, keepdim=True).expand(3, 3)
    F, Q = triangle_deformation(triangle_basis(point, f, idx)[None], basis)
    q = rotmat_to_quat(_random_rotations(1, seed=8))[None]
    s = torch.full((1, 1, 3), 0.003, dtype=torch.float64)
    z = torch.zeros(1, 1, 3, dtype=torch.float64)
    _, _, _, cov = in_triangle_frame(z, z, q, s, F, Q)
    in_plane = cov[0, 0, :2, :2]  # the triangle lies in z = 0: x and y are its plane
    assert in_plane.abs().max() < 1e-20 and cov[0, 0, 2, 2] > 1e-6
    assert torch.equal(Q[0, 0], torch.eye(3, dtype=Q.dtype))


def test_eye_face_samples_add_gaussians_on_every_eye_region_face():
    from stages.face.model import load_face_model
    from stages.gauss.eye_region import eye_region_faces
    from stages.gauss.surface import flame_surface

    surf = flame_surface(load_face_model(None), torch.zeros(300))
    small = dict(uv_resolution=16, sh_degree=0, mlp_width=8, mlp_depth=1, pe_freqs=1, shell="off")
    plain = build_avatar(surf, TrainConfig(**small))
    more = build_avatar(surf, TrainConfig(**small, eye_face_samples=3))
    eye = eye_region_faces(surf.masks, surf.faces) & surf.face_mask
    assert more.num_gaussians == plain.num_gaussians + 3 * int(eye.sum())
    counts = torch.bincount(more.face_idx, minlength=surf.faces.shape[0])
    assert (counts[eye] >= 3).all()
    assert eye_region_faces(surf.masks, surf.faces, grow=1).sum() > eye.sum()


def test_export_pose_draws_what_the_renderer_draws_for_a_shut_eye():
    """The PLY export and the viewer get a triangle-frame avatar's covariances as rotations and scales
    (``pose_gaussians``): rendered from those, a shut-eye frame is the renderer's own image."""
    from stages.export.pose import pose_gaussians
    from stages.face.model import load_face_model
    from stages.gauss.render_ref import render_gaussians_reference
    from stages.gauss.surface import flame_surface
    from stages.gauss.trainer import cameras

    surf = flame_surface(load_face_model(None), torch.zeros(300))
    model = build_avatar(surf, TrainConfig(uv_resolution=32, sh_degree=0, mlp_width=8, mlp_depth=1, pe_freqs=1,
                                           shell="off", triangle_frame=True, init_opacity=0.9))
    with torch.no_grad():
        model.mlp.out.weight.normal_(std=0.05)
    cond = neutral_condition(1)
    cond[0, -2:] = 1.0
    R = torch.diag(torch.tensor([1.0, -1.0, -1.0]))[None]
    t = torch.tensor([[0.0, 0.0, 0.5]])
    K = torch.tensor([[[150.0, 0, 32], [0, 150.0, 32], [0, 0, 1]]])
    vm, centers = cameras(R, t)
    with torch.no_grad():
        g = model.pose(surf.vertices(cond), surf.faces, cond)
        colors = model.colors(g, centers)
        a, _ = render_gaussians_reference(g.means, None, None, g.opacities, colors, vm, K, 64, 64, covars=g.covars)
        p = pose_gaussians(model, surf, cond)
        b, _ = render_gaussians_reference(p.means, p.quats, p.scales, g.opacities, colors, vm, K, 64, 64)
    assert g.covars is not None and (a - b).abs().max() < 1e-4


def test_training_in_the_triangle_frame_learns_and_the_binding_term_holds_offsets(toy_dataset, tmp_path):
    """A short training with the triangle frame (covariances through the reference renderer's backward
    pass) lowers the loss; with the binding regulariser on every Gaussian its offsets (from the head's
    mean offset) end up smaller than without."""
    from stages.dataset.layout import DatasetLayout
    from stages.gauss.trainer import train

    base = dict(steps=30, batch_size=4, resolution=48, sh_degree=1, mlp_width=32, mlp_depth=2, pe_freqs=3,
                uv_resolution=24, test_frames=0, test_fraction=0.15, checkpoint_every=0, workers=0,
                mlp_lr=3e-3, log_every=10, triangle_frame=True, triangle_frame_region="all", seed=2)
    layout = DatasetLayout(toy_dataset)
    surf = toy_surface()
    spread = []
    for name, extra in (("free", {}), ("bound", {"binding_region": "all", "binding_pos_weight": 1.0,
                                                 "binding_pos_threshold": 0.05})):
        r = train(TrainConfig(**base, **extra), surf, layout, tmp_path / name, "cpu")
        assert r.model.config.triangle_frame and r.losses[-1] < r.losses[0], (name, r.losses)
        cond = neutral_condition(1)
        with torch.no_grad():
            g = r.model.pose(surf.vertices(cond), surf.faces, cond)
        d = g.offsets[0] - g.offsets[0].mean(0)
        spread.append(float(d.norm(dim=-1).mean()))
    print("mean offset spread (m), free and bound:", spread)
    assert spread[1] < 0.8 * spread[0], spread
