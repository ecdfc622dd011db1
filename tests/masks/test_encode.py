"""File formats of the masks (what FlashAvatar's PIL loader reads) and frame-tar checks."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from stages.errors import BadInput
from stages.frameshard import write_shard_tar
from stages.masks.encode import (decode_gray, decode_rgb, encode_alpha, encode_frame, encode_mask,
                                 read_frame_jpegs, to_uint8)


def _pil(data: bytes) -> np.ndarray:
    img = Image.open(io.BytesIO(data))
    assert img.mode == "L"
    return np.asarray(img)


def test_alpha_jpeg_is_one_8bit_channel_close_to_the_matte():
    yy, xx = np.mgrid[0:512, 0:512]
    alpha = np.clip((xx - 200) / 100.0, 0, 1).astype(np.float32)  # a smooth ramp
    a = _pil(encode_alpha(alpha, quality=95))
    assert a.shape == (512, 512) and a.dtype == np.uint8
    assert np.abs(a.astype(int) - to_uint8(alpha).astype(int)).max() <= 3
    assert a[:, :150].max() <= 2 and a[:, 350:].min() >= 253
    # FlashAvatar: torch.from_numpy(np.array(img)) / 255 -> [1,H,W], broadcasts over RGB
    assert np.array_equal(decode_gray(encode_alpha(alpha)), _pil(encode_alpha(alpha)))


@pytest.mark.parametrize("mask", [np.eye(512, dtype=bool), np.eye(512, dtype=np.uint8),
                                  (np.eye(512) * 255).astype(np.uint8), np.eye(512, dtype=np.float32) * 0.3])
def test_mask_png_holds_only_0_and_255(mask):
    m = _pil(encode_mask(mask))
    assert m.dtype == np.uint8 and set(np.unique(m).tolist()) == {0, 255}
    assert np.array_equal(m > 0, np.asarray(mask) != 0)


def test_encode_frame_names_follow_the_frame_number():
    z = np.zeros((512, 512), np.uint8)
    names = [n for n, _ in encode_frame(17, z, z, z)]
    assert names == ["alpha/00017.jpg", "parsing/00017_neckhead.png", "parsing/00017_mouth.png"]


def test_to_uint8_rounds_and_clips():
    assert to_uint8(np.array([-0.5, 0.0, 0.5, 1.0, 2.0])).tolist() == [0, 0, 128, 255, 255]


def _tar(tmp_path, names):
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 0] = 200
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG")
    path = tmp_path / "frames.tar"
    write_shard_tar(path, [(n, buf.getvalue()) for n in names])
    return path


def test_read_frame_jpegs_checks_numbering(tmp_path):
    path = _tar(tmp_path, ["00003.jpg", "00004.jpg"])
    jpegs = read_frame_jpegs(path, range(3, 5))
    assert sorted(jpegs) == [3, 4]
    assert decode_rgb(jpegs[3])[..., 0].mean() > 190
    with pytest.raises(BadInput, match="expected 1..2"):
        read_frame_jpegs(path, range(1, 3))
    with pytest.raises(BadInput, match="unexpected member"):
        read_frame_jpegs(_tar(tmp_path, ["alpha/00001.jpg"]))
    with pytest.raises(BadInput, match="not a decodable JPEG"):
        decode_rgb(b"not a jpeg")
