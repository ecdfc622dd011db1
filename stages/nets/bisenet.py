"""BiSeNet face parsing (19 classes), laid out so that zllrunning/face-parsing.PyTorch's published
checkpoint ``79999_iter.pth`` loads strictly; and its one-time ONNX export for the masks stage.

Architecture (facts of the published model; the spatial path of the BiSeNet paper is replaced by the
ResNet's stride-8 features)::

    x [B,3,H,W] (ImageNet-normalised RGB)
    cp.resnet   ResNet-18: conv1 7x7/2 64, bn1, ReLU, maxpool 3/2, layer1..4 (2 basic blocks each,
                64, 128, 256, 512 channels, strides 1, 2, 2, 2)  -> feat8, feat16, feat32
    cp          context path: global average of feat32 -> conv_avg (1x1 -> 128), added to
                arm32(feat32); nearest-upsampled to feat16's size, conv_head32; added to arm16(feat16);
                nearest-upsampled to feat8's size, conv_head16 -> cp8 [B,128,H/8,W/8]
    ffm         feature fusion of cat(feat8, cp8) [256] -> 256 (1x1 conv-BN-ReLU, channel attention
                256 -> 64 -> 256, out = f * a + f)
    conv_out    3x3 conv-BN-ReLU 256 -> 256, 1x1 -> 19; bilinear (align_corners) to H, W -> logits
    conv_out16, conv_out32: auxiliary heads (training only; kept so the checkpoint loads)

Conv-BN-ReLU units are ``<name>.conv`` (no bias) and ``<name>.bn``; attention refinement is
``conv`` (3x3 conv-BN-ReLU), ``conv_atten`` (1x1, no bias), ``bn_atten``, sigmoid of the global average.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stages.nets.checkpoint import load_strict, read_checkpoint, state_dict_of

N_CLASSES = 19
FIX = "give zllrunning/face-parsing.PyTorch's 79999_iter.pth (or a 19-class BiSeNet ONNX export)"


class ConvBNReLU(nn.Module):
    """``conv`` (k x k, no bias) -> ``bn`` -> ReLU."""

    def __init__(self, cin: int, cout: int, k: int = 3, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, k // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)))


class BasicBlock(nn.Module):
    """ResNet basic block: relu(shortcut(x) + bn2(conv2(relu(bn1(conv1(x)))))); ``downsample``
    (1x1 conv, BN) where the channels or the stride change."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                           if cin != cout or stride != 1 else None)

    def forward(self, x: Tensor) -> Tensor:
        r = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(r + (self.downsample(x) if self.downsample is not None else x))


class ResNet18(nn.Module):
    """The backbone; ``forward`` returns the stride-8, 16 and 32 features [B,128|256|512,...]."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        chans = (64, 64, 128, 256, 512)
        for i in range(4):
            stride = 1 if i == 0 else 2
            setattr(self, f"layer{i + 1}", nn.Sequential(BasicBlock(chans[i], chans[i + 1], stride),
                                                         BasicBlock(chans[i + 1], chans[i + 1], 1)))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        f8 = self.layer2(self.layer1(x))
        f16 = self.layer3(f8)
        return f8, f16, self.layer4(f16)


class AttentionRefinement(nn.Module):
    """3x3 conv-BN-ReLU, then scaled per channel by sigmoid(bn(conv1x1(global average)))."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = ConvBNReLU(cin, cout, 3)
        self.conv_atten = nn.Conv2d(cout, cout, 1, bias=False)
        self.bn_atten = nn.BatchNorm2d(cout)

    def forward(self, x: Tensor) -> Tensor:
        f = self.conv(x)
        return f * torch.sigmoid(self.bn_atten(self.conv_atten(f.mean(dim=(2, 3), keepdim=True))))


class ContextPath(nn.Module):
    """ResNet-18 plus the attention-refined, upsampled context (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.resnet = ResNet18()
        self.arm16 = AttentionRefinement(256, 128)
        self.arm32 = AttentionRefinement(512, 128)
        self.conv_head32 = ConvBNReLU(128, 128, 3)
        self.conv_head16 = ConvBNReLU(128, 128, 3)
        self.conv_avg = ConvBNReLU(512, 128, 1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        f8, f16, f32 = self.resnet(x)
        avg = self.conv_avg(f32.mean(dim=(2, 3), keepdim=True))
        s32 = self.arm32(f32) + avg  # broadcasting = nearest upsampling of a 1x1 map
        up32 = self.conv_head32(F.interpolate(s32, size=f16.shape[2:], mode="nearest"))
        s16 = self.arm16(f16) + up32
        up16 = self.conv_head16(F.interpolate(s16, size=f8.shape[2:], mode="nearest"))
        return f8, up16, up32


class FeatureFusion(nn.Module):
    """cat -> 1x1 conv-BN-ReLU ``convblk`` -> f * a + f, a = sigmoid(conv2(relu(conv1(mean f))))."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.convblk = ConvBNReLU(cin, cout, 1)
        self.conv1 = nn.Conv2d(cout, cout // 4, 1, bias=False)
        self.conv2 = nn.Conv2d(cout // 4, cout, 1, bias=False)

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        f = self.convblk(torch.cat([a, b], dim=1))
        att = torch.sigmoid(self.conv2(F.relu(self.conv1(f.mean(dim=(2, 3), keepdim=True)))))
        return f * att + f


class Head(nn.Module):
    """3x3 conv-BN-ReLU ``conv`` then 1x1 ``conv_out`` (no bias) to the classes."""

    def __init__(self, cin: int, mid: int, n_classes: int) -> None:
        super().__init__()
        self.conv = ConvBNReLU(cin, mid, 3)
        self.conv_out = nn.Conv2d(mid, n_classes, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv_out(self.conv(x))


class BiSeNet(nn.Module):
    """``forward(x [B,3,H,W]) -> logits [B,19,H,W]`` (H, W multiples of 32). ``aux=True`` also
    returns the two auxiliary heads' logits (training-time outputs, same size)."""

    def __init__(self, n_classes: int = N_CLASSES) -> None:
        super().__init__()
        self.cp = ContextPath()
        self.ffm = FeatureFusion(256, 256)
        self.conv_out = Head(256, 256, n_classes)
        self.conv_out16 = Head(128, 64, n_classes)
        self.conv_out32 = Head(128, 64, n_classes)

    def forward(self, x: Tensor, aux: bool = False) -> Tensor | tuple[Tensor, Tensor, Tensor]:
        size = x.shape[2:]
        f8, cp8, cp16 = self.cp(x)
        out = F.interpolate(self.conv_out(self.ffm(f8, cp8)), size=size, mode="bilinear", align_corners=True)
        if not aux:
            return out
        up = [F.interpolate(h(f), size=size, mode="bilinear", align_corners=True)
              for h, f in ((self.conv_out16, cp8), (self.conv_out32, cp16))]
        return out, up[0], up[1]


def load_bisenet(path: str | Path) -> BiSeNet:
    """``79999_iter.pth`` (a plain state dict, optionally ``module.``-prefixed) into :class:`BiSeNet`,
    strictly, in eval mode. BadInput (one line) for any other file."""
    state = state_dict_of(read_checkpoint(path, FIX), path, FIX)
    return load_strict(BiSeNet(), state, path, FIX, "a 19-class face-parsing BiSeNet checkpoint").eval()


def export_onnx(model: BiSeNet, path: str | Path, size: int = 512) -> Path:
    """ONNX export: input ``input`` [B,3,H,W] float32 (ImageNet-normalised RGB), output ``logits``
    [B,19,H,W]; batch, height and width dynamic (traced at ``size``), opset 17."""
    class Logits(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = model.eval()

        def forward(self, x: Tensor) -> Tensor:
            return self.net(x)

    x = torch.zeros(1, 3, size, size)
    dyn = {n: {0: "b", 2: "h", 3: "w"} for n in ("input", "logits")}
    with torch.no_grad():
        torch.onnx.export(Logits().eval(), (x,), str(path), dynamo=False, opset_version=17, input_names=["input"],
                          output_names=["logits"], dynamic_axes=dyn)
    model.eval()  # the exporter restores the modules' previous modes
    return Path(path)


def is_onnx(path: str | Path) -> bool:
    """Whether ``path`` looks like an ONNX file rather than a PyTorch checkpoint (zip or pickle)."""
    with open(path, "rb") as f:
        head = f.read(4)
    return not (head[:2] == b"PK" or head[:1] == b"\x80")


def convert_parsing(path: Path, workdir: Path) -> tuple[Path, dict[str, Any]]:
    """The ``parsing`` asset's converter: an ONNX file is kept as it is; a PyTorch checkpoint is
    loaded strictly and exported to ``workdir/bisenet.onnx``. Returns ``(file to store, facts)``."""
    if is_onnx(path):
        return path, {}
    out = export_onnx(load_bisenet(path), Path(workdir) / "bisenet.onnx")
    return out, {"exported_from": Path(path).name}

