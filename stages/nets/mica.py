"""MICA's identity network: ArcFace (:class:`stages.nets.iresnet.IResNet`, 100 layers) and the
mapping network from the L2-normalised 512-d face embedding to 300 FLAME 2020 shape coefficients,
laid out so that ``mica.tar``'s ``arcface`` and ``flameModel`` state dicts load strictly.

Facts of the published model (Zielon/MICA): ``mica.tar`` is a ``torch.save`` of a dict with
``arcface`` (the iresnet100 state dict) and ``flameModel`` (MICA's generator: ``regressor`` =
the mapping network; ``generator`` = the FLAME model it decodes with, whose buffers are saved too).
Mapping network (3 hidden layers)::

    z [B,512] = normalize(arcface(x))
    network.0  Linear 512 -> 300, leaky ReLU 0.2
    network.1..3  Linear 300 -> 300, leaky ReLU 0.2 each
    output     Linear 300 -> 300      -> shape coefficients [B,300]

The ``generator.*`` entries (FLAME's template, bases, landmark embedding) are loaded and kept (the
state dict must match) but not used: only the coefficients are wanted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stages.nets.checkpoint import load_strict, read_checkpoint, state_dict_of
from stages.nets.iresnet import LAYERS_100, IResNet

FIX = "give MICA's pretrained mica.tar (data/pretrained/mica.tar of Zielon/MICA)"
N_SHAPE = 300
HIDDEN = 3

FLAME_BUFFERS: dict[str, tuple[tuple[int, ...], torch.dtype]] = {
    "faces_tensor": ((9976, 3), torch.int64),
    "v_template": ((5023, 3), torch.float32),
    "shapedirs": ((5023, 3, 400), torch.float32),
    "posedirs": ((36, 15069), torch.float32),
    "J_regressor": ((5, 5023), torch.float32),
    "parents": ((5,), torch.int64),
    "lbs_weights": ((5023, 5), torch.float32),
    "eye_pose": ((1, 6), torch.float32),
    "neck_pose": ((1, 3), torch.float32),
    "lmk_faces_idx": ((51,), torch.int64),
    "lmk_bary_coords": ((51, 3), torch.float32),
    "dynamic_lmk_faces_idx": ((79, 17), torch.int64),
    "dynamic_lmk_bary_coords": ((79, 17, 3), torch.float32),
    "full_lmk_faces_idx": ((1, 68), torch.int64),
    "full_lmk_bary_coords": ((1, 68, 3), torch.float32),
    "neck_kin_chain": ((2,), torch.int64),
}
"""The FLAME decoder's saved entries under ``flameModel.generator.`` (FLAME 2020, 5023 vertices,
300 shape + 100 expression directions, DECA's landmark embedding)."""


class MappingNetwork(nn.Module):
    """``z [B,512] -> [B,300]`` (see the module docstring); keys ``network.{0..3}``, ``output``."""

    def __init__(self, z_dim: int = 512, hidden_dim: int = N_SHAPE, out_dim: int = N_SHAPE,
                 hidden: int = HIDDEN) -> None:
        super().__init__()
        self.network = nn.ModuleList([nn.Linear(z_dim, hidden_dim)] +
                                     [nn.Linear(hidden_dim, hidden_dim) for _ in range(hidden)])
        self.output = nn.Linear(hidden_dim, out_dim)

    def forward(self, z: Tensor) -> Tensor:
        for layer in self.network:
            z = F.leaky_relu(layer(z), 0.2)
        return self.output(z)


class FlameBuffers(nn.Module):
    """Holds the saved FLAME decoder's entries (see :data:`FLAME_BUFFERS`) so the state dict matches."""

    def __init__(self, device: torch.device | str | None = None) -> None:
        super().__init__()
        for name, (shape, dtype) in FLAME_BUFFERS.items():
            self.register_buffer(name, torch.zeros(shape, dtype=dtype, device=device))


class Generator(nn.Module):
    """``flameModel``: ``regressor`` (the mapping network) and ``generator`` (FLAME's saved buffers)."""

    def __init__(self, device: torch.device | str | None = None) -> None:
        super().__init__()
        self.regressor = MappingNetwork()
        self.generator = FlameBuffers(device)


class MICA(nn.Module):
    """``forward(x [B,3,112,112] normalised RGB) -> shape [B,300]`` FLAME 2020 coefficients.

    Args:
        layers: ArcFace blocks per stage (default iresnet100; smaller only in tests).
    """

    def __init__(self, layers: tuple[int, int, int, int] = LAYERS_100) -> None:
        super().__init__()
        self.arcface = IResNet(layers)
        self.flameModel = Generator()

    def forward(self, x: Tensor) -> Tensor:
        return self.flameModel.regressor(F.normalize(self.arcface(x)))


def normalise(rgb: Tensor) -> Tensor:
    """uint8 or 0..255 float ``[B,112,112,3]`` RGB -> ``[B,3,112,112]`` ``(x - 127.5) / 127.5``."""
    return (rgb.float().permute(0, 3, 1, 2) - 127.5) / 127.5


def load_mica(path: str | Path, layers: tuple[int, int, int, int] = LAYERS_100) -> MICA:
    """``mica.tar`` into :class:`MICA`, both state dicts strictly, eval mode. BadInput (one line)
    for a file that is not MICA's checkpoint (missing entries, other shapes, truncated)."""
    obj = read_checkpoint(path, FIX)
    model = MICA(layers)
    load_strict(model.arcface, state_dict_of(obj, path, FIX, "arcface"), path, FIX, "MICA's checkpoint (arcface)")
    load_strict(model.flameModel, state_dict_of(obj, path, FIX, "flameModel"), path, FIX,
                "MICA's checkpoint (flameModel)")
    return model.eval()


def validate_mica(path: Path) -> dict[str, Any]:
    """The ``mica`` asset's format check: loads strictly (about 1 s, 0.3 GB)."""
    model = load_mica(path)
    return {"model": "mica", "arcface_tensors": len(model.arcface.state_dict()), "n_shape": N_SHAPE}
