"""Opening a media file for reading with PyAV, across PyAV versions."""

from __future__ import annotations

from pathlib import Path


def open_input(path: str | Path):
    """``av.open(path)`` for reading, ignoring undecodable metadata where this PyAV can (the
    ``metadata_errors`` argument exists up to PyAV 18 and is gone in 19, which ignores such errors)."""
    import av

    try:
        return av.open(str(path), metadata_errors="ignore")
    except TypeError:
        return av.open(str(path))
