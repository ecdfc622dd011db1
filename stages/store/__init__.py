"""Object stores with one key layout over a local folder and S3-compatible storage.

Keys are ``/``-separated relative paths: ``actors/<actor>/<stage>/...`` and ``assets/...``.
Use :func:`open_store` with a local path or ``s3://bucket[/prefix]``.
"""

from stages.store.base import Store, sha256_file, sha256_bytes
from stages.store.local import LocalStore
from stages.store.uri import open_store

__all__ = ["Store", "LocalStore", "open_store", "sha256_file", "sha256_bytes"]
