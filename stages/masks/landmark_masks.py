"""Masks derived from MediaPipe FaceMesh landmarks (478 points, x/y in crop pixels).

- Mouth: the filled inner-lip polygon. MediaPipe's lip contours (``FACEMESH_LIPS`` in
  ``mediapipe.solutions.face_mesh_connections``) hold an outer and an inner loop; the inner loop,
  which bounds the mouth opening (BiSeNet's class 11 "mouth"), runs
  ``78 191 80 81 82 13 312 311 310 415 308`` along the upper lip's inner edge (right corner 78 to
  left corner 308, 13 in the middle) and back ``324 318 402 317 14 87 178 88 95`` along the lower
  lip's inner edge (14 in the middle). A closed mouth gives a sliver of (near) zero area.
- Skin colour of the face (:func:`skin_colour`), which the neck region
  (:mod:`stages.masks.neck`) uses to find where the skin below the chin stops.
- The head's axes in the image (:func:`head_frame`).
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
FACE_RIGHT, FACE_LEFT = 234, 454
"""The face oval's extremes beside the ears (the subject's right and left)."""


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


def polygon_mask(poly: np.ndarray, size: tuple[int, int], supersample: int = 4) -> np.ndarray:
    """Pixels at least half covered by a polygon (area coverage, so a degenerate polygon such as a
    closed mouth covers nothing, unlike ``cv2.fillPoly``'s inclusive edges).

    Args:
        poly: float [K,2] vertices (x, y) in pixels; pixel ``(i, j)`` spans ``[j, j+1) x [i, i+1)``.
        size: ``(H, W)``.
        supersample: samples per pixel side for the coverage estimate.

    Returns:
        uint8 [H,W], 255 inside, 0 outside.
    """
    h, w = size
    out = np.zeros(size, np.uint8)
    poly = np.asarray(poly, np.float64)
    if not np.isfinite(poly).all():
        return out
    x0, y0 = np.clip(np.floor(poly.min(0)).astype(int), 0, (w, h))
    x1, y1 = np.clip(np.ceil(poly.max(0)).astype(int) + 1, 0, (w, h))
    if x1 <= x0 or y1 <= y0:
        return out
    s = supersample
    fine = np.zeros(((y1 - y0) * s, (x1 - x0) * s), np.uint8)
    # fine pixel (u, v) has its centre at ((u + 0.5) / s, (v + 0.5) / s) in crop pixels
    pts = (poly - (x0, y0)) * s - 0.5
    cv2.fillPoly(fine, [np.rint(pts * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
    # cv2 fills edge pixels inclusively; a shrink by one fine pixel makes that a coverage estimate
    fine = cv2.erode(fine, np.ones((2, 2), np.uint8), anchor=(0, 0), borderType=cv2.BORDER_REPLICATE)
    cover = fine.reshape(y1 - y0, s, x1 - x0, s).mean(axis=(1, 3))
    out[y0:y1, x0:x1] = np.where(cover >= 0.5, np.uint8(255), np.uint8(0))
    return out


def mouth_mask(points: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Filled inner-lip polygon of one frame (pixels at least half inside, see :func:`polygon_mask`).

    Args:
        points: float [478,2+] landmarks, x/y in pixels of the ``size`` image.
        size: ``(H, W)`` of the mask.

    Returns:
        uint8 [H,W], 255 inside the mouth opening, 0 elsewhere.
    """
    return polygon_mask(points[list(INNER_LIP), :2], size)


def head_frame(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float]:
    """The head's axes in the image: ``(down, across, h, w)``.

    ``down`` (unit float64 [2]) points from the top of the face to the chin, ``across`` is
    perpendicular to it, ``h`` is the face height and ``w`` the face width in pixels."""
    top = points[FACE_TOP, :2].astype(np.float64)
    chin = points[CHIN, :2].astype(np.float64)
    axis = chin - top
    h = float(np.hypot(*axis))
    down = axis / h if h > 1e-6 else np.array([0.0, 1.0])
    across = np.array([-down[1], down[0]])
    w = float(np.hypot(*(points[FACE_LEFT, :2] - points[FACE_RIGHT, :2]).astype(np.float64)))
    return down, across, h, w


def skin_colour(rgb: np.ndarray, points: np.ndarray, floor: float = 8.0) -> tuple[np.ndarray, np.ndarray, float]:
    """Skin colour of the face, robustly: inside the landmarks' convex hull (eyes, brows and lips
    are a minority there), the median chroma (Cr, Cb), a tolerance of
    ``max(floor, 3 * 1.4826 * MAD)`` per channel, and the median luma.

    Returns:
        ``(median CrCb float32 [2], tolerance float32 [2], median Y)`` in OpenCV's 8-bit YCrCb units.
    """
    hull = cv2.convexHull(np.rint(points[:, :2]).astype(np.int32))
    x, y, bw, bh = cv2.boundingRect(hull)
    x0, y0 = max(x, 0), max(y, 0)
    x1, y1 = min(x + bw, rgb.shape[1]), min(y + bh, rgb.shape[0])
    if x1 <= x0 or y1 <= y0:
        return np.zeros(2, np.float32), np.full(2, -1, np.float32), 256.0  # matches nothing
    m = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.fillConvexPoly(m, hull - np.array([x0, y0], np.int32), 1)
    ycc = cv2.cvtColor(np.ascontiguousarray(rgb[y0:y1, x0:x1]), cv2.COLOR_RGB2YCrCb)[m > 0].astype(np.float32)
    med = np.median(ycc, axis=0)
    mad = np.median(np.abs(ycc[:, 1:] - med[1:]), axis=0)
    return med[1:], np.maximum(np.float32(floor), 3 * 1.4826 * mad).astype(np.float32), float(med[0])
