"""A toy deforming face and a synthetic FlashAvatar dataset rendered from it (for tests and benchmarks).

:class:`ToyFace` has the ``stages.face.FLAME`` forward signature: a UV sphere of radius 0.1 m whose
surface bulges with the first expression coefficients and whose lower front part rotates with the
jaw (6D rotation). :func:`write_synthetic_dataset` renders a textured version of it (dense
Gaussians, :mod:`stages.gauss.render_ref`) under varying expression, jaw and head pose, and writes
``imgs/``, ``alpha/``, ``parsing/`` and ``checkpoint/*.frame`` exactly as the assemble stage does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from stages.gauss.render_ref import render_gaussians_reference, viewmat_from_rt
from stages.gauss.sampling import area_samples, surface_points
from stages.gauss.surface import COND_DIM, FaceSurface, neutral_condition

RADIUS = 0.1
CAMERA_DISTANCE = 0.6


def rotation_6d_to_matrix(d6: Tensor) -> Tensor:
    """[..., 6] (first two rows, PyTorch3D convention) -> [..., 3, 3] by Gram-Schmidt."""
    a1, a2 = d6[..., :3], d6[..., 3:]
    b1 = a1 / a1.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    a2 = a2 - (b1 * a2).sum(-1, keepdim=True) * b1
    b2 = a2 / a2.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    b3 = torch.linalg.cross(b1, b2, dim=-1)
    return torch.stack([b1, b2, b3], dim=-2)


def uv_sphere(n_lat: int = 16, n_lon: int = 32) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """A UV sphere of radius :data:`RADIUS` (OpenCV axes: y down, the face looks towards -z).

    Returns vertices [V, 3], faces [F, 3], vt [V, 2], ft [F, 3] (one UV per vertex; the seam
    column and the poles are duplicated so UVs are continuous)."""
    lat = torch.linspace(0, math.pi, n_lat + 1, dtype=torch.float64)
    lon = torch.linspace(0, 2 * math.pi, n_lon + 1, dtype=torch.float64)
    la, lo = torch.meshgrid(lat, lon, indexing="ij")
    verts = torch.stack([torch.sin(la) * torch.sin(lo), -torch.cos(la), -torch.sin(la) * torch.cos(lo)], -1) * RADIUS
    vt = torch.stack([lo / (2 * math.pi), la / math.pi], -1)
    idx = torch.arange((n_lat + 1) * (n_lon + 1)).reshape(n_lat + 1, n_lon + 1)
    a, b, c, d = idx[:-1, :-1], idx[:-1, 1:], idx[1:, :-1], idx[1:, 1:]
    faces = torch.cat([torch.stack([a, c, b], -1).reshape(-1, 3), torch.stack([b, c, d], -1).reshape(-1, 3)])
    return verts.float().reshape(-1, 3), faces, vt.float().reshape(-1, 2), faces.clone()


@dataclass
class ToyOutput:
    """``vertices`` [B, V, 3] metres."""

    vertices: Tensor


class ToyFace(nn.Module):
    """A face-model stand-in with FLAME's call signature (shape, expression, jaw, eyes, eyelids used
    as described in the module docstring; ``shape[:, 0]`` scales the head by ``1 + 0.1 shape0``)."""

    def __init__(self, n_lat: int = 16, n_lon: int = 32):
        super().__init__()
        v, f, vt, ft = uv_sphere(n_lat, n_lon)
        self.register_buffer("v_template", v)
        self.register_buffer("faces", f)
        self.vt, self.ft = vt, ft
        n = v / RADIUS
        bases = torch.stack([n[:, 0] * n[:, 1], n[:, 1] ** 2 - 0.3, torch.sin(3 * n[:, 0]) * n[:, 2], n[:, 2] ** 3], 1)
        self.register_buffer("normals", n)
        self.register_buffer("exp_bases", bases * 0.01)  # [V, 4] metres per unit
        self.register_buffer("jaw_weight", torch.sigmoid((v[:, 1] - 0.02) / 0.01) * (v[:, 2] < 0.0).float())
        self.register_buffer("jaw_pivot", torch.tensor([0.0, 0.0, 0.04]))

    def forward(self, shape: Tensor, expression: Tensor, jaw: Tensor, eyes: Tensor | None = None,
                neck: Tensor | None = None, rotation: Tensor | None = None, eyelids: Tensor | None = None,
                translation: Tensor | None = None) -> ToyOutput:
        v = self.v_template.unsqueeze(0) * (1 + 0.1 * shape[:, :1, None])
        disp = (expression[:, None, :4] * self.exp_bases.unsqueeze(0)).sum(-1, keepdim=True)  # [B, V, 1]
        v = v + disp * self.normals
        R = rotation_6d_to_matrix(jaw)  # [B, 3, 3]
        vp = v - self.jaw_pivot
        rotated = (R.unsqueeze(1) @ vp.unsqueeze(-1)).squeeze(-1) + self.jaw_pivot
        w = self.jaw_weight[None, :, None]
        return ToyOutput(vertices=v + w * (rotated - v))


def toy_surface(shape0: float = 0.0) -> FaceSurface:
    """A :class:`FaceSurface` over :class:`ToyFace` (with UVs)."""
    face = ToyFace()
    shape = torch.zeros(300)
    shape[0] = shape0
    return FaceSurface(face, face.faces, shape, face.vt, face.ft)


def texture(vt_uv: Tensor) -> Tensor:
    """Albedo of the toy head at UV coordinates [N, 2] -> [N, 3] in 0..1 (stripes + checker + gradient)."""
    u, v = vt_uv.unbind(-1)
    checker = ((torch.floor(u * 8) + torch.floor(v * 6)) % 2).float()
    r = 0.35 + 0.45 * checker
    g = 0.3 + 0.4 * torch.sin(u * 2 * math.pi) ** 2
    b = 0.25 + 0.5 * v
    return torch.stack([r, g, b], -1).clamp(0, 1)


def head_pose(yaw: float, pitch: float) -> tuple[Tensor, Tensor]:
    """OpenCV extrinsics of a camera at :data:`CAMERA_DISTANCE` in front of a head turned by
    ``yaw``/``pitch`` radians: R [3, 3], t [3]."""
    cy, sy, cp, sp = math.cos(yaw), math.sin(yaw), math.cos(pitch), math.sin(pitch)
    Ry = torch.tensor([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    Rx = torch.tensor([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    return (Rx @ Ry).float(), torch.tensor([0.0, 0.0, CAMERA_DISTANCE])


def frame_conditions(n: int, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """Smooth per-frame conditions [n, 120], head rotations R [n, 3, 3] and translations t [n, 3]."""
    g = torch.Generator().manual_seed(seed)
    ph = torch.rand(8, generator=g) * 2 * math.pi
    k = torch.arange(n, dtype=torch.float32)
    cond = neutral_condition(n)
    for j in range(4):
        cond[:, j] = 1.5 * torch.sin(k * (0.21 + 0.07 * j) + ph[j])
    open_ = 0.25 * (1 + torch.sin(k * 0.33 + ph[4]))  # jaw angle in radians, 0..0.5
    c, s = torch.cos(open_), torch.sin(open_)
    cond[:, 100:106] = torch.stack([torch.ones(n), torch.zeros(n), torch.zeros(n),
                                    torch.zeros(n), c, -s], -1)  # rotation about x, first two rows
    Rs, ts = zip(*(head_pose(0.35 * math.sin(i * 0.13 + ph[5].item()), 0.15 * math.sin(i * 0.17 + ph[6].item()))
                   for i in range(n)))
    return cond, torch.stack(Rs), torch.stack(ts)


def write_synthetic_dataset(root: str | Path, n_frames: int, image_size: int = 64, seed: int = 0,
                            n_gaussians: int = 6000, background_rgb: tuple[int, int, int] = (60, 80, 150),
                            device: str = "cpu") -> Path:
    """Render the textured toy head for ``n_frames`` frames and write the FlashAvatar layout.

    Images are ``image_size`` square (upstream uses 512; the trainer resizes). Checkpoint ``i``
    pairs with image ``i + 1``. The mouth mask marks the lower-front (jaw) region of the head.

    ``device``: where the reference renderer runs (``cuda`` makes 512x512 sets quick).

    Returns ``root``.
    """
    from PIL import Image

    from stages.dataset.frame_file import make_frame, write_frame
    from stages.dataset.layout import DatasetLayout, FRAME_DELTA

    root = Path(root)
    layout = DatasetLayout(root)
    for d in (layout.imgs_dir, layout.alpha_dir, layout.parsing_dir, layout.checkpoint_dir):
        d.mkdir(parents=True, exist_ok=True)
    surf = toy_surface()
    face: ToyFace = surf.face_model  # type: ignore[assignment]
    g = torch.Generator().manual_seed(seed + 1)
    fidx, bary = area_samples(face.v_template, face.faces, n_gaussians, generator=g)
    uv = surface_points(face.vt, face.faces, fidx, bary)
    neutral = surf.neutral()
    canon = surface_points(neutral, face.faces, fidx, bary)
    mouth = ((canon[:, 1] > 0.025) & (canon[:, 1] < 0.06) & (canon[:, 2] < -0.06)).float()
    rgb = texture(uv)
    rgb[mouth > 0] = torch.tensor([0.6, 0.1, 0.15])
    colors = torch.cat([rgb, mouth[:, None]], -1)
    spacing = math.sqrt(4 * math.pi * RADIUS ** 2 / n_gaussians)
    scales = torch.full((n_gaussians, 3), spacing * 0.6)
    quats = torch.tensor([1.0, 0, 0, 0]).expand(n_gaussians, 4)
    opac = torch.full((n_gaussians,), 0.98)
    cond, Rs, ts = frame_conditions(n_frames, seed)
    f = image_size * 1.6  # about a 35 degree field of view
    K = torch.tensor([[f, 0, image_size / 2], [0, f, image_size / 2], [0, 0, 1.0]])
    shape = surf.shape.numpy()
    bg = torch.tensor(background_rgb, dtype=torch.float32) / 255
    chunk = max(1, int(16 * (64 / image_size) ** 2))
    dev = torch.device(device)
    quats, scales, opac, colors = (x.to(dev) for x in (quats, scales, opac, colors))
    for start in range(0, n_frames, chunk):
        sl = slice(start, min(start + chunk, n_frames))
        verts = surf.vertices(cond[sl])
        means = surface_points(verts, face.faces, fidx, bary).to(dev)
        B = means.shape[0]
        vm = viewmat_from_rt(Rs[sl], ts[sl]).to(dev)
        with torch.no_grad():
            img, alpha = render_gaussians_reference(means, quats.expand(B, -1, -1), scales.expand(B, -1, -1),
                                                    opac.expand(B, -1), colors.expand(B, -1, -1), vm,
                                                    K.to(dev).expand(B, 3, 3), image_size, image_size)
        img, alpha = img.cpu(), alpha.cpu()
        for b in range(B):
            i = start + b
            k = i + FRAME_DELTA
            a = alpha[b].clamp(0, 1)
            photo = img[b, :, :, :3] + (1 - a[..., None]) * bg
            Image.fromarray((photo.clamp(0, 1) * 255).round().byte().numpy()).save(layout.image_path(k), quality=95)
            Image.fromarray((a * 255).round().byte().numpy()).save(layout.alpha_path(k), quality=95)
            Image.fromarray(((a > 0.5) * 255).byte().numpy()).save(layout.neckhead_path(k))
            m = (img[b, :, :, 3] > 0.5 * a.clamp_min(1e-6)) & (a > 0.5)
            Image.fromarray((m * 255).byte().numpy()).save(layout.mouth_path(k))
            c = cond[i].numpy()
            frame = make_frame(i, exp=c[:100], shape=shape, jaw=c[100:106], eyes=c[106:118], eyelids=c[118:120],
                               R=Rs[i].numpy(), t=ts[i].numpy(), K=K.numpy(),
                               camera={"R": np.array([1, 0, 0, 0, 1, 0]), "t": ts[i].numpy(), "fl": [3.2], "pp": [0, 0]},
                               img_size=(image_size, image_size))
            write_frame(layout.frame_path(i), frame)
    assert cond.shape[1] == COND_DIM
    return root


def publish_as_assemble(store, actor: str, dataset_root: str | Path) -> dict[str, str]:
    """Put a dataset folder into ``store`` as the finished output of the assemble stage of ``actor``
    (files under ``actors/<actor>/dataset/``, where assemble writes them, and a matching manifest), so
    the train and render stages can run on it. Returns ``{key: sha256}``."""
    from stages.runner.context import actor_key
    from stages.runner.manifest import MANIFEST, Manifest

    root = Path(dataset_root)
    outputs = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            key = actor_key(actor, "dataset", *p.relative_to(root).parts)
            outputs[key] = store.put_file(key, p)
    m = Manifest(stage="assemble", actor=actor, inputs={}, config_digest="synthetic", config={}, outputs=outputs)
    store.put_json(actor_key(actor, "assemble", MANIFEST), m.to_dict())
    return outputs
