"""Keyframe choice: spread over the clip, frontal, mouth closed, never a failed frame."""

import numpy as np

from stages.face.flame import FLAME
from stages.tracking.keyframes import score_frames, select_keyframes
from tracking.synthetic import landmarks478, make_clip, standin


def test_keyframes_are_spread_frontal_and_detected():
    model = FLAME(standin())
    clip = make_clip(model, 120, seed=0, yaw_deg=40.0)
    pts = landmarks478(clip, model.mp_index.numpy())
    ok = np.ones(120, bool)
    ok[[10, 11, 12]] = False
    pts[~ok] = np.nan
    conf = np.where(ok, 0.9, 0.0)
    picks = select_keyframes(pts, ok, conf, 6)
    assert len(picks) == 6 and ok[picks].all()
    spans = np.array_split(np.flatnonzero(ok), 6)
    assert all(p in s for p, s in zip(picks, spans))  # one per span of time
    yaw_true = np.abs(clip.params["head_pose"][:, 0])
    assert yaw_true[picks].mean() < yaw_true[ok].mean()  # more frontal than the clip on average
    scores = score_frames(pts, ok, conf)
    assert np.isnan(scores.yaw[10]) and np.isneginf(scores.score[10])
    # the yaw measure follows the true yaw's sign and size
    corr = np.corrcoef(scores.yaw[ok], clip.params["head_pose"][ok, 0])[0, 1]
    assert abs(corr) > 0.9
