"""End-to-end benchmark: a synthetic clip of N frames through every stage, timed per stage."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from stages.config import PipelineConfig
from stages.runner.run import StageResult
from stages.store.local import LocalStore

log = logging.getLogger("avatar.bench")

# Which figure of the record each stage's throughput feeds (frames/s unless the stage says otherwise).
STAGE_FIGURES = {"ingest": "ingest_fps", "landmarks": "landmarks_fps", "masks": "masks_fps", "track": "track_fps"}


@dataclass
class BenchResult:
    """Attributes:
        frames: frames in the clip.
        results: one StageResult per stage, in order.
        seconds: end-to-end wall clock (video to avatar, clip synthesis excluded).
        extra: figures the stages reported themselves (train images/s, render FPS, PSNR).
        gpus: ``{stage: [GPU ids]}`` each stage ran on (from its manifests; absent: CPU).
    """

    frames: int
    results: list[StageResult]
    seconds: float
    extra: dict[str, float]
    gpus: dict[str, list[str]] = field(default_factory=dict)

    @property
    def stage_seconds(self) -> float:
        """Sum of the stages' own wall clocks (above :attr:`seconds` only where stages overlap)."""
        return sum(r.seconds for r in self.results)

    @property
    def gpus_used(self) -> list[str]:
        """Every GPU id some stage ran on."""
        return sorted({g for ids in self.gpus.values() for g in ids})

    def table(self) -> str:
        rows = [f"{'stage':10s} {'frames':>7s} {'seconds':>9s} {'frames/s':>10s}  gpus"]
        for r in self.results:
            rows.append(f"{r.stage:10s} {r.frames:7d} {r.seconds:9.2f} {r.fps:10.1f}  {','.join(self.gpus.get(r.stage, [])) or '-'}")
        rows.append(f"{'total':10s} {self.frames:7d} {self.seconds:9.2f} {self.frames / self.seconds:10.1f}")
        rows.append(f"sum of stages: {self.stage_seconds:.2f} s, wall clock: {self.seconds:.2f} s "
                    f"(overlap {self.stage_seconds - self.seconds:.2f} s); "
                    f"GPUs used: {len(self.gpus_used)}" + (f" ({', '.join(self.gpus_used)})" if self.gpus_used else ""))
        for k, v in self.extra.items():
            rows.append(f"{k}: {v:.2f}")
        return "\n".join(rows)


def synthetic_clip(path: Path, frames: int, seed: int = 0, size: int = 512) -> Path:
    """Render (or reuse) a synthetic talking-head clip with known ground truth next to it."""
    import torch

    from stages.face.model import load_face_model
    from stages.face.synth import SynthSpec, generate_params, render_video

    if path.is_file():
        return path
    model = load_face_model(None)
    spec = SynthSpec(n_frames=frames, seed=seed, size=size)
    params = generate_params(model, spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    render_video(model, params, path, spec=spec, batch=64, device="cuda" if torch.cuda.is_available() else "cpu")
    log.info("synthetic clip: %d frames rendered in %.1f s -> %s", frames, time.monotonic() - t0, path)
    return path


def run_benchmark(frames: int, workdir: Path, *, preset: str = "full", device: str = "auto", jobs: int = 1,
                  video: Path | None = None) -> BenchResult:
    """Synthesise (or take) a clip and run the whole pipeline on it in a fresh local store."""
    from stages.runner.pipeline import prepare_actor, run_pipeline

    clip = video or synthetic_clip(workdir / f"synthetic-{frames}.mp4", frames)
    store = LocalStore(workdir / "store")  # fixed: a rerun after a crash resumes where it stopped
    actor = f"bench-{frames}-{preset}"
    pipeline = prepare_actor(store, actor, clip, None, preset)
    t0 = time.monotonic()
    results = run_pipeline(store, actor, pipeline, device=device, jobs=jobs)
    seconds = time.monotonic() - t0
    extra: dict[str, float] = {}
    for name, keys in (("train", ("images_per_s",)), ("render", ("render_fps", "psnr"))):
        try:
            stats = store.get_json(f"actors/{actor}/{name}/manifest.json")["stats"]
        except KeyError:
            continue
        for k in keys:
            if isinstance(stats.get(k), (int, float)):
                extra[f"{name}_{k}"] = float(stats[k])
    n = store.get_json(f"actors/{actor}/ingest/shards.json")["frames"]
    manifest_stats = {r.stage: store.get_json(f"actors/{actor}/{r.stage}/manifest.json")["stats"] for r in results}
    gpus = {stage: [str(g) for g in st.get("gpus", [st["gpu"]] if st.get("gpu") is not None else [])]
            for stage, st in manifest_stats.items()}
    result = BenchResult(n, results, seconds, extra, {k: v for k, v in gpus.items() if v})
    (workdir / "bench.json").write_text(json.dumps({
        "frames": n, "seconds": seconds, "stage_seconds": round(result.stage_seconds, 3),
        "overlap_seconds": round(result.stage_seconds - seconds, 3),
        "gpus_used": result.gpus_used, "gpus": result.gpus, "extra": extra, "preset": preset,
        "stages": [{"stage": r.stage, "status": r.status, "frames": r.frames, "seconds": round(r.seconds, 3),
                    "fps": round(r.fps, 2), "started": None if r.started is None else round(r.started, 3),
                    "ended": None if r.ended is None else round(r.ended, 3)} for r in results],
        "manifest_stats": manifest_stats,
    }, indent=1, default=str))
    return result


def figures_of(result: BenchResult) -> dict[str, tuple[float, str]]:
    """The record's figures from a benchmark run: ``{key: (value, unit)}``."""
    out: dict[str, tuple[float, str]] = {}
    for r in result.results:
        if r.stage in STAGE_FIGURES and r.frames and r.seconds:
            out[STAGE_FIGURES[r.stage]] = (r.fps, "frames/s")
        if r.stage == "calibrate" and r.seconds:
            out["calibrate_seconds"] = (r.seconds, "s")
    if "train_images_per_s" in result.extra:
        out["train_images_per_s"] = (result.extra["train_images_per_s"], "images/s")
    if "render_render_fps" in result.extra:
        out["render_fps"] = (result.extra["render_render_fps"], "FPS")
    if "render_psnr" in result.extra:
        out["heldout_psnr_db"] = (result.extra["render_psnr"], "dB")
    key = "e2e_10k_seconds" if result.frames == 10_000 else f"e2e_{result.frames}_seconds"
    out[key] = (result.seconds, "s")
    return out
