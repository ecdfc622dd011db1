"""The avatar module."""

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
    g = model(pts, cond)
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
