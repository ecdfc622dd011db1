"""Full frame: the rendered avatar composited back into the actor's own source footage.

Output frame ``k`` is source frame ``k`` on ingest's 25 fps timeline (the same ``fps=25`` selection,
:mod:`stages.video.resample`; looped back and forth when a sequence is longer than the footage),
at source resolution, with the avatar rendered at the crop's place and size (``crop.json``,
:mod:`stages.video.crop_record`) and composited with its own alpha:

``out = render * a' + source * (1 - a')``, ``a' = alpha * w``, with the feather weight
``w = ramp(box) * blur(alpha)``: ``ramp`` rises from 0 at the crop box's edge (the output equals the
source on and outside the box) to 1 at ``feather * side`` inside it; ``blur(alpha)`` (a box blur of
radius ``soften * side``) pulls the avatar's own edge (hair, the neck's cut, collar) a little
inward and softens it. Renders come premultiplied (rendered over black: ``image = sum of alpha_i T_i
c_i``), so ``render * a' = premult * w``.

Two implementations of the same composite:

- :func:`composite_rgb_reference`: numpy, RGB, whole frame, float64 (the oracle);
- :class:`Compositor`: torch on any device, in the source's own YUV 4:2:0 planes (BT.601 limited
  range, the conversion ingest used to make the training frames), touching only the crop's region:
  the rest of each picture is the decoder's bytes, untouched, and no colour conversion of the
  full frame happens on either side of the encoder. Chroma is composited with the 2x2 mean of the
  per-pixel terms (exact for the luma, the 4:2:0 approximation for the chroma).

:class:`SourceFrames` decodes the source's frames for output indices (forward runs stream,
backward runs seek per batch); :class:`FullFrameWriter` joins decoding, compositing and H.264
encoding for callers that feed batches of (frame indices, render, alpha): ``avatar render
--full-frame``, the render stage's ``full_frame`` preview, ``avatar drive --full-frame``.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from stages.errors import bad_input
from stages.video.crop_record import CropRecord

log = logging.getLogger("avatar.fullframe")

# BT.601 limited range, RGB in [0, 1] -> Y'CbCr in [0, 255] (rows Y, U, V)
RGB_TO_YUV = np.array([[65.481, 128.553, 24.966],
                       [-37.797, -74.203, 112.0],
                       [112.0, -93.786, -18.214]])
YUV_OFFSET = np.array([16.0, 128.0, 128.0])


@dataclass(frozen=True)
class Feather:
    """How the avatar blends into the source.

    Attributes:
        feather: width of the ramp inside the crop box's edge, as a fraction of the box side.
        soften: radius of the box blur of the alpha whose product with the alpha is the blend
            weight, as a fraction of the box side (0: the alpha as rendered).
        margin: pixels at the box edge whose weight is exactly 0 (2 keeps 4:2:0 chroma pairs
            that straddle the edge untouched).
    """

    feather: float = 0.06
    soften: float = 0.008
    margin: int = 2

    def ramp_px(self, side: int) -> float:
        return max(1.0, self.feather * side)

    def blur_radius(self, side: int) -> int:
        return int(round(self.soften * side))


def pingpong(k: int | np.ndarray, n: int) -> np.ndarray:
    """Index into ``n`` frames played forward, then backward, then forward... (``0, 1, .., n-1,
    n-2, .., 1, 0, 1, ..``) for output frames ``k`` >= 0."""
    k = np.asarray(k, dtype=np.int64)
    if n <= 1:
        return np.zeros_like(k)
    m = k % (2 * n - 2)
    return np.where(m < n, m, 2 * n - 2 - m)


def ramp_1d(n: int, ramp: float, margin: int) -> np.ndarray:
    """float64 [n]: the box-edge weight along one side of ``n`` pixels: 0 for the ``margin``
    outermost pixels at each end, then a smoothstep over ``ramp`` pixels, 1 inside."""
    i = np.arange(n, dtype=np.float64)
    d = np.minimum(i, n - 1 - i) - (margin - 0.5)  # distance from the last zero pixel's centre
    x = np.clip(d / ramp, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def weights_reference(alpha: np.ndarray, feather: Feather) -> np.ndarray:
    """float64 [S, S]: the blend weight ``w`` for an alpha [S, S] (see the module docstring)."""
    s = alpha.shape[0]
    r = ramp_1d(s, feather.ramp_px(s), feather.margin)
    w = r[:, None] * r[None, :]
    k = feather.blur_radius(s)
    if k > 0:
        a = np.pad(alpha.astype(np.float64), k)
        c = np.cumsum(np.cumsum(np.pad(a, ((1, 0), (1, 0))), 0), 1)  # summed-area table
        n = 2 * k + 1
        blur = (c[n:, n:] - c[:-n, n:] - c[n:, :-n] + c[:-n, :-n]) / (n * n)
        w = w * np.clip(blur, 0.0, 1.0)
    return w


def composite_rgb_reference(source: np.ndarray, premult: np.ndarray, alpha: np.ndarray, record: CropRecord,
                            feather: Feather = Feather()) -> np.ndarray:
    """The reference composite, in RGB.

    Args:
        source: uint8 [H, W, 3], the source frame (upright, display size).
        premult: float [S, S, 3] in [0, 1], the avatar rendered over black at the crop's size
            (``S = record.side``).
        alpha: float [S, S] in [0, 1].
        record: the crop; ``(x0, y0)`` is where render pixel (0, 0) lands (may be outside).
    Returns:
        uint8 [H, W, 3]: ``premult * w + source * (1 - alpha * w)``, rounded.
    """
    h, w_ = source.shape[:2]
    s = record.side
    out = source.astype(np.float64) / 255.0
    wgt = weights_reference(alpha, feather)
    x0, y0 = record.x0, record.y0
    fx0, fy0, fx1, fy1 = max(0, x0), max(0, y0), min(w_, x0 + s), min(h, y0 + s)
    if fx1 > fx0 and fy1 > fy0:
        ry, rx = slice(fy0 - y0, fy1 - y0), slice(fx0 - x0, fx1 - x0)
        ww = wgt[ry, rx][..., None]
        out[fy0:fy1, fx0:fx1] = premult[ry, rx] * ww + out[fy0:fy1, fx0:fx1] * (1 - alpha[ry, rx][..., None] * ww)
    return np.clip(np.round(out * 255.0), 0, 255).astype(np.uint8)


def yuv420_to_rgb(buf: np.ndarray) -> np.ndarray:
    """uint8 [H*3/2, W] I420 (PyAV's ``yuv420p`` layout) -> uint8 [H, W, 3] RGB, BT.601 limited
    range (OpenCV's conversion, the one ingest uses)."""
    import cv2

    return cv2.cvtColor(buf, cv2.COLOR_YUV2RGB_I420)


def split_planes(buf: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Views Y [H, W], U [H/2, W/2], V [H/2, W/2] of an I420 buffer [H*3/2, W] (even sizes)."""
    flat = buf.reshape(-1)
    q = (height // 2) * (width // 2)
    y = flat[:height * width].reshape(height, width)
    u = flat[height * width:height * width + q].reshape(height // 2, width // 2)
    v = flat[height * width + q:height * width + 2 * q].reshape(height // 2, width // 2)
    return y, u, v


class Compositor:
    """The fast path of :func:`composite_rgb_reference`, in YUV 4:2:0 on a torch device.

    Args:
        record: the crop (render size ``record.side``).
        width, height: the source picture (even).
        device: torch device of the renders (the composite runs there).
    """

    def __init__(self, record: CropRecord, width: int, height: int, device="cpu", feather: Feather = Feather()):
        import torch

        if width % 2 or height % 2:
            raise ValueError(f"full-frame output needs an even picture size, not {width}x{height}")
        self.record, self.width, self.height, self.feather = record, width, height, feather
        self.device = torch.device(device)
        s, x0, y0 = record.side, record.x0, record.y0
        fx0, fy0, fx1, fy1 = max(0, x0), max(0, y0), min(width, x0 + s), min(height, y0 + s)
        self.empty = fx1 <= fx0 or fy1 <= fy0
        # the region written: the box inside the picture, widened to even coordinates
        self.ex0, self.ey0 = fx0 & ~1, fy0 & ~1
        self.ex1, self.ey1 = min(width, fx1 + (fx1 & 1)), min(height, fy1 + (fy1 & 1))
        ramp = ramp_1d(s, feather.ramp_px(s), feather.margin)
        r = torch.as_tensor(ramp, dtype=torch.float32, device=self.device)
        self._box = r[:, None] * r[None, :]  # [S, S]
        self._m = torch.as_tensor(RGB_TO_YUV, dtype=torch.float32, device=self.device)
        self._off = torch.as_tensor(YUV_OFFSET, dtype=torch.float32, device=self.device)

    def weights(self, alpha):
        """Blend weights [B, S, S] for alpha [B, S, S] (same as :func:`weights_reference`)."""
        import torch.nn.functional as F

        w = self._box.expand_as(alpha)
        k = self.feather.blur_radius(self.record.side)
        if k > 0:
            n = 2 * k + 1  # separable box blur, zero outside the render
            blur = F.avg_pool2d(alpha[:, None], (1, n), stride=1, padding=(0, k), count_include_pad=True)
            blur = F.avg_pool2d(blur, (n, 1), stride=1, padding=(k, 0), count_include_pad=True)[:, 0]
            w = w * blur.clamp(0, 1)
        return w

    def composite(self, planes: Sequence[np.ndarray], premult, alpha) -> None:
        """Composite a batch in place.

        Args:
            planes: B uint8 I420 buffers [H*3/2, W] (the source frames; overwritten inside the box).
            premult: [B, S, S, 3] float in [0, 1] on the device, the avatar over black.
            alpha: [B, S, S] float in [0, 1] on the device.
        """
        import torch
        import torch.nn.functional as F

        if self.empty or not len(planes):
            return
        b = len(planes)
        x0, y0 = self.record.x0, self.record.y0
        ex0, ey0, ex1, ey1 = self.ex0, self.ey0, self.ex1, self.ey1
        premult, alpha = premult.float(), alpha.float()
        w = self.weights(alpha)
        a_eff = alpha * w                                                   # [B, S, S]
        fg = torch.einsum("bhwc,kc->bkhw", premult * w[..., None], self._m)  # [B, 3, S, S], 0..255 premultiplied
        fg = fg + self._off[None, :, None, None] * a_eff[:, None]
        terms = torch.cat([fg, a_eff[:, None]], 1)                          # [B, 4, S, S]
        # the render square in the region's coordinates (one zero pixel of padding each side)
        terms = F.pad(terms, (1, 1, 1, 1))
        rx0, ry0 = ex0 - x0 + 1, ey0 - y0 + 1
        terms = terms[:, :, ry0:ry0 + (ey1 - ey0), rx0:rx0 + (ex1 - ex0)]
        ys, us, vs = zip(*(split_planes(p, self.height, self.width) for p in planes))
        Y = torch.from_numpy(np.stack([y[ey0:ey1, ex0:ex1] for y in ys]))
        UV = torch.from_numpy(np.stack([np.stack([u[ey0 // 2:ey1 // 2, ex0 // 2:ex1 // 2],
                                                  v[ey0 // 2:ey1 // 2, ex0 // 2:ex1 // 2]]) for u, v in zip(us, vs)]))
        if self.device.type == "cuda":
            Y, UV = Y.pin_memory(), UV.pin_memory()
        Y = Y.to(self.device, non_blocking=True).float()
        UV = UV.to(self.device, non_blocking=True).float()
        y_out = Y * (1 - terms[:, 3]) + terms[:, 0]
        tc = F.avg_pool2d(terms[:, 1:], 2)                                  # [B, 3, h/2, w/2]: U, V, a
        uv_out = UV * (1 - tc[:, 2:3]) + tc[:, :2]
        y_out = y_out.round_().clamp_(0, 255).to(torch.uint8).cpu().numpy()
        uv_out = uv_out.round_().clamp_(0, 255).to(torch.uint8).cpu().numpy()
        for i in range(b):
            ys[i][ey0:ey1, ex0:ex1] = y_out[i]
            us[i][ey0 // 2:ey1 // 2, ex0 // 2:ex1 // 2] = uv_out[i, 0]
            vs[i][ey0 // 2:ey1 // 2, ex0 // 2:ex1 // 2] = uv_out[i, 1]


def premultiplied(image, alpha, background):
    """A render over ``background`` [3] (``image = premult + background * (1 - alpha)``) -> the
    premultiplied colour [B, H, W, 3] (what :class:`Compositor` takes)."""
    import torch

    bg = torch.as_tensor(background, dtype=image.dtype, device=image.device)
    return (image - bg * (1 - alpha[..., None])).clamp(0, 1)


class SourceFrames:
    """The source video's frames on ingest's 25 fps timeline, as I420 buffers.

    Args:
        path: the source video (the actor's stored ``input/video.mp4``).
        fps: the timeline's frame rate (25).
        threads: decoder threads (0: libavcodec's choice).
    Attributes:
        n: frames on the timeline; width, height: the upright picture.
    """

    def __init__(self, path: str | Path, fps: int = 25, threads: int = 0):
        from stages.video.decode import index_frames, probe
        from stages.video.resample import fps_selection

        self.info = probe(path)
        self.index = index_frames(self.info)
        self.selected = fps_selection(self.index.pts, self.index.end_pts, self.info.time_base, fps,
                                      self.info.start_pts)
        self.n = int(self.selected.size)
        self.width, self.height = self.info.width, self.info.height
        if self.width % 2 or self.height % 2:
            raise bad_input(path, f"the picture is {self.width}x{self.height}; full-frame output needs even sizes",
                            "re-encode it, e.g. ffmpeg -i IN -vf crop=trunc(iw/2)*2:trunc(ih/2)*2 -c:v libx264 -crf 16 out.mp4")
        self.threads = threads
        self._gen = None
        self._next_src = None  # the next source frame the forward generator yields
        self._last: tuple[int, np.ndarray] | None = None
        self.colour = {}
        import av

        with av.open(str(path)) as c:
            cc = c.streams.video[0].codec_context
            for k in ("colorspace", "color_range", "color_primaries", "color_trc"):
                v = getattr(cc, k, None)
                if v is not None:
                    self.colour[k] = v

    def _buffer(self, frame) -> np.ndarray:
        from stages.video.decode import upright

        if self.info.rotation == 0:
            fmt = frame.format.name
            if fmt != "yuv420p":
                frame = frame.reformat(format="yuv420p")
            return np.ascontiguousarray(frame.to_ndarray(format="yuv420p"))
        cw, ch = self.info.coded_width, self.info.coded_height
        y, u, v = split_planes(frame.to_ndarray(format="yuv420p"), ch, cw)
        out = np.empty((self.height * 3 // 2, self.width), np.uint8)
        oy, ou, ov = split_planes(out, self.height, self.width)
        oy[:] = upright(y, self.info.rotation)
        ou[:] = upright(u, self.info.rotation)
        ov[:] = upright(v, self.info.rotation)
        return out

    def _restart(self, src: int) -> None:
        from stages.video.decode import iter_decoded

        self._gen = iter_decoded(self.info, self.index, self.index.pts[src:].tolist(), threads=self.threads)
        self._next_src = src

    def get(self, ks: Sequence[int]) -> list[np.ndarray]:
        """Fresh I420 buffers of output frames ``ks`` (indices on the timeline, any order; looped
        back and forth past the end)."""
        src = self.selected[pingpong(np.asarray(ks), self.n)]
        need = sorted(set(int(s) for s in src))
        have: dict[int, np.ndarray] = {}
        if self._last is not None and self._last[0] in need:
            have[self._last[0]] = self._last[1]
        todo = [s for s in need if s not in have]
        if todo:
            if self._gen is None or todo[0] < self._next_src or todo[0] - self._next_src > 300:
                self._restart(todo[0])
            pos = {int(p): i for i, p in enumerate(self.index.pts)}
            want = set(todo)
            for pts, frame in self._gen:
                i = pos[int(pts)]
                self._next_src = i + 1
                if i in want:
                    have[i] = self._buffer(frame)
                    want.discard(i)
                    if not want:
                        break
            for i in want:  # never decoded: show the nearest earlier frame we have
                have[i] = have[max((j for j in have if j < i), default=min(have))] if have else \
                    np.zeros((self.height * 3 // 2, self.width), np.uint8)
        last = max(have)
        self._last = (last, have[last])
        return [have[int(s)].copy() for s in src]


class FullFrameWriter:
    """Decode the source, composite batches of renders into it, encode H.264.

    Feed :meth:`write` with output frame indices and the matching renders, in output order::

        with FullFrameWriter(out, source_video, CropRecord.load(crop_json), device="cuda") as ff:
            K_render = ff.intrinsics(K_512)         # render at ff.size x ff.size
            ff.write(range(k, k + B), premult, alpha)

    Args:
        out: the MP4 to write.
        source: the actor's source video.
        record: the crop ingest used for that video.
        device: torch device of the renders.
        fps: output frame rate (the timeline's, 25).
        crf, preset, encoder, threads: H.264 settings (``libx264``; ``h264_nvenc`` where present).
        prefetch: decode the next batch of source frames (the frames after the last ones asked for)
            in a background thread while the caller renders.
    """

    def __init__(self, out: str | Path, source: str | Path, record: CropRecord, device="cpu", *, fps: int = 25,
                 feather: Feather = Feather(), crf: int = 18, preset: str = "veryfast", encoder: str = "libx264",
                 threads: int = 0, prefetch: bool = True):
        import av

        self.source = SourceFrames(source, fps)
        if (self.source.width, self.source.height) != (record.source_width, record.source_height):
            raise bad_input(source, f"the picture is {self.source.width}x{self.source.height} but the crop record is "
                            f"for {record.source_width}x{record.source_height}",
                            "give the video ingest cropped (the actor's input/video.mp4) and its crop.json")
        self.record = record
        self.size = record.side
        self.compositor = Compositor(record, self.source.width, self.source.height, device, feather)
        self.out = Path(out)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self._c = av.open(str(self.out), mode="w")
        self._s = self._c.add_stream(encoder, rate=Fraction(fps, 1))
        self._s.width, self._s.height, self._s.pix_fmt = self.source.width, self.source.height, "yuv420p"
        self._s.thread_count = threads
        if encoder == "libx264":
            self._s.options = {"crf": str(crf), "preset": preset}
        for k, v in self.source.colour.items():
            try:
                setattr(self._s.codec_context, k, v)
            except (AttributeError, TypeError, ValueError):
                pass
        self.frames = 0
        self.prefetch = prefetch
        self._decoder = ThreadPoolExecutor(1, thread_name_prefix="fullframe-decode") if prefetch else None
        self._pending: tuple[list[int], Future] | None = None
        self._q: queue.Queue = queue.Queue(maxsize=4)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._encode_loop, daemon=True)
        self._thread.start()

    def intrinsics(self, K):
        """Intrinsics [..., 3, 3] of the dataset's ``out_size`` frames -> of a render at :attr:`size`."""
        import torch

        k = self.size / self.record.out_size
        return K * torch.tensor([[k], [k], [1.0]], dtype=K.dtype, device=K.device)

    def _encode_loop(self) -> None:
        import av

        try:
            while True:
                item = self._q.get()
                if item is None:
                    break
                for buf in item:
                    frame = av.VideoFrame.from_ndarray(buf, format="yuv420p")
                    for packet in self._s.encode(frame):
                        self._c.mux(packet)
        except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
            self._error = e

    def write(self, frames: Sequence[int], premult, alpha) -> None:
        """Composite and queue for encoding a batch.

        Args:
            frames: B output frame indices on the source's timeline (frame ``k`` shows source frame
                ``k``, looped back and forth past the end).
            premult: [B, S, S, 3] the avatar rendered over black at :attr:`size` (S), in [0, 1].
            alpha: [B, S, S] its alpha.
        """
        if self._error is not None:
            raise self._error
        ks = [int(k) for k in frames]
        planes = None
        if self._pending is not None:
            want, fut = self._pending
            self._pending = None
            got = fut.result()  # also when unused: one thread at a time decodes
            if want == ks:
                planes = got
        if planes is None:
            planes = self.source.get(ks)
        if self._decoder is not None and ks:
            nxt = list(range(ks[-1] + 1, ks[-1] + 1 + len(ks)))
            self._pending = (nxt, self._decoder.submit(self.source.get, nxt))
        self.compositor.composite(planes, premult, alpha)
        self._q.put(planes)
        self.frames += len(planes)

    def close(self) -> None:
        if self._decoder is not None:
            self._decoder.shutdown(wait=True, cancel_futures=True)
        self._q.put(None)
        self._thread.join()
        if self._error is None:
            for packet in self._s.encode():
                self._c.mux(packet)
        self._c.close()
        if self._error is not None:
            raise self._error

    def __enter__(self) -> "FullFrameWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
