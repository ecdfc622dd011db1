"""The Gaussian avatar: Gaussians bound to the face-model surface, deformed by an MLP.

Each Gaussian ``i`` stores a face index, barycentric coordinates and an anchor offset (zero for
Gaussians on the surface; the fixed model-space offset of a shell Gaussian beyond the mesh,
:mod:`stages.gauss.shell`); per frame its base position is that surface point on the tracked mesh
plus the offset. An MLP of the positional encoding of the canonical (neutral)
position and the frame's condition vector (expression[100], jaw[6], eyes[12], eyelids[2]) predicts
offsets of position (metres, model space), rotation (added to the quaternion) and log-scale. Colour
is spherical harmonics per Gaussian, opacity a per-Gaussian logit. No densification.

Optionally (``AvatarConfig.triangle_scale``, off by default) Gaussians follow their triangle's size,
as GaussianAvatars scales its Gaussians by their triangle's scale: a Gaussian's standard deviations
are multiplied by ``triangle_size(posed mesh) / triangle_size(neutral mesh)`` of its triangle (the
square root of the area ratio, isotropic; :func:`stages.gauss.sampling.triangle_size`). On the
neutral mesh the factor is 1; where a shut eyelid collapses the eye-opening triangles it falls (to
about 0.4 on the stand-in, whose opening triangles flatten to 16% of their area), so the Gaussians
that drew the iris there shrink instead of staying their size behind the closed lid.

Optionally (``AvatarConfig.triangle_frame``) the Gaussians live in their triangle's local frame
(GaussianAvatars' binding, :mod:`stages.gauss.triangle_frame`): the MLP's position offsets (less
the head's mean offset, which stays a plain shift), the rotations and the shapes follow each
triangle's deformation ``F`` from the neutral mesh, so a lid
triangle that slides down takes its Gaussians with it and an eye-opening triangle squashed by a shut
lid squashes its Gaussians (vertically, keeping their width). The renderers then draw the exact
covariances ``F R S^2 R^T F^T`` (``Gaussians.covars``); the PLY export and the viewer get them as
rotations and scales (:func:`exact_quats_scales`). On the neutral mesh ``F`` is the identity.

Speed: the first MLP layer is split into a position part (computed once per step, [N, W]) and a
condition part ([B, W]), summed by broadcasting, which is exactly the layer applied to
``cat(pe(x), cond)`` but costs one [N, W] matmul instead of B of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from stages.gauss.sampling import surface_points, triangle_size
from stages.gauss.sh import eval_sh, num_sh_bases, rgb_to_sh0
from stages.gauss.surface import COND_DIM


MIN_TRIANGLE_SIZE = 1e-6
"""metres: a neutral triangle smaller than this (sqrt of its area) is degenerate (a UV sphere's pole)."""


@dataclass
class AvatarConfig:
    """Attributes:
        sh_degree: spherical-harmonics degree of the colours (0..3).
        mlp_width: hidden units per MLP layer.
        mlp_depth: hidden layers (>= 1).
        pe_freqs: positional-encoding frequencies per axis (``sin/cos(2^k pi x)``, k < pe_freqs).
        cond_dim: length of the condition vector (120 for FLAME).
        init_opacity: opacity at initialisation (0..1).
        init_scale: standard deviation at initialisation (metres); ``None``: from the sample spacing.
        offset_scale: multiplier of the MLP's position output (metres per unit).
        triangle_scale: multiply each Gaussian's scale by its triangle's size on the posed mesh over
            its size on the neutral mesh (see the module docstring). Off by default (measured in
            docs/motion-format.md: it lets a wink reach the render of an avatar trained on winks,
            but lowered a drive test's mouth r in one run); avatar files
            written before this setting existed had none (:func:`avatar_config_from_dict` reads them so).
        triangle_frame: Gaussians on the surface live in their triangle's local frame: each MLP
            position offset's deviation from the head's mean offset, the rotations and the shapes
            (exact covariances) follow the triangle's deformation from the neutral mesh
            (:mod:`stages.gauss.triangle_frame`); exclusive with ``triangle_scale``. Shell Gaussians
            (anchor offsets) keep model-space offsets. Files written before it existed had none.
        pose_dim: 0 (upstream: the MLP sees no head pose) or 6: the MLP also sees the head's
            rotation relative to the training clip's mean rotation (6D, zero at the mean), so
            Gaussians can move with pose (the neck against the collar); see :meth:`GaussianAvatar.pose_feature`.
    """

    sh_degree: int = 3
    mlp_width: int = 256
    mlp_depth: int = 3
    pe_freqs: int = 8
    cond_dim: int = COND_DIM
    init_opacity: float = 0.5
    init_scale: float | None = None
    offset_scale: float = 0.01
    triangle_scale: bool = False
    pose_dim: int = 0
    triangle_frame: bool = False


def avatar_config_from_dict(d: dict) -> AvatarConfig:
    """The :class:`AvatarConfig` stored in an avatar file or bundle; a file without ``triangle_scale``
    predates it and was trained without it (``False``)."""
    return AvatarConfig(**{"triangle_scale": False, "triangle_frame": False, **d})


@dataclass
class Gaussians:
    """Per-frame Gaussians, activated. Leading dims [B, N].

    Attributes:
        means: [B, N, 3] metres.  quats: [B, N, 4] wxyz (unnormalised).  scales: [B, N, 3] metres.
        opacities: [B, N] in 0..1.  sh: [N, K, 3] SH coefficients (shared by the frames).
        offsets: [B, N, 3] the MLP's position offsets before any triangle frame (metres on the
            neutral mesh), for the regulariser that keeps Gaussians near their triangles.
        base_scales: [B, N, 3] standard deviations before any triangle scaling (metres on the
            neutral mesh), for the scale regulariser.
        covars: [B, N, 3, 3] covariances (metres^2) when the Gaussians live in their triangles'
            frames: the renderers draw these (``quats`` and ``scales`` are then the per-axis
            approximation; :func:`exact_quats_scales` gives the exact ones).
    """

    means: Tensor
    quats: Tensor
    scales: Tensor
    opacities: Tensor
    sh: Tensor
    offsets: Tensor | None = None
    base_scales: Tensor | None = None
    covars: Tensor | None = None


def exact_quats_scales(g: "Gaussians") -> tuple[Tensor, Tensor]:
    """[B, N, 4], [B, N, 3]: the rotations and scales that draw exactly what the renderers draw (from
    ``covars`` where set, :func:`stages.gauss.triangle_frame.covariance_to_quats_scales`; else
    ``quats``, ``scales``), for the PLY export and the viewer (no gradient through ``covars``)."""
    if g.covars is None:
        return g.quats, g.scales
    from stages.gauss.triangle_frame import covariance_to_quats_scales

    return covariance_to_quats_scales(g.covars)


def positional_encoding(x: Tensor, freqs: int) -> Tensor:
    """[..., 3] -> [..., 3 + 6 * freqs]: ``x`` then ``sin(2^k pi x)``, ``cos(2^k pi x)``."""
    if freqs == 0:
        return x
    scales = (2.0 ** torch.arange(freqs, device=x.device, dtype=x.dtype)) * math.pi
    xs = x.unsqueeze(-1) * scales  # [..., 3, F]
    return torch.cat([x, xs.sin().flatten(-2), xs.cos().flatten(-2)], dim=-1)


class DeformMLP(nn.Module):
    """``cat(pe(x_canonical), cond) -> (d_xyz[3], d_quat[4], d_log_scale[3])``, last layer zero-initialised."""

    def __init__(self, pe_dim: int, cond_dim: int, width: int, depth: int, pose_dim: int = 0):
        super().__init__()
        self.pos_in = nn.Linear(pe_dim, width)
        self.cond_in = nn.Linear(cond_dim, width, bias=False)
        self.pose_in = nn.Linear(pose_dim, width, bias=False) if pose_dim > 0 else None
        self.hidden = nn.ModuleList(nn.Linear(width, width) for _ in range(depth - 1))
        self.out = nn.Linear(width, 10)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, pe: Tensor, cond: Tensor, pose: Tensor | None = None) -> Tensor:
        """pe [N, P], cond [B, C], pose [B, pose_dim] (None: zeros) -> [B, N, 10]."""
        c = self.cond_in(cond)
        if self.pose_in is not None and pose is not None:
            c = c + self.pose_in(pose.to(c.dtype))
        h = torch.relu(self.pos_in(pe).unsqueeze(0) + c.unsqueeze(1))
        for layer in self.hidden:
            h = torch.relu(layer(h))
        return self.out(h)


class GaussianAvatar(nn.Module):
    """Surface-bound Gaussians with an offset MLP.

    Args:
        face_idx: [N] int64 face of each Gaussian.
        bary: [N, 3] barycentric coordinates in that face.
        canonical: [N, 3] positions on the neutral mesh (metres), input of the positional encoding.
        config: :class:`AvatarConfig`.
        init_rgb: optional [N, 3] initial colours in 0..1 (grey when ``None``).
        canonical_size: [N] each Gaussian's triangle size on the neutral mesh (metres,
            :func:`stages.gauss.sampling.triangle_size`); needed when ``config.triangle_scale``
            (a loader may pass ones and then load the stored values with the state dict).
        anchor_offset: optional [N, 3] model-space offset (metres) added to each surface point
            (zero when ``None``: every Gaussian on the surface).
        canonical_basis: [N, 3, 3] each Gaussian's triangle on the neutral mesh as columns
            ``[e1 e2 n]`` (:func:`stages.gauss.triangle_frame.triangle_basis`); needed when
            ``config.triangle_frame`` (a loader may pass zeros and load the stored values).
        frame_mask: optional [N] bool, the Gaussians that live in their triangle's frame when
            ``config.triangle_frame`` (None: every surface Gaussian; shell Gaussians never do).
    """

    def __init__(self, face_idx: Tensor, bary: Tensor, canonical: Tensor, config: AvatarConfig,
                 init_rgb: Tensor | None = None, canonical_size: Tensor | None = None,
                 anchor_offset: Tensor | None = None, canonical_basis: Tensor | None = None,
                 frame_mask: Tensor | None = None):
        super().__init__()
        self.config = config
        n = face_idx.shape[0]
        self.register_buffer("face_idx", face_idx.long().clone())
        self.register_buffer("bary", bary.float().clone())
        off = torch.zeros(n, 3) if anchor_offset is None else anchor_offset.float().clone()
        self.register_buffer("anchor_offset", off)
        self.register_buffer("canonical", canonical.float().clone())
        if config.triangle_scale:
            if canonical_size is None or canonical_size.shape != (n,):
                raise ValueError(f"triangle_scale needs canonical_size [{n}] (the neutral mesh's triangle sizes)")
            self.register_buffer("canonical_size", canonical_size.float().clone())
        if config.triangle_frame:
            if config.triangle_scale:
                raise ValueError("triangle_frame replaces triangle_scale: turn one of them off")
            if canonical_basis is None or canonical_basis.shape != (n, 3, 3):
                raise ValueError(f"triangle_frame needs canonical_basis [{n}, 3, 3] (the neutral mesh's triangles)")
            self.register_buffer("canonical_basis", canonical_basis.float().clone())
            fm = torch.ones(n, dtype=torch.bool) if frame_mask is None else frame_mask.bool().clone()
            self.register_buffer("frame_mask", fm & ~off.ne(0).any(-1))
        lo, hi = canonical.min(0).values, canonical.max(0).values
        self.register_buffer("pe_center", ((lo + hi) / 2).float())
        self.register_buffer("pe_halfsize", ((hi - lo).max() / 2 * 1.1).clamp_min(1e-6).float().reshape(1))
        k = num_sh_bases(config.sh_degree)
        rgb = init_rgb if init_rgb is not None else torch.full((n, 3), 0.5)
        sh = torch.zeros(n, k, 3)
        sh[:, 0] = rgb_to_sh0(rgb.float())
        self.sh_dc = nn.Parameter(sh[:, :1].contiguous())
        self.sh_rest = nn.Parameter(sh[:, 1:].contiguous())
        p = min(max(config.init_opacity, 1e-4), 1 - 1e-4)
        self.opacity_logit = nn.Parameter(torch.full((n,), math.log(p / (1 - p))))
        if config.init_scale is None:
            span = (hi - lo).clamp_min(1e-6)
            # mean spacing of N points on a surface about the size of the bounding box's two largest sides
            area = (span.sort().values[1:].prod()).item() * 2.0
            init_scale = math.sqrt(area / max(n, 1)) * 0.5
        else:
            init_scale = config.init_scale
        self.log_scale = nn.Parameter(torch.full((n, 3), math.log(init_scale)))
        quat = torch.zeros(n, 4)
        quat[:, 0] = 1.0
        self.quat = nn.Parameter(quat)
        pe_dim = 3 + 6 * config.pe_freqs
        self.mlp = DeformMLP(pe_dim, config.cond_dim, config.mlp_width, config.mlp_depth, config.pose_dim)
        if config.pose_dim > 0:
            self.register_buffer("pose_ref", torch.eye(3))

    @property
    def num_gaussians(self) -> int:
        return self.face_idx.shape[0]

    def base_points(self, vertices: Tensor, faces: Tensor) -> Tensor:
        """Base positions on tracked meshes (surface point + anchor offset): vertices [B, V, 3],
        faces [F, 3] -> [B, N, 3]."""
        return surface_points(vertices, faces, self.face_idx, self.bary) + self.anchor_offset.to(vertices.dtype)

    @property
    def on_surface(self) -> Tensor:
        """bool [N]: the Gaussians bound on the mesh surface (no anchor offset), i.e. all but the
        shell's (:mod:`stages.gauss.shell`)."""
        return ~self.anchor_offset.ne(0).any(-1)

    def size_ratio(self, vertices: Tensor, faces: Tensor) -> Tensor | None:
        """Each Gaussian's triangle size on the posed meshes over its neutral size: vertices [B, V, 3],
        faces [F, 3] -> [B, N] (``None`` when ``config.triangle_scale`` is off). A triangle already
        degenerate on the neutral mesh (size below :data:`MIN_TRIANGLE_SIZE`) has no ratio: 1."""
        if not self.config.triangle_scale:
            return None
        posed = triangle_size(vertices, faces, self.face_idx)
        size0 = self.canonical_size
        ok = size0 > MIN_TRIANGLE_SIZE
        return torch.where(ok, posed / torch.where(ok, size0, torch.ones_like(size0)), torch.ones_like(posed))

    def pose(self, vertices: Tensor, faces: Tensor, cond: Tensor, autocast: bool = False,
             R: Tensor | None = None) -> Gaussians:
        """Per-frame Gaussians on posed meshes (base points, triangle sizes, MLP): vertices [B, V, 3]
        from the face model for ``cond`` [B, cond_dim], faces [F, 3]; R: optional [B, 3, 3]
        world-to-camera rotations, the MLP's pose input when ``config.pose_dim`` (None: the
        reference pose)."""
        return self(self.base_points(vertices, faces), cond, autocast=autocast,
                    size_ratio=self.size_ratio(vertices, faces),
                    pose=self.pose_feature(R) if R is not None else None,
                    frame=self.triangle_frames(vertices, faces))

    def triangle_frames(self, vertices: Tensor, faces: Tensor) -> tuple[Tensor, Tensor] | None:
        """Each Gaussian's triangle deformation ``F`` and frame rotation ``Q`` on the posed meshes,
        both [B, N, 3, 3] (:func:`stages.gauss.triangle_frame.triangle_deformation`); the identity
        outside ``frame_mask`` (shell Gaussians, and those outside the frame's region); ``None``
        when ``config.triangle_frame`` is off."""
        if not self.config.triangle_frame:
            return None
        from stages.gauss.triangle_frame import triangle_basis, triangle_deformation

        basis = self.canonical_basis.to(vertices.dtype)
        F, Q = triangle_deformation(triangle_basis(vertices, faces, self.face_idx), basis)
        out = ~self.frame_mask
        if bool(out.any()):
            eye = torch.eye(3, dtype=F.dtype, device=F.device)
            F, Q = torch.where(out[:, None, None], eye, F), torch.where(out[:, None, None], eye, Q)
        return F, Q

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):  # noqa: ANN001, ANN201
        """As ``nn.Module``'s; a state without ``anchor_offset`` (files written before the shell)
        loads with zero offsets."""
        if "anchor_offset" not in state_dict and "face_idx" in state_dict:
            state_dict = {**state_dict, "anchor_offset": torch.zeros(state_dict["face_idx"].shape[0], 3)}
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def pose_feature(self, R: Tensor) -> Tensor | None:
        """The MLP's pose input: R [B, 3, 3] world-to-camera rotations -> [B, 6], the first two
        columns of ``R @ pose_ref^T`` minus the identity's (zero at the reference rotation); None
        when the avatar does not use pose (``config.pose_dim == 0``)."""
        if self.config.pose_dim <= 0:
            return None
        rel = R.float() @ self.pose_ref.to(R.device).T
        eye = torch.eye(3, device=R.device)
        return (rel - eye)[..., :, :2].transpose(-1, -2).reshape(R.shape[0], 6)

    def forward(self, points: Tensor, cond: Tensor, autocast: bool = False, size_ratio: Tensor | None = None,
                pose: Tensor | None = None, frame: tuple[Tensor, Tensor] | None = None) -> Gaussians:
        """Per-frame Gaussians.

        Args:
            points: [B, N, 3] base positions (from :meth:`base_points`), metres.
            cond: [B, cond_dim] condition vectors.
            autocast: run the MLP in bfloat16 on CUDA (outputs cast back to float32).
            size_ratio: [B, N] triangle size ratios (:meth:`size_ratio`); required when
                ``config.triangle_scale`` (:meth:`pose` passes it).
            pose: [B, pose_dim] :meth:`pose_feature` of the frames' cameras (None: the reference pose).
            frame: (F, Q) of :meth:`triangle_frames`; required when ``config.triangle_frame``.

        Returns:
            :class:`Gaussians` with [B, N, ...] tensors.
        """
        if self.config.triangle_scale and size_ratio is None:
            raise ValueError("this avatar scales its Gaussians with their triangles: pass size_ratio "
                             "(GaussianAvatar.pose does)")
        if self.config.triangle_frame and frame is None:
            raise ValueError("this avatar's Gaussians live in their triangles' frames: pass frame "
                             "(GaussianAvatar.pose does)")
        pe = positional_encoding((self.canonical - self.pe_center) / self.pe_halfsize, self.config.pe_freqs)
        if autocast and pe.is_cuda:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                out = self.mlp(pe, cond, pose)
            out = out.float()
        else:
            out = self.mlp(pe, cond, pose)
        d_xyz, d_quat, d_scale = out.split([3, 4, 3], dim=-1)
        B = cond.shape[0]
        offsets = d_xyz * self.config.offset_scale
        quats = self.quat.unsqueeze(0) + d_quat
        scales = self._scales(d_scale, size_ratio)
        covars = None
        if frame is not None and self.config.triangle_frame:
            from stages.gauss.triangle_frame import in_triangle_frame

            surface = self.on_surface
            shift = offsets[:, surface].mean(1, keepdim=True) if bool(surface.any()) else None
            means, quats_f, scales_f, covars = in_triangle_frame(points, offsets, quats, scales, *frame, shift=shift)
        else:
            means, quats_f, scales_f = points + offsets, quats, scales
        return Gaussians(
            means=means, quats=quats_f, scales=scales_f,
            opacities=torch.sigmoid(self.opacity_logit).unsqueeze(0).expand(B, -1),
            sh=torch.cat([self.sh_dc, self.sh_rest], dim=1),
            offsets=offsets, base_scales=scales, covars=covars,
        )

    def _scales(self, d_scale: Tensor, size_ratio: Tensor | None) -> Tensor:
        """[B, N, 3] standard deviations: ``exp(log_scale + d_scale)``, times the triangle size ratio."""
        scales = torch.exp(self.log_scale.unsqueeze(0) + d_scale)
        if size_ratio is None or not self.config.triangle_scale:
            return scales
        return scales * size_ratio.unsqueeze(-1).to(scales.dtype)

    def colors(self, g: Gaussians, cam_centers: Tensor) -> Tensor:
        """View-dependent RGB. cam_centers [B, 3] (world) -> [B, N, 3]."""
        dirs = g.means - cam_centers.unsqueeze(1)
        return eval_sh(self.config.sh_degree, g.sh.unsqueeze(0), dirs)

    def param_groups(self, lr_scale: float = 1.0, mlp_lr: float = 1e-4) -> list[dict]:
        """Adam parameter groups with per-attribute learning rates (3DGS-like defaults)."""
        s = lr_scale
        return [
            {"params": [self.sh_dc], "lr": 2.5e-3 * s, "name": "sh_dc"},
            {"params": [self.sh_rest], "lr": 2.5e-3 / 20 * s, "name": "sh_rest"},
            {"params": [self.opacity_logit], "lr": 5e-2 * s, "name": "opacity"},
            {"params": [self.log_scale], "lr": 5e-3 * s, "name": "scale"},
            {"params": [self.quat], "lr": 1e-3 * s, "name": "rotation"},
            {"params": list(self.mlp.parameters()), "lr": mlp_lr * s, "name": "mlp"},
        ]
