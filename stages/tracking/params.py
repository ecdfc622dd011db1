"""Per-frame tracking parameters and camera intrinsics, as plain containers of batched tensors.

Conventions:

- Head pose lives in the camera: ``R`` is the OpenCV world-to-camera rotation (camera looks down
  +z, image y down), ``t`` the translation in metres: ``x_cam = R @ x_world + t``. FLAME's global
  and neck rotations stay identity.
- Rotations (``jaw``, each eye, the camera) are 6D vectors (first two rows of the matrix, the
  PyTorch3D / metrical-tracker convention of :mod:`stages.face.rotation`).
- Intrinsics and landmarks are in continuous pixel coordinates of the 512x512 crop (x right,
  y down, the image spans 0..512, pixel centres at +0.5): what MediaPipe's normalised points
  times 512 give, what :mod:`stages.face.raster` rasterises and what :mod:`stages.face.synth`
  renders with. The principal point of a centred camera is (256, 256).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch
from torch import Tensor

from stages.face.camera import world_to_camera
from stages.face.rotation import identity_6d, matrix_to_rotation_6d, rotation_6d_to_matrix

# FLAME's frame (y up, z towards the viewer) seen by an OpenCV camera straight in front of the face.
FRONTAL_R = ((1.0, 0.0, 0.0), (0.0, -1.0, 0.0), (0.0, 0.0, -1.0))

PARAM_DIMS = {"exp": 100, "jaw": 6, "eyes": 12, "eyelids": 2, "rot": 6, "t": 3}
"""Width of each per-frame parameter."""


@dataclass
class FrameParams:
    """Per-frame parameters of ``N`` frames (float32 tensors, one row per frame).

    Attributes:
        exp: [N, 100] FLAME expression coefficients.
        jaw: [N, 6] jaw rotation (6D).
        eyes: [N, 12] right then left eyeball rotation (6D each).
        eyelids: [N, 2] eyelid closure (left, right; metrical-tracker's order).
        rot: [N, 6] camera rotation R (6D; OpenCV world-to-camera).
        t: [N, 3] camera translation, metres.
    """

    exp: Tensor
    jaw: Tensor
    eyes: Tensor
    eyelids: Tensor
    rot: Tensor
    t: Tensor

    @classmethod
    def neutral(cls, n: int, *, distance: float = 1.0, device: torch.device | str = "cpu") -> "FrameParams":
        """Neutral face, frontal camera at ``distance`` metres on the optical axis."""
        r = matrix_to_rotation_6d(torch.tensor(FRONTAL_R, device=device)).expand(n, 6).clone()
        t = torch.zeros(n, 3, device=device)
        t[:, 2] = distance
        return cls(exp=torch.zeros(n, 100, device=device), jaw=identity_6d(n, device=device),
                   eyes=identity_6d(n, device=device).repeat(1, 2), eyelids=torch.zeros(n, 2, device=device),
                   rot=r, t=t)

    def __len__(self) -> int:
        return int(self.exp.shape[0])

    def names(self) -> list[str]:
        return [f.name for f in fields(self)]

    def as_dict(self) -> dict[str, Tensor]:
        return {k: getattr(self, k) for k in self.names()}

    def map(self, fn) -> "FrameParams":  # noqa: ANN001 - any Tensor -> Tensor function
        """A new ``FrameParams`` with ``fn`` applied to every tensor."""
        return FrameParams(**{k: fn(v) for k, v in self.as_dict().items()})

    def select(self, index: Tensor | slice) -> "FrameParams":
        return self.map(lambda v: v[index])

    def detach(self) -> "FrameParams":
        return self.map(lambda v: v.detach().clone())

    def to(self, device: torch.device | str) -> "FrameParams":
        return self.map(lambda v: v.to(device))

    @property
    def R(self) -> Tensor:
        """[N, 3, 3] camera rotation matrices."""
        return rotation_6d_to_matrix(self.rot)

    @classmethod
    def cat(cls, parts: list["FrameParams"]) -> "FrameParams":
        return cls(**{k: torch.cat([getattr(p, k) for p in parts]) for k in PARAM_DIMS})

    def to_numpy(self) -> dict[str, np.ndarray]:
        """``{name: float32 array}``, rotations re-orthonormalised (6D of a proper rotation)."""
        out = {k: v.detach().float().cpu().numpy() for k, v in self.as_dict().items()}
        for k in ("jaw", "rot"):
            out[k] = matrix_to_rotation_6d(rotation_6d_to_matrix(torch.from_numpy(out[k]))).numpy()
        eyes = torch.from_numpy(out["eyes"]).reshape(-1, 2, 6)
        out["eyes"] = matrix_to_rotation_6d(rotation_6d_to_matrix(eyes)).reshape(-1, 12).numpy()
        return out

    @classmethod
    def from_numpy(cls, d: dict[str, np.ndarray], device: torch.device | str = "cpu") -> "FrameParams":
        return cls(**{k: torch.as_tensor(np.asarray(d[k], dtype=np.float32), device=device) for k in PARAM_DIMS})


@dataclass
class Intrinsics:
    """Pinhole intrinsics in pixels.

    Attributes:
        focal: [2] (fx, fy) pixels.
        pp: [2] (cx, cy) principal point, pixels.
        size: (h, w) image size in pixels.
    """

    focal: Tensor
    pp: Tensor
    size: tuple[int, int] = (512, 512)

    def K(self) -> Tensor:
        """[3, 3] OpenCV camera matrix."""
        K = torch.zeros(3, 3, dtype=self.focal.dtype, device=self.focal.device)
        K[0, 0], K[1, 1] = self.focal[0], self.focal[1]
        K[0, 2], K[1, 2] = self.pp[0], self.pp[1]
        K[2, 2] = 1.0
        return K


def project(points: Tensor, R: Tensor, t: Tensor, focal: Tensor, pp: Tensor) -> tuple[Tensor, Tensor]:
    """Pinhole projection of world points through per-frame OpenCV cameras.

    Args:
        points: [B, P, 3] world points, metres.
        R: [B, 3, 3] world-to-camera rotations; t: [B, 3] translations, metres.
        focal: [2] or [B, 2] (fx, fy) pixels; pp: [2] or [B, 2] principal point, pixels.

    Returns:
        (pix [B, P, 2] pixel coordinates, cam [B, P, 3] camera-space points in metres).
    """
    cam = world_to_camera(points, R, t)
    z = cam[..., 2:3].clamp_min(1e-4)
    pix = cam[..., :2] / z * focal.reshape(-1, 1, 2) + pp.reshape(-1, 1, 2)
    return pix, cam
