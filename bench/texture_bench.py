"""Cost of the photometric term's two appearance modes on one GPU, on a FLAME-sized mesh.

    python bench/texture_bench.py [--frames 2048] [--keyframes 32] [--size 128] [--steps 20] [--quick]

1. Writes a FLAME-sized texture space in FLAME's file format (512x512 texels, 200 components,
   0..255 BGR; random smooth content) and times loading it (140 components, resampled to 256).
2. Times one optimiser step (forward + backward to the vertices) of the photometric term at
   ``--size`` pixels for ``--frames`` frames (track) in three set-ups: per-vertex albedo, a fixed
   UV albedo map (track's texture mode), and texture coefficients being optimised over
   ``--keyframes`` frames (calibrate's texture mode; the per-vertex mode for comparison).
3. Recovers 140 known coefficients from 32 frames rendered with them (texture mode, SH known) and
   reports the coefficient error and the time.

Mesh: ``write_fake_flame_pkl``'s FLAME-sized head (5023 vertices, 9976 triangles) with a spherical
UV layout. Prints one JSON object to stdout. Uses only torch, numpy and this package.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stages.face.flame_file import read_flame_arrays, write_fake_flame_pkl  # noqa: E402
from stages.face.rotation import axis_angle_to_matrix  # noqa: E402
from stages.face.texture import FlameTexture, write_flame_texture  # noqa: E402
from stages.tracking.photometric import Photometric, UVAlbedo, ambient_sh  # noqa: E402


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def mesh(tmp: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(vertices [V,3] metres, faces [F,3], vt [V,2]) of a FLAME-sized head with a spherical UV layout."""
    arr = read_flame_arrays(write_fake_flame_pkl(tmp / "generic_model.pkl"))
    v, f = arr["v_template"].astype(np.float32), arr["faces"].astype(np.int64)
    c = v - v.mean(0)
    u = np.arctan2(c[:, 0], c[:, 2]) / (2 * np.pi) + 0.5
    w = (c[:, 1] - c[:, 1].min()) / np.ptp(c[:, 1])
    return v, f, np.stack([u, w], 1).astype(np.float32)


def cameras(n: int, dev: torch.device, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    aa = (torch.rand(n, 3, generator=g) - 0.5) * torch.tensor([0.3, 0.8, 0.1])
    R = axis_angle_to_matrix(aa).to(dev)
    t = torch.tensor([0.0, 0.0, 1.0], device=dev).expand(n, 3).contiguous()
    return R, t, torch.tensor([2304.0, 2304.0], device=dev), torch.tensor([256.0, 256.0], device=dev)


def time_steps(photo: Photometric, verts: torch.Tensor, cams, steps: int, free: list[torch.Tensor]) -> dict:
    R, t, focal, pp = cams
    frames = torch.arange(verts.shape[0], device=verts.device)
    v = verts.clone().requires_grad_(True)
    for p in free:
        p.requires_grad_(True)
    torch.cuda.reset_peak_memory_stats() if torch.cuda.is_available() else None
    for i in range(steps + 2):
        if i == 2:
            sync()
            t0 = time.perf_counter()
        loss = photo(v, R, t, focal, pp, frames, i)
        loss.backward()
        v.grad = None
        for p in free:
            p.grad = None
    sync()
    ms = (time.perf_counter() - t0) / steps * 1000
    for p in free:
        p.requires_grad_(False)
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
    return {"ms_per_step": round(ms, 2), "frames_per_s_per_step": round(verts.shape[0] / ms * 1000, 1),
            "peak_gpu_gib": None if peak is None else round(peak, 2)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=2048)
    ap.add_argument("--keyframes", type=int, default=32)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--quick", action="store_true", help="small numbers (a CPU smoke run)")
    a = ap.parse_args()
    if a.quick:
        a.frames, a.keyframes, a.steps, a.size = 16, 8, 3, 64
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    out: dict = {"device": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu", "torch": torch.__version__,
                 "frames": a.frames, "keyframes": a.keyframes, "size": a.size}
    with tempfile.TemporaryDirectory() as tmpd:
        tmp = Path(tmpd)
        v, f, vt = mesh(tmp)
        faces = ft_t = torch.as_tensor(f, device=dev)  # the spherical layout has one UV vertex per vertex
        vt_t = torch.as_tensor(vt, device=dev)
        # 1. a FLAME-sized texture file
        full, k_file = (64, 20) if a.quick else (512, 200)
        rng = np.random.default_rng(0)
        yy, xx = np.mgrid[:full, :full] / full
        mean = np.stack([0.6 + 0.1 * xx, 0.45 + 0.1 * yy, 0.4 + 0.05 * xx * yy], -1).astype(np.float32)
        freq = rng.integers(1, 8, size=(k_file, 2))
        phase = rng.uniform(0, 2 * np.pi, size=(k_file, 3))
        basis = np.empty((full, full, 3, k_file), np.float32)
        for k in range(k_file):
            s = np.sin(2 * np.pi * (freq[k, 0] * xx + freq[k, 1] * yy)[..., None] + phase[k])
            basis[..., k] = (0.02 * s).astype(np.float32)
        path = write_flame_texture(tmp / "FLAME_texture.npz", mean, basis, vt, f)
        del basis
        t0 = time.perf_counter()
        texture = FlameTexture.from_file(path, 140, 64 if a.quick else 256).to(dev)
        sync()
        out["texture_load_s"] = round(time.perf_counter() - t0, 2)
        out["texture_file_mb"] = round(path.stat().st_size / 2**20, 1)

        # 2. per-step cost
        n = a.frames
        cams = cameras(n, dev)
        verts = torch.as_tensor(v, device=dev).expand(n, -1, -1).contiguous()
        images = torch.full((n, a.size, a.size, 3), 128, dtype=torch.uint8, device=dev)
        region = torch.ones(f.shape[0], dtype=torch.bool, device=dev)
        sh = ambient_sh(device=dev)
        albedo_v = torch.full((v.shape[0], 3), 0.5, device=dev)
        photo_v = Photometric(images, faces, region, albedo_v, sh)
        out["track_vertex"] = time_steps(photo_v, verts, cams, a.steps, [])
        tex_map = texture(torch.zeros(1, texture.n_components, device=dev))[0]
        photo_t = Photometric(images, faces, region, UVAlbedo(vt_t, ft_t, albedo_map=tex_map), sh)
        out["track_texture"] = time_steps(photo_t, verts, cams, a.steps, [])
        kf = a.keyframes
        kcams = tuple(x[:kf] if x.dim() > 1 else x for x in cams)
        photo_cv = Photometric(images[:kf], faces, region, albedo_v, sh)
        out["calibrate_vertex"] = time_steps(photo_cv, verts[:kf], kcams, a.steps, [photo_cv.albedo, photo_cv.sh])
        uv = UVAlbedo(vt_t, ft_t, texture=texture)
        photo_ct = Photometric(images[:kf], faces, region, uv, sh)
        out["calibrate_texture"] = time_steps(photo_ct, verts[:kf], kcams, a.steps, [uv.tex, photo_ct.sh])

        # 3. recovery of known coefficients (SH known), Adam on tex only
        g = torch.Generator().manual_seed(1)
        true = (torch.randn(texture.n_components, generator=g) * 1.5).to(dev)
        lit = ambient_sh(device=dev) * 0.8
        lit[1:4] += torch.tensor([[0.1, 0.1, 0.1], [0.2, 0.2, 0.2], [0.3, 0.25, 0.2]], device=dev)
        R, t, focal, pp = kcams
        with torch.no_grad():
            img, mask, _ = Photometric(images[:kf], faces, region, UVAlbedo(vt_t, ft_t, texture=texture, tex=true),
                                       lit).render(verts[:kf], R, t, focal, pp)
        target = (img.clamp(0, 1) * 255).round().to(torch.uint8)
        uv = UVAlbedo(vt_t, ft_t, texture=texture, prior=1e-6)
        photo = Photometric(target, faces, region, uv, lit)
        uv.tex.requires_grad_(True)
        opt = torch.optim.Adam([uv.tex], lr=0.05)
        frames = torch.arange(kf, device=dev)
        steps = 30 if a.quick else 300
        sync()
        t0 = time.perf_counter()
        for i in range(steps):
            for grp in opt.param_groups:
                grp["lr"] = 0.05 * (0.02 + 0.98 * 0.5 * (1 + np.cos(np.pi * i / max(1, steps - 1))))
            loss = photo(verts[:kf], R, t, focal, pp, frames, i)
            opt.zero_grad()
            loss.backward()
            opt.step()
        sync()
        err = (uv.tex.detach() - true).abs()
        with torch.no_grad():
            fitted, _, _ = photo.render(verts[:kf], R, t, focal, pp)
        on = mask > 0
        out["recovery"] = {"steps": steps, "seconds": round(time.perf_counter() - t0, 2),
                           "coeff_abs_err_median": round(float(err.median()), 4),
                           "coeff_abs_err_p90": round(float(err.quantile(0.9)), 4),
                           "image_mae_8bit": round(float((fitted - img).abs()[on].mean() * 255), 3)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
