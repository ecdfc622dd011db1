"""Benchmark of the mesh rasteriser (stages.face.raster): prints one JSON object to stdout.

Rasterises FRAMES frames of SIZE x SIZE of a procedural head-like mesh (a deformed UV sphere with
5,023 vertices and 9,976 faces, the FLAME sizes, posed differently per frame and projected to
cover about 60% of the image) in one batch, with each fast back-end on CUDA (when there is a
GPU), plus CPU time for a small batch. Figures: ms per frame batched (full ``rasterize``: face ids,
barycentrics, depth) and for the visibility pass alone, agreement between back-ends, coverage.

    python bench/raster_bench.py            # full run (CUDA + CPU)
    python bench/raster_bench.py --frames 8 --size 128 --cpu-frames 2   # quick smoke run
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stages.face import raster  # noqa: E402
from stages.face.raster import rasterize  # noqa: E402

N_VERTS, N_FACES = 5023, 9976


def head_mesh() -> tuple[torch.Tensor, torch.Tensor]:
    """Head-like closed-ish mesh: verts float64 [5023, 3] (units ~ head radii), faces int64 [9976, 3].

    A UV sphere of 78 rings x 64 segments (4,994 vertices, 9,984 faces) stretched into a head shape
    with a nose and chin, 8 faces of the bottom pole fan removed (a neck opening), and 29 unused
    vertices appended so the counts equal FLAME's. Outward right-hand normals.
    """
    rings, segs = 78, 64
    th = torch.arange(1, rings + 1, dtype=torch.float64) * math.pi / (rings + 1)
    ph = torch.arange(segs, dtype=torch.float64) * 2 * math.pi / segs
    th, ph = torch.meshgrid(th, ph, indexing="ij")
    ring_pts = torch.stack([th.sin() * ph.cos(), th.sin() * ph.sin(), th.cos()], -1).reshape(-1, 3)
    unit = torch.cat([torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64), ring_pts, torch.tensor([[0.0, 0.0, -1.0]], dtype=torch.float64)])
    # sphere axis z -> head "up"; make x across, y up, z towards the face
    x, up, fwd = unit[:, 0], unit[:, 2], unit[:, 1]
    r = 1.0 + 0.25 * torch.exp(-((x / 0.18) ** 2 + ((up + 0.05) / 0.25) ** 2) * 1.0) * (fwd > 0)  # nose
    r = r + 0.08 * torch.exp(-((up + 0.7) / 0.25) ** 2) * fwd.clamp(min=0)  # chin
    r = r + 0.02 * torch.sin(7 * x + 3 * up) * torch.cos(5 * fwd)  # gentle bumps
    verts = torch.stack([0.78 * x * r, 1.0 * up * r, 0.9 * fwd * r], -1)
    ring = lambda i, j: 1 + i * segs + (j % segs)  # noqa: E731
    south = 1 + rings * segs
    faces = []
    for j in range(segs):
        faces.append([0, ring(0, j), ring(0, j + 1)])
        for i in range(rings - 1):
            a, b, c, d = ring(i, j), ring(i + 1, j), ring(i + 1, j + 1), ring(i, j + 1)
            faces += [[a, b, c], [a, c, d]]
    for j in range(8, segs):  # bottom pole fan minus 8 faces: the neck opening
        faces.append([south, ring(rings - 1, j + 1), ring(rings - 1, j)])
    extra = N_VERTS - verts.shape[0]
    verts = torch.cat([verts, verts[:extra]])  # unused duplicates, only to match the counts
    faces_t = torch.tensor(faces)
    # head up = -y in OpenCV camera coordinates (y down); the face looks at the camera (-z)
    verts = verts * torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64)
    faces_t = faces_t[:, [0, 2, 1]]  # (x, z, y) above is a mirror: reverse the winding to stay outward
    assert verts.shape[0] == N_VERTS and faces_t.shape[0] == N_FACES, (verts.shape, faces_t.shape)
    return verts, faces_t


def rotation(yaw: torch.Tensor, pitch: torch.Tensor, roll: torch.Tensor) -> torch.Tensor:
    """[N] angles (rad) -> [N, 3, 3] rotation matrices R = Rz(roll) Rx(pitch) Ry(yaw)."""
    def mat(rows):
        return torch.stack([torch.stack(r, -1) for r in rows], -2)
    o, i = torch.zeros_like(yaw), torch.ones_like(yaw)
    ry = mat([[yaw.cos(), o, yaw.sin()], [o, i, o], [-yaw.sin(), o, yaw.cos()]])
    rx = mat([[i, o, o], [o, pitch.cos(), -pitch.sin()], [o, pitch.sin(), pitch.cos()]])
    rz = mat([[roll.cos(), -roll.sin(), o], [roll.sin(), roll.cos(), o], [o, o, i]])
    return rz @ rx @ ry


def posed_frames(frames: int, size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """verts_pix float32 [frames, 5023, 3] (x, y px, depth) and faces [9976, 3]."""
    verts, faces = head_mesh()
    gen = torch.Generator().manual_seed(seed)
    ang = (torch.rand(frames, 3, generator=gen, dtype=torch.float64) * 2 - 1) * torch.tensor([0.5, 0.25, 0.15], dtype=torch.float64)
    rot = rotation(ang[:, 0], ang[:, 1], ang[:, 2])
    shift = (torch.rand(frames, 3, generator=gen, dtype=torch.float64) * 2 - 1) * torch.tensor([0.05, 0.05, 0.1], dtype=torch.float64)
    pts = verts @ rot.transpose(1, 2) + shift[:, None] + torch.tensor([0.0, 0.0, 4.0], dtype=torch.float64)
    # silhouette ~ ellipse of radii (0.8, 1.0) at depth 4: area pi*0.8*1.0*(f/4)^2 ~ 0.6 * size^2
    focal = 4.0 * size * math.sqrt(0.6 / (math.pi * 0.8 * 1.0))
    z = pts[..., 2]
    pix = torch.stack([focal * pts[..., 0] / z + size / 2, focal * pts[..., 1] / z + size / 2, z], -1)
    return pix.float(), faces


def timed(fn, device: torch.device, repeats: int) -> float:
    """Median wall time of fn() in seconds (synchronised on CUDA), after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def fast_fn(backend: str):
    """The visibility pass alone (face ids) of a back-end: fn(verts_pix, faces, H, W)."""
    if backend == "warp":
        from stages.face.raster_warp import rasterize_face_idx

        return rasterize_face_idx
    from stages.face.raster_torch import rasterize_face_idx

    return lambda v, f, h, w: rasterize_face_idx(v, f, h, w, compile=backend == "torch-compile")


def bench_device(device: torch.device, frames: int, size: int, backends: list[str], repeats: int) -> dict:
    verts, faces = posed_frames(frames, size)
    verts, faces = verts.to(device), faces.to(device)
    out: dict = {"device": str(device), "frames": frames, "size": size}
    results = {}
    for backend in backends:
        entry: dict = {}
        try:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            t = time.perf_counter()
            rasterize(verts, faces, size, size, backend=backend)  # first call: compiles, if it must
            entry["first_call_s"] = time.perf_counter() - t
            full = timed(lambda: rasterize(verts, faces, size, size, backend=backend), device, repeats)
            vis_fn = fast_fn(backend)
            vis = timed(lambda: vis_fn(verts, faces, size, size), device, repeats)
            entry["ms_per_frame"] = 1000 * full / frames
            entry["ms_per_frame_visibility_only"] = 1000 * vis / frames
            entry["frames_per_s"] = frames / full
            if device.type == "cuda":
                entry["peak_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
            results[backend] = rasterize(verts, faces, size, size, backend=backend).face_idx
        except Exception as err:  # report and go on with the other back-ends
            entry["error"] = f"{type(err).__name__}: {err}"[:300]
        out[backend] = entry
    if results:
        first = next(iter(results.values()))
        out["coverage"] = float((first >= 0).float().mean())
        out["visible_faces_per_frame"] = float(
            sum(len(torch.unique(first[b])) - 1 for b in range(min(frames, 8))) / min(frames, 8)
        )
        for name, ids in results.items():  # fraction of pixels with the same face id
            out[backend_key(name)] = float((ids == first).float().mean())
    return out


def backend_key(name: str) -> str:
    return f"agreement_{name}_vs_torch"


def warp_ok() -> bool:
    try:
        import warp  # noqa: F401
    except Exception:
        return False
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=256)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--cpu-frames", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    backends = ["torch"] + (["warp"] if warp_ok() else [])
    cuda_backends = ["torch", "torch-compile"] + backends[1:]
    report: dict = {
        "bench": "raster",
        "mesh": {"verts": N_VERTS, "faces": N_FACES},
        "torch": torch.__version__,
        "warp_available": warp_ok(),
        "module": raster.__name__,
    }
    if torch.cuda.is_available():
        dev = torch.device("cuda")
        report["gpu"] = torch.cuda.get_device_name(dev)
        report["cuda"] = bench_device(dev, args.frames, args.size, cuda_backends, args.repeats)
        report["cuda_batch1"] = bench_device(dev, 1, args.size, cuda_backends, args.repeats)
    else:
        report["gpu"] = None
    report["cpu"] = bench_device(torch.device("cpu"), args.cpu_frames, args.size, backends, max(1, args.repeats // 2))
    report["cpu"]["threads"] = torch.get_num_threads()
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
