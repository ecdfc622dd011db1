"""Open a store from the ``--store`` argument."""

from __future__ import annotations

from stages.store.base import Store
from stages.store.local import LocalStore


def open_store(uri: str) -> Store:
    """``s3://bucket[/prefix]`` opens an :class:`~stages.store.s3.S3Store`; anything else is a
    local folder (created on first write)."""
    if uri.startswith("s3://"):
        from stages.store.s3 import S3Store

        rest = uri[len("s3://"):]
        bucket, _, prefix = rest.partition("/")
        if not bucket:
            raise ValueError(f"{uri}: no bucket name; use s3://bucket[/prefix]")
        return S3Store(bucket, prefix)
    if "://" in uri:
        raise ValueError(f"{uri}: unsupported store scheme; use a local path or s3://bucket[/prefix]")
    return LocalStore(uri)
