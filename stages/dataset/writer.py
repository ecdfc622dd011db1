"""Write a FlashAvatar dataset straight into its store, in parallel, checking every file on the bytes
that are written (assemble's heavy half).

The work is cut into :class:`Chunk` s, runs of frames of one shard. A chunk's images come from the
ingest shard tar (``00001.jpg`` -> ``imgs/00001.jpg``) and the masks shard tar (``alpha/...``,
``parsing/...``, kept as named); its ``.frame`` files (``checkpoint/{i:05d}.frame``, ``i = k -
FRAME_DELTA``) are built from rows of tracked parameters. Every file goes to the store under the
dataset's prefix with one ``put_bytes`` (atomic; no temporary folder, no second copy), and its content is
checked on those same bytes (:func:`stages.dataset.verify.image_problem`,
:func:`stages.dataset.verify.frame_bytes_problems`). What is left of the verification (counts,
numbering, pairing, strays) needs only the names: :func:`stages.dataset.verify.structure_problems`.

Chunks run in worker processes forked from the caller (torch, cv2 and numpy already imported there;
a fresh interpreter would spend seconds importing torch), one store client each; with one worker, in
the calling process. The workers run no torch kernels (``torch.save``/``torch.load`` of numpy arrays
only), so forking a process that holds a CUDA context is safe, as it is for a DataLoader's workers.
Nor do they touch OpenCV's thread pool (``cv2.imdecode`` only; ``cv2.setNumThreads`` or a parallel
function such as ``cvtColor`` can hang in a child forked from a process whose pool is running).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import tarfile
from collections.abc import Container, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field

import numpy as np

from stages.dataset.frame_file import frame_bytes, make_frame
from stages.dataset.layout import FRAME_DELTA, IMAGE_SIZE, rel_paths
from stages.dataset.verify import frame_bytes_problems, image_kind, image_problem
from stages.frameshard import tar_index
from stages.store.base import Store

ROW_KEYS = ("exp", "eyes", "eyelids", "jaw", "R", "t")
"""Per-frame arrays of :class:`FrameRows` besides ``camera``."""


@dataclass(frozen=True)
class FrameConstants:
    """What every ``.frame`` of the dataset shares.

    Attributes:
        shape: [300] FLAME identity.  K: [3,3] OpenCV intrinsics, pixels.
        tex: [140] FLAME texture coefficients or None (zeros).  sh: [9,3] lighting or None (zeros).
        img_size: (h, w).
    """

    shape: np.ndarray
    K: np.ndarray
    tex: np.ndarray | None = None
    sh: np.ndarray | None = None
    img_size: tuple[int, int] = (IMAGE_SIZE, IMAGE_SIZE)


@dataclass(frozen=True)
class FrameRows:
    """Per-frame parameters of checkpoints ``first .. first+N-1``.

    Attributes:
        first: checkpoint number of row 0.
        exp [N,100], eyes [N,12], eyelids [N,2], jaw [N,6]: FLAME parameters (6D rotations).
        R [N,3,3], t [N,3]: OpenCV world-to-camera rotation and translation (head pose).
        camera: PyTorch3D form, ``{"R": [N,6], "t": [N,3], "fl": [N,1], "pp": [N,2]}``.
    """

    first: int
    exp: np.ndarray
    eyes: np.ndarray
    eyelids: np.ndarray
    jaw: np.ndarray
    R: np.ndarray
    t: np.ndarray
    camera: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.exp.shape[0])

    def rows(self, a: int, b: int) -> "FrameRows":
        """Checkpoints ``a .. b-1`` (copies: a chunk sent to a worker carries only its rows)."""
        lo, hi = a - self.first, b - self.first
        if lo < 0 or hi > len(self) or lo > hi:
            raise IndexError(f"checkpoints {a}..{b - 1} outside {self.first}..{self.first + len(self) - 1}")
        return FrameRows(a, *(np.array(getattr(self, k)[lo:hi]) for k in ROW_KEYS),
                         camera={k: np.array(v[lo:hi]) for k, v in self.camera.items()})

    def frame(self, i: int, const: FrameConstants) -> dict:
        """Checkpoint ``i``'s ``.frame`` dict (``global_step`` = ``i``)."""
        j = i - self.first
        return make_frame(i, exp=self.exp[j], shape=const.shape, eyes=self.eyes[j], eyelids=self.eyelids[j],
                          jaw=self.jaw[j], R=self.R[j], t=self.t[j], K=const.K,
                          camera={k: v[j] for k, v in self.camera.items()}, img_size=const.img_size,
                          tex=const.tex, sh=const.sh, global_step=i)


@dataclass(frozen=True)
class Chunk:
    """Frames ``start .. stop-1`` (numbered from 1) of one shard.

    Attributes:
        frames_tar: local path of the ingest shard tar holding ``{k:05d}.jpg``.
        masks_tar: local path of the masks shard tar holding ``alpha/``, ``parsing/`` members.
        rows: the parameters of checkpoints ``start - FRAME_DELTA .. stop - 1 - FRAME_DELTA``.
        unnumbered: also write tar members whose name carries no frame number (one chunk of each
            shard does, so that the name check sees them as strays, as it would in a copied folder).
    """

    start: int
    stop: int
    frames_tar: str
    masks_tar: str
    rows: FrameRows
    unnumbered: bool = False


@dataclass
class ChunkResult:
    """Attributes:
        start, stop: the chunk's frames.
        outputs: ``{dataset-relative path: sha256}`` of every file written.
        problems: what the content checks found (``"<store location>: <problem>"``).
    """

    start: int
    stop: int
    outputs: dict[str, str]
    problems: list[str]

    @property
    def frames(self) -> int:
        return self.stop - self.start


def member_number(name: str) -> int | None:
    """The frame number a tar member's base name starts with (``alpha/00012.jpg`` -> 12), or None."""
    base = name.rsplit("/", 1)[-1]
    digits = base[:5]
    return int(digits) if len(digits) == 5 and digits.isdigit() else None


def tar_members(path: str | os.PathLike, start: int, stop: int, unnumbered: bool = False,
                only: Container[int] | None = None) -> Iterator[tuple[str, bytes]]:
    """``(name, bytes)`` of the regular members of an uncompressed tar whose frame number is in
    ``start .. stop-1`` (and in ``only`` when given; with ``unnumbered``, also those without a
    number), in stored order. Other members' data is not read."""
    def wanted(name: str) -> bool:
        k = member_number(name)
        return (k is None and unnumbered) or (k is not None and start <= k < stop and (only is None or k in only))

    try:
        index = tar_index(path)
    except ValueError:  # not a plain tar we can index: let tarfile read it (and raise if it is broken)
        with tarfile.open(path, "r:") as tar:
            for info in tar:
                if info.isfile() and wanted(info.name):
                    f = tar.extractfile(info)
                    assert f is not None
                    yield info.name, f.read()
        return
    with open(path, "rb") as f:
        for name, offset, size in index:
            if wanted(name):
                f.seek(offset)
                yield name, f.read(size)


def plan_chunks(shard_bounds: list[tuple[int, int]], workers: int, min_frames: int = 32) -> list[tuple[int, int, int, bool]]:
    """Cut shards ``[(start, stop), ...]`` into about ``3 x workers`` chunks in all (so that the last
    ones finish close together), each shard in proportion to its length, no chunk shorter than
    ``min_frames`` unless its shard is; returns ``[(shard position, start, stop, first of its
    shard), ...]`` in frame order."""
    out = []
    total = max(1, sum(b - a for a, b in shard_bounds))
    target = 3 * max(1, workers)
    for index, (a, b) in enumerate(shard_bounds):
        p = max(1, min(round(target * (b - a) / total), (b - a) // max(1, min_frames)))
        edges = np.linspace(a, b, p + 1).round().astype(int)
        out += [(index, int(x), int(y), j == 0) for j, (x, y) in enumerate(zip(edges[:-1], edges[1:])) if y > x]
    return out


def write_chunk(store: Store, prefix: str, chunk: Chunk, const: FrameConstants, *,
                check_pixels: bool = True) -> ChunkResult:
    """Write one chunk's images, masks and ``.frame`` files under ``prefix`` (the dataset's key,
    e.g. ``actors/A/dataset``) and check each on its bytes.

    Frame content is always checked; ``check_pixels`` also checks every image (decodes the masks)."""
    outputs: dict[str, str] = {}
    problems: list[str] = []

    def put(rel: str, data: bytes) -> str:
        key = f"{prefix}/{rel}"
        outputs[rel] = store.put_bytes(key, data)
        return f"{store.uri}/{key}"

    passed: set[tuple[str, int | None, bool]] = set()  # (sha256, kind) found fine: identical masks (a closed
    for path, folder in ((chunk.frames_tar, "imgs/"), (chunk.masks_tar, "")):  # mouth) are checked once
        for name, data in tar_members(path, chunk.start, chunk.stop, chunk.unnumbered):
            rel = folder + name
            where = put(rel, data)
            if check_pixels and member_number(name) is not None:
                seen = (outputs[rel], *image_kind(rel))
                if seen in passed:
                    continue
                found = image_problem(where, data, *image_kind(rel))
                if found:
                    problems.append(found)
                else:
                    passed.add(seen)
    for k in range(chunk.start, chunk.stop):
        i = k - FRAME_DELTA
        data = frame_bytes(chunk.rows.frame(i, const))
        problems += frame_bytes_problems(put(rel_paths(i)["frame"], data), i, data)
    return ChunkResult(chunk.start, chunk.stop, outputs, problems)


_WORKER_STORE: Store | None = None


def _init_worker(store_uri: str) -> None:
    global _WORKER_STORE
    from stages.store.uri import open_store

    _WORKER_STORE = open_store(store_uri)


def _run_chunk(prefix: str, chunk: Chunk, const: FrameConstants, check_pixels: bool) -> ChunkResult:
    assert _WORKER_STORE is not None
    return write_chunk(_WORKER_STORE, prefix, chunk, const, check_pixels=check_pixels)


def _pool_context():  # noqa: ANN202 - a multiprocessing context
    """``fork`` where the platform has it (the workers inherit the imported modules), else ``spawn``."""
    try:
        return mp.get_context("fork")
    except ValueError:  # pragma: no cover - no fork on this platform
        return mp.get_context("spawn")


class ChunkWriter:
    """:func:`write_chunk` for every chunk, in ``workers`` processes (in the calling process when
    ``workers`` is 1 or there is one chunk). Entering starts (forks) every worker and queues every
    chunk, so threads the caller starts afterwards are never forked; :meth:`results` yields each
    chunk's result as it finishes; leaving cancels what has not started.

    Example::

        with ChunkWriter(store, "actors/A/dataset", chunks, const, workers=16) as writer:
            start_some_thread()
            for result in writer.results():
                ...
    """

    def __init__(self, store: Store, prefix: str, chunks: list[Chunk], const: FrameConstants, *, workers: int = 1,
                 check_pixels: bool = True):
        self.store, self.prefix, self.chunks, self.const = store, prefix, chunks, const
        self.workers = max(1, min(int(workers), len(chunks)))
        self.check_pixels = check_pixels
        self._pool: ProcessPoolExecutor | None = None
        self._futures: list = []

    def __enter__(self) -> "ChunkWriter":
        if self.workers > 1:
            import warnings

            self._pool = ProcessPoolExecutor(self.workers, mp_context=_pool_context(), initializer=_init_worker,
                                             initargs=(self.store.uri,))
            with warnings.catch_warnings():
                # Python >= 3.12 warns when a multi-threaded process forks (torch's and OpenCV's pools
                # count); the workers use neither pool (see the module docstring)
                warnings.filterwarnings("ignore", message=r".*fork\(\) may lead to deadlocks", category=DeprecationWarning)
                self._futures = [self._pool.submit(_run_chunk, self.prefix, c, self.const, self.check_pixels)
                                 for c in self.chunks]
        return self

    def results(self) -> Iterator[ChunkResult]:
        if self._pool is None:
            for c in self.chunks:
                yield write_chunk(self.store, self.prefix, c, self.const, check_pixels=self.check_pixels)
            return
        for fut in as_completed(self._futures):
            yield fut.result()

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def default_workers(jobs: int) -> int:
    """Worker processes for ``jobs`` (the stage's ``--jobs``), at most the machine's cores."""
    return max(1, min(int(jobs), os.cpu_count() or 1))
