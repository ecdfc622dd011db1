"""`.frame` files: upstream's keys, shapes and dtypes; loadable with torch.load(weights_only=False)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stages.dataset.frame_file import SHAPES, frame_problems, load_tracked_sequence, make_frame, read_frame, write_frame


def test_written_frame_has_upstream_keys_shapes_dtypes(tmp_path):
    from factories.dataset_factory import make_frame_dict as mk

    write_frame(tmp_path / "00003.frame", mk(3))
    raw = torch.load(tmp_path / "00003.frame", weights_only=False)  # how FlashAvatar loads it
    assert set(raw) == {"flame", "camera", "opencv", "img_size", "frame_id", "global_step"}
    for (group, key), shape in SHAPES.items():
        arr = raw[group][key]
        assert isinstance(arr, np.ndarray) and arr.dtype == np.float32 and arr.shape == shape, (group, key)
    assert raw["frame_id"] == "00003"
    assert raw["img_size"].dtype == np.int64 and raw["img_size"].tolist() == [512, 512]
    assert frame_problems(read_frame(tmp_path / "00003.frame"), need_all=True) == []


def test_tensor_frames_from_other_writers_load_too(tmp_path):
    frame = {"flame": {"exp": torch.zeros(1, 100), "eyes": torch.zeros(1, 12), "eyelids": torch.zeros(1, 2),
                       "jaw": torch.zeros(1, 6)}, "opencv": {"R": torch.eye(3)[None], "t": torch.zeros(1, 3)}}
    torch.save(frame, tmp_path / "x.frame")
    loaded = read_frame(tmp_path / "x.frame")
    assert isinstance(loaded["flame"]["exp"], np.ndarray)
    assert frame_problems(loaded) == []


def test_wrong_shapes_and_missing_keys_are_named():
    from factories.dataset_factory import make_frame_dict as mk

    f = mk(0)
    f["flame"]["exp"] = np.zeros((1, 50), np.float32)
    del f["opencv"]["t"]
    problems = frame_problems(f)
    assert "flame.exp has shape [1, 50], expected [1, 100]" in problems
    assert "missing opencv.t" in problems


def test_make_frame_rejects_wrong_sizes():
    with pytest.raises(ValueError, match="flame.exp"):
        make_frame(0, exp=np.zeros(99), shape=np.zeros(300), eyes=np.zeros(12), eyelids=np.zeros(2),
                   jaw=np.zeros(6), R=np.eye(3), t=np.zeros(3), K=np.eye(3),
                   camera={"R": np.zeros(6), "t": np.zeros(3), "fl": [1], "pp": [0, 0]})


def test_load_tracked_sequence_stacks_in_order(dataset):
    seq = load_tracked_sequence(dataset / "checkpoint")
    assert seq["flame.exp"].shape == (6, 100) and seq["opencv.R"].shape == (6, 3, 3)
    from factories.dataset_factory import make_frame_dict as mk

    np.testing.assert_array_equal(seq["flame.exp"][4], mk(4)["flame"]["exp"][0])


def test_frame_files_are_byte_reproducible(tmp_path):
    from factories.dataset_factory import make_frame_dict as mk

    write_frame(tmp_path / "a" / "00001.frame", mk(1))
    write_frame(tmp_path / "b" / "00001.frame", mk(1))
    assert (tmp_path / "a" / "00001.frame").read_bytes() == (tmp_path / "b" / "00001.frame").read_bytes()
