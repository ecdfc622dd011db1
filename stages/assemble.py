"""Stage ``assemble``: join the tracked shards, write the FlashAvatar dataset and metrical-tracker
``.frame`` files into the actor's shared ``dataset`` folder, verify it, and report.

Writes (see :mod:`stages.dataset.layout`), under ``actors/<actor>/dataset/``::

    imgs/{k:05d}.jpg, alpha/{k:05d}.jpg, parsing/{k:05d}_{neckhead,mouth}.png   k = 1..N
    checkpoint/{i:05d}.frame                                                     i = 0..N-1 (pairs with k = i+1)
                 (flame.tex: the calibration's FLAME texture coefficients when calibrate fitted
                 in texture space, else zeros)
    tracking.npz                                                                 all parameters, compact
    crop.json, bbox.pt, audio.wav (when the video has sound)                     copied from ingest
    motion.npz                                                                   per-frame FLAME + camera at 25 fps
                 (docs/motion-format.md; with audio.wav, paired data for speech-to-motion)

and under ``actors/<actor>/assemble/``: ``overlay.mp4`` (mesh and landmarks over at most
``overlay_max_frames`` frames spread over the clip; optional) and ``report.json`` (per-frame landmark
error, filled frames, seam checks, verification result, time per phase, the head's jitter against a frame-by-frame fit:
:mod:`stages.tracking.jitter`).

Every dataset file is written straight into the store, in ``ctx.jobs`` worker processes, and checked
on the bytes written (:mod:`stages.dataset.writer`); the overlay is drawn meanwhile; the names are
checked last (counts, numbering, pairing). A dataset that fails is removed again and the stage fails
with exit code 2.
"""

from __future__ import annotations

import io
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from stages.dataset.layout import FRAME_DELTA, IMAGE_SIZE, DatasetLayout
from stages.dataset.verify import Listing, structure_problems
from stages.dataset.writer import Chunk, ChunkWriter, FrameConstants, FrameRows, plan_chunks, tar_members
from stages.errors import bad_input
from stages.motion.format import write_motion
from stages.tracking.calibration import Calibration, personalised
from stages.tracking.face_assets import FACE_ASSETS, build_model, load_stage_face_model
from stages.tracking.join import JoinedTrack, join_tracks
from stages.tracking.params import FrameParams, project

ASSETS = FACE_ASSETS

PRESETS = {"tiny": {"overlay_every": 2, "jitter_frames": 30},
           # make demo on a CPU: no frame-by-frame comparison fit (46 s of a 5-minute budget; ours is still reported)
           "demo": {"jitter_frames": 0}}  # + tiny's (config.PRESET_BASE)

PARAM_KEYS = ("exp", "jaw", "eyes", "eyelids", "rot", "t")


@dataclass
class Config:
    """Attributes:
        overlay_every: draw every n-th frame into ``overlay.mp4`` (0: no overlay video).
        overlay_max_frames: at most this many frames in the overlay (long clips are subsampled further:
            the overlay is a diagnostic, and drawing 10,000 frames would cost minutes).
        check_pixels: check every image and mask on the bytes written (sizes, channels, decodable,
            0/255 masks); ``.frame`` contents and the names (counts, numbering, pairing) are always checked.
        jitter_frames: middle frames on which the head's jitter is compared with a frame-by-frame
            fit (:mod:`stages.tracking.jitter`; 0: our jitter only, no fit).
    """

    overlay_every: int = 1
    overlay_max_frames: int = 250
    check_pixels: bool = True
    jitter_frames: int = 100


def frame_tex(calib: Calibration) -> np.ndarray | None:
    """The ``.frame``'s ``flame.tex`` [140]: the calibration's FLAME texture coefficients (zero-padded
    or cut to 140), or None (zeros in the file) when calibrate fitted no texture."""
    if calib.tex is None:
        return None
    out = np.zeros(140, np.float32)
    k = min(140, int(np.size(calib.tex)))
    out[:k] = np.asarray(calib.tex, np.float32).reshape(-1)[:k]
    return out


def _camera_fields(K: np.ndarray, R: np.ndarray, t: np.ndarray) -> dict[str, np.ndarray]:
    """metrical-tracker's PyTorch3D ``camera`` block for every frame: R [N,6], t [N,3], fl [N,1], pp [N,2]."""
    from stages.face.camera import opencv_to_pytorch3d

    n = R.shape[0]
    cam = opencv_to_pytorch3d(torch.as_tensor(K).float().expand(n, 3, 3), torch.as_tensor(R).float(),
                              torch.as_tensor(t).float(), (IMAGE_SIZE, IMAGE_SIZE))
    fl = cam.fl if cam.fl.shape[-1] == 1 else cam.fl.mean(-1, keepdim=True)
    return {"R": cam.R.numpy(), "t": cam.t.numpy(), "fl": fl.numpy(), "pp": cam.pp.numpy()}


def _write_dataset(ctx, shards, cfg: Config, track: JoinedTrack, const: FrameConstants, cams: dict[str, np.ndarray],
                   tars: dict[str, tuple[Path, Path]], during=None,  # noqa: ANN001
                   on_started=None) -> tuple[dict[str, str], list[str], float]:  # noqa: ANN001
    """Write imgs, alpha, parsing and checkpoint/*.frame straight into the store's ``dataset`` folder,
    in ``ctx.jobs`` worker processes, each file checked on its bytes (see :mod:`stages.dataset.writer`).
    ``on_started()`` is called once the workers are forked (so a thread it starts is never forked
    into them), ``during()`` then runs in a thread meanwhile (the overlay). Returns ``({dataset-relative path: sha256},
    problems, time.monotonic() when the last file was written)``; the outputs are recorded in
    ``ctx.outputs`` as they come."""
    rows = FrameRows(0, track.params["exp"], track.params["eyes"], track.params["eyelids"], track.params["jaw"],
                     track.R, track.params["t"], camera=cams)
    chunks = [Chunk(a, b, str(tars[shards[j].name][0]), str(tars[shards[j].name][1]),
                    rows.rows(a - FRAME_DELTA, b - FRAME_DELTA), head)
              for j, a, b, head in plan_chunks([(s.start, s.stop) for s in shards], ctx.jobs)]
    outputs: dict[str, str] = {}
    problems: list[str] = []
    with ChunkWriter(ctx.store, ctx.key("", "dataset").rstrip("/"), chunks, const, workers=ctx.jobs,
                     check_pixels=cfg.check_pixels) as writer, ThreadPoolExecutor(1) as side:
        if on_started is not None:
            on_started()
        pending = side.submit(during) if during is not None else None
        for result in writer.results():
            outputs.update(result.outputs)
            ctx.outputs.update({ctx.key(rel, "dataset"): sha for rel, sha in result.outputs.items()})
            problems += result.problems
            ctx.progress.advance(result.frames)
        written_at = time.monotonic()
        if pending is not None:
            pending.result()
    return outputs, problems, written_at


def overlay_threads() -> int:
    """Threads that decode and draw the overlay's frames: up to 4, beside the dataset writer's
    workers and x264's own threads (the frames and the video do not depend on it)."""
    import os

    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(4, cores // 2))


def _overlay(ctx, shards, cfg: Config, track: JoinedTrack, calib: Calibration, data, path: Path,  # noqa: ANN001
             frames_tars: dict[str, Path]) -> int:
    """Render the overlay video (at most ``cfg.overlay_max_frames`` frames spread over the clip) from
    the ingest tars already fetched; return frames written."""
    from stages.drive.sources import ordered_map
    from stages.tracking.overlay import draw_overlay, write_video
    from stages.tracking.stage_io import decode_rgb, read_landmarks

    model = personalised(build_model(data, "cpu"), torch.as_tensor(calib.shape).float())
    shape0 = torch.zeros(0)
    focal, pp = torch.as_tensor(calib.focal).float(), torch.as_tensor(calib.pp).float()
    faces = np.asarray(data.faces)
    first = int(track.frames[0])
    every = max(cfg.overlay_every, -(-len(track.frames) // max(1, cfg.overlay_max_frames)))

    def frames():
        for s in shards:
            lm = read_landmarks(ctx.fetch(f"{s.name}.npz", "landmarks"), s)
            wanted = [k for k in s.frames if (k - first) % every == 0]
            if not wanted:
                continue
            rows = np.asarray(wanted) - first
            p = FrameParams.from_numpy({k: track.params[k][rows] for k in PARAM_KEYS})
            with torch.no_grad():
                out = model(shape=shape0.expand(len(rows), -1), expression=p.exp, jaw=p.jaw, eyes=p.eyes,
                            eyelids=p.eyelids)
                R = p.R
                mesh, _ = project(out.vertices, R, p.t, focal, pp)
                lmk, _ = project(out.landmarks_mp, R, p.t, focal, pp)
            pos = {k: j for j, k in enumerate(wanted)}
            for name, blob in tar_members(frames_tars[s.name], wanted[0], wanted[-1] + 1, only=pos):
                k = int(name.split(".")[0])
                j, row = pos[k], k - first
                err = track.error_px[row]
                caption = f"{k:05d}  err {err:.2f}px" + ("  filled" if track.filled[row] else "")
                yield blob, mesh[j].numpy(), lm.points[k - s.start, :, :2], lmk[j].numpy(), caption

    def draw(item) -> np.ndarray:  # noqa: ANN001 - (JPEG bytes, mesh, detected, model landmarks, caption)
        blob, mesh_pix, detected, model_lmk, caption = item
        return draw_overlay(decode_rgb(blob), mesh_pix, faces, detected, model_lmk, caption)

    # decoding and drawing (OpenCV: the GIL released) in threads, in order, beside the encoder
    threads = overlay_threads()
    drawn = ordered_map(draw, frames(), threads=threads, window=2 * threads)
    return write_video(path, drawn, fps=25.0 / every, preset="ultrafast")  # a diagnostic: speed over size


def run(ctx) -> None:  # noqa: ANN001 - StageContext
    cfg: Config = ctx.config
    t0 = time.monotonic()
    shards = ctx.shards()
    n = shards[-1].stop - shards[0].start if shards else 0
    if n <= 0:
        raise bad_input(ctx.key("shards.json", "ingest"), "no frames", "re-run ingest on a video with frames")
    ctx.progress.set_total(n)
    phases: dict[str, float] = {}
    tracks = []
    for p in ctx.fetch_many([f"{s.name}.npz" for s in shards], "track"):
        with np.load(p, allow_pickle=False) as z:
            tracks.append({k: z[k] for k in z.files})
    try:
        track = join_tracks(tracks)
    except ValueError as err:
        raise bad_input(ctx.key("", "track"), str(err), "re-run the track stage for every shard") from None
    if int(track.frames[0]) != FRAME_DELTA or len(track.frames) != n:
        raise bad_input(ctx.key("", "track"), f"tracked frames {track.frames[0]}..{track.frames[-1]} but ingest has 1..{n}",
                        "re-run track for this actor")
    calib_path = ctx.fetch("calibration.npz", "calibrate")
    calib = Calibration.load(calib_path)
    K = np.array([[calib.focal[0], 0, calib.pp[0]], [0, calib.focal[1], calib.pp[1]], [0, 0, 1]], np.float32)
    tex = frame_tex(calib)
    cams = _camera_fields(K, track.R, track.params["t"])
    data = load_stage_face_model(ctx)

    phases["inputs"] = round(time.monotonic() - t0, 3)

    # the shard tars, each verified against its manifest once (in parallel), then read in place
    t1 = time.monotonic()
    frames_tars = ctx.fetch_many([f"frames/{s.name}.tar" for s in shards], "ingest")
    masks_tars = ctx.fetch_many([f"{s.name}.tar" for s in shards], "masks")
    tars = {s.name: (f, m) for s, f, m in zip(shards, frames_tars, masks_tars)}
    phases["fetch_tars"] = round(time.monotonic() - t1, 3)

    # the steadiness figures (a frame-by-frame fit of cfg.jitter_frames frames: a batched
    # Levenberg-Marquardt solve, stages.tracking.frame_lm) are computed in a thread while the dataset is written
    from stages.tracking.jitter import steadiness, window
    from stages.tracking.stage_io import fetch_all_landmarks

    win = window(n, cfg.jitter_frames)
    near = [s for s in shards if s.start <= win.stop and s.stop > win.start + 1] if win.stop - win.start >= 3 else []
    steady_in = {"landmarks": fetch_all_landmarks(ctx, near) if near else None}

    def steady_job() -> dict:
        t2, c2 = time.monotonic(), time.thread_time()
        out = steadiness(ctx, track.R, track.params["t"], calib.shape, calib.focal, calib.pp, data, cfg.jitter_frames,
                         **steady_in)
        phases["steadiness"] = round(time.monotonic() - t2, 3)
        phases["steadiness_thread_cpu"] = round(time.thread_time() - c2, 3)  # what a loaded machine does not inflate
        return out

    steady_pool = ThreadPoolExecutor(1)
    steady_future: list = []  # started once the dataset writer's workers are forked (no thread is forked with them)
    with tempfile.TemporaryDirectory(dir=ctx.scratch) as tmp:
        overlay_frames = [0]
        video = Path(tmp) / "overlay.mp4"

        def overlay() -> None:
            t2 = time.monotonic()
            overlay_frames[0] = _overlay(ctx, shards, cfg, track, calib, data, video, {k: v[0] for k, v in tars.items()})
            phases["overlay"] = round(time.monotonic() - t2, 3)

        const = FrameConstants(shape=calib.shape, K=K, tex=tex, sh=calib.sh, img_size=(IMAGE_SIZE, IMAGE_SIZE))
        t1 = time.monotonic()
        written, problems, written_at = _write_dataset(
            ctx, shards, cfg, track, const, cams, tars, during=overlay if cfg.overlay_every > 0 else None,
            on_started=lambda: steady_future.append(steady_pool.submit(steady_job)))
        phases["write_and_check"] = round(written_at - t1, 3)
        phases["write_and_overlay"] = round(time.monotonic() - t1, 3)
        # what is left of the verification needs only the names: what the store holds now
        t1 = time.monotonic()
        prefix = ctx.key("", "dataset")
        listing = Listing.of_paths(k[len(prefix):] for k in ctx.store.list(prefix))
        problems += structure_problems(DatasetLayout(Path(prefix.rstrip("/"))), listing)
        phases["check_names"] = round(time.monotonic() - t1, 3)
        if problems:
            for rel in written:  # nothing half-assembled stays behind (no manifest would vouch for it)
                ctx.store.delete(prefix + rel)
            raise bad_input(f"{ctx.store.uri}/{prefix.rstrip('/')}", f"the assembled dataset is wrong "
                            f"({len(problems)} problem(s)): {problems[0]}", "re-run the upstream stage that wrote "
                            "the offending files (ingest for imgs, masks for alpha/parsing, track for checkpoints)")
        buf = io.BytesIO()
        np.savez(buf, frames=track.frames.astype(np.int64), checkpoint=(track.frames - FRAME_DELTA).astype(np.int64),
                 R=track.R, K=K, shape=calib.shape.astype(np.float32), focal=calib.focal, pp=calib.pp,
                 filled=track.filled, error_px=track.error_px,
                 **{f"camera_{k}": v for k, v in cams.items()}, **track.params)
        ctx.put_bytes("tracking.npz", buf.getvalue(), folder="dataset")
        ctx.put_file("motion.npz", write_motion(Path(tmp) / "motion.npz", track.params, track.R, K, calib.shape),
                     folder="dataset")
        for rel in ("crop.json", "bbox.pt", "audio.wav"):  # the crop in source pixels, the sound (when any)
            if rel in ctx.input_keys("ingest", rel):
                ctx.put_file(rel, ctx.fetch(rel, "ingest"), folder="dataset")
        overlay_frames = overlay_frames[0]
        if overlay_frames:
            ctx.put_file("overlay.mp4", video)
    if ctx.progress.done < n:
        ctx.progress.advance(n - ctx.progress.done)
    err = track.error_px[np.isfinite(track.error_px)]
    t1 = time.monotonic()
    try:
        steady = steady_future[0].result() if steady_future else steady_job()
    finally:
        steady_pool.shutdown()
    phases["steadiness_wait"] = round(time.monotonic() - t1, 3)
    report = {
        "frames": n, "checkpoints": n, "frame_delta": FRAME_DELTA, "filled_frames": int(track.filled.sum()),
        "filled": np.flatnonzero(track.filled).astype(int).tolist(),
        "landmark_error_px": {"median": float(np.median(err)) if err.size else None,
                              "p95": float(np.percentile(err, 95)) if err.size else None,
                              "max": float(err.max()) if err.size else None,
                              "per_frame": [None if not np.isfinite(e) else round(float(e), 3) for e in track.error_px]},
        "seam_jump_mm": [round(x, 3) for x in track.seam_jump_mm], "verified": True,
        "overlay_frames": overlay_frames, "upstream_trainable": n > 500,
        "focal_px": calib.focal.tolist(), "steadiness": steady, "seconds": round(time.monotonic() - t0, 2),
        "phases_s": phases,
    }
    ctx.put_json("report.json", report)
    ctx.stats.update({"landmark_error_px_median": report["landmark_error_px"]["median"],
                      "filled_frames": report["filled_frames"], "phases_s": phases, "workers": ctx.jobs,
                      "steadiness": steady})
    ctx.count_frames(n)
