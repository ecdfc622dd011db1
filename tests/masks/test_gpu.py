"""The ONNX backends on onnxruntime's CUDA provider agree with the CPU provider (GPU machines only)."""

from __future__ import annotations

import numpy as np
import pytest
import torch


def _ort_cuda() -> bool:
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    return "CUDAExecutionProvider" in ort.get_available_providers()


pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    pytest.mark.skipif(not _ort_cuda(), reason="needs onnxruntime with the CUDA provider (onnxruntime-gpu)"),
]


def test_rvm_cuda_matches_cpu(standin_models):
    from stages.masks.backends.rvm import RvmMatting

    rng = np.random.default_rng(0)
    frames = (rng.random((4, 512, 512, 3)) * 255).astype(np.uint8)
    cpu, gpu = RvmMatting(standin_models["rvm"], "cpu"), RvmMatting(standin_models["rvm"], "cuda")
    assert gpu.on_cuda
    for _ in range(3):  # the recurrent state stays on the GPU between steps
        a, b = cpu.step(frames), gpu.step(frames)
        np.testing.assert_allclose(a, b, atol=2e-3)


def test_bisenet_cuda_matches_cpu(standin_models):
    from stages.masks.backends.bisenet import BiSeNetParsing

    rng = np.random.default_rng(1)
    frames = (rng.random((4, 512, 512, 3)) * 255).astype(np.uint8)
    cpu = BiSeNetParsing(standin_models["bisenet"], "cpu")
    gpu = BiSeNetParsing(standin_models["bisenet"], "cuda")
    assert gpu.session.get_providers()[0] == "CUDAExecutionProvider"
    a, b = cpu.labels(frames), gpu.labels(frames)
    assert (a == b).mean() > 0.99
    # labels may differ only at near-ties: the CUDA provider computes convolutions in TF32 by
    # default (10-bit mantissa), so where the best two logits are this close the argmax may flip
    from stages.masks.backends.bisenet import normalise

    x = cpu.plain.get_inputs()[0].name
    logits = cpu.plain.run(None, {x: normalise(frames)})[0]  # [B,19,H,W]
    top2 = np.sort(logits, axis=1)[:, -2:]
    margin = (top2[:, 1] - top2[:, 0]) / (np.abs(logits).max() + 1e-9)
    assert margin[a != b].max(initial=0.0) < 0.01
