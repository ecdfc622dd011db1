"""Benchmark of full-frame output (stages.video.fullframe): prints one JSON object to stdout.

A 1920x1080 25 fps H.264 source (generated: moving gradients and texture, ``--frames`` frames) and
a 900 px crop; the avatar (the stand-in face model's untrained FlashAvatar, about 14k Gaussians)
rendered at the crop's size, composited into every source frame and encoded to H.264. Figures
(frames/s):

- ``decode``: the source's frames as I420 buffers on the 25 fps timeline alone;
- ``encode_<preset>``: encoding 1080p I420 frames alone (libx264 preset, all cores);
- ``composite_encode_<preset>``: decode + composite (fixed render) + encode;
- ``full_<preset>``: the whole ``render_full_frame`` path: render at 900 px + decode + composite +
  encode (the goal: >= 60 frames/s on one H100);
- ``render_900``: the avatar render alone at 900 px, batched.

    python bench/fullframe_bench.py                      # full run (CUDA)
    python bench/fullframe_bench.py --frames 20 --device cpu --presets ultrafast   # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stages.video.crop_record import CropRecord  # noqa: E402
from stages.video.fullframe import FullFrameWriter, SourceFrames  # noqa: E402

W, H = 1920, 1080


def write_source(path: Path, frames: int) -> None:
    """A 1080p clip with enough texture and motion to cost the encoder like real footage."""
    import av

    yy, xx = np.mgrid[:H + 300, :W + 1000].astype(np.float32)
    base = (110 + 60 * np.sin(xx / 140) * np.cos(yy / 90)).astype(np.float32)
    base += np.random.default_rng(0).normal(0, 6, base.shape).astype(np.float32)
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        s.options = {"preset": "ultrafast", "crf": "18", "g": "250"}
        for i in range(frames):
            dy, dx = (3 * i) % 300, (7 * i) % 1000
            y = base[dy:dy + H, dx:dx + W]
            buf = np.full((H * 3 // 2, W), 128, np.uint8)
            buf[:H] = np.clip(y, 16, 235).astype(np.uint8)
            buf[H:H + H // 4] = np.uint8(128 + 20 * np.sin(i / 10))
            for p in s.encode(av.VideoFrame.from_ndarray(buf, format="yuv420p")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)


def avatar(device: str):
    from stages.face.model import load_face_model
    from stages.gauss.surface import flame_surface
    from stages.gauss.trainer import TrainConfig, build_avatar

    surface = flame_surface(load_face_model(None), torch.zeros(300))
    model = build_avatar(surface, TrainConfig())
    return model.to(device).eval(), surface.to(device)


def cameras(n: int):
    """Head in front of the camera, turning a little: R [n,3,3], t [n,3], K [n,3,3] at 512 px."""
    ang = torch.linspace(-0.3, 0.3, n)
    c, s = ang.cos(), ang.sin()
    R = torch.zeros(n, 3, 3)
    R[:, 0, 0], R[:, 0, 2], R[:, 1, 1], R[:, 2, 0], R[:, 2, 2] = c, s, -1.0, s, -c
    t = torch.tensor([0.0, 0.0, 1.0]).expand(n, 3).clone()
    K = torch.tensor([[1600.0, 0, 256], [0, 1600.0, 256], [0, 0, 1]]).expand(n, 3, 3).clone()
    return R, t, K


def timed(fn) -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=500)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--presets", default="veryfast,superfast,ultrafast")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--side", type=int, default=900)
    a = ap.parse_args()
    from stages.gauss.fullframe_render import render_full_frame
    from stages.gauss.trainer import choose_renderer, render_frames

    res: dict = {"device": torch.cuda.get_device_name() if a.device.startswith("cuda") else "cpu",
                 "cpus": os.cpu_count(), "frames": a.frames, "size": [W, H], "crop_side": a.side, "batch": a.batch}
    n = a.frames
    rec = CropRecord(x0=(W - a.side) // 2 + 70, y0=60, side=a.side, source_width=W, source_height=H)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src.mp4"
        res["make_source_s"] = round(timed(lambda: write_source(src, n)), 2)

        def decode():
            sf = SourceFrames(src)
            for s in range(0, sf.n, a.batch):
                sf.get(list(range(s, min(sf.n, s + a.batch))))
        res["decode_fps"] = round(n / timed(decode), 1)

        import av
        bufs = SourceFrames(src).get(list(range(min(n, 32))))
        for preset in a.presets.split(","):
            def encode():
                with av.open(str(Path(tmp) / "e.mp4"), "w") as c:
                    st = c.add_stream("libx264", rate=25)
                    st.width, st.height, st.pix_fmt = W, H, "yuv420p"
                    st.options = {"crf": "18", "preset": preset}
                    for i in range(n):
                        for p in st.encode(av.VideoFrame.from_ndarray(bufs[i % len(bufs)], format="yuv420p")):
                            c.mux(p)
                    for p in st.encode():
                        c.mux(p)
            res[f"encode_{preset}_fps"] = round(n / timed(encode), 1)

        yy, xx = torch.meshgrid(torch.arange(a.side), torch.arange(a.side), indexing="ij")
        alpha = (1.5 - torch.hypot(yy - a.side / 2, xx - a.side / 2) / (a.side / 3)).clamp(0, 1).to(a.device)
        premult = (alpha[..., None] * torch.tensor([0.8, 0.6, 0.5], device=a.device))
        for preset in a.presets.split(","):
            def comp():
                with FullFrameWriter(Path(tmp) / "c.mp4", src, rec, a.device, preset=preset) as ff:
                    for s in range(0, n, a.batch):
                        b = min(n, s + a.batch) - s
                        ff.write(range(s, s + b), premult.expand(b, -1, -1, -1), alpha.expand(b, -1, -1))
            res[f"composite_encode_{preset}_fps"] = round(n / timed(comp), 1)

        def comp_nvenc():
            with FullFrameWriter(Path(tmp) / "nv.mp4", src, rec, a.device, encoder="h264_nvenc") as ff:
                for s in range(0, n, a.batch):
                    b = min(n, s + a.batch) - s
                    ff.write(range(s, s + b), premult.expand(b, -1, -1, -1), alpha.expand(b, -1, -1))
        try:
            res["composite_encode_nvenc_fps"] = round(n / timed(comp_nvenc), 1)
        except Exception as e:  # noqa: BLE001 - no NVENC library on this machine
            res["composite_encode_nvenc_fps"] = f"unavailable: {type(e).__name__}: {str(e)[:120]}"

        model, surface = avatar(a.device)
        renderer = choose_renderer("auto", a.device)
        res["renderer"], res["gaussians"] = renderer, model.num_gaussians
        R, t, K = cameras(n)
        cond = torch.zeros(n, 120)
        Kr = K * torch.tensor([[a.side / 512], [a.side / 512], [1.0]])
        bg = torch.zeros(3, device=a.device)
        args = [x[:a.batch].to(a.device) for x in (cond, R, t, Kr)]
        with torch.no_grad():
            img, al = render_frames(model, surface, *args, a.side, bg, renderer)  # warm-up (gsplat JIT)
            res["render_coverage"] = round(float((al > 0.5).float().mean()), 3)
            reps = max(1, n // a.batch)
            res[f"render_{a.side}_fps"] = round(reps * a.batch / timed(
                lambda: [render_frames(model, surface, *args, a.side, bg, renderer) for _ in range(reps)]), 1)
        for preset in a.presets.split(","):
            out = Path(tmp) / f"full_{preset}.mp4"
            st = {}
            sec = timed(lambda: st.update(render_full_frame(model, surface, cond, R, t, K, list(range(n)), out, src,
                                                             rec, renderer=renderer, device=a.device, batch=a.batch,
                                                             preset=preset)))
            res[f"full_{preset}_fps"] = round(n / sec, 1)
            res[f"full_{preset}_mb"] = round(out.stat().st_size / 1e6, 2)
        # one frame of the full path as a PNG next to the JSON (for a look)
        sf = SourceFrames(out)
        import cv2
        png = os.environ.get("OUT", "/tmp") + "/fullframe_bench_frame.png"
        cv2.imwrite(png, cv2.cvtColor(sf.get([n // 2])[0], cv2.COLOR_YUV2BGR_I420))
        res["png"] = png
    print(json.dumps(res))


if __name__ == "__main__":
    main()
