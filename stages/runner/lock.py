"""One writer per actor: a lock in a local store, a lease with an expiry on S3.

``with hold(store, scope):`` where ``scope`` is :func:`lock_scope` (the actor for ``avatar run`` and
``avatar stage NAME``; ``actor/stage/shard-N`` for ``avatar stage NAME --shard N``, what each fan-out
pod runs). A second process asking for a held scope waits up to ``$AVATAR_LOCK_WAIT`` seconds
(default 0) and then gets :class:`Busy` (exit 75, one line naming the holder). Locks are re-entrant
inside one process (``avatar run`` holds the actor while each stage asks again).

- Local folder: ``<root>/.locks/<scope>.lock`` under ``flock``; the kernel drops it when the holder
  ends, however it ends (``kill -9`` included). The file holds the holder's description and is
  removed on release (the acquirer checks it locked the file still at that path, so removal is safe).
- S3: the object ``.locks/<scope>.json`` (holder, token, ``expires`` in Unix seconds) created with
  ``If-None-Match: *`` and taken over, once expired, with ``If-Match`` on its ETag, so two takers
  cannot both win. A thread renews it every ``ttl/3``; a lease of a process on this host that no
  longer exists is taken over at once. Released by deletion; a holder that cannot release (S3
  down, killed) leaves a lease that expires after ``$AVATAR_LEASE_SECONDS`` (default 60).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shlex
import socket
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from stages.errors import Transient
from stages.store.base import Store

log = logging.getLogger("avatar.lock")

LOCK_ROOT = ".locks"


class Busy(Transient):
    """Another process holds the lock (exit 75: retry later)."""


def lock_scope(actor: str, stage: str | None = None, shard: int | None = None) -> str:
    """``actor``, or ``actor/stage/shard-N`` for one shard of a fan-out stage."""
    return actor if shard is None else f"{actor}/{stage}/shard-{int(shard):04d}"


def wait_seconds() -> float:
    """How long to wait for a held lock: ``$AVATAR_LOCK_WAIT`` (seconds, default 0)."""
    try:
        return max(0.0, float(os.environ.get("AVATAR_LOCK_WAIT", "0")))
    except ValueError:
        return 0.0


def lease_seconds() -> float:
    try:
        return max(2.0, float(os.environ.get("AVATAR_LEASE_SECONDS", "60")))
    except ValueError:
        return 60.0


def _me() -> dict:
    cmd = shlex.join(["avatar", *sys.argv[1:]]) if sys.argv and sys.argv[0] not in ("-c", "") else "python"
    return {"pid": os.getpid(), "host": socket.gethostname(), "command": cmd[:160],
            "since": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")}


def describe(holder: dict | None) -> str:
    """``pid 123 on host h since ... (avatar run --actor a ...)``; 'another process' if unknown."""
    if not holder or "pid" not in holder:
        return "another process"
    return (f"pid {holder['pid']} on host {holder.get('host', '?')} since {holder.get('since', '?')} "
            f"({holder.get('command', '?')})")


def _busy(store: Store, scope: str, holder: dict | None, waited: float) -> Busy:
    what = f"actor {scope!r}" if "/" not in scope else f"shard {scope!r}"
    return Busy(f"{what} is busy in {store.uri}: {describe(holder)} is writing it"
                + (f" (waited {waited:.0f} s)" if waited >= 1 else "")
                + "; wait for it to finish, then run the command again (or set AVATAR_LOCK_WAIT=SECONDS to wait)")


def _alive_here(holder: dict) -> bool:
    """Whether the holder's process still exists (only knowable on its own host)."""
    if holder.get("host") != socket.gethostname():
        return True
    if holder.get("pid") == os.getpid():  # ours from an earlier hold that could not release it
        return False
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, KeyError, ValueError, TypeError):
        return True
    return True


# -- local --------------------------------------------------------------------------------------

class _LocalLock:
    def __init__(self, root: Path, scope: str):
        self.path = root / LOCK_ROOT / f"{scope}.lock"
        self.root = root
        self.fd: int | None = None
        self.made_root = not root.exists()  # a store folder this lock creates goes again if left empty

    def try_acquire(self) -> dict | None:
        """None when acquired, else the holder's description (a dict, maybe empty)."""
        while True:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except FileNotFoundError:  # its folder was removed meanwhile
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                try:
                    holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
                except ValueError:
                    holder = {}
                os.close(fd)
                return holder
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # the previous holder removed it on release: lock the new file
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(_me()).encode(), 0)
            self.fd = fd
            return None

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self.fd)
            self.fd = None
        folder = self.path.parent
        while folder != self.root and folder.name:  # empty folders of .locks/ go too
            try:
                folder.rmdir()
            except OSError:
                break
            folder = folder.parent
        if self.made_root:  # e.g. a refused first command: the store folder it created, still empty
            try:
                self.root.rmdir()
            except OSError:
                pass

    def check(self) -> None:
        pass


# -- S3 -----------------------------------------------------------------------------------------

@dataclass
class _Lease:
    store: Store
    scope: str
    ttl: float = field(default_factory=lease_seconds)
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    etag: str | None = None
    lost: bool = False
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    @property
    def key(self) -> str:
        return f"{LOCK_ROOT}/{self.scope}.json"

    def _body(self) -> bytes:
        return json.dumps({**_me(), "token": self.token, "expires": time.time() + self.ttl}).encode()

    def _put(self, **cond) -> str | None:
        """Conditional write of our lease; its ETag, or None when the condition failed."""
        from botocore.exceptions import ClientError

        st = self.store
        try:
            resp = st._call(f"write the lease {self.key}", st.client.put_object, Bucket=st.bucket,
                            Key=st._k(self.key), Body=self._body(), **cond)
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict", "412",
                                                           "409"):
                return None
            raise
        return resp.get("ETag")

    def _get(self) -> tuple[dict, str] | None:
        st = self.store
        try:
            resp = st._call(f"read the lease {self.key}", st.client.get_object, Bucket=st.bucket, Key=st._k(self.key))
        except KeyError:
            return None
        body = st._call(f"read the lease {self.key}", resp["Body"].read)
        try:
            lease = json.loads(body)
        except ValueError:
            lease = {}
        return lease, resp.get("ETag", "")

    def try_acquire(self) -> dict | None:
        for _ in range(5):
            got = self._get()
            if got is None:
                self.etag = self._put(IfNoneMatch="*")
            else:
                lease, etag = got
                if float(lease.get("expires", 0)) > time.time() and _alive_here(lease):
                    return lease
                log.info("taking over the lease %s of %s (%s)", self.key, describe(lease),
                         "expired" if float(lease.get("expires", 0)) <= time.time() else "its process has ended")
                self.etag = self._put(IfMatch=etag)
            if self.etag is not None:
                self._thread = threading.Thread(target=self._renew, name=f"lease {self.scope}", daemon=True)
                self._thread.start()
                return None
        return {}

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                etag = self._put(IfMatch=self.etag)
            except Exception as e:  # noqa: BLE001 - S3 down: keep trying until the lease expires
                log.warning("could not renew the lease %s: %s", self.key, e)
                continue
            if etag is None:
                self.lost = True
                log.error("lost the lease %s to another process", self.key)
                return
            self.etag = etag

    def check(self) -> None:
        if self.lost:
            raise Busy(f"{self.store.uri}/{self.key}: this process lost its lease on {self.scope!r} to another "
                       "process; run the command again")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        if self.lost:
            return
        try:
            got = self._get()
            if got is not None and got[0].get("token") == self.token:
                st = self.store
                st._call(f"delete the lease {self.key}", st.client.delete_object, Bucket=st.bucket,
                         Key=st._k(self.key))
        except Exception as e:  # noqa: BLE001 - it expires by itself
            log.warning("could not release the lease %s (%s); it expires in %.0f s", self.key, e, self.ttl)


# -- the interface ------------------------------------------------------------------------------

_held: dict[tuple[str, str], list] = {}  # (store uri, scope) -> [lock, depth]
_mutex = threading.Lock()


def _new_lock(store: Store, scope: str):
    root = getattr(store, "root", None)
    if root is not None:
        return _LocalLock(Path(root), scope)
    if hasattr(store, "client") and hasattr(store, "bucket"):
        return _Lease(store, scope)
    raise TypeError(f"no lock for a {type(store).__name__}")


@contextmanager
def hold(store: Store, scope: str, wait: float | None = None) -> Iterator[None]:
    """Hold the lock of ``scope`` in ``store`` for the block (re-entrant in this process).

    Raises:
        Busy: another process holds it for longer than ``wait`` seconds (default
            :func:`wait_seconds`).
    """
    key = (store.uri, scope)
    with _mutex:
        entry = _held.get(key)
        if entry is not None:
            entry[1] += 1
    if entry is None:
        lock = _new_lock(store, scope)
        wait = wait_seconds() if wait is None else wait
        t0 = time.monotonic()
        announced = False
        while (holder := lock.try_acquire()) is not None:
            waited = time.monotonic() - t0
            if waited >= wait:
                raise _busy(store, scope, holder, waited)
            if not announced:
                log.info("%s is held by %s; waiting up to %.0f s", scope, describe(holder), wait)
                announced = True
            time.sleep(min(0.5, max(0.05, wait - waited)))
        with _mutex:
            entry = _held[key] = [lock, 1]
    try:
        yield
    finally:
        with _mutex:
            entry[1] -= 1
            last = entry[1] == 0
            if last:
                del _held[key]
        if last:
            entry[0].release()


def check_held(store: Store, scope: str) -> None:
    """Raise :class:`Busy` if this process held ``scope`` but lost it (an S3 lease taken over)."""
    entry = _held.get((store.uri, scope))
    if entry is not None:
        entry[0].check()
