"""Overlay drawing and H.264 encoding."""

import numpy as np

from stages.tracking.overlay import draw_overlay, front_faces, write_video


def test_front_faces_and_drawing(tmp_path):
    pix = np.array([[100.0, 100], [200, 100], [150, 200], [150, 50]])
    faces = np.array([[0, 2, 1], [0, 1, 2]])  # same triangle, both windings
    front = front_faces(pix, faces)
    assert front.tolist() == [True, False]
    img = np.zeros((256, 256, 3), np.uint8)
    out = draw_overlay(img, pix, faces, np.array([[10.0, 10], [np.nan, np.nan]]), pix[:1], "00001")
    assert out.shape == img.shape and out.any() and not img.any()
    assert out[10, 10, 1] > 200 and out[10, 10, 0] < 50  # detected landmark drawn green


def test_write_video_h264_round_trip(tmp_path):
    import av

    frames = [np.full((64, 64, 3), 20 * i, np.uint8) for i in range(5)]
    path = tmp_path / "o.mp4"
    assert write_video(path, frames, fps=25) == 5
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        assert s.codec_context.name == "h264"
        decoded = [f.to_ndarray(format="rgb24") for f in c.decode(s)]
    assert len(decoded) == 5 and abs(int(decoded[4].mean()) - 80) < 6


def test_stamped_points_match_cv2_circles():
    """The vectorised dots are the pixels one cv2.circle(radius 1, filled) per point would set."""
    import cv2

    from stages.tracking.overlay import stamp_points

    rng = np.random.default_rng(0)
    pts = np.concatenate([rng.uniform(-3, 67, (200, 2)), [[np.nan, 5.0], [10.5, 11.5], [1e9, 3.0]]])
    ref = np.zeros((64, 64, 3), np.uint8)
    for x, y in pts[np.isfinite(pts).all(-1) & (np.abs(pts) < 1e6).all(-1)]:
        cv2.circle(ref, (int(round(x)), int(round(y))), 1, (0, 255, 0), -1, cv2.LINE_8)
    out = np.zeros_like(ref)
    stamp_points(out, pts, (0, 255, 0))
    assert ref.any() and np.array_equal(out, ref)
