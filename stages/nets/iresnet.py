"""The ArcFace encoder MICA uses: insightface's "improved" ResNet-100 (iresnet100), laid out so
that ``mica.tar``'s ``arcface`` state dict loads strictly.

Facts (from the published architecture)::

    x [B,3,112,112] RGB, (pixel - 127.5) / 127.5
    conv1 3x3/1 3->64 (no bias), bn1, prelu (64 slopes)
    layer1..4: 3, 13, 30, 3 blocks of 64, 128, 256, 512 channels; the first block of each has
      stride 2 and a ``downsample`` (1x1 conv stride 2 no bias, BN)
    block: bn1(x) -> conv1 3x3 -> bn2 -> prelu -> conv2 3x3 (the block's stride) -> bn3, plus the
      shortcut (no activation after the sum)
    bn2 (512) -> flatten [B, 512*7*7] -> fc (25088 -> 512) -> features (BatchNorm1d 512)
    BatchNorm eps 1e-5; dropout 0 (inference).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

LAYERS_100 = (3, 13, 30, 3)
WIDTHS = (64, 128, 256, 512)
INPUT_SIZE = 112


class IBasicBlock(nn.Module):
    """Pre-activation-style block (see the module docstring)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin, eps=1e-5)
        self.conv1 = nn.Conv2d(cin, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout, eps=1e-5)
        self.prelu = nn.PReLU(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout, eps=1e-5)
        self.downsample = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout, eps=1e-5))
                           if stride != 1 or cin != cout else None)

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return out + (self.downsample(x) if self.downsample is not None else x)


class IResNet(nn.Module):
    """``forward(x [B,3,112,112]) -> [B,512]`` (not normalised; MICA L2-normalises it).

    Args:
        layers: blocks per stage (``LAYERS_100`` for ArcFace-100; smaller for tests).
        input_size: side of the square input (112: a 7x7 map before ``fc``).
    """

    def __init__(self, layers: tuple[int, int, int, int] = LAYERS_100, input_size: int = INPUT_SIZE) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64, eps=1e-5)
        self.prelu = nn.PReLU(64)
        cin = 64
        for i, (n, w) in enumerate(zip(layers, WIDTHS)):
            blocks = [IBasicBlock(cin, w, 2)] + [IBasicBlock(w, w, 1) for _ in range(n - 1)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
            cin = w
        self.bn2 = nn.BatchNorm2d(512, eps=1e-5)
        side = input_size // 16
        self.fc = nn.Linear(512 * side * side, 512)
        self.features = nn.BatchNorm1d(512, eps=1e-5)

    def forward(self, x: Tensor) -> Tensor:
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.features(self.fc(torch.flatten(self.bn2(x), 1)))
