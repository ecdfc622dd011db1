"""The viewer on CUDA: the splat buffer packed on the GPU equals the CPU one; updates keep up (>= 30/s)."""

from __future__ import annotations

import copy
import socket
import time

import numpy as np
import pytest
import torch

pytest.importorskip("viser", reason="viser is in the viewer extra (pip install -e '.[viewer]')")

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_viewer_on_cuda_matches_cpu_and_keeps_up(toy_avatar):
    from stages.viewer.server import AvatarViewer, ViewerConfig

    model, surface, tracked = toy_avatar
    bufs, rates = {}, {}
    for device in ("cpu", "cuda"):
        v = AvatarViewer(copy.deepcopy(model), copy.deepcopy(surface), tracked, config=ViewerConfig(port=_port(), device=device))
        try:
            v.frame.value = 3
            v.jaw.value = 0.2
            v.refresh()
            bufs[device] = v.splats.buffer.copy()
            t0 = time.perf_counter()
            for i in range(60):
                v.frame.value = i % len(tracked)
                v.refresh()
            rates[device] = 60 / (time.perf_counter() - t0)
        finally:
            v.close()
    a, b = bufs["cpu"], bufs["cuda"]
    np.testing.assert_allclose(a[:, :3].view(np.float32), b[:, :3].view(np.float32), atol=1e-5)
    np.testing.assert_allclose(a[:, 4:7].copy().view(np.float16).astype(np.float32),
                               b[:, 4:7].copy().view(np.float16).astype(np.float32), rtol=1e-2, atol=1e-6)
    rgba_a, rgba_b = a[:, 7:8].copy().view(np.uint8), b[:, 7:8].copy().view(np.uint8)
    assert np.abs(rgba_a.astype(int) - rgba_b.astype(int)).max() <= 1
    assert rates["cuda"] >= 30, rates
