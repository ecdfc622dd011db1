"""What RobustVideoMatting costs at its real size, through our PyTorch network and its ONNX export;
prints one JSON object.

    python bench/rvm_bench.py [--pth rvm_mobilenetv3.pth] [--variant mobilenetv3] [--frames 64]
                              [--streams 16] [--size 512]

The network is :class:`stages.nets.rvm.MattingNetwork` (MobileNetV3-Large or ResNet-50, the published
layer sizes), with the weights of ``--pth`` where given, else random weights of the same shapes (the
cost is the same; the mattes are not). Measured on ``--frames`` steps of ``--streams`` streams of
``--size`` px frames, recurrent state carried, ``downsample_ratio`` 1:

- ``onnx_<provider>``: the masks stage's RVM backend (:class:`stages.masks.backends.rvm.RvmMatting`,
  uint8 frames in, alpha out) on the exported model, per onnxruntime provider available here;
- ``torch_cuda_fp32`` / ``torch_cuda_fp16``: the PyTorch network on the GPU (where there is one);
- ``max_abs_diff_torch_vs_onnx``: torch vs the ONNX export on the same frames, per output (the
  export's fidelity; with random weights pha may sit at its clamp, fgr and the states do not).

Frames per second count frames (steps x streams). First steps (warm-up) are not timed.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stages.nets.rvm import MattingNetwork, export_onnx, load_rvm  # noqa: E402


def frames(n: int, streams: int, size: int, seed: int = 0) -> np.ndarray:
    """uint8 [n, streams, size, size, 3]: smooth moving blobs (not noise), so the nets see images."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    out = np.empty((n, streams, size, size, 3), np.uint8)
    phase = rng.random((streams, 3)) * 6.28
    for t in range(n):
        for s in range(streams):
            c = [np.sin(6 * xx + 0.1 * t + phase[s, k]) * np.cos(5 * yy + phase[s, k]) for k in range(3)]
            out[t, s] = (127.5 + 100 * np.stack(c, -1)).astype(np.uint8)
    return out


def time_onnx(path: Path, data: np.ndarray, warm: int) -> dict:
    import onnxruntime as ort

    from stages.masks.backends.rvm import RvmMatting

    res = {}
    for prov in ("CUDAExecutionProvider", "CPUExecutionProvider"):
        if prov not in ort.get_available_providers():
            continue
        m = RvmMatting(path, device="cuda" if prov.startswith("CUDA") else "cpu")
        for t in range(warm):
            m.step(data[t])
        t0 = time.perf_counter()
        for t in range(warm, len(data)):
            m.step(data[t])
        dt = time.perf_counter() - t0
        res[f"onnx_{prov.replace('ExecutionProvider', '').lower()}_fps"] = round((len(data) - warm) * data.shape[1] / dt, 1)
    return res


def time_torch(net: MattingNetwork, data: np.ndarray, warm: int, dtype: torch.dtype) -> float:
    dev = torch.device("cuda")
    net = net.to(dev, dtype)
    x = torch.as_tensor(data, device=dev)
    rec = [torch.zeros(1, 1, 1, 1, device=dev, dtype=dtype)] * 4
    with torch.no_grad():
        for t in range(len(data)):
            if t == warm:
                torch.cuda.synchronize()
                t0 = time.perf_counter()
            src = x[t].permute(0, 3, 1, 2).to(dtype) / 255
            _, pha, *rec = net(src, *rec, downsample_ratio=1.0)
        torch.cuda.synchronize()
    return round((len(data) - warm) * data.shape[1] / (time.perf_counter() - t0), 1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pth", default=None, help="RVM checkpoint (else random weights of the same shapes)")
    ap.add_argument("--variant", default="mobilenetv3", choices=("mobilenetv3", "resnet50"))
    ap.add_argument("--frames", type=int, default=64)
    ap.add_argument("--streams", type=int, default=16)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--warmup", type=int, default=4)
    args = ap.parse_args()
    if args.pth:
        net = load_rvm(args.pth)
    else:
        torch.manual_seed(0)
        net = MattingNetwork(args.variant).eval()
    tmp = Path(tempfile.mkdtemp(prefix="rvm-bench-"))
    t0 = time.perf_counter()
    onnx_path = export_onnx(net, tmp / f"rvm_{net.variant}.onnx")
    out = {"variant": net.variant, "weights": args.pth or "random (same shapes and cost)",
           "parameters": sum(p.numel() for p in net.parameters()), "size": args.size, "streams": args.streams,
           "frames": args.frames, "export_seconds": round(time.perf_counter() - t0, 2), "host": platform.node(),
           "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}
    data = frames(args.frames, args.streams, args.size)
    # fidelity: torch (CPU, fp32) vs the export on onnxruntime's CPU provider, all six outputs, 3 steps
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    small = data[:3, :2]
    rec = [torch.zeros(1, 1, 1, 1)] * 4
    diffs = np.zeros(6)
    with torch.no_grad():
        for t in range(3):
            src = torch.as_tensor(small[t]).permute(0, 3, 1, 2).float() / 255
            want = net(src, *rec, downsample_ratio=1.0)
            got = sess.run(None, {"src": src.numpy(), **{f"r{k + 1}i": rec[k].numpy() for k in range(4)},
                                  "downsample_ratio": np.array([1.0], np.float32)})
            diffs = np.maximum(diffs, [float(np.abs(g - w.numpy()).max()) for g, w in zip(got, want)])
            rec = list(want[2:])
    out["max_abs_diff_torch_vs_onnx"] = dict(zip(("fgr", "pha", "r1", "r2", "r3", "r4"), diffs.round(8).tolist()))
    out.update(time_onnx(onnx_path, data, args.warmup))
    if torch.cuda.is_available():
        out["torch_cuda_fp32_fps"] = time_torch(net, data, args.warmup, torch.float32)
        out["torch_cuda_fp16_fps"] = time_torch(net, data, args.warmup, torch.float16)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
