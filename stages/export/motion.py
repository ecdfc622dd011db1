"""The per-frame parameters that pose an avatar for export and viewing.

Two sources: the actor's own tracked sequence (the dataset's ``.frame`` files, with cameras) and a
motion file. :func:`read_motion` is the one reader of motion files here; it takes this project's
``motion.npz`` keys (``exp`` [T,100], ``jaw`` [T,6] 6D, ``eyes`` [T,12], ``eyelids`` [T,2],
optional ``R`` [T,3,3], ``t`` [T,3], ``K`` [3,3], ``image_size``), the same names with the
``flame.``/``opencv.`` prefixes of the stacked ``.frame`` keys, or a folder of ``.frame`` files.
It returns an object with the attribute names of ``stages.motion.Motion`` (``exp, jaw, eyes,
eyelids, R, t, K, image_size``) so that ``stages.motion.load_motion`` can replace it as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from stages.errors import bad_input
from stages.gauss.surface import EXPRESSION_DIM, condition_vector

_IDENT6 = np.array([1, 0, 0, 0, 1, 0], np.float32)


@dataclass
class MotionFrames:
    """T frames of FLAME parameters (float32 numpy).

    Attributes:
        exp: [T, 100].  jaw: [T, 6] (6D rotation).  eyes: [T, 12].  eyelids: [T, 2].
        R: [T, 3, 3] | None, t: [T, 3] | None: OpenCV world-to-camera extrinsics (head pose).
        K: [3, 3] | [T, 3, 3] | None: intrinsics in pixels of ``image_size``.
        image_size: (h, w) the intrinsics refer to (``stages.motion.Motion`` has one int: square; both are accepted).
    """

    exp: np.ndarray
    jaw: np.ndarray
    eyes: np.ndarray
    eyelids: np.ndarray
    R: np.ndarray | None = None
    t: np.ndarray | None = None
    K: np.ndarray | None = None
    image_size: tuple[int, int] = (512, 512)

    def __len__(self) -> int:
        return self.exp.shape[0]


def motion_condition(m) -> Tensor:
    """[T, 120] condition vectors of a motion (any object with ``exp, jaw, eyes, eyelids``)."""
    t = lambda a, w: torch.as_tensor(np.asarray(a, np.float32)).reshape(len(a), w)  # noqa: E731
    exp = t(m.exp, np.asarray(m.exp).shape[-1])
    if exp.shape[1] < EXPRESSION_DIM:
        exp = torch.nn.functional.pad(exp, (0, EXPRESSION_DIM - exp.shape[1]))
    return condition_vector(exp[:, :EXPRESSION_DIM], t(m.jaw, 6), t(m.eyes, 12), t(m.eyelids, 2))


def _pick(d: dict, *names: str):
    for n in names:
        if n in d:
            return np.asarray(d[n])
    return None


def read_motion(path: str | Path) -> MotionFrames:
    """Read a motion file (see the module docstring); BadInput naming the file and the fix otherwise.

    The coordinator may swap this function for ``stages.motion.load_motion`` (same attributes)."""
    from stages.dataset.frame_file import load_tracked_sequence, read_frame

    path = Path(path)
    if path.is_dir():
        try:
            d = load_tracked_sequence(path)
            f0 = read_frame(sorted(path.glob("*.frame"))[0])
        except Exception as e:  # noqa: BLE001 - any unreadable folder is the user's input
            raise bad_input(path, f"not a folder of .frame files ({e})", "give a motion .npz or a checkpoint/ folder") from None
        size = tuple(int(v) for v in f0.get("img_size", (512, 512)))
    elif path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                d = {k: z[k] for k in z.files}
        except Exception as e:  # noqa: BLE001
            raise bad_input(path, f"not a readable .npz ({type(e).__name__})", "give a motion.npz") from None
        size = tuple(int(v) for v in np.broadcast_to(np.asarray(d.get("image_size", 512)), (2,)))
    else:
        raise bad_input(path, "no such file or folder", "give a motion .npz or a folder of .frame files")
    exp = _pick(d, "exp", "flame.exp", "expr", "expression")
    if exp is None or exp.ndim != 2 or exp.shape[1] > EXPRESSION_DIM or len(exp) == 0:
        found = "no exp key" if exp is None else f"exp of shape {tuple(exp.shape)}"
        raise bad_input(path, f"{found}, expected exp [T, <=100]", "write exp, jaw, eyes, eyelids per frame")
    n = len(exp)

    def part(names, width, default):
        a = _pick(d, *names)
        if a is None:
            return np.tile(default, (n, 1)).astype(np.float32)
        a = a.reshape(len(a), -1) if a.ndim >= 2 else a
        if a.shape != (n, width):
            raise bad_input(path, f"{names[0]} of shape {tuple(a.shape)}, expected [{n}, {width}]",
                            "give one row per frame of exp")
        return a.astype(np.float32)

    jaw = part(("jaw", "flame.jaw"), 6, _IDENT6)
    eyes = part(("eyes", "flame.eyes"), 12, np.concatenate([_IDENT6, _IDENT6]))
    eyelids = part(("eyelids", "flame.eyelids"), 2, np.zeros(2, np.float32))
    R, t = _pick(d, "R", "opencv.R"), _pick(d, "t", "opencv.t")
    if R is not None and t is not None:
        R, t = R.reshape(-1, 3, 3).astype(np.float32), t.reshape(-1, 3).astype(np.float32)
        if len(R) != n or len(t) != n:
            raise bad_input(path, f"R/t hold {len(R)}/{len(t)} frames, exp {n}", "give one camera per frame or none")
    else:
        R = t = None
    K = _pick(d, "K", "opencv.K")
    K = None if K is None else K.astype(np.float32).reshape(-1, 3, 3)
    if K is not None and len(K) == 1:
        K = K[0]
    return MotionFrames(exp=exp.astype(np.float32), jaw=jaw, eyes=eyes, eyelids=eyelids, R=R, t=t, K=K,
                        image_size=(size[0], size[1]))


def tracked_motion(seq) -> MotionFrames:
    """A :class:`stages.gauss.data.TrackedSequence` as :class:`MotionFrames` (with its cameras)."""
    c = np.asarray(seq.cond, np.float32)
    return MotionFrames(exp=c[:, :100], jaw=c[:, 100:106], eyes=c[:, 106:118], eyelids=c[:, 118:120],
                        R=np.asarray(seq.R, np.float32), t=np.asarray(seq.t, np.float32),
                        K=np.asarray(seq.K, np.float32), image_size=tuple(seq.image_size))
