"""Check a FlashAvatar dataset folder (ours or one made by the upstream tools) and say exactly what
is wrong: counts, numbering, pairing, image sizes, mask values, ``.frame`` contents."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from stages.dataset.frame_file import frame_problems, read_frame
from stages.dataset.layout import FRAME_DELTA, IMAGE_SIZE, DatasetLayout

_NUM_JPG = re.compile(r"^(\d{5})\.jpg$")
_NUM_FRAME = re.compile(r"^(\d{5})\.frame$")
_NUM_PARSING = re.compile(r"^(\d{5})_(neckhead|mouth)\.png$")
UPSTREAM_TEST_FRAMES = 500


def _numbers(folder: Path, pattern: re.Pattern[str]) -> tuple[list[int], list[str]]:
    nums, strays = [], []
    for p in sorted(folder.iterdir()) if folder.is_dir() else []:
        m = pattern.match(p.name)
        if m:
            nums.append(int(m.group(1)))
        elif not p.name.startswith("."):
            strays.append(p.name)
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


def _image_problem(path: Path, want_channels: int | None, binary: bool) -> str | None:
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        return f"{path}: cannot be decoded"
    h, w = img.shape[:2]
    if (h, w) != (IMAGE_SIZE, IMAGE_SIZE):
        return f"{path}: size {w}x{h}, expected {IMAGE_SIZE}x{IMAGE_SIZE}"
    if img.dtype != np.uint8:
        return f"{path}: dtype {img.dtype}, expected 8-bit"
    if want_channels == 1 and img.ndim != 2:
        return f"{path}: {img.shape[2]} channels, expected a single channel"
    if binary:
        values = np.unique(img)
        bad = values[(values != 0) & (values != 255)]
        if bad.size:
            hint = " (saved as 0/1 instead of 0/255: FlashAvatar would read 1/255)" if values.max() <= 1 else ""
            return f"{path}: values {bad[:5].tolist()} besides 0 and 255{hint}"
    return None


def verify_dataset(root: str | Path, checkpoints: str | Path | None = None, *, check_pixels: bool = True,
                   threads: int = 8) -> list[str]:
    """Return every problem found in the dataset at ``root`` (empty list: it is valid).

    Args:
        root: folder with ``imgs/``, ``alpha/``, ``parsing/``.
        checkpoints: folder of ``.frame`` files (default ``root/checkpoint``).
        check_pixels: decode every image and mask (sizes, channels, 0/255 values).
    """
    layout = DatasetLayout(Path(root), Path(checkpoints) if checkpoints else None)
    problems: list[str] = []
    for d in (layout.imgs_dir, layout.alpha_dir, layout.parsing_dir, layout.checkpoint_dir):
        if not d.is_dir():
            problems.append(f"{d}: folder missing")
    if problems:
        return problems

    frames, strays = _numbers(layout.checkpoint_dir, _NUM_FRAME)
    if strays:
        problems.append(f"{layout.checkpoint_dir}: holds {len(strays)} file(s) that are not NNNNN.frame "
                        f"(e.g. {strays[0]}); upstream counts every file there as a frame")
    n = len(frames)
    if n == 0:
        return problems + [f"{layout.checkpoint_dir}: no .frame files"]
    if frames != list(range(n)):
        problems.append(f"{layout.checkpoint_dir}: checkpoints are not numbered 00000..{n - 1:05d} "
                        f"contiguously (found {_ranges(frames)})")

    want = list(range(FRAME_DELTA, n + FRAME_DELTA))
    imgs, s1 = _numbers(layout.imgs_dir, _NUM_JPG)
    alphas, s2 = _numbers(layout.alpha_dir, _NUM_JPG)
    parsing: dict[str, list[int]] = {"neckhead": [], "mouth": []}
    _, s3 = _numbers(layout.parsing_dir, _NUM_PARSING)
    for p in layout.parsing_dir.iterdir():
        m = _NUM_PARSING.match(p.name)
        if m:
            parsing[m.group(2)].append(int(m.group(1)))
    for name, nums, folder in (("imgs", imgs, layout.imgs_dir), ("alpha", alphas, layout.alpha_dir),
                               ("neckhead masks", sorted(parsing["neckhead"]), layout.parsing_dir),
                               ("mouth masks", sorted(parsing["mouth"]), layout.parsing_dir)):
        missing = sorted(set(want) - set(nums))
        if missing:
            problems.append(f"{folder}: {len(missing)} {name} missing for checkpoints 0..{n - 1} "
                            f"(image i+{FRAME_DELTA} pairs with checkpoint i): {_ranges(missing)}")
        if nums and min(nums) == 0:
            problems.append(f"{folder}: {name} numbered from 00000; images are numbered from 00001 "
                            "(ffmpeg %05d), checkpoints from 00000")
        extra = sorted(set(nums) - set(want) - {0})
        if extra and len(nums) != n:
            problems.append(f"{folder}: {len(nums)} {name} for {n} checkpoints (counts differ; extra: {_ranges(extra)})")
    for folder, strays_ in ((layout.imgs_dir, s1), (layout.alpha_dir, s2), (layout.parsing_dir, s3)):
        if strays_:
            problems.append(f"{folder}: unexpected file(s) such as {strays_[0]}")

    # .frame contents: frame_id matches the file number, the keys FlashAvatar reads are there.
    def check_frame(i: int) -> list[str]:
        path = layout.frame_path(i)
        try:
            frame = read_frame(path)
        except Exception as e:  # a corrupt file is a finding, not a crash
            return [f"{path}: cannot be loaded ({type(e).__name__}: {e})"]
        out = [f"{path}: {p}" for p in frame_problems(frame, need_all=(i == 0))]
        fid = frame.get("frame_id")
        if fid is not None and str(fid) != f"{i:05d}":
            out.append(f"{path}: frame_id is {fid!r}, expected '{i:05d}' (pairing off by {int(fid) - i if str(fid).isdigit() else '?'})")
        if i == 0:
            size = np.asarray(frame.get("img_size", []))
            if size.size != 2 or tuple(int(x) for x in size.reshape(-1)) != (IMAGE_SIZE, IMAGE_SIZE):
                out.append(f"{path}: img_size {size.tolist()}, expected [{IMAGE_SIZE}, {IMAGE_SIZE}]")
        return out

    present = [i for i in frames]
    with ThreadPoolExecutor(threads) as pool:
        for found in pool.map(check_frame, present):
            problems.extend(found)
        if check_pixels:
            jobs = []
            for k in want:
                if k in set(imgs):
                    jobs.append((layout.image_path(k), None, False))
                if k in set(alphas):
                    jobs.append((layout.alpha_path(k), None, False))
                if k in set(parsing["neckhead"]):
                    jobs.append((layout.neckhead_path(k), 1, True))
                if k in set(parsing["mouth"]):
                    jobs.append((layout.mouth_path(k), 1, True))
            for found in pool.map(lambda j: _image_problem(*j), jobs):
                if found:
                    problems.append(found)
    if n <= UPSTREAM_TEST_FRAMES and not problems:
        pass  # valid for our trainer; upstream FlashAvatar needs more than 500 frames (reported by the CLI)
    return problems
