"""Automatic keyframe choice for calibration: spread over the video, frontal, near-neutral, well
detected, judged from the MediaPipe landmarks alone (numpy, no model needed)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stages.tracking import regions as r


@dataclass(frozen=True)
class KeyframeScores:
    """Per-frame measurements (all [N] float, NaN where the landmarks failed).

    Attributes:
        yaw: left/right asymmetry of the nose tip between the outer eye corners (0 frontal, +-1 profile).
        roll: angle of the line through the outer eye corners, radians.
        pitch: nose tip height between the eye line and the chin, relative to the clip's median.
        mouth: inner-lip opening over face height (0 closed).
        eyes: eye opening over eye width, relative to the clip's median (0 as usual; negative: blink).
        score: higher is better (NaN / -inf for failed frames).
    """

    yaw: np.ndarray
    roll: np.ndarray
    pitch: np.ndarray
    mouth: np.ndarray
    eyes: np.ndarray
    score: np.ndarray


def _d(points: np.ndarray, a: int, b: int) -> np.ndarray:
    return np.linalg.norm(points[:, a, :2] - points[:, b, :2], axis=-1)


def score_frames(points: np.ndarray, ok: np.ndarray, confidence: np.ndarray) -> KeyframeScores:
    """Measure frontality, neutrality and detection quality of every frame.

    Args:
        points: [N, 478, 2 or 3] landmark pixels (x, y first).
        ok: [N] bool landmarks found. confidence: [N] detector confidence 0..1.
    """
    p = np.asarray(points, dtype=np.float64)
    ok = np.asarray(ok, dtype=bool) & np.isfinite(p[:, :, :2]).all(axis=(1, 2))
    dr, dl = _d(p, r.NOSE_TIP, r.RIGHT_EYE_OUTER), _d(p, r.NOSE_TIP, r.LEFT_EYE_OUTER)
    yaw = (dr - dl) / np.maximum(dr + dl, 1e-6)
    eye_vec = p[:, r.LEFT_EYE_OUTER, :2] - p[:, r.RIGHT_EYE_OUTER, :2]
    roll = np.arctan2(eye_vec[:, 1], eye_vec[:, 0])
    eye_mid = 0.5 * (p[:, r.LEFT_EYE_OUTER, :2] + p[:, r.RIGHT_EYE_OUTER, :2])
    face_h = np.maximum(_d(p, r.FOREHEAD, r.CHIN), 1e-6)
    chin_d = np.maximum(np.linalg.norm(p[:, r.CHIN, :2] - eye_mid, axis=-1), 1e-6)
    pitch_raw = np.linalg.norm(p[:, r.NOSE_TIP, :2] - eye_mid, axis=-1) / chin_d
    mouth = _d(p, r.LIP_INNER_UPPER, r.LIP_INNER_LOWER) / face_h
    eye_open = 0.5 * (_d(p, r.RIGHT_EYE_UPPER, r.RIGHT_EYE_LOWER) / np.maximum(_d(p, r.RIGHT_EYE_OUTER, r.RIGHT_EYE_INNER), 1e-6)
                      + _d(p, r.LEFT_EYE_UPPER, r.LEFT_EYE_LOWER) / np.maximum(_d(p, r.LEFT_EYE_OUTER, r.LEFT_EYE_INNER), 1e-6))
    nan = np.full(len(p), np.nan)
    if not ok.any():
        return KeyframeScores(nan, nan, nan, nan, nan, np.full(len(p), -np.inf))
    pitch = pitch_raw - np.median(pitch_raw[ok])
    eyes = eye_open / max(float(np.median(eye_open[ok])), 1e-6) - 1.0
    score = (np.asarray(confidence, dtype=np.float64) - 3.0 * np.abs(yaw) - 2.0 * np.abs(roll) - 3.0 * np.abs(pitch)
             - 4.0 * mouth - 1.0 * np.abs(np.minimum(eyes, 0.0)))
    score = np.where(ok, score, -np.inf)
    masked = [np.where(ok, v, np.nan) for v in (yaw, roll, pitch, mouth, eyes)]
    return KeyframeScores(*masked, score=score)


def select_keyframes(points: np.ndarray, ok: np.ndarray, confidence: np.ndarray, count: int) -> np.ndarray:
    """Indices (into the frame arrays, sorted) of up to ``count`` keyframes: the video's valid
    frames are cut into ``count`` equal spans of time and the best-scoring frame of each is taken.

    Raises:
        ValueError: when no frame has landmarks.
    """
    scores = score_frames(points, ok, confidence).score
    valid = np.flatnonzero(np.isfinite(scores))
    if valid.size == 0:
        raise ValueError("no frame has landmarks")
    count = min(count, valid.size)
    picks = []
    for span in np.array_split(valid, count):
        picks.append(int(span[np.argmax(scores[span])]))
    return np.unique(np.asarray(picks, dtype=np.int64))
