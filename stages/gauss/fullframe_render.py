"""Render a tracked sequence into the actor's own source footage (full frame), with its sound.

Used by ``avatar render --full-frame`` and the render stage's ``full_frame`` preview; ``avatar drive
--full-frame`` feeds :class:`stages.video.fullframe.FullFrameWriter` the same way.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor

from stages.gauss.model import GaussianAvatar
from stages.gauss.surface import FaceSurface
from stages.gauss.trainer import render_frames
from stages.video.crop_record import CropRecord
from stages.video.fullframe import Feather, FullFrameWriter


@torch.no_grad()
def render_full_frame(model: GaussianAvatar, surface: FaceSurface, cond: Tensor, R: Tensor, t: Tensor, K: Tensor,
                      frames: Sequence[int], out: str | Path, source: str | Path, record: CropRecord, *,
                      renderer: str, device: str, batch: int = 8, feather: Feather = Feather(),
                      preset: str = "veryfast", crf: int = 18,
                      on_batch: Callable[[int], None] | None = None) -> dict:
    """Render every frame of a sequence at the crop's size and composite it into the source frame
    it belongs to.

    Args:
        cond: [N, 120]; R: [N, 3, 3]; t: [N, 3]; K: [N, 3, 3] intrinsics of the dataset's
            ``record.out_size`` frames (as in the ``.frame`` files).
        frames: N output frame indices on the source's 25 fps timeline (checkpoint ``i`` is frame
            ``i``; looped back and forth past the end of the footage).
        out: the H.264 MP4 to write (no audio: see :func:`stages.video.audio.mux_audio`).
    Returns:
        ``{"frames", "seconds", "fps", "width", "height", "render_size"}``.
    """
    n = cond.shape[0]
    t0 = time.perf_counter()
    model = model.eval()
    with FullFrameWriter(out, source, record, device, feather=feather, preset=preset, crf=crf) as ff:
        Kr = ff.intrinsics(K.float())
        black = torch.zeros(3, device=device)
        for s in range(0, n, batch):
            sl = slice(s, s + batch)
            img, alpha = render_frames(model, surface, cond[sl].to(device), R[sl].to(device), t[sl].to(device),
                                       Kr[sl].to(device), ff.size, black, renderer)
            ff.write(list(frames[sl]), img.clamp(0, 1), alpha.clamp(0, 1))
            if on_batch is not None:
                on_batch(img.shape[0])
        width, height = ff.source.width, ff.source.height
    seconds = time.perf_counter() - t0
    return {"frames": n, "seconds": round(seconds, 3), "fps": round(n / max(seconds, 1e-9), 2), "width": width,
            "height": height, "render_size": record.side}


def with_audio(video: Path, audio: Path | None, first: int | None, count: int, fps: int = 25) -> bool:
    """Replace ``video`` by itself plus ``audio`` as AAC: with ``first``, frames ``first ..
    first+count-1`` of a frame-aligned WAV (the dataset's ``audio.wav``); without, the whole file
    (any format; the longer of the two is trimmed). Nothing happens when ``audio`` is None or
    missing. Returns whether audio was added."""
    from stages.video.audio import mux_audio, slice_frames

    if audio is None or not Path(audio).is_file():
        return False
    video = Path(video)
    with tempfile.TemporaryDirectory(dir=video.parent) as tmp:
        part = slice_frames(audio, Path(tmp) / "audio.wav", first, count, fps) if first is not None else Path(audio)
        muxed = Path(tmp) / "muxed.mp4"
        mux_audio(video, part, muxed)
        shutil.move(str(muxed), str(video))
    return True
