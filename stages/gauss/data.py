"""Training frames from the FlashAvatar dataset layout, streamed by a torch ``DataLoader``.

- :class:`TrackedSequence`: the per-frame parameters of every ``.frame`` file, stacked (numpy).
- :func:`split_frames`: upstream's split (last 500 frames held out, training on the first
  ``min(10000, N - 500)``) or a fraction for short clips.
- :class:`AvatarFrames`: a ``Dataset`` whose items are one frame's pixels (image, matte,
  neck-and-head and mouth masks; uint8), condition vector and camera, at the training resolution;
  :func:`composite_gt` turns them into FlashAvatar's ground truth on the training device.
- :class:`StepBatchSampler`: the batches of steps ``[start, stop)``, a pure function of (seed, step),
  so a resumed run sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from stages.dataset.frame_file import load_tracked_sequence, read_frame
from stages.dataset.layout import FRAME_DELTA, DatasetLayout
from stages.errors import bad_input
from stages.gauss.surface import condition_vector

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
    """

    cond: np.ndarray
    R: np.ndarray
    t: np.ndarray
    K: np.ndarray
    shape: np.ndarray
    image_size: tuple[int, int]

    def __len__(self) -> int:
        return self.cond.shape[0]

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
                   shape=np.asarray(f0["flame"]["shape"], np.float32).reshape(-1), image_size=(h, w))


def split_frames(n: int, test_frames: int = 500, test_fraction: float | None = None,
                 max_train: int = 10000) -> tuple[list[int], list[int]]:
    """Training and held-out checkpoint indices.

    Upstream: the last ``test_frames`` are the test set, training uses ``[0, min(max_train, n - test_frames))``.
    With ``test_fraction`` (short clips) the last ``max(1, round(n * fraction))`` frames are held out.
    """
    n_test = max(1, round(n * test_fraction)) if test_fraction is not None else test_frames
    if n - n_test < 1:
        raise bad_input("dataset", f"{n} tracked frames leave none for training with {n_test} held out",
                        "use a longer video or set train.test_fraction (e.g. 0.1)")
    return list(range(min(max_train, n - n_test))), list(range(n - n_test, n))


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
    """uint8 pixels of an image file at ``size`` x ``size`` (bilinear resize when needed)."""
    from PIL import Image

    try:
        im = Image.open(path).convert(mode)
    except (FileNotFoundError, OSError) as e:
        raise bad_input(path, f"cannot read image ({e})", "re-run the assemble stage") from None
    if im.size != (size, size):
        im = im.resize((size, size), Image.BILINEAR)
    return np.array(im, dtype=np.uint8)  # a writable copy (torch.from_numpy warns on read-only arrays)


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
            "cond": torch.from_numpy(self.seq.cond[i]),
            "R": torch.from_numpy(np.asarray(self.seq.R[i], np.float32)),
            "t": torch.from_numpy(np.asarray(self.seq.t[i], np.float32)),
            "K": torch.from_numpy(self.k_scale @ np.asarray(self.seq.K[i], np.float32)),
            "index": torch.tensor(i),
        }

    def ground_truth(self, batch: dict[str, Tensor]) -> Tensor:
        """[B, H, W, 3] float ground truth of a (collated) batch, on the batch's device."""
        return composite_gt(batch["img"], batch["alpha"], batch["neckhead"], self.background)


class StepBatchSampler(Sampler[list[int]]):
    """Batches for steps ``start .. stop-1``: the stream of positions ``step * batch + b`` walks
    epochs, each a permutation of ``range(n)`` drawn from ``seed`` and the epoch number."""

    def __init__(self, n: int, batch_size: int, seed: int, start: int, stop: int):
        self.n, self.batch_size, self.seed, self.start, self.stop = n, batch_size, seed, start, stop

    def _perm(self, epoch: int) -> Tensor:
        return torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 1_000_003 + epoch))

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
    order is the sampler's; else sequential batches of ``batch_size``."""
    kw = dict(num_workers=workers, pin_memory=pin_memory, persistent_workers=False)
    if workers > 0:
        kw["prefetch_factor"] = 4
    if batch_sampler is not None:
        return DataLoader(frames, batch_sampler=batch_sampler, **kw)
    return DataLoader(frames, batch_size=batch_size, shuffle=False, **kw)


def find_dataset_root(paths: list[Path]) -> DatasetLayout:
    """The layout holding a set of fetched dataset files: the folder with ``imgs/`` and the folder of
    the ``.frame`` files (BadInput when either is missing)."""
    imgs = [p for p in paths if p.parent.name == "imgs" and p.suffix == ".jpg"]
    frames = [p for p in paths if p.suffix == ".frame"]
    if not imgs or not frames:
        raise bad_input("dataset", "no imgs/*.jpg or no checkpoint/*.frame among the assemble stage's outputs",
                        "re-run the assemble stage")
    return DatasetLayout(imgs[0].parent.parent, frames[0].parent)
