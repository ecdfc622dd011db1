"""Benchmark of the viewer's server-side update rate: prints one JSON object to stdout.

Each update is what ``avatar view`` does per frame while playing: pose the avatar for the frame
(face model + MLP), SH colours towards the camera, pack viser's splat buffer on the device, copy it
to the host and hand it to viser, which serialises it and sends it over the websocket. A real
websocket client (viser's protocol, no browser) is connected and drains the messages, so the
server's sending is part of the work; the client also counts the splat updates it received.

The avatar is a full-size one (default TrainConfig: UV 128, MLP 256x3, SH degree 3; the stand-in face
model, about 10.6k Gaussians; with --gaussians N it is resampled to about N) with a randomised MLP
output layer, or a real one with --store/--actor. Frames: the synthetic tracked motion.

    python bench/viewer_bench.py                    # on the GPU machine: cuda, 300 updates
    python bench/viewer_bench.py --device cpu --updates 20     # smoke run
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import sys
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DrainClient(threading.Thread):
    """A websocket client speaking viser's sub-protocol that receives and counts every message."""

    def __init__(self, url: str, subprotocol: str):
        super().__init__(daemon=True)
        from websockets.sync.client import connect

        self.ws = connect(url, subprotocols=[subprotocol], max_size=None, open_timeout=20)
        self.bytes = 0
        self.messages = 0
        self.stop = False

    def run(self) -> None:
        while not self.stop:
            try:
                msg = self.ws.recv(timeout=0.5)
            except TimeoutError:
                continue
            except Exception:  # noqa: BLE001 - closed
                return
            self.bytes += len(msg)
            self.messages += 1


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--updates", type=int, default=300)
    ap.add_argument("--frames", type=int, default=100, help="tracked frames cycled through")
    ap.add_argument("--gaussians", type=int, default=0, help="resample to about this many (0: the UV-128 layout)")
    ap.add_argument("--store", default=None)
    ap.add_argument("--actor", default=None)
    args = ap.parse_args()

    import viser

    from stages.export.motion import MotionFrames
    from stages.gauss.synthetic import frame_conditions
    from stages.viewer.server import AvatarViewer, ViewerConfig

    if args.store and args.actor:
        import tempfile

        from stages.export.actor import load_actor
        from stages.export.motion import tracked_motion
        from stages.store.uri import open_store

        a = load_actor(open_store(args.store), args.actor, tempfile.mkdtemp())
        model, surface, tracked = a.model, a.surface, tracked_motion(a.seq)
        source = f"{args.store} actor {args.actor}"
    else:
        from stages.face.model import load_face_model
        from stages.gauss.surface import flame_surface
        from stages.gauss.trainer import TrainConfig, build_avatar

        surface = flame_surface(load_face_model(None), torch.zeros(300))
        cfg = TrainConfig()
        if args.gaussians:
            cfg.uv_resolution = max(8, int(128 * (args.gaussians / 10638) ** 0.5))
        model = build_avatar(surface, cfg)
        with torch.no_grad():
            model.mlp.out.weight.normal_(0, 0.01)
            model.sh_rest.normal_(0, 0.05)
        cond, R, t = frame_conditions(args.frames)
        K = torch.tensor([[1200.0, 0, 256], [0, 1200.0, 256], [0, 0, 1]])
        c = cond.numpy()
        tracked = MotionFrames(exp=c[:, :100], jaw=c[:, 100:106], eyes=c[:, 106:118], eyelids=c[:, 118:120],
                               R=R.numpy(), t=t.numpy(), K=K.numpy(), image_size=(512, 512))
        source = "stand-in face model, default TrainConfig, randomised MLP output"

    with contextlib.redirect_stdout(sys.stderr):  # viser's banner: stdout carries only the JSON
        viewer = AvatarViewer(model, surface, tracked, config=ViewerConfig(port=_free_port(), device=args.device))
    client = DrainClient(f"ws://127.0.0.1:{viewer.server.get_port()}", f"viser-v{viser.__version__}")
    client.start()
    time.sleep(1.0)  # initial scene state
    sync = (lambda: torch.cuda.synchronize()) if args.device.startswith("cuda") else (lambda: None)  # noqa: E731
    n = len(tracked)
    for i in range(10):  # warm-up (CUDA kernels, allocator)
        viewer.frame.value = i % n
        viewer.refresh()
    sync()
    msgs0, bytes0 = client.messages, client.bytes
    t0 = time.perf_counter()
    for i in range(args.updates):
        viewer.frame.value = (i + 10) % n  # the slider's callback marks the state dirty
        viewer.refresh()
    sync()
    seconds = time.perf_counter() - t0
    # how long until the client has everything: viser sends from its own thread
    t_end = time.monotonic() + 30
    last = -1
    while time.monotonic() < t_end and client.messages != last:
        last = client.messages
        time.sleep(0.5)
    drained = time.perf_counter() - t0

    # the parts of one update, timed separately (device-synchronised)
    from stages.export.pose import pose_gaussians
    from stages.viewer.splats import pack_splats, splat_colors

    cond = viewer.condition()
    parts = {}
    for name in ("pose", "pack+host copy"):
        sync()
        ts = time.perf_counter()
        for _ in range(50):
            g = pose_gaussians(viewer.model, viewer.surface, cond)
            if name != "pose":
                rgb = splat_colors(g.sh, g.sh_degree, g.means[0], torch.zeros(3, device=args.device))
                pack_splats(g.means[0], g.quats[0], g.scales[0], g.opacities, rgb, 10.0)
        sync()
        parts[name] = (time.perf_counter() - ts) / 50 * 1000
    parts["pack+host copy"] -= parts["pose"]
    client.stop = True
    with contextlib.redirect_stdout(sys.stderr):
        viewer.close()
    dev = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(json.dumps({
        "bench": "viewer_update", "device": dev, "avatar": source, "gaussians": model.num_gaussians,
        "updates": args.updates, "seconds": round(seconds, 4),
        "updates_per_s": round(args.updates / seconds, 1), "goal_updates_per_s": 30,
        "ms_per_update": round(seconds / args.updates * 1000, 3),
        "ms_pose": round(parts["pose"], 3), "ms_colors_pack_copy": round(parts["pack+host copy"], 3),
        "client_messages": client.messages - msgs0, "client_mbytes": round((client.bytes - bytes0) / 1e6, 2),
        "client_received_per_s": round((client.messages - msgs0) / drained, 1),
        "buffer_kbytes_per_update": round(model.num_gaussians * 32 / 1024, 1),
        "viser": viser.__version__, "torch": torch.__version__,
    }, indent=1))


if __name__ == "__main__":
    main()
