"""The motion reader of export and view: our motion.npz keys, the .frame key names, a .frame folder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stages.errors import BadInput
from stages.export.motion import motion_condition, read_motion
from stages.gauss.surface import neutral_condition


def test_motion_npz_with_defaults_and_frame_key_names(tmp_path):
    T = 3
    p = tmp_path / "m.npz"
    exp = np.arange(T * 50, dtype=np.float32).reshape(T, 50)  # fewer than 100: zero-padded
    np.savez(p, exp=exp)
    m = read_motion(p)
    assert len(m) == T and m.R is None
    cond = motion_condition(m)
    want = neutral_condition(T)
    want[:, :50] = torch.from_numpy(exp)
    assert torch.equal(cond, want)
    q = tmp_path / "q.npz"
    R = np.tile(np.eye(3, dtype=np.float32), (T, 1, 1))
    np.savez(q, **{"flame.exp": np.zeros((T, 100), np.float32), "opencv.R": R, "opencv.t": np.zeros((T, 3), np.float32),
                   "opencv.K": np.eye(3, dtype=np.float32)[None].repeat(T, 0)})
    m = read_motion(q)
    assert m.R.shape == (T, 3, 3) and m.K.shape == (T, 3, 3)


def test_frame_folder_reads_like_the_tracked_sequence(tmp_path):
    from stages.dataset.layout import DatasetLayout
    from stages.export.motion import tracked_motion
    from stages.gauss.data import TrackedSequence
    from stages.gauss.synthetic import write_synthetic_dataset

    ds = write_synthetic_dataset(tmp_path / "ds", 3, image_size=16, n_gaussians=200)
    m = read_motion(ds / "checkpoint")
    t = tracked_motion(TrackedSequence.load(DatasetLayout(ds)))
    np.testing.assert_array_equal(motion_condition(m).numpy(), motion_condition(t).numpy())
    np.testing.assert_array_equal(m.R, t.R)


@pytest.mark.parametrize("arrays, words", [
    ({"jaw": np.zeros((2, 6), np.float32)}, "no exp key"),
    ({"exp": np.zeros((2, 120), np.float32)}, "exp of shape"),
    ({"exp": np.zeros((2, 100), np.float32), "eyes": np.zeros((2, 6), np.float32)}, "eyes of shape"),
])
def test_bad_motion_files_name_the_file_and_key(tmp_path, arrays, words):
    p = tmp_path / "bad.npz"
    np.savez(p, **arrays)
    with pytest.raises(BadInput, match=words) as e:
        read_motion(p)
    assert str(p) in str(e.value)
    with pytest.raises(BadInput, match="no such file"):
        read_motion(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(BadInput, match="not a readable"):
        read_motion(tmp_path / "junk.npz")
