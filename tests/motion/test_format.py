"""The motion file: our motion.npz, FLAME .npz files, .frame folders, resampling, bad files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stages.errors import BadInput
from stages.face.rotation import axis_angle_to_matrix, matrix_to_rotation_6d, rotation_6d_to_matrix
from stages.motion.format import FORMAT, Motion, load_motion, resample, save_motion


def _random_motion(n: int = 12, seed: int = 0) -> Motion:
    rng = np.random.default_rng(seed)
    r6 = lambda k: matrix_to_rotation_6d(axis_angle_to_matrix(torch.as_tensor(  # noqa: E731
        rng.normal(scale=0.2, size=(n, k, 3))))).float().numpy().reshape(n, 6 * k)
    R = axis_angle_to_matrix(torch.as_tensor(rng.normal(scale=0.2, size=(n, 3)))).float().numpy()
    return Motion(exp=rng.normal(size=(n, 100)).astype(np.float32), jaw=r6(1), eyes=r6(2),
                  eyelids=rng.uniform(size=(n, 2)).astype(np.float32), R=R,
                  t=rng.normal(size=(n, 3)).astype(np.float32),
                  K=np.array([[2000, 0, 256], [0, 2000, 256], [0, 0, 1]], np.float32), shape=np.ones(300, np.float32))


def _assert_same(a: Motion, b: Motion) -> None:
    for k in ("exp", "jaw", "eyes", "eyelids", "R", "t", "K"):
        np.testing.assert_allclose(getattr(a, k), getattr(b, k), atol=1e-5, err_msg=k)
    assert len(a) == len(b) and a.fps == b.fps == 25.0


def test_own_motion_npz_round_trips(tmp_path):
    m = _random_motion()
    save_motion(tmp_path / "motion.npz", m)
    with np.load(tmp_path / "motion.npz") as z:
        assert str(z["format"]) == FORMAT
    _assert_same(load_motion(tmp_path / "motion.npz"), m)


def test_frame_folder_reads_as_the_same_motion(tmp_path):
    from stages.dataset.frame_file import make_frame, write_frame

    m = _random_motion(6)
    for i in range(len(m)):
        cam = {"R": np.zeros(6), "t": np.zeros(3), "fl": np.zeros(1), "pp": np.zeros(2)}
        write_frame(tmp_path / "checkpoint" / f"{i:05d}.frame",
                    make_frame(i, exp=m.exp[i], shape=np.zeros(300), eyes=m.eyes[i], eyelids=m.eyelids[i], jaw=m.jaw[i],
                               R=m.R[i], t=m.t[i], K=m.K, camera=cam))
    got = load_motion(tmp_path)  # the folder above checkpoint/ works too
    _assert_same(got, m)
    save_motion(tmp_path / "again.npz", got)
    _assert_same(load_motion(tmp_path / "again.npz"), m)


def test_flame_npz_axis_angle_padding_and_head_pose(tmp_path):
    n = 5
    jaw_aa = np.stack([np.linspace(0, 0.3, n), np.zeros(n), np.zeros(n)], 1).astype(np.float32)
    head = np.stack([np.zeros(n), np.linspace(-0.2, 0.2, n), np.zeros(n)], 1).astype(np.float32)
    np.savez(tmp_path / "speech.npz", expr=np.ones((n, 50), np.float32), jaw_pose=jaw_aa,
             eye_pose=np.zeros((n, 6), np.float32), global_pose=head, transl=np.full((n, 3), 0.01, np.float32))
    m = load_motion(tmp_path / "speech.npz")
    assert m.exp.shape == (n, 100) and np.all(m.exp[:, :50] == 1) and np.all(m.exp[:, 50:] == 0)
    want = matrix_to_rotation_6d(axis_angle_to_matrix(torch.as_tensor(jaw_aa).double())).float().numpy()
    np.testing.assert_allclose(m.jaw, want, atol=1e-6)
    np.testing.assert_allclose(m.eyes, np.tile([1, 0, 0, 0, 1, 0], (n, 2)), atol=1e-6)
    # head pose -> camera of a frontal viewer: R = diag(1,-1,-1) @ R_head
    Rh = axis_angle_to_matrix(torch.as_tensor(head).double()).float().numpy()
    np.testing.assert_allclose(m.R, np.diag([1.0, -1, -1]) @ Rh, atol=1e-6)
    np.testing.assert_allclose(m.t, [[0.01, -0.01, 0.99]] * n, atol=1e-6)
    assert m.K is None


def test_other_frame_rates_are_resampled_to_25(tmp_path):
    n = 60  # 2 s at 30 fps -> 50 frames at 25 fps
    ramp = np.linspace(0, 1, n, dtype=np.float32)
    np.savez(tmp_path / "m30.npz", expr=np.tile(ramp[:, None], (1, 10)), fps=np.float64(30))
    m = load_motion(tmp_path / "m30.npz")
    assert len(m) == 50 and m.fps == 25.0
    # frame k shows time k/25: source index k * 30 / 25
    np.testing.assert_allclose(m.exp[:, 0], np.interp(np.arange(50) * 1.2, np.arange(n), ramp), atol=1e-6)
    r = resample(_random_motion(10), 50.0)
    assert len(r) == 20
    Rj = torch.as_tensor(r.jaw[:, :3]), torch.as_tensor(r.jaw[:, 3:])  # rows stay orthonormal after interpolation
    np.testing.assert_allclose(Rj[0].norm(dim=1).numpy(), 1, atol=1e-5)
    np.testing.assert_allclose((Rj[0] * Rj[1]).sum(1).numpy(), 0, atol=1e-5)
    np.testing.assert_allclose(np.einsum("nij,nkj->nik", r.R, r.R), np.tile(np.eye(3), (20, 1, 1)), atol=1e-5)


@pytest.mark.parametrize("arrays, words", [
    ({"expr": np.zeros((4, 120))}, ["'expr'", "[4, 120]", "E <= 100"]),
    ({"expr": np.zeros((4, 10)), "jaw_pose": np.zeros((4, 4))}, ["'jaw_pose'", "[4, 4]", "[4, 3]"]),
    ({"expr": np.zeros((4, 10)), "jaw": np.zeros((4, 3))}, ["'jaw'", "[4, 3]", "[4, 6]"]),
    ({"expr": np.zeros((4, 10)), "eye_pose": np.zeros((3, 6))}, ["'eye_pose'", "[3, 6]", "[4, 6]"]),
    ({"expr": np.zeros((4, 10)), "eyelids": np.zeros(4)}, ["'eyelids'", "[4]", "[4, 2]"]),
    ({"expr": np.zeros((4, 10)), "global_pose": np.zeros((4, 3, 3))}, ["'global_pose'", "[4, 3, 3]", "[4, 3]"]),
    ({"expr": np.zeros((4, 10)), "fps": np.zeros(2)}, ["'fps'", "[2]"]),
    ({"expr": np.full((4, 10), np.nan)}, ["'expr'", "non-finite"]),
    ({"pose": np.zeros((4, 15))}, ["'expr'", "'jaw_pose'", "pose"]),
])
def test_bad_flame_npz_names_key_shape_found_and_expected(tmp_path, arrays, words):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(BadInput) as e:
        load_motion(tmp_path / "bad.npz")
    msg = str(e.value)
    assert "\n" not in msg and str(tmp_path / "bad.npz") in msg
    for w in words:
        assert w in msg, (w, msg)


def test_bad_own_file_folder_and_non_npz(tmp_path):
    m = _random_motion(4)
    save_motion(tmp_path / "m.npz", m)
    with np.load(tmp_path / "m.npz") as z:
        d = {k: z[k] for k in z.files}
    d["R"] = d["R"][:, :2]
    np.savez(tmp_path / "bad_own.npz", **d)
    with pytest.raises(BadInput, match=r"'R' has shape \[4, 2, 3\].*expected \[4, 3, 3\]"):
        load_motion(tmp_path / "bad_own.npz")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadInput, match="no .frame files"):
        load_motion(tmp_path / "empty")
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(BadInput, match="not an .npz"):
        load_motion(tmp_path / "text.npz")
    with pytest.raises(BadInput, match="no such file"):
        load_motion(tmp_path / "missing.npz")
