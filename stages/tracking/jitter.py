"""Steadiness of the tracked head: jitter figures, and the same figures for a frame-by-frame fit.

Avatars trained from per-frame trackers shake: with the camera still, the head pose estimated for
each frame on its own jitters by a fraction of a millimetre and a fraction of a degree from frame
to frame, and the avatar learns it. We track with temporal terms (:mod:`stages.tracking.losses`);
these figures show how much steadier that is.

Jitter is the RMS of the second difference (acceleration per frame squared, so steady motion
costs nothing and only frame-to-frame wobble counts):

- position: of the head's centre in camera space, ``c_k = R_k c + t_k`` (``c`` the neutral mesh's
  centroid), ``RMS_k |c_{k+1} - 2 c_k + c_{k-1}|`` in millimetres;
- rotation: the angle of ``(R_{k+1} R_k^T)(R_k R_{k-1}^T)^T``, the change of the frame-to-frame
  rotation, RMS in degrees.

The frame-by-frame baseline fits every frame of a window alone: the tracker's own per-frame
objective with its temporal terms off, so no frame sees another, as a sequential tracker that fits
each frame from scratch would; the same figures are taken of it. :func:`per_frame_fit_lm` (what
the report uses) minimises it by a batched Levenberg-Marquardt solve, every frame with its own
damping and stopping (:mod:`stages.tracking.frame_lm`: about 10 Jacobians); :func:`per_frame_fit`
is the reference, the tracker's 470 Adam steps. Both end at the same objective within 0.2% per
frame (wojtek.mp4, frames 151-250; the LM lower on every frame of tests/tracking/test_frame_lm.py's
synthetic clip) and give the same jitter figures within 0.2% (9.82 mm and 1.05 degrees there).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from stages.tracking import fit as fitting
from stages.tracking.eyelids import lid_index
from stages.tracking.params import FrameParams
from stages.tracking.schedule import LossWeights, Schedule
from stages.tracking.sequence import SequenceInputs, track_sequence


@dataclass(frozen=True)
class Jitter:
    """Attributes:
        position_mm: RMS second difference of the head centre's position, millimetres.
        rotation_deg: RMS second difference of the head rotation, degrees.
        frames: frames the figures were taken over.
    """

    position_mm: float
    rotation_deg: float
    frames: int

    def as_dict(self) -> dict:
        return {"position_mm": round(self.position_mm, 4), "rotation_deg": round(self.rotation_deg, 4),
                "frames": self.frames}


def rotation_angle_deg(R: np.ndarray) -> np.ndarray:
    """Angles of rotation matrices ``[...,3,3]`` in degrees ``[...]``."""
    tr = np.trace(R, axis1=-2, axis2=-1)
    return np.degrees(np.arccos(np.clip((tr - 1.0) / 2.0, -1.0, 1.0)))


def head_jitter(R: np.ndarray, t: np.ndarray, centre: np.ndarray, link: np.ndarray | None = None) -> Jitter:
    """Jitter of a head track (see the module docstring).

    Args:
        R: float [N,3,3] world-to-camera rotations (OpenCV), one per frame.
        t: float [N,3] translations, metres.
        centre: float [3] the head point followed, model space, metres.
        link: bool [N-1], False where frame k+1 does not follow frame k (a cut); second
            differences spanning a cut are left out. ``None``: all linked.

    Returns:
        :class:`Jitter` (zeros when fewer than 3 frames).
    """
    R = np.asarray(R, np.float64)
    t = np.asarray(t, np.float64)
    n = len(R)
    if n < 3:
        return Jitter(0.0, 0.0, n)
    ok = np.ones(n - 2, bool) if link is None else (np.asarray(link[1:], bool) & np.asarray(link[:-1], bool))
    if not ok.any():
        return Jitter(0.0, 0.0, n)
    c = np.einsum("nij,j->ni", R, np.asarray(centre, np.float64)) + t
    acc = c[2:] - 2 * c[1:-1] + c[:-2]
    pos = float(np.sqrt((np.sum(acc ** 2, -1)[ok]).mean())) * 1000.0
    step = R[1:] @ np.swapaxes(R[:-1], -1, -2)                 # R_{k+1} R_k^T, [N-1]
    change = step[1:] @ np.swapaxes(step[:-1], -1, -2)         # [N-2]
    rot = float(np.sqrt((rotation_angle_deg(change)[ok] ** 2).mean()))
    return Jitter(pos, rot, n)


def per_frame_fit(model: nn.Module, shared: fitting.Shared, targets: np.ndarray, ok: np.ndarray,
                  point_w: torch.Tensor, schedule: Schedule, image_size: int = 512) -> dict[str, np.ndarray]:
    """Fit every frame alone: the tracker's schedule and loss without its temporal terms.

    Each frame has its own parameters and every remaining term is a per-frame mean, so frames fitted
    in one batch do not influence each other (Adam's steps are per element): the batch is only for
    speed.

    Args:
        model: face model with the identity baked in (``shared.shape`` of width 0).
        shared: identity, focal, principal point (fixed).
        targets: float [N,L,2] landmark pixels in the model's landmark order.
        ok: bool [N] landmarks found (frames without them are filled from neighbours).
        point_w: [L] landmark weights on the model's device.
        schedule: the optimisation schedule (the track stage's, without a photometric level).

    Returns:
        ``{name: float32 [N, ...]}`` per-frame parameters (see :class:`FrameParams`).
    """
    alone = LossWeights(smooth_points=0.0, smooth_exp=0.0, smooth_rot=0.0)
    n = len(targets)
    inputs = SequenceInputs(frames=np.arange(n), targets=np.asarray(targets, np.float32), ok=np.asarray(ok, bool))
    lids = lid_index(model.mp_index.cpu().numpy()) if hasattr(model, "mp_index") else None
    return track_sequence(model, shared, inputs, point_w, schedule, alone, batch_size=max(n, 1),
                          image_size=image_size, lids=lids).params


def per_frame_fit_lm(model: nn.Module, shared: fitting.Shared, targets: np.ndarray, ok: np.ndarray,
                     point_w: torch.Tensor, image_size: int = 512) -> dict[str, np.ndarray]:
    """:func:`per_frame_fit`'s objective minimised by :func:`stages.tracking.frame_lm.solve_frames`
    (every frame alone); frames without landmarks get parameters interpolated from their
    neighbours, as the tracker gives them.

    Args and returns: as :func:`per_frame_fit` (without the schedule: the solve stops per frame on
    convergence).
    """
    from stages.tracking.frame_lm import solve_frames
    from stages.tracking.smoothing import fill_missing

    ok = np.asarray(ok, bool) & np.isfinite(np.asarray(targets)).all(axis=(1, 2))
    if not ok.any():
        raise ValueError("no frame of the window has landmarks")
    dev = point_w.device
    lids = lid_index(model.mp_index.cpu().numpy()) if hasattr(model, "mp_index") else None
    fit = solve_frames(model, shared, torch.as_tensor(np.asarray(targets, np.float32)[ok], device=dev), point_w,
                       lids=lids.to(dev) if lids is not None else None, image_size=image_size)
    got = fit.params.to_numpy()
    params = {}
    for k, v in got.items():
        full = np.zeros((len(ok),) + v.shape[1:], np.float32)
        full[ok] = v
        params[k] = full if ok.all() else fill_missing(full, ok).astype(np.float32)
    return FrameParams.from_numpy(params).to_numpy()  # re-orthonormalise interpolated rotations


def params_jitter(params: dict[str, np.ndarray], centre: np.ndarray, link: np.ndarray | None = None) -> Jitter:
    """:func:`head_jitter` of per-frame parameters (``rot`` 6D and ``t``)."""
    R = FrameParams.from_numpy(params).R.numpy()
    return head_jitter(R, params["t"], centre, link)


def window(n: int, length: int) -> slice:
    """The middle ``length`` frames of ``n`` (all of them when ``length >= n``)."""
    length = max(0, min(length, n))
    start = (n - length) // 2
    return slice(start, start + length)


def steadiness(ctx, R: np.ndarray, t: np.ndarray, shape: np.ndarray, focal: np.ndarray, pp: np.ndarray,
               data, sample: int, image_size: int = 512, landmarks=None,  # noqa: ANN001 - Landmarks
               device: str | torch.device | None = None) -> dict:  # noqa: ANN001 - StageContext, FaceModelData
    """The ``steadiness`` block of assemble's report: our track's jitter over the whole clip and
    over a window of ``sample`` middle frames, and a frame-by-frame fit's over that window
    (:func:`per_frame_fit_lm`).

    Args:
        ctx: the assemble stage's context (reads the ``landmarks`` shards the window spans, unless
            ``landmarks`` is given; then ``ctx`` is not used and the figures can be computed in a
            thread while the caller goes on with the store).
        R: float [N,3,3] and t: float [N,3]: the joined track of frames ``1..N``.
        shape, focal, pp: the calibration's identity and intrinsics.
        data: the face model's data (:class:`stages.face.model.FaceModelData`).
        sample: frames of the window (0: no frame-by-frame fit, only our figures).
        landmarks: the clip's landmarks (:class:`stages.tracking.stage_io.Landmarks`, at least the
            window's frames), when the caller has read them already.
        device: where the fit runs (default: ``ctx.device`` where that is an available GPU, else the CPU).

    Returns:
        ``{"ours": {...}, "window": [first, last], "ours_window": {...}, "per_frame_fit": {...},
        "ratio_position", "ratio_rotation", "seconds_per_frame_fit", "per_frame_fit_method",
        "per_frame_fit_device"}``
        (:meth:`Jitter.as_dict`); the window entries are absent when ``sample`` is 0.
    """
    import time

    from stages.tracking.calibration import personalised
    from stages.tracking.face_assets import build_model
    from stages.tracking.losses import LandmarkWeights
    from stages.tracking.stage_io import Landmarks, fetch_landmarks

    centre = np.asarray(data.v_template, np.float64).mean(0)
    n = len(R)
    out: dict = {"ours": head_jitter(R, t, centre).as_dict()}
    win = window(n, sample)
    if win.stop - win.start < 3:
        return out
    first, last = win.start + 1, win.stop  # frame numbers (1-based)
    lm = landmarks if landmarks is not None else Landmarks.cat(
        [fetch_landmarks(ctx, s) for s in ctx.shards() if s.start <= last and s.stop > first])
    keep = (lm.frames >= first) & (lm.frames <= last)
    lm = lm.select(keep)
    t0 = time.monotonic()
    if device is None:
        device = ctx.device if str(ctx.device).startswith("cuda") and torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    base = build_model(data, device)
    model = personalised(base, torch.as_tensor(shape, device=device))
    shared = fitting.Shared(shape=torch.zeros(0, device=device), focal=torch.as_tensor(focal, device=device).float(),
                            pp=torch.as_tensor(pp, device=device).float())
    mp_index = base.mp_index.cpu().numpy()
    params = per_frame_fit_lm(model, shared, lm.points[:, mp_index, :2], lm.ok,
                              LandmarkWeights().per_point()[mp_index].to(device), image_size)
    theirs = params_jitter(params, centre)
    ours = head_jitter(R[win], t[win], centre)
    out.update({"window": [first, last], "ours_window": ours.as_dict(), "per_frame_fit": theirs.as_dict(),
                "ratio_position": round(ours.position_mm / max(theirs.position_mm, 1e-12), 4),
                "ratio_rotation": round(ours.rotation_deg / max(theirs.rotation_deg, 1e-12), 4),
                "seconds_per_frame_fit": round(time.monotonic() - t0, 2), "per_frame_fit_method": "lm",
                "per_frame_fit_device": device.type})
    return out
