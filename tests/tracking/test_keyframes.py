"""Keyframe choice: spread over the head poses (and time), mouth closed, never a failed frame."""

import numpy as np

from stages.face.flame import FLAME
from stages.tracking.keyframes import score_frames, select_keyframes
from tracking.synthetic import landmarks478, make_clip, standin


def test_keyframes_span_head_poses_and_are_detected():
    model = FLAME(standin())
    clip = make_clip(model, 120, seed=0, yaw_deg=40.0)
    pts = landmarks478(clip, model.mp_index.numpy())
    ok = np.ones(120, bool)
    ok[[10, 11, 12]] = False
    pts[~ok] = np.nan
    conf = np.where(ok, 0.9, 0.0)
    picks = select_keyframes(pts, ok, conf, 8)
    assert len(picks) == 8 and ok[picks].all() and (np.diff(picks) > 0).all()
    yaw = clip.params["head_pose"][:, 0]
    # the picks reach both ends of the clip's yaw range (pose diversity makes the identity observable)
    lo, hi = yaw[ok].min(), yaw[ok].max()
    assert yaw[picks].min() < lo + 0.25 * (hi - lo) and yaw[picks].max() > hi - 0.25 * (hi - lo)
    assert yaw[picks].std() > yaw[ok].std()
    scores = score_frames(pts, ok, conf)
    assert np.isnan(scores.yaw[10]) and np.isneginf(scores.score[10])
    # the yaw measure follows the true yaw's sign and size
    corr = np.corrcoef(scores.yaw[ok], clip.params["head_pose"][ok, 0])[0, 1]
    assert abs(corr) > 0.9


def test_keyframes_of_a_still_video_spread_over_time():
    model = FLAME(standin())
    clip = make_clip(model, 60, seed=1, yaw_deg=0.0, pitch_deg=0.0, roll_deg=0.0, talking=False, blinks=False)
    pts = landmarks478(clip, model.mp_index.numpy())
    picks = select_keyframes(pts, np.ones(60, bool), np.full(60, 0.9), 6)
    assert len(picks) == 6
    assert picks.max() - picks.min() > 20 and np.diff(picks).min() >= 3  # not bunched together


def test_keyframes_prefer_closed_mouths():
    model = FLAME(standin())
    clip = make_clip(model, 100, seed=2)
    pts = landmarks478(clip, model.mp_index.numpy())
    ok = np.ones(100, bool)
    picks = select_keyframes(pts, ok, np.full(100, 0.9), 10)
    mouth = score_frames(pts, ok, np.full(100, 0.9)).mouth
    assert np.median(mouth[picks]) <= np.median(mouth)
