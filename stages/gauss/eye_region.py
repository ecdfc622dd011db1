"""The eye region: which Gaussians sit around the eyes (:func:`eye_region_gaussians`, from the face
model's ``left_eye_region`` / ``right_eye_region`` vertex masks), and its held-out error: PSNR of the render against the footage inside a mask around
both eyes, built from the frame's MediaPipe landmarks (blinks and winks live there, and a
whole-frame PSNR hardly sees them).

The mask of one eye is the convex hull of its contour (lids and corners,
:data:`stages.tracking.eyelids.EYES_MP`) grown by ``grow`` eye widths, so the lids, the lashes and
the skin just around them count whether the eye is open or shut.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch import Tensor

from stages.tracking.eyelids import EYES_MP


def eye_region_mask(points: np.ndarray, size: int, scale: float = 1.0, grow: float = 0.35) -> np.ndarray:
    """bool [size, size]: both eyes' regions.

    Args:
        points: float [478,2+] MediaPipe landmarks in pixels of the landmark image.
        size: side of the mask, pixels.
        scale: mask pixels per landmark pixel (``size / 512`` for 512x512 crops).
        grow: how far the region reaches beyond the eye's contour, in eye widths.
    """
    out = np.zeros((size, size), np.uint8)
    p = np.asarray(points, np.float64)[:, :2] * scale
    for upper, lower, corners in EYES_MP:
        idx = list(corners) + list(upper) + list(lower)
        eye = p[idx]
        if not np.isfinite(eye).all():
            continue
        width = float(np.linalg.norm(p[corners[0]] - p[corners[1]]))
        hull = cv2.convexHull(np.rint(eye * 16).astype(np.int32))
        cv2.fillConvexPoly(out, hull, 1, lineType=cv2.LINE_8, shift=4)
        r = int(round(grow * width))
        if r > 0:
            one = np.zeros_like(out)
            cv2.fillConvexPoly(one, hull, 1, lineType=cv2.LINE_8, shift=4)
            out |= cv2.dilate(one, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
    return out > 0


def masked_psnr(image: np.ndarray, gt: np.ndarray, mask: np.ndarray) -> float | None:
    """PSNR (dB) of ``image`` against ``gt`` (uint8 or 0..1 [H,W,3]) over the pixels of ``mask``
    (bool [H,W]); ``None`` for an empty mask."""
    if not mask.any():
        return None
    scale = 255.0 if image.dtype == np.uint8 else 1.0
    d = (image[mask].astype(np.float64) - gt[mask].astype(np.float64)) / scale
    return float(-10.0 * np.log10(max(float((d ** 2).mean()), 1e-12)))


EYE_REGION_MASKS = ("left_eye_region", "right_eye_region")


def eye_region_faces(masks: dict, faces: Tensor, grow: int = 0) -> Tensor:
    """bool [F]: the faces with a vertex in the face model's eye regions (see :func:`eye_region_gaussians`),
    grown by ``grow`` rings of neighbouring faces (sharing a vertex)."""
    idx = [np.asarray(masks[k], np.int64).reshape(-1) for k in EYE_REGION_MASKS if k in (masks or {})]
    if not idx:
        return torch.zeros(faces.shape[0], dtype=torch.bool)
    faces = faces.long().cpu()
    in_region = torch.zeros(int(faces.max()) + 1, dtype=torch.bool)
    in_region[torch.as_tensor(np.concatenate(idx))] = True
    out = in_region[faces].any(-1)
    for _ in range(grow):
        in_region[faces[out].reshape(-1)] = True
        out = in_region[faces].any(-1)
    return out


def eye_region_gaussians(masks: dict, faces: Tensor, face_idx: Tensor, grow: int = 0) -> Tensor:
    """bool [N]: the Gaussians whose triangle has a vertex in the face model's eye regions
    (``left_eye_region``, ``right_eye_region``: lids, eye opening and brows on the stand-in; FLAME's
    masks of the same names). All False when the model has neither mask.

    Args:
        masks: region name -> vertex indices (``FaceModelData.masks``).
        faces: [F, 3] int.  face_idx: [N] each Gaussian's face.
        grow: rings of neighbouring faces added around the region (:func:`eye_region_faces`).
    """
    return eye_region_faces(masks, faces, grow)[face_idx.long().cpu()]
