"""Fast visibility pass in plain torch: bucketed bounding-box candidates + one ``scatter_reduce``.

The same code runs on CPU and CUDA. For each valid (batch, face) the pixels of its bounding box
are enumerated as candidates; triangles are bucketed by bounding-box size rounded up to a power of
two, so padding stays below 2x, and each bucket is processed in chunks of at most ``max_elems``
candidates to bound memory. A candidate inside the triangle produces the packed key of
:mod:`stages.face.raster_setup`; one ``scatter_reduce(..., "amin")`` into a ``[B*H*W]`` buffer
keeps the nearest (ties: lowest face index).

Only the face index per pixel comes out of here; barycentrics and depth are recomputed from it
(differentiably) by :func:`stages.face.raster.barycentrics`.
"""

from __future__ import annotations

import torch

from stages.face.raster_setup import EMPTY_KEY, decode_keys, face_bits, setup_triangles

#: Edge i is opposite corner i: (corner a, corner b) of edge(v_a, v_b, p) = b_i * area.
EDGES = ((1, 2), (2, 0), (0, 1))


def default_max_elems(device: torch.device) -> int:
    """Candidate pixels per chunk: 2**24 on CUDA (a few hundred MiB of temporaries), 2**20 on CPU."""
    return 1 << 24 if device.type == "cuda" else 1 << 20


def _chunk_keys(
    corners: torch.Tensor,
    area: torch.Tensor,
    box: torch.Tensor,
    faces: torch.Tensor,
    tri: torch.Tensor,
    cap: int,
    fbits: int,
    height: int,
    width: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys and flat pixel indices of the candidates of the triangles ``tri``.

    Args:
        corners: float [B*F, 3, 3], area: float [B*F], box: int32 [B*F, 4] (x0, y0, nx, ny) from
            :func:`setup_triangles`; faces: int64 [F, 3]; tri: int64 [T] flat b*F+f indices.
        cap: candidate slots per triangle (>= nx*ny). Padding slots wrap round onto the box's own
            pixels (so atomics stay spread out) and carry the empty key.

    Returns:
        (keys int64 [T, cap], pixel index int64 [T, cap] into the [B*H*W] buffer).
    """
    num_faces = faces.shape[0]
    b = tri // num_faces
    f = tri - b * num_faces
    bx = box[tri]  # [T, 4]
    x0, y0, nx = bx[:, 0:1], bx[:, 1:2], bx[:, 2:3]
    n = nx * bx[:, 3:4]
    k = torch.arange(cap, device=tri.device, dtype=torch.int32)[None, :]
    live = k < n
    kk = k % n
    py = y0 + kk // nx  # int32 [T, cap]
    px = x0 + kk % nx
    pix = (b[:, None] * height + py) * width + px  # int64

    cor = corners[tri]  # [T, 3, 3]
    dtype = cor.dtype
    pxf = px.to(dtype) + 0.5
    pyf = py.to(dtype) + 0.5
    ar = area[tri]
    fv = faces[f]  # [T, 3]
    margin = None
    inv_depth = None
    for i, (a, c) in enumerate(EDGES):
        swap = fv[:, a] > fv[:, c]  # [T]
        lo = torch.where(swap[:, None], cor[:, c], cor[:, a])  # [T, 3]
        hi = torch.where(swap[:, None], cor[:, a], cor[:, c])
        flip = 1.0 - 2.0 * swap.to(dtype)  # edge(v_a, v_c, p) = flip * canonical edge function
        # canonical edge function (lower vertex index first): bit-identical in both neighbours
        e = (hi[:, 0:1] - lo[:, 0:1]) * (pyf - lo[:, 1:2]) - (hi[:, 1:2] - lo[:, 1:2]) * (pxf - lo[:, 0:1])
        side = e * (flip * torch.sign(ar))[:, None]  # >= 0 on the inner side of edge i
        term = e * (flip / (ar * cor[:, i, 2]))[:, None]  # bary_i / z_i
        margin = side if margin is None else torch.minimum(margin, side)
        inv_depth = term if inv_depth is None else inv_depth + term
    depth = (1.0 / inv_depth).float()
    keys = (depth.view(torch.int32).long() << fbits) | f[:, None]
    keep = live & (margin >= 0) & (depth > 0)
    return torch.where(keep, keys, torch.full_like(keys, EMPTY_KEY)), pix


_compiled_chunk_keys = None


def _chunk_fn(compile: bool):
    """The chunk function, eager or (``compile=True``) fused by ``torch.compile`` once per process."""
    global _compiled_chunk_keys
    if not compile:
        return _chunk_keys
    if _compiled_chunk_keys is None:
        _compiled_chunk_keys = torch.compile(_chunk_keys, dynamic=True)
    return _compiled_chunk_keys


def rasterize_face_idx(
    verts_pix: torch.Tensor,
    faces: torch.Tensor,
    height: int,
    width: int,
    *,
    cull_backfaces: bool = False,
    max_elems: int | None = None,
    compile: bool = False,
) -> torch.Tensor:
    """Nearest face per pixel: verts_pix float [B, V, 3], faces int64 [F, 3] -> int64 [B, H, W].

    -1 marks pixels no triangle covers. See :mod:`stages.face.raster_setup` for conventions.
    ``max_elems`` bounds the candidates per chunk (memory); ``compile=True`` fuses the per-candidate
    arithmetic with ``torch.compile`` (first call compiles; on CPU it needs a C++ compiler).
    """
    bsz = verts_pix.shape[0]
    num_faces = faces.shape[0]
    dev = verts_pix.device
    buf = torch.full((bsz * height * width,), EMPTY_KEY, dtype=torch.int64, device=dev)
    if bsz == 0 or num_faces == 0 or height == 0 or width == 0:
        return decode_keys(buf, max(num_faces, 1)).reshape(bsz, height, width)
    fbits = face_bits(num_faces)
    max_elems = max_elems or default_max_elems(dev)
    setup = setup_triangles(verts_pix, faces, height, width, cull_backfaces)
    # fresh (non-view) tensors: torch.compile would otherwise guard on the views' base shapes
    corners = setup.corners.reshape(-1, 3, 3).clone()
    area = setup.area.reshape(-1).clone()
    box = torch.stack([t.reshape(-1) for t in (setup.x0, setup.y0, setup.nx, setup.ny)], 1)
    faces = faces.clone()
    chunk_keys = _chunk_fn(compile)
    tri = setup.valid.reshape(-1).nonzero().squeeze(1)  # flat b*F+f
    count = (setup.nx.reshape(-1)[tri].long() * setup.ny.reshape(-1)[tri].long())
    if tri.numel() > 0:
        # level L holds boxes of (2**(L-1), 2**L] pixels
        bounds = 2 ** torch.arange(0, int(height * width).bit_length() + 1, device=dev)
        level = torch.bucketize(count, bounds)
        order = torch.argsort(level, stable=True)
        tri = tri[order]
        per_level = torch.bincount(level, minlength=bounds.numel()).tolist()
        start = 0
        for lvl, num in enumerate(per_level):
            cap = 1 << lvl
            step = max(1, max_elems // cap)
            for s in range(start, start + num, step):
                chunk = tri[s : min(s + step, start + num)]
                slots = cap
                if compile:  # sizes 0 and 1 are specialised by torch.compile: avoid recompiles
                    chunk = chunk.repeat(2) if chunk.numel() == 1 else chunk.clone()  # no view
                    slots = max(cap, 2)  # extra slots wrap round, duplicate keys are harmless
                keys, pix = chunk_keys(corners, area, box, faces, chunk, slots, fbits, height, width)
                buf.scatter_reduce_(0, pix.reshape(-1), keys.reshape(-1), "amin", include_self=True)
            start += num
    return decode_keys(buf, num_faces).reshape(bsz, height, width)
