"""The landmark-only FLAME: the same landmarks and joints as the full model (values and
gradients), for the stand-in model and a FLAME-sized stand-in pickle, with far fewer vertices."""

import pickle

import numpy as np
import pytest
import torch

from stages.face import flame_file as ff
from stages.face.flame import FLAME
from stages.face.landmark_model import LandmarkFLAME, landmark_model
from stages.face.model import load_face_model
from stages.face.rotation import axis_angle_to_matrix, matrix_to_rotation_6d
from stages.tracking.calibration import personalised


@pytest.fixture(scope="module")
def flame_sized(tmp_path_factory):
    """A FLAME-sized model (5,023 vertices, 9,976 faces) in FLAME's file formats, random data."""
    d = tmp_path_factory.mktemp("flame")
    pkl = ff.write_fake_flame_pkl(d / "generic_model.pkl", seed=11)
    rng = np.random.default_rng(1)
    np.savez(d / "mp.npz", lmk_face_idx=rng.integers(0, ff.FLAME_FACES, 105),
             lmk_b_coords=rng.dirichlet([1, 1, 1], 105), landmark_indices=np.sort(rng.choice(478, 105, replace=False)))
    np.save(d / "lmk68.npy", {"full_lmk_faces_idx": rng.integers(0, ff.FLAME_FACES, (1, 68)),
                              "full_lmk_bary_coords": rng.dirichlet([1, 1, 1], (1, 68))}, allow_pickle=True)
    (d / "masks.pkl").write_bytes(pickle.dumps({"face": np.arange(100)}, protocol=2))
    np.savez(d / "eyelids.npz", l_eyelid=rng.normal(size=(ff.FLAME_VERTICES, 3)) * 1e-3,
             r_eyelid=rng.normal(size=(ff.FLAME_VERTICES, 3)) * 1e-3)
    return load_face_model(pkl, masks=d / "masks.pkl", mediapipe_embedding=d / "mp.npz",
                           landmark_embedding=d / "lmk68.npy", eyelids=d / "eyelids.npz")


def _params(model, B, seed, ns):
    g = torch.Generator().manual_seed(seed)

    def r6(scale):
        return matrix_to_rotation_6d(axis_angle_to_matrix(torch.randn(B, 3, generator=g) * scale))

    return dict(shape=torch.randn(B, ns, generator=g), expression=torch.randn(B, model.n_expression, generator=g),
                jaw=r6(0.3), eyes=torch.cat([r6(0.2), r6(0.2)], 1), eyelids=torch.rand(B, 2, generator=g),
                neck=r6(0.2), rotation=r6(0.4), translation=0.05 * torch.randn(B, 3, generator=g))


def _check_same(full, sub, ns, atol):
    p = _params(full, 6, seed=3, ns=ns)
    a, b = full(**p), sub(**p)
    assert b.landmarks_mp.shape == a.landmarks_mp.shape and a.landmarks_mp.shape[1] > 0
    scale = a.landmarks_mp.abs().max().item()
    torch.testing.assert_close(b.landmarks_mp, a.landmarks_mp, atol=atol * scale, rtol=0)
    torch.testing.assert_close(b.landmarks_68, a.landmarks_68, atol=atol * scale, rtol=0)
    torch.testing.assert_close(b.joints, a.joints, atol=atol * scale, rtol=0)
    torch.testing.assert_close(b.vertices, a.vertices[:, sub.vertex_ids], atol=atol * scale, rtol=0)
    # the same gradients with respect to every parameter
    grads = []
    for m in (full, sub):
        q = {k: v.clone().requires_grad_(True) for k, v in p.items()}
        (m(**q).landmarks_mp ** 2).sum().backward()
        grads.append({k: v.grad for k, v in q.items()})
    for k in p:
        g = grads[0][k].abs().max().item()
        torch.testing.assert_close(grads[1][k], grads[0][k], atol=atol * max(g, 1e-12) * 10, rtol=0, msg=k)


@pytest.mark.parametrize("which", ["standin", "flame_sized"])
def test_landmarks_equal_the_full_model(which, request):
    data = load_face_model(None) if which == "standin" else request.getfixturevalue("flame_sized")
    full = FLAME(data)
    sub = landmark_model(full)
    assert isinstance(sub, LandmarkFLAME) and sub.n_vertices <= full.n_vertices  # the stand-in: all 478 used
    if which == "flame_sized":
        assert full.n_vertices == 5023 and sub.n_vertices <= 3 * (105 + 68)
    _check_same(full, sub, ns=full.n_shape, atol=2e-6)  # float32: a few ulp of the coordinates
    # float64: equal to float64 rounding (the joint sum is taken in another order)
    full64 = FLAME(data, dtype=torch.float64)
    p = {k: v.double() for k, v in _params(full64, 4, seed=5, ns=20).items()}
    torch.testing.assert_close(landmark_model(full64)(**p).landmarks_mp, full64(**p).landmarks_mp, atol=1e-13, rtol=0)


def test_personalised_model_and_shape_width_zero():
    """Track's model: the identity baked into the template, called with a shape of width 0."""
    full = FLAME(load_face_model(None))
    ident = torch.randn(full.n_shape, generator=torch.Generator().manual_seed(2))
    pers = personalised(full, ident)
    sub = landmark_model(pers)
    p = _params(full, 5, seed=9, ns=0)
    p.pop("neck"), p.pop("rotation"), p.pop("translation")
    a = pers(**p).landmarks_mp
    b = sub(**p).landmarks_mp
    torch.testing.assert_close(b, a, atol=2e-6 * a.abs().max().item(), rtol=0)
    c = full(**{**p, "shape": ident.expand(5, -1)}).landmarks_mp  # and the non-personalised model
    torch.testing.assert_close(b, c, atol=1e-5 * a.abs().max().item(), rtol=0)


def test_landmark_model_passes_other_modules_through():
    full = FLAME(load_face_model(None))
    sub = landmark_model(full)
    assert landmark_model(sub) is sub
    other = torch.nn.Linear(2, 2)
    assert landmark_model(other) is other


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_landmarks_equal_the_full_model_at_a_video_sized_batch(flame_sized):
    """On the GPU at 10,000 frames (the grouped track's batch): the same landmarks as the full model."""
    full = FLAME(flame_sized).cuda()
    sub = landmark_model(full)
    p = {k: v.cuda() for k, v in _params(full, 10000, seed=6, ns=full.n_shape).items()}
    with torch.no_grad():
        a, b = full(**p).landmarks_mp, sub(**p).landmarks_mp
    torch.testing.assert_close(b, a, atol=2e-6 * a.abs().max().item(), rtol=0)
