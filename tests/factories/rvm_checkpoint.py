"""Stand-in RobustVideoMatting checkpoints: our :class:`MattingNetwork` with random weights, saved as
the published ``rvm_*.pth`` are (a plain state dict with the same key names and shapes)."""

from __future__ import annotations

from pathlib import Path

import torch

from stages.nets.rvm import MattingNetwork


def standin_state(net: MattingNetwork, seed: int) -> dict[str, torch.Tensor]:
    """Random BN statistics (away from 0/1), and pha's projection scaled so that pha is about
    0.5 +- 0.25 on random frames (the clamp to 0..1 hides little). Returns the state dict."""
    g = torch.Generator().manual_seed(seed)
    state = net.state_dict()
    for k, v in state.items():
        if k.endswith("running_mean"):
            v.copy_(torch.randn(v.shape, generator=g) * 0.1)
        elif k.endswith("running_var"):
            v.copy_(torch.rand(v.shape, generator=g) + 0.5)
    net.eval()
    with torch.no_grad():
        hid = net._coarse(torch.rand(1, 3, 64, 64, generator=g), [torch.zeros(1, 1, 1, 1)] * 4)[2]
        conv = net.project_mat.conv
        conv.weight[3] *= 0.25 / conv(hid)[:, 3].std()
        conv.bias[3] += 0.5 - conv(hid)[:, 3].mean()
    return net.state_dict()


def save_standin(path: Path, variant: str = "mobilenetv3", seed: int = 0) -> Path:
    """Write a stand-in ``rvm_<variant>.pth`` to ``path``."""
    torch.manual_seed(seed)
    torch.save(standin_state(MattingNetwork(variant), seed), path)
    return path
