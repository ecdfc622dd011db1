"""The 5-point ArcFace alignment: a synthetic face whose five points are known lands on the template."""

import numpy as np

from stages.tracking.arcface_align import (ARCFACE_TEMPLATE, MP_FIVE, align_faces, alignment_residual, five_points,
                                          umeyama, usable_for_arcface)


def _rotation(deg):
    a = np.deg2rad(deg)
    return np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])


def test_umeyama_recovers_a_similarity():
    src = np.random.default_rng(0).normal(size=(5, 2)) * 30
    M = umeyama(src, 2.5 * src @ _rotation(17).T + [40, -7])
    np.testing.assert_allclose(M[:, :2], 2.5 * _rotation(17), atol=1e-9)
    np.testing.assert_allclose(M[:, 2], [40, -7], atol=1e-9)


def test_aligned_crop_puts_the_five_points_on_the_template():
    """Five bright dots on a 512x512 image where a 3.4x, 12-degree, shifted copy of the template sits,
    placed as MediaPipe landmarks; the aligned 112x112 crop must show each dot within 1 px of its
    template position (dot centres found as intensity centroids)."""
    A = 3.4 * _rotation(12)
    pts = ARCFACE_TEMPLATE @ A.T + [70.0, 40.0]
    img = np.zeros((512, 512, 3), np.uint8)
    yy, xx = np.mgrid[:512, :512]
    for x, y in pts:
        img[(xx - x) ** 2 + (yy - y) ** 2 <= 5.0 ** 2] = 255
    landmarks = np.random.default_rng(1).uniform(0, 512, (478, 2))
    landmarks[list(MP_FIVE)] = pts
    crop = align_faces(img[None], five_points(landmarks[None]))[0, :, :, 0].astype(np.float64)
    assert crop.shape == (112, 112)
    cy, cx = np.mgrid[:112, :112]
    for tx, ty in ARCFACE_TEMPLATE:
        win = (cx - tx) ** 2 + (cy - ty) ** 2 <= 4.0 ** 2
        w = crop * win
        assert w.sum() > 0
        est = np.array([(w * cx).sum(), (w * cy).sum()]) / w.sum()
        assert np.hypot(*(est - [tx, ty])) < 1.0, (est, (tx, ty))


def test_faces_far_from_the_template_are_left_out():
    frontal = ARCFACE_TEMPLATE * 3 + 100
    pitched = frontal.copy()
    pitched[2, 1] += 40  # nose pushed towards the mouth (head bent down): no similarity matches
    pts = np.stack([frontal, pitched])
    r = alignment_residual(pts)
    assert r[0] < 1e-9 and r[1] > 3
    assert usable_for_arcface(pts).tolist() == [True, False]
    assert usable_for_arcface(pts[1:]).tolist() == [True]  # the best one is always kept
