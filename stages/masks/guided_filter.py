"""The guided filter (He, Sun, Tang 2010): an edge-aware smoothing that turns a coarse segmentation
into a soft matte that follows the image's edges (hair strands, shoulders).

With guide ``I`` (gray, 0..1), input ``p`` (0..1), window radius ``r`` and regulariser ``eps``::

    a = cov_w(I, p) / (var_w(I) + eps),   b = mean_w(p) - a * mean_w(I)
    q = mean_w(a) * I + mean_w(b)

where ``mean_w`` is the mean over the ``(2r+1)^2`` window clipped to the image (border windows
average only the pixels inside). :func:`guided_filter_reference` computes the window sums with an
explicit summed-area table; :func:`guided_filter` uses OpenCV's box filter (the fast path). The
tests check they agree. :func:`fast_guided_filter` (He and Sun 2015) computes ``a`` and ``b`` on a
``s``-times subsampled grid and upsamples them: ``s^2`` times less work, close to the full filter
for the smooth mattes it makes here (tested against it).
"""

from __future__ import annotations

import cv2
import numpy as np


def _box_mean_reference(x: np.ndarray, r: int) -> np.ndarray:
    """Mean over clipped ``(2r+1)^2`` windows via a summed-area table. x float64 [H,W]."""
    h, w = x.shape
    sat = np.zeros((h + 1, w + 1), np.float64)
    sat[1:, 1:] = x.cumsum(0).cumsum(1)
    y0 = np.clip(np.arange(h) - r, 0, h)
    y1 = np.clip(np.arange(h) + r + 1, 0, h)
    x0 = np.clip(np.arange(w) - r, 0, w)
    x1 = np.clip(np.arange(w) + r + 1, 0, w)
    s = sat[y1][:, x1] - sat[y0][:, x1] - sat[y1][:, x0] + sat[y0][:, x0]
    count = (y1 - y0)[:, None] * (x1 - x0)[None, :]
    return s / count


def guided_filter_reference(guide: np.ndarray, src: np.ndarray, r: int, eps: float) -> np.ndarray:
    """Reference guided filter in float64 numpy.

    Args:
        guide: float [H,W] gray guide image, 0..1.
        src: float [H,W] input to filter (e.g. a segmentation probability), 0..1.
        r: window radius in pixels.
        eps: regulariser (larger: smoother, less edge-following).

    Returns:
        float64 [H,W] filtered ``src`` (not clipped).
    """
    i = guide.astype(np.float64)
    p = src.astype(np.float64)
    mi, mp = _box_mean_reference(i, r), _box_mean_reference(p, r)
    cov = _box_mean_reference(i * p, r) - mi * mp
    var = _box_mean_reference(i * i, r) - mi * mi
    a = cov / (var + eps)
    b = mp - a * mi
    return _box_mean_reference(a, r) * i + _box_mean_reference(b, r)


def guided_filter(guide: np.ndarray, src: np.ndarray, r: int, eps: float) -> np.ndarray:
    """Fast guided filter (OpenCV box filters, float32); same contract as
    :func:`guided_filter_reference`. Returns float32 [H,W]."""
    i = guide.astype(np.float32, copy=False)
    p = src.astype(np.float32, copy=False)
    k = (2 * r + 1, 2 * r + 1)
    count = cv2.boxFilter(np.ones_like(i), -1, k, normalize=False, borderType=cv2.BORDER_CONSTANT)

    def mean(x: np.ndarray) -> np.ndarray:
        return cv2.boxFilter(x, -1, k, normalize=False, borderType=cv2.BORDER_CONSTANT) / count

    mi, mp = mean(i), mean(p)
    cov = mean(i * p) - mi * mp
    var = mean(i * i) - mi * mi
    a = cov / (var + np.float32(eps))
    b = mp - a * mi
    return mean(a) * i + mean(b)


def fast_guided_filter(guide: np.ndarray, src: np.ndarray, r: int, eps: float, s: int = 2) -> np.ndarray:
    """Subsampled guided filter: ``a``, ``b`` at ``1/s`` resolution (radius ``r/s``), upsampled
    bilinearly, then ``q = A * I + B`` at full resolution. Same arguments as :func:`guided_filter`
    plus the subsampling factor ``s`` (1 gives :func:`guided_filter`). Returns float32 [H,W]."""
    if s <= 1:
        return guided_filter(guide, src, r, eps)
    i = guide.astype(np.float32, copy=False)
    h, w = i.shape
    small = (max(1, w // s), max(1, h // s))
    i_s = cv2.resize(i, small, interpolation=cv2.INTER_AREA)
    p_s = cv2.resize(src.astype(np.float32, copy=False), small, interpolation=cv2.INTER_AREA)
    rs = max(1, round(r / s))
    k = (2 * rs + 1, 2 * rs + 1)
    count = cv2.boxFilter(np.ones_like(i_s), -1, k, normalize=False, borderType=cv2.BORDER_CONSTANT)

    def mean(x: np.ndarray) -> np.ndarray:
        return cv2.boxFilter(x, -1, k, normalize=False, borderType=cv2.BORDER_CONSTANT) / count

    mi, mp = mean(i_s), mean(p_s)
    a = (mean(i_s * p_s) - mi * mp) / (mean(i_s * i_s) - mi * mi + np.float32(eps))
    b = mp - a * mi
    big_a = cv2.resize(mean(a), (w, h), interpolation=cv2.INTER_LINEAR)
    big_b = cv2.resize(mean(b), (w, h), interpolation=cv2.INTER_LINEAR)
    return big_a * i + big_b


def refine_matte(rgb: np.ndarray, prob: np.ndarray, r: int = 8, eps: float = 1e-3,
                 snap: float = 0.02, subsample: int = 2) -> np.ndarray:
    """Soft matte from a coarse foreground probability, edge-aware with respect to the image.

    Args:
        rgb: uint8 [H,W,3] frame.
        prob: float [H,W] foreground probability, 0..1 (any resolution upsampled to H,W already).
        r: guided-filter radius (pixels); 0 returns ``prob`` clipped.
        eps: guided-filter regulariser.
        snap: values within ``snap`` of 0 or 1 are set to exactly 0 or 1 (no haze in the
            background, no holes in the face).
        subsample: :func:`fast_guided_filter`'s factor (1: the full-resolution filter).

    Returns:
        float32 [H,W] matte in 0..1.
    """
    p = prob.astype(np.float32, copy=False)
    if r > 0:
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32) * np.float32(1 / 255)
        p = fast_guided_filter(gray, p, r, eps, subsample)
    a = np.clip(p, 0.0, 1.0)
    if snap > 0:
        a[a < snap] = 0.0
        a[a > 1.0 - snap] = 1.0
    return a
