"""Open a store from the ``--store`` argument."""

from __future__ import annotations

from stages.errors import BadInput
from stages.store.base import Store
from stages.store.local import LocalStore


class StoreUriError(BadInput, ValueError):
    """A ``--store`` value that names no store we can open (exit 2)."""


def open_store(uri: str) -> Store:
    """``s3://bucket[/prefix]`` opens an :class:`~stages.store.s3.S3Store`; anything else is a
    local folder (created on first write)."""
    if uri.startswith("s3://"):
        from stages.store.s3 import S3Store

        rest = uri[len("s3://"):]
        bucket, _, prefix = rest.partition("/")
        if not bucket:
            raise StoreUriError(f"--store {uri}: no bucket name; use s3://bucket[/prefix]")
        return S3Store(bucket, prefix)
    if "://" in uri:
        raise StoreUriError(f"--store {uri}: unsupported store scheme; use a local path or s3://bucket[/prefix]")
    from pathlib import Path

    if Path(uri).expanduser().exists() and not Path(uri).expanduser().is_dir():
        raise StoreUriError(f"--store {uri}: a file, not a folder; give a folder (created if absent) or s3://bucket[/prefix]")
    return LocalStore(uri)
