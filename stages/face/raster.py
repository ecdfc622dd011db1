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
``"reference"`` (:func:`rasterize_reference`, every pixel against every triangle, float64, small
images only), ``"torch"`` (:mod:`stages.face.raster_torch`, bucketed bounding boxes and one
``scatter_reduce``, CPU and CUDA), ``"warp"`` (:mod:`stages.face.raster_warp`, one NVIDIA Warp kernel
for CPU and CUDA). ``"auto"`` picks ``"warp"`` when warp-lang imports, else ``"torch"``. All give
the same face ids away from exact ties; barycentrics and depth are then recomputed from the
vertex positions by :func:`barycentrics`, so gradients reach ``verts_pix`` (visibility itself, the
choice of face per pixel, is not differentiable).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

BACKENDS = ("auto", "reference", "torch", "warp")


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
    if height < 0 or width < 0:
        raise ValueError(f"image size must be >= 0, got {height}x{width}")
    if faces.numel() and (int(faces.min()) < 0 or int(faces.max()) >= verts_pix.shape[1]):
        raise ValueError(f"faces index vertices outside [0, {verts_pix.shape[1]})")


def _pixel_centres(height: int, width: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x [1, 1, W] and y [1, H, 1] of the pixel centres, dtype and device of ``like``."""
    xs = torch.arange(width, dtype=like.dtype, device=like.device) + 0.5
    ys = torch.arange(height, dtype=like.dtype, device=like.device) + 0.5
    return xs.view(1, 1, width), ys.view(1, height, 1)


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
    fg = face_idx >= 0
    vid = faces.long()[face_idx.clamp(min=0)]  # [B, H, W, 3]
    flat = (vid + (torch.arange(bsz, device=vid.device) * verts_pix.shape[1]).view(bsz, 1, 1, 1)).reshape(-1)
    xy = verts_pix[..., :2].reshape(-1, 2)[flat].view(bsz, height, width, 3, 2)
    px, py = _pixel_centres(height, width, verts_pix)
    x, y = xy[..., 0], xy[..., 1]  # [B, H, W, 3]
    # w_i = edge(v_a, v_b, p), (a, b) = the corners opposite i, relative to v_a for precision
    ws = []
    for a, b in ((1, 2), (2, 0), (0, 1)):
        ws.append((x[..., b] - x[..., a]) * (py - y[..., a]) - (y[..., b] - y[..., a]) * (px - x[..., a]))
    w = torch.stack(ws, -1)
    area = (x[..., 1] - x[..., 0]) * (y[..., 2] - y[..., 0]) - (y[..., 1] - y[..., 0]) * (x[..., 2] - x[..., 0])
    ok = fg & (area != 0)
    safe_area = torch.where(ok, area, torch.ones_like(area))
    return torch.where(ok[..., None], w / safe_area[..., None], torch.zeros_like(w))


def _depth(verts_pix: torch.Tensor, faces: torch.Tensor, face_idx: torch.Tensor, bary: torch.Tensor) -> torch.Tensor:
    """Pinhole depth ``1 / sum_i(bary_i / z_i)`` [B, H, W], inf on background."""
    inv_z = interpolate(1.0 / verts_pix[..., 2:3], faces, Fragments(face_idx, bary, bary[..., 0]))[..., 0]
    fg = face_idx >= 0
    safe = torch.where(fg, inv_z, torch.ones_like(inv_z))
    return torch.where(fg, 1.0 / safe, torch.full_like(inv_z, float("inf")))


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
    vid = faces.long()[face_idx.clamp(min=0)]  # [B, H, W, 3]
    flat = (vid + (torch.arange(bsz, device=vid.device) * nverts).view(bsz, 1, 1, 1)).reshape(-1)
    corner = attrs.reshape(-1, chans)[flat].view(bsz, height, width, 3, chans)
    out = (fragments.bary.to(corner.dtype).unsqueeze(-1) * corner).sum(-2)
    return torch.where((face_idx >= 0)[..., None], out, torch.zeros_like(out))


def perspective_correct(bary: torch.Tensor, verts_pix: torch.Tensor, faces: torch.Tensor, face_idx: torch.Tensor) -> torch.Tensor:
    """Turn screen-space barycentrics into perspective-correct ones for a pinhole camera.

    ``b'_i = (b_i / z_i) / sum_j(b_j / z_j)``: the weights of the corners at the 3D surface point.
    Shapes: bary [B, H, W, 3], verts_pix [B, V, 3], faces [F, 3], face_idx [B, H, W] -> [B, H, W, 3]
    (zeros on background). Differentiable.
    """
    bsz = face_idx.shape[0]
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
    face_out, bary_out, depth_out = [], [], []
    for s in range(0, height * width, pixels_per_chunk):
        px = px_all[s : s + pixels_per_chunk].view(1, -1, 1)  # [1, P, 1]
        py = py_all[s : s + pixels_per_chunk].view(1, -1, 1)
        w = torch.stack(
            [
                (x[..., b] - x[..., a]) * (py - y[..., a]) - (y[..., b] - y[..., a]) * (px - x[..., a])
                for a, b in ((1, 2), (2, 0), (0, 1))
            ],
            -1,
        )  # [B, P, F, 3]
        bary = w / torch.where(usable, area, torch.ones_like(area))[..., None]
        inside = usable & (bary >= 0).all(-1)
        depth = 1.0 / (bary / z).sum(-1)
        depth = torch.where(inside, depth, torch.full_like(depth, float("inf")))
        best_depth, best = depth.min(-1)  # ties: the first (lowest) face index
        hit = torch.isfinite(best_depth)
        face_out.append(torch.where(hit, best, torch.full_like(best, -1)))
        depth_out.append(best_depth)
        b_best = torch.gather(bary, 2, best[..., None, None].expand(-1, -1, 1, 3)).squeeze(2)
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
        backend: "auto", "torch", "warp" or "reference" (see the module docstring).
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
        from stages.face.raster_warp import rasterize_face_idx as fast
    else:
        from stages.face.raster_torch import rasterize_face_idx as fast
    face_idx = fast(verts_pix, faces, height, width, cull_backfaces=cull_backfaces)
    bary = barycentrics(verts_pix, faces, face_idx)
    depth = _depth(verts_pix, faces, face_idx, bary)
    return Fragments(face_idx, bary, depth)
