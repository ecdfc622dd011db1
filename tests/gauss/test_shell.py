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
