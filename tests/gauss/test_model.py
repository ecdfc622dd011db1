"""The avatar module."""

import pytest
import torch

from stages.gauss.model import DeformMLP, positional_encoding
from stages.gauss.surface import neutral_condition
from stages.gauss.synthetic import toy_surface
from stages.gauss.trainer import TrainConfig, build_avatar


def test_split_first_layer_equals_mlp_on_concatenation():
    torch.manual_seed(0)
    mlp = DeformMLP(9, 5, 16, 2)
    torch.nn.init.normal_(mlp.out.weight)
    pe, cond = torch.randn(7, 9), torch.randn(3, 5)
    out = mlp(pe, cond)
    W = torch.cat([mlp.pos_in.weight, mlp.cond_in.weight], 1)
    x = torch.cat([pe.expand(3, -1, -1), cond[:, None].expand(-1, 7, -1)], -1)
    h = torch.relu(x @ W.T + mlp.pos_in.bias)
    h = torch.relu(mlp.hidden[0](h))
    assert torch.allclose(out, mlp.out(h), atol=1e-5)


def test_positional_encoding_shape():
    assert positional_encoding(torch.zeros(4, 3), 6).shape == (4, 39)


def test_fresh_avatar_sits_on_the_tracked_mesh():
    surf = toy_surface()
    model = build_avatar(surf, TrainConfig(uv_resolution=16, sh_degree=2, mlp_width=32, mlp_depth=2, pe_freqs=3))
    assert model.num_gaussians == 256
    cond = neutral_condition(2)
    cond[1, 0] = 1.0  # an expression moves the mesh
    verts = surf.vertices(cond)
    pts = model.base_points(verts, surf.faces)
    g = model.pose(verts, surf.faces, cond)
    assert g.means.shape == (2, 256, 3) and g.quats.shape == (2, 256, 4) and g.opacities.shape == (2, 256)
    assert torch.allclose(g.means, pts)  # zero-initialised last layer: no offsets yet
    assert not torch.allclose(pts[0], pts[1])
    assert g.sh.shape == (256, 9, 3)
    rgb = model.colors(g, torch.zeros(2, 3))
    assert torch.allclose(rgb, torch.full_like(rgb, 0.5), atol=1e-6)
    # gradients reach every parameter group
    (rgb.sum() + g.means.sum() + g.scales.sum() + g.quats.sum() + g.opacities.sum()).backward()
    assert model.mlp.out.weight.grad is not None and model.sh_dc.grad is not None


def test_deterministic_init():
    surf = toy_surface()
    cfg = TrainConfig(uv_resolution=8, mlp_width=16, mlp_depth=1, pe_freqs=2, seed=3)
    a, b = build_avatar(surf, cfg), build_avatar(surf, cfg)
    for (k, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), k


def _small(triangle_scale: bool = True) -> TrainConfig:
    return TrainConfig(uv_resolution=16, sh_degree=1, mlp_width=16, mlp_depth=1, pe_freqs=2,
                       triangle_scale=triangle_scale)


def test_gaussians_follow_their_triangle_size():
    """Neutral mesh: scales as stored. A mesh twice as large: twice the extent. A collapsed triangle:
    its Gaussians vanish. With ``triangle_scale`` off the scales ignore the mesh (the old model)."""
    from stages.gauss.sampling import triangle_size

    surf = toy_surface()
    model = build_avatar(surf, _small())
    torch.nn.init.normal_(model.mlp.out.weight, std=0.1)  # non-zero scale offsets from the MLP
    cond = neutral_condition(3)
    v0 = surf.vertices(cond[:1])[0]
    verts = torch.stack([v0, 2.0 * v0, v0.clone()])
    from stages.gauss.model import MIN_TRIANGLE_SIZE

    flat = model.canonical_size <= MIN_TRIANGLE_SIZE  # the UV sphere's pole triangles: no ratio (1)
    assert 0 < flat.sum() < model.num_gaussians
    f = int(model.face_idx[~flat][0])
    tri = surf.faces[f]
    verts[2, tri[1]] = verts[2, tri[0]]  # collapse a Gaussian's triangle
    g = model.pose(verts, surf.faces, cond)
    pe = positional_encoding((model.canonical - model.pe_center) / model.pe_halfsize, model.config.pe_freqs)
    plain = torch.exp(model.log_scale.unsqueeze(0) + model.mlp(pe, cond)[..., 7:])  # without the triangles
    assert torch.allclose(model.canonical_size, triangle_size(v0, surf.faces, model.face_idx))
    assert torch.allclose(g.scales[0], plain[0], rtol=1e-5)  # neutral: factor 1
    assert torch.allclose(g.scales[1][~flat], 2.0 * plain[1][~flat], rtol=1e-5)
    assert torch.allclose(g.scales[1][flat], plain[1][flat], rtol=1e-5)
    on_f = model.face_idx == f
    assert g.scales[2][on_f].max() < 1e-6  # collapsed: gone
    moved = (model.face_idx.unsqueeze(1) == torch.nonzero((surf.faces == tri[1]).any(1)).reshape(1, -1)).any(1)
    assert moved.sum() > on_f.sum()
    assert torch.allclose(g.scales[2][~moved], plain[2][~moved], rtol=1e-5)  # triangles not touched keep theirs
    off = build_avatar(surf, _small(False))
    off.load_state_dict({k: v for k, v in model.state_dict().items() if k != "canonical_size"})
    g_off = off.pose(verts, surf.faces, cond)
    assert torch.allclose(g_off.scales[1], plain[1], rtol=1e-5) and "canonical_size" not in off.state_dict()
    with pytest.raises(ValueError, match="size_ratio"):
        model(model.base_points(verts, surf.faces), cond)


def test_avatar_files_without_triangle_scale_load_as_trained(tmp_path):
    """An avatar file written before ``triangle_scale`` existed (no key, no ``canonical_size``) renders
    with the scales it was trained with; a new one round-trips its ``canonical_size``."""
    from dataclasses import asdict

    from stages.gauss import checkpoint as ckpt
    from stages.gauss.trainer import avatar_dict, load_avatar

    surf = toy_surface()
    new = build_avatar(surf, _small())
    ckpt.save_atomic(avatar_dict(new, surf, _small(), 0, 0), tmp_path / "new.pt")
    loaded, _ = load_avatar(tmp_path / "new.pt")
    assert loaded.config.triangle_scale and torch.equal(loaded.canonical_size, new.canonical_size)
    old = avatar_dict(build_avatar(surf, _small(False)), surf, _small(False), 0, 0)
    cfg = asdict(build_avatar(surf, _small(False)).config)
    del cfg["triangle_scale"]
    old["avatar_config"] = cfg
    ckpt.save_atomic(old, tmp_path / "old.pt")
    loaded_old, _ = load_avatar(tmp_path / "old.pt")
    assert not loaded_old.config.triangle_scale
    cond = neutral_condition(1)
    v = 1.5 * surf.vertices(cond)
    assert torch.allclose(loaded_old.pose(v, surf.faces, cond).scales, torch.exp(loaded_old.log_scale)[None])


def test_pose_condition_moves_gaussians_with_the_head_rotation_only_when_on():
    from stages.face.rotation import axis_angle_to_matrix
    from stages.gauss.trainer import mean_rotation

    surf = toy_surface()
    small = dict(uv_resolution=8, sh_degree=0, mlp_width=16, mlp_depth=2, pe_freqs=2)
    R = axis_angle_to_matrix(torch.tensor([[0.0, 0.0, 0.0], [0.3, 0.1, 0.0]]))
    cond = neutral_condition(2)
    for on in (False, True):
        torch.manual_seed(0)
        model = build_avatar(surf, TrainConfig(**small, pose_condition=on))
        torch.nn.init.normal_(model.mlp.out.weight)
        assert ("pose_ref" in model.state_dict()) == on and ("mlp.pose_in.weight" in model.state_dict()) == on
        feat = model.pose_feature(R)
        pts = model.base_points(surf.vertices(cond), surf.faces)
        g = model(pts, cond, pose=feat)
        if on:
            assert feat.shape == (2, 6) and torch.allclose(feat[0], torch.zeros(6))  # zero at the reference
            assert not torch.allclose(g.means[0], g.means[1])
            assert torch.allclose(model(pts, cond).means[0], g.means[0])  # None: the reference pose
        else:
            assert feat is None and torch.allclose(g.means[0], g.means[1])
    Rs = axis_angle_to_matrix(torch.tensor([[0.1, 0.0, 0.0], [-0.1, 0.0, 0.0]]).double())
    assert torch.allclose(mean_rotation(Rs), torch.eye(3, dtype=torch.float64), atol=1e-12)
