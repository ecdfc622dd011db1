"""A store in a local folder: keys are relative paths under the root."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from stages.store.base import IntegrityError, Store, atomic_write_bytes, check_key, sha256_bytes, sha256_file


class LocalStore(Store):
    """Objects as files under ``root``. Writes go through a temporary file and a rename, so a
    reader (or a crash) never leaves a half-written object visible under its key. Temporary files
    start with ``.`` and end in ``.part``; :meth:`list` never returns them."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()
        self.uri = str(self.root)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def put_file(self, key: str, path: str | Path) -> str:
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
        os.close(fd)
        try:
            shutil.copyfile(path, tmp)
            digest = sha256_file(tmp)
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return digest

    def put_bytes(self, key: str, data: bytes) -> str:
        atomic_write_bytes(self._path(key), data)
        return sha256_bytes(data)

    def get_file(self, key: str, dest: str | Path, expect_sha256: str | None = None) -> Path:
        src = self._path(key)
        if not src.is_file():
            raise KeyError(f"{self.uri}/{key}")
        dest = Path(dest)
        if dest.resolve() == src:
            self._verify(key, dest, expect_sha256)
            return dest
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
        os.close(fd)
        try:
            shutil.copyfile(src, tmp)
            self._verify(key, Path(tmp), expect_sha256)  # verify before it becomes visible
            os.replace(tmp, dest)
        finally:
            Path(tmp).unlink(missing_ok=True)
        return dest

    def _verify(self, key: str, path: Path, expect_sha256: str | None) -> None:
        if expect_sha256 is not None and sha256_file(path) != expect_sha256:
            raise IntegrityError(
                f"{self.uri}/{key}: content does not match its recorded sha256 {expect_sha256[:12]}; "
                "the object is corrupt, re-run the stage that wrote it"
            )

    def get_bytes(self, key: str, expect_sha256: str | None = None) -> bytes:
        src = self._path(key)
        try:
            data = src.read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            raise KeyError(f"{self.uri}/{key}") from None
        if expect_sha256 is not None and sha256_bytes(data) != expect_sha256:
            raise IntegrityError(
                f"{self.uri}/{key}: content does not match its recorded sha256 {expect_sha256[:12]}; "
                "the object is corrupt, re-run the stage that wrote it"
            )
        return data

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str) -> list[str]:
        base = self.root
        # Walk only the deepest folder the prefix names.
        folder = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = base / folder if folder else base
        if not start.is_dir():
            return []
        out = []
        for dirpath, _dirs, files in os.walk(start):
            for name in files:
                if name.startswith(".") and name.endswith(".part"):
                    continue
                key = os.path.relpath(os.path.join(dirpath, name), base).replace(os.sep, "/")
                if key.startswith(prefix):
                    out.append(key)
        return sorted(out)

    def sha256(self, key: str) -> str:
        path = self._path(key)
        if not path.is_file():
            raise KeyError(f"{self.uri}/{key}")
        return sha256_file(path)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def local_path(self, key: str) -> Path | None:
        path = self._path(key)
        return path if path.is_file() else None


__all__ = ["LocalStore", "IntegrityError"]
