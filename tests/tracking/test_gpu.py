"""The tracker on a CUDA GPU: the same accuracy as on the CPU with the photometric term on, and a
whole batch per optimiser step."""

import numpy as np
import pytest
import torch

from stages.face.flame import FLAME
from stages.face.synth import render_frames
from stages.tracking.calibration import personalised
from stages.tracking.face_assets import face_region
from stages.tracking.fit import Shared
from stages.tracking.losses import LandmarkWeights
from stages.tracking.photometric import ambient_sh, sample_vertex_colours
from stages.tracking.schedule import track_schedule
from stages.tracking.sequence import Appearance, SequenceInputs, track_sequence
from tracking.synthetic import make_clip, standin

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_track_on_gpu_with_photometric_term():
    dev = torch.device("cuda")
    data = standin()
    model = FLAME(data).to(dev)
    n = 256
    clip = make_clip(model.cpu(), n, seed=1)
    model = model.to(dev)
    tex = torch.full((3, 64, 64), 0.6, device=dev)
    tex[0] = torch.linspace(0.3, 0.9, 64, device=dev)[None, :]
    imgs = render_frames(model, data, clip.params, 0, n, tex)
    small = torch.nn.functional.interpolate(imgs.permute(0, 3, 1, 2).float(), size=128, mode="area")
    small = small.round().to(torch.uint8).permute(0, 2, 3, 1)
    p = clip.params
    shape = torch.as_tensor(p["shape"][0], device=dev)
    pm = personalised(model, shape)
    K = p["K"][0]
    shared = Shared(torch.zeros(0, device=dev), torch.tensor([K[0, 0], K[1, 1]], device=dev),
                    torch.tensor([K[0, 2], K[1, 2]], device=dev))
    with torch.no_grad():
        verts = pm(shape=torch.zeros(8, 0, device=dev), expression=torch.as_tensor(p["expression"][:8], device=dev),
                   jaw=torch.as_tensor(p["jaw"][:8], device=dev), eyes=torch.as_tensor(p["eyes"][:8], device=dev),
                   eyelids=torch.as_tensor(p["eyelids"][:8], device=dev)).vertices
        albedo, _ = sample_vertex_colours(small[:8], verts, torch.as_tensor(p["R"][:8], device=dev),
                                          torch.as_tensor(p["t"][:8], device=dev), shared.focal, shared.pp, pm.faces)
    app = Appearance(albedo.cpu().numpy(), ambient_sh().numpy(), face_region(data))
    pw = LandmarkWeights().per_point()[model.mp_index.cpu()].to(dev)
    res = track_sequence(pm, shared, SequenceInputs(np.arange(1, n + 1), clip.landmarks, np.ones(n, bool),
                                                    small.cpu().numpy()), pw, track_schedule(), appearance=app)
    assert np.median(res.error_px) < 1.0
    assert all(np.isfinite(v).all() for v in res.params.values())


def test_frame_by_frame_lm_on_gpu_equals_cpu_and_is_fast():
    """assemble's steadiness fit (stages.tracking.frame_lm) on the GPU: the CPU's result (float64 both)
    on 100 frames of 0.8 px noise, in well under a second once warm (issue 17: assemble <= 2 s)."""
    import time

    from stages.tracking.eyelids import lid_index
    from stages.tracking.frame_lm import solve_frames

    model = FLAME(standin())
    n = 100
    clip = make_clip(model, n, seed=3)
    K = clip.params["K"][0]
    pw = LandmarkWeights().per_point()[model.mp_index]
    targets = torch.as_tensor((clip.landmarks + np.random.default_rng(1).normal(scale=0.8, size=clip.landmarks.shape))
                              .astype(np.float32))
    lids = lid_index(model.mp_index.numpy())
    out = {}
    for dev in ("cpu", "cuda"):
        pm = personalised(model.to(dev), torch.as_tensor(clip.params["shape"][0], device=dev))
        shared = Shared(torch.zeros(0, device=dev), torch.tensor([K[0, 0], K[1, 1]], device=dev),
                        torch.tensor([K[0, 2], K[1, 2]], device=dev))
        args = (pm, shared, targets.to(dev), pw.to(dev))
        if dev == "cuda":
            solve_frames(*args, lids=lids.to(dev))  # warm: kernels, cuBLAS/cuSOLVER handles
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out[dev] = solve_frames(*args, lids=lids.to(dev))
        out[dev + "_s"] = time.perf_counter() - t0
    print(f"frame-by-frame LM, {n} frames: cpu {out['cpu_s']:.2f} s, cuda {out['cuda_s']:.3f} s, "
          f"jacobians {float(out['cuda'].iterations.float().mean()):.1f}")
    # the head pose (what the jitter figures take) and every frame's objective agree; weakly held
    # expression directions may stop at slightly different points
    for name in ("rot", "t"):
        assert torch.allclose(getattr(out["cpu"].params, name), getattr(out["cuda"].params, name).cpu(), atol=1e-4), name
    assert torch.allclose(out["cpu"].objective, out["cuda"].objective.cpu(), rtol=1e-3)
    assert out["cuda_s"] < 1.0
