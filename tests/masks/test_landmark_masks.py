"""Masks from landmarks: mouth polygon, neck line, gap filling."""

from __future__ import annotations

import cv2
import numpy as np

from stages.masks.backends.mediapipe_default import landmark_parsing
from stages.masks.landmark_masks import (CHIN, FACE_LEFT, FACE_RIGHT, FACE_TOP, INNER_LIP, above_neck_line,
                                         fill_missing, head_region, mouth_mask, neckhead_mask, skin_colour)


def _face(top=(256.0, 100.0), chin=(256.0, 300.0), mouth_centre=(256.0, 250.0), open_px=20.0) -> np.ndarray:
    """Synthetic 478 landmarks: top/chin placed, the inner lip an ellipse ``open_px`` tall."""
    p = np.zeros((478, 3), np.float32)
    p[:, :2] = 256.0
    p[FACE_TOP, :2] = top
    p[CHIN, :2] = chin
    mid = (np.array(top) + np.array(chin)) / 2
    axis = (np.array(chin) - np.array(top)) / np.hypot(*(np.array(chin) - np.array(top)))
    across = np.array([-axis[1], axis[0]])
    p[FACE_RIGHT, :2] = mid - 80 * across  # face width 160 px
    p[FACE_LEFT, :2] = mid + 80 * across
    n = len(INNER_LIP)
    t = np.linspace(0, 2 * np.pi, n, endpoint=False) + np.pi  # start at the right corner (x smallest)
    p[list(INNER_LIP), 0] = mouth_centre[0] + 40 * np.cos(t)
    p[list(INNER_LIP), 1] = mouth_centre[1] - open_px / 2 * np.sin(t)
    return p


def test_inner_lip_indices_are_mediapipes_inner_loop():
    from mediapipe.python.solutions.face_mesh_connections import FACEMESH_LIPS

    edges = {frozenset(e) for e in FACEMESH_LIPS}
    loop = list(INNER_LIP) + [INNER_LIP[0]]
    assert all(frozenset((a, b)) in edges for a, b in zip(loop[:-1], loop[1:]))
    assert len(set(INNER_LIP)) == 20


def test_mouth_mask_is_the_filled_polygon():
    p = _face(open_px=20)
    m = mouth_mask(p, (512, 512))
    assert m.dtype == np.uint8 and set(np.unique(m).tolist()) == {0, 255}
    area = cv2.contourArea(p[list(INNER_LIP), :2].astype(np.float32))
    assert abs((m > 0).sum() - area) < 0.1 * area
    assert m[250, 256] == 255 and m[200, 256] == 0
    closed = mouth_mask(_face(open_px=0.0), (512, 512))
    assert not closed.any()


def test_neck_line_follows_head_roll():
    upright = above_neck_line(_face(), (512, 512), margin=0.25)  # cut at y = 300 + 50
    assert upright[349, 10] and not upright[351, 10]
    # head rolled 90 degrees: the axis points along +x, the cut is a vertical line at x = 350
    rolled = above_neck_line(_face(top=(100.0, 256.0), chin=(300.0, 256.0)), (512, 512), margin=0.25)
    assert rolled[500, 349] and not rolled[10, 351]


def test_neckhead_cuts_the_torso_and_keeps_the_head():
    person = np.zeros((512, 512), bool)
    person[80:, 150:362] = True  # head and torso
    nh = neckhead_mask(person, _face(), margin=0.25, dilate=2, half_width=0.3)  # no frame: geometry only
    assert nh[200, 256] == 255 and nh[345, 256] == 255 and not nh[360:].any()
    assert nh[200, 149] == 255 and nh[200, 146] == 0  # dilated by 2 px
    assert nh[320, 256 + 46] == 255 and nh[320, 256 + 50] == 0  # below the chin: 0.3 x 160 px either side
    nh_noface = neckhead_mask(person, None, margin=0.25)
    assert np.array_equal(nh_noface > 0, person)
    neck, mouth = landmark_parsing(person.astype(np.float32), None, 0.25, 0)
    assert not mouth.any() and np.array_equal(neck > 0, person)


def test_neck_keeps_skin_and_drops_the_collar():
    """Below the chin only skin-coloured pixels stay: the neck, not a dark or coloured shirt."""
    rgb = np.full((512, 512, 3), (200, 200, 230), np.uint8)  # lavender background
    skin = (205, 160, 140)
    cv2.ellipse(rgb, (256, 200), (80, 100), 0, 0, 360, skin, -1)  # face, chin at y = 300
    rgb[300:330, 216:296] = (190, 145, 128)  # neck, a little darker than the face
    rgb[330:, 120:392] = (20, 20, 25)  # black shirt from y = 330
    rgb[330:, 120:200] = (40, 60, 170)  # a blue sleeve
    p = _face()
    p[:, :2] = np.stack(np.meshgrid(np.linspace(190, 322, 24), np.linspace(120, 290, 20)), -1).reshape(-1, 2)[:478]
    p[list(INNER_LIP) + [FACE_TOP, CHIN, FACE_RIGHT, FACE_LEFT]] = _face()[list(INNER_LIP) + [
        FACE_TOP, CHIN, FACE_RIGHT, FACE_LEFT]]
    med, tol, luma = skin_colour(rgb, p)
    assert tol.min() >= 8 and luma > 100
    region = head_region(p, (512, 512), margin=0.35, half_width=0.45, rgb=rgb)
    assert region[310:328, 230:282].all()  # the neck
    assert not region[335:370, 150:362].any()  # the shirt and sleeve
    assert region[150, 256] and region[250, 60]  # above the chin: no colour test
    geometric = head_region(p, (512, 512), margin=0.35, half_width=0.45)
    assert geometric[335:360, 200:300].all()


def test_fill_missing_uses_the_nearest_good_frame():
    pts = np.arange(6, dtype=np.float32)[:, None, None] * np.ones((6, 478, 3), np.float32)
    ok = np.array([False, True, False, False, False, True])
    pts[~ok] = np.nan
    filled, usable = fill_missing(pts, ok)
    assert usable.all()
    assert filled[:, 0, 0].tolist() == [1, 1, 1, 1, 5, 5]  # ties go to the earlier frame
    none, usable = fill_missing(pts, np.zeros(6, bool))
    assert not usable.any()
