"""The 112x112 ArcFace crop from MediaPipe landmarks: the standard 5-point template (eye centres,
nose tip, mouth corners; insightface's ``arcface_dst``) fitted by a similarity transform, so no face
detector model is needed at run time.

MediaPipe points used (478-point mesh with irises): 468 and 473 (iris centres: the eye on the
image's left, then right), 1 (nose tip), 61 and 291 (mouth corners, image left then right).
"""

from __future__ import annotations

import numpy as np

ARCFACE_SIZE = 112
ARCFACE_TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                             [41.5493, 92.3655], [70.7299, 92.2041]], np.float64)
"""[5,2] pixel positions in the 112x112 crop: left eye, right eye, nose tip, left and right mouth
corner (left = the image's left)."""

MP_FIVE = (468, 473, 1, 61, 291)
"""MediaPipe indices giving :data:`ARCFACE_TEMPLATE`'s five points (see the module docstring)."""


def five_points(points: np.ndarray) -> np.ndarray:
    """``[..., 478, 2+]`` MediaPipe landmarks (pixels) -> ``[..., 5, 2]`` ArcFace points."""
    return np.asarray(points)[..., list(MP_FIVE), :2].astype(np.float64)


def umeyama(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation; no reflection) taking
    ``src [N,2]`` to ``dst [N,2]``. Returns the ``[2,3]`` matrix ``M`` with ``dst ~ M @ [src; 1]``."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    ms, md = src.mean(0), dst.mean(0)
    s, d = src - ms, dst - md
    cov = d.T @ s / len(src)
    U, S, Vt = np.linalg.svd(cov)
    D = np.eye(2)
    D[1, 1] = np.sign(np.linalg.det(U @ Vt)) or 1.0
    R = U @ D @ Vt
    scale = (S * np.diag(D)).sum() / (s ** 2).sum(1).mean()
    return np.concatenate([scale * R, (md - scale * R @ ms)[:, None]], axis=1)


def align_transform(points5: np.ndarray) -> np.ndarray:
    """``[5,2]`` image points -> ``[2,3]`` affine from the image to the 112x112 crop."""
    return umeyama(points5, ARCFACE_TEMPLATE)


def align_faces(images: np.ndarray, points5: np.ndarray) -> np.ndarray:
    """uint8 ``[K,H,W,3]`` images and ``[K,5,2]`` points -> uint8 ``[K,112,112,3]`` aligned crops
    (bilinear, black outside the image)."""
    import cv2

    out = np.empty((len(images), ARCFACE_SIZE, ARCFACE_SIZE, 3), np.uint8)
    for i, (img, p) in enumerate(zip(images, points5)):
        out[i] = cv2.warpAffine(np.ascontiguousarray(img), align_transform(p), (ARCFACE_SIZE, ARCFACE_SIZE),
                                flags=cv2.INTER_LINEAR, borderValue=0.0)
    return out


def alignment_residual(points5: np.ndarray) -> np.ndarray:
    """``[K,5,2]`` -> ``[K]`` mean distance (crop pixels) of the five points from the template after
    the alignment: small for near-frontal faces, large where pitch or yaw bend the face away from
    what a similarity transform can match (MICA's crops are frontal-ish)."""
    out = np.empty(len(points5))
    for i, p in enumerate(points5):
        M = align_transform(p)
        out[i] = np.linalg.norm(p @ M[:, :2].T + M[:, 2] - ARCFACE_TEMPLATE, axis=1).mean()
    return out


def usable_for_arcface(points5: np.ndarray, max_residual: float = 3.0) -> np.ndarray:
    """bool ``[K]``: faces whose :func:`alignment_residual` is at most ``max_residual`` px (always
    at least the best one)."""
    r = alignment_residual(points5)
    return r <= max(max_residual, float(r.min()))
