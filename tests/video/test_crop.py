"""One crop for the whole video: robust statistics, padding, fast cut against the reference."""

from __future__ import annotations

import numpy as np
import pytest

from stages.video.crop import CropBox, choose_crop, cut, cut_reference, out_of_crop_fraction
from stages.video.detect import FaceObservation


def obs(box, key=0):
    return FaceObservation(key, 1 if box else 0, 0.9 if box else 0.0, box, box, box is not None)


def test_median_centre_ignores_outliers_and_size_uses_the_percentile():
    boxes = [(100 + d, 200, 200 + d, 300) for d in (-2, -1, 0, 1, 2)] * 4  # 100 px faces around x=150
    boxes += [(900, 900, 1000, 1000)]  # one misdetection far away
    crop = choose_crop([obs(b) for b in boxes] + [obs(None)], scale=2.5)
    cx, cy = crop.centre
    assert abs(cx - 150) <= 1 and abs(cy - 250) <= 1
    assert 248 <= crop.side <= 252  # 2.5 x the 90th percentile of 100 px
    assert out_of_crop_fraction([obs(b) for b in boxes], crop) == pytest.approx(1 / 21)


def test_side_grows_to_cover_a_moving_face():
    boxes = [(x, 100, x + 40, 140) for x in range(0, 400, 20)]  # small face sweeping sideways
    crop = choose_crop([obs(b) for b in boxes], scale=2.5)
    assert crop.side > 2.5 * 40
    assert out_of_crop_fraction([obs(b) for b in boxes], crop) <= 0.1


def test_no_face_raises():
    with pytest.raises(ValueError):
        choose_crop([obs(None)])


@pytest.mark.parametrize("pad", ["edge", "black"])
@pytest.mark.parametrize("crop", [CropBox(10, 5, 40), CropBox(-15, -10, 60), CropBox(50, 30, 70), CropBox(-5, 20, 100)])
def test_fast_cut_equals_reference(pad, crop):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, size=(64, 96, 3), dtype=np.uint8)
    for view in (image, np.rot90(image)):  # also a non-contiguous view (rotated frame)
        a = cut(view, crop, 32, pad)
        b = cut_reference(view, crop, 32, pad)
        assert a.shape == (32, 32, 3)
        assert np.array_equal(a, b)


def test_black_padding_is_black_and_edge_padding_repeats():
    image = np.full((20, 20, 3), 200, dtype=np.uint8)
    black = cut(image, CropBox(-20, 0, 40), 40, "black")
    edge = cut(image, CropBox(-20, 0, 40), 40, "edge")
    assert black[:, :20].max() == 0 and black[:20, 20:].min() == 200
    assert edge.min() == 200
