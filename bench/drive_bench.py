"""Drive rendering speed at 512x512 on one GPU (prints one JSON object).

    python bench/drive_bench.py [--frames 2000] [--batch 64 128 256] [--resolution 512]

An untrained avatar of the full preset's size (UV texels at 128x128 on the stand-in face model, as
many Gaussians as a trained one; speed does not depend on the weights) driven by a synthetic motion
of ``--frames`` frames (the project's synthetic talking head: jaw, expression, blinks, head pose).
Measured:

- ``render_fps[batch]``: :func:`stages.drive.render.render_motion` (face model, MLP, SH colours,
  gsplat) with the frames ending as uint8 RGB on the host, encoding excluded; ``render_fps_device``
  the same without the copy to the host (frames left on the GPU, the device synchronised);
- ``encode_fps``: H.264 encoding alone (libx264 through PyAV, crf 20, ``veryfast``) of 512x512 frames;
- ``drive_fps`` / ``drive_seconds``: the whole drive step (:func:`stages.drive.stage.run_drive`: transfer,
  render, encode in a background thread, ``motion.npz``, store writes), encoding included;
- ``drive_audio_seconds``: the same with an audio track muxed in;
- with ``--e2e-frames N`` (e.g. 10000): a synthetic N-frame driver video (rendered on the GPU, not
  timed) driven end to end as ``avatar drive --video`` does it: the driver's ingest, landmarks,
  calibrate, track (full preset, all cores), then the drive step with ``side_by_side.mp4`` and the
  sound; ``e2e_seconds`` and the per-stage seconds (``--e2e-clip PATH``: that video instead of a new render).
Goals: >= 1,000 frames/s rendering at 512x512 on one H100 (encoding excluded); a 10,000-frame
driver video to ``drive.mp4`` in < 90 s.

``--smoke`` runs every code path on the CPU with the reference renderer at toy sizes.

One command on the GPU machine (fits its 8-minute limit: gsplat's JIT about 80 s, the 10,000-frame synthetic
clip about 85 s, the measured parts about 3 minutes)::

    python bench/drive_bench.py --frames 2000 --e2e-frames 10000 --jobs 16 --out $OUT/drive_bench.json

``--out`` is rewritten after every part (a run cut short keeps what finished); ``--record`` writes the figures
(``drive_render_fps``, ``drive_fps``, ``drive_e2e_10k_seconds``) to docs/benchmarks.{json,md}, and
``--from-json FILE --record`` records a saved run's figures (e.g. one copied back from the GPU machine).
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import tempfile
import time
import wave
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stages.drive.render import DriveInputs, render_motion  # noqa: E402
from stages.drive.stage import DriveConfig, DriveSource, run_drive  # noqa: E402
from stages.drive.synthetic import publish_untrained_actor  # noqa: E402
from stages.gauss.preview import PreviewWriter  # noqa: E402
from stages.gauss.trainer import TrainConfig  # noqa: E402
from stages.motion.format import Motion  # noqa: E402
from stages.store.local import LocalStore  # noqa: E402


def synthetic_motion(n: int) -> Motion:
    from stages.face.model import load_face_model
    from stages.face.synth import SynthSpec, generate_params

    p = generate_params(load_face_model(None), SynthSpec(n_frames=n, seed=3))
    exp = np.zeros((n, 100), np.float32)
    exp[:, :p["expression"].shape[1]] = p["expression"]
    return Motion(exp=exp, jaw=p["jaw"], eyes=p["eyes"], eyelids=p["eyelids"], R=p["R"], t=p["t"], K=p["K"][0])


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def e2e(store, work: Path, frames: int, cfg: DriveConfig, device: str, jobs: int,  # noqa: ANN001
        clip: Path | None = None) -> dict:
    """``avatar drive --video`` on a synthetic clip of ``frames`` frames (or on ``clip``), timed per stage."""
    from dataclasses import replace

    from stages.bench.e2e import synthetic_clip
    from stages.drive.sources import driver_frames, driver_motion, driver_track_digest, prepare_driver, track_driver

    t0 = time.perf_counter()
    clip = clip or synthetic_clip(work / f"driver-{frames}.mp4", frames)
    clip_s = time.perf_counter() - t0  # not part of the drive: the driver video a user would bring
    t0 = time.perf_counter()
    prepare_driver(store, "bench", "e2e", clip)
    results = track_driver(store, "e2e", device=device, jobs=jobs)
    t1 = time.perf_counter()
    source = DriveSource(driver_motion(store, "e2e", work), driver_track_digest(store, "e2e"), audio=None,
                         frames=lambda: driver_frames(store, "e2e", work), label="driver e2e")
    res = run_drive(store, "bench", "e2e", source, replace(cfg, driver_neutral="median"), scratch=work / "scratch-e2e",
                    device=device)
    t2 = time.perf_counter()
    return {"e2e_frames": frames, "e2e_clip_render_seconds": round(clip_s, 1), "e2e_seconds": round(t2 - t0, 1), "e2e_driver_tracking_seconds": round(t1 - t0, 1),
            "e2e_drive_step_seconds": round(t2 - t1, 1), "e2e_drive_render_fps": res.render_fps,
            "e2e_stages": {r.stage: {"seconds": round(r.seconds, 1), "fps": round(r.fps, 1)} for r in results}}


def figures(out: dict, command: str):  # noqa: ANN201 - {key: Figure}
    """The benchmark record's figures of a finished (or partly finished) run's JSON."""
    from stages.bench.record import Figure

    date, device = out.get("date") or "", out.get("machine") or out["device"]
    figs = {}
    if out.get("drive_render_fps"):
        b = out.get("drive_batch")
        figs["drive_render_fps"] = Figure(out["drive_render_fps"], "frames/s", device, command, date,
                                          f"{out['gaussians']:,} Gaussians, {out['frames']} frames, batch {b}; "
                                          f"render_fps by batch {out['render_fps']}, GPU time alone "
                                          f"{out['render_fps_device']}")
    if out.get("drive_fps"):
        figs["drive_fps"] = Figure(out["drive_fps"], "frames/s", device, command, date,
                                   f"{out['frames']}-frame motion file to drive.mp4 (H.264): {out['drive_seconds']} s, "
                                   f"with audio muxed {out.get('drive_audio_seconds')} s; x264 alone "
                                   f"{out.get('encode_fps')} frames/s")
    if out.get("e2e_seconds") and out.get("e2e_frames", 0) >= 10000:
        st = ", ".join(f"{k} {v['seconds']} s" for k, v in out.get("e2e_stages", {}).items())
        figs["drive_e2e_10k_seconds"] = Figure(
            out["e2e_seconds"], "s", device, command, date,
            f"{out['e2e_frames']}-frame synthetic 512x512 driver video to drive.mp4 + side_by_side.mp4, every stage "
            f"({st}; the driver's stages {out.get('e2e_driver_tracking_seconds')} s of wall clock, ingest and landmarks "
            f"side by side; drive step {out['e2e_drive_step_seconds']} s, render {out['e2e_drive_render_fps']} frames/s); "
            "excludes rendering the synthetic clip and gsplat's JIT")
    return figs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=2000)
    ap.add_argument("--batch", type=int, nargs="+", default=[64, 128, 256])
    ap.add_argument("--resolution", type=int, default=512)
    ap.add_argument("--encode-frames", type=int, default=500)
    ap.add_argument("--e2e-frames", type=int, default=0)
    ap.add_argument("--e2e-clip", type=Path, help="with --e2e-frames: this driver video instead of rendering one "
                                                  "(e.g. the 10,000-frame clip `avatar bench` rendered)")
    ap.add_argument("--jobs", type=int, default=16)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--out", type=Path, help="write the JSON here too (rewritten after every part)")
    ap.add_argument("--record", action="store_true", help="write the figures to docs/benchmarks.{json,md}")
    ap.add_argument("--from-json", type=Path, help="with --record: record this saved run instead of running")
    a = ap.parse_args()
    command = " ".join(shlex.quote(x) for x in ["python", "bench/drive_bench.py", *sys.argv[1:]])
    if a.from_json is not None:
        from stages.bench.record import record

        saved = json.loads(a.from_json.read_text())
        figs = figures(saved, saved.get("command", command))
        if a.record:
            record(figs)
        print(json.dumps({k: v.value for k, v in figs.items()}, indent=2))
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    t_start = time.perf_counter()
    device = "cpu" if a.smoke else "cuda"
    renderer = "reference" if a.smoke else "gsplat"
    if a.smoke:
        a.frames, a.batch, a.resolution, a.encode_frames = 8, [4], 64, 8
    work = Path(tempfile.mkdtemp(prefix="drive-bench-"))
    store = LocalStore(work / "store")
    tcfg = TrainConfig(uv_resolution=24, area_samples=800, sh_degree=0, mlp_width=16, mlp_depth=1, pe_freqs=2,
                       test_frames=0, test_fraction=0.2) if a.smoke else TrainConfig(test_frames=0, test_fraction=0.1)
    info = publish_untrained_actor(store, "bench", work / "actor", n_frames=50, train_config=tcfg)
    if a.smoke:  # the driver inherits the actor's preset: tiny accepts a short clip
        from stages.config import PipelineConfig

        store.put_json("actors/bench/config.json", PipelineConfig(preset="tiny").to_dict())
    model, surface = info["model"].to(device).eval(), info["surface"].to(device)
    motion = synthetic_motion(a.frames)
    inputs = DriveInputs(motion.cond(), motion.R, motion.t, info["K"])
    from stages.bench.record import machine_description, today

    out: dict = {"device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu", "frames": a.frames,
                 "resolution": a.resolution, "gaussians": int(model.num_gaussians), "renderer": renderer,
                 "render_fps": {}, "render_fps_device": {}, "machine": machine_description(), "date": today(),
                 "command": command}

    def save() -> None:
        out["wall_seconds"] = round(time.perf_counter() - t_start, 1)
        if a.out is not None:
            a.out.parent.mkdir(parents=True, exist_ok=True)
            a.out.write_text(json.dumps(out, indent=2) + "\n")
    for b in a.batch:
        for _ in render_motion(model, surface, DriveInputs(inputs.cond[:b], inputs.R[:b], inputs.t[:b], inputs.K),
                               resolution=a.resolution, renderer=renderer, device=device, batch=b):
            pass  # warm-up (gsplat's kernels, allocator)
        sync(device)
        t0 = time.perf_counter()
        for fb in render_motion(model, surface, inputs, resolution=a.resolution, renderer=renderer, device=device,
                                batch=b):
            fb.rgb_uint8()
        out["render_fps"][b] = round(a.frames / (time.perf_counter() - t0), 1)
        sync(device)
        t0 = time.perf_counter()
        for fb in render_motion(model, surface, inputs, resolution=a.resolution, renderer=renderer, device=device,
                                batch=b):
            (fb.rgb.clamp(0, 1) * 255).to(torch.uint8)
        sync(device)
        out["render_fps_device"][b] = round(a.frames / (time.perf_counter() - t0), 1)
        save()
    frame = np.random.default_rng(0).integers(0, 255, (a.resolution, a.resolution, 3), np.uint8)
    t0 = time.perf_counter()
    with PreviewWriter(work / "enc.mp4", a.resolution, a.resolution, 25) as w:
        for k in range(a.encode_frames):
            w.write(np.roll(frame, k, axis=1))
    out["encode_fps"] = round(a.encode_frames / (time.perf_counter() - t0), 1)
    best = max(a.batch, key=lambda b: out["render_fps"][b])
    cfg = DriveConfig(resolution=a.resolution, batch=best, renderer=renderer, driver_neutral="median")
    t0 = time.perf_counter()
    res = run_drive(store, "bench", "synthetic", DriveSource(motion, "bench-motion", label="synthetic"), cfg,
                    scratch=work / "scratch", device=device)
    out["drive_seconds"] = round(time.perf_counter() - t0, 2)
    out["drive_fps"] = round(a.frames / out["drive_seconds"], 1)
    out["drive_render_fps"] = res.render_fps
    out["drive_batch"] = best
    save()
    wav = work / "speech.wav"
    with wave.open(str(wav), "wb") as f:
        f.setnchannels(1), f.setsampwidth(2), f.setframerate(16000)
        f.writeframes(np.zeros(int(a.frames / 25 * 16000), np.int16).tobytes())
    t0 = time.perf_counter()
    run_drive(store, "bench", "synthetic-audio", DriveSource(motion, "bench-motion", audio=wav, label="synthetic"),
              cfg, scratch=work / "scratch", device=device)
    out["drive_audio_seconds"] = round(time.perf_counter() - t0, 2)
    save()
    if a.e2e_frames:
        out.update(e2e(store, work, a.e2e_frames, cfg, device, a.jobs, a.e2e_clip))
        out["goal_e2e_seconds"] = 90
        out["goal_e2e_met"] = out["e2e_seconds"] < 90 if a.e2e_frames >= 10000 else None
    out["goal_render_fps"] = 1000
    out["goal_met"] = max(out["render_fps"].values()) >= 1000
    save()
    print(json.dumps(out, indent=2))
    if a.record:
        from stages.bench.record import record

        figs = figures(out, command)
        record(figs)
        print(f"recorded {', '.join(figs) or 'nothing'} in docs/benchmarks.json and docs/benchmarks.md", file=sys.stderr)


if __name__ == "__main__":
    main()
