"""Automatic keyframe choice for calibration, judged from the MediaPipe landmarks alone (numpy, no
model needed): well detected, mouth closed, eyes open, and spread over the head poses the video
shows (the identity's depth is only observable across poses: near-frontal keyframes alone leave
it to the prior), and over time."""

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


_MIN_SPREAD = np.array([0.1, 0.05, 0.05, 1e-6])
"""Smallest spread used to normalise yaw (asymmetry units), pitch (relative), roll (radians), time."""


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


def select_keyframes(points: np.ndarray, ok: np.ndarray, confidence: np.ndarray, count: int, *,
                     quality_quantile: float = 0.5, time_weight: float = 0.5) -> np.ndarray:
    """Indices (into the frame arrays, sorted) of up to ``count`` keyframes spread over head poses.

    Candidates are the valid frames whose quality (detector confidence, mouth closed, eyes open;
    not frontality) is at least the ``quality_quantile`` of the valid frames'. Among them the first
    keyframe is the best-scoring (frontal, neutral) one; each further one is the candidate farthest
    from those already chosen (greedy farthest-point sampling) in (yaw, pitch, roll, time), each
    axis divided by its spread over the candidates (at least :data:`_MIN_SPREAD`, so that the
    landmarks' noise in a still video is not blown up into pose differences) and time weighted by
    ``time_weight``. A video
    that barely moves thus gets keyframes spread over time; one that turns gets its extreme poses.

    Raises:
        ValueError: when no frame has landmarks.
    """
    s = score_frames(points, ok, confidence)
    valid = np.flatnonzero(np.isfinite(s.score))
    if valid.size == 0:
        raise ValueError("no frame has landmarks")
    count = min(count, valid.size)
    quality = (np.asarray(confidence, dtype=np.float64)[valid] - 4.0 * s.mouth[valid]
               - np.abs(np.minimum(s.eyes[valid], 0.0)))
    keep = quality >= np.quantile(quality, quality_quantile)
    if keep.sum() < count:
        keep = quality >= np.sort(quality)[::-1][count - 1]
    cand = valid[keep]
    time = cand / max(len(s.score) - 1, 1)
    feats = np.stack([s.yaw[cand], s.pitch[cand], s.roll[cand], time], 1)
    feats = feats / np.maximum(feats.std(0), _MIN_SPREAD)
    feats[:, 3] *= time_weight
    chosen = [int(np.argmax(s.score[cand]))]
    dist = np.linalg.norm(feats - feats[chosen[0]], axis=1)
    while len(chosen) < min(count, len(cand)):
        nxt = int(np.argmax(dist))
        if dist[nxt] <= 0:
            break
        chosen.append(nxt)
        dist = np.minimum(dist, np.linalg.norm(feats - feats[nxt], axis=1))
    return np.unique(cand[np.asarray(chosen, dtype=np.int64)])
