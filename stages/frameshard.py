"""Frame shards: one uncompressed tar per shard holding numbered image files.

A tar per shard keeps object counts low on S3 (10,000 frames are 20 objects, not 10,000) and
streams in order. Member names are the dataset's file names, e.g. ``00001.jpg`` or
``alpha/00001.jpg``. Writing is atomic through the store (the tar is built locally first).
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterable, Iterator
from pathlib import Path


def write_shard_tar(path: str | Path, members: Iterable[tuple[str, bytes]]) -> int:
    """Write ``(name, data)`` pairs to a tar at ``path``; return how many were written."""
    n = 0
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
            n += 1
    return n


def read_shard_tar(path: str | Path) -> Iterator[tuple[str, bytes]]:
    """Yield ``(name, data)`` for every regular file in the tar, in stored order."""
    with tarfile.open(path, "r:") as tar:
        for info in tar:
            if info.isfile():
                f = tar.extractfile(info)
                assert f is not None
                yield info.name, f.read()


def frame_name(number: int, suffix: str = ".jpg") -> str:
    """``00001.jpg``: ffmpeg's ``%05d`` numbering, from 1."""
    return f"{number:05d}{suffix}"
