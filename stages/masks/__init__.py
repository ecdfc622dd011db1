"""The ``masks`` stage: alpha matte and neckhead/mouth parsing per frame, per shard.

Inputs: ``ingest/frames/<shard>.tar`` (512x512 RGB JPEGs ``00001.jpg ...``) and
``landmarks/<shard>.npz`` (``frames`` int32 [N], ``points`` float32 [N,478,3] in crop pixels,
``ok`` bool [N]). Output: ``masks/<shard>.tar`` holding, for every frame ``k`` of the shard,
``alpha/{k:05d}.jpg`` (grayscale JPEG matte 0..255), ``parsing/{k:05d}_neckhead.png`` and
``parsing/{k:05d}_mouth.png`` (grayscale PNG, values 0 or 255): FlashAvatar's formats
(:mod:`stages.masks.encode`).

Backends (``Config.matting`` / ``Config.parsing``):

- ``default`` (offline, nothing downloaded): MediaPipe selfie segmentation refined by a guided
  filter into a soft matte; neckhead = matte > 0.5, dilated, inside the head-and-neck region
  (:mod:`stages.masks.neck`: above the jaw, and below it the neck down to the collar, its
  geometry smoothed over the shard's frames), largest connected piece; mouth = the inner-lip
  polygon (:mod:`stages.masks.landmark_masks`). ``default`` parsing also works with ``rvm`` matting.
- ``rvm``: the user's RobustVideoMatting ONNX export (asset kind ``matting``), streams batched,
  each warmed up on the frames before it (the previous shard's tail at a shard seam).
- ``bisenet``: the user's 19-class face-parsing ONNX model (asset kind ``parsing``), classes mapped
  to masks by ``neckhead_classes`` / ``mouth_classes``.
- ``auto`` (the default): ``rvm``/``bisenet`` where the user chose that asset, else ``default``.

Frames whose landmarks failed use the nearest good frame's landmarks; a shard with no face at all
gets neckhead = the whole person and an empty mouth (counted in the shard's stats).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stages.errors import bad_input
from stages.frameshard import write_shard_tar
from stages.masks.encode import read_frame_jpegs
from stages.masks.landmark_masks import fill_missing
from stages.masks.pipeline import MaskSettings, compute_masks
from stages.runner.context import StageContext
from stages.runner.shards import Shard

ASSETS = ("matting", "parsing")
WORKER_PRELOAD = ("cv2", "mediapipe")  # imported once by the local run's forkserver
PROCESSES_PER_GPU = 8  # ONNX models are small: eight shard processes share one GPU well

PRESETS = {
    "tiny": {"batch_size": 4, "rvm_warmup": 4, "workers": 2},
}

MATTING_CHOICES = ("auto", "default", "rvm")
PARSING_CHOICES = ("auto", "default", "bisenet")


@dataclass
class Config:
    """Settings of the masks stage.

    Attributes:
        matting: ``auto`` (rvm if a ``matting`` asset is chosen, else default), ``default``, ``rvm``.
        parsing: ``auto`` (bisenet if a ``parsing`` asset is chosen, else default), ``default``,
            ``bisenet``.
        batch_size: frames per model step; for RVM the number of parallel streams per shard (at
            most; streams are at least ``4 * rvm_warmup`` frames long).
        workers: threads for decoding, per-frame matting and encoding (0: CPU count / jobs, at most 16).
        onnx_device: onnxruntime provider: ``auto`` (CUDA where present), ``cuda``, ``cpu``.
        rvm_warmup: frames each RVM stream runs before its first output (the previous shard's last
            frames at a shard seam), so seams do not flicker.
        rvm_downsample_ratio: RVM's ``downsample_ratio`` (1.0 suits 512x512 crops).
        selfie_model: MediaPipe selfie segmentation model, 0 general (256x256), 1 landscape.
        matte_radius: guided-filter radius (pixels) of the default matte; 0 disables refinement.
        matte_eps: guided-filter regulariser of the default matte.
        neck_margin: landmark parsing: neck kept below the chin at most, in face heights (forehead
            to chin).
        neck_half_width: landmark parsing: half-width of the band below the chin the neck is
            looked for in, in face widths.
        neck_skin: landmark parsing: the neck stops where the face's skin colour stops (the
            collar; drops shirts, ties, shoulders); else a fixed U ``neck_margin`` deep.
        neckhead_dilate: landmark parsing: pixels the neckhead grows beyond ``alpha > 0.5``.
        neckhead_classes: BiSeNet classes merged into neckhead (default 1-15 and 17: not
            background, cloth or hat).
        mouth_classes: BiSeNet classes merged into mouth (default 11, the inner mouth).
        alpha_quality: JPEG quality of ``alpha/*.jpg``.
    """

    matting: str = "auto"
    parsing: str = "auto"
    batch_size: int = 16
    workers: int = 0
    onnx_device: str = "auto"
    rvm_warmup: int = 10
    rvm_downsample_ratio: float = 1.0
    selfie_model: int = 0
    matte_radius: int = 4
    matte_eps: float = 1e-4
    neck_margin: float = 0.6
    neck_half_width: float = 0.6
    neck_skin: bool = True
    neckhead_dilate: int = 2
    neckhead_classes: list[int] = field(default_factory=lambda: [*range(1, 16), 17])
    mouth_classes: list[int] = field(default_factory=lambda: [11])
    alpha_quality: int = 95

    def settings(self) -> MaskSettings:
        return MaskSettings(batch_size=self.batch_size, rvm_warmup=self.rvm_warmup, neck_margin=self.neck_margin,
                            neck_half_width=self.neck_half_width, neck_skin=self.neck_skin,
                            neckhead_dilate=self.neckhead_dilate, alpha_quality=self.alpha_quality)


def _check(cfg: Config) -> None:
    where = "masks config"
    if cfg.matting not in MATTING_CHOICES:
        raise bad_input(where, f"matting {cfg.matting!r} is unknown", f"use one of {', '.join(MATTING_CHOICES)}")
    if cfg.parsing not in PARSING_CHOICES:
        raise bad_input(where, f"parsing {cfg.parsing!r} is unknown", f"use one of {', '.join(PARSING_CHOICES)}")
    if cfg.batch_size < 1 or cfg.rvm_warmup < 0 or cfg.workers < 0:
        raise bad_input(where, "batch_size must be >= 1, rvm_warmup and workers >= 0", "fix the masks settings")
    for name in ("neckhead_classes", "mouth_classes"):
        bad = [c for c in getattr(cfg, name) if not 0 <= int(c) < 19]
        if bad:
            raise bad_input(where, f"{name} has {bad}, outside BiSeNet's classes 0..18", "use class ids 0..18")


def backends(cfg: Config, assets: dict) -> tuple[str, str]:
    """``(matting, parsing)`` after resolving ``auto`` against the chosen assets (kind -> sha256)."""
    matting = cfg.matting if cfg.matting != "auto" else ("rvm" if assets.get("matting") else "default")
    parsing = cfg.parsing if cfg.parsing != "auto" else ("bisenet" if assets.get("parsing") else "default")
    return matting, parsing


def processes_per_gpu(cfg: Config, assets: dict) -> int:
    """Shard processes per GPU in a local run: with no network on the GPU (default matting and
    parsing) the stage is CPU-bound, so 0 (one process per job, every core busy); else
    :data:`PROCESSES_PER_GPU`."""
    return 0 if backends(cfg, assets) == ("default", "default") else PROCESSES_PER_GPU


def _workers(ctx: StageContext) -> int:
    """Threads per shard process: the configured number, else the cores per process and at least
    2 (OpenCV and MediaPipe release the GIL; two threads keep a core busy while the other waits,
    and keep the last shards of a run, when fewer processes are left than cores, going faster)."""
    if ctx.config.workers:
        return int(ctx.config.workers)
    return max(2, min(16, (os.cpu_count() or 1) // max(1, ctx.jobs)))


def make_matting(ctx: StageContext, threads: int):
    """The matting backend the config and the chosen assets ask for."""
    from stages.masks.backends.mediapipe_default import SelfieMatting, SelfieParams

    cfg: Config = ctx.config
    path = ctx.asset("matting")
    kind = backends(cfg, {"matting": path})[0]
    if kind == "rvm":
        if path is None:
            raise bad_input("masks config", "matting is rvm but no matting model was chosen",
                            "pass the model with: avatar run --matting rvm_mobilenetv3_fp32.onnx ..., "
                            "or set masks matting to default")
        from stages.masks.backends.rvm import RvmMatting

        return RvmMatting(path, cfg.onnx_device, cfg.rvm_downsample_ratio, threads)
    return SelfieMatting(SelfieParams(cfg.selfie_model, cfg.matte_radius, cfg.matte_eps))


def make_parsing(ctx: StageContext, threads: int):
    """The BiSeNet parser when the config and the chosen assets ask for one, else ``None``."""
    cfg: Config = ctx.config
    path = ctx.asset("parsing")
    kind = backends(cfg, {"parsing": path})[1]
    if kind != "bisenet":
        return None
    if path is None:
        raise bad_input("masks config", "parsing is bisenet but no parsing model was chosen",
                        "pass the model with: avatar run --parsing bisenet.onnx ..., or set masks parsing to default")
    from stages.masks.backends.bisenet import BiSeNetParsing

    return BiSeNetParsing(path, cfg.onnx_device, cfg.neckhead_classes, cfg.mouth_classes, threads=threads)


def load_points(path: Path, numbers: range) -> tuple[dict[int, np.ndarray], int]:
    """Landmarks of the shard's frames, failed frames filled from the nearest good one.

    Returns:
        ``({frame number: float32 [478,3]}, frames without a face)``; the dict is empty when no
        frame of the shard had a face.

    Raises:
        BadInput: the file lacks ``frames``/``points``/``ok`` or does not cover the shard.
    """
    try:
        with np.load(path) as z:
            frames, points, ok = z["frames"], z["points"], z["ok"]
    except (KeyError, ValueError, OSError) as e:
        raise bad_input(path, f"unreadable landmarks ({e})", "re-run the landmarks stage") from None
    if points.ndim != 3 or points.shape[1:] != (478, 3) or len(frames) != len(points) or len(ok) != len(points):
        raise bad_input(path, f"points have shape {points.shape}, expected [N,478,3] with N frames",
                        "re-run the landmarks stage")
    if sorted(int(f) for f in frames) != list(numbers):
        raise bad_input(path, f"covers frames {int(frames.min()) if len(frames) else '-'}.."
                        f"{int(frames.max()) if len(frames) else '-'} ({len(frames)}), the shard is "
                        f"{numbers.start}..{numbers.stop - 1}", "re-run the landmarks stage")
    order = np.argsort(frames)
    filled, usable = fill_missing(points[order], ok[order])
    missing = int((~np.asarray(ok, bool)).sum())
    if not usable.any():
        return {}, missing
    return {int(k): filled[i] for i, k in enumerate(frames[order])}, missing


def run_shard(ctx: StageContext, shard: Shard) -> None:
    """Masks of one shard: ``masks/<shard>.tar`` (see the module docstring)."""
    cfg: Config = ctx.config
    _check(cfg)
    jpegs = read_frame_jpegs(ctx.fetch(f"frames/{shard.name}.tar", "ingest"), shard.frames)
    points, missing = load_points(ctx.fetch(f"{shard.name}.npz", "landmarks"), shard.frames)
    workers = _workers(ctx)
    matting = make_matting(ctx, threads=workers)
    parsing = make_parsing(ctx, threads=workers)

    from stages.masks.backends.rvm import RvmMatting

    if isinstance(matting, RvmMatting) and cfg.rvm_warmup > 0 and shard.index > 0:
        prev = next((s for s in ctx.shards() if s.index == shard.index - 1), None)
        if prev is not None:
            tail = range(max(prev.start, prev.stop - cfg.rvm_warmup), prev.stop)
            before = read_frame_jpegs(ctx.fetch(f"frames/{prev.name}.tar", "ingest"))
            jpegs.update({k: before[k] for k in tail if k in before})

    ctx.progress.set_total(len(shard))

    def advance(n: int) -> None:
        ctx.progress.advance(n)
        ctx.count_frames(n)

    try:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="masks") as pool:
            members = compute_masks(jpegs, shard.frames, points.get, matting, parsing, cfg.settings(), pool,
                                    advance)
    finally:
        close = getattr(matting, "close", None)
        if close is not None:
            close()

    out = ctx.scratch / f"masks-{shard.name}.tar"
    write_shard_tar(out, (m for k in shard.frames for m in members[k]))
    ctx.put_file(f"{shard.name}.tar", out)
    out.unlink(missing_ok=True)
    ctx.stats.update({
        "matting": "rvm" if isinstance(matting, RvmMatting) else "default",
        "parsing": "bisenet" if parsing is not None else "default",
        "onnx_providers": (matting.session.get_providers() if isinstance(matting, RvmMatting) else
                           parsing.session.get_providers() if parsing is not None else []),
        "frames_without_landmarks": missing,
        "shard_without_face": not points,
    })
