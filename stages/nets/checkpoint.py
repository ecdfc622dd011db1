"""Read a PyTorch checkpoint file and load it strictly into one of our modules.

Every problem (not a torch file, truncated, wrong keys, wrong shapes) is one
:class:`stages.errors.BadInput` line naming the file, what was wrong and the fix.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from stages.errors import bad_input

OPTIONAL_SUFFIXES = ("num_batches_tracked",)
"""Buffers a checkpoint may lack (files saved before PyTorch 0.4.1 have no BatchNorm step count)."""


def read_checkpoint(path: str | Path, fix: str) -> Any:
    """``torch.load`` of ``path`` on the CPU with ``weights_only=True`` (no code runs from the
    file). BadInput when it is missing, truncated or not a torch file."""
    path = Path(path)
    if not path.is_file():
        raise bad_input(path, "no such file", fix)
    with open(path, "rb") as f:
        head = f.read(2)
    if head[:2] != b"PK" and head[:1] != b"\x80":
        raise bad_input(path, "not a PyTorch checkpoint (neither torch.save's zip archive nor its legacy pickle)", fix)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - truncated zip, pickle error, foreign objects: all the user's file
        detail = "truncated or damaged" if isinstance(e, (RuntimeError, EOFError, OSError)) else "holds more than tensors"
        raise bad_input(path, f"not a readable PyTorch checkpoint ({detail}: {type(e).__name__})", fix) from None


def state_dict_of(obj: Any, path: str | Path, fix: str, key: str | None = None) -> dict[str, torch.Tensor]:
    """The tensor dict in ``obj`` (a state dict, or ``obj[key]`` when ``key`` is given), with a
    ``module.`` prefix (DataParallel) removed. BadInput when it is not one."""
    if key is not None:
        if not isinstance(obj, Mapping) or key not in obj:
            found = ", ".join(sorted(map(str, obj))[:8]) if isinstance(obj, Mapping) else type(obj).__name__
            raise bad_input(path, f"has no {key!r} entry (found {found or 'nothing'})", fix)
        obj = obj[key]
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise bad_input(path, "does not hold a state dict of tensors" + (f" under {key!r}" if key else ""), fix)
    return {(k[7:] if k.startswith("module.") else k): v for k, v in obj.items()}


def load_strict(module: nn.Module, state: Mapping[str, torch.Tensor], path: str | Path, fix: str,
                what: str) -> nn.Module:
    """Load ``state`` into ``module``: every key present with the same shape, nothing extra (only
    :data:`OPTIONAL_SUFFIXES` may be absent). BadInput naming the first differences otherwise."""
    own = module.state_dict()
    missing = [k for k in own if k not in state and not k.endswith(OPTIONAL_SUFFIXES)]
    extra = [k for k in state if k not in own]
    shapes = [f"{k} {list(state[k].shape)} (expected {list(own[k].shape)})" for k in own
              if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or extra or shapes:
        parts = []
        for label, items in (("missing", missing), ("unexpected", extra), ("wrong shape", shapes)):
            if items:
                parts.append(f"{len(items)} {label} ({', '.join(items[:3])}{', ...' if len(items) > 3 else ''})")
        raise bad_input(path, f"not {what}: {'; '.join(parts)}", fix)
    full = dict(own)
    full.update({k: v.to(own[k].dtype) for k, v in state.items()})
    module.load_state_dict(full, strict=True)
    return module
