"""Decoded-frame cache: every training frame decoded once into one uint8 file on local disk.

Per-step JPEG/PNG decoding (4 files a frame) cannot keep up with a GPU that trains on 1,500+
images/s, and putting the whole dataset on the GPU is not allowed (upstream needs ~50 GB for 10k
frames). So the frames are decoded once, in a process pool on all cores, into one file that is then
read through a memory map: a batch is one gather of rows into a (pinned) buffer, no decoding. The
OS page cache keeps the hot rows in memory; the process itself holds only the batches in flight.
Training need not wait for the whole file: a :class:`CacheBuild` decodes the rows in the order the
first steps ask for them, and each batch waits only for its own rows (:meth:`CacheBuild.wait_rows`).

File (``frames-r<res>-<key>.u8``, written to a temporary name, fsynced, then renamed, so a killed
build never leaves a file under the final name):

- bytes ``[0, 4096)``: :data:`MAGIC` then the header as JSON (:class:`CacheHeader`), zero padded;
- bytes ``[4096, 4096 + N*H*W*6)``: uint8 ``[N, H, W, 6]``, row ``j`` = checkpoint ``indices[j]``
  (image ``indices[j] + 1``), channels RGB, alpha, neck-and-head mask, mouth mask, at the training
  resolution, byte-identical to what :func:`load_image` gives for each file.

A cache is stale (and rebuilt) when the resolution, the indices or any file's size or mtime differ
from its header (:func:`dataset_fingerprint`). This module imports no torch, so the pool's worker
processes start quickly.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import shutil
import threading
import time
from concurrent.futures import CancelledError, ProcessPoolExecutor
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from stages.dataset.layout import FRAME_DELTA, DatasetLayout
from stages.errors import bad_input

log = logging.getLogger("avatar.gauss")

MAGIC = b"AVFCACHE1\n"
HEADER_BYTES = 4096
CHANNELS = 6
FORMAT = "avatar-frame-cache/1"
ROOM_MARGIN = 2 * 2 ** 30
"""Bytes a disk must have free beyond the cache itself for ``auto`` to build one."""


def load_image(path: Path, mode: str, size: int) -> np.ndarray:
    """uint8 pixels of an image file at ``size`` x ``size`` (PIL bilinear resize when needed).

    ``mode``: ``RGB`` -> [size, size, 3]; ``L`` -> [size, size]. BadInput when unreadable."""
    from PIL import Image

    try:
        with Image.open(path) as f:
            im = f.convert(mode)
    except (FileNotFoundError, OSError) as e:
        raise bad_input(path, f"cannot read image ({e})", "re-run the assemble stage") from None
    if im.size != (size, size):
        im = im.resize((size, size), Image.BILINEAR)
    return np.array(im, dtype=np.uint8)  # a writable copy


def frame_files(layout: DatasetLayout, index: int) -> tuple[Path, Path, Path, Path]:
    """Image, alpha, neck-and-head and mouth files of checkpoint ``index``."""
    k = index + FRAME_DELTA
    return layout.image_path(k), layout.alpha_path(k), layout.neckhead_path(k), layout.mouth_path(k)


def decode_frame(layout: DatasetLayout, index: int, resolution: int, out: np.ndarray | None = None) -> np.ndarray:
    """The 6 channels of checkpoint ``index`` at ``resolution``: uint8 [H, W, 6] (RGB, alpha,
    neck-and-head, mouth), written into ``out`` when given."""
    img, alpha, nh, mouth = frame_files(layout, index)
    if out is None:
        out = np.empty((resolution, resolution, CHANNELS), np.uint8)
    out[..., :3] = load_image(img, "RGB", resolution)
    out[..., 3] = load_image(alpha, "L", resolution)
    out[..., 4] = load_image(nh, "L", resolution)
    out[..., 5] = load_image(mouth, "L", resolution)
    return out


def dataset_fingerprint(layout: DatasetLayout, indices: list[int]) -> str:
    """sha256 over each frame's four file names, sizes and modification times (ns): changes when a
    file is rewritten, added or removed, without reading any pixels (4 ``stat`` calls a frame)."""
    h = hashlib.sha256()
    for i in indices:
        for p in frame_files(layout, i):
            try:
                st = p.stat()
            except FileNotFoundError:
                raise bad_input(p, "missing dataset file", "re-run the masks and assemble stages") from None
            h.update(f"{p.parent.name}/{p.name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _indices_digest(indices: list[int]) -> str:
    return hashlib.sha256(json.dumps(list(map(int, indices))).encode()).hexdigest()


@dataclass
class CacheHeader:
    """What a cache file holds. ``shape`` = [N, H, W, 6]; ``fingerprint``: :func:`dataset_fingerprint`."""

    format: str
    shape: list[int]
    resolution: int
    indices_digest: str
    fingerprint: str
    dataset_root: str
    build_seconds: float = 0.0

    def encode(self) -> bytes:
        raw = MAGIC + json.dumps(asdict(self)).encode()
        if len(raw) > HEADER_BYTES:
            raise ValueError("frame cache header too long")
        return raw + b"\0" * (HEADER_BYTES - len(raw))

    @classmethod
    def read(cls, path: Path) -> "CacheHeader | None":
        """The header of ``path``, or ``None`` when it is missing or not a cache file."""
        try:
            with open(path, "rb") as f:
                raw = f.read(HEADER_BYTES)
            if not raw.startswith(MAGIC):
                return None
            d = json.loads(raw[len(MAGIC):].rstrip(b"\0"))
            return cls(**d)
        except (OSError, ValueError, TypeError):
            return None


def cache_bytes(n: int, resolution: int) -> int:
    """Size in bytes of the pixel block of a cache of ``n`` frames."""
    return n * resolution * resolution * CHANNELS


def cache_path(cache_dir: str | Path, layout: DatasetLayout, indices: list[int], resolution: int) -> Path:
    """Where the cache of these frames lives in ``cache_dir`` (one name per dataset, resolution and
    frame list; the header decides whether its content is current)."""
    key = hashlib.sha256(f"{Path(layout.root).resolve()}|{_indices_digest(indices)}".encode()).hexdigest()[:16]
    return Path(cache_dir) / f"frames-r{resolution}-{key}.u8"


def has_room(cache_dir: str | Path, n: int, resolution: int, margin: int = ROOM_MARGIN) -> bool:
    """Whether the disk of ``cache_dir`` has room for the cache plus ``margin`` bytes."""
    d = Path(cache_dir)
    d.mkdir(parents=True, exist_ok=True)
    return shutil.disk_usage(d).free >= cache_bytes(n, resolution) + HEADER_BYTES + margin


class FrameCache:
    """An open cache: ``array`` is a read-only view (copy-on-write memory map) of uint8 [N, H, W, 6].

    Nothing is read until rows are touched; the pages live in the OS page cache, not in this
    process's heap. :meth:`tensor` is the same memory as a torch tensor (no copy)."""

    def __init__(self, path: Path, header: CacheHeader):
        self.path, self.header = Path(path), header
        # mode "c": writes (none are made) would stay private; torch.from_numpy needs a writable array
        self.array = np.memmap(self.path, dtype=np.uint8, mode="c", offset=HEADER_BYTES, shape=tuple(header.shape))

    def __len__(self) -> int:
        return self.header.shape[0]

    @property
    def resolution(self) -> int:
        return self.header.resolution

    def tensor(self):
        """torch uint8 [N, H, W, 6] sharing the memory map (import of torch deferred)."""
        import torch

        return torch.from_numpy(self.array)


def open_frame_cache(path: str | Path, layout: DatasetLayout, indices: list[int], resolution: int) -> FrameCache | None:
    """The cache at ``path`` if it is current for these frames (header, size, fingerprint), else ``None``."""
    path = Path(path)
    h = CacheHeader.read(path)
    if h is None:
        return None
    n = len(indices)
    want = [n, resolution, resolution, CHANNELS]
    if (h.format != FORMAT or h.shape != want or h.resolution != resolution or h.indices_digest != _indices_digest(indices)
            or path.stat().st_size != HEADER_BYTES + cache_bytes(n, resolution)):
        return None
    if h.fingerprint != dataset_fingerprint(layout, indices):
        log.info("frame cache %s is stale (dataset files changed)", path)
        return None
    return FrameCache(path, h)


def _decode_rows(tmp: str, shape: tuple[int, ...], root: str, checkpoints: str | None, indices: list[int],
                 rows: Sequence[int], resolution: int) -> int:
    """Pool task: decode ``rows`` straight into the temporary cache file."""
    layout = DatasetLayout(Path(root), Path(checkpoints) if checkpoints else None)
    mm = np.memmap(tmp, dtype=np.uint8, mode="r+", offset=HEADER_BYTES, shape=shape)
    for r in rows:
        decode_frame(layout, indices[r], resolution, out=mm[r])
    mm.flush()
    del mm
    return len(rows)


def _remove_dead_temporaries(path: Path) -> None:
    """Delete temporaries of builds of ``path`` whose process is gone (a killed build)."""
    for p in path.parent.glob(path.name + ".tmp-*"):
        try:
            pid = int(p.name.rsplit("-", 1)[1])
            os.kill(pid, 0)
        except ProcessLookupError:
            p.unlink(missing_ok=True)
        except (ValueError, PermissionError, OSError):
            pass


def default_processes() -> int:
    """CPU cores this process may use (the pool size of a build)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


class CacheBuild:
    """A build of a cache file under way: the decoding processes are forked and given their rows
    when it is made (in the calling thread), so the caller can do other work meanwhile;
    :meth:`finish` waits for them and publishes the file (atomically), :meth:`cancel` gives up.

    With a pool, the rows can be read before the build is finished: :meth:`wait_rows` returns once
    the given rows are decoded (re-raising a decoding error, e.g. BadInput for a missing file) and
    :meth:`tensor` is the temporary file's memory map, so training can start on the first rows
    while the rest decode. ``order`` says which rows to decode first (the trainer passes the
    order its batches will ask for them, :func:`stages.gauss.data.first_use_order`).

    Args:
        processes: decoding processes (default: every core of :func:`default_processes`); 0 or 1
            decodes in this process, in :meth:`finish`.
        order: the rows in the order to decode them (default: ``0 .. n-1``); rows it leaves out
            follow in their order.
    """

    def __init__(self, layout: DatasetLayout, indices: list[int], resolution: int, path: str | Path,
                 processes: int | None = None, order: Sequence[int] | None = None):
        self.layout, self.resolution, self.path = layout, resolution, Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _remove_dead_temporaries(self.path)
        self.t0 = time.monotonic()
        self.indices = [int(i) for i in indices]
        n = len(self.indices)
        self.shape = (n, resolution, resolution, CHANNELS)
        # before decoding: a file changed meanwhile makes the cache stale
        self.fingerprint = dataset_fingerprint(layout, self.indices)
        self.tmp = self.path.with_name(f"{self.path.name}.tmp-{os.getpid()}")
        self.pool: ProcessPoolExecutor | None = None
        self.futures: list = []
        self._chunk_of_row = np.zeros(n, np.int64)  # row -> index into futures
        self.failure: BaseException | None = None  # what stopped finish() (its later tasks were cancelled)
        self._lock, self._shut = threading.Lock(), False
        self._view: np.memmap | None = None
        self._args = (str(self.tmp), self.shape, str(layout.root),
                      str(layout.checkpoints) if layout.checkpoints is not None else None, self.indices)
        try:
            with open(self.tmp, "wb") as f:
                f.truncate(HEADER_BYTES + cache_bytes(n, resolution))
            procs = default_processes() if processes is None else processes
            if procs > 1 and n >= 2:
                procs = min(procs, n)
                # small tasks, so the rows asked for first are ready soon after the build starts
                chunk = max(1, -(-n // (procs * 16)))
                rows = _full_order(order, n)
                # fork: the workers only decode with PIL/numpy (never CUDA), like DataLoader workers
                ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
                from stages.runner.lifeline import worker_init  # workers die with this process

                self.pool = ProcessPoolExecutor(procs, mp_context=ctx, initializer=worker_init)
                for lo in range(0, n, chunk):
                    part = rows[lo:lo + chunk]
                    self._chunk_of_row[part] = len(self.futures)
                    self.futures.append(self.pool.submit(_decode_rows, *self._args, part, resolution))
        except BaseException:
            self.cancel()
            raise

    def finish(self, sync: bool = True) -> FrameCache:
        """Wait for the decoding (or decode here), write the header, rename into place; the cache.
        ``sync``: fsync the file before the rename (a cache meant to outlive a crash)."""
        n = self.shape[0]
        try:
            if self.pool is None:
                _decode_rows(*self._args, range(n), self.resolution)
            else:
                done = sum(f.result() for f in self.futures)
                self._shutdown(cancel=False)
                assert done == n
            header = CacheHeader(FORMAT, list(self.shape), self.resolution, _indices_digest(self.indices),
                                 self.fingerprint, str(self.layout.root), round(time.monotonic() - self.t0, 3))
            with open(self.tmp, "r+b") as f:
                f.write(header.encode())
                f.flush()
                if sync:
                    os.fsync(f.fileno())
            os.replace(self.tmp, self.path)
        except BaseException as e:
            self.failure = e
            self.cancel()
            raise
        log.info("frame cache: decoded %d frames at %dpx into %s (%.1f MB) in %.2f s", n, self.resolution, self.path,
                 cache_bytes(n, self.resolution) / 1e6, time.monotonic() - self.t0)
        return FrameCache(self.path, header)

    def __len__(self) -> int:
        return self.shape[0]

    def wait_rows(self, rows: Iterable[int]) -> None:
        """Return once every row of ``rows`` is decoded into the temporary file; a decoding error
        of one of them is raised here. Needs the pool (``processes`` > 1)."""
        if self.pool is None:
            raise RuntimeError("rows of a build without decoding processes are ready only after finish()")
        for i in sorted({int(self._chunk_of_row[r]) for r in rows}):
            try:
                self.futures[i].result()
            except CancelledError:  # finish() met another task's error first and gave the build up
                raise self.failure if self.failure is not None else RuntimeError("the frame cache build was cancelled")

    def tensor(self):
        """torch uint8 [N, H, W, 6] over the temporary file (read only what :meth:`wait_rows` said is
        decoded; the map stays valid after :meth:`finish` renames the file)."""
        import torch

        if self._view is None:
            self._view = np.memmap(self.tmp, dtype=np.uint8, mode="c", offset=HEADER_BYTES, shape=self.shape)
        return torch.from_numpy(self._view)

    def cancel(self) -> None:
        """Stop the workers (rows not started are dropped) and delete the temporary file. Safe to
        call from several threads (a publishing thread and the batches' consumer) and more than once."""
        self._shutdown(cancel=True)
        self.tmp.unlink(missing_ok=True)

    def _shutdown(self, cancel: bool) -> None:
        with self._lock:  # ProcessPoolExecutor.shutdown from two threads at once can close its pipe twice
            if self.pool is not None and not self._shut:
                self._shut = True
                self.pool.shutdown(wait=True, cancel_futures=cancel)


def _full_order(order: Sequence[int] | None, n: int) -> np.ndarray:
    """``order`` (rows ``0 .. n-1``, each at most once) followed by the rows it leaves out."""
    if order is None:
        return np.arange(n)
    first = np.asarray(list(order), np.int64)
    if first.size and (first.min() < 0 or first.max() >= n or len(np.unique(first)) != first.size):
        raise ValueError(f"order must name rows 0..{n - 1} at most once each")
    rest = np.setdiff1d(np.arange(n), first, assume_unique=True)
    return np.concatenate([first, rest])


def build_frame_cache(layout: DatasetLayout, indices: list[int], resolution: int, path: str | Path,
                      processes: int | None = None) -> FrameCache:
    """Decode every frame of ``indices`` once into a cache file at ``path`` (atomically) and open it.

    Args:
        processes: decoding processes (default: every core of :func:`default_processes`); 0 or 1
            decodes in this process.
    """
    return CacheBuild(layout, indices, resolution, path, processes).finish()


def start_frame_cache(layout: DatasetLayout, indices: list[int], resolution: int, cache_dir: str | Path,
                      processes: int | None = None, order: Sequence[int] | None = None) -> FrameCache | CacheBuild:
    """The current cache of these frames in ``cache_dir``, or a :class:`CacheBuild` of it started
    (its workers forked and at work when this returns, decoding ``order``'s rows first)."""
    path = cache_path(cache_dir, layout, indices, resolution)
    cache = open_frame_cache(path, layout, indices, resolution)
    return cache if cache is not None else CacheBuild(layout, indices, resolution, path, processes, order)


def ensure_frame_cache(layout: DatasetLayout, indices: list[int], resolution: int, cache_dir: str | Path,
                       processes: int | None = None) -> tuple[FrameCache, bool]:
    """The current cache of these frames in ``cache_dir``, built when missing or stale.

    Returns (cache, built) where ``built`` says whether this call decoded the frames."""
    got = start_frame_cache(layout, indices, resolution, cache_dir, processes)
    return (got.finish(), True) if isinstance(got, CacheBuild) else (got, False)
