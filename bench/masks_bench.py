"""Throughput of the masks stage's backends, decode and encode included; prints one JSON object.

    python bench/masks_bench.py [--frames 256] [--cpu-frames 32] [--batch 16] [--workers 0]

Measured, each over one shard of ``--frames`` 512x512 frames held as JPEGs in memory, through
:func:`stages.masks.pipeline.compute_masks` (decode, matting, parsing, encode to FlashAvatar's
files) plus writing the shard tar:

- ``default`` matting + landmark parsing (MediaPipe selfie segmentation, CPU; skipped where
  mediapipe is not installed);
- ``rvm`` matting + ``bisenet`` parsing, and ``rvm`` + landmark parsing, on onnxruntime's CPU
  provider and, where onnxruntime has it, its CUDA provider;
- ``host_only``: the same pipeline with a fixed matte (and fixed labels) instead of networks: what
  decoding, parsing, encoding and the tar cost on this machine's CPUs, the ceiling that the host
  puts on any backend.

Where torch sees a GPU, the same pipeline also runs with the stand-in networks executed by torch on
it (``.../torch-cuda-fp32|fp16``, bench-only backends with the stage's interfaces): the stage's
end-to-end throughput on this GPU even where onnxruntime lacks its CUDA provider (the GPU machine's
onnxruntime is the CPU build, and onnxruntime-gpu is too large to carry there).

The ONNX models are stand-ins of realistic size exported here from torch
(:mod:`stages.masks.standin_models`): a MobileNet-style recurrent matting net with RVM's signature
(about 3.1 M parameters; RVM MobileNetV3 has 3.7 M) and a MobileNet-style 19-class parsing net with
BiSeNet's signature and auxiliary heads (about 4.1 M parameters; the real BiSeNet/ResNet18 is
larger, ~13 M). Where torch sees a GPU, the same two networks also run in torch on it (fp32 and
fp16, batch ``--batch``) to show what the networks alone cost on this GPU.

Frames are synthetic (a textured head-and-shoulders drawing, so JPEG sizes are realistic) unless
``--video`` names a 512x512 video readable by OpenCV. The seed did 1.5 frames/s; the goal is
>= 300 frames/s for alpha + parsing on one H100.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RVM_WIDTHS = (16, 48, 160, 640)
BISENET_WIDTHS = (32, 64, 256, 1024)
BLOCKS = 4


def synthetic_frames(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(frames uint8 [n,512,512,3], points float32 [n,478,3])``: a drawn head and shoulders that
    sways, with landmarks (face top, chin, an inner-lip ellipse) where the default parsing reads them."""
    import cv2

    from stages.masks.landmark_masks import CHIN, FACE_TOP, INNER_LIP

    rng = np.random.default_rng(seed)
    texture = (rng.random((512, 512, 3)) * 60).astype(np.uint8)
    frames = np.empty((n, 512, 512, 3), np.uint8)
    points = np.zeros((n, 478, 3), np.float32)
    for i in range(n):
        dx = int(10 * np.sin(i / 10))
        img = texture + np.uint8(90)
        cv2.ellipse(img, (256 + dx, 230), (110, 140), 0, 0, 360, (200, 160, 140), -1)
        cv2.rectangle(img, (120 + dx, 400), (392 + dx, 511), (40, 60, 150), -1)
        cv2.rectangle(img, (215 + dx, 340), (297 + dx, 420), (190, 150, 130), -1)
        opening = 6 + 10 * abs(np.sin(i / 5))
        cv2.ellipse(img, (256 + dx, 300), (35, int(opening)), 0, 0, 360, (60, 20, 30), -1)
        frames[i] = cv2.GaussianBlur(img, (3, 3), 0)
        p = points[i]
        p[:, :2] = (256 + dx, 230)
        p[FACE_TOP, :2] = (256 + dx, 95)
        p[CHIN, :2] = (256 + dx, 370)
        t = np.linspace(0, 2 * np.pi, len(INNER_LIP), endpoint=False) + np.pi
        p[list(INNER_LIP), 0] = 256 + dx + 35 * np.cos(t)
        p[list(INNER_LIP), 1] = 300 - opening * np.sin(t)
    return frames, points


def video_frames(path: str, n: int) -> np.ndarray:
    import cv2

    cap = cv2.VideoCapture(path)
    out = []
    while len(out) < n:
        ok, bgr = cap.read()
        if not ok:
            break
        out.append(cv2.cvtColor(cv2.resize(bgr, (512, 512)), cv2.COLOR_BGR2RGB))
    cap.release()
    if not out:
        raise SystemExit(f"{path}: no frames readable by OpenCV")
    while len(out) < n:
        out.extend(out[: n - len(out)])
    return np.stack(out)


def export_models(d: Path) -> dict:
    import torch

    from stages.masks.standin_models import (StandInBiSeNet, StandInRVM, export_bisenet, export_rvm,
                                             parameter_count)

    torch.manual_seed(0)
    rvm = StandInRVM(blocks=BLOCKS, widths=RVM_WIDTHS)
    bis = StandInBiSeNet(blocks=BLOCKS, widths=BISENET_WIDTHS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_rvm(rvm, d / "rvm.onnx", size=512)
        export_bisenet(bis, d / "bisenet.onnx")
    return {"rvm": d / "rvm.onnx", "bisenet": d / "bisenet.onnx", "rvm_module": rvm, "bisenet_module": bis,
            "rvm_params": parameter_count(rvm), "bisenet_params": parameter_count(bis)}


def run_case(jpegs: dict[int, bytes], points: np.ndarray, matting, parsing, batch: int, workers: int,
             tmp: Path, full_warmup: bool = False) -> dict:
    from stages.frameshard import write_shard_tar
    from stages.masks.pipeline import MaskSettings, compute_masks

    numbers = sorted(jpegs)
    settings = MaskSettings(batch_size=batch, rvm_warmup=10)
    pts = {k: points[i] for i, k in enumerate(numbers)}
    with ThreadPoolExecutor(max_workers=workers) as pool:
        # warm-up: first runs allocate and, on CUDA, pick kernels for each batch shape (a whole pass
        # there: the shapes of the timed run are the warm-up's; on the CPU one batch is enough)
        warm = numbers if full_warmup else numbers[:batch]
        compute_masks({k: jpegs[k] for k in warm}, warm, pts.get, matting, parsing, settings, pool)
        t0 = time.perf_counter()
        members = compute_masks(jpegs, numbers, pts.get, matting, parsing, settings, pool)
        write_shard_tar(tmp / "masks.tar", (m for k in numbers for m in members[k]))
        seconds = time.perf_counter() - t0
    return {"frames_per_s": round(len(numbers) / seconds, 1), "frames": len(numbers), "seconds": round(seconds, 3)}


class FixedMatting:
    """Bench-only matting that returns one precomputed matte: isolates the host side's cost
    (decode, parsing, encode, tar) from any network."""

    def __init__(self, alpha: np.ndarray):
        self.alpha = alpha

    def matte(self, rgb: np.ndarray) -> np.ndarray:
        return self.alpha


class FixedParsing:
    """Bench-only parser that returns precomputed labels (the class-to-mask lookup still runs)."""

    def __init__(self, labels: np.ndarray):
        from stages.masks.backends.bisenet import MOUTH_CLASSES, NECKHEAD_CLASSES, class_lut

        self.labels_one = labels
        self.neckhead_lut, self.mouth_lut = class_lut(NECKHEAD_CLASSES), class_lut(MOUTH_CLASSES)

    def labels(self, rgb: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.labels_one, (len(rgb), *self.labels_one.shape))

    def masks(self, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.neckhead_lut[labels], self.mouth_lut[labels]


def torch_backends(models: dict, half: bool, device: str = "cuda"):
    """The stand-in networks run by torch on the GPU behind the stage's backend interfaces, so that
    the stage's own pipeline (decode, streams, parsing, encode, tar) runs end to end on this GPU
    where onnxruntime has no CUDA provider. Bench-only: the stage runs ONNX models."""
    import torch

    from stages.masks.backends.bisenet import (IMAGENET_MEAN, IMAGENET_STD, MOUTH_CLASSES, NECKHEAD_CLASSES,
                                               class_lut)
    from stages.masks.backends.rvm import RvmMatting

    dev = torch.device(device)
    dtype = torch.float16 if half else torch.float32

    def to_gpu(rgb: np.ndarray) -> "torch.Tensor":
        return torch.from_numpy(np.ascontiguousarray(rgb)).to(dev, non_blocking=True).permute(0, 3, 1, 2).to(dtype)

    class TorchRvm(RvmMatting):
        def __init__(self) -> None:  # no onnxruntime session: the module itself
            self.module = models["rvm_module"].to(dev, dtype).eval()
            self.ratio = torch.ones(1, device=dev, dtype=dtype)
            self.reset()

        def reset(self) -> None:
            self.state = [torch.zeros(1, 1, 1, 1, device=dev, dtype=dtype)] * 4

        def step(self, rgb: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                _, pha, *self.state = self.module(to_gpu(rgb) / 255, *self.state, self.ratio)
                return pha[:, 0].float().clamp(0, 1).cpu().numpy()

    class TorchBiSeNet:
        def __init__(self) -> None:
            self.module = models["bisenet_module"].to(dev, dtype).eval()
            self.scale = torch.tensor(1 / (255 * IMAGENET_STD), device=dev, dtype=dtype).view(1, 3, 1, 1)
            self.offset = torch.tensor(-IMAGENET_MEAN / IMAGENET_STD, device=dev, dtype=dtype).view(1, 3, 1, 1)
            self.neckhead_lut, self.mouth_lut = class_lut(NECKHEAD_CLASSES), class_lut(MOUTH_CLASSES)

        def labels(self, rgb: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                logits = self.module(to_gpu(rgb) * self.scale + self.offset)[0]
                return logits.argmax(1).to(torch.uint8).cpu().numpy()

        def masks(self, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            return self.neckhead_lut[labels], self.mouth_lut[labels]

    return TorchRvm(), TorchBiSeNet()


def torch_nets(models: dict, batch: int, steps: int = 20) -> dict:
    """The two stand-in networks alone in torch on the GPU (no decode/encode)."""
    import torch

    out = {}
    dev = torch.device("cuda")
    for dtype in (torch.float32, torch.float16):
        rvm = models["rvm_module"].to(dev, dtype).eval()
        bis = models["bisenet_module"].to(dev, dtype).eval()
        x = torch.rand(batch, 3, 512, 512, device=dev, dtype=dtype)
        ratio = torch.ones(1, device=dev, dtype=dtype)
        with torch.no_grad():
            rec = [torch.zeros(1, 1, 1, 1, device=dev, dtype=dtype)] * 4
            for _ in range(3):
                _, pha, *rec = rvm(x, *rec, ratio)
                bis(x)[0].argmax(1)
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(steps):
                _, pha, *rec = rvm(x, *rec, ratio)
            torch.cuda.synchronize()
            t1 = time.perf_counter()
            for _ in range(steps):
                bis(x)[0].argmax(1)
            torch.cuda.synchronize()
            t2 = time.perf_counter()
        name = "fp16" if dtype == torch.float16 else "fp32"
        out[f"rvm_{name}_frames_per_s"] = round(batch * steps / (t1 - t0), 1)
        out[f"bisenet_{name}_frames_per_s"] = round(batch * steps / (t2 - t1), 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=640,
                    help="frames per GPU case (one shard; RVM runs min(batch, frames // 40) streams)")
    ap.add_argument("--cpu-frames", type=int, default=32, help="frames per CPU ONNX case")
    ap.add_argument("--default-frames", type=int, default=64, help="frames for the default backend")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--workers", type=int, default=0, help="threads (0: CPU count, at most 16)")
    ap.add_argument("--video", default="", help="a 512x512 video to take frames from (else synthetic)")
    args = ap.parse_args()

    import cv2

    from stages.masks.encode import encode_alpha  # noqa: F401  (import check of the package)

    workers = args.workers or max(1, min(16, os.cpu_count() or 1))
    n = max(args.frames, args.cpu_frames, args.default_frames)
    frames, points = synthetic_frames(n)
    if args.video:
        frames = video_frames(args.video, n)
    jpeg_all = {k + 1: cv2.imencode(".jpg", cv2.cvtColor(f, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])[1]
                .tobytes() for k, f in enumerate(frames)}

    def first(m: int) -> dict[int, bytes]:
        return {k: jpeg_all[k] for k in range(1, m + 1)}

    report: dict = {"host": platform.node(), "cpu_count": os.cpu_count(), "workers": workers, "batch": args.batch,
                    "python": platform.python_version(), "seed_frames_per_s": 1.5, "goal_frames_per_s": 300,
                    "frames_source": args.video or "synthetic", "results": {}}
    try:
        import onnxruntime as ort

        report["onnxruntime"] = ort.__version__
        report["onnx_providers"] = ort.get_available_providers()
    except ImportError as e:
        ort = None
        report["onnxruntime"] = f"unavailable: {e}"
    res = report["results"]
    with tempfile.TemporaryDirectory() as tmpd:
        tmp = Path(tmpd)
        try:
            from stages.masks.backends.mediapipe_default import SelfieMatting

            m = SelfieMatting()
            res["default+landmarks/cpu"] = run_case(first(args.default_frames), points, m, None, args.batch,
                                                    workers, tmp)
            m.close()
        except ImportError as e:
            res["default+landmarks/cpu"] = f"unavailable: {e}"

        import cv2 as _cv2

        alpha = np.zeros((512, 512), np.float32)
        _cv2.ellipse(alpha, (256, 260), (150, 250), 0, 0, 360, 1.0, -1)
        alpha = _cv2.GaussianBlur(alpha, (9, 9), 0)
        labels = (alpha > 0.5).astype(np.uint8) * 17
        labels[290:310, 230:280] = 11
        res["host_only+landmarks/cpu"] = run_case(first(args.frames), points, FixedMatting(alpha), None,
                                                  args.batch, workers, tmp)
        res["host_only+labels/cpu"] = run_case(first(args.frames), points, FixedMatting(alpha),
                                               FixedParsing(labels), args.batch, workers, tmp)

        models = None
        try:
            import torch

            report["torch"] = torch.__version__
            models = export_models(tmp)
            report["standin_params"] = {"rvm": models["rvm_params"], "bisenet": models["bisenet_params"]}
        except ImportError as e:
            res["onnx"] = f"unavailable (torch needed to export the stand-ins): {e}"
        if models is not None and ort is not None:
            from stages.masks.backends.bisenet import BiSeNetParsing
            from stages.masks.backends.rvm import RvmMatting

            devices = ["cpu"] + (["cuda"] if "CUDAExecutionProvider" in ort.get_available_providers() else [])
            if "cuda" not in devices:
                res["rvm+bisenet/cuda"] = "unavailable: onnxruntime has no CUDAExecutionProvider (onnxruntime-gpu)"
            for dev in devices:
                m_frames = args.cpu_frames if dev == "cpu" else args.frames
                rvm = RvmMatting(models["rvm"], dev, threads=workers)
                bis = BiSeNetParsing(models["bisenet"], dev, threads=workers)
                gpu = dev == "cuda"
                res[f"rvm+bisenet/{dev}"] = run_case(first(m_frames), points, rvm, bis, args.batch, workers, tmp,
                                                     gpu)
                res[f"rvm+landmarks/{dev}"] = run_case(first(m_frames), points, rvm, None, args.batch, workers,
                                                       tmp, gpu)
        if models is not None:
            import torch

            if torch.cuda.is_available():
                report["gpu"] = torch.cuda.get_device_name(0)
                for half in (False, True):
                    rvm, bis = torch_backends(models, half)
                    name = "fp16" if half else "fp32"
                    res[f"rvm+bisenet/torch-cuda-{name}"] = run_case(first(args.frames), points, rvm, bis,
                                                                     args.batch, workers, tmp, True)
                res["rvm+landmarks/torch-cuda-fp16"] = run_case(first(args.frames), points, rvm, None, args.batch,
                                                                workers, tmp, True)
                report["torch_cuda_networks_only"] = torch_nets(models, args.batch)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
