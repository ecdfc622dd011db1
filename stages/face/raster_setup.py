"""Per-triangle set-up shared by the fast rasteriser paths (torch and Warp).

Conventions (the same as :mod:`stages.face.raster`): ``verts_pix[..., 0:2]`` are x, y in pixels
with pixel centres at integer + 0.5 (x right, y down, OpenCV), ``verts_pix[..., 2]`` is the camera
depth z (> 0). Pixel ``(row i, col j)`` has its centre at ``(j + 0.5, i + 0.5)``.

Visibility is resolved with one atomic minimum over a packed int64 key per pixel::

    key = (float32 bits of the depth) << face_bits | face_index

Positive float32 values order like their bit patterns read as integers, so the smallest key is the
nearest surface, and on an exact depth tie the lowest face index wins (deterministic). The float32
depth takes 31 bits, so ``face_bits <= 32`` (at most 2**32 faces).

Watertight edges: every edge function is evaluated with the edge's endpoints in a canonical order
(lower vertex index first) and then negated as the triangle needs. Two triangles that share an edge
therefore compute bit-identical values of opposite sign for every pixel, so a pixel centre lying
exactly on a shared edge is covered by at least one of them (inclusive test), never by none.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

#: Key of a pixel that no triangle covers (larger than any real key).
EMPTY_KEY = torch.iinfo(torch.int64).max


def face_bits(num_faces: int) -> int:
    """Bits that hold a face index in ``[0, num_faces)`` in the packed key (1 to 32)."""
    bits = max(1, int(num_faces - 1).bit_length()) if num_faces > 1 else 1
    if bits > 32:
        raise ValueError(f"at most 2**32 faces can be rasterised, got {num_faces}")
    return bits


@dataclass
class TriangleSetup:
    """What the fast paths need per (batch element, face); all tensors have leading shape [B, F].

    Attributes:
        corners: float [B, F, 3, 3] the triangle's vertices (x px, y px, z depth), detached.
        area: float [B, F] twice the signed area ``edge(v0, v1, v2)`` in px^2. In the y-down image
            a triangle whose right-hand normal (v0, v1, v2) points towards the camera has
            ``area < 0``.
        x0, y0: int32 [B, F] first pixel column / row of the bounding box of covered pixel centres.
        nx, ny: int32 [B, F] its width / height in pixels (0 when the triangle is skipped).
        valid: bool [B, F] finite, all z > 0, non-degenerate, not culled, bounding box on screen.
    """

    corners: torch.Tensor
    area: torch.Tensor
    x0: torch.Tensor
    y0: torch.Tensor
    nx: torch.Tensor
    ny: torch.Tensor
    valid: torch.Tensor


def _pixel_span(lo: torch.Tensor, hi: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """First index and count of pixel centres ``i + 0.5`` inside ``[lo, hi]``, clipped to [0, size)."""
    first = torch.ceil(lo - 0.5).clamp(0, size)
    last = torch.floor(hi - 0.5).clamp(-1, size - 1)
    count = (last - first + 1).clamp(min=0)
    return first.to(torch.int32), count.to(torch.int32)


def setup_triangles(
    verts_pix: torch.Tensor, faces: torch.Tensor, height: int, width: int, cull_backfaces: bool
) -> TriangleSetup:
    """Gather the corners of every (batch, face) and find its pixel bounding box.

    Args:
        verts_pix: float [B, V, 3] pixels x, y and depth z.
        faces: int64 [F, 3] vertex indices.
        height, width: image size in pixels.
        cull_backfaces: drop triangles with ``area >= 0`` (facing away from the camera).
    """
    corners = verts_pix.detach()[:, faces]  # [B, F, 3, 3]
    x, y, z = corners.unbind(-1)  # each [B, F, 3]
    area = (x[..., 1] - x[..., 0]) * (y[..., 2] - y[..., 0]) - (y[..., 1] - y[..., 0]) * (
        x[..., 2] - x[..., 0]
    )
    valid = torch.isfinite(corners).all(-1).all(-1) & (z > 0).all(-1) & (area != 0)
    valid &= torch.isfinite(area)
    if cull_backfaces:
        valid &= area < 0
    big = float(4 * max(height, width) + 4)
    xs = torch.nan_to_num(x, nan=0.0).clamp(-big, big)
    ys = torch.nan_to_num(y, nan=0.0).clamp(-big, big)
    x0, nx = _pixel_span(xs.amin(-1), xs.amax(-1), width)
    y0, ny = _pixel_span(ys.amin(-1), ys.amax(-1), height)
    valid &= (nx > 0) & (ny > 0)
    zero = torch.zeros((), dtype=torch.int32, device=nx.device)
    nx = torch.where(valid, nx, zero)
    ny = torch.where(valid, ny, zero)
    return TriangleSetup(corners, area, x0, y0, nx, ny, valid)


def decode_keys(keys: torch.Tensor, num_faces: int) -> torch.Tensor:
    """Face index per pixel from packed keys: int64 [...] -> int64 [...] (-1 where empty)."""
    mask = (1 << face_bits(num_faces)) - 1
    return torch.where(keys == EMPTY_KEY, torch.full_like(keys, -1), keys & mask)
