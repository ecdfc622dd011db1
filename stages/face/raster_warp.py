"""Fast visibility pass as one NVIDIA Warp kernel (the same source compiles for CPU and CUDA).

Work is split into (triangle, tile) items: each valid (batch, face) gets
``ceil(nx / TILE) * ceil(ny / TILE)`` tiles of its pixel bounding box, and one thread walks one
tile (at most TILE*TILE pixel centres), so large triangles do not serialise a single thread.
Each covered pixel does one 64-bit ``atomic_min`` of the packed key of
:mod:`stages.face.raster_setup` (float32 depth bits << face_bits | face index), the same key and the
same canonical (watertight) edge functions as :mod:`stages.face.raster_torch`, so both paths agree.

Only the face index per pixel comes out of here; barycentrics and depth are recomputed from it
(differentiably) by :func:`stages.face.raster.barycentrics`.
"""

from __future__ import annotations

import functools

import torch
import warp as wp

from stages.face.raster_setup import EMPTY_KEY, decode_keys, face_bits, setup_triangles

# keep stdout clean (benchmarks print JSON there): no greeting or module-load lines
if wp.config.log_level <= wp.LOG_INFO:
    wp.config.log_level = wp.LOG_WARNING
wp.set_module_options({"enable_backward": False})  # visibility is not differentiable

#: Tile edge in pixels: one thread handles at most TILE*TILE candidate pixels.
TILE = 8


@wp.func_native(
    """
    union { float f; int32_t i; } u;
    u.f = x;
    return u.i;
    """
)
def _float_bits(x: wp.float32) -> wp.int32: ...


@wp.func
def _edge(
    ax: wp.float32, ay: wp.float32, bx: wp.float32, by: wp.float32, ia: wp.int32, ib: wp.int32,
    px: wp.float32, py: wp.float32,
) -> wp.float32:
    """edge(a, b, p) evaluated with the endpoints in canonical order (lower vertex index first)."""
    if ia > ib:
        return -((ax - bx) * (py - by) - (ay - by) * (px - bx))
    return (bx - ax) * (py - ay) - (by - ay) * (px - ax)


@wp.kernel
def _raster_tiles(
    corners: wp.array3d(dtype=wp.float32),  # [B*F, 3, 3]
    faces: wp.array2d(dtype=wp.int32),  # [F, 3]
    item_tri: wp.array(dtype=wp.int64),  # [N] flat b*F+f
    item_tile: wp.array(dtype=wp.int32),  # [N] tile index within the triangle's box
    x0: wp.array(dtype=wp.int32),  # [B*F]
    y0: wp.array(dtype=wp.int32),
    nx: wp.array(dtype=wp.int32),
    ny: wp.array(dtype=wp.int32),
    num_faces: wp.int64,
    fbits: wp.int64,
    height: wp.int64,
    width: wp.int64,
    tile: wp.int32,
    buf: wp.array(dtype=wp.int64),  # [B*H*W] packed keys
):
    i = wp.tid()
    t = item_tri[i]
    tl = item_tile[i]
    b = t // num_faces
    f = t - b * num_faces
    w_box = nx[t]
    h_box = ny[t]
    tiles_x = (w_box + tile - 1) // tile
    tx = tl % tiles_x
    ty = tl // tiles_x
    xs = x0[t] + tx * tile
    ys = y0[t] + ty * tile
    xe = wp.min(xs + tile, x0[t] + w_box)
    ye = wp.min(ys + tile, y0[t] + h_box)

    x_0 = corners[t, 0, 0]
    y_0 = corners[t, 0, 1]
    x_1 = corners[t, 1, 0]
    y_1 = corners[t, 1, 1]
    x_2 = corners[t, 2, 0]
    y_2 = corners[t, 2, 1]
    i0 = faces[f, 0]
    i1 = faces[f, 1]
    i2 = faces[f, 2]
    area = (x_1 - x_0) * (y_2 - y_0) - (y_1 - y_0) * (x_2 - x_0)
    sa = wp.sign(area)
    q0 = 1.0 / (area * corners[t, 0, 2])
    q1 = 1.0 / (area * corners[t, 1, 2])
    q2 = 1.0 / (area * corners[t, 2, 2])
    row0 = b * height
    for yy in range(ys, ye):
        py = wp.float32(yy) + 0.5
        for xx in range(xs, xe):
            px = wp.float32(xx) + 0.5
            w0 = _edge(x_1, y_1, x_2, y_2, i1, i2, px, py)
            w1 = _edge(x_2, y_2, x_0, y_0, i2, i0, px, py)
            w2 = _edge(x_0, y_0, x_1, y_1, i0, i1, px, py)
            if w0 * sa >= 0.0 and w1 * sa >= 0.0 and w2 * sa >= 0.0:
                depth = 1.0 / (w0 * q0 + w1 * q1 + w2 * q2)
                if depth > 0.0:
                    key = (wp.int64(_float_bits(depth)) << fbits) | f
                    wp.atomic_min(buf, (row0 + wp.int64(yy)) * width + wp.int64(xx), key)


@functools.lru_cache(maxsize=None)
def _init() -> None:
    wp.init()


def rasterize_face_idx(
    verts_pix: torch.Tensor,
    faces: torch.Tensor,
    height: int,
    width: int,
    *,
    cull_backfaces: bool = False,
) -> torch.Tensor:
    """Nearest face per pixel: verts_pix float [B, V, 3], faces int64 [F, 3] -> int64 [B, H, W].

    -1 marks pixels no triangle covers. Computes in float32 (float64 input is rounded).
    """
    _init()
    bsz = verts_pix.shape[0]
    num_faces = faces.shape[0]
    dev = verts_pix.device
    buf = torch.full((bsz * height * width,), EMPTY_KEY, dtype=torch.int64, device=dev)
    if bsz == 0 or num_faces == 0 or height == 0 or width == 0:
        return decode_keys(buf, max(num_faces, 1)).reshape(bsz, height, width)
    setup = setup_triangles(verts_pix.float(), faces, height, width, cull_backfaces)
    tri = setup.valid.reshape(-1).nonzero().squeeze(1)
    nx = setup.nx.reshape(-1)
    ny = setup.ny.reshape(-1)
    tiles = ((nx[tri] + TILE - 1) // TILE) * ((ny[tri] + TILE - 1) // TILE)
    item_tri = torch.repeat_interleave(tri, tiles.long())
    if item_tri.numel() > 0:
        first = torch.cumsum(tiles.long(), 0) - tiles.long()
        item_tile = (torch.arange(item_tri.numel(), device=dev) - torch.repeat_interleave(first, tiles.long())).int()
        corners = setup.corners.reshape(-1, 3, 3).contiguous()
        wdev = wp.device_from_torch(dev)
        stream = wp.stream_from_torch(torch.cuda.current_stream(dev)) if dev.type == "cuda" else None
        wp.launch(
            _raster_tiles,
            dim=item_tri.numel(),
            inputs=[
                wp.from_torch(corners),
                wp.from_torch(faces.int().contiguous()),
                wp.from_torch(item_tri.contiguous()),
                wp.from_torch(item_tile.contiguous()),
                wp.from_torch(setup.x0.reshape(-1).contiguous()),
                wp.from_torch(setup.y0.reshape(-1).contiguous()),
                wp.from_torch(nx.contiguous()),
                wp.from_torch(ny.contiguous()),
                num_faces,
                face_bits(num_faces),
                height,
                width,
                TILE,
                wp.from_torch(buf),
            ],
            device=wdev,
            stream=stream,
        )
    return decode_keys(buf, num_faces).reshape(bsz, height, width)
