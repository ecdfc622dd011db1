"""FaceMesh tracking over a sequence: 478 points in pixels, NaN (never zeros) where it fails."""

from __future__ import annotations

import numpy as np

from stages.video.facemesh import N_POINTS, FaceMeshTracker, track_sequence


def first_frames(path, n: int) -> list[np.ndarray]:
    """The first ``n`` frames of a video, RGB uint8."""
    import av

    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for _, f in zip(range(n), c.decode(video=0))]


def test_tracks_the_real_face_and_flags_failures(wojtek):
    images = first_frames(wojtek, 10)
    images.insert(5, np.full((512, 512, 3), 40, dtype=np.uint8))  # a frame without a face
    results = list(track_sequence(images))
    assert [r.ok for r in results] == [True] * 5 + [False] + [True] * 5
    bad = results[5]
    assert np.isnan(bad.points).all() and bad.confidence < 0.5
    for r in results[:5] + results[6:]:
        assert r.points.shape == (N_POINTS, 3) and r.points.dtype == np.float32
        assert np.isfinite(r.points).all() and r.confidence > 0.5
        # in pixels: the face spans ~150-230 px in the middle of the 512 frame
        w = r.points[:, 0].max() - r.points[:, 0].min()
        assert 120 < w < 260 and 100 < r.points[:, 0].mean() < 400 and 100 < r.points[:, 1].mean() < 420
    # tracking is smooth: consecutive frames move little
    step = np.abs(results[1].points[:, :2] - results[0].points[:, :2]).mean()
    assert step < 5.0


def test_static_mode_gives_the_same_face():
    img = np.full((256, 256, 3), 90, dtype=np.uint8)
    with FaceMeshTracker(static=True, score_every=0) as t:
        r = t.process(img)
    assert not r.ok and r.confidence == 1.0 and np.isnan(r.points).all()


def test_confidence_is_scored_on_a_stride_and_on_changes(wojtek):
    """The detector runs every score_every-th frame and wherever tracking fails or recovers; the
    frames between carry the last score, which matches per-frame scoring closely on a steady face."""
    images = first_frames(wojtek, 20)
    images.insert(12, np.full((512, 512, 3), 40, dtype=np.uint8))  # no face in frame 12
    with FaceMeshTracker(score_every=8) as t:
        strided = [t.process(img) for img in images]
        scored = t.scored
    with FaceMeshTracker(score_every=1) as t:
        every = [t.process(img) for img in images]
        assert t.scored == len(images)
    # frames 0 and 8 (stride), 12 (fails), 13 (recovers), 21 would be next: 4 detector runs
    assert scored == 4
    assert [r.ok for r in strided] == [r.ok for r in every]
    assert strided[12].confidence < 0.5 and strided[13].confidence > 0.5
    for a, b in zip(strided, every):
        if a.ok:
            np.testing.assert_allclose(a.points, b.points, atol=1e-3)
            assert abs(a.confidence - b.confidence) < 0.05
    # held: frames 1..7 carry frame 0's score
    assert all(r.confidence == strided[0].confidence for r in strided[1:8])
