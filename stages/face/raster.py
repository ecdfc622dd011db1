"""Batched z-buffered triangle rasteriser in torch (no pytorch3d, no nvdiffrast).

Conventions
-----------
- ``verts_pix`` float [B, V, 3]: x, y in pixels of the OpenCV image convention (x right, y down,
  pixel centres at integer + 0.5, so pixel ``[i, j]`` (row i, column j) is sampled at
  ``(j + 0.5, i + 0.5)``) and z = camera depth (> 0, smaller is nearer).
- A pixel is covered by a triangle when its centre lies inside or on the triangle (inclusive
  edges). Triangles with any vertex at z <= 0, non-finite vertices or zero area are skipped (there
  is no near-plane clipping: keep the mesh in front of the camera).
- Visibility: the smallest depth wins; on an exact depth tie the lowest face index wins, so the
  result is deterministic.
- Culling: none by default (both sides of every triangle are drawn). With ``cull_backfaces=True``
  triangles that face away from the camera are dropped. A triangle faces the camera when its
  right-hand normal ``(v1 - v0) x (v2 - v0)`` (OpenCV camera coordinates) points towards the
  camera, i.e. when its signed pixel area ``(x1-x0)(y2-y0) - (y1-y0)(x2-x0)`` is negative.
  FLAME and other outward-oriented meshes are drawn correctly with culling on.
- Barycentrics are **screen-space** (affine in pixel coordinates): ``bary[..., i]`` is the weight
  of corner i at the pixel centre, the weights sum to 1. They are not perspective-corrected; for a
  pinhole camera, pass them through :func:`perspective_correct` to interpolate attributes
  perspective-correctly.
- Depth is the camera depth of the surface point seen at the pixel for a pinhole camera:
  ``1 / sum_i(bary_i / z_i)`` (1/z is affine in screen space). inf on background.

Back-ends
---------
- ``"reference"``: :func:`rasterize_reference`, every pixel against every triangle in float64;
  small images only (the oracle of the tests).
- ``"torch"``: :mod:`stages.face.raster_torch`, bucketed bounding-box candidates and one
  ``scatter_reduce``; the same code on CPU and CUDA. ``"torch-compile"`` is that code fused by
  ``torch.compile`` (compiles for tens of seconds on first use).
- ``"warp"``: :mod:`stages.face.raster_warp`, one NVIDIA Warp kernel, CPU and CUDA.
- ``"auto"``: ``"warp"`` when warp-lang imports, else ``"torch"``.

The fast back-ends only choose the face per pixel (packed depth/face-index key, one atomic
minimum; shared edges are watertight); barycentrics and depth are then recomputed from the vertex
positions, so gradients reach ``verts_pix`` (visibility itself is not differentiable).
Precision: the Warp pass runs in float32, the torch pass in the input dtype; a pixel centre within
rounding of an edge, or two surfaces within float32 depth resolution, may go either way between
back-ends or devices (each one is deterministic).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

BACKENDS = ("auto", "reference", "torch", "torch-compile", "warp")


@dataclass
class Fragments:
    """Per-pixel result of :func:`rasterize`.

    Attributes:
        face_idx: int64 [B, H, W] index into ``faces`` of the visible triangle, -1 on background.
        bary: float [B, H, W, 3] screen-space barycentrics of the pixel centre in that triangle
            (zeros on background); differentiable w.r.t. ``verts_pix``.
        depth: float [B, H, W] camera depth of the visible surface, inf on background.
    """

    face_idx: torch.Tensor
    bary: torch.Tensor
    depth: torch.Tensor

    @property
    def mask(self) -> torch.Tensor:
        """bool [B, H, W]: True where some triangle covers the pixel."""
        return self.face_idx >= 0


def _check(verts_pix: torch.Tensor, faces: torch.Tensor, height: int, width: int) -> None:
    if verts_pix.dim() != 3 or verts_pix.shape[-1] != 3:
        raise ValueError(f"verts_pix must be [B, V, 3], got {tuple(verts_pix.shape)}")
    if not verts_pix.is_floating_point():
        raise ValueError(f"verts_pix must be floating point, got {verts_pix.dtype}")
    if faces.dim() != 2 or faces.shape[-1] != 3:
        raise ValueError(f"faces must be [F, 3], got {tuple(faces.shape)}")
    if faces.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"faces must be an integer tensor, got {faces.dtype}")
    if faces.device != verts_pix.device:
        raise ValueError(f"faces are on {faces.device} but verts_pix on {verts_pix.device}")
    if height < 0 or width < 0:
        raise ValueError(f"image size must be >= 0, got {height}x{width}")
    if faces.numel() and (int(faces.min()) < 0 or int(faces.max()) >= verts_pix.shape[1]):
        raise ValueError(f"faces index vertices outside [0, {verts_pix.shape[1]})")


def _face_table(verts_pix: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Per-face affine barycentric coefficients, differentiable: [B, V, 3], [F, 3] -> [B*F, 9].

    Row ``b*F + f`` = (x0, y0, A1, B1, A2, B2, 1/z0, 1/z1, 1/z2) with
    ``bary_1 = A1*(px - x0) + B1*(py - y0)``, ``bary_2 = A2*(px - x0) + B2*(py - y0)``,
    ``bary_0 = 1 - bary_1 - bary_2`` (local coordinates keep float32 precise). Degenerate faces
    (zero area, never visible) get zero coefficients.
    """
    tri = verts_pix[:, faces]  # [B, F, 3, 3]
    x, y, z = tri.unbind(-1)  # [B, F, 3]
    ex1, ey1 = x[..., 1] - x[..., 0], y[..., 1] - y[..., 0]
    ex2, ey2 = x[..., 2] - x[..., 0], y[..., 2] - y[..., 0]
    area = ex1 * ey2 - ey1 * ex2
    ok = area != 0
    inv_area = torch.where(ok, 1.0 / torch.where(ok, area, torch.ones_like(area)), torch.zeros_like(area))
    ok_z = z > 0
    inv_z = torch.where(ok_z, 1.0 / torch.where(ok_z, z, torch.ones_like(z)), torch.zeros_like(z))
    cols = [x[..., 0], y[..., 0], ey2 * inv_area, -ex2 * inv_area, -ey1 * inv_area, ex1 * inv_area]
    table = torch.cat([torch.stack(cols, -1), inv_z], -1)  # [B, F, 9]
    return table.reshape(-1, 9)


def _bary_and_inv_depth(
    verts_pix: torch.Tensor, faces: torch.Tensor, face_idx: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(bary [B, H, W, 3], 1/depth [B, H, W], foreground mask [B, H, W]); zeros on background."""
    bsz, height, width = face_idx.shape
    fg = face_idx >= 0
    rows = face_idx.clamp(min=0) + (torch.arange(bsz, device=face_idx.device) * faces.shape[0]).view(bsz, 1, 1)
    t = _face_table(verts_pix, faces).index_select(0, rows.reshape(-1)).view(bsz, height, width, 9)
    dev, dtype = verts_pix.device, verts_pix.dtype
    dx = (torch.arange(width, device=dev, dtype=dtype) + 0.5).view(1, 1, width) - t[..., 0]
    dy = (torch.arange(height, device=dev, dtype=dtype) + 0.5).view(1, height, 1) - t[..., 1]
    b1 = t[..., 2] * dx + t[..., 3] * dy
    b2 = t[..., 4] * dx + t[..., 5] * dy
    bary = torch.stack([1.0 - b1 - b2, b1, b2], -1)
    bary = torch.where(fg[..., None], bary, torch.zeros_like(bary))
    inv_depth = (bary * t[..., 6:9]).sum(-1)
    return bary, inv_depth, fg


def barycentrics(verts_pix: torch.Tensor, faces: torch.Tensor, face_idx: torch.Tensor) -> torch.Tensor:
    """Screen-space barycentrics of every pixel centre in its given face, differentiably.

    Args:
        verts_pix: float [B, V, 3] x, y pixels and depth (only x, y are used).
        faces: int64 [F, 3].
        face_idx: int64 [B, H, W] face per pixel, -1 on background.

    Returns:
        float [B, H, W, 3] weights of the face's corners (sum 1; slightly outside [0, 1] only for
        centres within rounding of an edge), zeros on background. Gradients flow to ``verts_pix``.
    """
    bsz, height, width = face_idx.shape
    if faces.shape[0] == 0:
        return verts_pix.new_zeros(bsz, height, width, 3)
    return _bary_and_inv_depth(verts_pix, faces.long(), face_idx)[0]


def interpolate(attrs: torch.Tensor, faces: torch.Tensor, fragments: Fragments) -> torch.Tensor:
    """Interpolate per-vertex attributes at every pixel with the fragments' barycentrics.

    Args:
        attrs: float [B, V, C] (or [V, C], shared by the batch).
        faces: int64 [F, 3].
        fragments: from :func:`rasterize` (bary may carry gradients to the vertex positions).

    Returns:
        float [B, H, W, C], zeros on background. Differentiable w.r.t. ``attrs`` and
        ``fragments.bary``.
    """
    face_idx = fragments.face_idx
    bsz, height, width = face_idx.shape
    if attrs.dim() == 2:
        attrs = attrs.unsqueeze(0).expand(bsz, -1, -1)
    nverts, chans = attrs.shape[1], attrs.shape[2]
    if faces.shape[0] == 0:
        return attrs.new_zeros(bsz, height, width, chans)
    vid = faces.long()[face_idx.clamp(min=0)]  # [B, H, W, 3]
    flat = (vid + (torch.arange(bsz, device=vid.device) * nverts).view(bsz, 1, 1, 1)).reshape(-1)
    corner = attrs.reshape(-1, chans)[flat].view(bsz, height, width, 3, chans)
    out = (fragments.bary.to(corner.dtype).unsqueeze(-1) * corner).sum(-2)
    return torch.where((face_idx >= 0)[..., None], out, torch.zeros_like(out))


def perspective_correct(
    bary: torch.Tensor, verts_pix: torch.Tensor, faces: torch.Tensor, face_idx: torch.Tensor
) -> torch.Tensor:
    """Turn screen-space barycentrics into perspective-correct ones for a pinhole camera.

    ``b'_i = (b_i / z_i) / sum_j(b_j / z_j)``: the weights of the corners at the 3D surface point.
    Shapes: bary [B, H, W, 3], verts_pix [B, V, 3], faces [F, 3], face_idx [B, H, W] -> [B, H, W, 3]
    (zeros on background). Differentiable.
    """
    bsz = face_idx.shape[0]
    if faces.shape[0] == 0:
        return torch.zeros_like(bary)
    vid = faces.long()[face_idx.clamp(min=0)]
    flat = (vid + (torch.arange(bsz, device=vid.device) * verts_pix.shape[1]).view(bsz, 1, 1, 1)).reshape(-1)
    z = verts_pix[..., 2].reshape(-1)[flat].view(vid.shape)
    fg = (face_idx >= 0)[..., None]
    q = bary / torch.where(fg, z, torch.ones_like(z))
    s = q.sum(-1, keepdim=True)
    return torch.where(fg, q / torch.where(fg, s, torch.ones_like(s)), torch.zeros_like(q))


def rasterize_reference(
    verts_pix: torch.Tensor,
    faces: torch.Tensor,
    height: int,
    width: int,
    *,
    cull_backfaces: bool = False,
    pixels_per_chunk: int | None = None,
) -> Fragments:
    """Brute-force oracle: every pixel centre against every triangle, in float64.

    Memory and time are O(B * H * W * F): small images only (tests). Same conventions and outputs
    as :func:`rasterize`; its ``bary`` and ``depth`` are its own float64 values cast back to the
    input dtype (no gradients).
    """
    _check(verts_pix, faces, height, width)
    v = verts_pix.detach().double()
    bsz, dev = v.shape[0], v.device
    if faces.shape[0] == 0:
        face_idx = torch.full((bsz, height, width), -1, dtype=torch.int64, device=dev)
        bary = verts_pix.new_zeros(bsz, height, width, 3)
        return Fragments(face_idx, bary, verts_pix.new_full((bsz, height, width), float("inf")))
    tri = v[:, faces.long()]  # [B, F, 3, 3]
    x, y, z = tri[..., 0][:, None], tri[..., 1][:, None], tri[..., 2][:, None]  # [B, 1, F, 3]
    area = (x[..., 1] - x[..., 0]) * (y[..., 2] - y[..., 0]) - (y[..., 1] - y[..., 0]) * (x[..., 2] - x[..., 0])
    usable = (area != 0) & (z > 0).all(-1) & torch.isfinite(tri).all(-1).all(-1)[:, None]
    if cull_backfaces:
        usable &= area < 0
    iy, ix = torch.meshgrid(torch.arange(height, device=dev), torch.arange(width, device=dev), indexing="ij")
    px_all = ix.reshape(-1).double() + 0.5
    py_all = iy.reshape(-1).double() + 0.5
    if pixels_per_chunk is None:
        pixels_per_chunk = max(1, (1 << 20) // max(1, bsz * faces.shape[0]))
    inv_area = 1.0 / torch.where(usable, area, torch.ones_like(area))  # [B, 1, F]
    face_out, bary_out, depth_out = [], [], []
    for s in range(0, height * width, pixels_per_chunk):
        px = px_all[s : s + pixels_per_chunk].view(1, -1, 1)  # [1, P, 1]
        py = py_all[s : s + pixels_per_chunk].view(1, -1, 1)
        inside = usable
        inv_depth = torch.zeros((), dtype=v.dtype, device=dev)
        bary = []
        for i, (a, b) in enumerate(((1, 2), (2, 0), (0, 1))):
            # weight of corner i = edge(v_a, v_b, p) / edge(v_0, v_1, v_2), [B, P, F]
            w = (x[..., b] - x[..., a]) * (py - y[..., a]) - (y[..., b] - y[..., a]) * (px - x[..., a])
            bary.append(w * inv_area)
            inside = inside & (bary[-1] >= 0)
            inv_depth = inv_depth + bary[-1] / z[..., i]
        depth = torch.where(inside, 1.0 / inv_depth, torch.full_like(inv_depth, float("inf")))
        best_depth, best = depth.min(-1)  # ties: the first (lowest) face index
        hit = torch.isfinite(best_depth)
        face_out.append(torch.where(hit, best, torch.full_like(best, -1)))
        depth_out.append(best_depth)
        b_best = torch.stack([torch.gather(bi, 2, best[..., None]).squeeze(2) for bi in bary], -1)
        bary_out.append(torch.where(hit[..., None], b_best, torch.zeros_like(b_best)))
    face_idx = torch.cat(face_out, 1).view(bsz, height, width)
    bary = torch.cat(bary_out, 1).view(bsz, height, width, 3).to(verts_pix.dtype)
    depth = torch.cat(depth_out, 1).view(bsz, height, width).to(verts_pix.dtype)
    return Fragments(face_idx, bary, depth)


def _warp_available() -> bool:
    try:
        import warp  # noqa: F401
    except Exception:
        return False
    return True


def rasterize(
    verts_pix: torch.Tensor,
    faces: torch.Tensor,
    height: int,
    width: int,
    *,
    backend: str = "auto",
    cull_backfaces: bool = False,
) -> Fragments:
    """Rasterise a batch of triangle meshes with a z-buffer.

    Args:
        verts_pix: float [B, V, 3] x, y in pixels (OpenCV, centres at +0.5), z camera depth > 0.
        faces: int64 [F, 3] vertex indices, shared by the batch.
        height, width: image size in pixels.
        backend: "auto", "torch", "torch-compile", "warp" or "reference" (module docstring).
        cull_backfaces: drop triangles facing away from the camera (default: draw both sides).

    Returns:
        :class:`Fragments` with face_idx [B, H, W], bary [B, H, W, 3] (screen-space,
        differentiable w.r.t. verts_pix), depth [B, H, W] (inf on background).
    """
    _check(verts_pix, faces, height, width)
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    faces = faces.long()
    if backend == "reference":
        return rasterize_reference(verts_pix, faces, height, width, cull_backfaces=cull_backfaces)
    if backend == "auto":
        backend = "warp" if _warp_available() else "torch"
    if backend == "warp":
        from stages.face import raster_warp

        face_idx = raster_warp.rasterize_face_idx(verts_pix, faces, height, width, cull_backfaces=cull_backfaces)
    else:
        from stages.face import raster_torch

        face_idx = raster_torch.rasterize_face_idx(
            verts_pix, faces, height, width, cull_backfaces=cull_backfaces, compile=backend == "torch-compile"
        )
    inf = torch.full(face_idx.shape, float("inf"), dtype=verts_pix.dtype, device=verts_pix.device)
    if faces.shape[0] == 0:
        return Fragments(face_idx, verts_pix.new_zeros(*face_idx.shape, 3), inf)
    bary, inv_depth, fg = _bary_and_inv_depth(verts_pix, faces, face_idx)
    depth = torch.where(fg, 1.0 / torch.where(fg, inv_depth, torch.ones_like(inv_depth)), inf)
    return Fragments(face_idx, bary, depth)
