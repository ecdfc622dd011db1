"""MediaPipe FaceMesh (478 points with iris refinement) over a sequence of face crops.

Within a sequence FaceMesh runs in tracking mode (``static_image_mode=False``): the face box of
frame k comes from the landmarks of frame k-1 and detection only reruns when tracking is lost,
several times faster than detecting in every frame.

Confidence: the legacy ``solutions`` API does not expose FaceMesh's face-presence score, so each
frame's confidence is the score of MediaPipe's short-range face detector on the same crop
(0 when it finds no face). A frame is ``ok`` when FaceMesh returned landmarks; failed frames keep
NaN points, never zeros.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

os.environ.setdefault("GLOG_minloglevel", "2")

N_POINTS = 478


@dataclass
class MeshResult:
    """Landmarks of one frame.

    Attributes:
        points: float32 [478,3]: x, y in image pixels, z in MediaPipe's depth units scaled to
            pixels (relative to the face centre; smaller is nearer the camera); NaN when not ok.
        confidence: face detector score on the image in [0, 1].
        ok: whether FaceMesh found the face.
    """

    points: np.ndarray
    confidence: float
    ok: bool


class FaceMeshTracker:
    """FaceMesh over consecutive frames of one sequence (e.g. one shard).

    Args:
        static: run detection on every frame instead of tracking.
        min_detection_confidence, min_tracking_confidence: MediaPipe thresholds.
        score_frames: compute the detector confidence (costs ~1-2 ms a frame).
    Use as a context manager.
    """

    def __init__(self, *, static: bool = False, min_detection_confidence: float = 0.5,
                 min_tracking_confidence: float = 0.5, score_frames: bool = True):
        import mediapipe as mp

        self._mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=static, max_num_faces=1, refine_landmarks=True,
                                                     min_detection_confidence=min_detection_confidence,
                                                     min_tracking_confidence=min_tracking_confidence)
        self._det = mp.solutions.face_detection.FaceDetection(model_selection=0, min_detection_confidence=0.1) \
            if score_frames else None

    def close(self) -> None:
        self._mesh.close()
        if self._det is not None:
            self._det.close()

    def __enter__(self) -> "FaceMeshTracker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def process(self, image: np.ndarray) -> MeshResult:
        """Landmarks of ``image`` (RGB uint8 [H,W,3], the next frame of the sequence)."""
        h, w = image.shape[:2]
        image = np.ascontiguousarray(image)
        res = self._mesh.process(image)
        conf = 1.0
        if self._det is not None:
            det = self._det.process(image)
            conf = max((float(d.score[0]) for d in det.detections), default=0.0) if det.detections else 0.0
        if not res.multi_face_landmarks:
            return MeshResult(np.full((N_POINTS, 3), np.nan, dtype=np.float32), conf, False)
        lm = res.multi_face_landmarks[0].landmark
        pts = np.fromiter((v for p in lm for v in (p.x, p.y, p.z)), dtype=np.float32, count=3 * len(lm))
        pts = pts.reshape(-1, 3)
        pts[:, 0] *= w
        pts[:, 1] *= h
        pts[:, 2] *= w  # MediaPipe's z uses roughly the scale of x
        return MeshResult(pts, conf, True)


def track_sequence(images: Iterable[np.ndarray], **kw) -> Iterator[MeshResult]:
    """:meth:`FaceMeshTracker.process` over ``images`` in order (one tracker for all)."""
    with FaceMeshTracker(**kw) as tracker:
        for image in images:
            yield tracker.process(image)
