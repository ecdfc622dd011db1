"""The drive renderer on CUDA: gsplat gives the reference renderer's frames, batch by batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_gsplat_drive_frames_match_the_reference(toy_actor):
    from stages.drive.render import DriveInputs, render_motion

    _, _, info = toy_actor
    p = info["params"]
    cond = np.concatenate([p["exp"], p["jaw"], p["eyes"], p["eyelids"]], 1)
    inputs = DriveInputs(cond, info["R"], p["t"], info["K"])
    model, surface = info["model"].cuda().eval(), info["surface"].cuda()
    out = {}
    for renderer in ("gsplat", "reference"):
        batches = list(render_motion(model, surface, inputs, resolution=128, renderer=renderer, device="cuda", batch=4))
        assert [b.start for b in batches] == [0, 4, 8]
        out[renderer] = (torch.cat([b.rgb for b in batches]), torch.cat([b.alpha for b in batches]))
    rgb_g, a_g = out["gsplat"]
    rgb_r, a_r = out["reference"]
    assert rgb_g.shape == (len(cond), 128, 128, 3) and a_g.shape == (len(cond), 128, 128)
    assert (a_r > 0.5).sum() > 100
    assert (rgb_g - rgb_r).abs().mean() < 0.01 and (a_g - a_r).abs().mean() < 0.01
