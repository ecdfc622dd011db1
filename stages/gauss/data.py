"""Training frames from the FlashAvatar dataset layout, streamed by a torch ``DataLoader``.

- :class:`TrackedSequence`: the per-frame parameters of every ``.frame`` file, stacked (numpy).
- :func:`choose_split`: the held-out split (by default the last 10% of the clip, 5 to 500 frames;
  upstream's last 500, or a fraction, when set) and the sentence that explains it.
- :class:`AvatarFrames`: a ``Dataset`` whose items are one frame's pixels (image, matte,
  neck-and-head and mouth masks; uint8), condition vector and camera, at the training resolution;
  :func:`composite_gt` turns them into FlashAvatar's ground truth on the training device.
- :class:`StepBatchSampler`: the batches of steps ``[start, stop)``, a pure function of (seed, step),
  so a resumed run sees exactly the batches an uninterrupted one would.
- :class:`CachedBatches`: the sampler's batches gathered from a decoded-frame cache
  (:mod:`stages.gauss.frame_cache`): one row gather per batch, no decoding.
- :func:`prefetch_to_device`: a background thread that keeps the next batches ready on the device
  (pinned host memory, copies on a side CUDA stream).
- :func:`training_batches`: the trainer's input pipeline (cache when possible, else per-item decoding).
"""

from __future__ import annotations

import atexit
import logging
import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from stages.dataset.frame_file import load_tracked_sequence, read_frame
from stages.dataset.layout import FRAME_DELTA, DatasetLayout
from stages.errors import bad_input
from stages.gauss.frame_cache import (CacheBuild, FrameCache, default_processes, has_room, load_image,
                                      start_frame_cache)
from stages.gauss.surface import condition_vector

log = logging.getLogger("avatar.gauss")

PIXEL_KEYS = ("img", "alpha", "neckhead", "mouth")
"""Pixel entries of a batch (uint8); a cached batch carries them as one ``pixels`` [B, H, W, 6] tensor."""

BACKGROUNDS = {"green": (0.0, 1.0, 0.0), "white": (1.0, 1.0, 1.0), "black": (0.0, 0.0, 0.0)}


def background_rgb(name: str) -> tuple[float, float, float]:
    """RGB 0..1 of a background name (``green``, upstream's default, ``white`` or ``black``)."""
    if name not in BACKGROUNDS:
        raise bad_input("config", f"unknown background {name!r}", f"use one of {', '.join(BACKGROUNDS)}")
    return BACKGROUNDS[name]


@dataclass
class TrackedSequence:
    """Per-frame tracking of one actor, checkpoint order (index ``i`` pairs with image ``i + 1``).

    Attributes:
        cond: [N, 120] float32 condition vectors (expression, jaw, eyes, eyelids).
        R: [N, 3, 3], t: [N, 3] OpenCV world-to-camera extrinsics (head pose lives here).
        K: [N, 3, 3] intrinsics in pixels of ``image_size``.
        shape: [S] identity coefficients (from frame 0, as upstream).
        image_size: (h, w) the intrinsics refer to.
        face: [N] bool, frames whose landmarks were found (``not filled`` in the dataset's
            ``tracking.npz``), or ``None`` where the dataset has no such record (upstream's tools).
    """

    cond: np.ndarray
    R: np.ndarray
    t: np.ndarray
    K: np.ndarray
    shape: np.ndarray
    image_size: tuple[int, int]
    face: np.ndarray | None = None

    def __len__(self) -> int:
        return self.cond.shape[0]

    def face_span(self) -> tuple[int, int] | None:
        """:func:`face_span` of :attr:`face` (``None`` without a record)."""
        return face_span(self.face) if self.face is not None else None

    @classmethod
    def load(cls, layout: DatasetLayout) -> "TrackedSequence":
        """Read every ``.frame`` of ``layout.checkpoint_dir`` (BadInput when there are none or keys lack)."""
        ckpt = layout.checkpoint_dir
        if layout.frame_count() == 0:
            raise bad_input(ckpt, "no .frame files", "run the assemble stage (or point at metrical-tracker's checkpoint/ folder)")
        seq = load_tracked_sequence(ckpt)
        need = ("flame.exp", "flame.jaw", "flame.eyes", "flame.eyelids", "opencv.R", "opencv.t", "opencv.K")
        missing = [k for k in need if k not in seq]
        if missing:
            raise bad_input(ckpt, f"some .frame files lack {', '.join(missing)}",
                            "re-run tracking/assemble so every frame has them")
        f0 = read_frame(layout.frame_path(0))
        size = f0.get("img_size")
        h, w = (int(size[0]), int(size[1])) if size is not None else (512, 512)
        cond = condition_vector(*(torch.from_numpy(seq[k]) for k in ("flame.exp", "flame.jaw", "flame.eyes", "flame.eyelids")))
        return cls(cond=cond.numpy().astype(np.float32), R=seq["opencv.R"], t=seq["opencv.t"], K=seq["opencv.K"],
                   shape=np.asarray(f0["flame"]["shape"], np.float32).reshape(-1), image_size=(h, w),
                   face=faces_found(layout.root / "tracking.npz", cond.shape[0]))


def faces_found(tracking: Path, n: int) -> np.ndarray | None:
    """[n] bool: the frames whose landmarks were found, from assemble's ``tracking.npz`` (its
    ``filled`` flags); ``None`` when the file or the flags are absent or of another length."""
    if not tracking.is_file():
        return None
    with np.load(tracking, allow_pickle=False) as z:
        if "filled" not in z.files or z["filled"].shape != (n,):
            return None
        return ~z["filled"].astype(bool)


def face_span(face: np.ndarray) -> tuple[int, int]:
    """``(a, b)``: frames ``[a, b)`` run from the first to the last frame with a face (``face`` [N]
    bool); ``(0, N)`` when no frame has one. The frames before ``a`` and from ``b`` on (a clip that
    starts before the person is in the picture, or ends after they left) have no face at all: their
    parameters are copies of the nearest tracked frame's, and their pictures show no face."""
    idx = np.flatnonzero(np.asarray(face, bool))
    if idx.size == 0:
        return 0, len(face)
    return int(idx[0]), int(idx[-1]) + 1


AUTO_TEST_FRACTION = 0.1
AUTO_MIN_TEST = 5
AUTO_MAX_TEST = 500
"""The default held-out split: the last 10% of the tracked frames, at least 5 and at most 500
(a 250-frame phone clip holds out 25, a 400-frame one 40, 5,000 frames and more hold out 500 like
upstream FlashAvatar, whose split is always the last 500)."""


@dataclass(frozen=True)
class Split:
    """Training and held-out checkpoint indices and the rule that chose them.

    Attributes:
        train: checkpoint indices trained on (the first ``min(max_train, n - len(test))``).
        test: held-out checkpoint indices (the last frames of the clip).
        rule: one sentence for the report: what was held out and why.
    """

    train: list[int]
    test: list[int]
    rule: str

    def describe(self) -> dict:
        """The report's ``held_out`` entry."""
        return {"frames": len(self.test), "first": self.test[0], "last": self.test[-1],
                "train_frames": len(self.train), "rule": self.rule}


def choose_split(n: int, test_frames: int | None = None, test_fraction: float | None = None,
                 max_train: int = 10000, span: tuple[int, int] | None = None) -> Split:
    """The split of ``n`` tracked frames (checkpoint order); held-out frames are always the last ones.

    ``span``: ``(a, b)``, the frames with a face (:func:`face_span`): the rules below then apply to
    frames ``[a, b)`` only, and the frames outside (no face in the picture) are neither trained on
    nor held out. ``None`` or ``(0, n)``: every frame.

    - ``test_fraction`` set: the last ``max(1, round(n * fraction))`` frames.
    - else ``test_frames`` set (> 0): the last ``test_frames`` (upstream FlashAvatar: 500).
    - else (the default): the last :data:`AUTO_TEST_FRACTION` of the clip, at least
      :data:`AUTO_MIN_TEST` and at most :data:`AUTO_MAX_TEST` frames, and never more than half the clip.

    Raises:
        BadInput: when no frame is left for training.
    """
    a, b = span if span is not None else (0, n)
    if (a, b) != (0, n):
        inner = choose_split(b - a, test_frames, test_fraction, max_train)
        gone = [f"the first {a}" if a else "", f"the last {n - b}" if b < n else ""]
        return Split([a + i for i in inner.train], [a + i for i in inner.test],
                     f"{inner.rule.replace('tracked frames', f'frames with a face ({a + 1}..{b} of {n})', 1)}; "
                     f"{' and '.join(g for g in gone if g)} frames show no face (landmarks not found) and are "
                     f"left out")
    if test_fraction is not None:
        n_test = max(1, round(n * test_fraction))
        rule = f"the last {test_fraction:.0%} of the {n} tracked frames (train.test_fraction)"
    elif test_frames:
        n_test = int(test_frames)
        rule = f"the last {n_test} of the {n} tracked frames (train.test_frames; upstream FlashAvatar's split)"
    else:
        n_test = min(AUTO_MAX_TEST, max(AUTO_MIN_TEST, round(n * AUTO_TEST_FRACTION)), max(1, n // 2))
        rule = (f"the last {n_test} of the {n} tracked frames: {AUTO_TEST_FRACTION:.0%} of the clip, at least "
                f"{AUTO_MIN_TEST} and at most {AUTO_MAX_TEST} (the default; upstream FlashAvatar always holds "
                f"out the last 500, set train.test_frames=500 for that)")
    if n - n_test < 1:
        raise bad_input("dataset", f"{n} tracked frames leave none for training with {n_test} held out",
                        "use a longer video or leave train.test_frames and train.test_fraction unset "
                        "(the default holds out 10%)")
    n_train = min(max_train, n - n_test)
    if n_train < n - n_test:
        rule += f"; training on the first {n_train} (train.max_train_frames)"
    return Split(list(range(n_train)), list(range(n - n_test, n)), rule)


def split_frames(n: int, test_frames: int | None = 500, test_fraction: float | None = None,
                 max_train: int = 10000, span: tuple[int, int] | None = None) -> tuple[list[int], list[int]]:
    """Training and held-out checkpoint indices (:func:`choose_split` without the rule's text).

    With the defaults upstream's split: the last 500 frames are the test set, training uses
    ``[0, min(max_train, n - 500))``; ``test_frames=None`` (and no fraction) is the adaptive default.
    """
    s = choose_split(n, test_frames, test_fraction, max_train, span)
    return s.train, s.test


def check_masks(layout: DatasetLayout, k: int) -> None:
    """Reject parsing masks saved as 0/1 instead of 0/255 (they silently break training upstream)."""
    from PIL import Image

    for path in (layout.neckhead_path(k), layout.mouth_path(k)):
        if not path.is_file():
            raise bad_input(path, "missing parsing mask", "re-run the masks and assemble stages")
        a = np.asarray(Image.open(path))
        if a.max() == 1:
            raise bad_input(path, "mask values are 0/1, expected 0/255", "re-save the masks as 0/255 (multiply by 255)")


def _load(path: Path, mode: str, size: int) -> np.ndarray:
    """uint8 pixels of an image file at ``size`` x ``size`` (:func:`stages.gauss.frame_cache.load_image`)."""
    return load_image(path, mode, size)


def composite_gt(img: Tensor, alpha: Tensor, neckhead: Tensor, background: Tensor) -> Tensor:
    """FlashAvatar's ground truth: ``gt = img*a + bg*(1-a)``, then ``gt*nh + bg*(1-nh)``.

    Args:
        img: [..., H, W, 3] uint8 or float 0..1; alpha, neckhead: [..., H, W] same kind; background: [3] 0..1.

    Returns:
        [..., H, W, 3] float32 in 0..1 (on the inputs' device: done on the GPU in training).
    """
    scale = 255.0 if img.dtype == torch.uint8 else 1.0
    x = img.float() / scale
    a = (alpha.float() / scale).unsqueeze(-1)
    nh = (neckhead.float() / scale).unsqueeze(-1)
    bg = background.to(x.device, torch.float32)
    return (x * a + bg * (1 - a)) * nh + bg * (1 - nh)


class AvatarFrames(Dataset):
    """Frames of one actor at ``resolution`` (square), decoded in DataLoader workers.

    Item ``j`` (checkpoint ``indices[j]``, image ``indices[j] + 1``) is a dict of uint8 pixels (the
    compositing into ground truth happens on the training device, :func:`composite_gt`, so workers
    only decode and host-to-device traffic stays small):
        img: [H, W, 3]; alpha, neckhead, mouth: [H, W] (0..255); cond: [120] float32;
        R: [3, 3]; t: [3]; K: [3, 3] scaled to ``resolution``; index: checkpoint number.
    ``background`` is kept for :meth:`ground_truth`.
    """

    def __init__(self, layout: DatasetLayout, seq: TrackedSequence, indices: list[int], resolution: int,
                 background: tuple[float, float, float]):
        self.layout, self.seq, self.indices = layout, seq, list(indices)
        self.resolution = resolution
        self.background = torch.tensor(background, dtype=torch.float32)
        h, w = seq.image_size
        self.k_scale = np.diag([resolution / w, resolution / h, 1.0]).astype(np.float32)
        self._meta = self._meta_table()

    def _meta_table(self) -> dict[str, Tensor]:
        """Per-position cond [n, 120], R [n, 3, 3], t [n, 3], K [n, 3, 3] (scaled), index [n] (int64)."""
        rows = [self._item_meta(i) for i in self.indices]
        keys = ("cond", "R", "t", "K", "index")
        if not rows:
            return {}
        return {k: torch.stack([r[k] for r in rows]) for k in keys}

    def _item_meta(self, i: int) -> dict[str, Tensor]:
        return {
            "cond": torch.from_numpy(np.array(self.seq.cond[i], np.float32)),
            "R": torch.from_numpy(np.asarray(self.seq.R[i], np.float32).copy()),
            "t": torch.from_numpy(np.asarray(self.seq.t[i], np.float32).copy()),
            "K": torch.from_numpy(self.k_scale @ np.asarray(self.seq.K[i], np.float32)),
            "index": torch.tensor(i),
        }

    def meta(self, positions: Tensor) -> dict[str, Tensor]:
        """The small per-frame entries (cond, R, t, K, index) of positions [B] (int64), batched."""
        return {k: v.index_select(0, positions) for k, v in self._meta.items()}

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, j: int) -> dict[str, Tensor]:
        i = self.indices[j]
        k = i + FRAME_DELTA
        s = self.resolution
        lay = self.layout
        return {
            "img": torch.from_numpy(_load(lay.image_path(k), "RGB", s)),
            "alpha": torch.from_numpy(_load(lay.alpha_path(k), "L", s)),
            "neckhead": torch.from_numpy(_load(lay.neckhead_path(k), "L", s)),
            "mouth": torch.from_numpy(_load(lay.mouth_path(k), "L", s)),
            **{key: v[j].clone() for key, v in self._meta.items()},
        }

    def ground_truth(self, batch: dict[str, Tensor]) -> Tensor:
        """[B, H, W, 3] float ground truth of a (collated) batch, on the batch's device."""
        return composite_gt(batch["img"], batch["alpha"], batch["neckhead"], self.background)


class StepBatchSampler(Sampler[list[int]]):
    """Batches for steps ``start .. stop-1``: the stream of positions ``step * batch + b`` walks
    epochs, each a permutation of ``range(n)`` drawn from ``seed`` and the epoch number.

    ``repeats`` ([n] ints >= 1, optional): frame ``i`` appears ``repeats[i]`` times in every epoch
    (an epoch is then a permutation of the expanded list), so rare frames are drawn more often."""

    def __init__(self, n: int, batch_size: int, seed: int, start: int, stop: int,
                 repeats: Sequence[int] | None = None):
        self.batch_size, self.seed, self.start, self.stop = batch_size, seed, start, stop
        self.items = (torch.arange(n) if repeats is None else
                      torch.repeat_interleave(torch.arange(n), torch.as_tensor(list(repeats), dtype=torch.long).clamp(min=1)))
        self.n = len(self.items)

    def _perm(self, epoch: int) -> Tensor:
        return self.items[torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 1_000_003 + epoch))]

    def __iter__(self) -> Iterator[list[int]]:
        cache: dict[int, Tensor] = {}
        for step in range(self.start, self.stop):
            batch = []
            for p in range(step * self.batch_size, (step + 1) * self.batch_size):
                e = p // self.n
                if e not in cache:
                    cache.clear()
                    cache[e] = self._perm(e)
                batch.append(int(cache[e][p % self.n]))
            yield batch

    def __len__(self) -> int:
        return max(0, self.stop - self.start)


def make_loader(frames: AvatarFrames, batch_sampler: Sampler | None = None, *, batch_size: int = 1,
                workers: int = 0, pin_memory: bool = False) -> DataLoader:
    """A DataLoader with worker processes and pinned memory (on CUDA). With a ``batch_sampler`` the
    order is the sampler's; else sequential batches of ``batch_size``. (torch's worker loop already
    runs each worker with one intra-op thread; the workers only decode with PIL and collate.)"""
    from stages.runner.lifeline import dataloader_worker_init  # workers die with this process

    kw = dict(num_workers=workers, pin_memory=pin_memory, persistent_workers=False)
    if workers > 0:
        kw["worker_init_fn"] = dataloader_worker_init
    if workers > 0:
        kw["prefetch_factor"] = 4
    if batch_sampler is not None:
        return DataLoader(frames, batch_sampler=batch_sampler, **kw)
    return DataLoader(frames, batch_size=batch_size, shuffle=False, **kw)


def split_pixels(batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """A batch with ``pixels`` [B, H, W, 6] turned into ``img`` [B, H, W, 3], ``alpha``, ``neckhead``,
    ``mouth`` [B, H, W] (views, no copy); other batches are returned as they are."""
    if "pixels" not in batch:
        return batch
    out = {k: v for k, v in batch.items() if k != "pixels"}
    p = batch["pixels"]
    out.update(img=p[..., :3], alpha=p[..., 3], neckhead=p[..., 4], mouth=p[..., 5])
    return out


class CachedBatches:
    """The batches of ``sampler`` gathered from a :class:`~stages.gauss.frame_cache.FrameCache`, or
    from a :class:`~stages.gauss.frame_cache.CacheBuild` still under way (each batch then waits for
    its rows: :meth:`~stages.gauss.frame_cache.CacheBuild.wait_rows`).

    Each batch is a dict: ``pixels`` uint8 [B, H, W, 6] (RGB, alpha, neckhead, mouth, the same bytes
    :class:`AvatarFrames` decodes) plus cond, R, t, K, index as in :class:`AvatarFrames`, in the
    sampler's order. The pixels are one ``index_select`` of cache rows into a fresh buffer (pinned
    when ``pin_memory``; the caching host allocator recycles it once its copy to the GPU is done).
    """

    def __init__(self, cache: FrameCache | CacheBuild, frames: AvatarFrames, sampler: Iterable[list[int]],
                 pin_memory: bool = False):
        if len(cache) != len(frames) or cache.resolution != frames.resolution:
            raise ValueError("the frame cache does not hold these frames")
        self.cache, self.frames, self.sampler, self.pin_memory = cache, frames, sampler, pin_memory
        self._build = cache if isinstance(cache, CacheBuild) else None
        self._rows = cache.tensor().view(len(cache), -1)  # [N, H*W*6]: the contiguous fast path of index_select

    def gather(self, positions: list[int]) -> dict[str, Tensor]:
        """One batch of ``positions`` (indices into ``frames``)."""
        if self._build is not None:
            self._build.wait_rows(positions)
        pos = torch.tensor(positions, dtype=torch.int64)
        s = self.frames.resolution
        buf = torch.empty((len(positions), self._rows.shape[1]), dtype=torch.uint8, pin_memory=self.pin_memory)
        torch.index_select(self._rows, 0, pos, out=buf)
        return {"pixels": buf.view(len(positions), s, s, 6), **self.frames.meta(pos)}

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        if self._build is None:
            for positions in self.sampler:
                yield self.gather(positions)
            return
        # a build under way: published by a thread once every row is decoded; given up (workers
        # stopped, temporary deleted) when the batches stop early or fail
        publish = threading.Thread(target=_publish, args=(self._build,), name="frame-cache-publish", daemon=True)
        publish.start()
        try:
            for positions in self.sampler:
                yield self.gather(positions)
        except BaseException:
            self._build.cancel()
            raise
        publish.join()

    def __len__(self) -> int:
        return len(self.sampler)  # type: ignore[arg-type]


class _Failure:
    def __init__(self, exc: BaseException):
        self.exc = exc


_DONE = object()
_LIVE: "set[tuple[threading.Event, threading.Thread]]" = set()


@atexit.register
def _stop_prefetchers() -> None:
    """Stop the threads of prefetchers never run to the end (else they die inside torch at exit)."""
    for stop, thread in list(_LIVE):
        stop.set()
        thread.join(timeout=5)


def prefetch_to_device(batches: Iterable[dict[str, Tensor]], device: str | torch.device, depth: int = 3
                       ) -> Iterator[dict[str, Tensor]]:
    """Iterate ``batches`` on ``device``, produced by a background thread up to ``depth`` batches ahead.

    On CUDA the host batches (pinned) are copied with ``non_blocking=True`` on a side stream; the
    consumer's stream waits on an event per batch and the tensors are marked as used by it
    (``record_stream``), so copies overlap the training step and no memory is reused early. On the
    CPU the thread only runs ahead (gathering or decoding overlaps the step). The order is the
    input's. Errors in the thread are raised in the consumer. ``pixels`` entries are split into
    ``img``/``alpha``/``neckhead``/``mouth`` views (:func:`split_pixels`).

    Memory: at most ``depth + 1`` batches exist at once (the queue bound), host and device.
    """
    dev = torch.device(device)
    on_cuda = dev.type == "cuda"
    if on_cuda and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())  # the thread must set an indexed device
    q: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            stream = None
            if on_cuda:
                torch.cuda.set_device(dev)
                stream = torch.cuda.Stream(dev)
            for host in batches:
                if stop.is_set():
                    return
                if stream is not None:
                    with torch.cuda.stream(stream):
                        moved = {k: v.to(dev, non_blocking=True) for k, v in host.items()}
                        event = torch.cuda.Event()
                        event.record(stream)
                    item = (moved, event)
                else:
                    item = (host, None)
                del host
                if not put(item):
                    return
            put(_DONE)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            put(_Failure(e))

    thread = threading.Thread(target=produce, name="avatar-prefetch", daemon=True)
    thread.start()
    _LIVE.add((stop, thread))
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.exc
            batch, event = item
            if event is not None:
                cur = torch.cuda.current_stream(dev)
                cur.wait_event(event)
                for v in batch.values():
                    v.record_stream(cur)
            yield split_pixels(batch)
    finally:
        stop.set()
        while thread.is_alive():
            try:
                q.get(timeout=0.1)
            except queue.Empty:
                pass
        thread.join()
        _LIVE.discard((stop, thread))


FRAME_CACHE_MODES = ("auto", "on", "off")


@dataclass
class PipelineInfo:
    """How :func:`training_batches` feeds the trainer: ``source`` is ``cache`` or ``decode``;
    ``cache_built`` whether this run decoded the cache, ``cache_seconds`` the time from opening it or
    starting its build (:func:`start_cache`) until it was ready (a build started ahead counts the work
    done meanwhile), ``cache_path`` its file (empty without one)."""

    source: str
    cache_built: bool = False
    cache_seconds: float = 0.0
    cache_path: str = ""
    notes: list[str] = field(default_factory=list)


@dataclass
class CacheStart:
    """The frame cache of :func:`training_batches`, opened or its build started ahead (:func:`start_cache`).

    Attributes:
        got: the current cache, a build under way, or None (no cache: ``off``, no room, or it failed).
        t0: ``time.monotonic()`` when it was started.  notes: why there is none, when there is none.
        error: the OSError that stopped it (``frame_cache: on`` turns it into a BadInput).
    """

    got: FrameCache | CacheBuild | None
    t0: float
    notes: list[str] = field(default_factory=list)
    error: OSError | None = None

    def cancel(self) -> None:
        """Give up a build under way (its workers stop, its temporary file goes)."""
        if isinstance(self.got, CacheBuild):
            self.got.cancel()


def first_use_order(batches: Iterable[list[int]], n: int) -> list[int]:
    """Positions ``0 .. n-1`` in the order ``batches`` first ask for them (those never asked for
    left out): the order in which to decode a frame cache so training can start on its first rows."""
    seen: dict[int, None] = {}
    for batch in batches:
        for p in batch:
            seen.setdefault(int(p), None)
        if len(seen) >= n:
            break
    return list(seen)


def start_cache(frames: AvatarFrames, *, frame_cache: str = "auto", cache_dir: str | Path | None = None,
                workers: int = 0, order: Sequence[int] | None = None) -> CacheStart:
    """Open the current frame cache of ``frames`` or start building it (the decoding processes
    forked and at work when this returns, decoding ``order``'s positions first), so the caller can
    do other work before :func:`training_batches` uses it; the arguments are :func:`training_batches`' own."""
    import time

    if frame_cache not in FRAME_CACHE_MODES:
        raise bad_input("config", f"unknown frame_cache {frame_cache!r}", f"use one of {', '.join(FRAME_CACHE_MODES)}")
    if frame_cache == "on" and cache_dir is None:
        raise ValueError("frame_cache='on' needs a cache_dir")
    t0 = time.monotonic()
    if frame_cache == "off" or cache_dir is None or len(frames) == 0:
        return CacheStart(None, t0)
    if frame_cache == "auto" and not has_room(cache_dir, len(frames), frames.resolution):
        note = f"no room for a {len(frames)}-frame cache in {cache_dir}: decoding per item"
        log.warning("frame cache: %s", note)
        return CacheStart(None, t0, [note])
    try:
        # every core but one: the training step's own thread runs beside the decoding from the start
        procs = max(2, default_processes() - 1) if workers > 0 else 0
        return CacheStart(start_frame_cache(frames.layout, frames.indices, frames.resolution, cache_dir,
                                            procs, order), t0)
    except OSError as e:
        return _cache_failed(frame_cache, cache_dir, e, t0)


def _cache_failed(frame_cache: str, cache_dir: str | Path | None, e: OSError, t0: float) -> CacheStart:
    if frame_cache == "on":
        raise bad_input(cache_dir, f"cannot write the frame cache ({e})",
                        "free disk space there or set train.frame_cache to off") from None
    note = f"frame cache failed ({e}): decoding per item"
    log.warning("frame cache: %s", note)
    return CacheStart(None, t0, [note], e)


def training_batches(frames: AvatarFrames, sampler: StepBatchSampler, device: str | torch.device, *,
                     frame_cache: str = "auto", cache_dir: str | Path | None = None, workers: int = 0,
                     prefetch: int = 3, started: CacheStart | None = None
                     ) -> tuple[Iterator[dict[str, Tensor]], PipelineInfo]:
    """The trainer's batches on ``device``, in the sampler's order, with the same bytes either way.

    ``frame_cache``: ``on`` decodes every frame once into ``cache_dir`` (or reuses a current cache)
    and gathers batches from it; ``auto`` does so when ``cache_dir``'s disk has room (else falls
    back, with a log line); ``off`` decodes per item in ``workers`` DataLoader processes.
    Cache builds use every core when ``workers > 0``, this process when ``workers == 0``.
    ``prefetch``: batches kept ready ahead (:func:`prefetch_to_device`). ``started``: the cache as
    :func:`start_cache` opened or started it with the same arguments (default: done here). A build
    with decoding processes is not waited for: the batches start on its first rows (each batch
    waits for its own) and a background thread publishes the file once every row is decoded.

    Returns (iterator of batches with img/alpha/neckhead/mouth uint8 and cond/R/t/K/index, info).
    """
    import time

    if started is None:
        started = start_cache(frames, frame_cache=frame_cache, cache_dir=cache_dir, workers=workers)
    pin = torch.device(device).type == "cuda"
    info = PipelineInfo(source="decode", notes=list(started.notes))
    got = started.got
    if isinstance(got, CacheBuild) and got.pool is not None:  # train on the rows as they are decoded
        info = PipelineInfo("cache", True, time.monotonic() - started.t0, str(got.path), info.notes)
        return prefetch_to_device(CachedBatches(got, frames, sampler, pin), device, prefetch), info
    if isinstance(got, CacheBuild):
        try:
            got = got.finish()
        except OSError as e:
            info.notes += _cache_failed(frame_cache, cache_dir, e, started.t0).notes
            got = None
        built = True
    else:
        built = False
    if got is not None:
        info = PipelineInfo("cache", built, time.monotonic() - started.t0, str(got.path), info.notes)
        return prefetch_to_device(CachedBatches(got, frames, sampler, pin), device, prefetch), info
    loader = make_loader(frames, sampler, workers=workers, pin_memory=pin)
    return prefetch_to_device(loader, device, prefetch), info


def _publish(build: CacheBuild) -> None:
    """Finish ``build`` (wait for every row, write the header, rename into place; no fsync: a
    cache in a run's scratch folder outlives no crash); a failure is logged, not raised: the
    batches that need a row that failed raise its error themselves."""
    try:
        build.finish(sync=False)
    except BaseException as e:  # noqa: BLE001 - in a thread; the consumer meets real faults itself
        log.warning("frame cache: not kept (%s)", e)


def find_dataset_root(paths: list[Path]) -> DatasetLayout:
    """The layout holding a set of fetched dataset files: the folder with ``imgs/`` and the folder of
    the ``.frame`` files (BadInput when either is missing)."""
    imgs = [p for p in paths if p.parent.name == "imgs" and p.suffix == ".jpg"]
    frames = [p for p in paths if p.suffix == ".frame"]
    if not imgs or not frames:
        raise bad_input("dataset", "no imgs/*.jpg or no checkpoint/*.frame among the assemble stage's outputs",
                        "re-run the assemble stage")
    return DatasetLayout(imgs[0].parent.parent, frames[0].parent)
