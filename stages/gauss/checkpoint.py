"""Checkpoints (resume training) and the avatar file (render), written atomically.

Format: see docs/checkpoint-format.md. Both are ``torch.save`` of a dict of tensors and plain types
(loadable with ``weights_only=True``), tagged ``format``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

CHECKPOINT_FORMAT = "avatar-gauss-checkpoint/1"
AVATAR_FORMAT = "avatar-gauss/1"


def save_atomic(obj: dict[str, Any], path: str | Path) -> Path:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


def load(path: str | Path, expect_format: str) -> dict[str, Any]:
    """Load a checkpoint or avatar file and check its ``format`` tag (ValueError otherwise)."""
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(obj, dict) or obj.get("format") != expect_format:
        found = obj.get("format") if isinstance(obj, dict) else type(obj).__name__
        raise ValueError(f"{path}: format {found!r}, expected {expect_format!r}")
    return obj


def rng_state() -> dict[str, Any]:
    """torch CPU (and CUDA, where present) RNG states."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
