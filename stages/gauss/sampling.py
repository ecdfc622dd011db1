"""Where the Gaussians sit on the face-model surface: (face index, barycentric coordinates) pairs.

Two samplers:

- :func:`uv_texel_samples`: one sample per covered texel of a ``res x res`` UV map (FlashAvatar's
  placement; 128x128 on FLAME gives about 13-15 thousand points), for models with UVs.
- :func:`area_samples`: an even, area-weighted random sampling of the triangles, for models without.
"""

from __future__ import annotations

import torch
from torch import Tensor


def uv_texel_samples(vt: Tensor, ft: Tensor, resolution: int = 128, face_mask: Tensor | None = None,
                     ) -> tuple[Tensor, Tensor]:
    """One sample per UV texel covered by a triangle.

    Texel ``(row r, column c)`` has its centre at ``u = (c + 0.5) / res``, ``v = (r + 0.5) / res``.
    A texel covered by several triangles (overlapping UV islands) goes to the lowest face index.

    Args:
        vt: [T, 2] UV coordinates in 0..1.
        ft: [F, 3] int UV-vertex indices of each face.
        resolution: texels per side.
        face_mask: optional [F] bool, faces allowed to hold samples (e.g. all but the boundary region).

    Returns:
        face_idx [N] int64 and bary [N, 3] float32 (non-negative, rows sum to 1), in texel order.
    """
    vt = vt.double()
    ft = ft.long()
    faces = torch.arange(ft.shape[0])
    if face_mask is not None:
        faces = faces[face_mask.bool()]
    tri = vt[ft[faces]] * resolution - 0.5  # [F', 3, 2] in texel-centre coordinates
    lo = torch.ceil(tri.min(1).values).clamp(0, resolution - 1).long()
    hi = torch.floor(tri.max(1).values).clamp(-1, resolution - 1).long()
    w = (hi[:, 0] - lo[:, 0] + 1).clamp_min(0)
    h = (hi[:, 1] - lo[:, 1] + 1).clamp_min(0)
    counts = w * h
    owner = torch.repeat_interleave(torch.arange(len(faces)), counts)
    local = torch.arange(owner.numel()) - (torch.cumsum(counts, 0) - counts)[owner]
    col = lo[owner, 0] + local % w[owner]
    row = lo[owner, 1] + torch.div(local, w[owner], rounding_mode="floor")
    p = torch.stack([col, row], -1).double()
    a, b, c = tri[owner, 0], tri[owner, 1], tri[owner, 2]
    v0, v1, v2 = b - a, c - a, p - a
    den = v0[:, 0] * v1[:, 1] - v1[:, 0] * v0[:, 1]
    ok_den = den.abs() > 1e-14
    den = torch.where(ok_den, den, torch.ones_like(den))
    l1 = (v2[:, 0] * v1[:, 1] - v1[:, 0] * v2[:, 1]) / den
    l2 = (v0[:, 0] * v2[:, 1] - v2[:, 0] * v0[:, 1]) / den
    bary = torch.stack([1 - l1 - l2, l1, l2], -1)
    inside = ok_den & (bary >= -1e-9).all(-1)
    texel = (row * resolution + col)[inside]
    face = faces[owner[inside]]
    bary = bary[inside].clamp_min(0)
    bary = bary / bary.sum(-1, keepdim=True)
    # one sample per texel: the lowest face index wins
    order = torch.argsort(texel * (ft.shape[0] + 1) + face, stable=True)
    texel, face, bary = texel[order], face[order], bary[order]
    first = torch.ones_like(texel, dtype=torch.bool)
    first[1:] = texel[1:] != texel[:-1]
    return face[first], bary[first].float()


def area_samples(vertices: Tensor, faces: Tensor, n: int, generator: torch.Generator | None = None,
                 face_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """``n`` points spread evenly over the surface: faces drawn with probability proportional to
    their area, barycentrics uniform in the triangle (``sqrt`` trick).

    Args:
        vertices: [V, 3] the (neutral) mesh.
        faces: [F, 3] int vertex indices.
        n: number of samples.
        generator: torch RNG for reproducibility.
        face_mask: optional [F] bool, faces allowed to hold samples.

    Returns:
        face_idx [n] int64, bary [n, 3] float32.
    """
    v = vertices.double()[faces.long()]
    area = 0.5 * torch.linalg.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0]).norm(dim=-1)
    if face_mask is not None:
        area = area * face_mask.double()
    face = torch.multinomial(area, n, replacement=True, generator=generator)
    r = torch.rand(n, 2, generator=generator, dtype=torch.float64)
    s = r[:, 0].sqrt()
    bary = torch.stack([1 - s, s * (1 - r[:, 1]), s * r[:, 1]], -1)
    return face, bary.float()


GRID_BARY = {
    1: ((1 / 3, 1 / 3, 1 / 3),),
    3: ((2 / 3, 1 / 6, 1 / 6), (1 / 6, 2 / 3, 1 / 6), (1 / 6, 1 / 6, 2 / 3)),
    4: ((1 / 3, 1 / 3, 1 / 3), (2 / 3, 1 / 6, 1 / 6), (1 / 6, 2 / 3, 1 / 6), (1 / 6, 1 / 6, 2 / 3)),
}
"""Fixed barycentric patterns of :func:`face_samples`: the centroid, the three corner-ward points, both."""


def face_samples(faces: Tensor, per_face: int) -> tuple[Tensor, Tensor]:
    """``per_face`` samples on each face in ``faces`` at fixed barycentric points (:data:`GRID_BARY`),
    for regions that need more Gaussians than the UV texels give them (the eyes).

    Args:
        faces: [M] int64 face indices.  per_face: 1, 3 or 4.

    Returns:
        face_idx [M * per_face] int64 (face by face), bary [M * per_face, 3] float32.
    """
    if per_face not in GRID_BARY:
        raise ValueError(f"per_face must be one of {sorted(GRID_BARY)}, not {per_face}")
    pattern = torch.tensor(GRID_BARY[per_face], dtype=torch.float32)
    face_idx = faces.long().repeat_interleave(per_face)
    return face_idx, pattern.repeat(faces.shape[0], 1)


def surface_points(vertices: Tensor, faces: Tensor, face_idx: Tensor, bary: Tensor) -> Tensor:
    """Positions of surface samples on a (batch of) mesh(es).

    Args:
        vertices: [..., V, 3].
        faces: [F, 3] int.
        face_idx: [N] int64.
        bary: [N, 3].

    Returns:
        [..., N, 3].
    """
    tri = faces.long()[face_idx]  # [N, 3]
    corners = vertices[..., tri.reshape(-1), :].reshape(vertices.shape[:-2] + tri.shape + vertices.shape[-1:])  # [..., N, 3, D]
    return (corners * bary.to(vertices.dtype).unsqueeze(-1)).sum(-2)


def triangle_size(vertices: Tensor, faces: Tensor, face_idx: Tensor) -> Tensor:
    """Size of each sample's triangle: the square root of its area (metres for metre meshes).

    A Gaussian that follows its triangle multiplies its extent by ``triangle_size(posed) /
    triangle_size(canonical)`` (:class:`stages.gauss.model.GaussianAvatar`): 1 on the neutral mesh,
    0 where a triangle collapses (a shut eyelid's opening), above 1 where it stretches.

    Args:
        vertices: [..., V, 3].
        faces: [F, 3] int.
        face_idx: [N] int64.

    Returns:
        [..., N], ``sqrt(|(b - a) x (c - a)| / 2)``.
    """
    tri = faces.long()[face_idx]  # [N, 3]
    a, b, c = (vertices[..., tri[:, k], :] for k in range(3))  # [..., N, 3] each
    area2 = torch.linalg.cross(b - a, c - a, dim=-1).norm(dim=-1)
    return (0.5 * area2).sqrt()


def triangle_size_reference(vertices: Tensor, faces: Tensor, face_idx: Tensor) -> Tensor:
    """:func:`triangle_size` by Heron's formula, one triangle at a time in float64 (the test oracle).

    vertices [V, 3] (one mesh), faces [F, 3], face_idx [N] -> [N] float64."""
    import math

    v = vertices.double()
    out = torch.empty(face_idx.shape[0], dtype=torch.float64)
    for i, f in enumerate(face_idx.tolist()):
        a, b, c = (v[int(j)] for j in faces[f])
        la, lb, lc = float((b - c).norm()), float((c - a).norm()), float((a - b).norm())
        s = (la + lb + lc) / 2
        out[i] = math.sqrt(math.sqrt(max(s * (s - la) * (s - lb) * (s - lc), 0.0)))
    return out
