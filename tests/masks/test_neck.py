"""The neckhead region of the default parsing (stages.masks.neck): synthetic frames with a known
neck and collar, temporal smoothing, and the stability and connectivity figures on wojtek.mp4."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest

from stages.masks.backends.mediapipe_default import landmark_parsing
from stages.masks.landmark_masks import CHIN, skin_colour
from stages.masks.neck import (G_CAP, G_DIR, G_FLOOR, JAW, frame_neck, neck_geometry, neckhead_from_region,
                               region_from_geometry, smooth_sequence)
from stages.masks.pipeline import MaskSettings, shard_necks

SKIN, NECK, SHIRT, BACK = (205, 160, 140), (190, 145, 128), (20, 20, 25), (90, 90, 110)


def canonical_points(centre=(256.0, 210.0), px_per_cm: float = 11.0, roll_deg: float = 0.0) -> np.ndarray:
    """MediaPipe's 478 landmarks of its canonical face, front view, in pixels: float32 [478,3]
    (irises at the eyes' upper lids)."""
    from stages.face.standin import _DATA

    with np.load(_DATA) as z:
        v = z["vertices"].astype(np.float64)
    c, s = np.cos(np.deg2rad(roll_deg)), np.sin(np.deg2rad(roll_deg))
    x, y = v[:, 0] * c - v[:, 1] * s, v[:, 0] * s + v[:, 1] * c
    p = np.stack([centre[0] + px_per_cm * x, centre[1] - px_per_cm * y, -px_per_cm * v[:, 2]], 1)
    return np.concatenate([p, np.repeat(p[[159]], 5, 0), np.repeat(p[[386]], 5, 0)]).astype(np.float32)


def synthetic_frame(points: np.ndarray, neck_half: float = 45.0, collar_y: float = 400.0,
                    sag: float = 25.0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A frame with a face (the landmarks' hull, skin), a neck (a vertical band ``neck_half`` px
    either side of the chin) down to a round collar (lowest at ``collar_y`` under the chin, rising
    ``sag`` px at the neck's sides) and a black shirt with shoulders from y = chin + 10.

    Returns ``(rgb uint8 [512,512,3], alpha float32 [512,512], neck bool, shirt bool)``."""
    rgb = np.zeros((512, 512, 3), np.uint8)
    rgb[:] = BACK
    hull = cv2.convexHull(np.rint(points[:, :2]).astype(np.int32))
    face = np.zeros((512, 512), np.uint8)
    cv2.fillConvexPoly(face, hull, 1)
    cx, chin_y = float(points[CHIN, 0]), float(points[CHIN, 1])
    ys, xs = np.mgrid[0:512, 0:512] + 0.5
    u = (xs - cx) / neck_half
    collar = collar_y - sag * np.clip(u, -1, 1) ** 2
    neck = (np.abs(u) <= 1) & (ys > chin_y - 40) & (ys < collar) & (face == 0)
    shoulders = chin_y + 10 + 0.25 * np.maximum(0, np.abs(xs - cx) - neck_half) ** 1.2 * 0.3
    shirt = ~neck & (face == 0) & (((np.abs(u) > 1) & (ys > shoulders)) | ((np.abs(u) <= 1) & (ys >= collar)))
    rgb[neck] = NECK
    rgb[face > 0] = SKIN
    rgb[shirt] = SHIRT
    alpha = ((face > 0) | neck | shirt).astype(np.float32)
    return rgb, alpha, neck, shirt


def test_jaw_walks_mediapipes_face_oval():
    from mediapipe.python.solutions.face_mesh_connections import FACEMESH_FACE_OVAL

    edges = {frozenset(e) for e in FACEMESH_FACE_OVAL}
    assert all(frozenset((a, b)) in edges for a, b in zip(JAW[:-1], JAW[1:]))
    assert JAW[0] == 234 and JAW[-1] == 454 and JAW[len(JAW) // 2] == CHIN
    p = canonical_points()
    assert (p[list(JAW[1:len(JAW) // 2]), 1] < p[CHIN, 1]).all()  # the chin is the jaw's lowest point


def test_neck_down_to_the_collar_and_no_shirt():
    p = canonical_points()
    rgb, alpha, neck, shirt = synthetic_frame(p)
    med, tol, luma = skin_colour(rgb, p)
    assert tol.min() >= 8 and luma > 100
    nh, mouth = landmark_parsing(alpha, p, 0.6, 2, 0.6, rgb)
    m = nh > 0
    assert set(np.unique(nh).tolist()) <= {0, 255} and mouth.any()
    assert m[p[1, 1].astype(int), p[1, 0].astype(int)]  # the nose
    assert (m & neck).sum() >= 0.95 * neck.sum(), (m & neck).sum() / neck.sum()  # the whole neck
    assert (m & shirt).sum() <= 0.01 * shirt.sum(), (m & shirt).sum()  # no shirt, no shoulders
    assert cv2.connectedComponents(nh)[0] == 2  # one region
    # the bottom edge follows the collar: per column of the neck, within 4 px of it
    cx = p[CHIN, 0]
    for x in range(int(cx) - 35, int(cx) + 36, 5):
        bottom = np.flatnonzero(m[:, x]).max()
        want = 400 - 25 * ((x + 0.5 - cx) / 45) ** 2
        assert abs(bottom - want) <= 4, (x, bottom, want)


def test_without_the_colour_test_a_fixed_u_within_the_cap():
    p = canonical_points()
    rgb, alpha, neck, shirt = synthetic_frame(p, collar_y=500)
    g, collar = frame_neck(p, 0.3, 0.6)  # no frame: the default U, 0.3 face heights deep
    region = region_from_geometry(g, collar, (512, 512), p)
    nh = neckhead_from_region(alpha > 0.5, region, 0)
    h = np.hypot(*(p[CHIN, :2] - p[10, :2]))
    rows = np.flatnonzero(nh.any(1))
    assert abs(rows.max() - (p[CHIN, 1] + 0.3 * h)) <= 2
    assert g[G_FLOOR] < g[G_CAP]


def test_region_rolls_with_the_head():
    up = canonical_points(centre=(256.0, 230.0))
    rolled = canonical_points(centre=(256.0, 230.0), roll_deg=25)
    r0 = region_from_geometry(*frame_neck(up, 0.4, 0.6), (512, 512), up)
    r1 = region_from_geometry(*frame_neck(rolled, 0.4, 0.6), (512, 512), rolled)
    # the chin moved sideways with the roll, and the neck under it stays
    c0, c1 = up[CHIN, :2], rolled[CHIN, :2]
    assert abs(c1[0] - c0[0]) > 10
    assert r1[int(c1[1]) + 20, int(c1[0])] and r0[int(c0[1]) + 20, int(c0[0])]
    # the neck runs between the head's axis and the image's vertical (the torso stays upright)
    d0, d1 = neck_geometry(up, 0.4, 0.6)[G_DIR], neck_geometry(rolled, 0.4, 0.6)[G_DIR]
    head = rolled[CHIN, :2] - rolled[10, :2]
    head = head / np.linalg.norm(head)
    assert np.allclose(d0, [0, 1], atol=1e-3)
    ang = lambda a, b: np.degrees(np.arccos(np.clip(a @ b, -1, 1)))  # noqa: E731
    assert 5 < ang(d1, np.array([0.0, 1.0])) < ang(head, np.array([0.0, 1.0])) - 5


def test_smoothing_steadies_noisy_landmarks():
    """Per-frame landmark noise of 1.5 px makes per-frame regions flicker; the smoothed geometry
    is steadier, and a steady sequence stays as it is."""
    rng = np.random.default_rng(0)
    p = canonical_points()
    rgb, alpha, *_ = synthetic_frame(p)
    n = 24
    pts = p[None] + rng.normal(scale=1.5, size=(n, *p.shape)).astype(np.float32)
    per = [frame_neck(q, 0.6, 0.6, rgb) for q in pts]
    G, C = np.stack([g for g, _ in per]), np.stack([c for _, c in per])
    Gs, Cs = smooth_sequence(G, C)
    assert np.allclose(smooth_sequence(np.repeat(G[:1], n, 0), np.repeat(C[:1], n, 0))[0], G[:1])

    def ious(geoms, collars):
        ms = [neckhead_from_region(alpha > 0.5, region_from_geometry(g, c, (512, 512), q), 2) > 0
              for g, c, q in zip(geoms, collars, pts)]
        return np.array([(a & b).sum() / (a | b).sum() for a, b in zip(ms[:-1], ms[1:])])

    raw, smooth = ious(G, C), ious(Gs, Cs)
    assert smooth.mean() > raw.mean() and smooth.min() >= 0.99, (raw.mean(), smooth.mean(), smooth.min())


def _jpeg(rgb):
    return cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()


def _masks_of(frames, points, alpha, settings, shard_size):
    """Neckhead masks as the pipeline makes them: geometry per shard of ``shard_size`` frames,
    smoothed within the shard, then per frame."""
    jpegs = {k: _jpeg(f) for k, f in enumerate(frames)}
    necks = {}
    with ThreadPoolExecutor(2) as pool:
        for start in range(0, len(frames), shard_size):
            shard = range(start, min(len(frames), start + shard_size))
            necks.update(shard_necks(jpegs, shard, lambda k: points[k], settings, pool))
    return np.stack([landmark_parsing(alpha[k], points[k], 0, settings.neckhead_dilate, neck=necks[k])[0] > 0
                     for k in range(len(frames))])


def _figures(wojtek_clip, n, shard_size):
    from stages.masks.backends.mediapipe_default import SelfieMatting

    frames, pts = wojtek_clip["frames"][:n], wojtek_clip["points"][:n]
    assert wojtek_clip["ok"][:n].all()
    matting = SelfieMatting()
    try:
        alpha = np.stack([matting.matte(f) for f in frames])
    finally:
        matting.close()
    masks = _masks_of(frames, pts, alpha, MaskSettings(), shard_size)
    iou = np.array([(a & b).sum() / (a | b).sum() for a, b in zip(masks[:-1], masks[1:])])
    components = np.array([cv2.connectedComponents(m.astype(np.uint8))[0] - 1 for m in masks])
    shirt_in = []
    for k in range(n):
        gray = cv2.cvtColor(frames[k], cv2.COLOR_RGB2GRAY)
        chin = pts[k, CHIN, :2]
        shirt = (gray < 50) & (np.arange(512)[:, None] > chin[1] + 5) & (alpha[k] > 0.9)
        shirt_in.append((masks[k] & shirt).sum() / max(1, shirt.sum()))
        # the neck under the chin stays (beside the chin's column when the head is turned)
        assert masks[k][int(chin[1]) + 8].sum() >= 20, k
    return iou, components, np.array(shirt_in)


def test_stable_connected_and_no_shirt_on_wojtek(wojtek_clip):
    """The first 60 frames of wojtek.mp4 in two shards (a seam between frames 30 and 31; the full
    clip: the slow test below)."""
    iou, components, shirt = _figures(wojtek_clip, 60, 30)
    print(f"wojtek 60 frames: IoU of consecutive neckhead masks mean {iou.mean():.4f} min {iou.min():.4f}; "
          f"components max {components.max()}; shirt inside max {shirt.max():.4f}")
    assert iou.mean() >= 0.97 and iou.min() >= 0.97
    assert (components == 1).all()
    assert shirt.max() < 0.01


@pytest.mark.slow
def test_stable_connected_and_no_shirt_on_all_of_wojtek(wojtek_all):
    iou, components, shirt = _figures(wojtek_all, len(wojtek_all["frames"]), 100)  # three shard seams
    print(f"wojtek {len(components)} frames: IoU of consecutive neckhead masks mean {iou.mean():.4f} "
          f"min {iou.min():.4f}; components max {components.max()}; shirt inside max {shirt.max():.4f}")
    assert iou.mean() >= 0.97 and iou.min() >= 0.97
    assert (components == 1).all()
    assert shirt.max() < 0.01
