"""FLAME texture space (``FLAME_texture.npz``) as a module, and UV look-ups on rendered pixels.

File facts (read from metrical-tracker @ c2a5172 and DECA; see the shared upstream-formats doc):

- ``mean [H,W,3]`` and ``tex_dir [H,W,3,K]`` (FLAME's file: 512x512, K = 200) in **0..255 units**
  with the colour channels stored **BGR**. The albedo of coefficients ``c [K]`` is
  ``(mean + tex_dir @ c) / 255`` with the channels reversed to RGB. metrical-tracker uses the first
  140 components (``tex_params``), which is the ``.frame``'s ``flame.tex [1,140]``; coefficients
  here are in the same units, so a ``.frame``'s ``tex`` means the same in both tools. A file whose
  mean never exceeds 2 is taken to be in 0..1 units already (no division by 255).
- The maps are images in UV space: row 0 is ``v = 1`` (UV ``v`` points up), column 0 is
  ``u = 0``. A UV point is looked up with ``grid_sample(align_corners=False)`` at
  ``(2u - 1, 1 - 2v)`` (metrical-tracker's renderer does the same flip).
- ``vt [T,2]``, ``ft [F,3]``: the UV layout, in the npz or in ``head_template.obj``
  (:func:`stages.face.flame_file.read_texture_uv`); ``ft`` row ``f`` gives the UV corners of the
  mesh's triangle ``f``.

The maps are resampled once at load (area filter) to ``size`` texels per side (default 256): the
photometric term works at about 128 px, so 512 texels would only add cost.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stages.errors import bad_input
from stages.face import flame_file

N_COMPONENTS = 140
"""Texture coefficients kept by default (metrical-tracker's ``tex_params``, the ``.frame``'s ``tex``)."""

_FIX = "give FLAME_texture.npz (FLAME texture space from the FLAME website)"


@dataclass
class TextureData:
    """A texture space read from a file.

    Attributes:
        mean: float32 [size, size, 3] RGB albedo 0..1 (row 0 = v = 1).
        basis: float32 [size, size, 3, K] RGB albedo per unit coefficient.
        vt, ft: float32 [T, 2] / int64 [F, 3] UV layout, or None when the file has none.
        value_scale: what the file's values were divided by (255, or 1 for a 0..1 file).
        source_size: (H, W) of the file's maps.
    """

    mean: np.ndarray
    basis: np.ndarray
    vt: np.ndarray | None
    ft: np.ndarray | None
    value_scale: float
    source_size: tuple[int, int]


def _resample(maps: np.ndarray, size: int) -> np.ndarray:
    """[H, W, C] -> [size, size, C] float32 (area filter when shrinking, bilinear when growing)."""
    h, w, c = maps.shape
    if (h, w) == (size, size):
        return np.ascontiguousarray(maps, dtype=np.float32)
    out = np.empty((size, size, c), np.float32)
    mode = "area" if size <= min(h, w) else "bilinear"
    for s in range(0, c, 64):  # channel chunks bound the peak memory (512x512x600 floats in FLAME's file)
        x = torch.from_numpy(np.ascontiguousarray(maps[..., s:s + 64], dtype=np.float32)).permute(2, 0, 1)[None]
        y = F.interpolate(x, size=(size, size), mode=mode, **({} if mode == "area" else {"align_corners": False}))
        out[..., s:s + 64] = y[0].permute(1, 2, 0).numpy()
    return out


def read_flame_texture(path: str | Path, n_components: int = N_COMPONENTS, size: int | None = 256) -> TextureData:
    """Read ``FLAME_texture.npz`` into RGB 0..1 maps of ``size`` texels (``None``: the file's own).

    Keeps the first ``min(n_components, K)`` components.

    Raises:
        BadInput: the file is not a readable texture space (missing/misshaped arrays, non-finite
            values, UV indices out of range), naming the file and the fix.
    """
    path = Path(path)
    flame_file.validate_flame_texture(path)  # headers: keys and shapes
    try:
        with np.load(path, allow_pickle=False) as z:
            mean = np.asarray(z["mean"], np.float32)
            k = min(int(n_components), int(z["tex_dir"].shape[3]))
            tex_dir = z["tex_dir"][..., :k]
    except (OSError, ValueError, KeyError, EOFError) as err:
        raise bad_input(path, f"texture arrays unreadable ({err})", _FIX) from None
    if k < 1:
        raise bad_input(path, "tex_dir has no components", _FIX)
    if not (np.isfinite(mean).all() and np.isfinite(tex_dir).all()):
        raise bad_input(path, "mean or tex_dir holds non-finite values", _FIX)
    h, w = mean.shape[:2]
    scale = 255.0 if float(mean.max()) > 2.0 else 1.0
    size = int(size) if size else max(h, w)
    mean_rgb = _resample(mean[..., ::-1] / scale, size)
    basis = _resample((tex_dir[:, :, ::-1, :] / np.float32(scale)).reshape(h, w, 3 * k), size).reshape(size, size, 3, k)
    uv = flame_file.read_texture_uv(path)
    vt = ft = None
    if uv is not None:
        vt, ft = uv[0].astype(np.float32), uv[1].astype(np.int64)
        if vt.ndim != 2 or vt.shape[1] != 2 or ft.ndim != 2 or ft.shape[1] != 3:
            raise bad_input(path, f"vt {vt.shape} / ft {ft.shape}, expected [T,2] and [F,3]", _FIX)
        if not np.isfinite(vt).all() or (ft.size and (ft.min() < 0 or ft.max() >= len(vt))):
            raise bad_input(path, "ft indexes outside vt (or vt is not finite)", _FIX)
    return TextureData(mean_rgb, basis, vt, ft, scale, (int(h), int(w)))


def uv_layout_problem(n_uv: int, ft_shape: tuple[int, ...], ft_max: int, faces_shape: tuple[int, ...]) -> str:
    """Why a UV layout (``n_uv`` coordinates, corners ``ft`` of shape ``ft_shape`` with largest index
    ``ft_max``) does not fit a mesh whose triangles have shape ``faces_shape``, phrased to follow
    its owner ("the texture ..."); ``""`` when it fits."""
    if tuple(ft_shape) != tuple(faces_shape) or ft_max >= n_uv:
        return f"has a UV layout of {ft_shape[0]} triangles but the face model has {faces_shape[0]}"
    return ""


def write_flame_texture(path: str | Path, mean: np.ndarray, basis: np.ndarray, vt: np.ndarray | None = None,
                        ft: np.ndarray | None = None) -> Path:
    """Write a texture space in FLAME's file convention (0..255 units, BGR) — for tests and stand-ins.

    Args:
        mean: [H, W, 3] RGB albedo 0..1 (row 0 = v = 1). basis: [H, W, 3, K] RGB per unit coefficient.
        vt, ft: optional UV layout stored beside (``[T,2]``, ``[F,3]``).
    """
    arrays = {"mean": (np.asarray(mean, np.float32)[..., ::-1] * 255.0).astype(np.float32),
              "tex_dir": (np.asarray(basis, np.float32)[:, :, ::-1, :] * 255.0).astype(np.float32)}
    if vt is not None and ft is not None:
        arrays["vt"], arrays["ft"] = np.asarray(vt, np.float64), np.asarray(ft, np.int64)
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return Path(path)


class FlameTexture(nn.Module):
    """Linear texture space: ``forward(coeffs [B, K]) -> albedo [B, 3, H, W]`` (RGB, nominally 0..1;
    not clamped, so gradients pass everywhere).

    Buffers: ``mean [3, H, W]``, ``basis [3*H*W, K]`` (albedo per unit coefficient, channel-major),
    ``vt [T, 2]`` float32 and ``ft [F, 3]`` int64 (the UV layout; ``None`` when unknown).
    """

    def __init__(self, data: TextureData, vt: np.ndarray | None = None, ft: np.ndarray | None = None):
        super().__init__()
        size = data.mean.shape[0]
        k = data.basis.shape[3]
        self.register_buffer("mean", torch.from_numpy(np.ascontiguousarray(data.mean.transpose(2, 0, 1))).float())
        basis = np.ascontiguousarray(data.basis.transpose(2, 0, 1, 3)).reshape(3 * size * size, k)
        self.register_buffer("basis", torch.from_numpy(basis).float())
        vt = data.vt if vt is None else vt
        ft = data.ft if ft is None else ft
        self.register_buffer("vt", None if vt is None else torch.as_tensor(np.asarray(vt), dtype=torch.float32))
        self.register_buffer("ft", None if ft is None else torch.as_tensor(np.asarray(ft), dtype=torch.int64))
        self.value_scale = data.value_scale

    @classmethod
    def from_file(cls, path: str | Path, n_components: int = N_COMPONENTS, size: int | None = 256,
                  vt: np.ndarray | None = None, ft: np.ndarray | None = None) -> "FlameTexture":
        """Load ``FLAME_texture.npz`` (see :func:`read_flame_texture`); ``vt``/``ft`` given here
        (e.g. the face model's) are used where the file has none."""
        data = read_flame_texture(path, n_components, size)
        if data.vt is not None:
            vt, ft = data.vt, data.ft
        return cls(data, vt, ft)

    @property
    def n_components(self) -> int:
        return int(self.basis.shape[1])

    @property
    def size(self) -> int:
        return int(self.mean.shape[1])

    @property
    def has_uv(self) -> bool:
        return self.vt is not None and self.ft is not None

    def layout_problem(self, faces) -> str:  # noqa: ANN001 - array or tensor [F, 3]
        """Why this texture cannot shade a mesh with triangles ``faces`` [F, 3], phrased to follow
        its owner (see :func:`uv_layout_problem`); ``""`` when it can."""
        if not self.has_uv:
            return "has no UV layout (vt/ft), nor has the face model"
        return uv_layout_problem(self.vt.shape[0], tuple(self.ft.shape), int(self.ft.max()), tuple(faces.shape))

    def forward(self, coeffs: Tensor) -> Tensor:
        """Albedo maps ``[B, 3, H, W]`` of coefficients ``[B, K]`` (``mean + basis @ c``)."""
        b = coeffs.shape[0]
        flat = (coeffs.to(self.basis) @ self.basis.T).view(b, 3, self.size, self.size)
        return self.mean[None] + flat

    def fit_colours(self, uv: Tensor, colours: Tensor, weights: Tensor, ridge: float = 1e-2) -> Tensor:
        """Coefficients ``[K]`` whose albedo best matches ``colours [N, 3]`` at ``uv [N, 2]``
        (weighted ridge least squares; ``weights [N]`` >= 0). A starting point for fits."""
        n = uv.shape[0]
        basis_maps = self.basis.T.reshape(1, self.n_components * 3, self.size, self.size)
        a = sample_uv(basis_maps, uv.view(1, n, 1, 2))[0, :, 0]  # [N, 3K] channel-minor per component
        a = a.view(n, self.n_components, 3).permute(0, 2, 1).reshape(n * 3, self.n_components)
        m = sample_uv(self.mean[None], uv.view(1, n, 1, 2))[0, :, 0].reshape(n * 3)
        w = weights.to(a).repeat_interleave(3)
        ata = a.T @ (a * w[:, None])
        lam = ridge * ata.diagonal().mean().clamp_min(1e-12)
        rhs = a.T @ (w * (colours.to(a).reshape(-1) - m))
        return torch.linalg.solve(ata + lam * torch.eye(self.n_components, dtype=a.dtype, device=a.device), rhs)


def _grid(uv: Tensor) -> Tensor:
    """UV (v up) -> ``grid_sample`` coordinates (row 0 = v = 1)."""
    return torch.stack((uv[..., 0] * 2.0 - 1.0, 1.0 - uv[..., 1] * 2.0), dim=-1)


def sample_uv(maps: Tensor, uv: Tensor) -> Tensor:
    """Bilinear look-up of UV maps, border-clamped.

    Args:
        maps: [B or 1, C, H, W] (row 0 = v = 1). uv: [B, P, Q, 2] (u right, v up, 0..1).

    Returns:
        [B, P, Q, C]. A single map (batch 1) serves every batch row without a copy.
    """
    b, p, q, _ = uv.shape
    grid = _grid(uv).to(maps.dtype)
    if maps.shape[0] == 1 and b != 1:
        out = F.grid_sample(maps, grid.reshape(1, b * p, q, 2), mode="bilinear", padding_mode="border",
                            align_corners=False)  # [1, C, B*P, Q]
        return out[0].view(-1, b, p, q).permute(1, 2, 3, 0)
    out = F.grid_sample(maps, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.permute(0, 2, 3, 1)


def sample_uv_reference(maps: Tensor, uv: Tensor) -> Tensor:
    """Plain-torch oracle of :func:`sample_uv` (explicit texel indices and bilinear weights)."""
    b = uv.shape[0]
    _, c, h, w = maps.shape
    maps = maps.expand(b, -1, -1, -1)
    x = (uv[..., 0] * w - 0.5).clamp(0, w - 1)  # texel centres at integer + 0.5 of u * W
    y = ((1.0 - uv[..., 1]) * h - 0.5).clamp(0, h - 1)
    x0, y0 = x.floor().long(), y.floor().long()
    x1, y1 = (x0 + 1).clamp(max=w - 1), (y0 + 1).clamp(max=h - 1)
    fx, fy = (x - x0).unsqueeze(-1), (y - y0).unsqueeze(-1)
    bi = torch.arange(b, device=uv.device).view(b, *([1] * (uv.dim() - 2)))
    img = maps.permute(0, 2, 3, 1)  # [B, H, W, C]

    def at(yy: Tensor, xx: Tensor) -> Tensor:
        return img[bi, yy, xx]

    return (at(y0, x0) * (1 - fx) * (1 - fy) + at(y0, x1) * fx * (1 - fy)
            + at(y1, x0) * (1 - fx) * fy + at(y1, x1) * fx * fy)


def pixel_uv(fragments, vt: Tensor, ft: Tensor) -> Tensor:  # noqa: ANN001 - stages.face.raster.Fragments
    """UV ``[B, H, W, 2]`` of every pixel: the visible triangle's UV corners (``vt[ft[face]]``)
    weighted by the fragments' barycentrics (screen-space, as the rest of the photometric term);
    zeros on background. Differentiable through ``fragments.bary``."""
    from stages.face.raster import interpolate

    return interpolate(vt.to(fragments.bary.dtype), ft, fragments)


def standin_texture_space(size: int = 64, n_components: int = N_COMPONENTS, seed: int = 0
                          ) -> tuple[np.ndarray, np.ndarray]:
    """A licence-free texture space for tests and benchmarks: ``(mean [size,size,3], basis
    [size,size,3,K])`` RGB 0..1 units.

    The mean is a smooth skin tone; component ``k`` is one cell of a 10 x 14 grid over UV (cells
    numbered row-major from ``v = 1``, ``u = 0``) times a random colour of about 0.1 per unit
    coefficient, so every coefficient is observable wherever its cell is seen.
    """
    rng = np.random.default_rng(seed)
    rows, cols = 10, 14
    yy, xx = np.mgrid[:size, :size]
    u, v = (xx + 0.5) / size, 1.0 - (yy + 0.5) / size
    mean = np.stack([0.62 + 0.12 * u, 0.48 + 0.08 * v, 0.40 + 0.05 * u * v], -1).astype(np.float32)
    cell = np.minimum(yy * rows // size, rows - 1) * cols + np.minimum(xx * cols // size, cols - 1)  # [size, size]
    basis = np.zeros((size, size, 3, n_components), np.float32)
    colours = rng.normal(size=(n_components, 3)) * 0.06 + 0.06 * np.sign(rng.normal(size=(n_components, 1)))
    for k in range(n_components):
        basis[cell == k % (rows * cols), :, k] = colours[k]
    return mean, basis
