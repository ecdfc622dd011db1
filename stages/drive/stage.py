"""The drive step: driver motion -> actor motion -> rendered, encoded, with sound.

Writes, under ``actors/<actor>/drive/<name>/``: ``drive.mp4`` (H.264, 25 fps, the output size,
AAC audio when there is a sound source), ``motion.npz`` (the transferred parameters and cameras,
:mod:`stages.motion.format`), ``side_by_side.mp4`` (driver crop | avatar; video drivers only),
``report.json``, and last ``manifest.json``. A finished drive whose manifest matches (same avatar,
driver, audio and settings) is skipped; one with other inputs is never overwritten.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from stages.config import digest_of
from stages.errors import BadInput
from stages.motion.format import FPS, Motion, motion_bytes
from stages.motion.transfer import POSES, TRANSFERS, neutral_of, transfer_expression, transfer_pose, zero_neutral
from stages.runner.context import actor_key
from stages.runner.manifest import MANIFEST, Manifest
from stages.runner.progress import Progress
from stages.store.base import Store, sha256_file

log = logging.getLogger("avatar.drive")


@dataclass
class DriveConfig:
    """Attributes:
        transfer: ``relative`` (driver minus its neutral plus the actor's) or ``absolute``.
        pose: ``relative``, ``actor`` or ``fixed`` (see :mod:`stages.motion.transfer`).
        driver_neutral: ``median`` (over the driver's clip), ``zero`` (FLAME's zero; the default for
            motion files) or a frame index.
        resolution: output width = height (px).
        render_resolution: the size the avatar is rendered at before the frames are scaled to
            ``resolution`` (px); 0 (default): ``resolution`` on a GPU, on a CPU at most three times the
            avatar's training resolution (:func:`stages.drive.render.render_size`).
        batch: frames per render call.
        renderer: ``auto`` (gsplat on CUDA, else the reference), ``gsplat`` or ``reference``.
        crf: x264 quality of the outputs.
        full_frame: also write ``drive_full.mp4``: the avatar rendered at the crop's true size and
            composited into the actor's own source footage at source resolution (frame ``k`` over source
            frame ``k``, looped back and forth past its end; :mod:`stages.video.fullframe`), with the
            drive's sound.
    """

    transfer: str = "relative"
    pose: str = "relative"
    driver_neutral: str = "median"
    resolution: int = 512
    render_resolution: int = 0
    batch: int = 32
    renderer: str = "auto"
    crf: int = 20
    full_frame: bool = False

    def check(self) -> None:
        if self.transfer not in TRANSFERS:
            raise BadInput(f"--transfer {self.transfer}: unknown; use one of {', '.join(TRANSFERS)}")
        if self.pose not in POSES:
            raise BadInput(f"--pose {self.pose}: unknown; use one of {', '.join(POSES)}")
        if self.driver_neutral not in ("median", "zero") and not self.driver_neutral.isdigit():
            raise BadInput(f"--driver-neutral {self.driver_neutral}: use median, zero or a frame number (from 0)")
        if not 16 <= self.resolution <= 4096 or self.resolution % 2:
            raise BadInput(f"--resolution {self.resolution}: use an even size between 16 and 4096")
        if self.render_resolution and not 16 <= self.render_resolution <= self.resolution:
            raise BadInput(f"--render-resolution {self.render_resolution}: use 0 (automatic) or a size between 16 "
                           f"and --resolution ({self.resolution})")


@dataclass
class DriveSource:
    """What drives the avatar.

    Attributes:
        motion: the driver's motion at 25 fps.
        digest: identifies it (the driver's track outputs digest, or the motion file's sha256).
        audio: a file whose first audio stream goes into ``drive.mp4``, or None.
        frames: a function yielding the driver's 512x512 crops in order (for ``side_by_side.mp4``),
            or None (motion files).
        label: for logs and the report (``driver NAME`` or the motion file's name).
    """

    motion: Motion
    digest: str
    audio: Path | None = None
    frames: Callable[[], Iterator[np.ndarray]] | None = None
    label: str = ""


@dataclass
class DriveResult:
    """Attributes: status (``ran`` or ``skipped``), folder (store key), frames, seconds, render_fps."""

    status: str
    folder: str
    frames: int = 0
    seconds: float = 0.0
    render_fps: float = 0.0


def drive_folder(actor: str, name: str) -> str:
    return actor_key(actor, "drive", name)


def actor_motion(source: DriveSource, actor, cfg: DriveConfig) -> Motion:  # noqa: ANN001 - ActorSide
    """The transferred motion with the cameras of ``cfg.pose`` and the actor's intrinsics."""
    drv = source.motion
    if cfg.driver_neutral == "zero":
        dn = zero_neutral()
    elif cfg.driver_neutral == "median":
        dn = neutral_of(drv)
    else:
        k = int(cfg.driver_neutral)
        if k >= len(drv):
            raise BadInput(f"--driver-neutral {k}: the driver has frames 0..{len(drv) - 1}; pick one of those")
        dn = neutral_of(drv, k)
    out = transfer_expression(drv, dn, actor.neutral, cfg.transfer)
    R, t = transfer_pose(drv, actor.R, actor.t, actor.K, cfg.pose)
    return replace(out, R=R, t=t, K=actor.K, image_size=512, fps=FPS, shape=None)


def run_drive(store: Store, actor: str, name: str, source: DriveSource, cfg: DriveConfig, *, scratch: Path,
              device: str = "cpu", on_frames: Callable[[np.ndarray, np.ndarray, int], None] | None = None) -> DriveResult:
    """Drive ``actor``'s avatar with ``source``; outputs under ``actors/<actor>/drive/<name>/``.

    ``on_frames(rgb [B,H,W,3] uint8, alpha [B,H,W] float32, start)`` (optional) sees every rendered
    batch, e.g. for a compositor.
    """
    import torch

    from stages.drive.render import DriveInputs, render_motion, render_size
    from stages.drive.sources import load_actor
    from stages.face.model import load_face_model
    from stages.gauss.data import background_rgb
    from stages.drive.encode import BackgroundWriter, side_by_side_composer
    from stages.gauss.surface import flame_surface
    from stages.gauss.trainer import check_face_model, choose_renderer, load_avatar
    from stages.video.audio import mux_audio, stream_duration

    cfg.check()
    t_start = time.monotonic()
    folder = drive_folder(actor, name)
    mkey = f"{folder}/{MANIFEST}"
    side = load_actor(store, actor, scratch)
    inputs = {"avatar": side.avatar_sha, "driver": source.digest,
              "audio": sha256_file(source.audio) if source.audio is not None else "none"}
    config_digest = digest_of(cfg)
    try:
        done = Manifest.from_dict(store.get_json(mkey))
    except KeyError:
        done = None
    if done is not None:
        if done.matches(inputs, cfg):
            log.info("drive %s for %s: already finished (manifest matches), skipped", name, actor)
            return DriveResult("skipped", folder)
        raise BadInput(f"{store.uri}/{mkey}: drive {name!r} of actor {actor!r} already finished with another driver, "
                       f"audio or settings, and finished outputs are never overwritten; pass another --name")

    full_inputs = _full_frame_inputs(store, actor, scratch) if cfg.full_frame else None  # refused before any work
    motion = actor_motion(source, side, cfg)
    if source.audio is not None:
        a_dur = stream_duration(source.audio, "audio")
        if a_dur is None:
            raise BadInput(f"{source.audio}: no audio stream; give a file with sound (WAV, MP3, AAC) or leave --audio out")
        n_audio = max(1, int(round(a_dur * FPS)))
        if n_audio < len(motion):
            log.warning("audio %s covers %d frames (%.2f s), the motion %d: trimmed to %d frames",
                        source.audio.name, n_audio, a_dur, len(motion), n_audio)
            motion = motion.select(slice(0, n_audio))

    resolved = "cuda" if device == "cuda" else "cpu"
    renderer = choose_renderer(cfg.renderer, resolved)
    model, meta = load_avatar(side.avatar_path)
    surface = flame_surface(load_face_model(side.flame_path), meta["shape"].numpy())
    check_face_model(meta, surface, side.avatar_path)
    model, surface = model.to(resolved).eval(), surface.to(resolved)
    n = len(motion)
    work = scratch / "drive"
    work.mkdir(parents=True, exist_ok=True)
    silent, video, sbs = work / "silent.mp4", work / "drive.mp4", work / "side_by_side.mp4"
    driver_frames = source.frames() if source.frames is not None else None
    render_s = 0.0
    res = cfg.resolution
    trained_at = meta.get("train_config", {}).get("resolution")
    rsize = render_size(res, resolved, trained_at, cfg.render_resolution)
    if rsize != res:
        log.info("drive %s: rendering at %d px, scaled to %d (the avatar was trained at %s px; "
                 "render_resolution sets it)", name, rsize, res, trained_at)
    with Progress(f"drive {name}", n) as progress, \
            BackgroundWriter(silent, res, res, int(FPS), crf=cfg.crf) as writer:
        # driver crop | avatar: the crops are decoded and composed in the side-by-side writer's thread
        sbs_writer = (BackgroundWriter(sbs, 2 * res, res, int(FPS), crf=cfg.crf,
                                       compose=side_by_side_composer(driver_frames, res, _fit))
                      if driver_frames is not None else None)
        try:
            batches = render_motion(model, surface, DriveInputs(motion.cond(), motion.R, motion.t, motion.K),
                                    resolution=res, background=background_rgb(side.background), renderer=renderer,
                                    device=resolved, batch=cfg.batch, render_resolution=rsize)
            while True:
                t0 = time.perf_counter()
                fb = next(batches, None)
                if fb is None:
                    break
                rgb = fb.rgb_uint8()  # synchronises the device: render time ends here
                render_s += time.perf_counter() - t0
                if on_frames is not None:
                    on_frames(rgb, fb.alpha.float().cpu().numpy(), fb.start)
                writer.write(rgb)
                if sbs_writer is not None:
                    sbs_writer.write(rgb)
                progress.advance(len(rgb))
        finally:
            if sbs_writer is not None:
                sbs_writer.close()
    if source.audio is not None:
        mux_audio(silent, source.audio, video)
    else:
        silent.replace(video)
    full_report = None
    if full_inputs is not None:
        full_report = _render_full_frame(motion, model, surface, renderer, resolved, cfg, full_inputs,
                                         work / "drive_full.mp4", source.audio)
    mfile = work / "motion.npz"
    mfile.write_bytes(motion_bytes(motion))
    seconds = time.monotonic() - t_start
    report = {"actor": actor, "name": name, "source": source.label, "frames": n, "fps": FPS, "resolution": res,
              "render_resolution": rsize,
              "renderer": renderer, "device": resolved, "config": asdict(cfg), "audio": bool(source.audio),
              "render_seconds": round(render_s, 3), "render_fps": round(n / render_s, 2) if render_s else None,
              "seconds": round(seconds, 3), **({"full_frame": full_report} if full_report else {})}
    outputs = {f"{folder}/drive.mp4": store.put_file(f"{folder}/drive.mp4", video),
               f"{folder}/motion.npz": store.put_file(f"{folder}/motion.npz", mfile)}
    if full_report is not None:
        outputs[f"{folder}/drive_full.mp4"] = store.put_file(f"{folder}/drive_full.mp4", work / "drive_full.mp4")
    if sbs_writer is not None:
        outputs[f"{folder}/side_by_side.mp4"] = store.put_file(f"{folder}/side_by_side.mp4", sbs)
    outputs[f"{folder}/report.json"] = store.put_bytes(f"{folder}/report.json",
                                                       (json.dumps(report, indent=2) + "\n").encode())
    store.put_json(mkey, Manifest(stage="drive", actor=actor, inputs=inputs, config_digest=config_digest,
                                  config=asdict(cfg), outputs=outputs,
                                  stats={"frames": n, "seconds": round(seconds, 3),
                                         "render_fps": report["render_fps"]}).to_dict())
    log.info("drive %s: %d frames in %.1f s (render %.1f frames/s, %s on %s)", name, n, seconds,
             report["render_fps"] or 0.0, renderer, resolved)
    return DriveResult("ran", folder, n, seconds, report["render_fps"] or 0.0)


def _full_frame_inputs(store: Store, actor: str, scratch: Path) -> tuple[Path, Path]:
    """The actor's source video and crop record (local copies), or BadInput when the actor was
    assembled before crop records existed."""
    from stages.runner.context import actor_key

    crop_key = actor_key(actor, "dataset", "crop.json")
    if not store.exists(crop_key):
        raise BadInput(f"{store.uri}/{crop_key}: actor {actor!r} has no crop record (assembled by an older "
                       "version), so the avatar cannot be put back into its footage; drop --full-frame, or run "
                       "the video again under a new --actor name")
    where = scratch / "actor-source"
    return (store.fetch(actor_key(actor, "input", "video.mp4"), where), store.fetch(crop_key, where))


def _render_full_frame(motion: Motion, model, surface, renderer: str, device: str, cfg: DriveConfig,  # noqa: ANN001
                       inputs: tuple[Path, Path], out: Path, audio: Path | None) -> dict:
    """``drive_full.mp4``: the motion rendered at the crop's size into the actor's own footage."""
    import torch

    from stages.gauss.fullframe_render import render_full_frame, with_audio
    from stages.video.crop_record import CropRecord

    video, crop = inputs
    n = len(motion)
    K = np.broadcast_to(np.asarray(motion.K, np.float32), (n, 3, 3))
    report = render_full_frame(model, surface, torch.as_tensor(motion.cond(), dtype=torch.float32),
                               torch.as_tensor(np.asarray(motion.R, np.float32)),
                               torch.as_tensor(np.asarray(motion.t, np.float32)), torch.as_tensor(K.copy()),
                               list(range(n)), out, video, CropRecord.load(crop), renderer=renderer, device=device,
                               batch=max(1, min(cfg.batch, 16)), crf=cfg.crf)
    report["audio"] = with_audio(out, audio, None, n)
    return report


def _fit(img: np.ndarray, size: int) -> np.ndarray:
    if img.shape[:2] == (size, size):
        return img
    import cv2

    return cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
