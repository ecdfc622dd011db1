"""Check a FlashAvatar dataset folder (ours or one made by the upstream tools) and say exactly what
is wrong: counts, numbering, pairing, image sizes, mask values, ``.frame`` contents.

Two halves, usable apart:

- :func:`structure_problems`: counts, numbering, pairing and strays, from the file names alone
  (a :class:`Listing` of a folder on disk, or of the keys in a store);
- :func:`image_problem` and :func:`frame_bytes_problems`: one file's content, from its bytes
  (assemble checks every file on the bytes it writes, in its worker processes).

:func:`verify_dataset` runs both on a folder (``avatar verify``).
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stages.dataset.frame_file import frame_problems
from stages.dataset.layout import FRAME_DELTA, IMAGE_SIZE, DatasetLayout

_NUM_JPG = re.compile(r"^(\d{5})\.jpg$")
_NUM_FRAME = re.compile(r"^(\d{5})\.frame$")
_NUM_PARSING = re.compile(r"^(\d{5})_(neckhead|mouth)\.png$")
UPSTREAM_TEST_FRAMES = 500

FOLDERS = ("imgs", "alpha", "parsing", "checkpoint")
"""The dataset's sub-folders, as :class:`Listing` names them (``checkpoint``: the ``.frame`` files)."""


@dataclass(frozen=True)
class Listing:
    """File names found in each folder of a dataset (``None``: the folder is missing).

    Attributes:
        imgs, alpha, parsing, checkpoint: sorted plain file names (no sub-folders).
    """

    imgs: tuple[str, ...] | None
    alpha: tuple[str, ...] | None
    parsing: tuple[str, ...] | None
    checkpoint: tuple[str, ...] | None

    @classmethod
    def of_folder(cls, layout: DatasetLayout) -> "Listing":
        """What is on disk under ``layout``."""
        def names(d: Path) -> tuple[str, ...] | None:
            return tuple(sorted(p.name for p in d.iterdir())) if d.is_dir() else None

        return cls(names(layout.imgs_dir), names(layout.alpha_dir), names(layout.parsing_dir),
                   names(layout.checkpoint_dir))

    @classmethod
    def of_paths(cls, rels: Iterable[str]) -> "Listing":
        """From dataset-relative paths such as ``imgs/00001.jpg`` (e.g. the keys of a store under the
        dataset's prefix); a folder with no file is missing. Other paths are ignored."""
        found: dict[str, list[str]] = {}
        for rel in rels:
            folder, _, name = rel.partition("/")
            if folder in FOLDERS and name and "/" not in name:
                found.setdefault(folder, []).append(name)
        return cls(*(tuple(sorted(found[f])) if f in found else None for f in FOLDERS))


def _numbers(names: Iterable[str], pattern: re.Pattern[str]) -> tuple[list[int], list[str]]:
    nums, strays = [], []
    for name in names:
        m = pattern.match(name)
        if m:
            nums.append(int(m.group(1)))
        elif not name.startswith("."):
            strays.append(name)
    return nums, strays


def _ranges(nums: list[int]) -> str:
    if not nums:
        return "none"
    out, start, prev = [], nums[0], nums[0]
    for n in nums[1:] + [None]:  # type: ignore[list-item]
        if n is None or n != prev + 1:
            out.append(f"{start:05d}" if start == prev else f"{start:05d}-{prev:05d}")
            if n is not None:
                start = n
        if n is not None:
            prev = n
    return ", ".join(out[:6]) + (" ..." if len(out) > 6 else "")


def structure_problems(layout: DatasetLayout, listing: Listing | None = None) -> list[str]:
    """Counts, numbering, ``frame_delta`` pairing and stray files, from the names alone.

    Args:
        layout: where the dataset is (names the folders in the messages).
        listing: the names in each folder (default: read from ``layout`` on disk).
    """
    listing = listing if listing is not None else Listing.of_folder(layout)
    folders = {"imgs": layout.imgs_dir, "alpha": layout.alpha_dir, "parsing": layout.parsing_dir,
               "checkpoint": layout.checkpoint_dir}
    problems = [f"{folders[f]}: folder missing" for f in FOLDERS if getattr(listing, f) is None]
    if problems:
        return problems

    frames, strays = _numbers(listing.checkpoint, _NUM_FRAME)
    if strays:
        problems.append(f"{layout.checkpoint_dir}: holds {len(strays)} file(s) that are not NNNNN.frame "
                        f"(e.g. {strays[0]}); upstream counts every file there as a frame")
    n = len(frames)
    if n == 0:
        return problems + [f"{layout.checkpoint_dir}: no .frame files"]
    if frames != list(range(n)):
        problems.append(f"{layout.checkpoint_dir}: checkpoints are not numbered 00000..{n - 1:05d} "
                        f"contiguously (found {_ranges(frames)})")

    want = set(range(FRAME_DELTA, n + FRAME_DELTA))
    imgs, s1 = _numbers(listing.imgs, _NUM_JPG)
    alphas, s2 = _numbers(listing.alpha, _NUM_JPG)
    parsing: dict[str, list[int]] = {"neckhead": [], "mouth": []}
    s3 = []
    for name in listing.parsing:
        m = _NUM_PARSING.match(name)
        if m:
            parsing[m.group(2)].append(int(m.group(1)))
        elif not name.startswith("."):
            s3.append(name)
    for name, nums, folder in (("imgs", imgs, layout.imgs_dir), ("alpha", alphas, layout.alpha_dir),
                               ("neckhead masks", sorted(parsing["neckhead"]), layout.parsing_dir),
                               ("mouth masks", sorted(parsing["mouth"]), layout.parsing_dir)):
        have = set(nums)
        missing = sorted(want - have)
        if missing:
            problems.append(f"{folder}: {len(missing)} {name} missing for checkpoints 0..{n - 1} "
                            f"(image i+{FRAME_DELTA} pairs with checkpoint i): {_ranges(missing)}")
        if nums and min(nums) == 0:
            problems.append(f"{folder}: {name} numbered from 00000; images are numbered from 00001 "
                            "(ffmpeg %05d), checkpoints from 00000")
        extra = sorted(have - want - {0})
        if extra and len(nums) != n:
            problems.append(f"{folder}: {len(nums)} {name} for {n} checkpoints (counts differ; extra: {_ranges(extra)})")
    for folder, strays_ in ((layout.imgs_dir, s1), (layout.alpha_dir, s2), (layout.parsing_dir, s3)):
        if strays_:
            problems.append(f"{folder}: unexpected file(s) such as {strays_[0]}")
    return problems


# -- one file's content -----------------------------------------------------------------------------

_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def jpeg_header(data: bytes) -> tuple[int, int, int, int] | None:
    """``(width, height, components, bits per sample)`` from a JPEG's frame header (SOF), or None
    when ``data`` is not a JPEG with one before its first scan."""
    if data[:2] != b"\xff\xd8":
        return None
    i, end = 2, len(data)
    while i + 4 <= end:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01,) or 0xD0 <= marker <= 0xD7:  # markers without a length
            i += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image / start of scan before any frame header
            return None
        (length,) = struct.unpack_from(">H", data, i + 2)
        if marker in _SOF:
            if i + 10 > end:
                return None
            bits, h, w, comps = struct.unpack_from(">BHHB", data, i + 4)
            return w, h, comps, bits
        i += 2 + length
    return None


def image_problem(label: str, data: bytes, want_channels: int | None, binary: bool) -> str | None:
    """What is wrong with one image's bytes (None: nothing): it must decode, be
    ``IMAGE_SIZE`` square, 8-bit, single channel where ``want_channels`` is 1, and hold only 0 and
    255 where ``binary``.

    A JPEG that needs no value check is not decoded in full: its size, depth and channels come from
    its frame header and its whole entropy-coded stream is decoded at 1/8 scale (about twice as fast
    as a full decode; what a corrupt stream would break). Masks (``binary``) are decoded in full.

    Args:
        label: names the file in the message (its path or store key).
    """
    import cv2

    buf = np.frombuffer(data, np.uint8)
    head = jpeg_header(data) if not binary else None
    if head is not None:
        w, h, comps, bits = head
        if (h, w) != (IMAGE_SIZE, IMAGE_SIZE):
            return f"{label}: size {w}x{h}, expected {IMAGE_SIZE}x{IMAGE_SIZE}"
        if bits != 8:
            return f"{label}: {bits} bits per sample, expected 8-bit"
        if want_channels == 1 and comps != 1:
            return f"{label}: {comps} channels, expected a single channel"
        if cv2.imdecode(buf, cv2.IMREAD_REDUCED_GRAYSCALE_8) is None:
            return f"{label}: cannot be decoded"
        return None
    img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED) if buf.size else None
    if img is None:
        return f"{label}: cannot be decoded"
    h, w = img.shape[:2]
    if (h, w) != (IMAGE_SIZE, IMAGE_SIZE):
        return f"{label}: size {w}x{h}, expected {IMAGE_SIZE}x{IMAGE_SIZE}"
    if img.dtype != np.uint8:
        return f"{label}: dtype {img.dtype}, expected 8-bit"
    if want_channels == 1 and img.ndim != 2:
        return f"{label}: {img.shape[2]} channels, expected a single channel"
    if binary and ((img != 0) & (img != 255)).any():
        values = np.unique(img)
        bad = values[(values != 0) & (values != 255)]
        hint = " (saved as 0/1 instead of 0/255: FlashAvatar would read 1/255)" if values.max() <= 1 else ""
        return f"{label}: values {bad[:5].tolist()} besides 0 and 255{hint}"
    return None


def image_kind(rel: str) -> tuple[int | None, bool]:
    """``(want_channels, binary)`` of a dataset file by its folder: parsing masks are single-channel
    0/255, frames and mattes anything 8-bit."""
    return (1, True) if rel.startswith("parsing/") else (None, False)


def frame_bytes_problems(label: str, i: int, data: bytes) -> list[str]:
    """What is wrong with checkpoint ``i``'s ``.frame`` bytes: loadable, the keys FlashAvatar reads
    (every key for checkpoint 0, plus ``img_size``), ``frame_id`` equal to the file number."""
    from stages.dataset.frame_file import frame_from_bytes

    try:
        frame = frame_from_bytes(data)
    except Exception as e:  # a corrupt file is a finding, not a crash
        return [f"{label}: cannot be loaded ({type(e).__name__}: {e})"]
    out = [f"{label}: {p}" for p in frame_problems(frame, need_all=(i == 0))]
    fid = frame.get("frame_id")
    if fid is not None and str(fid) != f"{i:05d}":
        out.append(f"{label}: frame_id is {fid!r}, expected '{i:05d}' (pairing off by "
                   f"{int(fid) - i if str(fid).isdigit() else '?'})")
    if i == 0:
        size = np.asarray(frame.get("img_size", []))
        if size.size != 2 or tuple(int(x) for x in size.reshape(-1)) != (IMAGE_SIZE, IMAGE_SIZE):
            out.append(f"{label}: img_size {size.tolist()}, expected [{IMAGE_SIZE}, {IMAGE_SIZE}]")
    return out


def verify_dataset(root: str | Path, checkpoints: str | Path | None = None, *, check_pixels: bool = True,
                   threads: int = 8) -> list[str]:
    """Return every problem found in the dataset at ``root`` (empty list: it is valid).

    Args:
        root: folder with ``imgs/``, ``alpha/``, ``parsing/``.
        checkpoints: folder of ``.frame`` files (default ``root/checkpoint``).
        check_pixels: decode every image and mask (sizes, channels, 0/255 values).
    """
    layout = DatasetLayout(Path(root), Path(checkpoints) if checkpoints else None)
    listing = Listing.of_folder(layout)
    problems = structure_problems(layout, listing)
    if any(getattr(listing, f) is None for f in FOLDERS):
        return problems
    frames, _ = _numbers(listing.checkpoint, _NUM_FRAME)

    def check_frame(i: int) -> list[str]:
        path = layout.frame_path(i)
        return frame_bytes_problems(str(path), i, path.read_bytes())

    def check_image(job: tuple[Path, int | None, bool]) -> str | None:
        path, channels, binary = job
        return image_problem(str(path), path.read_bytes(), channels, binary)

    with ThreadPoolExecutor(threads) as pool:
        for found in pool.map(check_frame, frames):
            problems.extend(found)
        if check_pixels:
            n = len(frames)
            want = range(FRAME_DELTA, n + FRAME_DELTA)
            jobs: list[tuple[Path, int | None, bool]] = []
            present = {"imgs": set(_numbers(listing.imgs, _NUM_JPG)[0]),
                       "alpha": set(_numbers(listing.alpha, _NUM_JPG)[0]), "parsing": set(listing.parsing)}
            for k in want:
                if k in present["imgs"]:
                    jobs.append((layout.image_path(k), None, False))
                if k in present["alpha"]:
                    jobs.append((layout.alpha_path(k), None, False))
                if layout.neckhead_path(k).name in present["parsing"]:
                    jobs.append((layout.neckhead_path(k), 1, True))
                if layout.mouth_path(k).name in present["parsing"]:
                    jobs.append((layout.mouth_path(k), 1, True))
            problems.extend(p for p in pool.map(check_image, jobs) if p)
    return problems

