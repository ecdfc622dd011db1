"""A given identity (MICA's ``identity.npy``, or one computed by :mod:`stages.tracking.mica`) in
calibration.

``identity.npy`` is what metrical-tracker reads beside each video (``input/<actor>/identity.npy``):
float32 ``[300]`` FLAME 2020 shape coefficients (``[1, 300]`` is accepted too).

How calibrate uses it (``Config.identity_mode``; decided by measurement, see
``docs/identity.md`` and ``bench/identity_prior.py``):

- ``prior`` (default, weight 1e-6): the shape starts at the identity and may move, pulled back by
  ``identity_prior * |shape - identity|^2`` (instead of the weak pull to the mean face). On synthetic
  ground truth (3 clips) it cut a 1 mm-off identity to 0.56 mm and a 2 mm-off one to 1.1 mm, and cost
  0.08 mm when the identity was exact; our own fit alone gave 1.8 mm (2.1 mm with 1 px landmark noise).
- ``fixed``: the shape is the given identity exactly; calibrate fits focal length, principal
  point, per-keyframe pose and expression (and appearance) around it.

Both are done without touching the fitter: :class:`IdentityOffset` wraps the face model so that its
``shape`` input is an offset from the identity; the fitter's prior on ``shape`` (towards 0) then pulls
towards the identity, and leaving ``shape`` out of the schedule holds it fixed.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from stages.errors import bad_input
from stages.tracking.schedule import Level, LossWeights, Schedule

MODES = ("fixed", "prior")
FIX = "give MICA's identity.npy (float, 300 FLAME 2020 shape coefficients)"


def validate_identity(path: Path) -> dict[str, Any]:
    """Format check of an ``identity.npy`` (the asset validator): a finite float array of
    ``[N]`` or ``[1, N]`` coefficients. Returns ``{"coefficients": N}``; its size against the face
    model is checked where the model is known (:func:`check_identity`)."""
    path = Path(path)
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise bad_input(path, f"not a NumPy .npy array ({type(e).__name__})", FIX) from None
    if not isinstance(arr, np.ndarray) or arr.dtype.kind != "f":
        raise bad_input(path, f"holds {getattr(arr, 'dtype', type(arr).__name__)} values, not floats", FIX)
    if not (arr.ndim == 1 or (arr.ndim == 2 and arr.shape[0] == 1)) or arr.size == 0:
        raise bad_input(path, f"has shape {list(arr.shape)}, expected [300] or [1, 300]", FIX)
    if not np.isfinite(arr).all():
        raise bad_input(path, f"holds {int((~np.isfinite(arr)).sum())} NaN or infinite values", FIX)
    return {"coefficients": int(arr.size)}


def load_identity(path: Path | str, n_shape: int, *, where: object = None) -> np.ndarray:
    """float32 ``[n_shape]`` from ``identity.npy``; BadInput (naming ``where`` or ``path``) when it is
    not a finite float array of exactly ``n_shape`` coefficients."""
    validate_identity(Path(path))
    arr = np.load(path, allow_pickle=False).astype(np.float32).reshape(-1)
    check_identity(arr, n_shape, where=where if where is not None else path)
    return arr


def check_identity(identity: np.ndarray, n_shape: int, *, where: object) -> None:
    """BadInput unless ``identity`` has the face model's ``n_shape`` finite coefficients."""
    if identity.size != n_shape:
        raise bad_input(where, f"{identity.size} shape coefficients, but the face model has {n_shape}",
                        f"give an identity computed for this face model ({n_shape} coefficients, FLAME 2020: 300)")
    if not np.isfinite(identity).all():
        raise bad_input(where, "NaN or infinite shape coefficients", FIX)


class IdentityOffset(nn.Module):
    """The face model with its ``shape`` input taken as an offset from a fixed identity.

    ``forward(shape=d, ...) == model(shape=identity + d, ...)``; every other attribute (faces,
    landmark indices, ``n_shape``, ...) is the wrapped model's.

    Args:
        model: the face model (``stages.face.flame.FLAME``).
        identity: ``[n_shape]`` coefficients.
    """

    def __init__(self, model: nn.Module, identity: Tensor) -> None:
        super().__init__()
        self.inner = model
        self.register_buffer("identity", identity.reshape(-1).to(model.v_template))

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("inner"), name)

    def forward(self, shape: Tensor, **kw: Tensor):  # noqa: ANN201 - the wrapped model's output
        """``shape [B, <=n_shape]``: offsets from the identity; ``kw`` as the wrapped model's."""
        ns = shape.shape[1]
        full = self.identity.expand(shape.shape[0], -1)
        if ns:
            full = torch.cat([full[:, :ns] + shape, full[:, ns:]], dim=1)
        return self.inner(shape=full, **kw)


def identity_schedule(schedule: Schedule, mode: str) -> Schedule:
    """``schedule`` with ``shape`` left out of every level (``fixed``) or unchanged (``prior``)."""
    if mode not in MODES:
        raise bad_input("calibrate config", f"identity_mode {mode!r} is unknown", f"use one of {', '.join(MODES)}")
    if mode == "prior":
        return schedule
    levels = [Level(lv.name, lv.steps, tuple(n for n in lv.free if n != "shape"), lv.photometric)
              for lv in schedule.levels]
    return Schedule(levels, dict(schedule.lr), schedule.final_lr_fraction, schedule.betas)


def identity_weights(weights: LossWeights | None, mode: str, prior: float) -> LossWeights:
    """Loss weights whose ``shape`` prior (now on the offset from the identity) is ``prior``."""
    w = weights or LossWeights()
    return replace(w, shape=prior) if mode == "prior" else w


def calibrate_with_identity(model: nn.Module, inputs: Any, identity: np.ndarray, *, mode: str = "prior",
                            prior: float = 1e-6, schedule: Schedule | None = None,
                            weights: LossWeights | None = None, refine_iterations: int = 1000, **kw: Any):
    """:func:`stages.tracking.calibration.calibrate` around a given identity (see the module docstring).

    Args:
        model: the face model. inputs: :class:`stages.tracking.calibration.CalibrationInputs`.
        identity: ``[n_shape]`` coefficients (checked by :func:`check_identity` first).
        mode: ``fixed`` or ``prior``. prior: weight of ``|shape - identity|^2`` (``prior`` mode; the
            landmark term is a mean squared distance in image sizes, so 1e-4 lets a coefficient move
            about as much as 1 % of the image in landmark error buys).
        refine_iterations: the L-BFGS refinement (``prior`` mode only: it moves the shape).
        kw: passed on to ``calibrate``.

    Returns the :class:`stages.tracking.calibration.Calibration` with ``shape`` the full identity.
    """
    from stages.tracking.calibration import calibrate, calibrate_schedule

    dev = model.v_template.device
    wrapped = IdentityOffset(model, torch.as_tensor(identity, dtype=torch.float32, device=dev))
    sched = identity_schedule(schedule or calibrate_schedule(), mode)
    calib = calibrate(wrapped, inputs, schedule=sched, weights=identity_weights(weights, mode, prior),
                      refine_iterations=refine_iterations if mode == "prior" else 0, **kw)
    calib.shape = (np.asarray(identity, np.float32).reshape(-1) + calib.shape).astype(np.float32)
    return calib


def given_identity(ctx: Any, n_shape: int, lm: Any, picks: np.ndarray, shards: Any,
                   device: torch.device) -> tuple[np.ndarray | None, str]:
    """The calibrate stage's given identity: ``(coefficients [n_shape] or None, source)``.

    From the ``identity`` asset (``"identity.npy"``) when chosen; else computed by MICA from the
    keyframes when a ``mica`` asset is chosen (``"mica"``); else ``(None, "")`` (calibrate fits it).
    BadInput when the file's size does not match the face model or it holds NaN."""
    path = ctx.asset("identity")
    if path is not None:
        return load_identity(path, n_shape, where=f"identity asset {path.name}"), "identity.npy"
    mica = ctx.asset("mica")
    if mica is None:
        return None, ""
    from stages.tracking.mica_stage import mica_identity

    identity = mica_identity(ctx, mica, lm, picks, shards, device)
    check_identity(identity, n_shape, where=f"mica asset {mica.name}")
    return identity, "mica"


def check_identity_option(path: Path, has_flame: bool) -> None:
    """``avatar run/submit --identity PATH``, before anything is stored: a finite float ``.npy`` of
    FLAME 2020's 300 shape coefficients, and a FLAME model to go with it (the built-in stand-in face
    model has a shape space of its own, in which MICA's coefficients mean nothing)."""
    from stages.face.flame_file import N_SHAPE

    if not Path(path).is_file():
        raise bad_input(path, "no such file", FIX)
    load_identity(path, N_SHAPE)
    if not has_flame:
        raise bad_input(path, "MICA's identity is in FLAME 2020's shape space, but the actor uses the built-in "
                              "stand-in face model (a shape space of its own)",
                        "add --flame generic_model.pkl (with --mediapipe-embedding)")
