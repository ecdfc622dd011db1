"""Masks from landmarks: mouth polygon, gap filling (the neck: test_neck.py)."""

from __future__ import annotations

import cv2
import numpy as np

from stages.masks.landmark_masks import CHIN, FACE_LEFT, FACE_RIGHT, FACE_TOP, INNER_LIP, fill_missing, mouth_mask


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


def test_fill_missing_uses_the_nearest_good_frame():
    pts = np.arange(6, dtype=np.float32)[:, None, None] * np.ones((6, 478, 3), np.float32)
    ok = np.array([False, True, False, False, False, True])
    pts[~ok] = np.nan
    filled, usable = fill_missing(pts, ok)
    assert usable.all()
    assert filled[:, 0, 0].tolist() == [1, 1, 1, 1, 5, 5]  # ties go to the earlier frame
    none, usable = fill_missing(pts, np.zeros(6, bool))
    assert not usable.any()
