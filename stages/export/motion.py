"""The per-frame parameters that pose an avatar for export and viewing.

Two sources: the actor's own tracked sequence (the dataset's ``.frame`` files, with cameras), as
:func:`tracked_motion`, and a motion file, read by the one reader of motion files,
:func:`stages.motion.load_motion`. Both are :class:`stages.motion.Motion`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from stages.gauss.surface import EXPRESSION_DIM, condition_vector
from stages.motion.format import FPS, Motion


def motion_condition(m) -> Tensor:
    """[T, 120] condition vectors of a motion (any object with ``exp, jaw, eyes, eyelids``)."""
    t = lambda a, w: torch.as_tensor(np.asarray(a, np.float32)).reshape(len(a), w)  # noqa: E731
    exp = t(m.exp, np.asarray(m.exp).shape[-1])
    if exp.shape[1] < EXPRESSION_DIM:
        exp = torch.nn.functional.pad(exp, (0, EXPRESSION_DIM - exp.shape[1]))
    return condition_vector(exp[:, :EXPRESSION_DIM], t(m.jaw, 6), t(m.eyes, 12), t(m.eyelids, 2))


def tracked_motion(seq) -> Motion:
    """A :class:`stages.gauss.data.TrackedSequence` as a :class:`~stages.motion.Motion` with its cameras.

    The intrinsics are the first frame's (metrical-tracker's are one per clip); ``image_size`` is the
    square image they refer to."""
    c = np.asarray(seq.cond, np.float32)
    K = np.asarray(seq.K, np.float32)
    size = np.asarray(seq.image_size).reshape(-1)
    return Motion(exp=c[:, :100], jaw=c[:, 100:106], eyes=c[:, 106:118], eyelids=c[:, 118:120],
                  R=np.asarray(seq.R, np.float32), t=np.asarray(seq.t, np.float32),
                  K=K[0] if K.ndim == 3 else K, image_size=int(size[0]), fps=FPS)
