"""metrical-tracker ``.frame`` files: ``torch.save`` of a nested dict of float32 numpy arrays.

Keys and shapes (facts from metrical-tracker; see docs/upstream-formats in the shared docs)::

    flame:  exp [1,100], shape [1,300], tex [1,140], sh [1,9,3], eyes [1,12], eyelids [1,2], jaw [1,6]
    camera: R [1,6] (6D, PyTorch3D), t [1,3], fl [1,1] (NDC), pp [1,2] (NDC)
    opencv: R [1,3,3], t [1,3], K [1,3,3] (pixels)
    img_size: int64 [2] (h, w);  frame_id: '00000';  global_step: int

They hold numpy arrays, so loading needs ``torch.load(path, weights_only=False)`` on PyTorch >= 2.6.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import IO, Any

import numpy as np

SHAPES: dict[tuple[str, str], tuple[int, ...]] = {
    ("flame", "exp"): (1, 100), ("flame", "shape"): (1, 300), ("flame", "tex"): (1, 140),
    ("flame", "sh"): (1, 9, 3), ("flame", "eyes"): (1, 12), ("flame", "eyelids"): (1, 2), ("flame", "jaw"): (1, 6),
    ("camera", "R"): (1, 6), ("camera", "t"): (1, 3), ("camera", "fl"): (1, 1), ("camera", "pp"): (1, 2),
    ("opencv", "R"): (1, 3, 3), ("opencv", "t"): (1, 3), ("opencv", "K"): (1, 3, 3),
}
"""Every array of a ``.frame`` file and its shape."""

READ_BY_FLASHAVATAR = (("flame", "exp"), ("flame", "eyes"), ("flame", "eyelids"), ("flame", "jaw"),
                       ("opencv", "R"), ("opencv", "t"))
"""What upstream FlashAvatar reads from every frame (it also reads shape and K from frame 0)."""


def _f32(x: Any, shape: tuple[int, ...], name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float32)
    if a.size != int(np.prod(shape)):
        raise ValueError(f"{name}: expected {int(np.prod(shape))} values for shape {shape}, got shape {a.shape}")
    return a.reshape(shape)


def make_frame(index: int, *, exp: Any, shape: Any, eyes: Any, eyelids: Any, jaw: Any,
               R: Any, t: Any, K: Any, camera: dict[str, Any], img_size: tuple[int, int] = (512, 512),
               tex: Any | None = None, sh: Any | None = None, global_step: int = 0) -> dict[str, Any]:
    """Build one frame's dict with upstream's keys, shapes and dtypes.

    Args:
        index: checkpoint number ``i`` (from 0); becomes ``frame_id`` ``'{i:05d}'``.
        exp [100], shape [300], eyes [12] (right 6D, left 6D), eyelids [2], jaw [6] (6D): FLAME
            parameters of the frame (a leading batch axis of 1 is accepted).
        R [3,3], t [3], K [3,3]: OpenCV camera (world to camera; head pose lives here), K in pixels.
        camera: the PyTorch3D-convention fields ``R`` [6], ``t`` [3], ``fl`` [1], ``pp`` [2].
        img_size: (h, w).
        tex [140], sh [9,3]: appearance, zeros when not estimated.
    """
    flame = {"exp": exp, "shape": shape, "eyes": eyes, "eyelids": eyelids, "jaw": jaw,
             "tex": np.zeros(140) if tex is None else tex, "sh": np.zeros((9, 3)) if sh is None else sh}
    opencv = {"R": R, "t": t, "K": K}
    frame: dict[str, Any] = {"flame": {}, "camera": {}, "opencv": {}}
    for (group, key), shp in SHAPES.items():
        src = {"flame": flame, "camera": camera, "opencv": opencv}[group]
        frame[group][key] = _f32(src[key], shp, f"{group}.{key}")
    frame["img_size"] = np.asarray(img_size, dtype=np.int64)
    frame["frame_id"] = f"{index:05d}"
    frame["global_step"] = int(global_step)
    return frame


def frame_bytes(frame: dict[str, Any]) -> bytes:
    """The ``torch.save`` bytes of a frame, identical for identical frames (saving to a named file
    would put that file's name inside the archive)."""
    import io

    import torch

    buf = io.BytesIO()
    torch.save(frame, buf)
    return buf.getvalue()


def frame_from_bytes(data: bytes) -> dict[str, Any]:
    """Load a ``.frame`` file's bytes (see :func:`read_frame`)."""
    import io

    return read_frame(io.BytesIO(data))


def write_frame(path: str | Path, frame: dict[str, Any]) -> None:
    """``torch.save`` the frame to ``path`` atomically (temporary file + rename), reproducibly."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(frame_bytes(frame))
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def read_frame(path: str | Path | IO[bytes]) -> dict[str, Any]:
    """Load a ``.frame`` file (ours or metrical-tracker's), from a path or a binary file object;
    tensors are turned into numpy arrays."""
    import torch

    data = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a dict but {type(data).__name__}")

    def to_np(v: Any) -> Any:
        if isinstance(v, torch.Tensor):
            return v.detach().cpu().numpy()
        if isinstance(v, dict):
            return {k: to_np(x) for k, x in v.items()}
        return v

    return to_np(data)


def frame_problems(frame: dict[str, Any], *, need_all: bool = False) -> list[str]:
    """What is wrong with a loaded frame: missing keys, wrong shapes, non-finite values.

    With ``need_all`` every key of :data:`SHAPES` is required, else only what FlashAvatar reads."""
    problems = []
    keys = SHAPES if need_all else {k: SHAPES[k] for k in READ_BY_FLASHAVATAR}
    for (group, key), shp in keys.items():
        value = frame.get(group, {}).get(key) if isinstance(frame.get(group), dict) else None
        if value is None:
            problems.append(f"missing {group}.{key}")
            continue
        arr = np.asarray(value)
        if arr.shape != shp:
            problems.append(f"{group}.{key} has shape {list(arr.shape)}, expected {list(shp)}")
        elif not np.all(np.isfinite(arr)):
            problems.append(f"{group}.{key} has non-finite values")
    return problems


def stack_frames(frames: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Stack per-frame arrays into ``{"flame.exp": [N,100], "opencv.R": [N,3,3], ...}`` (batch axis 1 dropped)."""
    out: dict[str, np.ndarray] = {}
    for group, key in SHAPES:
        values = [f.get(group, {}).get(key) for f in frames]
        if all(v is not None for v in values):
            out[f"{group}.{key}"] = np.stack([np.asarray(v, dtype=np.float32).reshape(SHAPES[(group, key)][1:])
                                              for v in values])
    return out


def load_tracked_sequence(checkpoint_dir: str | Path) -> dict[str, np.ndarray]:
    """Every ``.frame`` of a checkpoint folder, in order, stacked (see :func:`stack_frames`)."""
    paths = sorted(Path(checkpoint_dir).glob("*.frame"))
    return stack_frames([read_frame(p) for p in paths])
