"""The masks of one shard, from frame JPEGs and landmarks to encoded tar members (no store I/O).

Work is cut into steps of up to ``batch_size`` frames: contiguous chunks for per-frame matting,
lock-step streams for RVM (:func:`stages.masks.backends.rvm.plan_streams`). A thread pool decodes
the next step while the current one runs on the model, and encodes finished frames behind it
(OpenCV, MediaPipe and onnxruntime release the GIL).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np

from stages.errors import bad_input
from stages.masks.backends.bisenet import BiSeNetParsing
from stages.masks.backends.mediapipe_default import SelfieMatting, landmark_parsing
from stages.masks.backends.rvm import RvmMatting, Step, plan_streams, streams_for
from stages.masks.encode import decode_rgb, encode_frame
from stages.masks.neck import frame_neck, smooth_sequence

Members = list[tuple[str, bytes]]


@dataclass
class MaskSettings:
    """What the pipeline needs besides the backends (a subset of the stage's Config).

    Attributes:
        batch_size: frames per model step (RVM: streams per shard, at most).
        rvm_warmup: frames each RVM stream runs before its first output.
        neck_margin: neck kept below the chin at most, in face heights (landmark parsing).
        neck_half_width: half-width of the band the neck is looked for in, in face widths
            (landmark parsing).
        neck_skin: find the collar from the skin colour below the chin (landmark parsing); else a
            fixed U ``neck_margin`` deep.
        neckhead_dilate: pixels the landmark neckhead grows beyond ``alpha > 0.5``.
        alpha_quality: JPEG quality of the alpha files.
    """

    batch_size: int = 16
    rvm_warmup: int = 10
    neck_margin: float = 0.6
    neck_half_width: float = 0.6
    neck_skin: bool = True
    neckhead_dilate: int = 2
    alpha_quality: int = 95


def plan_steps(numbers: Sequence[int], matting: SelfieMatting | RvmMatting, settings: MaskSettings,
               earliest: int) -> list[Step]:
    """The steps for frames ``numbers`` (contiguous, ascending)."""
    if not numbers:
        return []
    first, stop = numbers[0], numbers[-1] + 1
    if isinstance(matting, RvmMatting):
        s = streams_for(stop - first, settings.batch_size, settings.rvm_warmup)
        return plan_streams(first, stop, s, settings.rvm_warmup, earliest)
    b = max(1, settings.batch_size)
    return [Step(tuple(numbers[i:i + b]), (True,) * len(numbers[i:i + b])) for i in range(0, len(numbers), b)]


def shard_necks(jpegs: Mapping[int, bytes], numbers: Sequence[int],
                points: Callable[[int], np.ndarray | None], settings: MaskSettings,
                pool: ThreadPoolExecutor) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """The neck geometry and collar of every frame with landmarks (:mod:`stages.masks.neck`),
    smoothed over the shard's frames in time order: ``{frame: (geometry, collar)}``.

    The collar is found on frames decoded at half size (JPEG's reduced decode, a quarter of the
    work); the geometry is in full-size pixels."""
    def one(k: int) -> tuple[np.ndarray, np.ndarray] | None:
        p = points(k)
        if p is None:
            return None
        rgb = None
        if settings.neck_skin:
            bgr = cv2.imdecode(np.frombuffer(jpegs[k], np.uint8), cv2.IMREAD_REDUCED_COLOR_2)
            if bgr is None:
                raise bad_input(f"frame {k:05d}", "not a decodable JPEG", "re-run the ingest stage")
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        return frame_neck(p, settings.neck_margin, settings.neck_half_width, rgb, 0.5)

    found = {k: r for k, r in zip(numbers, pool.map(one, numbers)) if r is not None}
    if not found:
        return {}
    keys = sorted(found)
    geometry, collar = smooth_sequence(np.stack([found[k][0] for k in keys]), np.stack([found[k][1] for k in keys]))
    return {k: (geometry[i], collar[i]) for i, k in enumerate(keys)}


def compute_masks(jpegs: Mapping[int, bytes], numbers: Sequence[int],
                  points: Callable[[int], np.ndarray | None], matting: SelfieMatting | RvmMatting,
                  parsing: BiSeNetParsing | None, settings: MaskSettings, pool: ThreadPoolExecutor,
                  progress: Callable[[int], None] = lambda n: None) -> dict[int, Members]:
    """Alpha, neckhead and mouth of every frame in ``numbers``, encoded.

    Args:
        jpegs: frame JPEG bytes by number; must hold ``numbers`` and, for RVM warm-up, the frames
            just before ``numbers[0]`` that are available (a previous shard's tail).
        numbers: the frames to produce, contiguous and ascending.
        points: landmarks of a frame, float [478,2+] in pixels, or ``None`` (no face).
        matting: the matting backend.
        parsing: a BiSeNet parser, or ``None`` for the landmark parsing.
        settings: see :class:`MaskSettings`.
        pool: threads for decoding, per-frame matting, parsing and encoding.
        progress: called with the number of frames each step emitted.

    Returns:
        ``{frame number: [(tar member name, bytes), ...]}`` for every frame in ``numbers``.
    """
    numbers = list(numbers)
    earliest = numbers[0] if numbers else 0
    while earliest - 1 in jpegs:
        earliest -= 1
    steps = plan_steps(numbers, matting, settings, earliest)
    necks = shard_necks(jpegs, numbers, points, settings, pool) if parsing is None else {}
    recurrent = isinstance(matting, RvmMatting)
    if recurrent:
        matting.reset()

    def load(k: int) -> tuple[np.ndarray, np.ndarray | None]:
        rgb = decode_rgb(jpegs[k], f"frame {k:05d}")
        return rgb, (None if recurrent else matting.matte(rgb))

    def finish(k: int, rgb: np.ndarray, alpha: np.ndarray, labels: np.ndarray | None) -> Members:
        if parsing is not None and labels is not None:
            neckhead, mouth = parsing.masks(labels)
        else:
            neckhead, mouth = landmark_parsing(alpha, points(k), settings.neck_margin, settings.neckhead_dilate,
                                               settings.neck_half_width, neck=necks.get(k))
        return encode_frame(k, alpha, neckhead, mouth, settings.alpha_quality)

    def submit(step: Step) -> list[Future]:
        return [pool.submit(load, k) for k in step.frames]

    results: dict[int, Future] = {}
    pending = submit(steps[0]) if steps else []
    # the parser runs on its own thread, beside the matting step of the same frames
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="masks-parse") as parse_pool:
        for i, step in enumerate(steps):
            loaded = [f.result() for f in pending]
            pending = submit(steps[i + 1]) if i + 1 < len(steps) else []
            rgb = np.stack([r for r, _ in loaded])
            out = [j for j, (k, e) in enumerate(zip(step.frames, step.emit)) if e and k not in results]
            # parse a full step even when some streams only warm up or pad: constant batch shapes
            # let onnxruntime's CUDA provider pick its kernels once
            sel = out + out[-1:] * (len(step.frames) - len(out))
            labels_f = parse_pool.submit(parsing.labels, rgb[sel]) if parsing is not None and out else None
            alpha = matting.step(rgb) if recurrent else np.stack([a for _, a in loaded])
            if not out:
                continue
            labels = labels_f.result() if labels_f is not None else None
            for n, j in enumerate(out):
                k = step.frames[j]
                results[k] = pool.submit(finish, k, rgb[j], alpha[j], labels[n] if labels is not None else None)
            progress(len(out))
    return {k: results[k].result() for k in numbers}
