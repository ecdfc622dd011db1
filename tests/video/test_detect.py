"""MediaPipe face detection + FaceMesh landmark box on the real clip (skips where it is absent)."""

from __future__ import annotations

import numpy as np

from stages.video.detect import FaceDetector, square_cut


def frames_of(path, numbers):
    import av

    out = {}
    with av.open(str(path)) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i in numbers:
                out[i] = f.to_ndarray(format="rgb24")
            if i >= max(numbers):
                break
    return [out[i] for i in numbers]


def test_face_found_with_a_landmark_box(wojtek):
    (img,) = frames_of(wojtek, [0])
    with FaceDetector() as det:
        o = det.observe(img, key=7)
    assert o.key == 7 and o.found and o.mesh and o.faces == 1 and o.score > 0.7
    x0, y0, x1, y1 = o.box
    # the face is in the middle of the 512x512 clip, about 190 px tall
    assert 150 < (x0 + x1) / 2 < 350 and 150 < (y0 + y1) / 2 < 350
    assert 150 < o.size < 240
    # the landmark box and the detector box overlap a lot
    d = o.det_box
    ix = max(0, min(x1, d[2]) - max(x0, d[0])) * max(0, min(y1, d[3]) - max(y0, d[1]))
    assert ix > 0.5 * (d[2] - d[0]) * (d[3] - d[1])


def test_no_face_in_a_plain_picture():
    with FaceDetector() as det:
        o = det.observe(np.full((240, 320, 3), 128, dtype=np.uint8))
    assert not o.found and o.faces == 0 and o.box is None and o.size == 0.0


def test_two_faces_the_largest_is_dominant(wojtek):
    import cv2

    (img,) = frames_of(wojtek, [0])
    canvas = np.full((720, 1280, 3), 230, dtype=np.uint8)
    canvas[100:612, 700:1212] = img                                    # big face on the right
    canvas[150:534, 100:484] = cv2.resize(img, (384, 384), interpolation=cv2.INTER_AREA)  # smaller one left
    with FaceDetector() as det:
        o = det.observe(canvas)
    assert o.faces == 2 and len(o.others) == 1
    assert 700 < (o.box[0] + o.box[2]) / 2 < 1212  # the dominant (largest) face


def test_small_face_in_1080p_is_found_by_tiles(wojtek):
    import cv2

    (img,) = frames_of(wojtek, [0])
    canvas = np.full((1080, 1920, 3), 200, dtype=np.uint8)
    canvas[500:756, 1300:1556] = cv2.resize(img, (256, 256), interpolation=cv2.INTER_AREA)  # face ~95 px
    with FaceDetector() as det:
        o = det.observe(canvas)
    assert o.found and o.mesh
    cx, cy = (o.box[0] + o.box[2]) / 2, (o.box[1] + o.box[3]) / 2
    assert 1300 < cx < 1556 and 500 < cy < 756 and 70 < o.size < 130


def test_square_cut_maps_back_to_the_image():
    img = np.zeros((100, 100, 3), dtype=np.uint8)
    img[40, 60] = 255
    cut, x0, y0, scale = square_cut(img, 60, 40, 20, 40)
    assert cut.shape == (40, 40, 3) and scale == 2.0
    yy, xx = np.unravel_index(np.argmax(cut[:, :, 0]), cut.shape[:2])
    assert abs(xx / scale + x0 - 60) <= 1 and abs(yy / scale + y0 - 40) <= 1
