"""Find the face in sampled frames: MediaPipe face detection, then a FaceMesh landmark box.

MediaPipe 0.10.21 ``solutions`` bundle their models (nothing is downloaded). The detector gives
coarse boxes for every face; the dominant face (the largest box) is then refined by FaceMesh on
a square cut around it, whose 478 points give the landmark box the crop is built from (forehead
to chin, cheek to cheek).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from stages.video import mediapipe_env

mediapipe_env.configure()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels


@dataclass(frozen=True)
class FaceObservation:
    """The face found in one frame.

    Attributes:
        key: the caller's id of the frame (e.g. its pts).
        faces: number of faces the detector found (score >= its threshold).
        score: detection score of the dominant face, 0 when none.
        det_box: detector box of the dominant face (pixels, x0 y0 x1 y1), ``None`` when none.
        box: landmark box of the dominant face (pixels), ``None`` when none; the detector box
            enlarged 1.3x when FaceMesh found no landmarks.
        mesh: whether ``box`` comes from FaceMesh landmarks.
        others: detector boxes of the other faces.
    """

    key: int
    faces: int
    score: float
    det_box: Box | None
    box: Box | None
    mesh: bool
    others: tuple[Box, ...] = field(default=())

    @property
    def found(self) -> bool:
        return self.box is not None

    @property
    def size(self) -> float:
        """Longer side of the landmark box, pixels (0 when none)."""
        if self.box is None:
            return 0.0
        return float(max(self.box[2] - self.box[0], self.box[3] - self.box[1]))


def box_area(b: Box) -> float:
    return max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])


def square_cut(image: np.ndarray, cx: float, cy: float, side: int, out: int) -> tuple[np.ndarray, float, float, float]:
    """Cut a ``side``-pixel square centred at (cx, cy) from ``image`` [H,W,3] (black outside),
    resize it to ``out`` pixels; return (cut [out,out,3], x0, y0, scale) with
    ``image_xy = (cut_xy / scale) + (x0, y0)``."""
    import cv2

    h, w = image.shape[:2]
    side = max(1, int(round(side)))
    x0 = int(round(cx - side / 2))
    y0 = int(round(cy - side / 2))
    canvas = np.zeros((side, side, 3), dtype=np.uint8)
    ax0, ay0 = max(0, x0), max(0, y0)
    ax1, ay1 = min(w, x0 + side), min(h, y0 + side)
    if ax1 > ax0 and ay1 > ay0:
        canvas[ay0 - y0:ay1 - y0, ax0 - x0:ax1 - x0] = image[ay0:ay1, ax0:ax1]
    interp = cv2.INTER_AREA if side > out else cv2.INTER_LINEAR
    cut = cv2.resize(canvas, (out, out), interpolation=interp) if side != out else canvas
    return cut, float(x0), float(y0), out / side


def _starts(length: int, side: int) -> list[int]:
    """Tile origins covering ``length`` with tiles of ``side`` overlapping by at least half."""
    if length <= side:
        return [0]
    n = int(np.ceil(2 * length / side)) - 1
    return sorted(set(np.linspace(0, length - side, n).round().astype(int).tolist()))


def _iou(a: Box, b: Box) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = box_area(a) + box_area(b) - inter
    return inter / union if union > 0 else 0.0


def _suppress(found: list[tuple[float, Box]], iou: float = 0.3) -> list[tuple[float, Box]]:
    """Non-maximum suppression: the same face seen in overlapping tiles is kept once."""
    kept: list[tuple[float, Box]] = []
    for score, box in sorted(found, key=lambda sb: -sb[0]):
        if all(_iou(box, k) < iou for _, k in kept):
            kept.append((score, box))
    return kept


class FaceDetector:
    """MediaPipe face detection + FaceMesh landmark box, for single frames (not a sequence).

    Args:
        min_score: detection threshold.
        mesh_size: side of the square cut FaceMesh sees (pixels).
    Use as a context manager (it holds MediaPipe graphs).
    """

    def __init__(self, min_score: float = 0.5, mesh_size: int = 256):
        import mediapipe as mp

        self.min_score = min_score
        self.mesh_size = mesh_size
        self._mp = mp
        self._full = mp.solutions.face_detection.FaceDetection(model_selection=1, min_detection_confidence=min_score)
        self._short_graph = None  # the short-range detector, made when the full-range one first finds nothing
        self._mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1, refine_landmarks=True,
                                                     min_detection_confidence=min_score)

    @property
    def _short(self):
        if self._short_graph is None:
            self._short_graph = self._mp.solutions.face_detection.FaceDetection(
                model_selection=0, min_detection_confidence=self.min_score)
        return self._short_graph

    def close(self) -> None:
        for g in (self._full, self._short_graph, self._mesh):
            if g is not None:
                g.close()

    def __enter__(self) -> "FaceDetector":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def detect(self, image: np.ndarray) -> list[tuple[float, Box]]:
        """All faces in ``image`` (RGB uint8 [H,W,3]) as (score, box in pixels), largest first.

        The detectors see a 192 (full range) or 128 (short range) pixel version of what they are
        given, so a face 100 px tall in a 1080p frame would shrink to 10 px. When the whole
        picture shows no face, overlapping square tiles are tried, first of the picture's short
        side and then of half of it (faces down to about 40 px in 1080p)."""
        h, w = image.shape[:2]
        image = np.ascontiguousarray(image)
        faces = self._detect_whole(image, self._full) or self._detect_whole(image, self._short)
        short = min(h, w)
        for side in (short, short // 2):
            if faces or side < 128 or (side == short and h == w):
                break
            found = []
            for y0 in _starts(h, side):
                for x0 in _starts(w, side):
                    tile = np.ascontiguousarray(image[y0:y0 + side, x0:x0 + side])
                    for score, b in self._detect_whole(tile, self._full):
                        found.append((score, (b[0] + x0, b[1] + y0, b[2] + x0, b[3] + y0)))
            faces = _suppress(found)
        return sorted(faces, key=lambda sb: -box_area(sb[1]))

    @staticmethod
    def _detect_whole(image: np.ndarray, graph) -> list[tuple[float, Box]]:  # noqa: ANN001 - a MediaPipe graph
        """Faces ``graph`` finds in the whole of ``image``, as (score, box in pixels)."""
        h, w = image.shape[:2]
        res = graph.process(image)
        out = []
        for d in res.detections or ():
            bb = d.location_data.relative_bounding_box
            out.append((float(d.score[0]), (bb.xmin * w, bb.ymin * h, (bb.xmin + bb.width) * w,
                                            (bb.ymin + bb.height) * h)))
        return out

    def landmarks(self, image: np.ndarray, det_box: Box) -> np.ndarray | None:
        """FaceMesh points [478,3] (x, y image pixels; z in the same pixel scale) of the face in
        ``det_box``, found on a square cut twice the box's size; ``None`` when FaceMesh fails."""
        cx, cy = (det_box[0] + det_box[2]) / 2, (det_box[1] + det_box[3]) / 2
        side = 2.2 * max(det_box[2] - det_box[0], det_box[3] - det_box[1], 8)
        cut, x0, y0, scale = square_cut(image, cx, cy, side, self.mesh_size)
        res = self._mesh.process(cut)
        if not res.multi_face_landmarks:
            return None
        pts = np.array([(p.x, p.y, p.z) for p in res.multi_face_landmarks[0].landmark], dtype=np.float32)
        pts *= self.mesh_size
        pts[:, 0] = pts[:, 0] / scale + x0
        pts[:, 1] = pts[:, 1] / scale + y0
        pts[:, 2] = pts[:, 2] / scale
        return pts

    def observe(self, image: np.ndarray, key: int = 0) -> FaceObservation:
        """Detect the dominant face in ``image`` (RGB uint8 [H,W,3]) and its landmark box."""
        faces = self.detect(image)
        if not faces:
            return FaceObservation(key, 0, 0.0, None, None, False)
        score, det = faces[0]
        pts = self.landmarks(image, det)
        if pts is not None:
            box = (float(pts[:, 0].min()), float(pts[:, 1].min()), float(pts[:, 0].max()), float(pts[:, 1].max()))
            mesh = True
        else:
            cx, cy = (det[0] + det[2]) / 2, (det[1] + det[3]) / 2
            hw, hh = 0.65 * (det[2] - det[0]), 0.65 * (det[3] - det[1])
            box, mesh = (cx - hw, cy - hh, cx + hw, cy + hh), False
        return FaceObservation(key, len(faces), score, det, box, mesh, tuple(b for _, b in faces[1:]))
