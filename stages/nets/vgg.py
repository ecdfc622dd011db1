"""LPIPS (v0.1, VGG) as FlashAvatar trains and reports with it, without torchvision or the lpips
package: the VGG-16 feature stack laid out so that torchvision's ImageNet checkpoint
(``vgg16-397923af.pth``, keys ``features.N.weight/bias`` and ``classifier.{0,3,6}``) loads strictly,
and the five linear layers of LPIPS v0.1 read from the ``lpips`` package's data file
(``lpips/weights/v0.1/vgg.pth``, keys ``lin{0..4}.model.1.weight`` [1,C,1,1]).

LPIPS(x, y), images in -1..1 (facts of LPIPS v0.1)::

    x' = (x - shift) / scale, shift = (-0.030, -0.088, -0.188), scale = (0.458, 0.448, 0.450)
    features after relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 (VGG-16 ``features`` slices
      [0:4], [4:9], [9:16], [16:23], [23:30]; 64, 128, 256, 512, 512 channels)
    each unit-normalised over channels (f / (|f| + 1e-10)); d = (fx - fy)^2
    LPIPS = sum over layers of the spatial mean of lin_l(d) (1x1 conv to one channel, no bias)
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from stages.errors import bad_input
from stages.nets.checkpoint import load_strict, read_checkpoint, state_dict_of

VGG_FIX = "give torchvision's VGG-16 ImageNet checkpoint vgg16-397923af.pth"
LIN_FIX = "give the lpips package's lpips/weights/v0.1/vgg.pth"
CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
SLICES = (4, 9, 16, 23, 30)
CHANNELS = (64, 128, 256, 512, 512)
CLASSIFIER = {"classifier.0.weight": (4096, 25088), "classifier.0.bias": (4096,),
              "classifier.3.weight": (4096, 4096), "classifier.3.bias": (4096,),
              "classifier.6.weight": (1000, 4096), "classifier.6.bias": (1000,)}
"""The checkpoint's classifier entries: checked by name and shape, not loaded (LPIPS uses none)."""
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)


def vgg16_features() -> nn.Sequential:
    """VGG-16's ``features``: 13 3x3 convolutions (with bias) + ReLU, 5 max-pools (indices as torchvision's)."""
    layers: list[nn.Module] = []
    cin = 3
    for c in CFG:
        if c == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(cin, int(c), 3, padding=1), nn.ReLU(inplace=False)]
            cin = int(c)
    layers.append(nn.MaxPool2d(2, 2))
    return nn.Sequential(*layers)


class LPIPS(nn.Module):
    """``forward(x, y [B,3,H,W] in -1..1) -> [B]`` LPIPS v0.1 (VGG). Frozen (no parameter gradients);
    gradients flow to the inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.features = vgg16_features()
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in CHANNELS)
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    def taps(self, x: Tensor) -> list[Tensor]:
        out, start = [], 0
        h = (x - self.shift) / self.scale
        for stop in SLICES:
            h = self.features[start:stop](h)
            out.append(h)
            start = stop
        return out

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        total = x.new_zeros(x.shape[0])
        for fx, fy, lin in zip(self.taps(x), self.taps(y), self.lins):
            nx = fx / (fx.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            ny = fy / (fy.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            total = total + lin((nx - ny) ** 2).mean(dim=(1, 2, 3))
        return total


def load_vgg16_into(model: LPIPS, path: str | Path) -> bool:
    """torchvision's ``vgg16-397923af.pth`` into ``model.features`` strictly (the classifier
    entries must be there with their shapes; they are not kept). A features-only file (the same
    ``features.*`` keys and no ``classifier.*`` at all, e.g. :mod:`stages.nets.vgg_convert`'s) is
    accepted too. Returns whether the file had the classifier."""
    state = state_dict_of(read_checkpoint(path, VGG_FIX), path, VGG_FIX)
    cls = {k: v for k, v in state.items() if k.startswith("classifier.")}
    wrong = [k for k, s in CLASSIFIER.items() if cls and (k not in cls or tuple(cls[k].shape) != s)] + \
            [k for k in cls if k not in CLASSIFIER]
    if wrong:
        raise bad_input(path, f"not torchvision's VGG-16 checkpoint: classifier entries {', '.join(wrong[:3])} "
                              "missing, unexpected or of another shape", VGG_FIX)
    feats = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
    other = [k for k in state if not k.startswith(("features.", "classifier."))]
    if other:
        raise bad_input(path, f"not torchvision's VGG-16 checkpoint: unexpected {', '.join(other[:3])}", VGG_FIX)
    load_strict(model.features, feats, path, VGG_FIX, "torchvision's VGG-16 checkpoint (features)")
    return bool(cls)


def load_lpips_linear_into(model: LPIPS, path: str | Path) -> None:
    """LPIPS v0.1's ``vgg.pth`` (``lin{i}.model.1.weight``) into ``model.lins`` strictly."""
    state = state_dict_of(read_checkpoint(path, LIN_FIX), path, LIN_FIX)
    renamed = {}
    for k, v in state.items():
        parts = k.split(".")
        ok = len(parts) == 4 and parts[0].startswith("lin") and parts[1:] == ["model", "1", "weight"]
        renamed[f"{parts[0][3:]}.weight" if ok else k] = v
    load_strict(model.lins, renamed, path, LIN_FIX, "LPIPS v0.1's VGG linear layers")


def installed_lpips_linear() -> Path | None:
    """``lpips/weights/v0.1/vgg.pth`` of an installed ``lpips`` distribution (found through its
    metadata; the package is not imported, it needs torchvision), or None."""
    try:
        dist = metadata.distribution("lpips")
    except metadata.PackageNotFoundError:
        return None
    for f in dist.files or ():
        if str(f).replace("\\", "/").endswith("lpips/weights/v0.1/vgg.pth"):
            p = Path(str(dist.locate_file(f)))
            return p if p.is_file() else None
    return None


def load_lpips(vgg16: str | Path, linear: str | Path | None = None) -> LPIPS:
    """An :class:`LPIPS` with torchvision's VGG-16 and LPIPS v0.1's linear layers (``linear``, else
    the installed lpips package's file). BadInput when either is wrong or no linear file is found."""
    lin = linear if linear is not None else installed_lpips_linear()
    if lin is None:
        raise bad_input("lpips", "LPIPS v0.1's linear weights were not found (no lpips asset, no installed lpips "
                                 "package)", "pip install lpips --no-deps, or: avatar assets add lpips vgg.pth")
    model = LPIPS()
    load_vgg16_into(model, vgg16)
    load_lpips_linear_into(model, lin)
    return model.eval()


def validate_vgg16(path: Path) -> dict[str, Any]:
    """The ``vgg16`` asset's check (strict load of the features, classifier shapes)."""
    classifier = load_vgg16_into(LPIPS(), path)
    return {"model": "vgg16", "conv_layers": 13, "classifier": classifier}


def validate_lpips_linear(path: Path) -> dict[str, Any]:
    """The ``lpips`` asset's check."""
    load_lpips_linear_into(LPIPS(), path)
    return {"model": "lpips-v0.1-vgg", "layers": len(CHANNELS)}


def masked_lpips(model: LPIPS, image: Tensor, gt: Tensor, mask: Tensor, amp: bool = False) -> Tensor:
    """FlashAvatar's term: LPIPS of ``image * mask`` against ``gt * mask``, images ``[B,H,W,3]`` 0..1,
    mask ``[B,H,W]`` 0..1 (neck and head), mapped to -1..1. Returns the batch mean (scalar, float32).
    ``amp``: run the VGG stack in bfloat16 on CUDA (about 2x faster; a training loss, not a metric)."""
    m = mask.unsqueeze(-1).to(image.dtype)
    x = ((image * m).permute(0, 3, 1, 2) * 2 - 1).float()
    y = ((gt * m).permute(0, 3, 1, 2) * 2 - 1).float()
    with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=amp and x.is_cuda):
        return model(x, y).float().mean()
