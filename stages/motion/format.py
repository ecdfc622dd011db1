"""The motion file: per-frame FLAME parameters (and optionally a camera) at 25 frames/s.

:func:`load_motion` reads three kinds of input (see ``docs/motion-format.md``):

1. this project's own ``motion.npz`` (``format == "avatar-motion/1"``; written by :func:`save_motion`,
   by ``avatar drive`` and by assemble into ``dataset/motion.npz``);
2. a FLAME parameter ``.npz`` as speech-to-FLAME models and face trackers write it: ``expr`` [N, E]
   (E <= 100, zero-padded; also ``exp``/``expression``), ``jaw_pose`` [N, 3] axis-angle or ``jaw``
   [N, 6] 6D, optional ``eye_pose`` [N, 6] (right, left axis-angle), ``eyelids`` [N, 2], head rotation
   ``global_pose`` or ``head_pose`` [N, 3] axis-angle and ``transl``/``translation``/``trans`` [N, 3]
   (metres), and ``fps`` (default 25; other rates are resampled to 25);
3. a folder of metrical-tracker ``.frame`` files (25 frames/s, the camera in ``opencv``).

Conventions are the tracker's (:mod:`stages.tracking.params`): rotations as 6D (first two rows of
the matrix), head pose in the OpenCV world-to-camera extrinsics ``x_cam = R @ x + t``. A file with a
FLAME head rotation ``R_h`` and translation ``T_h`` instead gets the camera of a frontal viewer one
metre away: ``R = F @ R_h``, ``t = F @ T_h + [0, 0, 1]`` with ``F = diag(1, -1, -1)``; its intrinsics
stay unknown (``K is None``), so only its motion relative to its own median pose is meaningful.

A bad file raises :class:`~stages.errors.BadInput` with one line naming the key, the shape found
and the shape expected.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from stages.errors import BadInput, bad_input
from stages.face.rotation import axis_angle_to_matrix, matrix_to_rotation_6d, rotation_6d_to_matrix

FPS = 25.0
FORMAT = "avatar-motion/1"
N_EXP = 100
IDENTITY_6D = np.array([1, 0, 0, 0, 1, 0], np.float32)
FRONTAL = np.diag([1.0, -1.0, -1.0]).astype(np.float32)
DEFAULT_DISTANCE = 1.0  # metres: the camera given to files that carry only a head pose

_EXP_KEYS = ("expr", "exp", "expression")
_HEAD_KEYS = ("global_pose", "head_pose")
_TRANSL_KEYS = ("transl", "translation", "trans")


@dataclass
class Motion:
    """``N`` frames of FLAME motion at ``fps`` frames/s (float32 numpy arrays).

    Attributes:
        exp: [N, 100] expression coefficients.
        jaw: [N, 6] jaw rotation (6D).
        eyes: [N, 12] right then left eyeball rotation (6D each).
        eyelids: [N, 2] eyelid closure (metrical-tracker's order), 0 open .. 1 closed.
        R: [N, 3, 3] or None: OpenCV world-to-camera rotation (the head pose lives here).
        t: [N, 3] or None: camera translation, metres.
        K: [3, 3] or None: intrinsics in pixels of an ``image_size`` x ``image_size`` image.
        image_size: the square image ``K`` refers to (px).
        fps: frames per second (25 after :func:`load_motion`).
        shape: [S] or None: the identity the motion was tracked with (informational).
    """

    exp: np.ndarray
    jaw: np.ndarray
    eyes: np.ndarray
    eyelids: np.ndarray
    R: np.ndarray | None = None
    t: np.ndarray | None = None
    K: np.ndarray | None = None
    image_size: int = 512
    fps: float = FPS
    shape: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.exp.shape[0])

    @property
    def has_camera(self) -> bool:
        return self.R is not None and self.t is not None

    @classmethod
    def neutral(cls, n: int) -> "Motion":
        """``n`` frames of FLAME's neutral face (zero expression, identity rotations), no camera."""
        return cls(exp=np.zeros((n, N_EXP), np.float32), jaw=np.tile(IDENTITY_6D, (n, 1)),
                   eyes=np.tile(IDENTITY_6D, (n, 2)), eyelids=np.zeros((n, 2), np.float32))

    def select(self, index: np.ndarray | slice) -> "Motion":
        """The frames ``index`` (any numpy index along the frame axis)."""
        cam = {} if not self.has_camera else {"R": self.R[index], "t": self.t[index]}
        return replace(self, exp=self.exp[index], jaw=self.jaw[index], eyes=self.eyes[index],
                       eyelids=self.eyelids[index], **cam)

    def cond(self) -> np.ndarray:
        """[N, 120] the avatar's condition vector (expression, jaw, eyes, eyelids)."""
        return np.concatenate([self.exp, self.jaw, self.eyes, self.eyelids], axis=1).astype(np.float32)


# -- reading ----------------------------------------------------------------------------------------


def _shape_str(shape: tuple[int, ...]) -> str:
    return "[" + ", ".join(str(s) for s in shape) + "]"


def _check(path: Path, key: str, a: np.ndarray, expected: tuple, what: str = "") -> np.ndarray:
    """``a`` as float32 when its shape matches ``expected`` (``None`` = any length), else BadInput."""
    a = np.asarray(a)
    ok = a.ndim == len(expected) and all(e is None or e == s for e, s in zip(expected, a.shape))
    exp_str = "[" + ", ".join("N" if e is None else str(e) for e in expected) + "]" + (f" ({what})" if what else "")
    if not ok or not np.issubdtype(a.dtype, np.number):
        raise bad_input(path, f"key {key!r} has shape {_shape_str(a.shape)} ({a.dtype}), expected {exp_str}",
                        "write it with that shape (see docs/motion-format.md)")
    a = a.astype(np.float32)
    if not np.all(np.isfinite(a)):
        raise bad_input(path, f"key {key!r} has non-finite values", "write finite numbers (see docs/motion-format.md)")
    return a


def _r6_from_axis_angle(aa: np.ndarray) -> np.ndarray:
    """[..., 3] axis-angle -> [..., 6]."""
    return matrix_to_rotation_6d(axis_angle_to_matrix(torch.from_numpy(aa).double())).float().numpy()


def _norm6(a: np.ndarray) -> np.ndarray:
    """[..., 6k] 6D rotations made proper (Gram-Schmidt), same shape."""
    shp = a.shape
    r = rotation_6d_to_matrix(torch.from_numpy(np.asarray(a, np.float32).reshape(-1, 6)))
    return matrix_to_rotation_6d(r).numpy().reshape(shp).astype(np.float32)


def _orthonormal(R: np.ndarray) -> np.ndarray:
    """[..., 3, 3] the nearest rotation matrices (Gram-Schmidt of the first two rows)."""
    return rotation_6d_to_matrix(torch.from_numpy(np.asarray(R, np.float64)[..., :2, :].reshape(*R.shape[:-2], 6))
                                 ).float().numpy()


def _first(z: dict, keys: tuple[str, ...]) -> tuple[str | None, np.ndarray | None]:
    for k in keys:
        if k in z:
            return k, z[k]
    return None, None


def _from_own(path: Path, z: dict) -> Motion:
    exp = _check(path, "exp", z["exp"], (None, N_EXP))
    n = exp.shape[0]
    m = Motion(exp=exp, jaw=_check(path, "jaw", z["jaw"], (n, 6)), eyes=_check(path, "eyes", z["eyes"], (n, 12)),
               eyelids=_check(path, "eyelids", z["eyelids"], (n, 2)), fps=float(np.asarray(z.get("fps", FPS))),
               image_size=int(np.asarray(z.get("image_size", 512))))
    if "R" in z:
        m.R = _orthonormal(_check(path, "R", z["R"], (n, 3, 3)))
        m.t = _check(path, "t", z["t"], (n, 3)) if "t" in z else None
        if m.t is None:
            raise bad_input(path, "key 't' is missing while 'R' is there, expected [N, 3]", "write both or neither")
    if "K" in z:
        m.K = _check(path, "K", z["K"], (3, 3))
    if "shape" in z:
        m.shape = _check(path, "shape", z["shape"], (None,))
    return m


def _from_flame_npz(path: Path, z: dict) -> Motion:
    ek, exp = _first(z, _EXP_KEYS)
    lengths = {k: np.asarray(v).shape[0] for k, v in z.items() if np.asarray(v).ndim >= 1 and k != "fps"}
    if ek is None and "jaw_pose" not in z and "jaw" not in z:
        raise bad_input(path, f"no key 'expr' [N, E<=100] and no 'jaw_pose' [N, 3] (keys found: "
                        f"{', '.join(sorted(z)) or 'none'})", "write a FLAME parameter sequence as in docs/motion-format.md")
    if ek is not None:
        exp = np.asarray(exp)
        if exp.ndim != 2 or exp.shape[1] > N_EXP:
            raise bad_input(path, f"key {ek!r} has shape {_shape_str(exp.shape)}, expected [N, E] with E <= {N_EXP}",
                            "write at most 100 FLAME expression coefficients per frame")
        exp = _check(path, ek, exp, (None, exp.shape[1]))
        n = exp.shape[0]
        exp = np.pad(exp, ((0, 0), (0, N_EXP - exp.shape[1])))
    else:
        n = lengths.get("jaw_pose", lengths.get("jaw"))
        exp = np.zeros((n, N_EXP), np.float32)
    if n == 0:
        raise bad_input(path, f"key {ek or 'jaw_pose'!r} has 0 frames, expected [N, ...] with N >= 1",
                        "write at least one frame")
    m = Motion.neutral(n)
    m.exp = exp
    if "jaw_pose" in z:
        m.jaw = _r6_from_axis_angle(_check(path, "jaw_pose", z["jaw_pose"], (n, 3), "axis-angle"))
    elif "jaw" in z:
        m.jaw = _norm6(_check(path, "jaw", z["jaw"], (n, 6), "6D"))
    if "eye_pose" in z:
        eye = _check(path, "eye_pose", z["eye_pose"], (n, 6), "right, left axis-angle")
        m.eyes = _r6_from_axis_angle(eye.reshape(n, 2, 3)).reshape(n, 12)
    elif "eyes" in z:
        m.eyes = _norm6(_check(path, "eyes", z["eyes"], (n, 12), "right, left 6D"))
    if "eyelids" in z:
        m.eyelids = _check(path, "eyelids", z["eyelids"], (n, 2))
    hk, head = _first(z, _HEAD_KEYS)
    tk, transl = _first(z, _TRANSL_KEYS)
    if hk is not None or tk is not None:
        Rh = (axis_angle_to_matrix(torch.from_numpy(_check(path, hk, head, (n, 3), "axis-angle")).double()).float().numpy()
              if hk is not None else np.tile(np.eye(3, dtype=np.float32), (n, 1, 1)))
        T = _check(path, tk, transl, (n, 3), "metres") if tk is not None else np.zeros((n, 3), np.float32)
        m.R = np.einsum("ij,njk->nik", FRONTAL, Rh).astype(np.float32)
        m.t = (T @ FRONTAL.T + np.array([0, 0, DEFAULT_DISTANCE], np.float32)).astype(np.float32)
    fps = np.asarray(z.get("fps", FPS))
    if fps.size != 1 or not np.isfinite(float(fps)) or float(fps) <= 0:
        raise bad_input(path, f"key 'fps' has shape {_shape_str(fps.shape)} value {fps.ravel()[:3].tolist()}, "
                        "expected [] (one positive number)", "write fps as a single number, e.g. 25")
    m.fps = float(fps)
    return m


def _from_frames(path: Path) -> Motion:
    from stages.dataset.frame_file import read_frame, stack_frames

    files = sorted(path.glob("*.frame")) or sorted((path / "checkpoint").glob("*.frame"))
    if not files:
        raise bad_input(path, "a folder with no .frame files", "give a folder of metrical-tracker .frame files "
                        "(its checkpoint/), a motion .npz, or our motion.npz")
    try:
        frames = [read_frame(p) for p in files]
    except Exception as e:  # torch.load of something else
        raise bad_input(path, f"an unreadable .frame file ({type(e).__name__}: {e})".replace("\n", " "),
                        "re-run tracking or assemble") from None
    need = {"flame.exp": (N_EXP,), "flame.jaw": (6,), "flame.eyes": (12,), "flame.eyelids": (2,)}
    for f, p in zip(frames, files):
        for key, shp in need.items():
            g, k = key.split(".")
            v = f.get(g, {}).get(k) if isinstance(f.get(g), dict) else None
            if v is None:
                raise bad_input(p, f"key {key!r} is missing, expected [1, {shp[0]}]", "re-run tracking or assemble")
            if np.asarray(v).size != shp[0]:
                raise bad_input(p, f"key {key!r} has shape {_shape_str(np.asarray(v).shape)}, expected [1, {shp[0]}]",
                                "re-run tracking or assemble")
    seq = stack_frames(frames)
    m = Motion(exp=seq["flame.exp"], jaw=seq["flame.jaw"], eyes=seq["flame.eyes"], eyelids=seq["flame.eyelids"])
    if "opencv.R" in seq and "opencv.t" in seq:
        m.R, m.t = _orthonormal(seq["opencv.R"]), seq["opencv.t"]
    if "opencv.K" in seq:
        m.K = seq["opencv.K"][0]
        size = frames[0].get("img_size")
        m.image_size = int(np.asarray(size).reshape(-1)[0]) if size is not None else 512
    if "flame.shape" in seq:
        m.shape = seq["flame.shape"][0]
    return m


def load_motion(path: str | Path) -> Motion:
    """Read a motion from ``path`` (see the module docstring), resampled to 25 frames/s.

    Raises:
        BadInput: missing file, unknown kind, or a key with the wrong shape (one line naming the
            key, the shape found and the shape expected).
    """
    path = Path(path)
    if path.is_dir():
        return resample(_from_frames(path), FPS)
    if not path.is_file():
        raise bad_input(path, "no such file or folder", "give a motion .npz or a folder of .frame files")
    try:
        with np.load(path, allow_pickle=False) as npz:
            z = {k: npz[k] for k in npz.files}
    except Exception as e:
        raise bad_input(path, f"not an .npz file ({type(e).__name__})", "give a motion .npz (numpy.savez) or a "
                        "folder of .frame files") from None
    fmt = str(z.get("format", ""))
    m = _from_own(path, z) if fmt == FORMAT else _from_flame_npz(path, z)
    if len(m) == 0:
        raise bad_input(path, "key 'exp' has 0 frames, expected [N, 100] with N >= 1", "write at least one frame")
    return resample(m, FPS)


# -- resampling and writing ---------------------------------------------------------------------------


def resample(m: Motion, fps: float = FPS) -> Motion:
    """``m`` at ``fps`` frames/s: frame ``k`` shows time ``k / fps``; values are interpolated linearly
    (rotations too, then re-orthonormalised), over ``round(N * fps / m.fps)`` frames."""
    if abs(m.fps - fps) < 1e-6:
        return replace(m, fps=fps)
    n = len(m)
    out_n = max(1, int(round(n * fps / m.fps)))
    src = np.clip(np.arange(out_n) * m.fps / fps, 0, n - 1)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, n - 1)
    w = (src - lo).astype(np.float32)

    def lerp(a: np.ndarray) -> np.ndarray:
        ww = w.reshape(-1, *([1] * (a.ndim - 1)))
        return (a[lo] * (1 - ww) + a[hi] * ww).astype(np.float32)

    out = replace(m, exp=lerp(m.exp), jaw=_norm6(lerp(m.jaw)), eyes=_norm6(lerp(m.eyes)),
                  eyelids=lerp(m.eyelids), fps=fps)
    if m.has_camera:
        out.R, out.t = _orthonormal(lerp(m.R)), lerp(m.t)
    return out


def motion_bytes(m: Motion) -> bytes:
    """The ``.npz`` bytes of :func:`save_motion`."""
    arrays = {"format": np.array(FORMAT), "fps": np.float64(m.fps), "image_size": np.int64(m.image_size),
              "exp": m.exp.astype(np.float32), "jaw": m.jaw.astype(np.float32), "eyes": m.eyes.astype(np.float32),
              "eyelids": m.eyelids.astype(np.float32)}
    if m.has_camera:
        arrays.update(R=m.R.astype(np.float32), t=m.t.astype(np.float32))
    if m.K is not None:
        arrays["K"] = np.asarray(m.K, np.float32)
    if m.shape is not None:
        arrays["shape"] = np.asarray(m.shape, np.float32).reshape(-1)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def save_motion(path: str | Path, m: Motion) -> None:
    """Write ``m`` as our ``motion.npz`` (``format = "avatar-motion/1"``), atomically."""
    from stages.store.base import atomic_write_bytes

    atomic_write_bytes(Path(path), motion_bytes(m))


def check_motion_arg(path: Path) -> None:
    """Fail fast on a path that cannot be a motion (before anything is written)."""
    if not path.exists():
        raise BadInput(f"{path}: no such file or folder; give a motion .npz or a folder of .frame files")


def write_motion(path: str | Path, params: dict[str, np.ndarray], R: np.ndarray, K: np.ndarray,
                 shape: np.ndarray | None = None) -> Path:
    """Save tracked parameters (``exp``, ``jaw``, ``eyes``, ``eyelids``, ``t`` [N, ...]; ``R`` [N, 3, 3],
    ``K`` [3, 3] at 512 px) as our ``motion.npz`` at 25 fps; returns ``path``."""
    save_motion(path, Motion(exp=params["exp"], jaw=params["jaw"], eyes=params["eyes"], eyelids=params["eyelids"],
                             R=np.asarray(R, np.float32), t=np.asarray(params["t"], np.float32),
                             K=np.asarray(K, np.float32), shape=None if shape is None else np.asarray(shape)))
    return Path(path)
