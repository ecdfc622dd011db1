"""Diagnostic overlay video: the fitted mesh (wireframe of the triangles facing the camera), the
detected landmarks and the model's landmarks drawn over the frames, encoded as H.264 with PyAV."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np

MESH_COLOUR = (90, 160, 255)      # RGB
DETECTED_COLOUR = (0, 255, 0)
MODEL_COLOUR = (255, 40, 40)


def front_faces(pix: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """bool [F]: triangles facing the camera (negative signed pixel area in the y-down image,
    for counter-clockwise-from-outside meshes). pix: [V, 2] pixels."""
    a, b, c = pix[faces[:, 0]], pix[faces[:, 1]], pix[faces[:, 2]]
    area = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    return area < 0


_DOT = np.array([[0, 0], [0, -1], [-1, 0], [1, 0], [0, 1]])
"""(dx, dy) of the pixels of ``cv2.circle(img, c, 1, colour, -1, cv2.LINE_8)``: a plus sign."""


def stamp_points(image: np.ndarray, pts: np.ndarray, colour: tuple[int, int, int]) -> None:
    """Draw a radius-1 dot at every finite point of ``pts`` [P, 2] (x, y pixels) into ``image``
    [H, W, 3] in place: the pixels ``cv2.circle(..., 1, colour, -1)`` sets, all points at once
    (one ``cv2.circle`` call per point costs milliseconds a frame for 600 points)."""
    pts = np.asarray(pts, np.float64).reshape(-1, 2)
    pts = pts[np.isfinite(pts).all(-1) & (np.abs(pts) < 1e6).all(-1)]
    if not len(pts):
        return
    xy = (np.round(pts).astype(np.int64)[:, None, :] + _DOT[None]).reshape(-1, 2)
    h, w = image.shape[:2]
    xy = xy[(xy[:, 0] >= 0) & (xy[:, 0] < w) & (xy[:, 1] >= 0) & (xy[:, 1] < h)]
    image[xy[:, 1], xy[:, 0]] = colour


def draw_overlay(image: np.ndarray, mesh_pix: np.ndarray, faces: np.ndarray, detected: np.ndarray | None,
                 model_lmk: np.ndarray | None, text: str = "") -> np.ndarray:
    """Draw on a copy of ``image``.

    Args:
        image: uint8 [H, W, 3] RGB.
        mesh_pix: [V, 2] projected vertices, pixels (OpenCV). faces: int [F, 3].
        detected: [P, 2] detected landmarks (NaN rows skipped) or None.
        model_lmk: [L, 2] the model's projected landmarks or None.
        text: a caption in the top-left corner.

    Returns:
        uint8 [H, W, 3].
    """
    import cv2

    out = np.ascontiguousarray(image.copy())
    if np.isfinite(mesh_pix).all():
        tri = mesh_pix[faces[front_faces(mesh_pix, faces)]]  # [F', 3, 2]
        tri = np.clip(np.round(tri), -10_000, 10_000).astype(np.int32).reshape(-1, 3, 1, 2)
        layer = out.copy()
        cv2.polylines(layer, list(tri), True, MESH_COLOUR, 1, cv2.LINE_8)
        out = cv2.addWeighted(layer, 0.45, out, 0.55, 0)
    for pts, colour in ((detected, DETECTED_COLOUR), (model_lmk, MODEL_COLOUR)):
        if pts is not None:
            stamp_points(out, pts, colour)
    if text:
        cv2.putText(out, text, (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def write_video(path: str | Path, frames: Iterable[np.ndarray], fps: float = 25.0, crf: int = 23,
                preset: str = "veryfast") -> int:
    """Encode uint8 [H, W, 3] RGB frames as H.264 (yuv420p) MP4 with PyAV (x264 ``preset``); return
    the frame count."""
    import av

    n = 0
    with av.open(str(path), mode="w") as container:
        stream = None
        for frame in frames:
            if stream is None:
                stream = container.add_stream("libx264", rate=int(round(fps)))
                stream.height, stream.width = frame.shape[0], frame.shape[1]
                stream.pix_fmt = "yuv420p"
                stream.options = {"crf": str(crf), "preset": preset}
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
            n += 1
        if stream is not None:
            for packet in stream.encode():
                container.mux(packet)
    return n
