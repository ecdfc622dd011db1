"""Reference Gaussian rasteriser in plain torch: differentiable, batched over cameras, CPU-friendly.

It follows the conventions of ``gsplat.rasterization(..., rasterize_mode="classic")`` so that it can
serve as an oracle for the CUDA path (:mod:`stages.gauss.render_gsplat`) and as the renderer of the
CPU ``tiny`` preset.

Conventions
-----------
- Camera: OpenCV (x right, y down, z forward). ``viewmats`` [4,4] map world to camera
  (``X_cam = R X_world + t``); ``Ks`` [3,3] are pixel intrinsics. The centre of pixel ``(row i,
  column j)`` sits at ``(x, y) = (j + 0.5, i + 0.5)``.
- Quaternions are ``wxyz`` and need not be normalised; ``scales`` are standard deviations (metres,
  already activated); opacities are in 0..1 (already activated); colours are post-activation values.
- Projection (EWA, Zwicker et al. 2002): ``mean2d = (fx x/z + cx, fy y/z + cy)`` and
  ``cov2d = J W Σ Wᵀ Jᵀ + eps2d I`` with ``W`` the rotation of the view matrix, ``Σ = R S Sᵀ Rᵀ``
  and ``J = [[fx/z, 0, -fx tx/z²], [0, fy/z, -fy ty/z²]]``, where ``(tx/z, ty/z)`` is ``(x/z, y/z)``
  clamped to 1.3x the field of view (as 3DGS and gsplat do). ``eps2d = 0.3`` px² is the low-pass
  dilation of 3DGS.
- Culling: a Gaussian is dropped for a camera when its depth is outside ``[near_plane, far_plane]``,
  its dilated 2D covariance is not positive definite, its opacity is below 1/255, or its bounding
  box (``extend * sqrt(diag(cov2d))`` px with ``extend = min(3.33, sqrt(2 ln(255 opacity)))``) lies
  outside the image.
- Compositing, per pixel, front to back in increasing camera-space depth of the Gaussian centres:
  ``alpha_i = min(0.999, o_i exp(-½ dᵀ cov2d⁻¹ d))``; terms with ``alpha_i < 1/255`` are skipped (they
  neither add colour nor reduce transmittance). With ``T_0 = 1`` and ``T_{i+1} = T_i (1 - alpha_i)``,
  a Gaussian contributes ``alpha_i T_i c_i`` only while ``T_{i+1} > 1e-4``; the first one that would
  bring the transmittance to ``1e-4`` or below, and every one behind it, is left out (early
  termination, exclusive). ``alpha = 1 - T_final`` and ``image = Σ alpha_i T_i c_i + T_final bg``.

Implementation: instead of dense [pixels, Gaussians] matrices, every (Gaussian, pixel) pair inside
the Gaussian's bounding box is listed once, the pairs are sorted by (camera, pixel, depth), and the
transmittance is a segmented cumulative sum of ``log(1 - alpha)`` (in float64). Memory and time are
O(number of pairs), which is small for the small Gaussians of a head avatar; above ``max_pairs`` the
image is processed in bands of rows (exact: pixels are independent), bounding the memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

ALPHA_THRESHOLD = 1.0 / 255.0
MAX_ALPHA = 0.999
T_MIN = 1e-4
EXTEND_MAX = 3.33


def quat_to_rotmat(quats: Tensor) -> Tensor:
    """Rotation matrices from ``wxyz`` quaternions. [..., 4] (any norm > 0) -> [..., 3, 3]."""
    q = quats / quats.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    w, x, y, z = q.unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], dim=-1).reshape(q.shape[:-1] + (3, 3))


def covariance_3d(quats: Tensor, scales: Tensor) -> Tensor:
    """World-space covariances ``R S Sᵀ Rᵀ``. quats [..., 4] wxyz, scales [..., 3] (std devs) -> [..., 3, 3]."""
    rs = quat_to_rotmat(quats) * scales.unsqueeze(-2)
    return rs @ rs.transpose(-1, -2)


def viewmat_from_rt(R: Tensor, t: Tensor) -> Tensor:
    """World-to-camera 4x4 matrices from OpenCV extrinsics. R [..., 3, 3], t [..., 3] -> [..., 4, 4]."""
    top = torch.cat([R, t.unsqueeze(-1)], dim=-1)
    bottom = torch.zeros(R.shape[:-2] + (1, 4), dtype=R.dtype, device=R.device)
    bottom[..., 0, 3] = 1.0
    return torch.cat([top, bottom], dim=-2)


@dataclass
class Projection:
    """Gaussians projected into C cameras (all tensors lead with [C, N]).

    Attributes:
        means2d: [C, N, 2] pixel coordinates of the centres.
        cov2d: [C, N, 2, 2] dilated screen-space covariances (px²), ``J W Σ Wᵀ Jᵀ + eps2d I``.
        conics: [C, N, 3] upper triangle ``(a, b, c)`` of ``cov2d⁻¹``.
        depths: [C, N] camera-space z of the centres (metres).
        radii: [C, N, 2] int64 half sizes of the bounding boxes in px (x, y); 0 where culled.
        opacities: [C, N] opacities (broadcast to cameras).
    """

    means2d: Tensor
    cov2d: Tensor
    conics: Tensor
    depths: Tensor
    radii: Tensor
    opacities: Tensor

    @property
    def visible(self) -> Tensor:
        """[C, N] bool: not culled."""
        return (self.radii > 0).all(-1)


def _batch(x: Tensor, core_dims: int, c: int | None) -> Tensor:
    return x if x.dim() > core_dims else x.unsqueeze(0).expand((c or 1,) + tuple(x.shape))


def project_gaussians(means: Tensor, quats: Tensor | None, scales: Tensor | None, opacities: Tensor, viewmats: Tensor,
                      Ks: Tensor, width: int, height: int, *, eps2d: float = 0.3, near_plane: float = 0.01,
                      far_plane: float = 1e10, covars: Tensor | None = None) -> Projection:
    """EWA projection of 3D Gaussians into C pinhole cameras.

    Args:
        means: [N, 3] or [C, N, 3] world positions (metres).
        quats: [N, 4] or [C, N, 4] rotations, wxyz.
        scales: [N, 3] or [C, N, 3] standard deviations along the rotated axes (metres).
        opacities: [N] or [C, N] in 0..1.
        viewmats: [4, 4] or [C, 4, 4] world-to-camera (OpenCV).
        Ks: [3, 3] or [C, 3, 3] intrinsics (px).
        width, height: image size (px).
        eps2d: dilation added to the diagonal of the 2D covariance (px²).
        near_plane, far_plane: depth range kept (metres).
        covars: optional [N, 3, 3] or [C, N, 3, 3] world-space covariances (metres²) used instead of
            ``quats`` and ``scales`` (which are then ignored and may be None), as gsplat's ``covars``.

    Returns:
        :class:`Projection` with [C, N, ...] tensors (C = 1 when nothing was batched).
    """
    c = next((x.shape[0] for x, d in ((means, 2), (viewmats, 2), (Ks, 2), (opacities, 1)) if x.dim() > d), 1)
    means = _batch(means, 2, c)
    if covars is None:
        cov3d = covariance_3d(_batch(quats, 2, c), _batch(scales, 2, c))
    else:
        cov3d = _batch(covars, 3, c)
    opacities = _batch(opacities, 1, c)
    viewmats, Ks = _batch(viewmats, 2, c), _batch(Ks, 2, c)

    W = viewmats[:, None, :3, :3]  # [C, 1, 3, 3]
    p = (W @ means.unsqueeze(-1)).squeeze(-1) + viewmats[:, None, :3, 3]  # [C, N, 3]
    x, y, z = p.unbind(-1)
    fx, fy, cx, cy = (Ks[:, None, 0, 0], Ks[:, None, 1, 1], Ks[:, None, 0, 2], Ks[:, None, 1, 2])
    zs = torch.where(z.abs() < 1e-6, torch.full_like(z, 1e-6), z)  # only guards culled points
    rz = 1.0 / zs
    tan_fovx, tan_fovy = 0.5 * width / fx, 0.5 * height / fy
    lim_xp, lim_xn = (width - cx) / fx + 0.3 * tan_fovx, cx / fx + 0.3 * tan_fovx
    lim_yp, lim_yn = (height - cy) / fy + 0.3 * tan_fovy, cy / fy + 0.3 * tan_fovy
    tx = zs * torch.minimum(lim_xp, torch.maximum(-lim_xn, x * rz))
    ty = zs * torch.minimum(lim_yp, torch.maximum(-lim_yn, y * rz))
    zero = torch.zeros_like(z)
    J = torch.stack([fx * rz, zero, -fx * tx * rz * rz, zero, fy * rz, -fy * ty * rz * rz], -1).reshape(p.shape[:-1] + (2, 3))
    cov_c = W @ cov3d @ W.transpose(-1, -2)
    cov2d = J @ cov_c @ J.transpose(-1, -2) + eps2d * torch.eye(2, dtype=p.dtype, device=p.device)
    means2d = torch.stack([fx * x * rz + cx, fy * y * rz + cy], -1)

    a, b, d = cov2d[..., 0, 0], cov2d[..., 0, 1], cov2d[..., 1, 1]
    det = a * d - b * b
    det_safe = torch.where(det > 0, det, torch.ones_like(det))
    conics = torch.stack([d / det_safe, -b / det_safe, a / det_safe], -1)

    with torch.no_grad():
        op = opacities.detach()
        extend = torch.sqrt(2.0 * torch.log(op.clamp_min(ALPHA_THRESHOLD) / ALPHA_THRESHOLD)).clamp_max(EXTEND_MAX)
        rx = torch.ceil(extend * a.detach().clamp_min(0).sqrt())
        ry = torch.ceil(extend * d.detach().clamp_min(0).sqrt())
        m = means2d.detach()
        ok = ((z >= near_plane) & (z <= far_plane) & (det > 0) & (op >= ALPHA_THRESHOLD) & ((rx > 0) | (ry > 0))
              & (m[..., 0] + rx > 0) & (m[..., 0] - rx < width) & (m[..., 1] + ry > 0) & (m[..., 1] - ry < height))
        radii = torch.stack([rx, ry], -1).to(torch.int64) * ok.unsqueeze(-1)
    return Projection(means2d, cov2d, conics, z, radii, opacities)


MAX_PAIRS = 20_000_000
"""Default bound on the (Gaussian, pixel) pairs handled at once when gradients are recorded; more are
split into row bands."""
NO_GRAD_MAX_PAIRS = 500_000
"""The bound without gradients (rendering a trained avatar): each band's temporaries (a few arrays of
8 bytes a pair, 4 MB each) then stay under glibc's largest mmap threshold (32 MB), so the allocator
reuses heap memory for them instead of mapping fresh zeroed pages every time. On the 2-core dev CPU a
1,041-Gaussian avatar rendered 2.9x faster (512 px, batch 8: 1.77 -> 0.51 s a frame; 288 px, batch 32:
0.58 -> 0.20 s), system time 30 -> 0.8 s and peak memory 5.0 -> 0.8 GB. With gradients every band's
intermediates are kept for the backward pass anyway, and 40 demo-preset training steps took the same
11.7 s either way."""


def _boxes(proj: Projection, width: int, height: int) -> tuple[Tensor, ...]:
    """Pixel boxes of the visible (camera, Gaussian) pairs: cam, gid, x0, w, y0, y1 (inclusive rows).

    Pixel ``j`` is covered when its centre ``j + 0.5`` lies in ``[mx - rx, mx + rx]`` (same for rows)."""
    cam, gid = proj.visible.nonzero(as_tuple=True)
    m = proj.means2d.detach()[cam, gid]
    r = proj.radii[cam, gid].to(m.dtype)
    x0 = torch.ceil(m[:, 0] - r[:, 0] - 0.5).clamp(0, width - 1).long()
    x1 = torch.floor(m[:, 0] + r[:, 0] - 0.5).clamp(-1, width - 1).long()
    y0 = torch.ceil(m[:, 1] - r[:, 1] - 0.5).clamp(0, height - 1).long()
    y1 = torch.floor(m[:, 1] + r[:, 1] - 0.5).clamp(-1, height - 1).long()
    return cam, gid, x0, (x1 - x0 + 1).clamp_min(0), y0, y1


def _pairs(boxes: tuple[Tensor, ...], row_lo: int, row_hi: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Every (camera, Gaussian, pixel) triple of the boxes within rows ``[row_lo, row_hi)``.

    Returns flat int64 tensors: camera [P], gaussian [P], pixel column [P], pixel row [P]."""
    cam, gid, x0, w, y0, y1 = boxes
    y0 = y0.clamp_min(row_lo)
    h = (y1.clamp_max(row_hi - 1) - y0 + 1).clamp_min(0)
    counts = w * h
    owner = torch.repeat_interleave(torch.arange(len(counts), device=counts.device), counts)
    starts = torch.cumsum(counts, 0) - counts
    local = torch.arange(owner.numel(), device=counts.device) - starts[owner]
    wo = w[owner]
    px = x0[owner] + local % wo
    py = y0[owner] + torch.div(local, wo, rounding_mode="floor")
    return cam[owner], gid[owner], px, py


def _composite_rows(proj: Projection, colors: Tensor, rank: Tensor, boxes: tuple[Tensor, ...], width: int,
                    row_lo: int, row_hi: int) -> tuple[Tensor, Tensor]:
    """Accumulated colour [C, rows, W, D] and final transmittance [C, rows, W] of rows ``[row_lo, row_hi)``."""
    C, N = proj.depths.shape
    D = colors.shape[-1]
    dev, dt = colors.device, colors.dtype
    rows = row_hi - row_lo
    cam, gid, px, py = _pairs(boxes, row_lo, row_hi)
    pix = (cam * rows + (py - row_lo)) * width + px
    perm = torch.argsort(pix * N + rank[cam, gid], stable=True)  # by (camera, pixel, depth)
    cam, gid, pix = cam[perm], gid[perm], pix[perm]
    px, py = px[perm], py[perm]

    d = proj.means2d[cam, gid] - torch.stack([px, py], -1).to(proj.means2d.dtype) - 0.5
    con = proj.conics[cam, gid]
    sigma = 0.5 * (con[:, 0] * d[:, 0] ** 2 + con[:, 2] * d[:, 1] ** 2) + con[:, 1] * d[:, 0] * d[:, 1]
    alpha = torch.clamp_max(proj.opacities[cam, gid] * torch.exp(-sigma), MAX_ALPHA)
    alpha = torch.where((sigma >= 0) & (alpha >= ALPHA_THRESHOLD), alpha, torch.zeros_like(alpha))

    # transmittance before each pair: exp of the exclusive segmented sum of log(1 - alpha)
    l = torch.log1p(-alpha.double())
    cs = torch.cumsum(l, 0)
    n = pix.numel()
    idx = torch.arange(n, device=dev)
    first = torch.ones(n, dtype=torch.bool, device=dev)
    if n > 1:
        first[1:] = pix[1:] != pix[:-1]
    start = torch.cummax(torch.where(first, idx, torch.zeros_like(idx)), 0).values if n else idx
    excl = cs - l - (cs[start] - l[start]) if n else cs
    keep = (excl + l) > math.log(T_MIN)
    vis = (alpha.double() * torch.exp(excl) * keep).to(dt)

    P = C * rows * width
    acc = torch.zeros((P, D), dtype=dt, device=dev).index_add(0, pix, vis.unsqueeze(-1) * colors[cam, gid])
    log_t = torch.zeros(P, dtype=torch.float64, device=dev).index_add(0, pix, l * keep)
    return acc.reshape(C, rows, width, D), torch.exp(log_t).to(dt).reshape(C, rows, width)


def rasterize_projected(proj: Projection, colors: Tensor, width: int, height: int,
                        background: Tensor | None = None, max_pairs: int | None = None) -> tuple[Tensor, Tensor]:
    """Composite projected Gaussians front to back (see the module docstring for the exact rule).

    Args:
        proj: output of :func:`project_gaussians` ([C, N, ...]).
        colors: [N, D] or [C, N, D] colours (any D channels).
        width, height: image size (px).
        background: [D] or [C, D] colour behind the Gaussians; zeros when ``None``.
        max_pairs: when the Gaussians' boxes cover more (Gaussian, pixel) pairs, the image is done
            in bands of rows (pixels are independent, so the result is the same) to bound memory;
            ``None``: :data:`MAX_PAIRS` when gradients are recorded, else :data:`NO_GRAD_MAX_PAIRS`.

    Returns:
        image [C, H, W, D], alpha [C, H, W].
    """
    C, N = proj.depths.shape
    colors = _batch(colors, 2, C)
    dev, dt = colors.device, colors.dtype
    rank = torch.empty((C, N), dtype=torch.int64, device=dev)
    order = torch.argsort(proj.depths.detach(), dim=1, stable=True)
    rank.scatter_(1, order, torch.arange(N, device=dev).expand(C, N).contiguous())
    boxes = _boxes(proj, width, height)
    total = int((boxes[3] * (boxes[5] - boxes[4] + 1).clamp_min(0)).sum())
    if max_pairs is None:
        recording = torch.is_grad_enabled() and (colors.requires_grad or proj.means2d.requires_grad)
        max_pairs = MAX_PAIRS if recording else NO_GRAD_MAX_PAIRS
    bands = max(1, min(height, math.ceil(total / max(1, max_pairs))))
    step = math.ceil(height / bands)
    parts = [_composite_rows(proj, colors, rank, boxes, width, lo, min(lo + step, height))
             for lo in range(0, height, step)]
    acc = torch.cat([p[0] for p in parts], dim=1)
    t_final = torch.cat([p[1] for p in parts], dim=1)
    if background is not None:
        bg = _batch(background.to(dt), 1, C)  # [C, D]
        acc = acc + t_final.unsqueeze(-1) * bg[:, None, None, :]
    return acc, 1.0 - t_final


def render_gaussians_reference(means: Tensor, quats: Tensor | None, scales: Tensor | None, opacities: Tensor,
                               colors: Tensor, viewmats: Tensor, Ks: Tensor, width: int, height: int,
                               background: Tensor | None = None, *, eps2d: float = 0.3, near_plane: float = 0.01,
                               far_plane: float = 1e10, max_pairs: int | None = None,
                               covars: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Render 3D Gaussians with plain torch (differentiable w.r.t. everything but ``Ks``'s culling).

    Args:
        means: [N, 3] or [C, N, 3] world positions (metres).
        quats: [N, 4] or [C, N, 4] wxyz rotations.
        scales: [N, 3] or [C, N, 3] standard deviations (metres).
        opacities: [N] or [C, N] in 0..1.
        colors: [N, D] or [C, N, D] colours.
        viewmats: [4, 4] or [C, 4, 4] world-to-camera, OpenCV (see :func:`viewmat_from_rt` for R, t).
        Ks: [3, 3] or [C, 3, 3] pixel intrinsics.
        width, height: image size (px).
        background: [D] or [C, D]; black when ``None``.
        eps2d: 2D dilation (px²), 0.3 like 3DGS and gsplat.
        near_plane, far_plane: depth range (metres).
        max_pairs: memory bound, see :func:`rasterize_projected`.
        covars: optional [N, 3, 3] or [C, N, 3, 3] covariances instead of ``quats`` and ``scales``
            (:func:`project_gaussians`).

    Returns:
        image [H, W, D] and alpha [H, W] when no input was batched, else [C, H, W, D] and [C, H, W].
    """
    sizes = [x.shape[0] for x, d in ((means, 2), (viewmats, 2), (Ks, 2), (colors, 2), (opacities, 1)) if x.dim() > d]
    batched = bool(sizes)
    if batched and viewmats.dim() == 2:
        viewmats = viewmats.expand(sizes[0], 4, 4)
    proj = project_gaussians(means, quats, scales, opacities, viewmats, Ks, width, height, eps2d=eps2d,
                             near_plane=near_plane, far_plane=far_plane, covars=covars)
    C = proj.depths.shape[0]
    if colors.dim() == 3 and colors.shape[0] != C:
        raise ValueError(f"colors has {colors.shape[0]} cameras, the other inputs {C}")
    image, alpha = rasterize_projected(proj, colors, width, height, background, max_pairs)
    if batched:
        return image, alpha
    return image[0], alpha[0]
