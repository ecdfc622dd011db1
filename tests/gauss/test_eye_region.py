"""The eye region's held-out error (stages.gauss.eye_region): the mask from MediaPipe landmarks
and the PSNR inside it."""

import sys
from pathlib import Path

import numpy as np

from stages.gauss.eye_region import eye_region_mask, masked_psnr

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "masks"))
from test_neck import canonical_points  # noqa: E402  (MediaPipe's canonical face in pixels)


def test_mask_covers_both_eyes_and_nothing_else():
    p = canonical_points(centre=(256.0, 256.0))
    m = eye_region_mask(p, 512)
    for eye in (159, 145, 33, 133, 386, 374, 263, 362):
        x, y = np.rint(p[eye, :2]).astype(int)
        assert m[y, x], eye
    for other in (1, 13, 14, 152, 10):  # nose tip, lips, chin, forehead
        x, y = np.rint(p[other, :2]).astype(int)
        assert not m[y, x], other
    n_labels = __import__("cv2").connectedComponents(m.astype(np.uint8))[0] - 1
    assert n_labels == 2 and 0.005 < m.mean() < 0.05
    # scaled to a smaller render: the same region at a quarter of the size
    small = eye_region_mask(p, 128, 0.25)
    assert abs(small.mean() - m.mean()) < 0.2 * m.mean()
    assert not eye_region_mask(np.full((478, 3), np.nan), 64).any()


def test_masked_psnr_sees_only_the_eyes():
    rng = np.random.default_rng(0)
    p = canonical_points(centre=(256.0, 256.0))
    m = eye_region_mask(p, 512)
    gt = rng.integers(0, 256, size=(512, 512, 3), dtype=np.uint8)
    img = gt.copy()
    img[~m] = 0  # wrong outside the eyes: no effect on the eye score
    assert masked_psnr(img, gt, m) >= 120
    img = gt.astype(np.int16)
    img[m] += 10  # off by 10 levels inside the eyes
    img = np.clip(img, 0, 255).astype(np.uint8)
    d = (img[m].astype(float) - gt[m]) / 255
    assert abs(masked_psnr(img, gt, m) - (-10 * np.log10((d ** 2).mean()))) < 1e-9
    assert masked_psnr(gt / 255.0, gt / 255.0 * 0.5, m) < 20
    assert masked_psnr(gt, gt, np.zeros((512, 512), bool)) is None
