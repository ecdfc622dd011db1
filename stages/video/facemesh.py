"""MediaPipe FaceMesh (478 points with iris refinement) over a sequence of face crops.

Within a sequence FaceMesh runs in tracking mode (``static_image_mode=False``): the face box of
frame k comes from the landmarks of frame k-1 and detection only reruns when tracking is lost,
several times faster than detecting in every frame.

Confidence: the legacy ``solutions`` API does not expose FaceMesh's face-presence score, so a
frame's confidence is the score of MediaPipe's short-range face detector on the crop (0 when it
finds no face). The detector costs about half as much as FaceMesh itself, so it runs on every
``score_every``-th frame and on every frame where something changes: the first frame, a frame
where FaceMesh fails or recovers, and a frame whose landmarks jump (mean motion over
``rescore_motion_px``); the frames between carry the last score. FaceMesh itself re-detects the
face whenever its own presence score drops below ``min_tracking_confidence``, so every ``ok``
frame passed that test too. A frame is ``ok`` when FaceMesh returned landmarks; failed frames
keep NaN points, never zeros.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from stages.video import mediapipe_env

mediapipe_env.configure()

N_POINTS = 478


@dataclass
class MeshResult:
    """Landmarks of one frame.

    Attributes:
        points: float32 [478,3]: x, y in image pixels, z in MediaPipe's depth units scaled to
            pixels (relative to the face centre; smaller is nearer the camera); NaN when not ok.
        confidence: face detector score in [0, 1] on this image, or on the last scored frame of
            the sequence (see the module docstring).
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
        score_every: run the face detector for the confidence on every this-many-th frame (and
            on every frame where tracking fails, recovers or jumps); 1 = every frame; 0 = never
            (confidence 1.0 throughout).
        rescore_motion_px: mean landmark motion from the previous frame, pixels, that triggers
            a fresh score.
    Use as a context manager.
    """

    def __init__(self, *, static: bool = False, min_detection_confidence: float = 0.5,
                 min_tracking_confidence: float = 0.5, score_every: int = 8, rescore_motion_px: float = 8.0):
        if score_every < 0:
            raise ValueError("score_every must be >= 0")
        import mediapipe as mp

        self._mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=static, max_num_faces=1, refine_landmarks=True,
                                                     min_detection_confidence=min_detection_confidence,
                                                     min_tracking_confidence=min_tracking_confidence)
        self._det = mp.solutions.face_detection.FaceDetection(model_selection=0, min_detection_confidence=0.1) \
            if score_every > 0 else None
        self._every = score_every
        self._motion = rescore_motion_px
        self._since = 0  # frames since the last scored one
        self._last_conf = 1.0
        self._last_ok: bool | None = None
        self._last_pts: np.ndarray | None = None
        self.scored = 0  # how many frames ran the detector

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
        ok = bool(res.multi_face_landmarks)
        if ok:
            lm = res.multi_face_landmarks[0].landmark
            pts = np.fromiter((v for p in lm for v in (p.x, p.y, p.z)), dtype=np.float32, count=3 * len(lm))
            pts = pts.reshape(-1, 3)
            pts[:, 0] *= w
            pts[:, 1] *= h
            pts[:, 2] *= w  # MediaPipe's z uses roughly the scale of x
        else:
            pts = np.full((N_POINTS, 3), np.nan, dtype=np.float32)
        conf = self._confidence(image, ok, pts)
        return MeshResult(pts, conf, ok)

    def _needs_score(self, ok: bool, pts: np.ndarray) -> bool:
        if self._since + 1 >= self._every or not ok or ok != self._last_ok:
            return True
        if self._last_pts is None:
            return True
        motion = float(np.linalg.norm(pts[:, :2] - self._last_pts[:, :2], axis=-1).mean())
        return motion > self._motion

    def _confidence(self, image: np.ndarray, ok: bool, pts: np.ndarray) -> float:
        if self._det is None:
            return 1.0
        if self._needs_score(ok, pts):
            det = self._det.process(image)
            self._last_conf = max((float(d.score[0]) for d in det.detections), default=0.0) \
                if det.detections else 0.0
            self._since = 0
            self.scored += 1
        else:
            self._since += 1
        self._last_ok = ok
        self._last_pts = pts if ok else None
        return self._last_conf


def track_sequence(images: Iterable[np.ndarray], **kw) -> Iterator[MeshResult]:
    """:meth:`FaceMeshTracker.process` over ``images`` in order (one tracker for all)."""
    with FaceMeshTracker(**kw) as tracker:
        for image in images:
            yield tracker.process(image)
