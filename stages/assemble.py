"""Stage ``assemble``: join the tracked shards, write the FlashAvatar dataset and metrical-tracker
``.frame`` files into the actor's shared ``dataset`` folder, verify it, and report.

Writes (see :mod:`stages.dataset.layout`), under ``actors/<actor>/dataset/``::

    imgs/{k:05d}.jpg, alpha/{k:05d}.jpg, parsing/{k:05d}_{neckhead,mouth}.png   k = 1..N
    checkpoint/{i:05d}.frame                                                     i = 0..N-1 (pairs with k = i+1)
                 (flame.tex: the calibration's FLAME texture coefficients when calibrate fitted
                 in texture space, else zeros)
    tracking.npz                                                                 all parameters, compact
    motion.npz                                                                   per-frame FLAME + camera at 25 fps
                 (docs/motion-format.md; with audio.wav, paired data for speech-to-motion)

and under ``actors/<actor>/assemble/``: ``overlay.mp4`` (mesh and landmarks over the frames) and
``report.json`` (per-frame landmark error, filled frames, seam checks, verification result).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from stages.dataset.frame_file import make_frame, write_frame
from stages.dataset.layout import FRAME_DELTA, IMAGE_SIZE, DatasetLayout, rel_paths
from stages.dataset.verify import verify_dataset
from stages.errors import bad_input
from stages.frameshard import read_shard_tar
from stages.motion.format import write_motion
from stages.tracking.calibration import Calibration, personalised
from stages.tracking.face_assets import FACE_ASSETS, build_model, load_stage_face_model
from stages.tracking.join import JoinedTrack, join_tracks
from stages.tracking.params import FrameParams, project

ASSETS = FACE_ASSETS

PRESETS = {"tiny": {"overlay_every": 2}}

PARAM_KEYS = ("exp", "jaw", "eyes", "eyelids", "rot", "t")


@dataclass
class Config:
    """Attributes:
        overlay_every: draw every n-th frame into ``overlay.mp4`` (0: no overlay video).
        overlay_max_frames: at most this many frames in the overlay (long clips are subsampled further:
            the overlay is a diagnostic, and drawing 10,000 frames would cost minutes).
        check_pixels: decode every image and mask when verifying (sizes, 0/255 masks).
    """

    overlay_every: int = 1
    overlay_max_frames: int = 1500
    check_pixels: bool = True


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


def _write_media(ctx, shards, layout: DatasetLayout, n: int) -> list[tuple[str, Path]]:  # noqa: ANN001
    """Copy frames (ingest) and masks (masks stage) into the layout; return (rel, path) pairs."""
    items: list[tuple[str, Path]] = []
    for d in (layout.imgs_dir, layout.alpha_dir, layout.parsing_dir):
        d.mkdir(parents=True, exist_ok=True)
    for s in shards:
        for source, stage, prefix in ((f"frames/{s.name}.tar", "ingest", "imgs/"), (f"{s.name}.tar", "masks", "")):
            for name, data in read_shard_tar(ctx.fetch(source, stage)):
                rel = prefix + name
                path = layout.root / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
                items.append((rel, path))
    return items


def _overlay(ctx, shards, cfg: Config, track: JoinedTrack, calib: Calibration, data, path: Path) -> int:  # noqa: ANN001
    """Render the overlay video; return frames written."""
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
            for name, blob in read_shard_tar(ctx.fetch(f"frames/{s.name}.tar", "ingest")):
                k = int(name.split(".")[0])
                if k not in pos:
                    continue
                j, row = pos[k], k - first
                err = track.error_px[row]
                caption = f"{k:05d}  err {err:.2f}px" + ("  filled" if track.filled[row] else "")
                yield draw_overlay(decode_rgb(blob), mesh[j].numpy(), faces, lm.points[k - s.start, :, :2],
                                   lmk[j].numpy(), caption)

    return write_video(path, frames(), fps=25.0 / every)


def run(ctx) -> None:  # noqa: ANN001 - StageContext
    cfg: Config = ctx.config
    t0 = time.monotonic()
    shards = ctx.shards()
    n = shards[-1].stop - shards[0].start if shards else 0
    if n <= 0:
        raise bad_input(ctx.key("shards.json", "ingest"), "no frames", "re-run ingest on a video with frames")
    ctx.progress.set_total(n)
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

    with tempfile.TemporaryDirectory(dir=ctx.scratch) as tmp:
        layout = DatasetLayout(Path(tmp) / "dataset")
        items = _write_media(ctx, shards, layout, n)
        for i in range(n):
            frame = make_frame(i, exp=track.params["exp"][i], shape=calib.shape, eyes=track.params["eyes"][i],
                               eyelids=track.params["eyelids"][i], jaw=track.params["jaw"][i], R=track.R[i],
                               t=track.params["t"][i], K=K, camera={k: v[i] for k, v in cams.items()},
                               img_size=(IMAGE_SIZE, IMAGE_SIZE), tex=tex, sh=calib.sh, global_step=i)
            write_frame(layout.frame_path(i), frame)
            items.append((rel_paths(i)["frame"], layout.frame_path(i)))
            if i % 256 == 255:
                ctx.progress.advance(256)
        problems = verify_dataset(layout.root, check_pixels=cfg.check_pixels)
        if problems:
            raise bad_input(problems[0].split(":")[0], f"the assembled dataset is wrong ({len(problems)} problem(s)): "
                            f"{problems[0]}", "re-run the upstream stage that wrote the offending files "
                            "(ingest for imgs, masks for alpha/parsing, track for checkpoints)")
        npz = Path(tmp) / "tracking.npz"
        with open(npz, "wb") as f:
            np.savez(f, frames=track.frames.astype(np.int64), checkpoint=(track.frames - FRAME_DELTA).astype(np.int64),
                     R=track.R, K=K, shape=calib.shape.astype(np.float32), focal=calib.focal, pp=calib.pp,
                     filled=track.filled, error_px=track.error_px,
                     **{f"camera_{k}": v for k, v in cams.items()}, **track.params)
        items.append(("tracking.npz", npz))
        items.append(("motion.npz", write_motion(Path(tmp) / "motion.npz", track.params, track.R, K, calib.shape)))
        ctx.put_files(items, folder="dataset")
        overlay_frames = 0
        if cfg.overlay_every > 0:
            video = Path(tmp) / "overlay.mp4"
            overlay_frames = _overlay(ctx, shards, cfg, track, calib, data, video)
            ctx.put_file("overlay.mp4", video)
    if ctx.progress.done < n:
        ctx.progress.advance(n - ctx.progress.done)
    err = track.error_px[np.isfinite(track.error_px)]
    report = {
        "frames": n, "checkpoints": n, "frame_delta": FRAME_DELTA, "filled_frames": int(track.filled.sum()),
        "filled": np.flatnonzero(track.filled).astype(int).tolist(),
        "landmark_error_px": {"median": float(np.median(err)) if err.size else None,
                              "p95": float(np.percentile(err, 95)) if err.size else None,
                              "max": float(err.max()) if err.size else None,
                              "per_frame": [None if not np.isfinite(e) else round(float(e), 3) for e in track.error_px]},
        "seam_jump_mm": [round(x, 3) for x in track.seam_jump_mm], "verified": True,
        "overlay_frames": overlay_frames, "upstream_trainable": n > 500,
        "focal_px": calib.focal.tolist(), "seconds": round(time.monotonic() - t0, 2),
    }
    ctx.put_json("report.json", report)
    ctx.stats.update({"landmark_error_px_median": report["landmark_error_px"]["median"],
                      "filled_frames": report["filled_frames"]})
    ctx.count_frames(n)
