"""Pinhole cameras: OpenCV projection and metrical-tracker's PyTorch3D camera fields.

**OpenCV convention** (ours, and the ``opencv`` block of a ``.frame`` file): a world point ``X``
(metres) goes to camera coordinates ``x_cam = R @ X + t`` (+x right, +y down, +z forward, into
the scene), then to pixels ``u = fx * x/z + cx``, ``v = fy * y/z + cy``. Pixel coordinates are
continuous: the image spans ``[0, W] x [0, H]`` and the centre of pixel (row ``i``, column ``j``)
is ``(j + 0.5, i + 0.5)``, the convention of :mod:`stages.face.raster`, of MediaPipe
(``x_norm * W``) and of gsplat; a centred camera has ``(cx, cy) = (W/2, H/2)``.

**PyTorch3D convention** (the ``camera`` block of a ``.frame`` file: ``R [1,6]``, ``t [1,3]``,
``fl [1,1]``, ``pp [1,2]``), facts taken from PyTorch3D's ``cameras_from_opencv_projection``:

- Row vectors: ``X_view = X_world @ R_p3d + T_p3d``; view space has +x left, +y up, +z forward.
  So ``R_p3d = (F @ R_cv)^T`` and ``T_p3d = F @ t_cv`` with ``F = diag(-1, -1, 1)``.
- NDC: with ``s = min(H, W) / 2``, ``fl = f_px / s`` and ``pp = -(c_px - (W/2, H/2)) / s``;
  a view point projects to ``x_ndc = fl * X/Z + pp_x`` and to the pixel ``u = W/2 - s * x_ndc``
  (same for ``y`` with ``H``). For a 512x512 image ``s = 256``.
- ``R`` is stored in 6D, PyTorch3D's ``matrix_to_rotation_6d`` (first two rows, see
  :mod:`stages.face.rotation`) of ``R_p3d``.

Everything is batched over a leading ``B``; tensors may be float32 or float64, CPU or CUDA.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from stages.face.rotation import matrix_to_rotation_6d, rotation_6d_to_matrix

_FLIP_XY = (-1.0, -1.0, 1.0)


def intrinsics(fx: Tensor | float, fy: Tensor | float, cx: Tensor | float, cy: Tensor | float,
               *, batch: int | None = None, dtype: torch.dtype = torch.float32,
               device: torch.device | str | None = None) -> Tensor:
    """Build ``K [B,3,3]`` (pixels) from focal lengths and principal point (scalars or ``[B]``)."""
    vals = [torch.as_tensor(v, dtype=dtype, device=device) for v in (fx, fy, cx, cy)]
    n = batch if batch is not None else max(int(v.numel()) for v in vals)
    fx_, fy_, cx_, cy_ = (v.reshape(-1).expand(n) for v in vals)
    K = torch.zeros(n, 3, 3, dtype=dtype, device=device)
    K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2], K[:, 2, 2] = fx_, fy_, cx_, cy_, 1.0
    return K


def world_to_camera(points: Tensor, R: Tensor, t: Tensor) -> Tensor:
    """``points [B,N,3]`` world -> ``[B,N,3]`` OpenCV camera coordinates ``R X + t`` (metres)."""
    return points @ R.transpose(-1, -2) + t[:, None, :]


def project(points: Tensor, K: Tensor, R: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """Project world points into pixels with an OpenCV pinhole camera.

    Args:
        points: ``[B,N,3]`` world points, metres.
        K: ``[B,3,3]`` intrinsics in pixels (skew ``K[0,1]`` is honoured).
        R: ``[B,3,3]`` world-to-camera rotation.
        t: ``[B,3]`` world-to-camera translation, metres.

    Returns:
        ``(pixels [B,N,2], depth [B,N])``: ``(u, v)`` in pixels and the camera-space ``z`` in
        metres (positive in front of the camera). Points with ``z <= 0`` give meaningless pixels;
        check ``depth``.
    """
    cam = world_to_camera(points, R, t)
    z = cam[..., 2]
    xy = cam[..., :2] / z[..., None]
    u = K[:, None, 0, 0] * xy[..., 0] + K[:, None, 0, 1] * xy[..., 1] + K[:, None, 0, 2]
    v = K[:, None, 1, 1] * xy[..., 1] + K[:, None, 1, 2]
    return torch.stack((u, v), dim=-1), z


@dataclass
class Pytorch3dCamera:
    """metrical-tracker's ``camera`` block: a PyTorch3D ``PerspectiveCameras`` in NDC.

    Attributes:
        R: ``[B,6]`` 6D rotation (first two rows of ``R_p3d``; row-vector convention).
        t: ``[B,3]`` translation ``T_p3d``, metres.
        fl: ``[B,1]`` focal length in NDC units (``[B,2]`` if fx and fy differ).
        pp: ``[B,2]`` principal point in NDC units.
    """

    R: Tensor
    t: Tensor
    fl: Tensor
    pp: Tensor


def _image_wh(image_size: tuple[int, int] | Tensor, like: Tensor) -> Tensor:
    """``(H, W)`` or ``[B,2]`` (H, W) -> ``[B or 1, 2]`` (W, H) in ``like``'s dtype/device."""
    hw = torch.as_tensor(image_size, dtype=like.dtype, device=like.device).reshape(-1, 2)
    return hw.flip(-1)


def opencv_to_pytorch3d(K: Tensor, R: Tensor, t: Tensor,
                        image_size: tuple[int, int] | Tensor) -> Pytorch3dCamera:
    """OpenCV ``K [B,3,3]`` (px), ``R [B,3,3]``, ``t [B,3]`` and ``image_size`` ``(H, W)`` ->
    the PyTorch3D camera fields metrical-tracker stores. ``fl`` is ``[B,1]`` when ``fx == fy``
    (to 1e-6 relative), else ``[B,2]``."""
    wh = _image_wh(image_size, K)
    scale = wh.min(dim=-1, keepdim=True).values / 2.0                  # [B,1]
    focal = torch.stack((K[:, 0, 0], K[:, 1, 1]), dim=-1)              # [B,2] px
    fl = focal / scale
    if torch.allclose(fl[:, 0], fl[:, 1], rtol=1e-6, atol=0.0):
        fl = fl[:, :1]
    pp = -(K[:, :2, 2] - wh / 2.0) / scale
    flip = torch.tensor(_FLIP_XY, dtype=R.dtype, device=R.device)
    R_p3d = (flip[:, None] * R).transpose(-1, -2)
    T_p3d = flip * t
    return Pytorch3dCamera(R=matrix_to_rotation_6d(R_p3d), t=T_p3d, fl=fl, pp=pp)


def pytorch3d_to_opencv(cam: Pytorch3dCamera,
                        image_size: tuple[int, int] | Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Inverse of :func:`opencv_to_pytorch3d`: -> ``(K [B,3,3] px, R [B,3,3], t [B,3])``.

    ``cam.R`` is Gram-Schmidt-orthonormalised on the way (a 6D vector from an optimiser need
    not be exactly orthonormal)."""
    R_p3d = rotation_6d_to_matrix(cam.R)
    flip = torch.tensor(_FLIP_XY, dtype=R_p3d.dtype, device=R_p3d.device)
    R = flip[:, None] * R_p3d.transpose(-1, -2)
    t = flip * cam.t
    wh = _image_wh(image_size, R_p3d)
    scale = wh.min(dim=-1, keepdim=True).values / 2.0
    focal = (cam.fl * scale).expand(-1, 2) if cam.fl.shape[-1] == 1 else cam.fl * scale
    c = -cam.pp * scale + wh / 2.0
    K = torch.zeros_like(R)
    K[:, 0, 0], K[:, 1, 1] = focal[:, 0], focal[:, 1]
    K[:, 0, 2], K[:, 1, 2], K[:, 2, 2] = c[:, 0], c[:, 1], 1.0
    return K, R, t


def project_pytorch3d(points: Tensor, cam: Pytorch3dCamera,
                      image_size: tuple[int, int] | Tensor) -> tuple[Tensor, Tensor]:
    """Project world points ``[B,N,3]`` the way PyTorch3D's ``PerspectiveCameras`` + its
    NDC-to-screen transform do -> ``(pixels [B,N,2], depth [B,N])``; written directly from the
    PyTorch3D convention (row vectors, +x left, +y up), so it checks the conversions above."""
    R_p3d = rotation_6d_to_matrix(cam.R)
    view = points @ R_p3d + cam.t[:, None, :]
    z = view[..., 2]
    fl = cam.fl[:, None, :]                                              # [B,1,1|2]
    ndc = fl * view[..., :2] / z[..., None] + cam.pp[:, None, :]
    wh = _image_wh(image_size, points)
    scale = wh.min(dim=-1, keepdim=True).values / 2.0
    pix = wh[:, None, :] / 2.0 - scale[:, None, :] * ndc
    return pix, z
