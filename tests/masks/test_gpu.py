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
    agree = (cpu.labels(frames) == gpu.labels(frames)).mean()
    assert agree > 0.999  # ties between near-equal logits may flip
