"""FLAME forward / forward+backward throughput, stand-in and FLAME-sized models.

Run: ``python bench/flame_bench.py [--batch 1024] [--iters 20] [--device cuda|cpu]``.
Prints one JSON object: per model, milliseconds per batched call (median over ``--iters`` after
warm-up) and frames/s, plus synthetic-video render throughput (stand-in, 512x512). Uses only
torch, numpy and this package; the FLAME-sized model is random (``write_fake_flame_pkl``), with
FLAME's sizes (5023 vertices, 9976 faces, 300+100 blendshapes, 5 joints).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stages.face.flame import FLAME  # noqa: E402
from stages.face.flame_file import write_fake_flame_pkl  # noqa: E402
from stages.face.model import load_face_model  # noqa: E402
from stages.face.rotation import axis_angle_to_matrix, matrix_to_rotation_6d  # noqa: E402
from stages.face.standin import standin_paths  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _params(model: FLAME, batch: int, device: torch.device, grad: bool) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)

    def r6(scale: float) -> torch.Tensor:
        return matrix_to_rotation_6d(axis_angle_to_matrix(torch.randn(batch, 3, generator=g) * scale))

    p = {"shape": torch.randn(batch, model.n_shape, generator=g), "expression": torch.randn(batch, model.n_expression, generator=g),
         "jaw": r6(0.2), "eyes": torch.cat([r6(0.2), r6(0.2)], 1), "eyelids": torch.rand(batch, 2, generator=g)}
    return {k: v.to(device).requires_grad_(grad) for k, v in p.items()}


def _time(fn, iters: int, device: torch.device) -> float:
    for _ in range(3):
        fn()
    _sync(device)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_model(model: FLAME, batch: int, iters: int, device: torch.device) -> dict:
    model = model.to(device)
    p = _params(model, batch, device, grad=False)
    with torch.no_grad():
        fwd = _time(lambda: model(**p), iters, device)
    pg = _params(model, batch, device, grad=True)

    def fwd_bwd() -> None:
        out = model(**pg)
        (out.vertices.square().sum() + out.landmarks_mp.sum()).backward()

    fb = _time(fwd_bwd, iters, device)
    p1 = _params(model, 1, device, grad=False)
    with torch.no_grad():
        single = _time(lambda: model(**p1), iters, device)
    return {"vertices": model.n_vertices, "batch": batch,
            "forward_ms": round(fwd * 1e3, 3), "forward_frames_per_s": round(batch / fwd, 1),
            "forward_backward_ms": round(fb * 1e3, 3), "forward_backward_frames_per_s": round(batch / fb, 1),
            "batch1_forward_ms": round(single * 1e3, 3)}


def bench_render(device: torch.device, frames: int = 32) -> dict:
    from stages.face.synth import SynthSpec, albedo_texture, generate_params, render_frames

    data = load_face_model()
    flame = FLAME(data).to(device)
    params = generate_params(data, SynthSpec(n_frames=frames, size=512, seed=0))
    params_dev = {k: (torch.as_tensor(v).to(device) if getattr(v, "ndim", 0) >= 1 and k != "img_size" else v)
                  for k, v in params.items()}
    texture = torch.as_tensor(albedo_texture(data)).permute(2, 0, 1).contiguous().to(device)
    render_frames(flame, data, params_dev, 0, 4, texture)             # warm-up (kernel compile)
    _sync(device)
    t0 = time.perf_counter()
    for start in range(0, frames, 16):
        render_frames(flame, data, params_dev, start, min(frames, start + 16), texture)
    _sync(device)
    dt = time.perf_counter() - t0
    return {"size": 512, "frames": frames, "frames_per_s": round(frames / dt, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--no-render", action="store_true")
    args = ap.parse_args()
    device = torch.device(args.device)
    result: dict = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                    "torch": torch.__version__}
    with tempfile.TemporaryDirectory() as tmp:
        standin = standin_paths(Path(tmp) / "standin")
        data = load_face_model(standin["flame"], mediapipe_embedding=standin["mediapipe-embedding"],
                               landmark_embedding=standin["landmark-embedding"])
        result["standin"] = bench_model(FLAME(data), args.batch, args.iters, device)
        fake = write_fake_flame_pkl(Path(tmp) / "generic_model.pkl", seed=0)
        fdata = load_face_model(fake, mediapipe_embedding=standin["mediapipe-embedding"])  # 478 random-ish points
        result["flame_sized"] = bench_model(FLAME(fdata), args.batch, args.iters, device)
    if not args.no_render:
        try:
            result["synth_render"] = bench_render(device)
        except Exception as err:  # report, do not hide, a failing renderer
            result["synth_render"] = {"error": f"{type(err).__name__}: {err}"}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
