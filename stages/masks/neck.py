"""The neckhead region of the default parsing: head and hair above the jaw, and below it only the
neck, down to the collar, with a smooth boundary that is stable over time.

Geometry, from MediaPipe FaceMesh landmarks (x, y in crop pixels, z in the same units):

- The jaw curve ``JAW`` is the lower half of MediaPipe's face oval (``FACEMESH_FACE_OVAL``), from
  beside the subject's right ear (234) down the jaw, through the chin (152), up to beside the left
  ear (454). Everything above the ear line (234 to 454, extended across the image) and inside the
  jaw curve may be head. Hair hanging below the ear line beside the jaw is cut (short-haired
  talking heads keep everything; the shoulders, which rise beside the jaw when the head pitches
  down, are what this cut removes).
- The neck is a band hanging from the jaw: centred between the jaw's corners and the chin,
  running down between the head's axis and the image's vertical (the torso stays upright while the
  head rolls), ``half_width`` face widths either side (face width and height measured in 3D, so
  they do not shrink when the head turns), ending ``depth`` pixels below the chin in a U-shaped
  curve (a round collar's shape) that rises ``SAG`` half-widths at the band's sides.
- ``depth`` is where the skin stops below the chin (the collar): a strip along the neck's centre
  line is resampled, each row's fraction of face-coloured pixels measured (chroma near the face's
  median chroma, luma not far below it), and the collar is the first row from which the fraction
  stays low for a run of rows. It is capped at ``margin`` face heights (image plane).

Per frame this gives a small vector (:func:`neck_geometry`, :func:`collar_depth`); a shard's
vectors are smoothed over time (:func:`smooth_sequence`: the geometry, never the pixels), and the
region is rasterised from the smoothed vector (:func:`region_from_geometry`). The neckhead mask is
that region intersected with the (dilated) matte, keeping the largest connected piece
(:func:`neckhead_from_region`).
"""

from __future__ import annotations

import cv2
import numpy as np

from stages.masks.landmark_masks import CHIN, FACE_LEFT, FACE_RIGHT, FACE_TOP, skin_colour

JAW = (234, 93, 132, 58, 172, 136, 150, 149, 176, 148, 152, 377, 400, 378, 379, 365, 397, 288, 361, 323, 454)
"""MediaPipe indices of the face oval's lower half, subject's right ear -> chin -> left ear."""
CUT = 3
"""The lateral cut runs through ``JAW[CUT]`` and ``JAW[-1 - CUT]`` (58 and 288, level with the
mouth, below the ear lobes)."""
SAG = 0.5
"""How far the neck's U-shaped bottom rises at the band's sides, in neck half-widths."""

# layout of the geometry vector (all pixels of the frame)
_J = 2 * len(JAW)
G_JAW = slice(0, _J)          # jaw curve, [len(JAW), 2] flattened
G_TOP = slice(_J, _J + 2)     # neck centre line's top point (between the jaw corners and the chin)
G_DIR = slice(_J + 2, _J + 4)  # unit direction down the neck
G_HW = _J + 4                 # neck half-width
G_CHIN_T = _J + 5             # the chin's distance from the top point along the neck direction
G_CAP = _J + 6                # greatest depth below the chin (``margin`` face heights)
G_FLOOR = _J + 7              # least depth below the chin (``FLOOR`` face heights)
G_SIZE = _J + 8
FLOOR = 0.05
"""The neck reaches at least this far below the chin, in face heights (image plane): a shadow
under the chin is no collar."""


def face_size(points: np.ndarray) -> tuple[float, float]:
    """``(height, width)`` of the face in pixels, measured in 3D (x, y, z) so that turning or
    nodding the head does not shrink them: forehead (10) to chin (152), ear to ear (234, 454)."""
    p = points.astype(np.float64)
    d = 3 if p.shape[1] >= 3 and np.isfinite(p[:, 2]).all() else 2
    return (float(np.linalg.norm(p[CHIN, :d] - p[FACE_TOP, :d])),
            float(np.linalg.norm(p[FACE_LEFT, :d] - p[FACE_RIGHT, :d])))


def neck_geometry(points: np.ndarray, margin: float, half_width: float) -> np.ndarray:
    """The neck's geometry of one frame (see the module docstring).

    Args:
        points: float [478,2+] landmarks in pixels (x, y[, z]).
        margin: greatest neck length below the chin, in face heights (image plane).
        half_width: neck half-width, in face widths (3D).

    Returns:
        float64 [G_SIZE] vector; the layout is given by the ``G_*`` constants.
    """
    p = points[:, :2].astype(np.float64)
    h3, w3 = face_size(points)
    axis = p[CHIN] - p[FACE_TOP]
    h2 = float(np.hypot(*axis))
    head_down = axis / h2 if h2 > 1e-6 else np.array([0.0, 1.0])
    d = head_down + np.array([0.0, 1.0])
    d = d / max(np.hypot(*d), 1e-9)
    top = 0.25 * (p[FACE_RIGHT] + p[FACE_LEFT]) + 0.5 * p[CHIN]
    g = np.empty(G_SIZE)
    g[G_JAW] = p[list(JAW)].reshape(-1)
    g[G_TOP] = top
    g[G_DIR] = d
    g[G_HW] = half_width * w3
    g[G_CHIN_T] = float((p[CHIN] - top) @ d)
    g[G_CAP] = margin * h2
    g[G_FLOOR] = min(FLOOR, margin) * h2
    return g


INSET = 2.0
"""Frame pixels the neck stops above the first non-skin row (the collar's edge is blurred)."""
COLUMNS = 64
"""Columns across the neck band at which the collar is found."""


def column_positions(columns: int = COLUMNS) -> np.ndarray:
    """float64 [C]: the columns' positions across the neck band, -1..1 neck half-widths."""
    return np.linspace(-1.0, 1.0, columns)


def default_collar(geometry: np.ndarray, columns: int = COLUMNS) -> np.ndarray:
    """The collar used without a frame: a U, ``cap - SAG * hw * s^2`` below the chin."""
    s = column_positions(columns)
    return geometry[G_CAP] - SAG * geometry[G_HW] * s * s


def collar_profile(rgb: np.ndarray, points: np.ndarray, geometry: np.ndarray, scale: float = 1.0,
                   run: float = 0.05, columns: int = COLUMNS) -> np.ndarray:
    """Where the skin below the chin stops (the collar), per column across the neck band.

    The band is resampled into a strip (rows down the neck from the chin's level, ``columns``
    columns across it); a pixel is skin when its chroma is near the face's median chroma and its
    luma not far below the face's (:func:`stages.masks.landmark_masks.skin_colour`). A column's
    collar is the first row (below the floor) from which ``run`` face heights are not skin, the cap
    when none. A column that is not skin just below the floor (background, a shoulder, the shirt
    beside the neck) is no neck: its depth is the floor.

    Args:
        rgb: uint8 [h,w,3] frame, possibly reduced: pixel ``q`` of the frame is ``q * scale`` here.
        points: float [478,2+] landmarks in frame pixels.
        geometry: :func:`neck_geometry` of the frame.
        scale: ``rgb``'s size over the frame's.
        run: face heights of non-skin rows that make a collar.
        columns: columns sampled across the band (:func:`column_positions`).

    Returns:
        float64 [C]: depth below the chin per column, frame pixels, within [floor, cap] or
        ``-chin_t`` where the column holds no neck.
    """
    cap, floor = float(geometry[G_CAP]), float(geometry[G_FLOOR])
    h2 = float(np.hypot(*(points[CHIN, :2] - points[FACE_TOP, :2]).astype(np.float64)))
    if cap <= floor or h2 <= 0:
        return default_collar(geometry, columns)
    top, d, hw, chin_t = geometry[G_TOP], geometry[G_DIR], float(geometry[G_HW]), float(geometry[G_CHIN_T])
    a = np.array([-d[1], d[0]])
    rows = max(8, int(np.ceil(cap * scale)))
    t = np.linspace(0.0, cap, rows)
    s = column_positions(columns)
    q = top[None, None] + (chin_t + t)[:, None, None] * d[None, None] + (s * hw)[None, :, None] * a[None, None]
    q = (q * scale).astype(np.float32)
    strip = cv2.remap(rgb, q[..., 0] - 0.5, q[..., 1] - 0.5, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    med, tol, luma = skin_colour(rgb, points[:, :2] * scale)
    ycc = cv2.cvtColor(strip, cv2.COLOR_RGB2YCrCb).astype(np.float32)
    skin = (np.abs(ycc[..., 1:] - med) <= 1.5 * tol).all(-1) & (ycc[..., 0] >= 0.35 * luma)
    px = cap / max(rows - 1, 1)  # frame pixels per row
    need = max(2, int(round(run * h2 / px)))
    start = min(rows - 1, int(np.ceil(floor / px)))
    depth = np.full(columns, cap)
    csum = np.concatenate([np.zeros((1, columns)), np.cumsum(~skin, 0)], 0)  # non-skin rows above r
    for r in range(rows - 1, start - 1, -1):  # last assignment wins: the first run from the top
        end = min(rows, r + need)
        depth[csum[end] - csum[r] == end - r] = t[r]
    neck = skin[start:start + need].mean(0) > 0.5
    depth = np.clip(depth - np.where(depth < cap, INSET, 0.0), floor, cap)
    if neck.any():  # smooth across the neck's columns only (normalised convolution)
        k = np.array([0.25, 0.5, 0.25])
        w = np.convolve(neck.astype(np.float64), k, "same")
        sm = np.convolve(np.where(neck, depth, 0.0), k, "same") / np.maximum(w, 1e-9)
        depth = np.where(neck, sm, depth)
    depth[~neck] = -chin_t  # up to the band's top: no neck in this column
    return depth


def smooth_sequence(geometry: np.ndarray, collar: np.ndarray, sigma: float = 1.5,
                    collar_window: int = 9, collar_sigma: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """Temporal smoothing of a shard's neck geometry (not of pixels).

    Args:
        geometry: float [N,G_SIZE] per-frame :func:`neck_geometry` in time order.
        collar: float [N,C] per-frame :func:`collar_profile`.
        sigma: Gaussian sigma of the geometry, frames.
        collar_window: running-median window of the collar (drops single-frame misreads).
        collar_sigma: Gaussian sigma of the collar after the median, frames.

    Returns:
        ``(geometry [N,G_SIZE], collar [N,C])`` smoothed; the ends are padded with the edge frame,
        so a shard's first and last frames use only its own frames. The direction is renormalised.
    """
    g = _gauss(np.asarray(geometry, np.float64), sigma)
    g[:, G_DIR] /= np.maximum(np.linalg.norm(g[:, G_DIR], axis=1, keepdims=True), 1e-9)
    c = np.asarray(collar, np.float64)
    if len(c) > 1 and collar_window > 1:
        r = collar_window // 2
        padded = np.pad(c, ((r, r), (0, 0)), mode="edge")
        c = np.median(np.lib.stride_tricks.sliding_window_view(padded, 2 * r + 1, axis=0), axis=-1)
    return g, _gauss(c, collar_sigma)


def _gauss(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian filter of x [N,D] along axis 0, edge-padded."""
    if sigma <= 0 or len(x) < 2:
        return x.copy()
    r = int(np.ceil(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    padded = np.pad(x, ((r, r), (0, 0)), mode="edge")
    return np.stack([np.convolve(padded[:, j], k, "valid") for j in range(x.shape[1])], 1)


def neck_outline(geometry: np.ndarray, collar: np.ndarray) -> np.ndarray:
    """The neck band's outline: float64 [K,2] polygon (x, y) in pixels, from its top-right corner
    down the right side, along the collar (between the band's top and the cap), and up the left
    side."""
    top, d, hw, chin_t = geometry[G_TOP], geometry[G_DIR], float(geometry[G_HW]), float(geometry[G_CHIN_T])
    a = np.array([-d[1], d[0]])
    s = column_positions(len(collar))
    t = np.clip(chin_t + np.asarray(collar, np.float64), 0.0, chin_t + geometry[G_CAP])
    side_top = 0.0
    pts = [top + side_top * d - hw * a]
    pts += [top + ti * d + si * hw * a for si, ti in zip(s, t)]
    pts += [top + side_top * d + hw * a]
    return np.array(pts)


def region_from_geometry(geometry: np.ndarray, collar: np.ndarray, size: tuple[int, int],
                         points: np.ndarray | None = None) -> np.ndarray:
    """bool [H,W]: where head and neck may be (see the module docstring) for one frame.

    Args:
        geometry: float [G_SIZE] (smoothed) :func:`neck_geometry`.
        collar: float [C] (smoothed) :func:`collar_profile`.
        size: ``(H, W)``.
        points: float [478,2+] landmarks; their convex hull (the face) is added when given.
    """
    hh, ww = size
    jaw = geometry[G_JAW].reshape(-1, 2)[CUT:len(JAW) - CUT]
    right, left = jaw[0], jaw[-1]
    ear = left - right
    n = np.array([-ear[1], ear[0]])
    n = n / max(np.hypot(*n), 1e-9)
    if n @ (jaw[len(jaw) // 2] - right) < 0:
        n = -n  # n points from the ear line towards the chin
    far = 4.0 * (hh + ww)
    u = ear / max(np.hypot(*ear), 1e-9)
    above = np.array([right - far * u, right - far * u - far * n, left + far * u - far * n, left + far * u])
    out = np.zeros(size, np.uint8)
    polys = [above, jaw, neck_outline(geometry, collar)]
    if points is not None:
        polys.append(cv2.convexHull(points[:, :2].astype(np.float32))[:, 0].astype(np.float64))
    for poly in polys:
        # one call per polygon: one call with several would fill their overlaps even-odd
        cv2.fillPoly(out, [np.rint(poly * 16 - 8).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
    return out > 0


def neckhead_from_region(person: np.ndarray, region: np.ndarray, dilate: int = 0) -> np.ndarray:
    """The person mask (optionally dilated) inside ``region``, only its largest connected piece.

    Args:
        person: bool [H,W] foreground (e.g. ``alpha > 0.5``).
        region: bool [H,W] from :func:`region_from_geometry`.
        dilate: grow the person mask by this many pixels first (elliptical kernel), so the hard mask
            does not clip the soft matte's edge.

    Returns:
        uint8 [H,W], values 0 or 255.
    """
    m = person.astype(np.uint8)
    if dilate > 0:
        k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * dilate + 1, 2 * dilate + 1))
        m = cv2.dilate(m, k)
    m &= region.astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
    if n <= 2:
        return m * np.uint8(255)
    best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return np.where(labels == best, np.uint8(255), np.uint8(0))


def frame_neck(points: np.ndarray, margin: float, half_width: float, rgb: np.ndarray | None = None,
               scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """``(geometry [G_SIZE], collar [C])`` of one frame; without ``rgb`` the default U collar."""
    g = neck_geometry(points, margin, half_width)
    return g, (collar_profile(rgb, points, g, scale) if rgb is not None else default_collar(g))
