"""The guided filter: fast (OpenCV) against the reference (summed-area table), and its behaviour."""

from __future__ import annotations

import numpy as np
import pytest

from stages.masks.guided_filter import fast_guided_filter, guided_filter, guided_filter_reference, refine_matte


@pytest.mark.parametrize("r,eps", [(1, 1e-2), (4, 1e-3), (8, 1e-4)])
def test_fast_matches_reference(r, eps):
    rng = np.random.default_rng(r)
    guide = rng.random((61, 47))
    src = (rng.random((61, 47)) > 0.5).astype(np.float64)
    ref = guided_filter_reference(guide, src, r, eps)
    fast = guided_filter(guide.astype(np.float32), src.astype(np.float32), r, eps)
    assert fast.dtype == np.float32 and fast.shape == ref.shape
    np.testing.assert_allclose(fast, ref, atol=2e-3)


def test_subsampled_filter_is_close_to_the_full_one():
    """On a smooth image with a soft edge (what the matte refinement sees), s = 2 stays close."""
    yy, xx = np.mgrid[0:128, 0:128]
    guide = (0.5 + 0.4 * np.tanh((np.hypot(yy - 64, xx - 64) - 40) / 3.0)).astype(np.float32)
    src = (np.hypot(yy - 64, xx - 60) < 42).astype(np.float32)
    full = guided_filter(guide, src, 8, 1e-3)
    fast = fast_guided_filter(guide, src, 8, 1e-3, s=2)
    assert fast.shape == full.shape and fast.dtype == np.float32
    assert np.abs(fast - full).mean() < 0.01 and np.abs(fast - full).max() < 0.15
    assert np.array_equal(fast_guided_filter(guide, src, 8, 1e-3, s=1), full)


def test_constant_input_passes_through():
    guide = np.random.default_rng(0).random((32, 32))
    np.testing.assert_allclose(guided_filter_reference(guide, np.full((32, 32), 0.7), 3, 1e-3), 0.7, atol=1e-9)


def test_matte_jumps_at_the_image_edge():
    """A blurry coarse mask (a 16 px ramp, like an upsampled low-resolution segmentation) becomes a
    matte whose sharpest step sits on the image's edge."""
    h, w = 64, 64
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[:, 32:] = 255  # the image edge between x = 31 and x = 32
    coarse = np.clip((np.arange(w) - 24) / 16.0, 0, 1)[None].repeat(h, 0).astype(np.float32)
    a = refine_matte(rgb, coarse, r=8, eps=1e-4, snap=0.02, subsample=1)
    assert a.min() >= 0 and a.max() <= 1
    steps = np.diff(a, axis=1)
    assert (steps.argmax(axis=1) == 31).all()
    assert steps[:, 31].min() > 0.4 and np.diff(coarse, axis=1).max() < 0.07
    # r = 0: no refinement, only clipping and snapping
    assert np.array_equal(refine_matte(rgb, coarse, r=0, snap=0.0), coarse)
