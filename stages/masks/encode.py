"""Decoding the ingested frames and encoding the masks in FlashAvatar's file formats.

FlashAvatar (``scene/__init__.py`` of USTC3DV/FlashAvatar-code) opens every file with PIL and divides
by 255: ``alpha/{k:05d}.jpg`` may be L or RGB (an L image becomes a [1,H,W] tensor that broadcasts
over the RGB image), ``parsing/{k:05d}_neckhead.png`` and ``_mouth.png`` must be single channel
with values exactly 0 or 255 (0/1 masks would silently become 0/(1/255)). We write:

- alpha: 8-bit grayscale (L) JPEG, 0..255, quality :data:`ALPHA_JPEG_QUALITY` by default;
- parsing: 8-bit grayscale PNG, values 0 or 255 only (PNG is lossless, so that survives).

Member names inside ``masks/<shard>.tar``: ``alpha/00001.jpg``, ``parsing/00001_neckhead.png``,
``parsing/00001_mouth.png``, numbered like the frames (from 1, ffmpeg's ``%05d``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np

from stages.errors import bad_input
from stages.frameshard import read_shard_tar

ALPHA_JPEG_QUALITY = 95
FRAME_SIZE = 512
_FRAME_RE = re.compile(r"^(\d{5,})\.jpg$")


def alpha_name(k: int) -> str:
    """``alpha/00001.jpg``."""
    return f"alpha/{k:05d}.jpg"


def neckhead_name(k: int) -> str:
    """``parsing/00001_neckhead.png``."""
    return f"parsing/{k:05d}_neckhead.png"


def mouth_name(k: int) -> str:
    """``parsing/00001_mouth.png``."""
    return f"parsing/{k:05d}_mouth.png"


def read_frame_jpegs(path: str | Path, expect: Iterable[int] | None = None) -> dict[int, bytes]:
    """The JPEG bytes of an ingest frames tar, ``{frame number: bytes}``.

    Args:
        path: ``frames/<shard>.tar`` holding ``00001.jpg ...``.
        expect: frame numbers the tar must hold exactly (the shard's range); ``None`` skips the check.

    Raises:
        BadInput: a member is not ``NNNNN.jpg`` or the numbers differ from ``expect``.
    """
    out: dict[int, bytes] = {}
    for name, data in read_shard_tar(path):
        m = _FRAME_RE.match(name)
        if m is None:
            raise bad_input(path, f"unexpected member {name!r} (frames are named 00001.jpg ...)",
                            "re-run the ingest stage")
        out[int(m.group(1))] = data
    if expect is not None:
        want = list(expect)
        if sorted(out) != want:
            raise bad_input(path, f"holds frames {_span(sorted(out))}, expected {_span(want)}",
                            "re-run the ingest stage for this actor")
    return out


def _span(nums: list[int]) -> str:
    return f"{nums[0]}..{nums[-1]} ({len(nums)})" if nums else "none"


def decode_rgb(data: bytes, name: str = "frame") -> np.ndarray:
    """One JPEG to RGB uint8 [H,W,3].

    Raises:
        BadInput: the bytes are not a decodable image.
    """
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise bad_input(name, "not a decodable JPEG", "re-run the ingest stage")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def decode_gray(data: bytes) -> np.ndarray:
    """A JPEG or PNG to uint8 [H,W] (one channel, as FlashAvatar's loader sees an L image)."""
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ValueError("not a decodable image")
    return img if img.ndim == 2 else img[..., 0]


def encode_alpha(alpha: np.ndarray, quality: int = ALPHA_JPEG_QUALITY) -> bytes:
    """Matte uint8 [H,W] (0..255) or float [H,W] (0..1) to a grayscale JPEG."""
    a = to_uint8(alpha)
    ok, buf = cv2.imencode(".jpg", a, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:  # pragma: no cover - cv2 only fails on empty input
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


def encode_mask(mask: np.ndarray) -> bytes:
    """Binary mask (bool, or uint8 where nonzero means inside) [H,W] to a PNG of 0/255 values."""
    m = (np.asarray(mask) != 0).view(np.uint8) * np.uint8(255)
    # OpenCV's default PNG settings suit two-valued masks: measured 4x faster than an explicit
    # IMWRITE_PNG_COMPRESSION=1, and smaller. Never IMWRITE_PNG_BILEVEL: a 1-bit PNG loads
    # as 0/1 booleans in PIL, which FlashAvatar would divide by 255.
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(m))
    if not ok:  # pragma: no cover
        raise ValueError("PNG encoding failed")
    return buf.tobytes()


def to_uint8(alpha: np.ndarray) -> np.ndarray:
    """A matte as uint8 0..255: float input is read as 0..1 and rounded, uint8 passes through."""
    a = np.asarray(alpha)
    if a.dtype == np.uint8:
        return a
    return np.clip(np.rint(a.astype(np.float32) * 255.0), 0, 255).astype(np.uint8)


def encode_frame(k: int, alpha: np.ndarray, neckhead: np.ndarray, mouth: np.ndarray,
                 quality: int = ALPHA_JPEG_QUALITY) -> list[tuple[str, bytes]]:
    """The three tar members of frame ``k``: alpha JPEG, neckhead PNG, mouth PNG."""
    return [(alpha_name(k), encode_alpha(alpha, quality)), (neckhead_name(k), encode_mask(neckhead)),
            (mouth_name(k), encode_mask(mouth))]
