"""Synthetic ground-truth talking-head videos: known FLAME parameters in, H.264 video out.

:func:`generate_params` makes smooth, plausible per-frame parameters from a :class:`SynthSpec`
(talking jaw and mouth at 3-5 Hz, blinks every 3-5 s lasting about 150 ms, small gaze shifts,
slow head yaw/pitch/roll with noise, a fixed identity from the seed, a fixed camera ``K``, and
the head pose in the per-frame extrinsics ``R, t`` as in FlashAvatar's data). :func:`render_video`
rasterises the posed mesh (:mod:`stages.face.raster`) with a procedural skin albedo painted in
the model's UV space (darker lips, brows, eye whites, dark mouth interior, irises) and Lambertian
shading over a plain background, encodes the frames as H.264 with PyAV and saves the ground truth
(parameters, cameras, projected landmarks) next to the video.

Pixel coordinates follow :mod:`stages.face.camera` (pixel centres at ``+0.5``). Deterministic:
the same spec and seed give the same parameters and the same pixels.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stages.face.camera import project
from stages.face.flame import FLAME
from stages.face.model import FaceModelData
from stages.face.rotation import axis_angle_to_matrix, matrix_to_rotation_6d
from stages.face import standin as _standin


@dataclass
class SynthSpec:
    """What to synthesise.

    Attributes:
        n_frames: number of frames.
        fps: frame rate of the video.
        size: image width = height, pixels.
        seed: everything random (identity, motion, blink times) comes from it.
        yaw_deg, pitch_deg, roll_deg: largest head rotation about each axis (yaw at most 45).
        talking: open and close the jaw and mouth at syllable rate.
        blinks: blink every 3-5 s.
        blink_at: more blinks of both eyes, at these times (s from the start; each 0.16 s long, the
            same raised-cosine closure as the random ones), on top of ``blinks``. They draw nothing
            from the random stream, so a spec with and without them differs in the eyelids only.
        winks: one eye closing alone: ``(start_s, hold_s, eye)`` per wink, ``eye`` 0 = the subject's
            left, 1 = right (the ``eyelids`` order); the lid closes and opens in 0.1 s each and
            stays shut ``hold_s`` between.
        focal: focal length in pixels (``None``: 4.5 x size, about metrical-tracker's 512 px cameras).
        face_fill: fraction of the image height the face (chin to forehead) fills.
        identity_scale: standard deviation of the identity coefficients.
    """

    n_frames: int = 250
    fps: float = 25.0
    size: int = 512
    seed: int = 0
    yaw_deg: float = 30.0
    pitch_deg: float = 10.0
    roll_deg: float = 5.0
    talking: bool = True
    blinks: bool = True
    blink_at: tuple[float, ...] = ()
    winks: tuple[tuple[float, float, int], ...] = ()
    focal: float | None = None
    face_fill: float = 0.5
    identity_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.n_frames < 1 or self.size < 16 or self.fps <= 0:
            raise ValueError(f"need n_frames >= 1, size >= 16, fps > 0; got {self}")
        if not 0 <= self.yaw_deg <= 45:
            raise ValueError(f"yaw_deg must be in [0, 45], got {self.yaw_deg}")


BLINK_AT_S = 0.16
"""Length in seconds of each of :attr:`SynthSpec.blink_at`'s blinks (people's last 0.1-0.4 s)."""


def _smooth_noise(rng: np.random.Generator, n: int, fps: float, cutoff_hz: float, dims: int = 1) -> np.ndarray:
    """Gaussian noise ``[n, dims]`` low-passed at ``cutoff_hz`` (Gaussian kernel), unit std."""
    sigma = max(fps / (2 * math.pi * cutoff_hz), 0.5)
    half = int(math.ceil(4 * sigma))
    raw = rng.normal(size=(n + 2 * half, dims))
    k = np.exp(-0.5 * (np.arange(-half, half + 1) / sigma) ** 2)
    k /= k.sum()
    out = np.stack([np.convolve(raw[:, d], k, mode="valid") for d in range(dims)], 1)[:n]
    std = out.std(0, keepdims=True) if n > 1 else np.ones((1, dims))
    return out / np.where(std > 1e-9, std, 1.0) * (1.0 if n > 8 else 0.5)


def _one_blink(t: np.ndarray, start: float, duration: float) -> np.ndarray:
    """Closure ``[n]`` in 0..1 of one blink at ``start`` s lasting ``duration`` s (raised cosine; ``t`` [n] s)."""
    phase = (t - start) / duration
    inside = (phase >= 0) & (phase <= 1)
    return np.where(inside, 0.5 - 0.5 * np.cos(2 * np.pi * np.clip(phase, 0.0, 1.0)), 0.0)


def _blink_curve(rng: np.random.Generator, n: int, fps: float) -> np.ndarray:
    """Eyelid closure ``[n]`` in 0..1: raised-cosine blinks of ~150 ms every 3-5 s."""
    t = np.arange(n) / fps
    out = np.zeros(n)
    next_blink = rng.uniform(0.5, 2.5)
    while next_blink < t[-1] + 1:
        duration = rng.uniform(0.12, 0.18)
        out = np.maximum(out, _one_blink(t, next_blink, duration))
        next_blink += rng.uniform(3.0, 5.0)
    return out


def _wink_curve(t: np.ndarray, start: float, hold: float, ramp: float = 0.1) -> np.ndarray:
    """Closure ``[n]`` in 0..1 of one wink: raised-cosine ramps of ``ramp`` s around ``hold`` s shut."""
    up = np.clip((t - start) / ramp, 0.0, 1.0)
    down = np.clip((start + ramp + hold + ramp - t) / ramp, 0.0, 1.0)
    return 0.5 - 0.5 * np.cos(np.pi * np.minimum(up, down))


def _r6(axis_angle: np.ndarray) -> np.ndarray:
    m = axis_angle_to_matrix(torch.as_tensor(axis_angle, dtype=torch.float64))
    return matrix_to_rotation_6d(m).numpy()


def _model_of(model: FLAME | FaceModelData) -> FLAME:
    return model if isinstance(model, FLAME) else FLAME(model)


def generate_params(model: FLAME | FaceModelData, spec: SynthSpec) -> dict[str, np.ndarray]:
    """Per-frame ground-truth parameters for ``spec`` (``N = spec.n_frames``).

    Returns float32 arrays: ``shape [N,n_shape]`` (the same row every frame), ``expression
    [N,n_exp]``, ``jaw [N,6]``, ``eyes [N,12]``, ``eyelids [N,2]``, ``neck [N,6]`` and ``rotation
    [N,6]`` (identity: head pose is in the extrinsics), ``translation [N,3]`` (zeros), ``K [N,3,3]``
    (pixels, fixed), ``R [N,3,3]``, ``t [N,3]`` (OpenCV world-to-camera, metres), ``head_pose
    [N,3]`` (yaw, pitch, roll in radians), and ``img_size`` int64 ``[2]`` (H, W), ``fps`` float64.
    """
    flame = _model_of(model)
    rng = np.random.default_rng(spec.seed)
    n, fps = spec.n_frames, spec.fps
    t = np.arange(n) / fps
    n_shape, n_exp = flame.n_shape, flame.n_expression
    shape = (rng.normal(size=n_shape) * spec.identity_scale).astype(np.float32)

    # head pose: slow sinusoids (0.05-0.3 Hz) plus low-passed noise, within the amplitudes
    def slow(amplitude_deg: float) -> np.ndarray:
        f1, f2 = rng.uniform(0.05, 0.15), rng.uniform(0.15, 0.3)
        p1, p2 = rng.uniform(0, 2 * np.pi, 2)
        wave = 0.6 * np.sin(2 * np.pi * f1 * t + p1) + 0.25 * np.sin(2 * np.pi * f2 * t + p2)
        wave = wave + 0.15 * _smooth_noise(rng, n, fps, 0.4)[:, 0]
        return np.deg2rad(amplitude_deg) * np.clip(wave, -1.0, 1.0)

    yaw, pitch, roll = slow(spec.yaw_deg), slow(spec.pitch_deg), slow(spec.roll_deg)

    # talking: syllables at 3-5 Hz under a slower phrase envelope
    syll_hz = rng.uniform(3.0, 5.0)
    phase = 2 * np.pi * syll_hz * t + rng.uniform(0, 2 * np.pi) + 0.8 * _smooth_noise(rng, n, fps, 0.5)[:, 0]
    syll = 0.5 - 0.5 * np.cos(phase)
    envelope = np.clip(0.6 + 0.6 * _smooth_noise(rng, n, fps, 0.4)[:, 0], 0.0, 1.0)
    opening = (syll * envelope) if spec.talking else np.zeros(n)
    jaw_angle = 0.02 + 0.16 * opening                                  # radians about x
    jaw = _r6(np.stack([jaw_angle, np.zeros(n), np.zeros(n)], 1))

    expression = np.zeros((n, n_exp))
    k = min(n_exp, 10)
    expression[:, :k] = 0.25 * _smooth_noise(rng, n, fps, 0.7, k) / (1 + np.arange(k))
    if spec.talking:
        expression[:, 0] += 0.6 * opening                               # stand-in: mouth open
        if n_exp > 4:
            expression[:, 4] += 0.3 * np.clip(_smooth_noise(rng, n, fps, 1.5)[:, 0], 0, None)  # rounding
    if n_exp > 1:
        expression[:, 1] += 0.3 + 0.2 * _smooth_noise(rng, n, fps, 0.2)[:, 0]                 # slight smile

    blink = _blink_curve(rng, n, fps) if spec.blinks else np.zeros(n)
    for start in spec.blink_at:
        blink = np.maximum(blink, _one_blink(t, start, BLINK_AT_S))
    eyelids = np.stack([blink, blink], 1)
    for start, hold, eye in spec.winks:
        eyelids[:, int(eye)] = np.maximum(eyelids[:, int(eye)], _wink_curve(t, start, hold))
    gaze = 0.12 * np.clip(_smooth_noise(rng, n, fps, 1.0, 2), -2, 2)  # pitch, yaw of both eyes
    eye_rot = _r6(np.stack([gaze[:, 0], gaze[:, 1], np.zeros(n)], 1))
    eyes = np.concatenate([eye_rot, eye_rot], 1)

    # camera: fixed intrinsics; head pose about the neck joint in the extrinsics
    size = spec.size
    focal = spec.focal if spec.focal is not None else 4.5 * size
    v0 = flame.v_template.double().cpu().numpy()
    height_m = float(np.ptp(v0[:, 1]))
    distance = focal * height_m / (spec.face_fill * size)
    centre = 0.5 * (v0.min(0) + v0.max(0))
    pivot = _neck_pivot(flame)
    flip = np.diag([1.0, -1.0, -1.0])                                    # model (+y up, +z out) -> OpenCV
    H = axis_angle_to_matrix(torch.as_tensor(np.stack([pitch, yaw, np.zeros(n)], 1))).numpy()
    H = axis_angle_to_matrix(torch.as_tensor(np.stack([np.zeros(n), np.zeros(n), roll], 1))).numpy() @ H
    bob = 0.004 * _smooth_noise(rng, n, fps, 0.5, 3)
    R = flip[None] @ H
    t_cam = (flip @ pivot)[None] - np.einsum("nij,j->ni", R, pivot) - (flip @ centre)[None] + [0.0, 0.0, distance]
    t_cam = t_cam + bob * np.array([1.0, 1.0, 0.5])
    K = np.array([[focal, 0, size / 2], [0, focal, size / 2], [0, 0, 1.0]])
    ident6 = np.tile(np.array([1.0, 0, 0, 0, 1, 0]), (n, 1))
    f32 = np.float32
    return {
        "shape": np.tile(shape, (n, 1)), "expression": expression.astype(f32), "jaw": jaw.astype(f32),
        "eyes": eyes.astype(f32), "eyelids": eyelids.astype(f32), "neck": ident6.astype(f32),
        "rotation": ident6.astype(f32), "translation": np.zeros((n, 3), f32),
        "K": np.tile(K, (n, 1, 1)).astype(f32), "R": R.astype(f32), "t": t_cam.astype(f32),
        "head_pose": np.stack([yaw, pitch, roll], 1).astype(f32),
        "img_size": np.array([size, size], np.int64), "fps": np.float64(fps),
    }


def _neck_pivot(flame: FLAME) -> np.ndarray:
    """Rest position of the neck joint (the head turns about it)."""
    J = flame.J_regressor.double().cpu() @ flame.v_template.double().cpu()
    return J[min(1, J.shape[0] - 1)].numpy()


_FRAME_KEYS = ("shape", "expression", "jaw", "eyes", "eyelids", "neck", "rotation", "translation")


# ---------------------------------------------------------------------------------------------
# Appearance: a procedural albedo in UV space

_SKIN = np.array([0.80, 0.60, 0.50])
_LIPS = np.array([0.66, 0.33, 0.33])
_BROW = np.array([0.28, 0.20, 0.15])
_EYE_WHITE = np.array([0.92, 0.90, 0.88])
_MOUTH = np.array([0.22, 0.06, 0.06])
_IRIS = np.array([0.25, 0.35, 0.45])
_PUPIL = np.array([0.05, 0.05, 0.06])


def _landmark_uv(data: FaceModelData) -> dict[int, np.ndarray]:
    """UV position of every MediaPipe landmark the model embeds (via ``ft``/``vt``)."""
    if data.vt is None or data.ft is None or data.mp_face_idx is None:
        return {}
    tri = data.vt[data.ft[data.mp_face_idx]]                            # [L,3,2]
    uv = np.einsum("lc,lck->lk", data.mp_bary, tri)
    return {int(i): uv[j] for j, i in enumerate(data.mp_index)}


def albedo_texture(data: FaceModelData, size: int = 512, seed: int = 0) -> np.ndarray:
    """Procedural albedo ``[size,size,3]`` float32 in 0..1, in the model's UV space (row 0 = v=1):
    skin with blotchy low-frequency variation, lips, brows, eye whites and mouth interior placed
    by the MediaPipe landmarks the model embeds (features are skipped when landmarks are missing)."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed + 7)
    small = rng.normal(size=(size // 16, size // 16, 1))
    blotch = np.asarray(Image.fromarray(((small[..., 0] * 0.5 + 0.5).clip(0, 1) * 255).astype(np.uint8))
                        .resize((size, size), Image.BICUBIC), np.float32)[..., None] / 255.0
    tex = _SKIN[None, None, :] * (0.94 + 0.10 * blotch)
    uv = _landmark_uv(data)

    def poly(indices: tuple[int, ...]) -> list[tuple[float, float]] | None:
        if not all(i in uv for i in indices):
            return None
        return [(float(uv[i][0] * size), float((1.0 - uv[i][1]) * size)) for i in indices]

    def paint(mask_polys: list, colour: np.ndarray, width: int = 0, alpha: float = 1.0) -> None:
        nonlocal tex
        img = Image.new("L", (size, size), 0)
        draw = ImageDraw.Draw(img)
        for p in mask_polys:
            if p is None:
                continue
            if width:
                draw.line(p, fill=255, width=width, joint="curve")
            else:
                draw.polygon(p, fill=255)
        m = np.asarray(img, np.float32)[..., None] / 255.0 * alpha
        tex = tex * (1 - m) + colour[None, None, :] * m

    s = _standin
    lips = poly(s.LIPS_OUTER_UPPER + tuple(reversed(s.LIPS_OUTER_LOWER[1:-1])))
    mouth = poly(s.LIPS_INNER_UPPER + tuple(reversed(s.LIPS_INNER_LOWER[1:-1])))
    paint([lips], _LIPS, alpha=0.85)
    paint([mouth], _MOUTH)
    paint([poly((70, 63, 105, 66, 107, 55, 65, 52, 53, 46)), poly((300, 293, 334, 296, 336, 285, 295, 282, 283, 276))],
          _BROW, alpha=0.85)
    paint([poly(s.RIGHT_EYE_UPPER + tuple(reversed(s.RIGHT_EYE_LOWER[1:-1]))),
           poly(s.LEFT_EYE_UPPER + tuple(reversed(s.LEFT_EYE_LOWER[1:-1])))], _EYE_WHITE)
    return tex.clip(0, 1).astype(np.float32)


def _eyeball_shading(data: FaceModelData) -> tuple[np.ndarray, np.ndarray]:
    """``(faces_on_eyeball bool [F], cos_from_gaze [V])``: for vertices of the ``left_eyeball`` /
    ``right_eyeball`` masks, the cosine between the rest-pose direction from the eye joint and the
    gaze (+z); the renderer draws pupil above ``cos 13 deg``, iris above ``cos 28 deg`` and eye
    white below. Works for FLAME's eyeball spheres and the stand-in's iris discs alike."""
    cos = np.zeros(data.n_vertices)
    on = np.zeros(data.n_vertices, bool)
    joints = data.J_regressor @ data.v_template
    for key, joint in (("left_eyeball", 3), ("right_eyeball", 4)):
        if key in data.masks and joint < joints.shape[0]:
            idx = data.masks[key]
            d = data.v_template[idx] - joints[joint]
            cos[idx] = d[:, 2] / np.maximum(np.linalg.norm(d, axis=1), 1e-12)
            on[idx] = True
    return on[data.faces].all(1), cos


def vertex_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Area-weighted unit vertex normals ``[B,V,3]`` of ``vertices [B,V,3]``, ``faces [F,3]``."""
    tri = vertices[:, faces]                                            # [B,F,3,3]
    fn = torch.cross(tri[:, :, 1] - tri[:, :, 0], tri[:, :, 2] - tri[:, :, 0], dim=-1)
    vn = torch.zeros_like(vertices)
    for c in range(3):
        vn.index_add_(1, faces[:, c], fn)
    return torch.nn.functional.normalize(vn, dim=-1, eps=1e-12)


def _eye_openings(data: FaceModelData) -> list[tuple[np.ndarray, int, int]] | None:
    """Stand-in eyes: ``[(faces in the opening bool [F], eye joint, iris-centre vertex)]`` for the
    left and right eye, or ``None`` for models without ``*_eye_opening`` masks (FLAME)."""
    out = []
    for side, joint in (("left", 3), ("right", 4)):
        opening, ball = data.masks.get(f"{side}_eye_opening"), data.masks.get(f"{side}_eyeball")
        if opening is None or ball is None or len(ball) == 0:
            return None
        inside = np.zeros(data.n_vertices, bool)
        inside[opening] = True
        out.append((inside[data.faces].all(1), joint, int(ball[0])))
    return out


def render_frames(flame: FLAME, data: FaceModelData, params: dict[str, np.ndarray], start: int, stop: int,
                  texture: torch.Tensor, background: tuple[float, float, float] = (0.32, 0.38, 0.44),
                  light: tuple[float, float, float] = (-0.4, -0.6, -1.0)) -> torch.Tensor:
    """Render frames ``start:stop`` -> uint8 ``[B,H,W,3]`` on ``flame``'s device.

    ``texture`` ``[3,T,T]`` float in UV space (row 0 = v=1). Shading: ``albedo * (0.35 + 0.65 *
    max(0, n . l))`` with ``l`` the unit light direction towards the light in camera coordinates
    (default: above-left, in front). Eyes: on FLAME the eyeball spheres are drawn white / iris /
    pupil by their rest-pose angle from the gaze axis; on the stand-in the iris discs are not
    drawn, and the eye openings are coloured by the angle between each surface point and the
    current gaze (eye joint -> iris centre), so the lids clip the iris and a blink hides it."""
    from stages.face.raster import Fragments, interpolate, perspective_correct, rasterize

    size_h, size_w = (int(x) for x in params["img_size"])
    sl = slice(start, stop)
    with torch.no_grad():
        dev = flame.v_template.device
        out = flame(**{k: torch.as_tensor(params[k][sl], device=dev) for k in _FRAME_KEYS})
        K, R, t = (torch.as_tensor(params[k][sl], device=dev) for k in ("K", "R", "t"))
        pix, depth = project(out.vertices, K, R, t)
        verts_pix = torch.cat([pix, depth[..., None]], -1)
        eye_faces, eye_cos = _eyeball_shading(data)
        openings = _eye_openings(data)
        keep = np.ones(data.faces.shape[0], bool)
        if openings is not None:
            keep &= ~eye_faces                      # stand-in iris discs: landmarks only, not drawn
        keep_t = torch.as_tensor(np.flatnonzero(keep), device=dev)
        faces = flame.faces[keep_t]
        frags = rasterize(verts_pix, faces, size_h, size_w, cull_backfaces=True)
        bary = perspective_correct(frags.bary, verts_pix, faces, frags.face_idx)
        frags_pc = Fragments(frags.face_idx, bary, frags.depth)
        fid = frags.face_idx.clamp(min=0)
        normals = vertex_normals(out.vertices, flame.faces) @ R.transpose(-1, -2)  # camera space
        n_pix = torch.nn.functional.normalize(interpolate(normals, faces, frags_pc), dim=-1, eps=1e-12)
        l_dir = torch.nn.functional.normalize(torch.tensor(light, dtype=n_pix.dtype, device=dev), dim=0)
        shade = 0.35 + 0.65 * (n_pix @ l_dir).clamp(min=0.0)
        if data.vt is not None and data.ft is not None:
            # per-corner UVs (ft may index a different vertex set than faces)
            vt = torch.as_tensor(data.vt, dtype=n_pix.dtype, device=dev)
            ft = torch.as_tensor(data.ft, dtype=torch.long, device=dev)[keep_t]
            uv = (vt[ft][fid] * bary[..., None]).sum(-2)                        # [B,H,W,2]
            grid = torch.stack([uv[..., 0] * 2 - 1, 1 - uv[..., 1] * 2], -1)
            B = uv.shape[0]
            albedo = torch.nn.functional.grid_sample(texture.to(dev)[None].expand(B, -1, -1, -1).to(grid.dtype), grid,
                                                     mode="bilinear", align_corners=False).permute(0, 2, 3, 1)
        else:
            albedo = torch.as_tensor(_SKIN, dtype=n_pix.dtype, device=dev).expand(*shade.shape, 3)
        const = {k: torch.as_tensor(c, dtype=albedo.dtype, device=dev)
                 for k, c in (("pupil", _PUPIL), ("iris", _IRIS), ("white", _EYE_WHITE))}

        def eye_colour(cos: torch.Tensor) -> torch.Tensor:
            return torch.where(cos > math.cos(math.radians(13)), const["pupil"],
                               torch.where(cos > math.cos(math.radians(28)), const["iris"], const["white"]))

        if openings is not None:
            point = interpolate(out.vertices, faces, frags_pc)                  # [B,H,W,3] world
            for on_faces, joint, iris_centre in openings:
                on = torch.as_tensor(on_faces[keep], device=dev)[fid] & frags.mask
                centre = out.joints[:, joint]                                   # [B,3]
                gaze = torch.nn.functional.normalize(out.vertices[:, iris_centre] - centre, dim=-1)
                d = torch.nn.functional.normalize(point - centre[:, None, None], dim=-1, eps=1e-12)
                cos = (d * gaze[:, None, None]).sum(-1, keepdim=True)
                albedo = torch.where(on[..., None], eye_colour(cos), albedo)
        elif eye_faces.any():
            on = torch.as_tensor(eye_faces, device=dev)[keep_t][fid] & frags.mask
            cos = interpolate(torch.as_tensor(eye_cos[:, None], dtype=albedo.dtype, device=dev), faces, frags_pc)
            albedo = torch.where(on[..., None], eye_colour(cos), albedo)
        colour = albedo * shade[..., None]
        bg = torch.as_tensor(background, dtype=colour.dtype, device=dev)
        img = torch.where(frags.mask[..., None], colour, bg)
        return (img.clamp(0, 1) * 255 + 0.5).to(torch.uint8)


def render_video(model: FLAME | FaceModelData, params: dict[str, np.ndarray], out_mp4: Path | str, *,
                 data: FaceModelData | None = None, gt_npz: Path | str | None = None, batch: int = 16,
                 crf: int = 18, texture_size: int = 512, seed: int = 0,
                 device: torch.device | str = "cpu", spec: SynthSpec | None = None) -> dict[str, Any]:
    """Render ``params`` (from :func:`generate_params`) to an H.264 ``out_mp4`` and save the
    ground truth to ``gt_npz`` (default: ``out_mp4`` with ``.npz``).

    Args:
        model: a :class:`FaceModelData` (preferred: the renderer needs its UV layout, masks and
            MediaPipe embedding), or a :class:`FLAME` built from ``data``.
        data: the model's data when ``model`` is a FLAME module.
        batch: frames rasterised per step.
        crf: x264 quality (lower is better; 18 is visually lossless).
        device: where to run FLAME and the rasteriser (``"cuda"`` for speed; CPU and CUDA
            pixels may differ in the last bit of shading).
        spec: the :class:`SynthSpec` the parameters came from; saved as ``spec_json`` in the npz.

    The ``.npz`` holds every array of ``params`` plus ``landmarks_mp [N,L,2]`` (pixels),
    ``landmarks_mp_depth [N,L]`` (metres), ``mp_index [L]``, ``landmarks478 [N,478,2]`` (NaN
    where the model does not embed a MediaPipe point), ``landmarks68 [N,68,2]`` and
    ``model_name`` (and ``spec_json``). Returns a summary dict
    (``frames``, ``size``, ``fps``, ``mp4``, ``npz``, ``seconds_per_frame``).
    """
    import time

    import av

    if isinstance(model, FaceModelData):
        data, flame = model, FLAME(model)
    else:
        if data is None:
            raise ValueError("render_video(FLAME, ...) needs data= (the model's FaceModelData)")
        flame = model
    flame = flame.float().to(device)
    out_mp4 = Path(out_mp4)
    gt_npz = Path(gt_npz) if gt_npz is not None else out_mp4.with_suffix(".npz")
    n = int(params["R"].shape[0])
    h, w = (int(x) for x in params["img_size"])
    texture = torch.as_tensor(albedo_texture(data, texture_size, seed)).permute(2, 0, 1).contiguous()
    lm_mp = np.zeros((n, flame.mp_index.shape[0], 2), np.float32)
    lm_mp_depth = np.zeros((n, flame.mp_index.shape[0]), np.float32)
    lm68 = np.zeros((n, flame.lmk68_vert_idx.shape[0], 2), np.float32)
    started = time.perf_counter()
    out_mp4.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(out_mp4), mode="w") as container:
        fps = params.get("fps", 25.0)
        rate = int(round(float(fps))) if abs(float(fps) - round(float(fps))) < 1e-6 else float(fps)
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"crf": str(crf), "preset": "medium", "threads": "1"}
        for start in range(0, n, batch):
            stop = min(n, start + batch)
            frames = render_frames(flame, data, params, start, stop, texture)
            with torch.no_grad():
                sl = slice(start, stop)
                dev = flame.v_template.device
                out = flame(**{k: torch.as_tensor(params[k][sl], device=dev) for k in _FRAME_KEYS})
                K, R, t = (torch.as_tensor(params[k][sl], device=dev) for k in ("K", "R", "t"))
                pix, depth = project(out.landmarks_mp, K, R, t)
                lm_mp[sl], lm_mp_depth[sl] = pix.cpu().numpy(), depth.cpu().numpy()
                lm68[sl] = project(out.landmarks_68, K, R, t)[0].cpu().numpy()
            for img in frames.cpu().numpy():
                for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")):
                    container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    elapsed = time.perf_counter() - started
    mp_index = flame.mp_index.cpu().numpy()
    lm478 = np.full((n, 478, 2), np.nan, np.float32)
    valid = mp_index < 478
    lm478[:, mp_index[valid]] = lm_mp[:, valid]
    gt = dict(params)
    gt.update(landmarks_mp=lm_mp, landmarks_mp_depth=lm_mp_depth, mp_index=mp_index, landmarks478=lm478,
              landmarks68=lm68, model_name=np.array(data.name))
    if spec is not None:
        gt["spec_json"] = np.array(json.dumps(asdict(spec)))
    with open(gt_npz, "wb") as fh:
        np.savez_compressed(fh, **gt)
    return {"frames": n, "size": [h, w], "fps": float(params.get("fps", 25.0)), "mp4": str(out_mp4),
            "npz": str(gt_npz), "seconds_per_frame": elapsed / max(n, 1)}


def spec_dict(spec: SynthSpec) -> dict[str, Any]:
    """The spec as plain data (for reports)."""
    return asdict(spec)
