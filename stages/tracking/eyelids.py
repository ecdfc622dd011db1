"""Per-eye eyelid opening from landmarks, and the tracker's term that makes each eye of the model
open and close as MediaPipe's eye landmarks say (blinks, and winks: one eye alone).

The landmark term alone moves the lids too little: a closing lid moves some 16 of 478 points by a
few pixels, and where the model's eye shape differs a little from the footage the residual of the
other points outweighs it, so a wink stays an open eye. This term compares, per eye, a
scale-free opening: the mean distance between the upper and the lower lid over seven point pairs
across the eye, divided by the eye's width (corner to corner). It is 0 for a shut eye and about
0.2 to 0.3 for an open one, whatever the face's size in the image.

MediaPipe's eye contours (subject's right and left; facts of its face-mesh topology): the upper lid
runs ``246 161 160 159 158 157 173`` and the lower lid ``7 163 144 145 153 154 155`` between the
corners 33 (outer) and 133 (inner) of the right eye; ``466 388 387 386 385 384 398`` and
``249 390 373 374 380 381 382`` between 263 and 362 for the left.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

RIGHT_UPPER = (246, 161, 160, 159, 158, 157, 173)
RIGHT_LOWER = (7, 163, 144, 145, 153, 154, 155)
RIGHT_CORNERS = (33, 133)
LEFT_UPPER = (466, 388, 387, 386, 385, 384, 398)
LEFT_LOWER = (249, 390, 373, 374, 380, 381, 382)
LEFT_CORNERS = (263, 362)

# metrical-tracker's eyelids order: 0 = the subject's left eye, 1 = the right
EYES_MP = ((LEFT_UPPER, LEFT_LOWER, LEFT_CORNERS), (RIGHT_UPPER, RIGHT_LOWER, RIGHT_CORNERS))


@dataclass(frozen=True)
class LidIndex:
    """Where the lid points of each eye are in a landmark list.

    Attributes:
        upper, lower: long [E,K] rows of the upper/lower lid points (pairs across the eye).
        corners: long [E,2] rows of the eye's corners.
    """

    upper: Tensor
    lower: Tensor
    corners: Tensor

    def to(self, device: torch.device | str) -> "LidIndex":
        return LidIndex(self.upper.to(device), self.lower.to(device), self.corners.to(device))


def lid_index(mp_index: np.ndarray | Tensor | None = None) -> LidIndex | None:
    """The lid rows in a landmark list whose row ``j`` is MediaPipe point ``mp_index[j]`` (``None``:
    the 478 MediaPipe points themselves). Pairs whose points are not all in the list are dropped;
    ``None`` when an eye keeps fewer than 3 pairs or loses a corner."""
    if mp_index is None:
        pos = {i: i for i in range(478)}
    else:
        pos = {int(m): j for j, m in enumerate(np.asarray(mp_index).reshape(-1))}
    ups, los, cs = [], [], []
    for upper, lower, corners in EYES_MP:
        pairs = [(pos[u], pos[lo]) for u, lo in zip(upper, lower) if u in pos and lo in pos]
        if len(pairs) < 3 or any(c not in pos for c in corners):
            return None
        ups.append([u for u, _ in pairs])
        los.append([lo for _, lo in pairs])
        cs.append([pos[c] for c in corners])
    k = min(len(u) for u in ups)
    return LidIndex(torch.tensor([u[:k] for u in ups]), torch.tensor([lo[:k] for lo in los]), torch.tensor(cs))


def eye_opening(points: Tensor, lids: LidIndex) -> Tensor:
    """Per-eye opening: mean upper-to-lower lid distance over eye width.

    Args:
        points: [..., L, 2] landmark pixels.
        lids: :func:`lid_index` of that landmark list.

    Returns:
        [..., E] (E = 2: left, right), 0 for a shut eye.
    """
    up = points[..., lids.upper, :]        # [..., E, K, 2]
    lo = points[..., lids.lower, :]
    gap = (up - lo).norm(dim=-1).mean(-1)  # [..., E]
    c = points[..., lids.corners, :]       # [..., E, 2, 2]
    width = (c[..., 0, :] - c[..., 1, :]).norm(dim=-1).clamp_min(1e-6)
    return gap / width


def eye_opening_np(points: np.ndarray, lids: LidIndex | None = None) -> np.ndarray:
    """:func:`eye_opening` of numpy points ``[..., 478, 2]`` (MediaPipe order by default)."""
    lids = lids if lids is not None else lid_index()
    return eye_opening(torch.as_tensor(np.asarray(points, np.float64)), lids).numpy()


def eyelid_loss(pred: Tensor, target: Tensor, lids: LidIndex, frame_w: Tensor) -> Tensor:
    """Mean squared difference of the per-eye openings of ``pred`` and ``target`` ([B, L, 2]
    pixels), frames weighted by ``frame_w`` [B] (0 where the landmarks failed)."""
    d2 = (eye_opening(pred, lids) - eye_opening(target, lids)).pow(2).mean(-1)  # [B]
    return (d2 * frame_w).sum() / frame_w.numel()



def lid_expression_basis(model: torch.nn.Module, support: float = 0.05) -> Tensor | None:
    """How much each expression coefficient closes each eye, in eyelid-parameter units.

    The expression blendshapes can move the lids too (FLAME's in part; the stand-in model's
    expression 2 is exactly the sum of the two eyelid blendshapes), so a blink fits as well in the
    expression as in ``eyelids``. This matrix measures the part of the expression's displacement of
    the lid region that the eyelid blendshapes explain: over the vertices either eyelid blendshape
    moves (by more than ``support`` of its largest displacement), the least-squares eyelid values
    ``c = exp @ M^T`` whose eyelid displacement best matches the expression's. The tracker's
    :func:`lid_expression_loss` penalises ``c``, so the lids' closing goes to ``eyelids``, per eye,
    while everything else the expression does (the mouth, brows, a squint's cheeks) is untouched.

    Args:
        model: the face model (``stages.face.FLAME``): ``exprdirs [V*3, E]``, ``eyelid_dirs [2, V*3]``.
        support: the lid region's threshold, a fraction of each eye's largest eyelid displacement.

    Returns:
        [2, E] (rows: the subject's left, right eye; float32, on the model's device), or ``None`` for
        a model without eyelid blendshapes.
    """
    if not getattr(model, "has_eyelids", False):
        return None
    lid = model.eyelid_dirs.double().reshape(2, -1, 3)                     # [2, V, 3]
    mag = lid.norm(dim=-1)                                                  # [2, V]
    region = (mag > support * mag.amax(dim=1, keepdim=True)).any(0)        # [V]
    n_exp = model.exprdirs.shape[1]
    B = lid[:, region].reshape(2, -1).T                                     # [3Vr, 2]
    E = model.exprdirs.double().reshape(-1, 3, n_exp)[region].reshape(-1, n_exp)  # [3Vr, E]
    M = torch.linalg.lstsq(B, E).solution                                   # [2, E]
    return M.to(model.exprdirs.dtype)


def lid_expression_loss(exp: Tensor, basis: Tensor) -> Tensor:
    """Mean over frames of ``|exp @ basis^T|^2``: the eye closure the expression carries
    (:func:`lid_expression_basis`), per eye, squared and summed.

    Args:
        exp: [B, E'] expression coefficients (``E' <= E``; the basis' first columns are used).
        basis: [2, E].

    Returns:
        scalar.
    """
    c = exp @ basis[:, : exp.shape[1]].T                                   # [B, 2]
    return c.pow(2).sum(-1).mean()


def eye_closure(opening: np.ndarray, half_window: int = 12, quantile: float = 0.75) -> np.ndarray:
    """Per-eye closure over time: how much each eye is shut compared with itself around that moment.

    ``1 - opening[t] / reference[t]`` per eye, the reference being the ``quantile`` of the opening
    over frames ``t - half_window .. t + half_window``: 0 for an eye as open as usual, near 1 for a
    shut one. The opening (:func:`eye_opening`: the lid gap over the same eye's width) already
    cancels the face's size and most of the head's turn; dividing by its own running upper quantile
    (a second at 25 fps: longer than a blink's 150 ms and than a wink held half a second, which then
    still leaves the quantile on open frames; shorter than head turns and slow expression drift)
    removes what is left of the head pose and of the eye's resting shape, so a blink or a wink
    measures the same on any head in any pose.

    Args:
        opening: [N, E] per-frame, per-eye openings (NaN where the landmarks failed).
        half_window: frames each side of the running reference.
        quantile: which quantile of the window is the eye's usual opening.

    Returns:
        [N, E] closure (NaN where the opening or its whole window is NaN).
    """
    o = np.asarray(opening, np.float64)
    out = np.full_like(o, np.nan)
    for i in range(len(o)):
        w = o[max(0, i - half_window): i + half_window + 1]
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN column: NaN, as documented
            out[i] = 1.0 - o[i] / np.nanquantile(w, quantile, axis=0)
    return out
