"""Driver motion -> actor motion: expression transfer and head-pose transfer.

Expression (``transfer``):

- ``relative`` (default): ``out = driver - driver_neutral + actor_neutral`` for expression and
  eyelids; for the jaw and eye rotations ``R_out = R_drv @ R_drv_neutral^T @ R_actor_neutral``.
  A neutral is the per-parameter median over a clip (:func:`neutral_of`), or one chosen frame, or
  FLAME's zero (for motion files, whose zero already means "neutral").
- ``absolute``: the driver's values as they are.

Head pose (``pose``), all with the actor's intrinsics:

- ``relative`` (default): the driver's head motion relative to its median pose, applied around the
  actor's median camera: ``R = (R_i @ R_med^T) @ R_actor``, ``t = t_actor + s * (t_i - t_med)``, with
  ``s`` turning the driver's displacement into the same displacement in the actor's image (pixel
  scale ``f_drv z_actor / (z_med f_actor)`` across, depth ratio ``z_actor / z_med`` along the axis;
  1 for a driver without intrinsics, whose translations are metres);
- ``actor``: the actor's own camera sequence, played back and forth (no jump at the loop) or
  trimmed to the driver's length, as in dubbing;
- ``fixed``: the actor's median camera on every frame.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from stages.face.rotation import matrix_to_rotation_6d, rotation_6d_to_matrix
from stages.motion.format import Motion

TRANSFERS = ("relative", "absolute")
POSES = ("relative", "actor", "fixed")


@dataclass
class Neutral:
    """One frame of parameters taken as a face's rest state.

    Attributes:
        exp [100], jaw [6], eyes [12], eyelids [2]: as in :class:`Motion`.
        R [3, 3] | None, t [3] | None: the median camera.
    """

    exp: np.ndarray
    jaw: np.ndarray
    eyes: np.ndarray
    eyelids: np.ndarray
    R: np.ndarray | None = None
    t: np.ndarray | None = None


def _mat(r6: np.ndarray) -> np.ndarray:
    return rotation_6d_to_matrix(torch.from_numpy(np.asarray(r6, np.float32))).numpy()


def _r6(R: np.ndarray) -> np.ndarray:
    return matrix_to_rotation_6d(torch.from_numpy(np.asarray(R, np.float32))).numpy()


def median_rotation(R: np.ndarray) -> np.ndarray:
    """[N, 3, 3] -> [3, 3]: the element-wise median projected back onto the rotations (SVD)."""
    u, _, vt = np.linalg.svd(np.median(np.asarray(R, np.float64), axis=0))
    d = np.sign(np.linalg.det(u @ vt))
    return (u @ np.diag([1.0, 1.0, d]) @ vt).astype(np.float32)


def neutral_of(m: Motion, frame: int | None = None) -> Neutral:
    """The neutral of ``m``: its frame ``frame``, or the per-parameter median over all frames."""
    if frame is not None:
        f = m.select(slice(frame, frame + 1))
        return Neutral(f.exp[0], f.jaw[0], f.eyes[0], f.eyelids[0], None if f.R is None else f.R[0],
                       None if f.t is None else f.t[0])
    jaw = _r6(median_rotation(_mat(m.jaw)))
    eyes = np.concatenate([_r6(median_rotation(_mat(m.eyes[:, :6]))), _r6(median_rotation(_mat(m.eyes[:, 6:])))])
    return Neutral(np.median(m.exp, 0).astype(np.float32), jaw, eyes, np.median(m.eyelids, 0).astype(np.float32),
                   None if m.R is None else median_rotation(m.R), None if m.t is None else np.median(m.t, 0))


def zero_neutral() -> Neutral:
    """FLAME's zero: no expression, identity rotations, open eyes."""
    z = Motion.neutral(1)
    return Neutral(z.exp[0], z.jaw[0], z.eyes[0], z.eyelids[0])


def _rel_rot(drv6: np.ndarray, drv_n6: np.ndarray, act_n6: np.ndarray) -> np.ndarray:
    """[N, 6] rotations: ``R_drv @ R_drv_neutral^T @ R_actor_neutral`` as 6D."""
    R = _mat(drv6) @ _mat(drv_n6).T @ _mat(act_n6)
    return _r6(R)


def transfer_expression(driver: Motion, driver_neutral: Neutral, actor_neutral: Neutral,
                        mode: str = "relative") -> Motion:
    """The driver's expression, jaw, eyes and eyelids for the actor (camera fields untouched)."""
    if mode == "absolute":
        return replace(driver)
    if mode != "relative":
        raise ValueError(f"unknown transfer {mode!r}; use one of {TRANSFERS}")
    exp = driver.exp - driver_neutral.exp + actor_neutral.exp
    eyelids = np.clip(driver.eyelids - driver_neutral.eyelids + actor_neutral.eyelids, -0.5, 1.5)
    jaw = _rel_rot(driver.jaw, driver_neutral.jaw, actor_neutral.jaw)
    eyes = np.concatenate([_rel_rot(driver.eyes[:, :6], driver_neutral.eyes[:6], actor_neutral.eyes[:6]),
                           _rel_rot(driver.eyes[:, 6:], driver_neutral.eyes[6:], actor_neutral.eyes[6:])], 1)
    return replace(driver, exp=exp.astype(np.float32), jaw=jaw, eyes=eyes, eyelids=eyelids.astype(np.float32))


def ping_pong(n_src: int, n: int) -> np.ndarray:
    """[n] indices into a sequence of ``n_src`` frames, played forward, backward, forward, ..."""
    if n_src <= 1:
        return np.zeros(n, np.int64)
    period = 2 * (n_src - 1)
    k = np.arange(n) % period
    return np.where(k < n_src, k, period - k).astype(np.int64)


def transfer_pose(driver: Motion, actor_R: np.ndarray, actor_t: np.ndarray, actor_K: np.ndarray,
                  mode: str = "relative") -> tuple[np.ndarray, np.ndarray]:
    """Per-frame cameras for the drive.

    Args:
        driver: the driver's motion (``R``, ``t``, ``K`` used by ``relative`` when present).
        actor_R: [M, 3, 3], actor_t: [M, 3]: the actor's tracked cameras (training frames).
        actor_K: [3, 3] the actor's intrinsics (pixels, same image size as the driver's ``K``).
        mode: ``relative``, ``actor`` or ``fixed``.

    Returns:
        R [N, 3, 3], t [N, 3] with ``N = len(driver)``.
    """
    n = len(driver)
    Ra, ta = median_rotation(actor_R), np.median(actor_t, 0).astype(np.float32)
    if mode == "actor":
        idx = ping_pong(len(actor_R), n)
        return actor_R[idx].astype(np.float32), actor_t[idx].astype(np.float32)
    if mode == "fixed" or (mode == "relative" and not driver.has_camera):
        return np.tile(Ra, (n, 1, 1)), np.tile(ta, (n, 1))
    if mode != "relative":
        raise ValueError(f"unknown pose {mode!r}; use one of {POSES}")
    Rm, tm = median_rotation(driver.R), np.median(driver.t, 0)
    delta = driver.R @ Rm.T                                               # [N, 3, 3] in camera space
    R = delta @ Ra
    d = driver.t - tm
    if driver.K is not None:
        f_d = float(driver.K[0, 0] + driver.K[1, 1]) / 2 * 512.0 / driver.image_size
        f_a = float(actor_K[0, 0] + actor_K[1, 1]) / 2
        s_xy = f_d * ta[2] / (tm[2] * f_a)
        s = np.array([s_xy, s_xy, ta[2] / tm[2]], np.float32)
    else:
        s = np.ones(3, np.float32)
    return R.astype(np.float32), (ta + d * s).astype(np.float32)
