"""The photometric term: render the face with an albedo under 9-coefficient spherical-harmonics
lighting through the mesh rasteriser, compare with the frame inside the face region.

Two appearance modes (the same shading, rasteriser and loss):

- **per-vertex albedo** (``albedo [V, 3]``, optimised as ``albedo``): used when the user supplied
  no FLAME texture space; calibrate estimates it from the keyframes.
- **FLAME texture space** (:class:`UVAlbedo`): the albedo is looked up per pixel in a UV map, the
  map being ``FlameTexture(tex)`` (coefficients ``tex [K]``, optimised as ``tex``, with a ridge
  prior) or a fixed map baked from them (track). Per pixel: UV from the visible triangle's UV
  corners (``vt[ft[face]]``) and its barycentrics, then a bilinear ``grid_sample``.

Shading is Gouraud in both modes: SH irradiance of the vertex normals, interpolated per pixel; the
per-vertex mode interpolates ``albedo * shading`` per vertex, the texture mode multiplies the
looked-up albedo by the interpolated shading (so a uniform texture equals a uniform per-vertex
albedo exactly).

Cost control: the term works at ``size x size`` pixels (e.g. 128 for a 512 crop), and the
rasteriser's visibility pass (which face covers each pixel) runs every ``refresh`` steps only; in
between, the cached face per pixel is reused and only the barycentrics are recomputed from the
current vertices, which is what carries gradients to the geometry (as metrical-tracker does).

Lighting is expressed in camera space (head pose lives in the camera, the room's light is fixed
relative to the camera), with real SH basis functions of the vertex normal.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from stages.face.raster import Fragments, barycentrics, interpolate, rasterize
from stages.face.texture import pixel_uv, sample_uv
from stages.tracking.params import project

SH_C = (0.282095, 0.488603, 1.092548, 0.315392, 0.546274)


def sh_basis(normals: Tensor) -> Tensor:
    """Real spherical-harmonics basis of degree <= 2.

    Args:
        normals: [..., 3] unit vectors.

    Returns:
        [..., 9]: ``Y00, Y1-1 (y), Y10 (z), Y11 (x), Y2-2 (xy), Y2-1 (yz), Y20, Y21 (xz), Y22``.
    """
    x, y, z = normals.unbind(-1)
    c0, c1, c2, c3, c4 = SH_C
    return torch.stack((torch.full_like(x, c0), c1 * y, c1 * z, c1 * x, c2 * x * y, c2 * y * z,
                        c3 * (3 * z * z - 1), c2 * x * z, c4 * (x * x - y * y)), dim=-1)


def ambient_sh(dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> Tensor:
    """[9, 3] SH coefficients of uniform white light of intensity 1 (shading 1 everywhere)."""
    sh = torch.zeros(9, 3, dtype=dtype, device=device)
    sh[0] = 1.0 / SH_C[0]
    return sh


def vertex_normals(verts: Tensor, faces: Tensor) -> Tensor:
    """[B, V, 3] unit vertex normals (area-weighted face normals; outward for counter-clockwise faces)."""
    v0, v1, v2 = (verts[:, faces[:, i]] for i in range(3))
    fn = torch.cross(v1 - v0, v2 - v0, dim=-1)  # [B, F, 3]
    n = torch.zeros_like(verts)
    for i in range(3):
        n = n.index_add(1, faces[:, i], fn)
    return F.normalize(n, dim=-1, eps=1e-12)


def shade(albedo: Tensor, sh: Tensor, normals: Tensor) -> Tensor:
    """Per-vertex colour ``albedo * (Y(n) @ sh)``: albedo [V, 3], sh [9, 3], normals [B, V, 3] -> [B, V, 3]."""
    return albedo[None] * (sh_basis(normals) @ sh)


class UVAlbedo:
    """Albedo looked up in a UV map (the FLAME-texture mode of :class:`Photometric`).

    Either ``texture`` (a :class:`stages.face.texture.FlameTexture`) with coefficients ``tex [K]``
    (optimised as ``tex``), or a fixed ``albedo_map [3, H, W]`` (RGB 0..1, row 0 = v = 1).

    Args:
        vt: [T, 2] UV coordinates (0..1, v up). ft: int64 [F, 3] UV corners of each mesh triangle.
        prior: weight of ``sum(tex ** 2)`` added to the photometric loss (keeps the coefficients
            near the mean texture where the frames do not constrain them).
    """

    def __init__(self, vt: Tensor, ft: Tensor, *, texture: torch.nn.Module | None = None, tex: Tensor | None = None,
                 albedo_map: Tensor | None = None, prior: float = 1e-4):
        if (texture is None) == (albedo_map is None):
            raise ValueError("give either a texture space (with tex) or a fixed albedo_map")
        self.vt = vt.float()
        self.ft = ft.long()
        self.texture = texture
        self.prior = prior
        self.tex: Tensor | None = None
        self._map: Tensor | None = None
        self._map_version = -1
        if texture is not None:
            k = texture.n_components
            self.tex = (torch.zeros(k, device=vt.device) if tex is None else tex.detach().clone().float())
        else:
            self._map = albedo_map.float()[None]

    def parameters(self) -> dict[str, Tensor]:
        return {"tex": self.tex} if self.tex is not None else {}

    def maps(self) -> Tensor:
        """[1, 3, H, W] the current albedo map (cached while ``tex`` is not being optimised)."""
        if self.texture is None:
            return self._map
        if self.tex.requires_grad:
            return self.texture(self.tex[None])
        if self._map is None or self._map_version != self.tex._version:
            with torch.no_grad():
                self._map = self.texture(self.tex[None])
            self._map_version = self.tex._version
        return self._map

    def pixel_albedo(self, fragments: Fragments) -> Tensor:
        """[B, H, W, 3] albedo at every pixel (border texels on background; mask it)."""
        return sample_uv(self.maps(), pixel_uv(fragments, self.vt, self.ft))

    def prior_loss(self) -> Tensor:
        if self.tex is None or self.prior <= 0:
            return torch.zeros((), device=self.vt.device)
        return self.prior * self.tex.pow(2).sum()


class Photometric:
    """Photometric term for :func:`stages.tracking.fit.fit`.

    Args:
        images: uint8 [M, S, S, 3] the frames (RGB) at the term's resolution ``S``; the fit's
            ``problem.frames`` index its rows.
        faces: int64 [F, 3] mesh triangles.
        face_region: bool [F] triangles of the face region (the term applies where they are seen).
        albedo: [V, 3] initial per-vertex albedo, 0..1 (optimised as ``albedo``), or a
            :class:`UVAlbedo` (FLAME texture space; optimised as ``tex`` when it has a texture space).
        sh: [9, 3] initial SH lighting.
        image_size: pixels per side of the camera's image (the intrinsics' unit), e.g. 512.
        refresh: re-run the visibility pass every ``refresh`` steps.
    """

    def __init__(self, images: Tensor, faces: Tensor, face_region: Tensor, albedo: Tensor | UVAlbedo, sh: Tensor,
                 image_size: int = 512, refresh: int = 8):
        self.images = images
        self.faces = faces.long()
        self.face_region = face_region.bool()
        self.uv_albedo = albedo if isinstance(albedo, UVAlbedo) else None
        self.albedo = None if self.uv_albedo is not None else albedo.detach().clone().float()
        self.sh = sh.detach().clone().float()
        self.image_size = image_size
        self.size = int(images.shape[1])
        self.refresh = max(1, refresh)
        self._face_idx: Tensor | None = None
        self._key: tuple[int, int] | None = None

    @property
    def mode(self) -> str:
        """``"vertex"`` or ``"texture"``."""
        return "vertex" if self.uv_albedo is None else "texture"

    def parameters(self) -> dict[str, Tensor]:
        if self.uv_albedo is not None:
            return {**self.uv_albedo.parameters(), "sh": self.sh}
        return {"albedo": self.albedo, "sh": self.sh}

    def screen_vertices(self, vertices: Tensor, R: Tensor, t: Tensor, focal: Tensor, pp: Tensor) -> Tensor:
        """[B, V, 3] x, y in the term's pixels, z camera depth (metres)."""
        pix, cam = project(vertices, R, t, focal, pp)
        s = self.size / self.image_size
        xy = pix * s  # same continuous pixel convention as the rasteriser, rescaled to the term's size
        return torch.cat((xy, cam[..., 2:3]), dim=-1)

    def render(self, vertices: Tensor, R: Tensor, t: Tensor, focal: Tensor, pp: Tensor, *,
               face_idx: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Render the shaded face.

        Returns:
            (colour [B, S, S, 3], mask [B, S, S] float (face region seen), face_idx [B, S, S]).
        """
        vpix = self.screen_vertices(vertices, R, t, focal, pp)
        if face_idx is None:
            face_idx = rasterize(vpix.detach(), self.faces, self.size, self.size, cull_backfaces=True).face_idx
        bary = barycentrics(vpix, self.faces, face_idx)
        cam = vertices @ R.transpose(-1, -2) + t[:, None, :]
        normals = vertex_normals(cam, self.faces)
        frags = Fragments(face_idx, bary, bary[..., 0])
        if self.uv_albedo is None:
            colour = interpolate(shade(self.albedo, self.sh, normals), self.faces, frags)
        else:
            shading = interpolate(sh_basis(normals) @ self.sh, self.faces, frags)  # zeros on background
            colour = self.uv_albedo.pixel_albedo(frags) * shading
        mask = ((face_idx >= 0) & self.face_region[face_idx.clamp_min(0)]).float()
        return colour, mask, face_idx

    def fixed_geometry(self, vertices: Tensor, R: Tensor, t: Tensor, focal: Tensor, pp: Tensor,  # noqa: ANN201
                       frames: Tensor):
        """The term as a function of the appearance alone, for geometry that does not move
        (calibrate's appearance level, which frees only the albedo or texture and the lighting).

        Visibility, barycentrics, normals and their SH basis depend on the geometry only, so they
        are computed once here; each call of the returned ``loss()`` shades and interpolates with
        the current ``albedo``/``tex`` and ``sh``. Its value and gradients are those of
        ``self(vertices, ...)`` at any step (where :meth:`__call__` refreshes the visibility of the
        same geometry, it finds the same faces), without the per-step model, projection and
        rasterisation; in the per-vertex mode only the pixels inside the mask are kept.

        Args: as :meth:`__call__` (the geometry is detached).

        Returns:
            ``loss() -> scalar`` (the photometric L1, plus the texture prior in the texture mode).
        """
        from stages.tracking.losses import photometric_loss

        with torch.no_grad():
            vertices, R, t = vertices.detach(), R.detach(), t.detach()
            vpix = self.screen_vertices(vertices, R, t, focal.detach(), pp.detach())
            face_idx = rasterize(vpix, self.faces, self.size, self.size, cull_backfaces=True).face_idx
            bary = barycentrics(vpix, self.faces, face_idx)
            frags = Fragments(face_idx, bary, bary[..., 0])
            basis = sh_basis(vertex_normals(vertices @ R.transpose(-1, -2) + t[:, None, :], self.faces))  # [B, V, 9]
            mask = ((face_idx >= 0) & self.face_region[face_idx.clamp_min(0)]).float()
            target = self.targets(frames)
            if self.uv_albedo is None:
                # per-vertex mode: only the pixels inside the mask count, so only they are kept: each
                # one's three corners (rows of the batch's [B * V] vertex colours) and barycentrics
                inside = mask > 0
                b, v = vertices.shape[0], vertices.shape[1]
                vid = self.faces[face_idx.clamp_min(0)] + (torch.arange(b, device=face_idx.device) * v).view(b, 1, 1, 1)
                corners, weights, wanted = vid[inside], bary[inside], target[inside]     # [N, 3], [N, 3], [N, 3]
                count = 3.0 * max(int(inside.sum()), 1)                                # photometric_loss's norm

        def loss() -> Tensor:
            if self.uv_albedo is None:
                colour = (self.albedo[None] * (basis @ self.sh)).reshape(-1, 3)[corners]  # [N, 3 corners, 3]
                return ((weights[..., None] * colour).sum(-2) - wanted).abs().sum() / count
            colour = self.uv_albedo.pixel_albedo(frags) * interpolate(basis @ self.sh, self.faces, frags)
            return photometric_loss(colour, target, mask) + self.uv_albedo.prior_loss()

        return loss

    def targets(self, frames: Tensor) -> Tensor:
        """[B, S, S, 3] float 0..1 images of the given rows."""
        return self.images[frames].float() / 255.0

    def __call__(self, vertices: Tensor, R: Tensor, t: Tensor, focal: Tensor, pp: Tensor, frames: Tensor,
                 step: int) -> Tensor:
        """Mean L1 colour error inside the seen face region (see :func:`stages.tracking.losses.photometric_loss`),
        plus the texture coefficients' prior in the texture mode."""
        from stages.tracking.losses import photometric_loss

        key = (frames.data_ptr(), len(frames))  # the batch's frame tensor (no device sync)
        reuse = self._face_idx is not None and self._key == key and step % self.refresh != 0
        colour, mask, face_idx = self.render(vertices, R, t, focal, pp, face_idx=self._face_idx if reuse else None)
        self._face_idx, self._key = face_idx, key
        loss = photometric_loss(colour, self.targets(frames), mask)
        if self.uv_albedo is not None:
            loss = loss + self.uv_albedo.prior_loss()
        return loss


def sample_vertex_colours(images: Tensor, vertices: Tensor, R: Tensor, t: Tensor, focal: Tensor, pp: Tensor,
                          faces: Tensor, image_size: int = 512, min_cos: float = 0.3) -> tuple[Tensor, Tensor]:
    """Average colour of every vertex over frames where it faces the camera (albedo estimate).

    Args:
        images: uint8 [B, S, S, 3] frames (any resolution S; sampled bilinearly).
        vertices: [B, V, 3] world vertices; R, t, focal, pp: cameras (see :func:`project`).
        min_cos: a vertex counts in a frame when its normal's cosine with the view ray exceeds this.

    Returns:
        (colour [V, 3] in 0..1 (grey 0.5 where never seen), seen [V] number of frames used).
    """
    pix, cam = project(vertices, R, t, focal, pp)
    normals = vertex_normals(cam, faces)
    view = -F.normalize(cam, dim=-1)
    cos = (normals * view).sum(-1)  # [B, V]
    weight = (cos > min_cos).float()
    grid = pix / image_size * 2.0 - 1.0  # continuous pixels -> grid_sample's align_corners=False range
    img = images.permute(0, 3, 1, 2).float() / 255.0
    col = F.grid_sample(img, grid[:, :, None, :], mode="bilinear", align_corners=False)[..., 0]  # [B, 3, V]
    col = col.permute(0, 2, 1)
    inside = ((grid.abs() <= 1).all(-1)).float()
    weight = weight * inside
    seen = weight.sum(0)
    colour = (col * weight[..., None]).sum(0) / seen.clamp_min(1.0)[:, None]
    colour = torch.where(seen[:, None] > 0, colour, torch.full_like(colour, 0.5))
    return colour, seen
