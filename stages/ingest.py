"""The ingest stage: the user's video in, 512x512 face-centred frames at 25 fps out, in shards.

Steps:

1. probe the video (codec, size, rotation) and index its frame timestamps from the demuxer;
2. choose the source frame of every 25 fps output frame exactly like ``ffmpeg -vf fps=25``
   (:mod:`stages.video.resample`); output frames are numbered from 00001;
3. observe the face (MediaPipe detection + FaceMesh box) on ``detect_samples`` frames spread over
   the video, in ``ctx.jobs`` worker processes;
4. choose ONE crop for the whole video (:mod:`stages.video.crop`), check the input is usable;
5. cut, resize and JPEG-encode every output frame, one worker process per shard, each decoding
   only its own time range (seeking there): memory stays bounded for any video length.

Outputs under ``actors/<actor>/ingest/``: ``frames/<shard>.tar`` (``00001.jpg``..., JPEG quality
95), ``shards.json``, ``crop.json`` and ``bbox.pt`` (the crop in source pixels,
:mod:`stages.video.crop_record`), ``audio.wav`` (16 kHz mono on the frame timeline,
:mod:`stages.video.audio`; only when the video has sound), ``report.json``.
"""

from __future__ import annotations

import logging
import math
import os
import time
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stages.errors import BadInput, bad_input
from stages.frameshard import read_shard_tar, write_shard_tar
from stages.runner.context import StageContext
from stages.runner.shards import SHARDS_FILE, plan_shards, shards_document
from stages.video.audio import extract_audio, timeline_origin
from stages.video.crop import CropBox, choose_crop, out_of_crop_fraction
from stages.video.crop_record import CropRecord, bbox_pt_bytes
from stages.video.decode import FrameIndex, VideoInfo, index_frames, probe
from stages.video.detect import FaceObservation, box_area
from stages.video.render import JPEG_QUALITY, observe_samples, render_shard
from stages.video.resample import fps_selection

log = logging.getLogger("avatar.ingest")

ASSETS = ()

SAMPLES_PER_WORKER = 8  # face-detection samples per worker process, at least

OUTPUT_FPS = 25  # FlashAvatar's test video and metrical-tracker's extraction use 25 fps


@dataclass
class Config:
    """Attributes:
        shard_size: output frames per shard (the fan-out unit of later stages), at most.
        min_shards, min_shard_frames: a shorter clip is cut into at least ``min_shards`` shards of
            at least ``min_shard_frames`` frames (:func:`shard_frames`): landmarks and masks run a
            process per shard, so a 10-second clip in one shard of 250 frames kept one core busy
            while the machine's others waited (issue 19). Shard plans of finished actors stay as
            they were (a new field at its default changes nothing finished).
        size: side of the output frames, pixels (FlashAvatar needs 512).
        jpeg_quality: libjpeg quality of the frames.
        detect_samples: frames, spread evenly over the video, on which the face is observed.
        crop_scale: crop side / landmark-box size (metrical-tracker uses 2.5).
        size_percentile: percentile of the landmark-box size the scale multiplies.
        pad: ``edge`` (repeat border pixels) or ``black``, outside the picture.
        min_face_px: smallest accepted face (median landmark-box longer side), source pixels.
        min_face_frames: fewest output frames (25 fps) with a face accepted for building an avatar.
            FlashAvatar upstream needs more than 500 (its last 500 are the test split); our short
            clip split works from 100.
        min_score: face detection threshold.
        several_faces_fraction: warn when more than this fraction of samples show a second face
            at least a quarter the size of the dominant one.
        fixed_crop: ``[x0, y0, side]`` in displayed source pixels to use instead of detecting the
            face (e.g. synthetic demo clips MediaPipe does not recognise); no face checks then.
    """

    shard_size: int = 500
    min_shards: int = 8
    min_shard_frames: int = 25
    size: int = 512
    jpeg_quality: int = JPEG_QUALITY
    detect_samples: int = 64
    crop_scale: float = 2.5
    size_percentile: float = 90.0
    pad: str = "edge"
    min_face_px: int = 64
    min_face_frames: int = 100
    min_score: float = 0.5
    several_faces_fraction: float = 0.1
    fixed_crop: list[int] | None = None


PRESETS = {"tiny": {"shard_size": 100, "min_shards": 1, "detect_samples": 16, "min_face_frames": 25}}
WORKER_PRELOAD = ("stages.video.render", "av", "cv2", "mediapipe")  # imported once by the local run's forkserver
PUBLISHES_SHARDS = True  # each shard's tar is published when written: landmarks and masks may start on it


def _label_errors(fn, local: Path, label: str, *args):
    """Call ``fn`` and rename the local scratch path to the user's store path in bad-input errors."""
    try:
        return fn(*args)
    except BadInput as e:
        raise BadInput(str(e).replace(str(local), label, 1)) from None


def shard_frames(n_frames: int, cfg: Config) -> int:
    """Frames per shard for a clip of ``n_frames`` output frames: ``cfg.shard_size``, or fewer for a
    short clip, so that it still makes ``cfg.min_shards`` shards of at least ``cfg.min_shard_frames``
    frames (250 frames, the defaults: 8 shards of 32; 750: 8 of 94; 4,000 and more: shards of 500)."""
    even = math.ceil(max(1, n_frames) / max(1, cfg.min_shards))
    return max(1, min(cfg.shard_size, max(cfg.min_shard_frames, even)))


def sample_pts(index: FrameIndex, selected: np.ndarray, n: int) -> list[int]:
    """Up to ``n`` source pts spread evenly over the output frames, each snapped to a keyframe
    when one is within half the spacing (a keyframe decodes without its predecessors)."""
    m = len(selected)
    n = max(1, min(n, m))
    pos = np.linspace(0, m - 1, n).round().astype(np.int64)
    wanted = index.pts[selected[pos]]
    keys = index.pts[index.keyframe]
    spacing = (index.pts[selected[-1]] - index.pts[selected[0]]) / max(n, 1)
    out = []
    for p in wanted:
        if keys.size:
            j = int(np.argmin(np.abs(keys - p)))
            if abs(int(keys[j]) - int(p)) <= spacing / 2:
                p = keys[j]
        out.append(int(p))
    return sorted(set(out))


def _chunks(items: list, k: int) -> list[list]:
    k = max(1, min(k, len(items)))
    bounds = np.linspace(0, len(items), k + 1).round().astype(int)
    return [items[a:b] for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


class _Deferred:
    """A call made when its ``result()`` is first asked for (the in-process stand-in of a Future)."""

    def __init__(self, fn, args, kw):
        self._call = (fn, args, kw)
        self._done = False
        self._value = None

    def result(self):
        if not self._done:
            fn, args, kw = self._call
            self._value, self._done = fn(*args, **kw), True
        return self._value


class Workers:
    """``jobs`` worker processes (a forkserver that has imported the heavy modules once), or the
    calling process itself when ``jobs`` is 1. ``submit`` returns a ``Future`` either way."""

    def __init__(self, jobs: int):
        self.jobs = max(1, jobs)
        self._pool = None
        if self.jobs > 1:
            from stages.runner import lifeline  # workers die with this process

            ctx = lifeline.forkserver_context(list(WORKER_PRELOAD))
            self._pool = ProcessPoolExecutor(max_workers=self.jobs, mp_context=ctx,
                                             initializer=lifeline.worker_init)

    @property
    def threads(self) -> int:
        """Decoder threads per worker so that workers x threads ~ cores (0: libavcodec decides)."""
        return 0 if self.jobs <= 1 else max(1, (os.cpu_count() or 1) // self.jobs)

    def submit(self, fn, *args, **kw) -> "Future | _Deferred":
        """Run ``fn(*args, **kw)`` in a worker; in-process runs wait until ``result()`` is asked
        for (so each shard is uploaded before the next one is rendered)."""
        if self._pool is not None:
            return self._pool.submit(fn, *args, **kw)
        return _Deferred(fn, args, kw)

    def __enter__(self) -> "Workers":
        return self

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            if exc[0] is not None:  # Ctrl-C or a failure: stop the workers now
                from stages.runner.lifeline import kill_pool

                kill_pool(self._pool)
            else:
                self._pool.shutdown(wait=True, cancel_futures=True)


def observe(workers: Workers, info: VideoInfo, index: FrameIndex, pts: list[int],
            min_score: float) -> list[FaceObservation]:
    """Face observations at ``pts``, in contiguous chunks over the workers (at least
    :data:`SAMPLES_PER_WORKER` samples a chunk: each worker starts MediaPipe's graphs once, which
    costs about as much as observing several samples)."""
    parts = _chunks(pts, min(workers.jobs, max(1, len(pts) // SAMPLES_PER_WORKER)))
    futures = [workers.submit(observe_samples, info, index, part, workers.threads, min_score) for part in parts]
    return [o for f in futures for o in f.result()]


def dominant_warnings(obs: list[FaceObservation], threshold: float) -> tuple[int, list[str]]:
    """How many samples show a second sizeable face, and the warnings for the report."""
    several = 0
    for o in obs:
        if o.det_box is not None and any(box_area(b) >= 0.25 * box_area(o.det_box) for b in o.others):
            several += 1
    warnings = []
    if obs and several / len(obs) > threshold:
        warnings.append(f"several faces in {several} of {len(obs)} sampled frames; using the dominant (largest) one")
    return several, warnings


def frame_rate_warnings(duplicated: int, n_out: int, avg_fps: float) -> list[str]:
    """A warning when more than a fifth of the 25 fps frames repeat the previous one (a low or
    variable frame rate): the avatar then sees fewer distinct frames than the count suggests."""
    if n_out <= 0 or duplicated <= 0.2 * n_out:
        return []
    return [f"{duplicated} of {n_out} frames at {OUTPUT_FPS} fps repeat the previous one: the video has "
            f"{avg_fps:.1f} frames/s on average (a low or variable frame rate); record at 25 fps or more "
            "for more distinct frames"]


def faceless_end_warnings(obs: list[FaceObservation], info: VideoInfo, index: FrameIndex) -> list[str]:
    """A warning when the first or last sampled frames show no face (the clip starts before the
    person is in the picture, or ends after they left): those frames stay in the dataset (the frame
    timeline keeps its meaning for sound and full-frame renders) but are not trained on."""
    ordered = sorted(obs, key=lambda o: o.key)
    if not ordered or not any(o.found for o in ordered):
        return []
    lead = next(i for i, o in enumerate(ordered) if o.found)
    trail = next(i for i, o in enumerate(reversed(ordered)) if o.found)
    if not lead and not trail:
        return []
    t0, t1 = int(index.pts[0]), int(index.end_pts)
    parts = []
    if lead:
        parts.append(f"the first {float((ordered[lead].key - t0) * info.time_base):.1f} s")
    if trail:
        parts.append(f"the last {float((t1 - ordered[-1 - trail].key) * info.time_base):.1f} s")
    return [f"no face in about {' and '.join(parts)} of the video: those frames are kept but not trained on "
            "(the train stage leaves out frames without landmarks at either end); trim the video to skip them"]


def check_faces(label: str, cfg: Config, obs: list[FaceObservation], n_out: int) -> dict[str, Any]:
    """Raise bad input when the observed faces cannot make an avatar; return face statistics."""
    found = [o for o in obs if o.found]
    if not found:
        raise bad_input(label, f"no face found in any of {len(obs)} sampled frames",
                        "upload a video of one person facing the camera, face well lit and visible")
    sizes = np.array([o.size for o in found])
    median_size = float(np.median(sizes))
    if median_size < cfg.min_face_px:
        raise bad_input(label, f"face too small: {median_size:.0f} px tall (median), the minimum is "
                        f"{cfg.min_face_px} px", "record closer to the camera or at a higher resolution")
    fraction = len(found) / len(obs)
    with_face = int(round(fraction * n_out))
    if with_face < cfg.min_face_frames:
        raise bad_input(label, f"too few frames with a face: about {with_face} of {n_out} frames at "
                        f"{OUTPUT_FPS} fps, the minimum is {cfg.min_face_frames}",
                        f"upload a longer video (at least {cfg.min_face_frames / OUTPUT_FPS:.0f} s with the face visible)")
    return {"face_fraction": round(fraction, 4), "frames_with_face_est": with_face, "face_size_px_median": round(median_size, 1),
            "face_size_px_p90": round(float(np.percentile(sizes, 90)), 1), "mesh_fraction": round(sum(o.mesh for o in found) / len(found), 4)}


def run(ctx: StageContext) -> None:
    cfg: Config = ctx.config
    if cfg.pad not in ("edge", "black"):
        raise bad_input("config", f"ingest pad {cfg.pad!r} is unknown", "use pad edge or black")
    t0 = time.monotonic()
    local = ctx.fetch_video()
    label = f"{ctx.store.uri}/{ctx.video_key}"
    info: VideoInfo = _label_errors(probe, local, label, local)
    index: FrameIndex = _label_errors(index_frames, local, label, info)
    selected = fps_selection(index.pts, index.end_pts, info.time_base, OUTPUT_FPS, info.start_pts)
    n_out = int(selected.size)
    if n_out == 0:
        raise bad_input(label, "the video has zero frames", "upload a video that contains the talking head")
    if n_out < cfg.min_face_frames and cfg.fixed_crop is None:
        raise bad_input(label, f"too few frames with a face: the video has only {n_out} frame{'s' if n_out != 1 else ''} at {OUTPUT_FPS} fps, "
                        f"the minimum is {cfg.min_face_frames}",
                        f"upload a longer video (at least {cfg.min_face_frames / OUTPUT_FPS:.0f} s with the face visible)")
    ctx.progress.set_total(n_out)
    t_index = time.monotonic()
    log.info("%s: %s %dx%d rot %d, %d frames at %.3f fps -> %d frames at %d fps", label, info.codec, info.width,
             info.height, info.rotation, len(index), info.avg_fps, n_out, OUTPUT_FPS)

    with Workers(ctx.jobs) as workers:
        _ingest(ctx, cfg, workers, local, label, info, index, selected, n_out, t0, t_index)


def _ingest(ctx: StageContext, cfg: Config, workers: Workers, local: Path, label: str, info: VideoInfo,
            index: FrameIndex, selected: np.ndarray, n_out: int, t0: float, t_index: float) -> None:
    if cfg.fixed_crop is not None:
        if len(cfg.fixed_crop) != 3 or int(cfg.fixed_crop[2]) < 2:
            raise bad_input("config", f"ingest fixed_crop {cfg.fixed_crop!r} is not [x0, y0, side]",
                            "give three integers, side >= 2, in displayed source pixels")
        obs, faces, several = [], {}, 0
        warnings = ["crop fixed by the config (ingest.fixed_crop); the face was not detected or checked"]
        crop = CropBox(*(int(v) for v in cfg.fixed_crop))
        t_detect = time.monotonic()
    else:
        obs = _label_errors(observe, local, label, workers, info, index,
                            sample_pts(index, selected, cfg.detect_samples), cfg.min_score)
        if not obs:
            raise bad_input(label, "no frame could be decoded",
                            "re-encode it, e.g. ffmpeg -i IN -c:v libx264 -crf 16 out.mp4")
        t_detect = time.monotonic()
        faces = check_faces(label, cfg, obs, n_out)
        several, warnings = dominant_warnings(obs, cfg.several_faces_fraction)
        crop = choose_crop(obs, scale=cfg.crop_scale, size_percentile=cfg.size_percentile)
    out_frac = out_of_crop_fraction(obs, crop)
    if out_frac > 0.05:
        warnings.append(f"the face leaves the crop in {out_frac:.0%} of sampled frames (moves a lot)")
    if info.mirrored:
        warnings.append("the display matrix mirrors the picture; the mirroring was not undone")
    if crop.side < 0.75 * cfg.size:
        warnings.append(f"the crop is {crop.side} px, upscaled to {cfg.size}: frames will be soft")

    shards = plan_shards(n_out, shard_frames(n_out, cfg))
    # the shard plan and the crop first: a shard-overlapped run's landmarks and masks start on each
    # shard's tar as soon as it is written (ctx.publish_shard), and read these two with it
    ctx.put_json(SHARDS_FILE, shards_document(n_out, OUTPUT_FPS, shards))
    record = CropRecord.of(crop, info.width, info.height, cfg.size, info.rotation)
    ctx.put_json("crop.json", {**record.to_dict(), "pad": cfg.pad,
                               "face_out_of_crop_fraction": round(out_frac, 4), "samples": len(obs)})
    ctx.put_bytes("bbox.pt", bbox_pt_bytes(record))
    missing = _label_errors(_render_all, local, label, ctx, workers, cfg, info, index, selected, crop, shards)
    if missing:
        warnings.append(f"{len(missing)} source frames were never decoded; the previous frame was repeated there")
    ctx.count_frames(n_out)
    t_render = time.monotonic()
    timing = {"index_s": round(t_index - t0, 3), "detect_s": round(t_detect - t_index, 3),
              "render_s": round(t_render - t_detect, 3)}
    log.info("%s: index %.1f s, face detection %.1f s (%d samples), frames %.1f s (%.1f frames/s)", label,
             t_index - t0, t_detect - t_index, len(obs), t_render - t_detect, n_out / max(t_render - t_detect, 1e-9))

    audio = _label_errors(_audio, local, label, ctx, info, index, n_out)
    if audio is None:
        log.info("%s: no audio track; no audio.wav", label)
    dup = int(n_out - np.unique(selected).size)
    warnings.extend(frame_rate_warnings(dup, n_out, info.avg_fps) + faceless_end_warnings(obs, info, index))
    ctx.put_json("report.json", {
        "source": {"codec": info.codec, "width": info.width, "height": info.height, "coded_width": info.coded_width,
                   "coded_height": info.coded_height, "rotation": info.rotation, "fps": round(info.avg_fps, 4),
                   "time_base": str(info.time_base), "duration_s": round(float((index.end_pts - index.pts[0]) * info.time_base), 3)},
        "frames_in": len(index), "frames_out": n_out, "fps_out": OUTPUT_FPS,
        "duplicated": dup, "dropped": int(len(index) - np.unique(selected).size),
        "shards": len(shards), "jpeg_quality": cfg.jpeg_quality, "samples": len(obs),
        "several_faces_samples": several, "face_out_of_crop_fraction": round(out_frac, 4), **faces,
        "crop": crop.to_dict(), "audio": audio,
        "audio_note": None if audio else "the video has no audio track (or none that decodes): no audio.wav",
        "missing_frames": missing[:100], "warnings": warnings,
        "sample_boxes": [{"pts": o.key, "box": [round(v, 1) for v in o.box] if o.box else None, "faces": o.faces}
                         for o in obs],
    })
    ctx.stats.update({"frames_in": len(index), "frames_out": n_out, "face_out_of_crop_fraction": round(out_frac, 4),
                      **timing})
    for w in warnings:
        log.warning("%s: %s", label, w)


def _audio(ctx: StageContext, info: VideoInfo, index: FrameIndex, n_out: int) -> dict | None:
    """Extract the sound to ``audio.wav`` (16 kHz mono, frame ``k`` = samples ``[640k, 640(k+1))``);
    its report, or None when the video has no audio track."""
    import av

    path = ctx.scratch / "audio.wav"
    try:
        rep = extract_audio(info.path, path, timeline_origin(info, index, OUTPUT_FPS), n_out, OUTPUT_FPS)
    except av.error.FFmpegError as e:  # a broken audio track does not stop the avatar
        log.warning("%s: the audio track does not decode (%s); no audio.wav", info.path, e)
        return None
    if rep is None:
        return None
    ctx.put_file("audio.wav", path)
    path.unlink(missing_ok=True)
    return rep.to_dict()


def _render_all(ctx: StageContext, workers: Workers, cfg: Config, info: VideoInfo, index: FrameIndex,
                selected: np.ndarray, crop: CropBox, shards) -> list[int]:
    """Render every shard over the workers and upload each tar as it finishes; return the output
    frame numbers whose source frame was never decoded.

    With fewer shards than workers (short videos) each shard is rendered as several pieces in
    parallel and the pieces are joined into the shard's tar in frame order."""
    folder = ctx.scratch / "frames"
    folder.mkdir(parents=True, exist_ok=True)
    kw = {"size": cfg.size, "quality": cfg.jpeg_quality, "pad": cfg.pad, "threads": workers.threads}
    pieces = max(1, -(-workers.jobs // len(shards))) if workers.jobs > 1 else 1
    plan = []
    for s in shards:
        futs = []
        for j, part in enumerate(_chunks(list(s.frames), pieces)):
            pts = [int(index.pts[selected[n - 1]]) for n in part]
            futs.append(workers.submit(render_shard, info, index, part, pts, crop, str(folder / f"{s.name}.{j}.tar"), **kw))
        plan.append((s, futs))
    missing: list[int] = []
    for s, futs in plan:
        results = [f.result() for f in futs]
        if len(results) == 1:
            path = Path(results[0].path)
        else:
            path = folder / f"{s.name}.tar"

            def members():
                for r in results:
                    yield from read_shard_tar(r.path)

            write_shard_tar(path, members())
        ctx.put_file(f"frames/{s.name}.tar", path)
        ctx.publish_shard(s.index, [f"frames/{s.name}.tar", SHARDS_FILE, "crop.json"])
        for r in results:
            Path(r.path).unlink(missing_ok=True)
        path.unlink(missing_ok=True)
        missing.extend(m for r in results for m in r.missing)
        ctx.progress.advance(len(s))
    return missing
