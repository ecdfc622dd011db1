"""Atomic checkpoints and the preview video."""

import numpy as np
import pytest
import torch

from stages.gauss import checkpoint as ckpt
from stages.gauss.preview import write_preview


def test_save_atomic_roundtrip_and_format_check(tmp_path):
    p = ckpt.save_atomic({"format": ckpt.CHECKPOINT_FORMAT, "x": torch.arange(3)}, tmp_path / "c.pt")
    assert torch.equal(ckpt.load(p, ckpt.CHECKPOINT_FORMAT)["x"], torch.arange(3))
    assert [f.name for f in tmp_path.iterdir()] == ["c.pt"]  # no temporary left behind
    with pytest.raises(ValueError, match="expected"):
        ckpt.load(p, ckpt.AVATAR_FORMAT)


def test_preview_is_h264_side_by_side(tmp_path):
    import av

    frames = [(np.full((32, 40, 3), 10 * i, np.uint8), np.full((32, 40, 3), 200, np.uint8)) for i in range(5)]
    n = write_preview(tmp_path / "p.mp4", frames, fps=25)
    assert n == 5
    with av.open(str(tmp_path / "p.mp4")) as c:
        s = c.streams.video[0]
        assert s.codec_context.name == "h264" and s.average_rate == 25
        decoded = [f.to_ndarray(format="rgb24") for f in c.decode(s)]
    assert len(decoded) == 5 and decoded[0].shape == (32, 80, 3)
    assert abs(int(decoded[4][16, 60, 0]) - 200) < 8 and abs(int(decoded[4][16, 10, 0]) - 40) < 8
