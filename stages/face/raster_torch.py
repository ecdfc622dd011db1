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

from stages.face.raster_setup import EMPTY_KEY, TriangleSetup, decode_keys, face_bits, setup_triangles

#: Edge i is opposite corner i: (corner a, corner b) of edge(v_a, v_b, p) = b_i * area.
EDGES = ((1, 2), (2, 0), (0, 1))


def default_max_elems(device: torch.device) -> int:
    """Candidate pixels per chunk: 2**24 on CUDA (a few hundred MiB of temporaries), 2**20 on CPU."""
    return 1 << 24 if device.type == "cuda" else 1 << 20


def _chunk_keys(
    setup: TriangleSetup,
    faces: torch.Tensor,
    tri: torch.Tensor,
    cap: int,
    fbits: int,
    height: int,
    width: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys and flat pixel indices of the candidates of ``tri`` (flat b*F+f, int64 [T]).

    Each triangle gets ``cap`` candidate slots (``cap >= nx*ny``); the padding slots wrap round onto
    the box's own pixels (so atomics stay spread out) and carry the empty key.
    Returns (keys int64 [T, cap], pixel index int64 [T, cap] into the [B*H*W] buffer).
    """
    num_faces = faces.shape[0]
    dev = tri.device
    b = tri // num_faces
    f = tri % num_faces
    x0 = setup.x0.reshape(-1)[tri].long()[:, None]
    y0 = setup.y0.reshape(-1)[tri].long()[:, None]
    nx = setup.nx.reshape(-1)[tri].long()[:, None]
    n = nx * setup.ny.reshape(-1)[tri].long()[:, None]
    k = torch.arange(cap, device=dev)[None, :]
    live = k < n
    kk = k % n
    px = x0 + kk % nx  # [T, cap]
    py = y0 + kk // nx
    pix = (b[:, None] * height + py) * width + px

    cor = setup.corners.reshape(-1, 3, 3)[tri]  # [T, 3, 3]
    dtype = cor.dtype
    pxf = px.to(dtype) + 0.5
    pyf = py.to(dtype) + 0.5
    area = setup.area.reshape(-1)[tri]
    sa = torch.sign(area)[:, None]
    fv = faces[f]  # [T, 3]
    inside = live
    inv_depth = torch.zeros((), dtype=dtype, device=dev)
    for i, (a, c) in enumerate(EDGES):
        swap = (fv[:, a] > fv[:, c])[:, None]  # [T, 1]
        lo = torch.where(swap, cor[:, c], cor[:, a])  # [T, 3]
        hi = torch.where(swap, cor[:, a], cor[:, c])
        dx = (hi[:, 0] - lo[:, 0])[:, None]
        dy = (hi[:, 1] - lo[:, 1])[:, None]
        e = dx * (pyf - lo[:, 1:2]) - dy * (pxf - lo[:, 0:1])  # canonical edge function
        w = torch.where(swap, -e, e)  # edge(v_a, v_c, p) = b_i * area
        inside = inside & (w * sa >= 0)
        inv_depth = inv_depth + w * (1.0 / (area * cor[:, i, 2]))[:, None]
    depth = (1.0 / inv_depth).float()
    keys = (depth.view(torch.int32).long() << fbits) | f[:, None]
    keys = torch.where(inside & (depth > 0), keys, torch.full_like(keys, EMPTY_KEY))
    return keys, pix


def rasterize_face_idx(
    verts_pix: torch.Tensor,
    faces: torch.Tensor,
    height: int,
    width: int,
    *,
    cull_backfaces: bool = False,
    max_elems: int | None = None,
) -> torch.Tensor:
    """Nearest face per pixel: verts_pix float [B, V, 3], faces int64 [F, 3] -> int64 [B, H, W].

    -1 marks pixels no triangle covers. See :mod:`stages.face.raster_setup` for conventions.
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
                keys, pix = _chunk_keys(setup, faces, chunk, cap, fbits, height, width)
                buf.scatter_reduce_(0, pix.reshape(-1), keys.reshape(-1), "amin", include_self=True)
            start += num
    return decode_keys(buf, num_faces).reshape(bsz, height, width)
