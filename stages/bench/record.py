"""The benchmark record: ``docs/benchmarks.json`` is the source, ``docs/benchmarks.md`` is rendered
from it. Only figures measured by running a command go in; each keeps its command, device and date.

JSON shape: ``{key: {"value": float, "unit": str, "device": str, "command": str, "date": "YYYY-MM-DD",
"note": str?}}`` with keys such as ``track_fps``, ``masks_fps``, ``train_images_per_s``, ``render_fps``,
``e2e_10k_seconds``.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parents[2] / "docs"


@dataclass(frozen=True)
class Figure:
    """One measured figure."""

    value: float
    unit: str
    device: str
    command: str
    date: str
    note: str = ""


@dataclass(frozen=True)
class Target:
    """What a figure is compared with: the seed pipeline's figure and the goal."""

    label: str
    seed: str
    goal: str
    higher_is_better: bool = True
    goal_value: float | None = None


TARGETS: dict[str, Target] = {
    "ingest_landmarks_fps": Target("ingest + landmarks (1080p source)", "about 5 frames/s", ">= 500 frames/s on 16 cores", True, 500),
    "ingest_fps": Target("ingest (decode, crop, encode)", "-", "-"),
    "landmarks_fps": Target("landmarks (MediaPipe 478 points)", "about 250 frames/s on 2 cores (FaceMesh alone)", "-"),
    "ingest_landmarks_fps_devbox": Target("ingest + landmarks on the 2-CPU dev machine (1080p source)", "-", "-"),
    "masks_fps": Target("masks (alpha + parsing)", "1.5 frames/s", ">= 300 frames/s on one H100", True, 300),
    "masks_onnx_cuda_fps": Target("masks, rvm + bisenet ONNX models on onnxruntime's CUDA provider", "-",
                                  ">= 300 frames/s on one H100", True, 300),
    "masks_fps_devbox": Target("masks, default backends, on the 2-CPU dev machine", "-", "-"),
    "demo_seconds_devbox": Target("`make demo` on wojtek.mp4, 2-CPU dev machine", "-", "<= 5 min on 2 cores", False, 300),
    "drive_cpu_fps_devbox": Target("drive on a CPU: tiny avatar, 512 px output, 2-CPU dev machine", "-", "-"),
    "calibrate_seconds": Target("calibrate (once per actor)", "-", "-", False),
    "track_fps": Target("track (full schedule, 512x512)", "0.5-0.7 frames/s (4-6 h for 10k frames)", ">= 100 frames/s on one H100", True, 100),
    "track_vertex_error_mm": Target("track accuracy: mean vertex error (synthetic)", "-", "< 1 mm", False, 1.0),
    "track_jitter_mm": Target("track jitter with 1 px landmark noise (synthetic)", "-",
                              "<= 1.5 x ground-truth motion + 0.2 mm (2.50 mm on this clip)", False, 2.498),
    "train_images_per_s": Target("train (images/s)", "about 500 images/s (150k in about 5 min, A100)", ">= 1,500 images/s on one H100", True, 1500),
    "train_150k_seconds": Target("train, FlashAvatar's full budget (150k images)", "about 300 s", "< 120 s", False, 120),
    "train_step_images_per_s": Target("train steps alone (batches in GPU memory)", "-", "-"),
    "render_fps": Target("render 512x512 incl. MLP", "300 FPS (RTX 3090, upstream)", ">= 1,000 FPS", True, 1000),
    "heldout_psnr_db": Target("held-out PSNR, synthetic set", "-", ">= 30 dB", True, 30),
    "flame_fwd_bwd_1024_ms": Target("FLAME forward+backward, 1024 frames", "-", "-", False),
    "raster_ms_per_frame": Target("mesh rasterisation, 512x512, batched", "-", "< 0.2 ms a frame", False, 0.2),
    "e2e_10k_seconds": Target("end to end, 10,000 frames, video to avatar", "6-8 h", "< 600 s on one H100", False, 600),
    "e2e_250_seconds": Target("default preset, 10-second 1080p clip (250 frames), video to avatar + report",
                              "about 130 s (last week)", "< 30 s on one H100", False, 30),
    "e2e_750_seconds": Target("default preset, 30-second 1080p clip (750 frames), video to avatar + report", "-",
                              "< 60 s on one H100", False, 60),
    "wojtek_default_psnr_db": Target("held-out PSNR on ../shared/data/wojtek.mp4, default preset, stand-in face model",
                                     "24.3 dB (last week)", ">= 29 dB", True, 29),
    "wojtek_heldout_lpips": Target("held-out LPIPS (VGG) on ../shared/data/wojtek.mp4, default preset (no LPIPS term)",
                                   "-", "-", False),
    "wojtek_heldout_lpips_with_term": Target("the same with FlashAvatar's LPIPS term in training (--lpips-term)",
                                             "-", "-", False),
    "drive_render_fps": Target("drive: render 512x512 (encode excluded)", "-", ">= 1,000 frames/s on one H100",
                               True, 1000),
    "drive_fps": Target("drive: motion file to drive.mp4 with audio (render + encode)", "-", "-"),
    "drive_e2e_10k_seconds": Target("drive: 10,000-frame driver video to drive.mp4, every stage", "-",
                                    "< 90 s on one H100", False, 90),
    "fullframe_1080p_fps": Target("full frame 1920x1080: decode, render at the crop, composite, H.264", "-",
                                  ">= 60 frames/s on one H100", True, 60),
    "viewer_updates_per_s": Target("viewer: pose + pack + push of the animated avatar (server side)", "-",
                                   ">= 30 updates/s on one H100", True, 30),
}


def machine_description() -> str:
    """``NVIDIA H100 80GB HBM3, 16 CPUs`` or ``CPU only, 2 CPUs`` (what the figure was measured on)."""
    cpus = os.cpu_count() or 1
    try:
        import torch

        if torch.cuda.is_available():
            return f"{torch.cuda.get_device_name(0)}, {cpus} CPUs"
    except ImportError:
        pass
    return f"CPU only ({platform.processor() or platform.machine()}), {cpus} CPUs"


def load(path: Path | None = None) -> dict[str, dict[str, Any]]:
    path = path or DOCS / "benchmarks.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def record(figures: dict[str, Figure], path: Path | None = None) -> dict[str, dict[str, Any]]:
    """Merge figures into the JSON record (replacing same-key figures) and re-render the markdown."""
    path = path or DOCS / "benchmarks.json"
    data = load(path)
    for key, fig in figures.items():
        data[key] = {k: v for k, v in asdict(fig).items() if v != ""}
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(path, json.dumps(data, indent=2, sort_keys=True) + "\n")
    _atomic_write(path.with_suffix(".md"), render_markdown(data))
    return data


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _fmt(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:,.2f}" if abs(v) >= 1 else f"{v:.3g}"


def render_markdown(data: dict[str, dict[str, Any]]) -> str:
    """The benchmark page: one table against the seed's figures and the goals, then each command."""
    lines = [
        "# Benchmarks",
        "",
        "Generated from `docs/benchmarks.json` by `stages.bench.record` (do not edit by hand). Every figure",
        "was measured by running the command listed under it; a figure not yet measured is absent.",
        "",
        "| figure | measured | device | seed pipeline | goal | met |",
        "|---|---|---|---|---|---|",
    ]
    order = list(TARGETS) + sorted(k for k in data if k not in TARGETS)
    for key in order:
        if key not in data:
            continue
        fig = data[key]
        t = TARGETS.get(key, Target(key, "-", "-"))
        met = "-"
        if t.goal_value is not None:
            ok = fig["value"] >= t.goal_value if t.higher_is_better else fig["value"] <= t.goal_value
            met = "yes" if ok else "no"
        lines.append(f"| {t.label} (`{key}`) | {_fmt(fig['value'])} {fig['unit']} | {fig['device']} | {t.seed} | "
                     f"{t.goal} | {met} |")
    lines += ["", "## How each figure was measured", ""]
    for key in order:
        if key in data:
            fig = data[key]
            note = f" {fig['note']}" if fig.get("note") else ""
            lines += [f"- `{key}` ({fig['date']}, {fig['device']}):{note}", f"  `{fig['command']}`"]
    not_measured = [k for k in TARGETS if k not in data]
    if not_measured:
        lines += ["", "Not measured yet: " + ", ".join(f"`{k}`" for k in not_measured) + "."]
    return "\n".join(lines) + "\n"


def today() -> str:
    return date.today().isoformat()
