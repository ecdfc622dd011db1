"""The store interface shared by the local folder and S3 backends."""

from __future__ import annotations

import hashlib
import json
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from stages.errors import BadInput

_CHUNK = 1 << 20


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def check_key(key: str) -> str:
    """Validate a store key: relative, ``/``-separated, no ``..``, no empty parts."""
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"invalid store key {key!r}")
    return key


class IntegrityError(BadInput):
    """An object's bytes do not match the sha256 recorded for it (corruption or tampering)."""


class Store(ABC):
    """A flat namespace of immutable-once-finished objects addressed by key.

    Writes are atomic: a reader sees either no object or the whole object, never part of one.
    Every object's sha256 is known (computed on write); reads can verify against an expected
    digest and raise :class:`IntegrityError` on mismatch.
    """

    uri: str

    @abstractmethod
    def put_file(self, key: str, path: str | Path) -> str:
        """Upload ``path`` to ``key`` atomically; return its sha256."""

    @abstractmethod
    def put_bytes(self, key: str, data: bytes) -> str:
        """Write ``data`` to ``key`` atomically; return its sha256."""

    @abstractmethod
    def get_file(self, key: str, dest: str | Path, expect_sha256: str | None = None) -> Path:
        """Download ``key`` to ``dest`` (atomically); verify against ``expect_sha256`` if given."""

    @abstractmethod
    def get_bytes(self, key: str, expect_sha256: str | None = None) -> bytes:
        """Read ``key`` whole; verify against ``expect_sha256`` if given."""

    @abstractmethod
    def exists(self, key: str) -> bool:
        """Whether an object is stored at ``key``."""

    @abstractmethod
    def list(self, prefix: str) -> list[str]:
        """Sorted keys that start with ``prefix`` (a folder prefix should end with ``/``)."""

    @abstractmethod
    def sha256(self, key: str) -> str:
        """The sha256 of the object at ``key`` (recorded at write time where the backend can)."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove one object. Only for the pipeline's own scratch objects, never user data."""

    def local_path(self, key: str) -> Path | None:
        """A path to the object's bytes on this machine, if the backend has one (zero-copy)."""
        return None

    # -- conveniences built on the primitives ---------------------------------------------

    def put_json(self, key: str, obj: Any) -> str:
        """Write ``obj`` as indented, key-sorted JSON."""
        return self.put_bytes(key, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())

    def get_json(self, key: str, expect_sha256: str | None = None) -> Any:
        """Read a JSON object; a missing key raises ``KeyError``."""
        return json.loads(self.get_bytes(key, expect_sha256))

    def fetch(self, key: str, cache_dir: str | Path, expect_sha256: str | None = None) -> Path:
        """A local path holding ``key``'s bytes: the object itself where possible, else a copy
        downloaded into ``cache_dir`` (reused when its digest still matches)."""
        local = self.local_path(key)
        if local is not None:
            if expect_sha256 is not None and sha256_file(local) != expect_sha256:
                raise IntegrityError(
                    f"{self.uri}/{key}: content does not match its recorded sha256 "
                    f"{expect_sha256[:12]}; the object is corrupt, re-run the stage that wrote it"
                )
            return local
        dest = Path(cache_dir) / key
        if dest.exists() and expect_sha256 is not None and sha256_file(dest) == expect_sha256:
            return dest
        try:
            return self.get_file(key, dest, expect_sha256)
        except KeyError:
            if expect_sha256 is None:
                raise
            raise IntegrityError(  # a manifest lists it: the store lost a finished output
                f"{self.uri}/{key}: listed among a finished stage's outputs but missing from the store; "
                f"re-run the stage that wrote it (remove that stage's manifest.json first)") from None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uri!r})"


def atomic_write_bytes(dest: Path, data: bytes) -> None:
    """Write ``data`` to ``dest`` through a temporary file in the same folder and a rename."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part", delete=False) as f:
        tmp = Path(f.name)
        try:
            f.write(data)
            f.flush()
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    tmp.replace(dest)
