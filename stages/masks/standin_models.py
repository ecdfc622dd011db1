"""Stand-ins for the user-supplied ONNX models, with the real models' input/output signatures.

The real RVM and BiSeNet weights are licensed downloads and never part of the project; tests and the
benchmark export these small torch networks to ONNX instead (needs torch; the masks image does not).
Both are MobileNet-style (depthwise-separable convolutions); ``width`` scales them from a few
thousand parameters (tests) to a few million (benchmark, near the real models' cost: RVM
MobileNetV3 has 3.7 M parameters).

- :class:`StandInRVM`: ``(src, r1i, r2i, r3i, r4i, downsample_ratio) -> (fgr, pha, r1o..r4o)``,
  states of 16/20/40/64 channels at 1/2, 1/4, 1/8, 1/16 resolution like RVM's. Each state is a
  leaky memory ``h = c * r + (1 - c) * tanh(f(x))`` (``c`` = ``memory``), so the state at a frame
  forgets its start as ``c^t``: a warm-up of ``t`` frames brings a stream within ``c^t`` of one
  long run, and a cold start differs clearly.
- :class:`StandInBiSeNet`: ``[B,3,H,W] -> logits [B,19,H,W]`` (plus two auxiliary outputs like
  BiSeNet's ``out16``/``out32``, which must be ignored).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

RVM_STATE_CHANNELS = (16, 20, 40, 64)


def _dw(cin: int, cout: int, stride: int) -> nn.Sequential:
    """Depthwise 3x3 (stride) + pointwise 1x1 + ReLU."""
    return nn.Sequential(nn.Conv2d(cin, cin, 3, stride, 1, groups=cin), nn.Conv2d(cin, cout, 1), nn.ReLU())


def _stage(cin: int, cout: int, blocks: int) -> nn.Sequential:
    return nn.Sequential(_dw(cin, cout, 2), *[_dw(cout, cout, 1) for _ in range(blocks - 1)])


class StandInRVM(nn.Module):
    """A recurrent matting network with RVM's signature (see the module docstring).

    Args:
        width: channel multiplier of the encoder (levels get ``width * (1, 2, 4, 8)``).
        blocks: depthwise-separable blocks per resolution level.
        memory: ``c`` in the state update (0..1).
        widths: explicit channels of the four levels (overrides ``width``).
    """

    def __init__(self, width: int = 8, blocks: int = 1, memory: float = 0.5,
                 widths: tuple[int, int, int, int] | None = None):
        super().__init__()
        chans = [3, *(widths or (width, 2 * width, 4 * width, 8 * width))]
        self.enc = nn.ModuleList(_stage(chans[i], chans[i + 1], blocks) for i in range(4))
        self.to_state = nn.ModuleList(nn.Conv2d(chans[i + 1], RVM_STATE_CHANNELS[i], 1) for i in range(4))
        self.up = nn.ModuleList(nn.Conv2d(RVM_STATE_CHANNELS[i + 1], RVM_STATE_CHANNELS[i], 1) for i in range(3))
        self.head = nn.Conv2d(RVM_STATE_CHANNELS[0] + 3, 4, 3, padding=1)
        self.memory = memory

    def forward(self, src, r1i, r2i, r3i, r4i, downsample_ratio):
        x = src + 0.0 * downsample_ratio.reshape(1, 1, 1, 1).to(src.dtype)  # keep the input in the graph
        c = self.memory
        states = []
        f = x
        for enc, proj, r in zip(self.enc, self.to_state, (r1i, r2i, r3i, r4i)):
            f = enc(f)
            states.append(c * r + (1.0 - c) * torch.tanh(proj(f)))
        d = states[3]
        for i in (2, 1, 0):
            d = states[i] + F.interpolate(self.up[i](d), scale_factor=2.0, mode="nearest")
        d = F.interpolate(d, scale_factor=2.0, mode="bilinear", align_corners=False)
        o = self.head(torch.cat([d, src], dim=1))
        fgr = torch.clamp(src + 0.1 * o[:, :3], 0.0, 1.0)
        pha = torch.sigmoid(4.0 * o[:, 3:4])
        return (fgr, pha, *states)


class StandInBiSeNet(nn.Module):
    """A 19-class parsing network with BiSeNet's signature (see the module docstring).

    Args:
        width: channel multiplier (levels get ``width * (1, 2, 4, 8)``).
        blocks: depthwise-separable blocks per level.
        classes: output classes (19 for the real model).
        widths: explicit channels of the four levels (overrides ``width``).
    """

    def __init__(self, width: int = 8, blocks: int = 1, classes: int = 19,
                 widths: tuple[int, int, int, int] | None = None):
        super().__init__()
        chans = [3, *(widths or (width, 2 * width, 4 * width, 8 * width))]
        self.enc = nn.ModuleList(_stage(chans[i], chans[i + 1], blocks) for i in range(4))
        self.fuse = nn.Conv2d(chans[3] + chans[4], chans[3], 1)
        self.cls = nn.Conv2d(chans[3], classes, 1)
        self.aux16 = nn.Conv2d(chans[4], classes, 1)
        self.aux32 = nn.Conv2d(chans[4], classes, 1)

    def forward(self, x):
        f = x
        feats = []
        for enc in self.enc:
            f = enc(f)
            feats.append(f)
        f8, f16 = feats[2], feats[3]
        g = self.fuse(torch.cat([f8, F.interpolate(f16, scale_factor=2.0, mode="nearest")], dim=1))
        out = F.interpolate(self.cls(g), scale_factor=8.0, mode="bilinear", align_corners=False)
        a16 = F.interpolate(self.aux16(f16), scale_factor=16.0, mode="bilinear", align_corners=False)
        a32 = F.interpolate(self.aux32(f16), scale_factor=16.0, mode="bilinear", align_corners=False)
        return out, a16, a32


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def export_rvm(model: StandInRVM, path: str | Path, size: int = 64, fp16: bool = False) -> Path:
    """Export to ONNX with RVM's input/output names, dynamic batch and size (legacy exporter)."""
    model = model.eval()
    dtype = torch.float16 if fp16 else torch.float32
    if fp16:
        model = model.half()
    b = 2
    src = torch.rand(b, 3, size, size, dtype=dtype)
    rec = [torch.zeros(1, 1, 1, 1, dtype=dtype) for _ in range(4)]
    ratio = torch.tensor([1.0])
    names_in = ["src", "r1i", "r2i", "r3i", "r4i", "downsample_ratio"]
    names_out = ["fgr", "pha", "r1o", "r2o", "r3o", "r4o"]
    dyn = {n: {0: "b", 1: f"c_{n}", 2: f"h_{n}", 3: f"w_{n}"} for n in names_in[1:5] + names_out[2:]}
    dyn.update({"src": {0: "b", 2: "h", 3: "w"}, "fgr": {0: "b", 2: "h", 3: "w"}, "pha": {0: "b", 2: "h", 3: "w"}})
    with torch.no_grad():
        torch.onnx.export(model, (src, *rec, ratio), str(path), dynamo=False, opset_version=17,
                          input_names=names_in, output_names=names_out, dynamic_axes=dyn)
    return Path(path)


def export_bisenet(model: StandInBiSeNet, path: str | Path, size: int = 512, fp16: bool = False,
                   dynamic_size: bool = True) -> Path:
    """Export to ONNX: input ``input`` [B,3,H,W], outputs ``logits``, ``aux16``, ``aux32``."""
    model = model.eval()
    dtype = torch.float16 if fp16 else torch.float32
    if fp16:
        model = model.half()
    x = torch.rand(1, 3, size, size, dtype=dtype)
    sp = {2: "h", 3: "w"} if dynamic_size else {}
    dyn = {n: {0: "b", **sp} for n in ("input", "logits", "aux16", "aux32")}
    with torch.no_grad():
        torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=17, input_names=["input"],
                          output_names=["logits", "aux16", "aux32"], dynamic_axes=dyn)
    return Path(path)
