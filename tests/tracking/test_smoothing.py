"""Filling failed frames and cross-fading overlapping segments."""

import numpy as np
import pytest

from stages.tracking.sequence import chunk_bounds
from stages.tracking.smoothing import fill_missing, join_segments, segment_weights


def test_fill_missing_interpolates_and_holds_ends():
    v = np.array([[np.nan], [1.0], [np.nan], [np.nan], [4.0], [np.nan]])
    ok = np.isfinite(v[:, 0])
    out = fill_missing(v, ok)
    np.testing.assert_allclose(out[:, 0], [1, 1, 2, 3, 4, 4])
    with pytest.raises(ValueError):
        fill_missing(v, np.zeros(6, bool))


def test_segment_weights_cross_fade_sums_to_one():
    a, b = np.arange(0, 20), np.arange(12, 30)  # overlap of 8 frames
    wa, wb = segment_weights(a, 8), segment_weights(b, 8)
    total = np.zeros(30)
    total[a] += wa
    total[b] += wb
    np.testing.assert_allclose(total[12:20], 1.0)
    assert np.all(np.diff(wa[12:20]) < 0) and np.all(np.diff(wb[:8]) > 0)


def test_join_segments_blends_linearly_and_detects_holes():
    a = (np.arange(1, 11), {"x": np.zeros((10, 2))})
    b = (np.arange(7, 17), {"x": np.ones((10, 2))})
    frames, out = join_segments([a, b], ramp=4)
    assert frames.tolist() == list(range(1, 17))
    np.testing.assert_allclose(out["x"][:6, 0], 0.0)
    np.testing.assert_allclose(out["x"][10:, 0], 1.0)
    assert np.all(np.diff(out["x"][5:11, 0]) > 0)  # a ramp across the overlap, no step
    np.testing.assert_allclose(out["x"][6:10, 0], [0.2, 0.4, 0.6, 0.8], atol=1e-6)
    with pytest.raises(ValueError):
        join_segments([a, (np.arange(20, 25), {"x": np.ones((5, 2))})], ramp=4)


def test_chunk_bounds_cover_with_overlap():
    assert chunk_bounds(100, 256, 16) == [(0, 100)]
    b = chunk_bounds(1000, 256, 16)
    assert b[0][0] == 0 and b[-1][1] == 1000
    assert all(s1 - s0 <= 256 for s0, s1 in b)
    assert all(prev[1] - nxt[0] == 16 for prev, nxt in zip(b, b[1:]))
