"""Masks derived from MediaPipe FaceMesh landmarks (478 points, x/y in crop pixels).

- Mouth: the filled inner-lip polygon. MediaPipe's lip contours (``FACEMESH_LIPS`` in
  ``mediapipe.solutions.face_mesh_connections``) hold an outer and an inner loop; the inner loop,
  which bounds the mouth opening (BiSeNet's class 11 "mouth"), runs
  ``78 191 80 81 82 13 312 311 310 415 308`` along the upper lip's inner edge (right corner 78 to
  left corner 308, 13 in the middle) and back ``324 318 402 317 14 87 178 88 95`` along the lower
  lip's inner edge (14 in the middle). A closed mouth gives a sliver of (near) zero area.
- Neck line: the head's vertical axis runs from the top of the face oval (landmark 10) to the chin
  (landmark 152); with face height ``h = |p152 - p10|``, everything farther than
  ``margin * h`` below the chin along that axis is torso/clothing and is cut from ``neckhead``.
  The line rotates with head roll.
"""

from __future__ import annotations

import cv2
import numpy as np

INNER_LIP = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308, 324, 318, 402, 317, 14, 87, 178, 88, 95)
"""MediaPipe FaceMesh indices of the inner lip contour, in polygon order (see module docstring)."""
FACE_TOP = 10
"""Top of the face oval (forehead centre) in MediaPipe's mesh."""
CHIN = 152
"""Bottom of the chin in MediaPipe's mesh."""


def fill_missing(points: np.ndarray, ok: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Replace the points of failed frames by those of the nearest good frame of the shard.

    Args:
        points: float32 [N,478,3] (failed frames may hold NaN).
        ok: bool [N], the landmarks stage's per-frame success flag.

    Returns:
        ``(points, usable)``: float32 [N,478,3] without NaN where any frame was good, and bool [N]
        telling which frames now have points (all False when no frame of the shard had a face).
    """
    pts = np.array(points, dtype=np.float32, copy=True)
    good = np.asarray(ok, bool) & np.isfinite(pts[:, :, :2]).all(axis=(1, 2))
    if not good.any():
        return pts, good
    idx = np.flatnonzero(good)
    n = np.arange(len(pts))
    pos = np.clip(np.searchsorted(idx, n), 0, len(idx) - 1)
    prev = idx[np.clip(pos - 1, 0, len(idx) - 1)]
    nxt = idx[pos]
    nearest = np.where(np.abs(n - prev) <= np.abs(nxt - n), prev, nxt)
    pts = pts[nearest]
    return pts, np.ones(len(pts), bool)


def mouth_mask(points: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Filled inner-lip polygon of one frame.

    Args:
        points: float [478,2+] landmarks, x/y in pixels of the ``size`` image.
        size: ``(H, W)`` of the mask.

    Returns:
        uint8 [H,W], 255 inside the mouth opening, 0 elsewhere.
    """
    m = np.zeros(size, np.uint8)
    poly = np.rint(points[list(INNER_LIP), :2] * 16).astype(np.int32)  # 4 bits of sub-pixel precision
    cv2.fillPoly(m, [poly], 255, lineType=cv2.LINE_8, shift=4)
    return m


def neck_line(points: np.ndarray, margin: float) -> tuple[np.ndarray, float]:
    """The cut below the chin as a half-plane ``dot(q, n) > c`` (pixels below it are torso).

    Args:
        points: float [478,2+] landmarks in pixels.
        margin: distance below the chin, in face heights.

    Returns:
        ``(n, c)``: unit normal float64 [2] pointing down the head's axis, and offset (pixels).
    """
    top = points[FACE_TOP, :2].astype(np.float64)
    chin = points[CHIN, :2].astype(np.float64)
    axis = chin - top
    h = float(np.hypot(*axis))
    n = axis / h if h > 1e-6 else np.array([0.0, 1.0])
    return n, float(n @ chin + margin * h)


def above_neck_line(points: np.ndarray, size: tuple[int, int], margin: float) -> np.ndarray:
    """bool [H,W]: True for pixels on the head's side of the neck line (see :func:`neck_line`)."""
    n, c = neck_line(points, margin)
    h, w = size
    ys = np.arange(h, dtype=np.float32)[:, None] + 0.5
    xs = np.arange(w, dtype=np.float32)[None, :] + 0.5
    return xs * np.float32(n[0]) + ys * np.float32(n[1]) <= np.float32(c)


def neckhead_mask(person: np.ndarray, points: np.ndarray | None, margin: float, dilate: int = 0) -> np.ndarray:
    """Head, hair and neck: the person mask cut at the neck line, optionally dilated.

    Args:
        person: bool [H,W] foreground (e.g. ``alpha > 0.5``).
        points: float [478,2+] landmarks in pixels, or ``None`` (no face: no cut).
        margin: neck length below the chin, in face heights.
        dilate: grow the mask by this many pixels (elliptical kernel) before the cut, so the hard
            mask does not clip the soft matte's edge; FlashAvatar multiplies by both.

    Returns:
        uint8 [H,W] with values 0 or 255.
    """
    m = person.astype(np.uint8) * np.uint8(255)
    if dilate > 0:
        k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * dilate + 1, 2 * dilate + 1))
        m = cv2.dilate(m, k)
    if points is not None:
        m[~above_neck_line(points, m.shape, margin)] = 0
    return m
