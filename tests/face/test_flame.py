"""FLAME nn.Module: equals the float64 reference, pads components, differentiable, batched."""

import pickle

import numpy as np
import pytest
import torch

from stages.errors import BadInput
from stages.face import flame_file as ff
from stages.face.flame import FLAME, flame_reference
from stages.face.model import load_face_model
from stages.face.rotation import axis_angle_to_matrix, matrix_to_rotation_6d


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("flame")
    pkl = ff.write_fake_flame_pkl(d / "generic_model.pkl", seed=7, n_vertices=602, n_faces=1200)
    rng = np.random.default_rng(0)
    np.savez(d / "mp.npz", lmk_face_idx=rng.integers(0, 1200, 30), lmk_b_coords=rng.dirichlet([1, 1, 1], 30),
             landmark_indices=np.arange(30) * 3)
    np.save(d / "lmk68.npy", {"full_lmk_faces_idx": rng.integers(0, 1200, (1, 68)),
                              "full_lmk_bary_coords": rng.dirichlet([1, 1, 1], (1, 68))}, allow_pickle=True)
    (d / "masks.pkl").write_bytes(pickle.dumps({"face": np.arange(100), "lips": np.arange(5),
                                                "boundary": np.arange(3)}, protocol=2))
    np.savez(d / "eyelids.npz", l_eyelid=rng.normal(size=(602, 3)) * 1e-3, r_eyelid=rng.normal(size=(602, 3)) * 1e-3)
    return d, pkl


@pytest.fixture(scope="module")
def data(model_files):
    d, pkl = model_files
    return load_face_model(pkl, masks=d / "masks.pkl", mediapipe_embedding=d / "mp.npz",
                           landmark_embedding=d / "lmk68.npy", eyelids=d / "eyelids.npz")


def _params(B, seed=0, dtype=torch.float64, n_shape=300, n_exp=100):
    g = torch.Generator().manual_seed(seed)

    def r6(scale):
        return matrix_to_rotation_6d(axis_angle_to_matrix(torch.randn(B, 3, generator=g, dtype=torch.float64) * scale))

    p = dict(shape=torch.randn(B, n_shape, generator=g, dtype=torch.float64),
             expression=torch.randn(B, n_exp, generator=g, dtype=torch.float64),
             jaw=r6(0.3), eyes=torch.cat([r6(0.3), r6(0.3)], 1), neck=r6(0.3), rotation=r6(0.5),
             eyelids=torch.rand(B, 2, generator=g, dtype=torch.float64),
             translation=0.1 * torch.randn(B, 3, generator=g, dtype=torch.float64))
    return {k: v.to(dtype) for k, v in p.items()}


def test_load_face_model(data):
    assert data.v_template.shape == (602, 3) and data.faces.shape == (1200, 3)
    assert data.shapedirs.shape == (602, 3, 300) and data.exprdirs.shape == (602, 3, 100)
    assert data.posedirs.shape == (36, 602 * 3) and data.J_regressor.shape == (5, 602)
    assert data.eyelids.shape == (2, 602, 3) and data.mp_index.shape == (30,)
    assert data.lmk68_face_idx.shape == (68,) and set(data.masks) == {"face", "lips", "boundary"}
    assert data.name == "FLAME2020"


def test_mismatched_embedding_is_bad_input(model_files, tmp_path):
    d, pkl = model_files
    np.savez(tmp_path / "mp.npz", lmk_face_idx=np.array([5000]), lmk_b_coords=np.full((1, 3), 1 / 3),
             landmark_indices=np.array([0]))
    with pytest.raises(BadInput, match="face index 5000 but the model has 1200 faces"):
        load_face_model(pkl, mediapipe_embedding=tmp_path / "mp.npz")


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_forward_equals_reference(data, dtype, tol):
    model = FLAME(data, dtype=dtype)
    p = _params(4, seed=1, dtype=dtype)
    out = model(**p)
    ref = flame_reference(data, **{k: v.double().numpy() for k, v in p.items()})
    for key in ("vertices", "landmarks_mp", "landmarks_68", "joints"):
        got = getattr(out, key).double().numpy()
        assert got.shape == ref[key].shape
        rel = np.abs(got - ref[key]).max() / np.abs(ref[key]).max()
        assert rel < tol, (key, rel)


def test_neutral_is_template(data):
    model = FLAME(data, dtype=torch.float64)
    out = model(**model.neutral(2))
    np.testing.assert_allclose(out.vertices[1].numpy(), data.v_template, atol=1e-12)
    np.testing.assert_allclose(out.joints[0].numpy(), data.J_regressor @ data.v_template, atol=1e-12)


def test_fewer_components_pad_with_zeros(data):
    model = FLAME(data, dtype=torch.float64)
    p = _params(3, seed=2, n_shape=40, n_exp=12)
    short = model(**p)
    full = dict(p, shape=torch.nn.functional.pad(p["shape"], (0, 260)),
                expression=torch.nn.functional.pad(p["expression"], (0, 88)))
    torch.testing.assert_close(short.vertices, model(**full).vertices)
    with pytest.raises(ValueError, match="300 shape and 100 expression"):
        model(**dict(p, shape=torch.zeros(3, 301, dtype=torch.float64)))


def test_pose_moves_vertices_rigidly_for_global_rotation(data):
    model = FLAME(data, dtype=torch.float64)
    p = model.neutral(1)
    R = axis_angle_to_matrix(torch.tensor([[0.0, 0.7, 0.0]], dtype=torch.float64))
    out = model(**p, rotation=matrix_to_rotation_6d(R))
    root = torch.as_tensor(data.J_regressor[0] @ data.v_template)
    v0 = torch.as_tensor(data.v_template)
    # root rotation only: no pose correctives (they depend on non-root joints)
    torch.testing.assert_close(out.vertices[0], (v0 - root) @ R[0].T + root)


def test_gradients_reach_every_input(data):
    model = FLAME(data)
    p = {k: v.clone().requires_grad_(True) for k, v in _params(2, seed=3, dtype=torch.float32).items()}
    out = model(**p)
    (out.vertices.square().sum() + out.landmarks_mp.sum() + out.landmarks_68.sum() + out.joints.sum()).backward()
    for name, value in p.items():
        assert value.grad is not None and torch.isfinite(value.grad).all() and value.grad.abs().sum() > 0, name


def test_large_batch_on_cpu(data):
    model = FLAME(data)
    B = 4096
    with torch.no_grad():
        p = model.neutral(B)
        p["expression"] = torch.randn(B, 100) * 0.5
        out = model(**p)
    assert out.vertices.shape == (B, 602, 3) and torch.isfinite(out.vertices).all()
    torch.testing.assert_close(out.vertices[7], model(**{k: v[7:8] for k, v in p.items()}).vertices[0])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu(data):
    cpu = FLAME(data)
    gpu = FLAME(data).cuda()
    p = _params(64, seed=4, dtype=torch.float32)
    a = cpu(**p)
    b = gpu(**{k: v.cuda() for k, v in p.items()})
    torch.testing.assert_close(b.vertices.cpu(), a.vertices, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(b.landmarks_mp.cpu(), a.landmarks_mp, atol=1e-5, rtol=1e-4)


def test_uv_layout_from_obj_and_texture_npz(model_files, tmp_path):
    d, pkl = model_files
    faces = load_face_model(pkl).faces
    lines = [f"v 0 0 {i}" for i in range(602)] + [f"vt {i / 700:.4f} 0.5" for i in range(700)]
    lines += [f"f {a + 1}/{(a % 700) + 1} {b + 1}/{(b % 700) + 1} {c + 1}/{(c % 700) + 1}" for a, b, c in faces]
    (tmp_path / "head_template.obj").write_text("\n".join(lines))
    data = load_face_model(pkl, uv=tmp_path / "head_template.obj")
    assert data.vt.shape == (700, 2) and data.ft.shape == (1200, 3)
    np.testing.assert_array_equal(data.ft, faces % 700)
    np.savez(tmp_path / "FLAME_texture.npz", mean=np.zeros((4, 4, 3)), tex_dir=np.zeros((4, 4, 3, 2)),
             vt=data.vt, ft=data.ft[:10])
    with pytest.raises(BadInput, match="do not match the model's faces"):
        load_face_model(pkl, uv=tmp_path / "FLAME_texture.npz")
    np.savez(tmp_path / "FLAME_texture.npz", mean=np.zeros((4, 4, 3)), tex_dir=np.zeros((4, 4, 3, 2)))
    assert load_face_model(pkl, uv=tmp_path / "FLAME_texture.npz").vt is None     # no layout: left unset
    (tmp_path / "FLAME_texture.npz").write_bytes(b"junk")
    with pytest.raises(BadInput, match="not a readable .npz"):
        load_face_model(pkl, uv=tmp_path / "FLAME_texture.npz")
