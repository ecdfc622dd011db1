"""RobustVideoMatting (RVM), laid out so that PeterL1n/RobustVideoMatting's published checkpoints
``rvm_mobilenetv3.pth`` and ``rvm_resnet50.pth`` (plain state dicts) load strictly; and their one-time
ONNX export with the official export's signature, for the masks stage's ONNX backend.

Architecture (facts of the published model; one frame a step, states carried by the caller)::

    src [B,3,H,W] RGB 0..1;  ratio = downsample_ratio
    s0 = src resized by ratio (bilinear, half-pixel; src itself when ratio == 1)
    backbone(s0) -> f1 (1/2), f2 (1/4), f3 (1/8), f4 (1/16)
      mobilenetv3: torchvision MobileNetV3-Large ``features`` (ImageNet-normalised input;
                   BN eps 1e-3); f1..f4 after features 1, 3, 6, 16 (16, 24, 40, 960 channels);
                   the three stride-2 C4 blocks run at stride 1 with dilation 2
      resnet50:    torchvision ResNet-50 with layer4 dilated (stride 1, dilation 2), input not
                   normalised; f1 = relu(bn1(conv1)), f2..f4 = layer1, layer2, layer4
                   (64, 256, 512, 2048 channels)
    aspp: LR-ASPP, relu(bn(conv1x1(f4))) * sigmoid(conv1x1(global mean f4)) -> 128 | 256 channels
    decoder (s1..s3 = s0 average-pooled 2x2 (ceil) once, twice, thrice):
      decode4: split f4 in halves, ConvGRU on the second         -> x4, r4 (1/16)
      decode3..1: up x2 (bilinear), crop to s_k, cat(x, f_k, s_k), conv3x3-BN-ReLU, ConvGRU on the
                  second half of the channels                     -> x_k, r_k (1/8, 1/4, 1/2)
      decode0: up x2, crop to s0, cat(x, s0), 2 x (conv3x3-BN-ReLU) -> hid [B,16,h,w]
    ConvGRU(x, h): r, z = sigmoid(ih(cat(x, h))); c = tanh(hh(cat(x, r h))); h' = (1 - z) h + z c
    project_mat(hid) (1x1 conv, 16 -> 4) -> fgr residual [3], pha [1]
    refiner (only when ratio != 1): Deep Guided Filter from s0 up to src's size
    fgr = clamp(residual + src, 0, 1), pha = clamp(pha, 0, 1)
    project_seg (1x1, 16 -> 1): the segmentation head (training-time; kept so the file loads)

States ``r1..r4`` [B,C,h,w] at 1/2, 1/4, 1/8, 1/16 of ``s0`` with 16, 20, 40, 64 channels
(mobilenetv3) or 16, 32, 64, 128 (resnet50); zeros of any broadcastable shape (RVM's ONNX
convention: [1,1,1,1]) start a stream.

:func:`export_onnx` writes the graph the official ``export_onnx.py`` writes: inputs ``src, r1i..r4i,
downsample_ratio`` [1] float32, outputs ``fgr, pha, r1o..r4o``, batch and sizes dynamic. One
difference: the official graph always runs the refiner, ours keeps the PyTorch model's rule
(refiner only when ``downsample_ratio != 1``), so both of our paths give the same numbers.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stages.errors import bad_input
from stages.nets.checkpoint import load_strict, read_checkpoint, state_dict_of

FIX = "give RobustVideoMatting's rvm_mobilenetv3.pth or rvm_resnet50.pth (or its official ONNX export)"
VARIANTS = ("mobilenetv3", "resnet50")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
STATE_CHANNELS = {"mobilenetv3": (16, 20, 40, 64), "resnet50": (16, 32, 64, 128)}
"""Channels of the recurrent states r1..r4 of each variant."""

# MobileNetV3-Large blocks as RVM configures them:
# (in, kernel, expanded, out, squeeze-excite, hard-swish, stride, dilation)
MOBILENETV3_BLOCKS = (
    (16, 3, 16, 16, False, False, 1, 1),
    (16, 3, 64, 24, False, False, 2, 1),
    (24, 3, 72, 24, False, False, 1, 1),
    (24, 5, 72, 40, True, False, 2, 1),
    (40, 5, 120, 40, True, False, 1, 1),
    (40, 5, 120, 40, True, False, 1, 1),
    (40, 3, 240, 80, False, True, 2, 1),
    (80, 3, 200, 80, False, True, 1, 1),
    (80, 3, 184, 80, False, True, 1, 1),
    (80, 3, 184, 80, False, True, 1, 1),
    (80, 3, 480, 112, True, True, 1, 1),
    (112, 3, 672, 112, True, True, 1, 1),
    (112, 5, 672, 160, True, True, 2, 2),
    (160, 5, 960, 160, True, True, 1, 2),
    (160, 5, 960, 160, True, True, 1, 2),
)
MOBILENETV3_TAPS = (1, 3, 6, 16)
"""Indices of ``features`` whose outputs are f1..f4."""


def _divisible8(v: float) -> int:
    """Round ``v`` to a multiple of 8, never below 90 % of ``v`` (torchvision's channel rounding)."""
    r = max(8, int(v + 4) // 8 * 8)
    return r + 8 if r < 0.9 * v else r


def _conv_bn_act(cin: int, cout: int, k: int, stride: int = 1, dilation: int = 1, groups: int = 1,
                 act: type[nn.Module] | None = nn.ReLU, eps: float = 1e-3) -> nn.Sequential:
    """``0`` conv (no bias, 'same' padding), ``1`` BatchNorm, ``2`` activation (if any)."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, (k - 1) // 2 * dilation, dilation, groups, bias=False),
                               nn.BatchNorm2d(cout, eps=eps)]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


class SqueezeExcite(nn.Module):
    """``x * hardsigmoid(fc2(relu(fc1(mean x))))``; ``fc1``/``fc2`` 1x1 convolutions with bias,
    squeezed to ``expanded / 4`` rounded to a multiple of 8."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        mid = _divisible8(channels // 4)
        self.fc1 = nn.Conv2d(channels, mid, 1)
        self.fc2 = nn.Conv2d(mid, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return x * F.hardsigmoid(self.fc2(F.relu(self.fc1(x.mean(dim=(2, 3), keepdim=True)))))


class InvertedResidual(nn.Module):
    """MobileNetV3 block ``block``: [1x1 expand], k x k depthwise, [squeeze-excite], 1x1 project (no
    activation); plus the input where the stride is 1 and the channels match. A dilated block runs
    its depthwise convolution at stride 1."""

    def __init__(self, cin: int, k: int, mid: int, cout: int, se: bool, hs: bool, stride: int, dilation: int) -> None:
        super().__init__()
        act = nn.Hardswish if hs else nn.ReLU
        layers: list[nn.Module] = []
        if mid != cin:
            layers.append(_conv_bn_act(cin, mid, 1, act=act))
        layers.append(_conv_bn_act(mid, mid, k, 1 if dilation > 1 else stride, dilation, mid, act=act))
        if se:
            layers.append(SqueezeExcite(mid))
        layers.append(_conv_bn_act(mid, cout, 1, act=None))
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        y = self.block(x)
        return y + x if self.residual else y


class MobileNetV3Encoder(nn.Module):
    """``features``: stem (3x3/2 conv-BN-hardswish, 16), the 15 blocks, 1x1 conv-BN-hardswish to 960.
    ``forward(x [B,3,H,W] 0..1) -> [f1, f2, f3, f4]``."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv_bn_act(3, 16, 3, 2, act=nn.Hardswish)]
        layers += [InvertedResidual(*b) for b in MOBILENETV3_BLOCKS]
        layers.append(_conv_bn_act(160, 960, 1, act=nn.Hardswish))
        self.features = nn.Sequential(*layers)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> list[Tensor]:
        x = (x - self.mean) / self.std
        taps = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in MOBILENETV3_TAPS:
                taps.append(x)
        return taps


class Bottleneck(nn.Module):
    """ResNet-50 bottleneck: 1x1 -> 3x3 (stride, dilation) -> 1x1 (x4), BN after each, ReLU; plus
    ``downsample`` (1x1 conv, BN) of the input where the shape changes."""

    def __init__(self, cin: int, width: int, stride: int, dilation: int) -> None:
        super().__init__()
        cout = 4 * width
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, dilation, dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.downsample = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                           if stride != 1 or cin != cout else None)

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return F.relu(y + (self.downsample(x) if self.downsample is not None else x))


class ResNet50Encoder(nn.Module):
    """``conv1`` 7x7/2, ``bn1``, ReLU (-> f1), max-pool 3/2, ``layer1..4`` (3, 4, 6, 3 bottlenecks of
    width 64, 128, 256, 512; layer4 dilated: its first block at dilation 1, stride 1, the rest at
    dilation 2). ``forward(x [B,3,H,W] 0..1, not normalised) -> [f1, f2, f3, f4]``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        cin = 64
        for i, (width, n, stride) in enumerate(((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))):
            dilated = i == 3
            blocks = [Bottleneck(cin, width, 1 if dilated else stride, 1)]
            blocks += [Bottleneck(4 * width, width, 1, 2 if dilated else 1) for _ in range(n - 1)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
            cin = 4 * width

    def forward(self, x: Tensor) -> list[Tensor]:
        f1 = F.relu(self.bn1(self.conv1(x)))
        f2 = self.layer1(F.max_pool2d(f1, 3, 2, 1))
        f3 = self.layer2(f2)
        return [f1, f2, f3, self.layer4(self.layer3(f3))]


class LRASPP(nn.Module):
    """``aspp1`` (1x1 conv, BN, ReLU) times ``aspp2`` (global mean, 1x1 conv, sigmoid)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.aspp1 = _conv_bn_act(cin, cout, 1, eps=1e-5)
        self.aspp2 = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, cout, 1, bias=False), nn.Sigmoid())

    def forward(self, x: Tensor) -> Tensor:
        return self.aspp1(x) * self.aspp2(x)


class ConvGRU(nn.Module):
    """Convolutional GRU cell: ``ih`` (3x3, 2C -> 2C, sigmoid: reset r, update z), ``hh`` (3x3,
    2C -> C, tanh). ``forward(x [B,C,h,w], h broadcastable to x) -> h' [B,C,h,w]``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.ih = nn.Sequential(nn.Conv2d(2 * channels, 2 * channels, 3, padding=1), nn.Sigmoid())
        self.hh = nn.Sequential(nn.Conv2d(2 * channels, channels, 3, padding=1), nn.Tanh())

    def forward(self, x: Tensor, h: Tensor) -> Tensor:
        h = h.expand_as(x)
        r, z = self.ih(torch.cat([x, h], dim=1)).chunk(2, dim=1)
        c = self.hh(torch.cat([x, r * h], dim=1))
        return (1 - z) * h + z * c


class BottleneckBlock(nn.Module):
    """``gru`` on the second half of the channels, the first half passed through."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gru = ConvGRU(channels // 2)

    def forward(self, x: Tensor, r: Tensor) -> tuple[Tensor, Tensor]:
        a, b = x.chunk(2, dim=1)
        r = self.gru(b, r)
        return torch.cat([a, r], dim=1), r


def _up_to(x: Tensor, like: Tensor) -> Tensor:
    """Bilinear x2 (half-pixel) then cropped to ``like``'s height and width."""
    x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
    return x[:, :, :like.shape[2], :like.shape[3]]


class UpsamplingBlock(nn.Module):
    """``conv`` (3x3 conv-BN-ReLU of cat(up(x), f, s)) then ``gru`` on the second half."""

    def __init__(self, cin: int, skip: int, src: int, cout: int) -> None:
        super().__init__()
        self.conv = _conv_bn_act(cin + skip + src, cout, 3, eps=1e-5)
        self.gru = ConvGRU(cout // 2)

    def forward(self, x: Tensor, f: Tensor, s: Tensor, r: Tensor) -> tuple[Tensor, Tensor]:
        x = self.conv(torch.cat([_up_to(x, s), f, s], dim=1))
        a, b = x.chunk(2, dim=1)
        r = self.gru(b, r)
        return torch.cat([a, r], dim=1), r


class OutputBlock(nn.Module):
    """``conv``: two 3x3 conv-BN-ReLU of cat(up(x), s) (indices 0-2 and 3-5)."""

    def __init__(self, cin: int, src: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(*_conv_bn_act(cin + src, cout, 3, eps=1e-5), *_conv_bn_act(cout, cout, 3, eps=1e-5))

    def forward(self, x: Tensor, s: Tensor) -> Tensor:
        return self.conv(torch.cat([_up_to(x, s), s], dim=1))


class RecurrentDecoder(nn.Module):
    """``decode4`` (bottleneck GRU), ``decode3..1`` (upsampling + GRU), ``decode0`` (output block)."""

    def __init__(self, feats: tuple[int, int, int, int], dec: tuple[int, int, int, int]) -> None:
        super().__init__()
        self.decode4 = BottleneckBlock(feats[3])
        self.decode3 = UpsamplingBlock(feats[3], feats[2], 3, dec[0])
        self.decode2 = UpsamplingBlock(dec[0], feats[1], 3, dec[1])
        self.decode1 = UpsamplingBlock(dec[1], feats[0], 3, dec[2])
        self.decode0 = OutputBlock(dec[2], 3, dec[3])

    def forward(self, s0: Tensor, f: list[Tensor], r: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        pool = lambda t: F.avg_pool2d(t, 2, 2, ceil_mode=True, count_include_pad=False)  # noqa: E731
        s1 = pool(s0)
        s2 = pool(s1)
        s3 = pool(s2)
        x4, r4 = self.decode4(f[3], r[3])
        x3, r3 = self.decode3(x4, f[2], s3, r[2])
        x2, r2 = self.decode2(x3, f[1], s2, r[1])
        x1, r1 = self.decode1(x2, f[0], s1, r[0])
        return self.decode0(x1, s0), [r1, r2, r3, r4]


class Projection(nn.Module):
    """``conv``: 1x1 with bias."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class DeepGuidedFilter(nn.Module):
    """Deep Guided Filter refiner: from the low-resolution guide ``base`` and output ``y`` (fgr residual,
    pha) and hidden features, a per-pixel linear map ``A x + b`` computed at low resolution and
    applied, bilinearly upsampled, to the full-resolution guide. ``box_filter``: depthwise 3x3 (4
    channels, no bias); ``conv``: 1x1 conv-BN-ReLU x 2, then 1x1 (with bias) to 4 channels."""

    def __init__(self, hid: int = 16) -> None:
        super().__init__()
        self.box_filter = nn.Conv2d(4, 4, 3, padding=1, groups=4, bias=False)
        self.conv = nn.Sequential(*_conv_bn_act(8 + hid, hid, 1, eps=1e-5), *_conv_bn_act(hid, hid, 1, eps=1e-5),
                                  nn.Conv2d(hid, 4, 1))

    def forward(self, fine: Tensor, base: Tensor, fgr: Tensor, pha: Tensor, hid: Tensor,
                resize_to=None) -> tuple[Tensor, Tensor]:
        """fine [B,3,H,W], base [B,3,h,w], fgr [B,3,h,w], pha [B,1,h,w], hid [B,16,h,w] ->
        (fgr residual [B,3,H,W], pha [B,1,H,W])."""
        fine_x = torch.cat([fine, fine.mean(1, keepdim=True)], dim=1)
        x = torch.cat([base, base.mean(1, keepdim=True)], dim=1)
        y = torch.cat([fgr, pha], dim=1)
        box = self.box_filter
        mean_x, mean_y = box(x), box(y)
        cov_xy = box(x * y) - mean_x * mean_y
        var_x = box(x * x) - mean_x * mean_x
        a = self.conv(torch.cat([cov_xy, var_x, hid], dim=1))
        b = mean_y - a * mean_x
        resize = resize_to or (lambda t, like: F.interpolate(t, like.shape[2:], mode="bilinear", align_corners=False))
        out = resize(a, fine) * fine_x + resize(b, fine)
        return out[:, :3], out[:, 3:]


class _ResizeByFactor(torch.autograd.Function):
    """Bilinear (half-pixel) resize by a runtime factor ``ratio`` [1]; exported as one ONNX
    ``Resize`` whose scales come from the input (the traced ``F.interpolate`` would freeze it)."""

    @staticmethod
    def forward(ctx, x: Tensor, ratio: Tensor) -> Tensor:  # noqa: ARG004
        r = float(ratio.reshape(-1)[0])
        return x.clone() if r == 1.0 else F.interpolate(x, scale_factor=r, mode="bilinear", align_corners=False,
                                                recompute_scale_factor=False)

    @staticmethod
    def symbolic(g, x, ratio):
        ones = g.op("Constant", value_t=torch.ones(2, dtype=torch.float32))
        scales = g.op("Concat", ones, ratio, ratio, axis_i=0)
        roi = g.op("Constant", value_t=torch.zeros(0, dtype=torch.float32))
        return g.op("Resize", x, roi, scales, mode_s="linear", coordinate_transformation_mode_s="pytorch_half_pixel")


class MattingNetwork(nn.Module):
    """RVM. ``forward(src, r1, r2, r3, r4, downsample_ratio) -> (fgr, pha, r1', r2', r3', r4')``.

    Args:
        variant: ``mobilenetv3`` or ``resnet50``.

    Shapes: src [B,3,H,W] RGB 0..1; r_k broadcastable to [B,C_k,h_k,w_k] (zeros [1,1,1,1] to
    start); fgr [B,3,H,W], pha [B,1,H,W] in 0..1; states as in the module docstring.
    """

    def __init__(self, variant: str = "mobilenetv3") -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"variant {variant!r}: use one of {', '.join(VARIANTS)}")
        self.variant = variant
        if variant == "mobilenetv3":
            self.backbone: nn.Module = MobileNetV3Encoder()
            self.aspp = LRASPP(960, 128)
            self.decoder = RecurrentDecoder((16, 24, 40, 128), (80, 40, 32, 16))
        else:
            self.backbone = ResNet50Encoder()
            self.aspp = LRASPP(2048, 256)
            self.decoder = RecurrentDecoder((64, 256, 512, 256), (128, 64, 32, 16))
        self.project_mat = Projection(16, 4)
        self.project_seg = Projection(16, 1)
        self.refiner = DeepGuidedFilter(16)

    def _coarse(self, s0: Tensor, states: list[Tensor]) -> tuple[Tensor, Tensor, Tensor, list[Tensor]]:
        f = self.backbone(s0)
        f[3] = self.aspp(f[3])
        hid, rec = self.decoder(s0, f, states)
        out = self.project_mat(hid)
        return out[:, :3], out[:, 3:], hid, rec

    def forward(self, src: Tensor, r1: Tensor, r2: Tensor, r3: Tensor, r4: Tensor,
                downsample_ratio: float | Tensor = 1.0) -> tuple[Tensor, ...]:
        """The reference path (eager PyTorch): the refiner runs only when the ratio is not 1."""
        ratio = float(torch.as_tensor(downsample_ratio).reshape(-1)[0])
        s0 = src if ratio == 1.0 else F.interpolate(src, scale_factor=ratio, mode="bilinear", align_corners=False,
                                                    recompute_scale_factor=False)
        fgr_res, pha, hid, rec = self._coarse(s0, [r1, r2, r3, r4])
        if ratio != 1.0:
            fgr_res, pha = self.refiner(src, s0, fgr_res, pha, hid)
        return ((fgr_res + src).clamp(0.0, 1.0), pha.clamp(0.0, 1.0), *rec)

    def forward_graph(self, src: Tensor, r1: Tensor, r2: Tensor, r3: Tensor, r4: Tensor,
                      downsample_ratio: Tensor) -> tuple[Tensor, ...]:
        """The exported path: ``downsample_ratio`` [1] float32 is a runtime input. Both outputs
        (coarse, resized to ``src`` -- exact when the ratio is 1 -- and refined) are computed and
        the ratio picks one, as :meth:`forward` does with a Python ``if``."""
        s0 = _ResizeByFactor.apply(src, downsample_ratio)
        fgr_res, pha, hid, rec = self._coarse(s0, [r1, r2, r3, r4])
        ref_fgr, ref_pha = self.refiner(src, s0, fgr_res, pha, hid)
        keep = (downsample_ratio == 1.0).reshape(1, 1, 1, 1)
        size = lambda t: F.interpolate(t, src.shape[2:], mode="bilinear", align_corners=False)  # noqa: E731
        fgr_res = torch.where(keep, size(fgr_res), ref_fgr)
        pha = torch.where(keep, size(pha), ref_pha)
        return ((fgr_res + src).clamp(0.0, 1.0), pha.clamp(0.0, 1.0), *rec)


def variant_of(state: Mapping[str, Tensor]) -> str:
    """Which variant a state dict is: ``resnet50`` when it has ResNet layers, else ``mobilenetv3``."""
    return "resnet50" if "backbone.layer1.0.conv1.weight" in state else "mobilenetv3"


def load_rvm(path: str | Path) -> MattingNetwork:
    """``rvm_mobilenetv3.pth`` / ``rvm_resnet50.pth`` (a plain state dict, optionally
    ``module.``-prefixed) into :class:`MattingNetwork` of the matching variant, strictly, in eval
    mode. BadInput (one line) for any other file."""
    state = state_dict_of(read_checkpoint(path, FIX), path, FIX)
    variant = variant_of(state)
    net = MattingNetwork(variant)
    return load_strict(net, state, path, FIX, f"a RobustVideoMatting {variant} checkpoint").eval()


INPUTS = ("src", "r1i", "r2i", "r3i", "r4i", "downsample_ratio")
OUTPUTS = ("fgr", "pha", "r1o", "r2o", "r3o", "r4o")


class _Graph(nn.Module):
    def __init__(self, net: MattingNetwork) -> None:
        super().__init__()
        self.net = net

    def forward(self, src, r1, r2, r3, r4, ratio):
        return self.net.forward_graph(src, r1, r2, r3, r4, ratio)


def export_onnx(model: MattingNetwork, path: str | Path, size: tuple[int, int] = (64, 64), opset: int = 17) -> Path:
    """ONNX export with the official signature: ``src`` [B,3,H,W] float32, ``r1i..r4i`` [B,C,h,w]
    float32 (all dims dynamic), ``downsample_ratio`` [1] float32 -> ``fgr``, ``pha``, ``r1o..r4o``;
    batch and sizes dynamic (traced at ``size`` = (H, W)). The model is left in eval mode."""
    model.eval()
    src = torch.rand(1, 3, *size)
    rec = tuple(torch.zeros(1, 1, 1, 1) for _ in range(4))
    ratio = torch.tensor([1.0])
    spatial = {0: "batch", 2: "height", 3: "width"}
    dyn: dict[str, dict[int, str]] = {"src": spatial, "fgr": spatial, "pha": spatial}
    for k in range(1, 5):
        dyn[f"r{k}i"] = {0: "batch", 1: f"c{k}", 2: f"h{k}i", 3: f"w{k}i"}
        dyn[f"r{k}o"] = {0: "batch", 2: f"h{k}", 3: f"w{k}"}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notes; the ratio's trace note
        torch.onnx.export(_Graph(model).eval(), (src, *rec, ratio), str(path), dynamo=False, opset_version=opset,
                          input_names=list(INPUTS), output_names=list(OUTPUTS), dynamic_axes=dyn,
                          do_constant_folding=True)
    model.eval()
    return Path(path)


def is_torch_file(path: str | Path) -> bool:
    """Whether ``path`` starts like a PyTorch checkpoint (torch.save's zip archive or legacy pickle)."""
    with open(path, "rb") as f:
        head = f.read(2)
    return head[:2] == b"PK" or head[:1] == b"\x80"


def convert_matting(path: Path, workdir: Path) -> tuple[Path, dict[str, Any]]:
    """The ``matting`` asset's converter: an ONNX file is kept as it is; an RVM checkpoint is loaded
    strictly and exported to ``workdir/rvm_<variant>.onnx``. Returns ``(file to store, facts)``."""
    path = Path(path)
    if not path.is_file():
        raise bad_input(path, "no such file", FIX)
    if not is_torch_file(path):
        return path, {}
    net = load_rvm(path)
    out = export_onnx(net, Path(workdir) / f"rvm_{net.variant}.onnx")
    return out, {"exported_from": path.name, "variant": net.variant}
