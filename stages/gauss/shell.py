"""Gaussians beyond the face model's mesh: a scalp shell and a neck tube (issue 19).

The built-in stand-in face model is MediaPipe's face mesh: forehead to chin, ear to ear, nothing
else. The ground truth holds hair, ears and the neck down to the collar, which Gaussians bound to
that mesh can only reach by stretching from its edge (measured on wojtek.mp4: most of the held-out
error lay there, ``bench/psnr_probe.py``). This module places extra Gaussians where a head has
surface but the mesh has none, from the neutral mesh's own proportions (no data, deterministic):

- the scalp: an ellipsoid around the cranium (width ``0.55 W``, depth ``0.62 W`` and height
  ``0.8 H`` semi-axes, with ``W``, ``H`` the mesh's width and height), centred at ear level, its
  front at the top of the forehead; points below ``0.25`` of its height under the ear level,
  hidden behind the face (inside the mesh's outline seen from the front, behind its surface) or
  on the back of the head (:data:`BACK`) are dropped;
- the neck: an elliptic tube (``0.36 W`` across, ``0.33 W`` deep, its front a quarter of the
  scalp's depth behind the forehead) under the head from ear level to ``neck_length`` face heights
  below the chin, minus what lies behind the face, inside the scalp or at the back.

Fitted to the training frames (``silhouettes``, :func:`fit_radially`): each point then slides along
its ray from the shell's centre (the scalp ellipsoid's centre; the neck tube's axis at the point's
height) to the outermost radius, 0.6 to 1.6 times its own and not in front of the forehead's top,
whose projection lies inside the head masks of 90% of 24 training frames (a visual hull, sampled
along rays), less 1.5 point spacings; points whose ray never meets the hull (the neck below the
collar cut) are dropped; the points start 4x denser and are thinned to the spacing on a grid. So the
shell follows the actor's hair volume and neck instead of a fixed ellipsoid, which lay inside
wojtek's hair at the crown (a see-through crack in renders looking down onto it) and stuck out
past the collar.

Each shell point is bound to the nearest triangle that does not follow the jaw (the upper face,
its centroid) plus a fixed offset in model space, so shell Gaussians move rigidly with the head
(head pose is the camera's, as in FlashAvatar, where FLAME's neck also stays unposed); the
deformation MLP adds per-frame offsets like for any other Gaussian.

Shapes: ``V`` vertices, ``F`` faces, ``M`` shell points; metres, model space (+x the subject's
left, +y up, +z out of the face).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch import Tensor


@dataclass(frozen=True)
class ShellConfig:
    """Attributes:
        density: shell points per area relative to the face Gaussians' density (0: no shell).
        scalp, neck: which parts to place.
        neck_length: how far the neck tube reaches below the chin, in face heights.
        scalp_scale: multiplier of the scalp ellipsoid's semi-axes (its front stays at the top of
            the forehead): more than 1 for voluminous hair.
        fit_inset: when fitted to silhouettes, how far inside the visual hull's boundary the points
            sit, in point spacings.
    """

    density: float = 0.25
    scalp: bool = True
    neck: bool = True
    neck_length: float = 0.7
    scalp_scale: float = 1.0
    fit_inset: float = 1.5


BACK = -0.5
"""Shell points whose outward direction points further back than this (z of the unit normal
before scaling: 120 degrees from the front) are not placed: a talking-head video never sees the
back of the head or neck (turning 45 degrees shows the surface up to 135 degrees from the front
only at grazing angles)."""


MIN_FITTED = 0.25
"""A fit that keeps fewer points than this fraction of the plain shell's means the masks hold next
to nothing beyond the face (a bald or synthetic head, or masks that stop at the face's outline):
then there is no shell, since the training target holds nothing there for it to draw. On wojtek.mp4
the fit keeps about as many points as the plain shell (1,371 against 1,354); on a hairless synthetic
250-frame clip it keeps almost none, and no shell scores as well as the plain one or better with 35%
fewer Gaussians (demo scale, seeds 0 / 1: 31.50 / 32.39 dB against 31.46 / 31.40; docs/quality.md)."""


def _fibonacci_sphere(n: int) -> Tensor:
    """[n, 3] float64 nearly even unit vectors (golden-angle spiral)."""
    i = torch.arange(n, dtype=torch.float64) + 0.5
    y = 1 - 2 * i / n
    r = (1 - y * y).clamp_min(0).sqrt()
    phi = math.pi * (3 - math.sqrt(5)) * i
    return torch.stack([r * torch.cos(phi), y, r * torch.sin(phi)], -1)


def _ellipsoid_area(a: float, b: float, c: float) -> float:
    """Surface area of an ellipsoid (Knud Thomsen's approximation, within about 1%)."""
    p = 1.6075
    return 4 * math.pi * (((a * b) ** p + (a * c) ** p + (b * c) ** p) / 3) ** (1 / p)


def _front_height(vertices: Tensor, faces: Tensor, cells: int = 48, subdiv: int = 8
                  ) -> tuple[Tensor, Tensor, Tensor]:
    """The mesh's front surface as a height map over (x, y): ``(z_front [cells, cells], lo [2],
    step [2])``; cells the mesh does not cover hold ``-inf``. Sampled at a barycentric grid of
    ``subdiv`` steps per edge in every triangle, so that no covered cell is missed."""
    v = vertices.double()
    tri = v[faces.long()]  # [F, 3, 3]
    k = torch.arange(subdiv + 1, dtype=torch.float64)
    i, j = torch.meshgrid(k, k, indexing="ij")
    ok = i + j <= subdiv
    b = torch.stack([i[ok], j[ok], subdiv - i[ok] - j[ok]], -1) / subdiv  # [S, 3]
    pts = torch.einsum("sk,fkd->fsd", b, tri).reshape(-1, 3)
    lo = v[:, :2].min(0).values
    step = (v[:, :2].max(0).values - lo).clamp_min(1e-9) / cells
    ij = ((pts[:, :2] - lo) / step).floor().long().clamp(0, cells - 1)
    z = torch.full((cells * cells,), -math.inf, dtype=torch.float64)
    z = z.scatter_reduce(0, ij[:, 1] * cells + ij[:, 0], pts[:, 2], reduce="amax")
    return z.view(cells, cells), lo, step


def _behind_face(p: Tensor, zmap: Tensor, lo: Tensor, step: Tensor, margin: float) -> Tensor:
    """bool [M]: points inside the face's outline seen from the front and not in front of it
    (within ``margin`` of its surface or behind it)."""
    cells = zmap.shape[0]
    ij = ((p[:, :2] - lo) / step).floor().long()
    inside = ((ij >= 0) & (ij < cells)).all(-1)
    ij = ij.clamp(0, cells - 1)
    z = zmap[ij[:, 1], ij[:, 0]]
    return inside & torch.isfinite(z) & (p[:, 2] < z + margin)


def shell_points(vertices: Tensor, faces: Tensor, spacing: float, cfg: ShellConfig = ShellConfig(),
                 silhouettes: "Silhouettes | None" = None) -> Tensor:
    """Scalp and neck points around a neutral face mesh (see the module docstring).

    Args:
        vertices: [V, 3] neutral mesh (metres).
        faces: [F, 3] int.
        spacing: mean distance between neighbouring face Gaussians (metres); shell points are
            ``spacing / sqrt(density)`` apart.
        cfg: :class:`ShellConfig`.
        silhouettes: training frames' head masks and cameras: each point then slides along its ray
            from the shell's axis to the visual hull's boundary (:func:`fit_radially`), points with
            no radius inside the hull are dropped; a fit that keeps fewer than :data:`MIN_FITTED` of
            the points gives no shell. None: the plain ellipsoid and tube.

    Returns:
        [M, 3] float32 points (M = 0 when ``cfg.density <= 0``).
    """
    if cfg.density <= 0 or not (cfg.scalp or cfg.neck):
        return torch.zeros(0, 3)
    v = vertices.double()
    plain = _shell_with_centres(vertices, faces, spacing, cfg)[0].float()
    if silhouettes is None:
        return plain
    # fitting spreads the points (rays fan out): start 4x denser and thin to the spacing afterwards
    gap = spacing / math.sqrt(cfg.density)
    p, centre = _shell_with_centres(vertices, faces, spacing, replace(cfg, density=4 * cfg.density))
    if len(p):
        front = float(v[int(v[:, 1].argmax()), 2])  # the forehead's top: the plain scalp's front
        p = fit_radially(p, centre, silhouettes, inset=cfg.fit_inset * gap, max_z=front)
        zmap, zlo, zstep = _front_height(v, faces)
        p = thin_to_grid(p[~_behind_face(p, zmap, zlo, zstep, gap)], gap)
    # masks with next to nothing beyond the face (a bald or synthetic head, or masks that cut at the
    # face's outline) carve the shell away: nothing there to draw, no shell
    return p.float() if len(p) >= MIN_FITTED * len(plain) else torch.zeros(0, 3)


def thin_to_grid(points: Tensor, cell: float) -> Tensor:
    """[M, 3] -> [M', 3]: the first point (in order) of each occupied cube of side ``cell``:
    a surface sampled densely comes out about ``cell`` apart, wherever it was dense."""
    if len(points) == 0:
        return points
    key = torch.floor(points.double() / cell).long()
    _, inv = torch.unique(key, dim=0, return_inverse=True)
    first = torch.full((int(inv.max()) + 1,), len(points), dtype=torch.long)
    first = first.scatter_reduce(0, inv, torch.arange(len(points)), reduce="amin")
    return points[first.sort().values]


def _shell_with_centres(vertices: Tensor, faces: Tensor, spacing: float, cfg: ShellConfig) -> tuple[Tensor, Tensor]:
    """The plain shell's points [M, 3] float64 and each one's centre [M, 3] (the scalp ellipsoid's
    centre, or the neck tube's axis at the point's height)."""
    v = vertices.double()
    lo, hi = v.min(0).values, v.max(0).values
    W, H = float(hi[0] - lo[0]), float(hi[1] - lo[1])
    cx = float((lo[0] + hi[0]) / 2)
    ear_y = float(v[[int(v[:, 0].argmin()), int(v[:, 0].argmax())], 1].mean())
    top = v[int(v[:, 1].argmax())]
    chin_y = float(lo[1])
    gap = spacing / math.sqrt(cfg.density)
    zmap, zlo, zstep = _front_height(v, faces)
    parts, centres = [], []
    a, b, c = (f * cfg.scalp_scale for f in (0.55 * W, 0.8 * H, 0.62 * W))
    cz = float(top[2]) - c
    if cfg.scalp:
        n = max(1, round(_ellipsoid_area(a, b, c) / gap ** 2))
        u = _fibonacci_sphere(n)
        p = u * torch.tensor([a, b, c], dtype=torch.float64) + torch.tensor([cx, ear_y, cz], dtype=torch.float64)
        keep = (p[:, 1] >= ear_y - 0.25 * b) & (u[:, 2] >= BACK) & ~_behind_face(p, zmap, zlo, zstep, gap)
        parts.append(p[keep])
        centres.append(torch.tensor([cx, ear_y, cz], dtype=torch.float64).expand(int(keep.sum()), 3))
    if cfg.neck:
        rx, rz = 0.36 * W, 0.33 * W
        nz = cz + 0.25 * c  # the throat about 2 cm behind the chin
        y0, y1 = chin_y - cfg.neck_length * H, ear_y
        circ = math.pi * (3 * (rx + rz) - math.sqrt((3 * rx + rz) * (rx + 3 * rz)))  # Ramanujan
        na, ny = max(3, round(circ / gap)), max(2, round((y1 - y0) / gap))
        ang = (torch.arange(na, dtype=torch.float64) + 0.5) * 2 * math.pi / na
        ys = y0 + (torch.arange(ny, dtype=torch.float64) + 0.5) * (y1 - y0) / ny
        A, Y = torch.meshgrid(ang, ys, indexing="ij")
        p = torch.stack([cx + rx * torch.sin(A), Y, nz + rz * torch.cos(A)], -1).reshape(-1, 3)
        keep = (torch.cos(A).reshape(-1) >= BACK) & ~_behind_face(p, zmap, zlo, zstep, gap)
        if cfg.scalp:  # no neck inside the scalp ellipsoid
            q = (p - torch.tensor([cx, ear_y, cz], dtype=torch.float64)) / torch.tensor([a, b, c], dtype=torch.float64)
            keep &= (q * q).sum(-1) > 1.0
        parts.append(p[keep])
        axis = p[keep].clone()
        axis[:, 0], axis[:, 2] = cx, nz
        centres.append(axis)
    if not parts:
        return torch.zeros(0, 3, dtype=torch.float64), torch.zeros(0, 3, dtype=torch.float64)
    return torch.cat(parts), torch.cat(centres)


@dataclass(frozen=True)
class Silhouettes:
    """Head masks of a few training frames and their cameras (model space to pixels).

    Attributes:
        masks: [K, S, S] bool, the ground-truth head (matte x neckhead > 0.5) at S px.
        R: [K, 3, 3], t: [K, 3]: model to camera (OpenCV).  K: [K, 3, 3] intrinsics at S px.
    """

    masks: Tensor
    R: Tensor
    t: Tensor
    K: Tensor

    def to(self, device: str | torch.device) -> "Silhouettes":
        """The same masks and cameras on ``device`` (where :func:`hull_votes` then runs)."""
        return Silhouettes(self.masks.to(device), self.R.to(device), self.t.to(device), self.K.to(device))


HULL_CHUNK = 1 << 14
"""Points per block in :func:`hull_votes` on the CPU (K x this many projections stay in its caches:
4x faster than all at once for 24 frames; a GPU takes blocks of 1M)."""


def hull_votes(points: Tensor, sil: Silhouettes, chunk: int | None = None) -> Tensor:
    """float64 [...]: for points [..., 3], the fraction of frames whose mask holds the point's
    projection, among the frames it projects into (0 where it projects into none).

    The fast path of :func:`hull_votes_reference` (the same projections, pixels and votes): blocks of
    ``chunk`` points, one flat gather per block, on the masks' device (a GPU's when ``sil`` is
    there; ``points`` may be anywhere, the votes come back on their device)."""
    shp, home = points.shape[:-1], points.device
    dev = sil.masks.device
    chunk = chunk or (HULL_CHUNK if dev.type == "cpu" else 1 << 20)
    p = points.reshape(-1, 3).to(dev, torch.float64)
    k_n, h, w = sil.masks.shape
    R, t, K = sil.R.to(dev, torch.float64), sil.t.to(dev, torch.float64), sil.K.to(dev, torch.float64)
    flat = sil.masks.reshape(-1)
    base = (torch.arange(k_n, device=dev) * (h * w))[:, None]  # [K, 1]
    out = torch.empty(p.shape[0], dtype=torch.float64, device=dev)
    for lo in range(0, p.shape[0], max(1, chunk)):
        q = p[lo:lo + chunk]
        cam = torch.einsum("kij,mj->kmi", R, q) + t[:, None]  # [K, m, 3]
        uv = torch.einsum("kij,kmj->kmi", K, cam)
        z = uv[..., 2]
        ok = z > 1e-6
        zc = z.clamp_min(1e-6)
        u = uv[..., 0].div_(zc).floor_()
        v = uv[..., 1].div_(zc).floor_()
        # floor(x) in [0, w) exactly when x in [0, w): the reference's bounds test on the integers
        seen = ok & (u >= 0) & (u < w) & (v >= 0) & (v < h)
        idx = (v.mul_(w).add_(u)).long().add_(base).masked_fill_(~seen, 0)
        hit = flat[idx] & seen
        n = seen.sum(0)
        out[lo:lo + chunk] = hit.sum(0).double() / n.clamp_min(1)  # n = 0: 0 hits / 1
    return out.reshape(shp).to(home)


def hull_votes_reference(points: Tensor, sil: Silhouettes) -> Tensor:
    """float [...]: for points [..., 3], the fraction of frames whose mask holds the point's
    projection, among the frames it projects into (0 where it projects into none); the plain form
    of :func:`hull_votes` (every projection at once, on the CPU)."""
    shp = points.shape[:-1]
    p = points.reshape(-1, 3).double()
    cam = torch.einsum("kij,mj->kmi", sil.R.double(), p) + sil.t.double()[:, None]  # [K, M, 3]
    uv = torch.einsum("kij,kmj->kmi", sil.K.double(), cam)
    z = uv[..., 2]
    ok = z > 1e-6
    u = torch.where(ok, uv[..., 0] / z.clamp_min(1e-6), torch.full_like(z, -1.0)).floor().long()
    v = torch.where(ok, uv[..., 1] / z.clamp_min(1e-6), torch.full_like(z, -1.0)).floor().long()
    k_n, h, w = sil.masks.shape
    seen = ok & (u >= 0) & (u < w) & (v >= 0) & (v < h)
    k = torch.arange(k_n)[:, None].expand_as(u)
    hit = sil.masks[k, v.clamp(0, h - 1), u.clamp(0, w - 1)] & seen
    n = seen.sum(0)
    return (hit.sum(0).double() / n.clamp_min(1)).where(n > 0, torch.zeros_like(n, dtype=torch.float64)).reshape(shp)


def fit_radially(points: Tensor, centres: Tensor, sil: Silhouettes, inset: float = 0.0,
                 scales: tuple[float, float, int] = (0.6, 1.6, 41), quorum: float = 0.9,
                 max_z: float = math.inf) -> Tensor:
    """Slide each point along the ray from its centre to the visual hull's boundary.

    The candidates ``centre + s (point - centre)`` for ``s`` in ``linspace(*scales)`` are tested
    against the masks (:func:`hull_votes`); the point moves to the outermost candidate inside the
    masks of at least ``quorum`` of the frames that see it, then ``inset`` metres back towards its
    centre (a Gaussian's own extent reaches past its centre). Candidates in front of ``max_z``
    count as outside: near-frontal views cannot tell how far forward a point lies (a ray leaving
    the forehead's top stays inside every mask), the face model's front can. Points with no such
    candidate (e.g. the neck below the collar cut) are dropped.

    Args:
        points, centres: [M, 3] (metres, model space).  sil: :class:`Silhouettes`.

    Returns:
        [M', 3] float64, M' <= M.
    """
    p, c = points.double(), centres.double()
    s = torch.linspace(*scales, dtype=torch.float64)
    cand = c[:, None] + s[None, :, None] * (p - c)[:, None]  # [M, S, 3]
    inside = (hull_votes(cand, sil) >= quorum) & (cand[..., 2] <= max_z)  # [M, S]
    any_in = inside.any(1)
    last = (inside.double() * torch.arange(1, len(s) + 1, dtype=torch.float64)).argmax(1)  # the outermost
    d = p - c
    r = d.norm(dim=-1).clamp_min(1e-12) * s[last]
    scale = s[last] * (1 - inset / r).clamp_min(0)
    out = c + scale[:, None] * d
    return out[any_in]


def bind_to_mesh(points: Tensor, vertices: Tensor, faces: Tensor, allowed: Tensor | None = None
                 ) -> tuple[Tensor, Tensor, Tensor]:
    """Bind points to the nearest allowed triangle's centroid.

    Args:
        points: [M, 3]; vertices: [V, 3] the neutral mesh; faces: [F, 3] int.
        allowed: optional [F] bool, the triangles points may bind to (e.g. those not moved by the jaw).

    Returns:
        face_idx [M] int64, bary [M, 3] float32 (all 1/3), offset [M, 3] float32 with
        ``centroid(face_idx) + offset == points`` on ``vertices``.
    """
    cent = vertices.double()[faces.long()].mean(1)  # [F, 3]
    ids = torch.arange(faces.shape[0]) if allowed is None else torch.nonzero(allowed.bool()).flatten()
    d = torch.cdist(points.double(), cent[ids])
    face_idx = ids[d.argmin(1)]
    bary = torch.full((points.shape[0], 3), 1.0 / 3.0)
    offset = (points.double() - cent[face_idx]).float()
    return face_idx, bary, offset


def rigid_faces(vertices_neutral: Tensor, vertices_open: Tensor, faces: Tensor, tol: float = 1e-4) -> Tensor:
    """bool [F]: triangles whose vertices do not move (within ``tol`` metres) between the neutral
    mesh and one with the jaw open: the triangles that follow the skull only."""
    moved = (vertices_open.double() - vertices_neutral.double()).norm(dim=-1) > tol
    return ~moved[faces.long()].any(-1)
