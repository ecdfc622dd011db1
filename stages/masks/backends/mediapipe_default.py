"""The default, offline backend: MediaPipe selfie segmentation (the model bundled with mediapipe
0.10.21, nothing downloaded) refined into a soft matte with a guided filter; neckhead and mouth
from the face landmarks (:mod:`stages.masks.landmark_masks`).

Selfie segmentation is a per-frame TFLite model on the CPU; frames are independent, so callers run
:meth:`SelfieMatting.matte` from several threads (each thread gets its own MediaPipe graph).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from stages.masks.guided_filter import refine_matte
from stages.video import mediapipe_env
from stages.masks.landmark_masks import mouth_mask
from stages.masks.neck import frame_neck, neckhead_from_region, region_from_geometry

mediapipe_env.configure()


@dataclass(frozen=True)
class SelfieParams:
    """Attributes:
        model_selection: MediaPipe selfie model, 0 = general (256x256 input), 1 = landscape (144x256).
        radius: guided-filter window radius in pixels (at 512x512).
        eps: guided-filter regulariser (0..1 intensities squared).
        snap: matte values within ``snap`` of 0 or 1 become exactly 0 or 1.
    """

    model_selection: int = 0
    radius: int = 4
    eps: float = 1e-4
    snap: float = 0.02


class SelfieMatting:
    """Soft matte from MediaPipe selfie segmentation; thread-safe (one graph per thread)."""

    def __init__(self, params: SelfieParams = SelfieParams()):
        self.params = params
        self._local = threading.local()
        self._all: list[object] = []
        self._lock = threading.Lock()

    def _segmenter(self):
        seg = getattr(self._local, "seg", None)
        if seg is None:
            from mediapipe.python.solutions.selfie_segmentation import SelfieSegmentation

            seg = SelfieSegmentation(model_selection=self.params.model_selection)
            self._local.seg = seg
            with self._lock:
                self._all.append(seg)
        return seg

    def probability(self, rgb: np.ndarray) -> np.ndarray:
        """Raw foreground probability of one frame. rgb uint8 [H,W,3] -> float32 [H,W] in 0..1."""
        mask = self._segmenter().process(np.ascontiguousarray(rgb)).segmentation_mask
        return np.asarray(mask, np.float32)

    def matte(self, rgb: np.ndarray) -> np.ndarray:
        """Soft matte of one frame. rgb uint8 [H,W,3] -> float32 [H,W] in 0..1."""
        p = self.params
        return refine_matte(rgb, self.probability(rgb), p.radius, p.eps, p.snap)

    def close(self) -> None:
        """Release every thread's MediaPipe graph."""
        with self._lock:
            for seg in self._all:
                seg.close()
            self._all.clear()


def landmark_parsing(alpha: np.ndarray, points: np.ndarray | None, neck_margin: float, dilate: int,
                     neck_half_width: float = 0.6, rgb: np.ndarray | None = None,
                     neck: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Default parsing of one frame from its matte and landmarks.

    Args:
        alpha: float [H,W] matte in 0..1 (any backend's).
        points: float [478,2+] landmarks in pixels, or ``None`` when the shard has no face (then the
            neckhead is the whole person and the mouth is empty).
        neck_margin: greatest neck length below the chin, in face heights.
        dilate: pixels the neckhead grows beyond ``alpha > 0.5``.
        neck_half_width: neck band half-width, in face widths.
        rgb: uint8 [H,W,3] frame, to find the collar from the skin colour (``None``: a fixed U).
        neck: ``(geometry, collar)`` of :mod:`stages.masks.neck` already computed (and smoothed over
            time) for this frame; then ``neck_margin``, ``neck_half_width`` and ``rgb`` are unused.

    Returns:
        ``(neckhead, mouth)``: uint8 [H,W] each, values 0 or 255.
    """
    person = alpha > 0.5
    if points is None:
        neckhead = person.astype(np.uint8) * np.uint8(255)
        return neckhead, np.zeros(alpha.shape, np.uint8)
    geometry, collar = neck if neck is not None else frame_neck(points, neck_margin, neck_half_width, rgb)
    region = region_from_geometry(geometry, collar, alpha.shape, points)
    neckhead = neckhead_from_region(person, region, dilate)
    return neckhead, mouth_mask(points, alpha.shape)
