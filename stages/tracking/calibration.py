"""Once-per-actor calibration: identity, focal length, principal point, appearance and lighting,
fitted jointly over a few keyframes; and its file, ``calibrate/calibration.npz``.

Appearance is fitted in one of two modes (see :mod:`stages.tracking.photometric`): in FLAME texture
space when the user supplied ``FLAME_texture.npz`` (and a UV layout is known), else as a per-vertex
albedo estimated from the keyframes.

File keys (numpy, float32 unless noted)::

    shape [300]            identity coefficients
    focal [2]              fx, fy pixels;   pp [2]  cx, cy pixels (see stages.tracking.params)
    image_size int64 [2]   h, w
    keyframes int64 [K]    frame numbers (from 1) of the keyframes
    kf_<name> [K, ...]     the keyframes' fitted per-frame parameters (exp, jaw, eyes, eyelids, rot, t)
    error_px [K]           mean landmark error per keyframe
    albedo [V, 3]          per-vertex albedo 0..1 (per-vertex mode only; absent otherwise)
    tex [K]                FLAME texture coefficients (texture mode only; K = 140 with FLAME's file),
                           in FLAME_texture.npz's units: the .frame's flame.tex
    tex_map [H, W, 3]      the albedo map of ``tex`` (RGB 0..1, row 0 = v = 1), baked so track
                           needs no texture file     (texture mode only)
    tex_vt [T, 2]          UV coordinates (v up);  tex_ft int64 [F, 3] UV corners per triangle
                           (texture mode only)
    sh [9, 3]              SH lighting (camera space; absent without a photometric fit)
    model_name str         the face model it was fitted with (a model mismatch is refused later)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from stages.tracking import fit as fitting
from stages.tracking.refine import refine_identity
from stages.tracking.schedule import Level, LossWeights, Schedule, calibrate_schedule


@dataclass
class Calibration:
    """See the module docstring for the meaning and shape of each field."""

    shape: np.ndarray
    focal: np.ndarray
    pp: np.ndarray
    image_size: tuple[int, int] = (512, 512)
    keyframes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    keyframe_params: dict[str, np.ndarray] = field(default_factory=dict)
    error_px: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    albedo: np.ndarray | None = None
    sh: np.ndarray | None = None
    model_name: str = ""
    tex: np.ndarray | None = None
    tex_map: np.ndarray | None = None
    tex_vt: np.ndarray | None = None
    tex_ft: np.ndarray | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    """Wall-clock seconds of each part of the fit (``geometry``, ``refine``, ``appearance``); not saved."""
    refine: dict[str, float] = field(default_factory=dict)
    """The L-BFGS refinement's ``iterations``, ``kept`` (1/0), ``loss_before``, ``loss_after``; not saved."""
    lm: dict[str, float] = field(default_factory=dict)
    """The Levenberg-Marquardt solve's ``iterations``, ``loss_before``, ``loss_after`` (empty: none); not saved."""

    @property
    def appearance_mode(self) -> str | None:
        """``"texture"``, ``"vertex"`` or ``None`` (no photometric fit)."""
        if self.sh is None:
            return None
        if self.tex is not None and self.tex_map is not None:
            return "texture"
        return "vertex" if self.albedo is not None else None

    def save(self, path: str | Path) -> None:
        arrays: dict[str, np.ndarray] = {
            "shape": np.asarray(self.shape, np.float32), "focal": np.asarray(self.focal, np.float32),
            "pp": np.asarray(self.pp, np.float32), "image_size": np.asarray(self.image_size, np.int64),
            "keyframes": np.asarray(self.keyframes, np.int64), "error_px": np.asarray(self.error_px, np.float32),
            "model_name": np.asarray(self.model_name)}
        arrays.update({f"kf_{k}": np.asarray(v, np.float32) for k, v in self.keyframe_params.items()})
        if self.albedo is not None:
            arrays["albedo"] = np.asarray(self.albedo, np.float32)
        if self.sh is not None:
            arrays["sh"] = np.asarray(self.sh, np.float32)
        for key in ("tex", "tex_map", "tex_vt"):
            if getattr(self, key) is not None:
                arrays[key] = np.asarray(getattr(self, key), np.float32)
        if self.tex_ft is not None:
            arrays["tex_ft"] = np.asarray(self.tex_ft, np.int64)
        with open(path, "wb") as f:
            np.savez(f, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> "Calibration":
        with np.load(path, allow_pickle=False) as z:
            return cls(shape=z["shape"], focal=z["focal"], pp=z["pp"],
                       image_size=tuple(int(x) for x in z["image_size"]), keyframes=z["keyframes"],
                       keyframe_params={k[3:]: z[k] for k in z.files if k.startswith("kf_")},
                       error_px=z["error_px"], albedo=z["albedo"] if "albedo" in z.files else None,
                       sh=z["sh"] if "sh" in z.files else None, model_name=str(z["model_name"]),
                       **{k: z[k] for k in ("tex", "tex_map", "tex_vt", "tex_ft") if k in z.files})

    def shared(self, device: torch.device | str = "cpu") -> fitting.Shared:
        return fitting.Shared(torch.as_tensor(self.shape, device=device).float(),
                              torch.as_tensor(self.focal, device=device).float(),
                              torch.as_tensor(self.pp, device=device).float())


@dataclass
class CalibrationInputs:
    """Attributes:
        targets: [K, L, 2] keyframe landmark pixels in the model's landmark order.
        point_w: [L] landmark weights.
        frames: [K] frame numbers of the keyframes.
        images: uint8 [K, S, S, 3] keyframe images at the photometric resolution, or None.
        face_region: bool [F] triangles of the photometric face region (None: all).
    """

    targets: Tensor
    point_w: Tensor
    frames: np.ndarray
    images: Tensor | None = None
    face_region: Tensor | None = None


TEX_LR = 5e-2
"""Adam learning rate of the texture coefficients. Assumes coefficients of order 1 (eigenvalue-scaled
components), as the squared-norm priors of DECA and metrical-tracker on them suggest; not checked
against FLAME's own file here."""


def calibrate(model: nn.Module, inputs: CalibrationInputs, *, image_size: int = 512, initial_focal: float = 2304.0,
              schedule: Schedule | None = None, weights: LossWeights | None = None, model_name: str = "",
              refine_iterations: int = 1000, texture: nn.Module | None = None, tex_prior: float = 1e-4,
              lm_iterations: int = 0, on_step=None) -> Calibration:
    """Fit identity, focal, principal point (and per-keyframe pose and expression) to the keyframes'
    landmarks (Adam, then :func:`stages.tracking.refine.refine_identity`), then appearance and SH
    lighting to their images (when given): texture coefficients when ``texture`` (a
    :class:`stages.face.texture.FlameTexture` with a UV layout matching the model's faces) is
    given, else a per-vertex albedo.

    Args:
        model: the face model (``stages.face.flame.FLAME``), on the device to use.
        inputs: keyframe targets and images (on the model's device).
        initial_focal: starting focal length, pixels (fx = fy).
        schedule: default :func:`stages.tracking.schedule.calibrate_schedule`.
        refine_iterations: L-BFGS iterations of the float64 identity refinement after the Adam
            levels (0: none); focal and principal point stay at Adam's values.
        lm_iterations: most Levenberg-Marquardt iterations (:func:`stages.tracking.lm.solve_lm`) of
            identity, focal length and every keyframe's parameters, after the schedule's geometric
            Adam levels (0: none). A few iterations reach a lower objective than hundreds of Adam
            steps (the calibrate stage's default: LM straight from the initial poses, no Adam level).
        texture: FLAME texture space on the model's device (texture mode), or None.
        tex_prior: weight of ``sum(tex**2)`` relative to the photometric L1 (texture mode).
    """
    schedule = schedule or calibrate_schedule()
    weights = weights or LossWeights()
    dev = inputs.targets.device
    k = inputs.targets.shape[0]
    n_shape = int(getattr(model, "n_shape", 300))
    shared = fitting.Shared(shape=torch.zeros(n_shape, device=dev),
                            focal=torch.full((2,), float(initial_focal), device=dev),
                            pp=torch.full((2,), image_size / 2.0, device=dev))
    problem = fitting.Problem(targets=inputs.targets, point_w=inputs.point_w, frame_w=torch.ones(k, device=dev),
                              link=torch.zeros(max(k - 1, 0), device=dev), image_size=image_size)
    clock = _Clock(dev)
    init = fitting.initial_pose(model, shared.shape, inputs.targets, inputs.point_w, shared.focal, shared.pp)
    geometry = Schedule([lv for lv in schedule.levels if not lv.photometric], schedule.lr, schedule.final_lr_fraction)
    res = fitting.fit(model, problem, init, shared, geometry, weights, on_step=on_step)
    clock.lap("geometry")
    lm_info: dict[str, float] = {}
    if lm_iterations > 0:
        from stages.tracking.lm import solve_lm

        sol = solve_lm(model, res.shared.shape, res.params, res.shared.focal, res.shared.pp, inputs.targets,
                       inputs.point_w, image_size=image_size, focal0=float(initial_focal), iterations=lm_iterations,
                       weights=weights, on_step=on_step)
        res = fitting.FitResult(params=sol.params, error_px=sol.error_px, history=res.history,
                                shared=fitting.Shared(sol.shape, sol.focal, sol.pp))
        clock.lap("lm")
        lm_info = {"iterations": sol.iterations, "loss_before": sol.loss_before, "loss_after": sol.loss_after}
    if refine_iterations > 0:
        ref = refine_identity(model, res.shared.shape, res.params, res.shared.focal, res.shared.pp, inputs.targets,
                              inputs.point_w, image_size=image_size, iterations=refine_iterations, weights=weights)
        res = fitting.FitResult(params=ref.params, error_px=ref.error_px, history=res.history,
                                shared=fitting.Shared(ref.shape, res.shared.focal, res.shared.pp))
        clock.lap("refine")
        refine_info = {"iterations": ref.iterations, "kept": int(ref.loss_after != ref.loss_before),
                       "loss_before": ref.loss_before, "loss_after": ref.loss_after}
    else:
        refine_info = {}

    albedo = sh = None
    tex_fields: dict[str, np.ndarray] = {}
    appearance = Schedule([lv for lv in schedule.levels if lv.photometric], schedule.lr, schedule.final_lr_fraction)
    if inputs.images is not None and appearance.levels:
        from stages.tracking.photometric import Photometric, ambient_sh, sample_vertex_colours

        with torch.no_grad():
            p = res.params
            verts = fitting.run_model(model, res.shared.shape, p).vertices
            colour, seen = sample_vertex_colours(inputs.images, verts, p.R, p.t, res.shared.focal, res.shared.pp,
                                                 model.faces, image_size)
        region = inputs.face_region if inputs.face_region is not None else torch.ones(
            model.faces.shape[0], dtype=torch.bool, device=dev)
        use_texture = texture is not None and not texture.layout_problem(model.faces)
        if use_texture:
            uv_albedo = texture_albedo(texture, model.faces, colour, seen, tex_prior)
            photo = Photometric(inputs.images, model.faces, region, uv_albedo, ambient_sh(device=dev), image_size)
            appearance = texture_schedule(appearance)
        else:
            photo = Photometric(inputs.images, model.faces, region, colour, ambient_sh(device=dev), image_size)
        # the geometry is held in this level: visibility, barycentrics and normals once, then only
        # the shading moves (fit_appearance; the same steps as fitting.fit with the photometric term)
        loss_fn = photo.fixed_geometry(verts, p.R, p.t, res.shared.focal, res.shared.pp, torch.arange(k, device=dev))
        fitting.fit_appearance(loss_fn, photo.parameters(), appearance, weights.photometric, on_step=on_step)
        sh = photo.sh.detach().cpu().numpy()
        if use_texture:
            tex = photo.uv_albedo.tex.detach()
            with torch.no_grad():
                tex_map = texture(tex[None])[0].clamp(0, 1).permute(1, 2, 0)
            tex_fields = {"tex": tex.cpu().numpy(), "tex_map": tex_map.cpu().numpy(),
                          "tex_vt": texture.vt.cpu().numpy(), "tex_ft": texture.ft.cpu().numpy()}
        else:
            albedo = photo.albedo.detach().clamp(0, 1).cpu().numpy()
        clock.lap("appearance")

    return Calibration(shape=res.shared.shape.cpu().numpy(), focal=res.shared.focal.cpu().numpy(),
                       pp=res.shared.pp.cpu().numpy(), image_size=(image_size, image_size),
                       keyframes=np.asarray(inputs.frames, np.int64), keyframe_params=res.params.to_numpy(),
                       error_px=res.error_px.cpu().numpy(), albedo=albedo, sh=sh, model_name=model_name,
                       seconds=clock.seconds, refine=refine_info, lm=lm_info, **tex_fields)


class _Clock:
    """Wall-clock laps (synchronising CUDA first, so that queued kernels count where they ran)."""

    def __init__(self, device: torch.device):
        import time

        self._time, self._cuda = time.perf_counter, device.type == "cuda"
        self._t = self._time()
        self.seconds: dict[str, float] = {}

    def lap(self, name: str) -> None:
        if self._cuda:
            torch.cuda.synchronize()
        t = self._time()
        self.seconds[name] = round(t - self._t, 3)
        self._t = t


def texture_schedule(appearance: Schedule) -> Schedule:
    """The appearance levels with the texture coefficients (``tex``) freed where they free ``albedo``."""
    levels = [Level(lv.name, lv.steps, tuple("tex" if n == "albedo" else n for n in lv.free), lv.photometric)
              for lv in appearance.levels]
    return Schedule(levels, {**appearance.lr, "tex": appearance.lr.get("tex", TEX_LR)},
                    appearance.final_lr_fraction, appearance.betas)


def texture_albedo(texture: nn.Module, faces: Tensor, colour: Tensor, seen: Tensor,
                   prior: float = 1e-4):  # noqa: ANN201 - UVAlbedo
    """A :class:`stages.tracking.photometric.UVAlbedo` whose starting coefficients best match the
    per-vertex colours ``colour [V, 3]`` seen in ``seen [V]`` frames (ridge least squares at each
    triangle corner's UV, so UV seams are handled)."""
    from stages.tracking.photometric import UVAlbedo

    corners_v = faces.reshape(-1)
    uv = texture.vt[texture.ft.reshape(-1)]
    w = (seen[corners_v] > 0).float()
    tex0 = texture.fit_colours(uv, colour[corners_v], w) if w.sum() > 0 else None
    return UVAlbedo(texture.vt, texture.ft, texture=texture, tex=tex0, prior=prior)


def personalised(model: nn.Module, shape: Tensor) -> nn.Module:
    """A copy of ``model`` with the identity baked into its template, to be called with a shape of
    width 0: the ``[B,300] @ [300, V*3]`` identity product then leaves the per-step work.

    The copy's vertices equal ``model``'s with ``shape`` (joints are regressed from the shaped mesh in
    both, so they agree too)."""
    import copy

    m = copy.deepcopy(model)
    with torch.no_grad():
        offs = (shape.reshape(1, -1).to(m.shapedirs) @ m.shapedirs[:, : shape.numel()].T).view(-1, 3)
        m.v_template = m.v_template + offs
    return m

