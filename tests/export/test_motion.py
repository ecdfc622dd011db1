"""Export and view pose the avatar from the tracked sequence or from a motion file read by the one
reader of motion files (``stages.motion.load_motion``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stages.errors import BadInput
from stages.export.motion import motion_condition, tracked_motion
from stages.gauss.surface import neutral_condition
from stages.motion.format import load_motion, save_motion


def test_flame_npz_condition_pads_the_expression(tmp_path):
    T = 3
    p = tmp_path / "m.npz"
    exp = np.arange(T * 50, dtype=np.float32).reshape(T, 50)  # fewer than 100: zero-padded
    np.savez(p, expr=exp)
    m = load_motion(p)
    assert len(m) == T and m.R is None
    want = neutral_condition(T)
    want[:, :50] = torch.from_numpy(exp)
    assert torch.equal(motion_condition(m), want)


@pytest.fixture
def toy_dataset(tmp_path):
    from stages.gauss.synthetic import write_synthetic_dataset

    return write_synthetic_dataset(tmp_path / "ds", 3, image_size=16, n_gaussians=200)


def test_frame_folder_reads_like_the_tracked_sequence(toy_dataset):
    from stages.dataset.layout import DatasetLayout
    from stages.gauss.data import TrackedSequence

    m = load_motion(toy_dataset / "checkpoint")
    t = tracked_motion(TrackedSequence.load(DatasetLayout(toy_dataset)))
    np.testing.assert_allclose(motion_condition(m).numpy(), motion_condition(t).numpy(), atol=1e-6)
    np.testing.assert_allclose(m.R, t.R, atol=1e-6)
    np.testing.assert_array_equal(m.K, t.K)
    assert t.K.shape == (3, 3) and t.image_size == 16


def test_tracked_motion_round_trips_through_our_motion_npz(toy_dataset, tmp_path):
    """What the bundle writes as tracked.npz is a motion file ``avatar drive --motion`` reads back."""
    from stages.dataset.layout import DatasetLayout
    from stages.gauss.data import TrackedSequence

    t = tracked_motion(TrackedSequence.load(DatasetLayout(toy_dataset)))
    save_motion(tmp_path / "tracked.npz", t)
    back = load_motion(tmp_path / "tracked.npz")
    np.testing.assert_allclose(motion_condition(back).numpy(), motion_condition(t).numpy(), atol=1e-6)
    np.testing.assert_allclose(back.R, t.R, atol=1e-6)
    np.testing.assert_array_equal(back.t, t.t)
    np.testing.assert_array_equal(back.K, t.K)
    assert back.image_size == t.image_size


@pytest.mark.parametrize("arrays, words", [
    ({"eyelids": np.zeros((2, 2), np.float32)}, "no key 'expr'"),
    ({"expr": np.zeros((2, 120), np.float32)}, "key 'expr' has shape \\[2, 120\\]"),
    ({"expr": np.zeros((2, 100), np.float32), "eye_pose": np.zeros((2, 4), np.float32)}, "key 'eye_pose' has shape"),
])
def test_bad_motion_files_name_the_file_and_key(tmp_path, arrays, words):
    p = tmp_path / "bad.npz"
    np.savez(p, **arrays)
    with pytest.raises(BadInput, match=words) as e:
        load_motion(p)
    assert str(p) in str(e.value)
    with pytest.raises(BadInput, match="no such file"):
        load_motion(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(BadInput, match="not an .npz"):
        load_motion(tmp_path / "junk.npz")
